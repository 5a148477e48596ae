"""terraform/ read as data: every file parses, every name resolves, and the rules the platform
relies on hold (network exposure, secrets, service accounts, encryption in transit, backups).
Checkov runs separately (test_checkov.py); these are the rules it has no check for."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import BUCKET
from tests.infra.terraform import (
    REFERENCE,
    TERRAFORM_DIR,
    Evaluator,
    all_strings,
    block,
    interpolations,
)

EXPECTED_FILES = {
    "network.tf",
    "storage.tf",
    "sql.tf",
    "kafka.tf",
    "dataproc.tf",
    "variables.tf",
    "outputs.tf",
}
VARIABLE = re.compile(r"\bvar\.([a-z0-9_]+)")
LOCAL = re.compile(r"\blocal\.([a-z0-9_]+)")
OPEN_TO_WORLD = {"0.0.0.0/0", "::/0"}
IAP_RANGE = "35.235.240.0/20"


def expressions(terraform) -> list[str]:
    return [
        expr
        for tree in terraform.files.values()
        for text in all_strings(tree)
        for expr in interpolations(text)
    ]


def tf_sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in TERRAFORM_DIR.glob("*.tf")}


def test_terraform_is_split_by_concern_and_parses(terraform):
    assert set(terraform.files) >= EXPECTED_FILES
    assert terraform.resources(), "no resources parsed"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="no terraform binary on PATH")
def test_terraform_files_are_formatted():
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff"],
        cwd=TERRAFORM_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform/`:\n{result.stdout}"


def test_every_variable_is_typed_described_and_used(terraform):
    used = {name for expr in expressions(terraform) for name in VARIABLE.findall(expr)}
    for name, body in terraform.variables.items():
        assert "type" in body and body.get("description"), (
            f"variable {name} needs a type and a description"
        )
        assert name in used, f"variable {name} is declared but never used"


def test_every_reference_resolves_to_a_declaration(terraform):
    declared_resources = set(terraform.resources()) | set(terraform.ephemerals())
    for expr in expressions(terraform):
        for name in VARIABLE.findall(expr):
            assert name in terraform.variables, f"var.{name} is not declared (in ${{{expr}}})"
        for name in LOCAL.findall(expr):
            assert name in terraform.locals, f"local.{name} is not declared (in ${{{expr}}})"
        for kind, name in REFERENCE.findall(expr):
            assert (kind, name) in declared_resources, (
                f"{kind}.{name} is not declared (in ${{{expr}}})"
            )


def test_example_tfvars_sets_only_declared_variables_and_every_required_one(
    terraform, example_tfvars
):
    declared = terraform.variables
    assert set(example_tfvars) <= set(declared), set(example_tfvars) - set(declared)
    required = {name for name, body in declared.items() if "default" not in body}
    assert required <= set(example_tfvars)


def test_example_tfvars_satisfy_the_validations_they_can_be_checked_against(
    terraform, example_tfvars
):
    """Regex validations are evaluated with Python's re; a wrong example or a broken regex fails."""
    for name, body in terraform.variables.items():
        for validation in body.get("validation", []):
            pattern = re.search(
                r'can\(regex\("(.+)", var\.' + name + r"\)\)", validation["condition"]
            )
            if pattern and name in example_tfvars:
                regex = pattern.group(1).encode().decode("unicode_escape")
                assert re.search(regex, str(example_tfvars[name]).strip('"')), (
                    f"{name} example fails its validation"
                )


def test_no_firewall_rule_admits_the_whole_internet(terraform):
    for (_, name), rule in terraform.resources("google_compute_firewall").items():
        ranges = set(Evaluator(terraform, {}).value(rule.get("source_ranges", [])))
        assert not ranges & OPEN_TO_WORLD, f"firewall {name} is open to {ranges & OPEN_TO_WORLD}"
        assert rule.get("direction", '"INGRESS"').strip('"') == "INGRESS"
        assert "source_ranges" in rule or "source_tags" in rule, (
            f"firewall {name} has no source: it would admit any"
        )


def test_kafka_port_is_open_to_the_dataproc_subnet_and_the_airflow_vm_only(terraform):
    evaluate = Evaluator(terraform, {}).value
    sources = set()
    for (_, name), rule in terraform.resources("google_compute_firewall").items():
        ports = {port for allow in rule["allow"] for port in evaluate(allow.get("ports", []))}
        if "9092" in ports or not ports and "kafka" in evaluate(rule["target_tags"]):
            source = (
                tuple(rule.get("source_ranges", [])),
                tuple(evaluate(rule.get("source_tags", []))),
            )
            assert source in {(("${var.dataproc_subnet_cidr}",), ()), ((), ("airflow",))}, (
                f"{name} opens Kafka too widely"
            )
            sources.add(source)
    assert len(sources) == 2, (
        "Kafka must be open to the Dataproc nodes and the Airflow VM (completeness sensor)"
    )
    kafka = terraform.resource("google_compute_firewall", "kafka_from_dataproc")
    assert [allow["ports"] for allow in kafka["allow"]] == [["${tostring(local.kafka_port)}"]]


