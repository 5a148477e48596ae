# The APIs the platform uses. Service Usage and Cloud Resource Manager must already be enabled
# for Terraform to enable these (README, "Deploying to Google Cloud").
locals {
  required_apis = toset([
    "compute.googleapis.com",
    "dataproc.googleapis.com",
    "iap.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "required" {
  for_each = local.required_apis

  service = each.value
  # Disabling an API on destroy would break anything else in the project that uses it.
  disable_on_destroy = false
}
