# One bucket: the data lake (raw and compacted Parquet, quarantine, checkpoints) under lake/, the code Dataproc
# runs under code/, and Dataproc's staging files.
resource "google_storage_bucket" "platform" {
  name     = "${var.project_id}-${var.name_prefix}-platform"
  location = var.region
  labels   = local.labels

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.bucket_force_destroy

  # Versioning turns an accidental delete or overwrite into a recoverable noncurrent version;
  # the rules below keep those versions from piling up.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age            = 30
      matches_prefix = ["${local.lake_prefix}/raw/", "${local.lake_prefix}/compacted/"]
      with_state     = "LIVE"
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.raw_retention_days
      matches_prefix = ["${local.lake_prefix}/raw/", "${local.lake_prefix}/compacted/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.quarantine_retention_days
      matches_prefix = ["${local.lake_prefix}/quarantine/"]
    }
    action {
      type = "Delete"
    }
  }

  # Spark rewrites and deletes checkpoint files all the time; the replaced versions are garbage
  # after a day. Live checkpoint files are never aged out: the query's metadata file is written
  # once and deleting it would lose the stream's position.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
      matches_prefix             = ["${local.lake_prefix}/checkpoints/"]
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # checkov:skip=CKV_GCP_62:Access logs would go to a second bucket nobody reads; Cloud Audit Logs already record admin access.

  depends_on = [google_project_service.required]
}

locals {
  lake_prefix  = "lake"
  code_prefix  = "code"
  storage_root = "gs://${google_storage_bucket.platform.name}/${local.lake_prefix}"
  code_uri     = "gs://${google_storage_bucket.platform.name}/${local.code_prefix}"

  # Built by `make package` (python -m deploy.package) before `terraform apply`.
  code_dir       = "${path.module}/../build/gcp/code"
  code_files     = fileset(local.code_dir, "**")
  connector_jars = sort([for file in local.code_files : file if startswith(file, "jars/")])
}

resource "google_storage_bucket_object" "code" {
  for_each = local.code_files

  bucket = google_storage_bucket.platform.name
  name   = "${local.code_prefix}/${each.value}"
  source = "${local.code_dir}/${each.value}"
  # Re-uploads exactly the files whose content changed.
  source_md5hash = filemd5("${local.code_dir}/${each.value}")
}
