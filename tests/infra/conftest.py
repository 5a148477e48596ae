"""Fixtures of the offline infrastructure checks: the parsed Terraform and an evaluator with the
example tfvars and sample values for what only Google Cloud knows (names, IPs, ids)."""

from __future__ import annotations

import hcl2
import pytest

from tests.infra.terraform import TERRAFORM_DIR, Evaluator, Terraform, clean, hcl_variables

PROJECT = "usage-demo"
BUCKET = f"{PROJECT}-usage-platform"
KAFKA_IP = "10.20.0.2"
# What the provider would fill in at apply time, in the forms the API returns.
CLOUD_ATTRIBUTES = {
    "google_storage_bucket.platform.name": BUCKET,
    "google_secret_manager_secret.postgres_dsn.id": (
        f"projects/{PROJECT}/secrets/usage-postgres-dsn"
    ),
    "google_compute_instance.kafka.network_interface[0].network_ip": KAFKA_IP,
    "google_dataproc_cluster.platform.name": "usage-cluster",
    "google_compute_subnetwork.dataproc.id": (
        f"projects/{PROJECT}/regions/europe-west1/subnetworks/usage-dataproc"
    ),
    "random_id.streaming_job.hex": "a1b2c3",
}


@pytest.fixture(scope="session")
def terraform() -> Terraform:
    return Terraform.load()


@pytest.fixture(scope="session")
def example_tfvars() -> dict:
    with (TERRAFORM_DIR / "terraform.tfvars.example").open() as handle:
        return dict(clean(hcl2.load(handle)).items())


def evaluator_for(
    terraform: Terraform, example_tfvars: dict, connector_jars: list[str]
) -> Evaluator:
    variables = {
        name: Evaluator(terraform, {}).value(value) for name, value in example_tfvars.items()
    }
    variables["project_id"] = PROJECT
    attributes = {**CLOUD_ATTRIBUTES, "local.connector_jars": connector_jars}
    return Evaluator(terraform, variables, attributes)


@pytest.fixture(scope="session")
def sample_values(terraform, example_tfvars) -> dict[str, str]:
    """HCL literals of every variable for `terraform console`: the example tfvars, else the
    default."""
    return hcl_variables(terraform, example_tfvars, {"project_id": PROJECT})
