resource "google_service_account" "kafka" {
  account_id   = "${var.name_prefix}-kafka"
  display_name = "Kafka broker VM"
  description  = "Runs the Kafka VM: writes its logs and metrics, nothing else."

  depends_on = [google_project_service.required]
}

resource "google_project_iam_member" "kafka" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter"])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.kafka.email}"
}

# The topic's data outlives the VM: replacing the instance or its boot disk keeps this disk.
resource "google_compute_disk" "kafka_data" {
  name   = "${var.name_prefix}-kafka-data"
  zone   = var.zone
  type   = "pd-balanced"
  size   = var.kafka_data_disk_gb
  labels = local.labels

  # checkov:skip=CKV_GCP_37:Encrypted at rest with Google-managed keys; customer-supplied keys would have to be handed to every restart of the VM.

  depends_on = [google_project_service.required]
}

resource "google_compute_instance" "kafka" {
  name                      = "${var.name_prefix}-kafka"
  zone                      = var.zone
  machine_type              = var.kafka_machine_type
  tags                      = ["kafka"]
  labels                    = local.labels
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = "debian-cloud/debian-12"
      size  = 20
      type  = "pd-balanced"
    }
  }

  # Shows up as /dev/disk/by-id/google-kafka-data, the startup script's default data device.
  attached_disk {
    source      = google_compute_disk.kafka_data.id
    device_name = "kafka-data"
  }

  # No access_config block: the VM has no external IP; it reaches Maven Central through Cloud NAT.
  network_interface {
    subnetwork = google_compute_subnetwork.platform.id
  }

  service_account {
    email  = google_service_account.kafka.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "true"
    # Read by startup.sh; its defaults match these, the values here make them visible and reviewable.
    kafka-jars-lock        = file("${path.module}/kafka/kafka-jars.lock")
    kafka-topic            = var.kafka_topic
    kafka-topic-partitions = tostring(var.kafka_topic_partitions)
    kafka-retention-hours  = tostring(var.kafka_retention_hours)
    kafka-port             = tostring(local.kafka_port)
  }

  metadata_startup_script = file("${path.module}/kafka/startup.sh")

  # checkov:skip=CKV_GCP_38:The boot disk holds only the OS and Kafka's jars, both reinstalled by the startup script; Google-managed encryption applies.

  depends_on = [google_compute_router_nat.platform]
}
