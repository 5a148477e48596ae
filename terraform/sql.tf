resource "google_sql_database_instance" "platform" {
  name                = "${var.name_prefix}-postgres"
  region              = var.region
  database_version    = "POSTGRES_16"
  deletion_protection = var.sql_deletion_protection

  settings {
    tier                        = var.sql_tier
    edition                     = "ENTERPRISE"
    availability_type           = var.sql_high_availability ? "REGIONAL" : "ZONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = var.sql_disk_size_gb
    disk_autoresize             = true
    deletion_protection_enabled = var.sql_deletion_protection
    user_labels                 = local.labels

    ip_configuration {
      # Private IP only: reachable from the VPC (Dataproc, the Kafka subnet), never the internet.
      ipv4_enabled    = false
      private_network = google_compute_network.platform.id
      # Every connection must use TLS. Client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED)
      # are not required: clients sit inside the VPC and authenticate with the generated password.
      ssl_mode = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      start_time                     = "02:00"
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = 7

      backup_retention_settings {
        retained_backups = 14
      }
    }

    maintenance_window {
      day  = 7
      hour = 3
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  # checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY rejects every unencrypted connection; client certificates would add a certificate rotation the private-IP-only instance does not need.
  # checkov:skip=CKV_GCP_79:POSTGRES_16 is the major version the migrations are tested against locally (Debian's 15 and 16 behave the same for them); upgrade deliberately, not by a scanner's default.

  depends_on = [google_service_networking_connection.private_services]
}

# `terraform destroy` deletes the instance, and with it its databases and users. Deleting them one
# by one first fails: Cloud SQL refuses to drop a database or role that owns objects or has open
# connections. ABANDON leaves them to the instance's deletion.
resource "google_sql_database" "platform" {
  name            = "platform"
  instance        = google_sql_database_instance.platform.name
  deletion_policy = "ABANDON"
}

# The password exists only while Terraform runs: an ephemeral value, sent to Cloud SQL and to
# Secret Manager through write-only arguments, so the state never holds it (Terraform >= 1.11).
# Letters and digits only, so it needs no escaping inside a URI. Rotating it: raise
# postgres_password_version and apply; the user and both secrets get the same new password.
ephemeral "random_password" "postgres" {
  length  = 32
  special = false
}

resource "google_sql_user" "platform" {
  name                = "platform"
  instance            = google_sql_database_instance.platform.name
  password_wo         = ephemeral.random_password.postgres.result
  password_wo_version = var.postgres_password_version
  deletion_policy     = "ABANDON"
}

locals {
  postgres_dsn = format(
    "postgresql://%s:%s@%s:%d/%s?sslmode=require",
    google_sql_user.platform.name,
    ephemeral.random_password.postgres.result,
    google_sql_database_instance.platform.private_ip_address,
    local.postgres_port,
    google_sql_database.platform.name,
  )
}

# The jobs read the DSN from here (--pg-dsn-secret).
resource "google_secret_manager_secret" "postgres_dsn" {
  secret_id = "${var.name_prefix}-postgres-dsn"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_version" "postgres_dsn" {
  secret                 = google_secret_manager_secret.postgres_dsn.id
  secret_data_wo         = local.postgres_dsn
  secret_data_wo_version = var.postgres_password_version

  # A replaced user (a new instance) got this run's password: the DSN must follow it.
  lifecycle {
    replace_triggered_by = [google_sql_user.platform]
  }
}

# The same DSN under the name Airflow's Secret Manager backend looks up for the connection
# `platform_postgres` (prefix airflow-connections): Airflow never holds the password in its config.
resource "google_secret_manager_secret" "airflow_postgres_connection" {
  secret_id = "airflow-connections-platform_postgres"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_version" "airflow_postgres_connection" {
  secret                 = google_secret_manager_secret.airflow_postgres_connection.id
  secret_data_wo         = local.postgres_dsn
  secret_data_wo_version = var.postgres_password_version

  lifecycle {
    replace_triggered_by = [google_sql_user.platform]
  }
}
