# The APIs the platform uses. Service Usage and Cloud Resource Manager must already be enabled
# for Terraform to enable these (README, "Deploying to Google Cloud"). Every resource depends on
# google_project_service.required, directly or through a resource it references: enabling an API
# is not instant, and a resource created before its API fails the first apply of a new project
# (tests/infra/test_terraform_graph.py checks the dependency of every resource type).
locals {
  required_apis = toset([
    "compute.googleapis.com",
    "dataproc.googleapis.com",
    # Service accounts and their keys-less identities; a new project has it disabled.
    "iam.googleapis.com",
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
