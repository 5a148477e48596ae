variable "project_id" {
  description = "The Google Cloud project that holds the whole platform."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of every regional resource (bucket, Cloud SQL, Dataproc, subnet)."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1."
  }
}

variable "zone" {
  description = "Zone of the Kafka VM, its data disk and the Dataproc cluster; must be in region."
  type        = string
  default     = "europe-west1-b"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]-[a-z]$", var.zone))
    error_message = "zone must be a Google Cloud zone such as europe-west1-b."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name, so that several platforms can share a project."
  type        = string
  default     = "usage"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "platform_subnet_cidr" {
  description = "Subnet of the Kafka VM (and of an Airflow VM, if you add one)."
  type        = string
  default     = "10.20.0.0/24"

  validation {
    condition     = can(cidrhost(var.platform_subnet_cidr, 0))
    error_message = "platform_subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "dataproc_subnet_cidr" {
  description = "Subnet of the Dataproc nodes; the only range allowed to reach Kafka."
  type        = string
  default     = "10.20.16.0/20"

  validation {
    condition     = can(cidrhost(var.dataproc_subnet_cidr, 0))
    error_message = "dataproc_subnet_cidr must be an IPv4 CIDR block."
  }
}

variable "raw_retention_days" {
  description = "Days raw Parquet is kept before the bucket deletes it (it moves to Nearline after 30)."
  type        = number
  default     = 365

  validation {
    condition     = var.raw_retention_days >= 31
    error_message = "raw_retention_days must be at least 31: the Nearline move happens at 30 days."
  }
}

variable "quarantine_retention_days" {
  description = "Days quarantined (malformed) records are kept for inspection."
  type        = number
  default     = 90

  validation {
    condition     = var.quarantine_retention_days >= 1
    error_message = "quarantine_retention_days must be at least 1."
  }
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete the bucket with its data; keep false in production."
  type        = bool
  default     = false
}

variable "sql_tier" {
  description = "Cloud SQL machine tier (Enterprise edition)."
  type        = string
  default     = "db-custom-1-3840"

  validation {
    condition     = can(regex("^db-(custom-[0-9]+-[0-9]+|f1-micro|g1-small|perf-optimized-N-[0-9]+)$", var.sql_tier))
    error_message = "sql_tier must be a Cloud SQL tier such as db-custom-1-3840."
  }
}

variable "sql_disk_size_gb" {
  description = "Initial Cloud SQL disk size; it grows automatically."
  type        = number
  default     = 20

  validation {
    condition     = var.sql_disk_size_gb >= 10
    error_message = "sql_disk_size_gb must be at least 10."
  }
}

variable "sql_high_availability" {
  description = "REGIONAL (a standby in a second zone) instead of ZONAL Cloud SQL; doubles its cost."
  type        = bool
  default     = false
}

variable "sql_deletion_protection" {
  description = "Protect the Cloud SQL instance from deletion (Terraform and API); set false before destroying."
  type        = bool
  default     = true
}

variable "kafka_machine_type" {
  description = "Machine type of the Kafka VM."
  type        = string
  default     = "e2-standard-2"
}

variable "kafka_data_disk_gb" {
  description = "Size of the Kafka VM's persistent data disk."
  type        = number
  default     = 100

  validation {
    condition     = var.kafka_data_disk_gb >= 10 && var.kafka_data_disk_gb <= 65536
    error_message = "kafka_data_disk_gb must be between 10 and 65536."
  }
}

variable "kafka_topic" {
  description = "The topic the simulator writes and the streaming job reads."
  type        = string
  default     = "devices"

  validation {
    condition     = can(regex("^[a-zA-Z0-9._-]{1,249}$", var.kafka_topic))
    error_message = "kafka_topic must be a valid Kafka topic name."
  }
}

variable "kafka_topic_partitions" {
  description = "Partitions of the topic when the VM creates it (never changed afterwards)."
  type        = number
  default     = 4

  validation {
    condition     = var.kafka_topic_partitions >= 1 && var.kafka_topic_partitions <= 64
    error_message = "kafka_topic_partitions must be between 1 and 64."
  }
}

variable "kafka_retention_hours" {
  description = "How long the broker keeps records; the raw Parquet in the bucket is the long-term copy."
  type        = number
  default     = 168

  validation {
    condition     = var.kafka_retention_hours >= 1
    error_message = "kafka_retention_hours must be at least 1."
  }
}

variable "dataproc_image_version" {
  description = "Dataproc image; its Spark must be the pyspark pin of pyproject.toml (3.0 GA = Spark 4.1.2, Java 21, Python 3.12)."
  type        = string
  default     = "3.0-debian13"

  validation {
    # 3.0-debian12 was the preview build of 3.0 (Spark 4.0.0), not the Spark the jobs are tested with.
    condition     = can(regex("^3\\.0(\\.[0-9]+)?-(debian13|ubuntu24|rocky9)$", var.dataproc_image_version))
    error_message = "dataproc_image_version must be a GA build of image 3.0 (Spark 4.1, the Spark the jobs are tested with), e.g. 3.0-debian13."
  }
}

variable "dataproc_master_machine_type" {
  description = "Machine type of the Dataproc master (runs the streaming job's driver)."
  type        = string
  default     = "n2-standard-4"
}

variable "dataproc_worker_machine_type" {
  description = "Machine type of the Dataproc workers."
  type        = string
  default     = "n2-standard-4"
}

variable "dataproc_worker_count" {
  description = "Number of primary Dataproc workers."
  type        = number
  default     = 2

  validation {
    condition     = var.dataproc_worker_count >= 2
    error_message = "dataproc_worker_count must be at least 2 (Dataproc's minimum for a standard cluster)."
  }
}

variable "streaming_job_id" {
  description = "Prefix of the long-running streaming job's id (a suffix changes with the cluster); change it to start a new job (same checkpoint)."
  type        = string
  default     = "speed-layer-1"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,90}$", var.streaming_job_id))
    error_message = "streaming_job_id may hold letters, digits, underscores and hyphens, up to 90 (the job id adds 7)."
  }
}

variable "streaming_max_failures_per_hour" {
  description = "Driver restarts per hour Dataproc allows the streaming job before reporting it failed."
  type        = number
  default     = 5

  validation {
    condition     = var.streaming_max_failures_per_hour >= 1 && var.streaming_max_failures_per_hour <= 10
    error_message = "streaming_max_failures_per_hour must be between 1 and 10 (Dataproc's maximum)."
  }
}

variable "streaming_max_failures_total" {
  description = "Driver restarts in total before Dataproc reports the streaming job failed."
  type        = number
  default     = 240

  validation {
    condition     = var.streaming_max_failures_total >= 1 && var.streaming_max_failures_total <= 240
    error_message = "streaming_max_failures_total must be between 1 and 240 (Dataproc's maximum)."
  }
}

variable "streaming_trigger_seconds" {
  description = "Micro-batch interval of the streaming job."
  type        = number
  default     = 5

  validation {
    condition     = var.streaming_trigger_seconds > 0
    error_message = "streaming_trigger_seconds must be greater than 0."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "postgres_password_version" {
  description = "Raise to rotate the database password: the user and the DSN secrets get a new one at the next apply."
  type        = number
  default     = 1
}

variable "airflow_machine_type" {
  description = "Machine type of the VM that runs Airflow (docker-compose.airflow.yml); created with `terraform output -raw airflow_vm_create_command`."
  type        = string
  default     = "e2-standard-2"
}
