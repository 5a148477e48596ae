locals {
  labels = merge(var.labels, { platform = var.name_prefix, managed-by = "terraform" })

  # Google's range for IAP TCP forwarding: the only source allowed to open SSH.
  iap_source_range = "35.235.240.0/20"
  kafka_port       = 9092
  postgres_port    = 5432
  airflow_ui_port  = 8080
  # The Airflow VM's tag: the firewall rules of airflow.tf and network.tf select it.
  airflow_network_tag = "airflow"
}
