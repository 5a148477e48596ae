resource "google_compute_network" "platform" {
  name                    = "${var.name_prefix}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.required]
}

resource "google_compute_subnetwork" "platform" {
  name                     = "${var.name_prefix}-platform"
  region                   = var.region
  network                  = google_compute_network.platform.id
  ip_cidr_range            = var.platform_subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "dataproc" {
  name          = "${var.name_prefix}-dataproc"
  region        = var.region
  network       = google_compute_network.platform.id
  ip_cidr_range = var.dataproc_subnet_cidr
  # Nodes without external IPs reach GCS, Secret Manager and the Dataproc API through this.
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Private Service Access: Cloud SQL gets its private IP from this range, peered into the VPC.
resource "google_compute_global_address" "private_services" {
  name          = "${var.name_prefix}-private-services"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.platform.id
}

resource "google_service_networking_connection" "private_services" {
  network                 = google_compute_network.platform.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.private_services.name]
  # Removing the peering while Cloud SQL still holds an address in it fails `terraform destroy`
  # (the producer side lets it go with the instance); ABANDON leaves it to the network's deletion.
  deletion_policy = "ABANDON"
}

# Outbound only: the VMs fetch packages (apt, Maven Central, PyPI) without external IPs.
resource "google_compute_router" "platform" {
  name    = "${var.name_prefix}-router"
  region  = var.region
  network = google_compute_network.platform.id
}

resource "google_compute_router_nat" "platform" {
  name                               = "${var.name_prefix}-nat"
  router                             = google_compute_router.platform.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Ingress is denied by default in a custom VPC; these rules open only what the platform needs.

resource "google_compute_firewall" "kafka_from_dataproc" {
  name          = "${var.name_prefix}-kafka-from-dataproc"
  network       = google_compute_network.platform.id
  direction     = "INGRESS"
  source_ranges = [var.dataproc_subnet_cidr]
  target_tags   = ["kafka"]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.kafka_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Spark's driver, executors and HDFS talk on many ports, but only among the cluster's nodes.
resource "google_compute_firewall" "dataproc_internal" {
  name        = "${var.name_prefix}-dataproc-internal"
  network     = google_compute_network.platform.id
  direction   = "INGRESS"
  source_tags = ["dataproc"]
  target_tags = ["dataproc"]

  allow {
    protocol = "tcp"
  }

  allow {
    protocol = "udp"
  }

  allow {
    protocol = "icmp"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "ssh_from_iap" {
  name          = "${var.name_prefix}-ssh-from-iap"
  network       = google_compute_network.platform.id
  direction     = "INGRESS"
  source_ranges = [local.iap_source_range]
  target_tags   = ["kafka", "dataproc", local.airflow_network_tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
