output "bucket" {
  description = "The platform's bucket (lake, code, Dataproc staging)."
  value       = google_storage_bucket.platform.name
}

output "storage_root" {
  description = "STORAGE_ROOT of the jobs: raw Parquet, quarantine and checkpoints."
  value       = local.storage_root
}

output "code_uri" {
  description = "Where Terraform uploads build/gcp/code/ (batch.py, streaming.py, platform.zip, jars)."
  value       = local.code_uri
}

output "kafka_bootstrap_servers" {
  description = "KAFKA_BOOTSTRAP_SERVERS inside the VPC (reachable from the Dataproc subnet)."
  value       = local.kafka_bootstrap_servers
}

output "kafka_instance" {
  description = "Name of the Kafka VM, for `gcloud compute ssh --tunnel-through-iap`."
  value       = google_compute_instance.kafka.name
}

output "dataproc_cluster" {
  description = "The Dataproc cluster running the streaming job and the hourly batch jobs."
  value       = google_dataproc_cluster.platform.name
}

output "streaming_job_id" {
  description = "Id of the long-running streaming job (`gcloud dataproc jobs describe`)."
  value       = google_dataproc_job.streaming.reference[0].job_id
}

output "postgres_private_ip" {
  description = "Cloud SQL's private IP address."
  value       = google_sql_database_instance.platform.private_ip_address
}

output "postgres_dsn_secret" {
  description = "Secret Manager version holding the serving database's DSN (the jobs' --pg-dsn-secret)."
  value       = local.postgres_dsn_secret_version
}

output "migrate_command" {
  description = "Re-applies the schema migrations to Cloud SQL from inside the VPC (repeatable); what terraform apply runs."
  value       = local.migrate_command
}

# batch_hourly's configuration, as environment variables Airflow reads (an env file for
# docker-compose.airflow.yml: `terraform output -raw airflow_env > .env.airflow`). The connection
# platform_postgres is not in it: Airflow reads it from Secret Manager
# (secret airflow-connections-platform_postgres), so the password never lands in a file.
output "airflow_variables" {
  description = "AIRFLOW_VAR_* values for batch_hourly's Dataproc runner."
  value       = local.airflow_variables
}

output "airflow_env" {
  description = "An env file for docker-compose.airflow.yml: runner, connections, Variables and the Secret Manager backend."
  value = join("\n", concat(
    [
      "BATCH_RUNNER=dataproc",
      "AIRFLOW__SECRETS__BACKEND=airflow.providers.google.cloud.secrets.secret_manager.CloudSecretManagerBackend",
      "AIRFLOW__SECRETS__BACKEND_KWARGS={\"connections_prefix\": \"airflow-connections\", \"variables_prefix\": null, \"project_id\": \"${var.project_id}\"}",
    ],
    [for name in sort(keys(local.airflow_connections)) : "${name}=${local.airflow_connections[name]}"],
    [for name in sort(keys(local.airflow_variables)) : "${name}=${local.airflow_variables[name]}"],
    [""],
  ))
}

output "airflow_service_account" {
  description = "Service account of the VM that runs Airflow: submits Dataproc jobs, reads the connection secret."
  value       = google_service_account.airflow.email
}

output "airflow_subnetwork" {
  description = "Subnetwork for the Airflow VM: Cloud SQL's private IP and the Kafka broker are reachable from it."
  value       = google_compute_subnetwork.platform.id
}

output "airflow_network_tag" {
  description = "Network tag of the Airflow VM: the firewall lets it reach Kafka (the completeness sensor) and IAP reach it."
  value       = local.airflow_network_tag
}

output "airflow_vm_create_command" {
  description = "Creates the Airflow VM inside the VPC, with its service account and network tag (README, Deploying to Google Cloud)."
  value = join(" ", [
    "gcloud compute instances create ${var.name_prefix}-airflow",
    "--project=${var.project_id} --zone=${var.zone} --machine-type=${var.airflow_machine_type}",
    "--subnet=${google_compute_subnetwork.platform.id} --no-address --tags=${local.airflow_network_tag}",
    "--service-account=${google_service_account.airflow.email} --scopes=cloud-platform",
    "--image-family=debian-13 --image-project=debian-cloud --boot-disk-size=30GB",
    "--shielded-secure-boot --metadata=enable-oslogin=TRUE",
  ])
}

locals {
  # The Dataproc operators' connection: no key, the VM's service account (Application Default
  # Credentials), in this project.
  airflow_connections = {
    AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT = jsonencode({ conn_type = "google_cloud_platform", extra = { project = var.project_id } })
  }
  airflow_variables = {
    AIRFLOW_VAR_GCP_PROJECT      = var.project_id
    AIRFLOW_VAR_GCP_REGION       = var.region
    AIRFLOW_VAR_DATAPROC_CLUSTER = google_dataproc_cluster.platform.name
    AIRFLOW_VAR_CODE_URI         = local.code_uri
    AIRFLOW_VAR_STORAGE_ROOT     = local.storage_root
    AIRFLOW_VAR_PG_DSN_SECRET    = local.postgres_dsn_secret_version
    # The completeness sensor and the batch job ask the broker for the offsets an hour needs.
    AIRFLOW_VAR_KAFKA_BOOTSTRAP_SERVERS = local.kafka_bootstrap_servers
    AIRFLOW_VAR_KAFKA_TOPIC             = var.kafka_topic
  }
}