def test_ssh_is_open_only_from_iap(terraform):
    evaluate = Evaluator(terraform, {}).value
    for (_, name), rule in terraform.resources("google_compute_firewall").items():
        for allow in rule["allow"]:
            ports = evaluate(allow.get("ports", []))
            if (
                allow["protocol"].strip('"') == "tcp"
                and (not ports or "22" in ports)
                and "source_ranges" in rule
            ):
                assert evaluate(rule["source_ranges"]) == [IAP_RANGE], (
                    f"{name} opens SSH beyond IAP"
                )


def test_no_vm_has_a_public_ip(terraform):
    for (_, name), vm in terraform.resources("google_compute_instance").items():
        for interface in vm["network_interface"]:
            assert "access_config" not in interface, f"instance {name} has an external IP"
    for (_, name), cluster in terraform.resources("google_dataproc_cluster").items():
        gce = block(block(cluster, "cluster_config"), "gce_cluster_config")
        assert gce["internal_ip_only"] is True, f"Dataproc cluster {name} nodes get external IPs"


def test_dataproc_and_kafka_run_on_dedicated_service_accounts(terraform):
    for (_, name), cluster in terraform.resources("google_dataproc_cluster").items():
        gce = block(block(cluster, "cluster_config"), "gce_cluster_config")
        assert re.fullmatch(r"\$\{google_service_account\.\w+\.email\}", gce["service_account"]), (
            name
        )
    for (_, name), vm in terraform.resources("google_compute_instance").items():
        assert re.fullmatch(
            r"\$\{google_service_account\.\w+\.email\}", block(vm, "service_account")["email"]
        ), name
    granted = {
        body["role"].strip('"')
        for body in terraform.resources("google_project_iam_member").values()
        if "role" in body
    }
    assert not granted & {"roles/owner", "roles/editor"}, (
        "a service account is granted a basic role"
    )


def test_no_literal_password_anywhere():
    literal = re.compile(r'(password|secret_data)(_wo)?\s*=\s*"(?!\$\{)[^"]*"', re.I)
    dsn_with_password = re.compile(r"postgres(ql)?://[^:/@\s]+:[^@$%\s]+@")
    for name, text in tf_sources().items():
        assert not literal.search(text), f"{name} sets a password or secret to a literal"
        assert not dsn_with_password.search(text), f"{name} holds a DSN with a literal password"


def test_the_database_password_is_generated_and_kept_in_secret_manager(terraform):
    user = terraform.resource("google_sql_user", "platform")
    assert user["password_wo"] == "${ephemeral.random_password.postgres.result}"
    versions = terraform.resources("google_secret_manager_secret_version")
    assert all(body["secret_data_wo"] == "${local.postgres_dsn}" for body in versions.values())
    assert "ephemeral.random_password.postgres.result" in terraform.locals["postgres_dsn"]


def test_no_output_exposes_the_password(terraform):
    for name, output in terraform.outputs.items():
        text = " ".join(all_strings(output["value"]))
        assert "random_password" not in text and "postgres_dsn}" not in text, (
            f"output {name} exposes the password"
        )
        assert "local.postgres_dsn," not in text


def test_cloud_sql_is_private_encrypted_backed_up_and_protected(terraform):
    instance = terraform.resource("google_sql_database_instance", "platform")
    settings = block(instance, "settings")
    ip = block(settings, "ip_configuration")
    assert ip["ipv4_enabled"] is False and ip["private_network"].startswith(
        "${google_compute_network."
    )
    assert ip["ssl_mode"] in ('"ENCRYPTED_ONLY"', '"TRUSTED_CLIENT_CERTIFICATE_REQUIRED"')
    backups = block(settings, "backup_configuration")
    assert backups["enabled"] is True and backups["point_in_time_recovery_enabled"] is True
    assert instance["deletion_protection"] == "${var.sql_deletion_protection}"
    assert terraform.variables["sql_deletion_protection"]["type"] == "bool"
    assert instance["database_version"].strip('"').startswith("POSTGRES_")


