resource "google_service_account" "dataproc" {
  account_id   = "${var.name_prefix}-dataproc"
  display_name = "Dataproc cluster and jobs"
  description  = "Runs the Dataproc nodes and the platform's Spark jobs."

  depends_on = [google_project_service.required]
}

# dataproc.worker: what a node needs to run Dataproc's node daemon, write logs and use the staging bucket.
resource "google_project_iam_member" "dataproc_worker" {
  project = var.project_id
  role    = "roles/dataproc.worker"
  member  = "serviceAccount:${google_service_account.dataproc.email}"
}

# The jobs read code and write the lake in this one bucket only.
resource "google_storage_bucket_iam_member" "dataproc_bucket" {
  bucket = google_storage_bucket.platform.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.dataproc.email}"
}

resource "google_secret_manager_secret_iam_member" "dataproc_postgres_dsn" {
  secret_id = google_secret_manager_secret.postgres_dsn.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.dataproc.email}"
}

locals {
  # What the jobs (and the simulator) import beyond the image: the same pins as uv.lock.
  dataproc_pip_packages = join(" ", [
    "psycopg2-binary==2.9.13",
    "kafka-python==3.0.12",
    "confluent-kafka==2.16.1",
    "google-cloud-secret-manager==2.32.0",
    "alembic==1.20.1",
    "sqlalchemy==2.1.9",
    "tqdm==4.70.1",
  ])
  postgres_dsn_secret_version = "${google_secret_manager_secret.postgres_dsn.id}/versions/latest"
  kafka_bootstrap_servers     = "${google_compute_instance.kafka.network_interface[0].network_ip}:${local.kafka_port}"
}

resource "google_dataproc_cluster" "platform" {
  name   = "${var.name_prefix}-cluster"
  region = var.region
  labels = local.labels

  cluster_config {
    staging_bucket = google_storage_bucket.platform.name
    temp_bucket    = google_storage_bucket.platform.name

    gce_cluster_config {
      zone                   = var.zone
      subnetwork             = google_compute_subnetwork.dataproc.id
      internal_ip_only       = true
      service_account        = google_service_account.dataproc.email
      service_account_scopes = ["cloud-platform"]
      tags                   = ["dataproc"]
      metadata = {
        enable-oslogin         = "TRUE"
        block-project-ssh-keys = "true"
      }

      shielded_instance_config {
        enable_secure_boot          = true
        enable_vtpm                 = true
        enable_integrity_monitoring = true
      }
    }

    master_config {
      num_instances = 1
      machine_type  = var.dataproc_master_machine_type

      disk_config {
        boot_disk_type    = "pd-balanced"
        boot_disk_size_gb = 100
      }
    }

    worker_config {
      num_instances = var.dataproc_worker_count
      machine_type  = var.dataproc_worker_machine_type

      disk_config {
        boot_disk_type    = "pd-balanced"
        boot_disk_size_gb = 100
      }
    }

    software_config {
      image_version = var.dataproc_image_version
      override_properties = {
        "dataproc:pip.packages"                                   = local.dataproc_pip_packages
        "dataproc:dataproc.logging.stackdriver.job.driver.enable" = "true"
        "spark:spark.sql.session.timeZone"                        = "UTC"
      }
    }
  }

  # checkov:skip=CKV_GCP_91:Disks are encrypted with Google-managed keys; a customer-managed KMS key adds cost and a key to operate for no requirement of this platform.

  depends_on = [
    google_project_iam_member.dataproc_worker,
    google_storage_bucket_iam_member.dataproc_bucket,
    google_compute_router_nat.platform,
  ]
}

