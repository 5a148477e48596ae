# Airflow runs batch_hourly on a VM inside the VPC (docker-compose.airflow.yml; README, "Deploying to
# Google Cloud"): Cloud SQL has a private IP only, and the completeness sensor asks the Kafka
# broker for offsets. Terraform gives that VM its identity and its network access; the VM itself
# is created with `terraform output -raw airflow_vm_create_command`.
resource "google_service_account" "airflow" {
  account_id   = "${var.name_prefix}-airflow"
  display_name = "Airflow (batch_hourly)"
  description  = "Runs Airflow: submits and follows the hourly Dataproc jobs, reads the serving database's connection."

  depends_on = [google_project_service.required]
}

# dataproc.editor: submit a job to the cluster, read its state, cancel it. The job itself runs as
# the Dataproc service account, so Airflow needs no access to the bucket or to the DSN secret.
resource "google_project_iam_member" "airflow" {
  for_each = toset(["roles/dataproc.editor", "roles/logging.logWriter", "roles/monitoring.metricWriter"])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.airflow.email}"
}

# The connection platform_postgres, read by the sensor and the drift check through Airflow's
# Secret Manager backend: this one secret, not every secret of the project.
resource "google_secret_manager_secret_iam_member" "airflow_postgres_connection" {
  secret_id = google_secret_manager_secret.airflow_postgres_connection.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.airflow.email}"
}

# The completeness sensor (SpeedLayerCaughtUpSensor) reads Kafka's offsets for an hour.
resource "google_compute_firewall" "kafka_from_airflow" {
  name        = "${var.name_prefix}-kafka-from-airflow"
  network     = google_compute_network.platform.id
  direction   = "INGRESS"
  source_tags = [local.airflow_network_tag]
  target_tags = ["kafka"]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.kafka_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# The Airflow UI, through `gcloud compute start-iap-tunnel` only: the VM has no external address.
resource "google_compute_firewall" "airflow_ui_from_iap" {
  name          = "${var.name_prefix}-airflow-ui-from-iap"
  network       = google_compute_network.platform.id
  direction     = "INGRESS"
  source_ranges = [local.iap_source_range]
  target_tags   = [local.airflow_network_tag]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.airflow_ui_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