def test_the_bucket_is_private_versioned_and_ages_out_raw_quarantine_and_old_checkpoints(terraform):
    bucket = terraform.resource("google_storage_bucket", "platform")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == '"enforced"'
    assert block(bucket, "versioning")["enabled"] is True
    evaluate = Evaluator(terraform, {}, {"google_storage_bucket.platform.name": BUCKET}).value
    deleted = [
        evaluate(rule["condition"][0])
        for rule in bucket["lifecycle_rule"]
        if rule["action"][0]["type"] == '"Delete"'
    ]
    prefixes = {prefix for condition in deleted for prefix in condition.get("matches_prefix", [])}
    assert {"lake/raw/", "lake/compacted/", "lake/quarantine/", "lake/checkpoints/"} <= prefixes
    checkpoint_rule = next(
        condition
        for condition in deleted
        if condition.get("matches_prefix") == ["lake/checkpoints/"]
    )
    # Only replaced versions: the live checkpoint must never be aged out.
    assert checkpoint_rule["with_state"] == "ARCHIVED" and "age" not in checkpoint_rule


def test_the_kafka_vm_is_shielded_uses_os_login_and_keeps_data_on_its_own_disk(terraform):
    vm = terraform.resource("google_compute_instance", "kafka")
    shielded = block(vm, "shielded_instance_config")
    assert (
        shielded["enable_secure_boot"]
        is shielded["enable_vtpm"]
        is shielded["enable_integrity_monitoring"]
        is True
    )
    metadata = Evaluator(terraform, {}).value(
        {k: v for k, v in vm["metadata"].items() if not k.startswith("kafka-jars")}
    )
    assert metadata["enable-oslogin"] == "TRUE" and metadata["block-project-ssh-keys"] == "true"
    assert vm["metadata_startup_script"] == '${file("${path.module}/kafka/startup.sh")}'
    assert block(vm, "attached_disk")["device_name"] == '"kafka-data"'
    assert (
        "/dev/disk/by-id/google-kafka-data" in (TERRAFORM_DIR / "kafka" / "startup.sh").read_text()
    )


def test_private_service_access_and_nat_exist(terraform):
    assert (
        terraform.resource("google_compute_global_address", "private_services")["purpose"]
        == '"VPC_PEERING"'
    )
    assert terraform.resources("google_service_networking_connection")
    assert terraform.resources("google_compute_router_nat")
    instance = terraform.resource("google_sql_database_instance", "platform")
    assert "${google_service_networking_connection.private_services}" in instance["depends_on"]


def test_the_dataproc_image_runs_the_spark_line_of_the_local_pin(terraform):
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pyspark_pin = next(
        dep for dep in pyproject["project"]["dependencies"] if dep.startswith("pyspark")
    )
    spark_line = re.search(r"==(\d+\.\d+)", pyspark_pin).group(1)
    image = terraform.variables["dataproc_image_version"]["default"].strip('"')
    # Generally available Dataproc images -> their Spark, from Dataproc's release notes: image 3.0
    # reached GA in July 2026 as 3.0-debian13 (also ubuntu24, rocky9) with Spark 4.1.2 and Java 21;
    # 3.0-debian12 was its preview (Spark 4.0.0) and is not listed.
    spark_of_image = {
        "2.2-debian12": "3.5", "2.3-debian12": "3.5",
        "3.0-debian13": "4.1", "3.0-ubuntu24": "4.1", "3.0-rocky9": "4.1",
    }  # fmt: skip
    line = re.sub(r"^(\d+\.\d+)\.\d+", r"\1", image)
    assert line in spark_of_image, f"image {image} is not a generally available Dataproc image"
    assert spark_of_image[line] == spark_line, f"image {image} does not run Spark {spark_line}"


def test_dataproc_installs_the_locked_python_packages(terraform):
    lock = (REPO_ROOT / "uv.lock").read_text()
    requirements = re.findall(r'"([\w.-]+==[\w.]+)"', terraform.locals["dataproc_pip_packages"])
    assert len(requirements) >= 4
    for requirement in requirements:
        name, version = requirement.split("==")
        assert f'name = "{name}"\nversion = "{version}"' in lock, (
            f"{requirement} differs from uv.lock"
        )


def test_the_topic_partitions_default_to_the_one_definition_of_the_contract(terraform):
    from common.settings import TOPIC_PARTITIONS

    assert terraform.variables["kafka_topic_partitions"]["default"] == TOPIC_PARTITIONS
    startup = (TERRAFORM_DIR / "kafka" / "startup.sh").read_text()
    default = re.search(r"setting KAFKA_TOPIC_PARTITIONS kafka-topic-partitions (\d+)", startup)
    assert default and int(default.group(1)) == TOPIC_PARTITIONS