# The schema, applied by a job inside the VPC before anything that reads or writes the database
# starts. Not a google_dataproc_job resource: the provider returns as soon as a job is RUNNING,
# so a failed migration would count as applied and the streaming job would start against an old
# schema. `gcloud dataproc jobs submit` waits for the job to end and exits non-zero when it
# failed, which fails the apply; the next apply runs it again (the migrations are idempotent).
# A change of the SQL files or of the migration job (a new migration) runs it again too.
locals {
  # One plain glob per fileset: Terraform's glob has no `{a,b}` choice spanning folders.
  schema_files = setunion(
    fileset("${path.module}/../sql", "migrations/*.sql"),
    fileset("${path.module}/../sql", "seed_users.sql"),
  )
  schema_digest = substr(sha256(join(",", concat(
    [for file in sort(tolist(local.schema_files)) : filesha256("${path.module}/../sql/${file}")],
    [filesha256("${path.module}/../deploy/migrate_job.py")],
  ))), 0, 12)
  migrate_command = join(" ", [
    "gcloud dataproc jobs submit pyspark ${local.code_uri}/deploy/migrate_job.py",
    "--project=${var.project_id} --region=${var.region} --cluster=${google_dataproc_cluster.platform.name}",
    "--labels=pipeline=migrate,schema=${local.schema_digest}",
    "--py-files=${local.code_uri}/platform.zip",
    "-- --pg-dsn-secret ${local.postgres_dsn_secret_version}",
  ])
}

resource "terraform_data" "migrate" {
  triggers_replace = {
    schema_digest = local.schema_digest
    cluster       = google_dataproc_cluster.platform.name
  }

  provisioner "local-exec" {
    command = local.migrate_command
  }

  lifecycle {
    precondition {
      condition     = contains(local.code_files, "platform.zip") && length(local.connector_jars) > 0
      error_message = "build/gcp/code/ is empty or incomplete: run `make package` before `terraform apply`."
    }
  }

  depends_on = [
    google_storage_bucket_object.code,
    google_secret_manager_secret_version.postgres_dsn,
    google_secret_manager_secret_iam_member.dataproc_postgres_dsn,
    google_sql_user.platform,
  ]
}

# A new cluster (another image, machine type or network) starts with no job on it. A new suffix
# of the streaming job's id with every replacement or update of the cluster makes Terraform
# submit the job again there; its checkpoint in the bucket makes it resume exactly where the
# job on the old cluster stopped.
resource "random_id" "streaming_job" {
  byte_length = 3

  lifecycle {
    replace_triggered_by = [google_dataproc_cluster.platform]
  }
}

# The speed layer: one long-running job. Dataproc restarts its driver when it exits non-zero
# (a lost broker, a Cloud SQL failover), and the checkpoint in the bucket makes each restart
# resume exactly where the last one stopped.
resource "google_dataproc_job" "streaming" {
  region       = var.region
  force_delete = true
  labels       = merge(local.labels, { pipeline = "speed-layer" })

  reference {
    job_id = "${var.streaming_job_id}-${random_id.streaming_job.hex}"
  }

  placement {
    cluster_name = google_dataproc_cluster.platform.name
  }

  scheduling {
    max_failures_per_hour = var.streaming_max_failures_per_hour
    max_failures_total    = var.streaming_max_failures_total
  }

  pyspark_config {
    main_python_file_uri = "${local.code_uri}/spark_jobs/streaming.py"
    python_file_uris     = ["${local.code_uri}/platform.zip"]
    jar_file_uris        = [for jar in local.connector_jars : "${local.code_uri}/${jar}"]
    args = [
      "--bootstrap-servers", local.kafka_bootstrap_servers,
      "--topic", var.kafka_topic,
      "--pg-dsn-secret", local.postgres_dsn_secret_version,
      "--storage-root", local.storage_root,
      "--checkpoint", "${local.storage_root}/checkpoints/streaming",
      "--trigger-seconds", tostring(var.streaming_trigger_seconds),
    ]
    properties = {
      # A streaming query keeps its executors busy; dynamic allocation would only churn them.
      "spark.dynamicAllocation.enabled" = "false"
      "spark.executor.instances"        = tostring(var.dataproc_worker_count)
    }
  }

  depends_on = [
    terraform_data.migrate,
    google_compute_instance.kafka,
  ]
}
