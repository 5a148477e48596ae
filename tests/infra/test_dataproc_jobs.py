"""The Dataproc jobs Terraform declares and the one batch_hourly submits, with the configuration
Terraform outputs: each is a valid request for google-cloud-dataproc's own types (which reject
unknown fields), and every gs:// file it names is an object Terraform uploads from the build of
`python -m deploy.package`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from google.cloud import dataproc_v1

from deploy import package
from tests.conftest import REPO_ROOT
from tests.dags.conftest import dataproc_run_batch_tasks, rendered
from tests.infra.conftest import BUCKET, KAFKA_IP, PROJECT, evaluator_for
from tests.infra.terraform import (
    TERRAFORM_DIR,
    all_strings,
    block,
    console_value,
    inline,
    terraform_binary,
)

SPARK_KAFKA_POM = REPO_ROOT / "devtools" / "maven" / "spark-kafka" / "pom.xml"


@pytest.fixture(scope="module")
def code_build(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("code")
    package.build(target)
    return target


@pytest.fixture(scope="module")
def uploaded_uris(terraform, code_build) -> set[str]:
    """gs:// URIs of the objects google_storage_bucket_object.code creates from the build."""
    objects = terraform.resource("google_storage_bucket_object", "code")
    assert objects["for_each"] == "${local.code_files}"
    assert objects["name"] == '"${local.code_prefix}/${each.value}"'
    prefix = terraform.locals["code_prefix"].strip('"')
    files = [
        path.relative_to(code_build).as_posix() for path in code_build.rglob("*") if path.is_file()
    ]
    return {f"gs://{BUCKET}/{prefix}/{file}" for file in files}


@pytest.fixture(scope="module")
def evaluator(terraform, example_tfvars, code_build):
    jars = sorted(
        path.relative_to(code_build).as_posix()
        for path in (code_build / package.JARS_FOLDER).glob("*.jar")
    )
    evaluator = evaluator_for(terraform, example_tfvars, jars)
    evaluator.attributes["path.module"] = str(TERRAFORM_DIR)
    return evaluator


def job_request(evaluator, body: dict) -> dict:
    """The Job message the provider builds from a google_dataproc_job resource."""
    job = {
        "reference": evaluator.value(block(body, "reference")),
        "placement": evaluator.value(block(body, "placement")),
        "pyspark_job": evaluator.value(block(body, "pyspark_config")),
    }
    if "scheduling" in body:
        job["scheduling"] = evaluator.value(block(body, "scheduling"))
    return job


def gs_uris(job: dataproc_v1.Job) -> list[str]:
    pyspark = job.pyspark_job
    return [pyspark.main_python_file_uri, *pyspark.python_file_uris, *pyspark.jar_file_uris]


def test_terraform_uploads_the_folder_deploy_package_builds(terraform, evaluator):
    code_dir = Path(evaluator.value(terraform.locals["code_dir"]))
    assert code_dir.resolve() == package.BUILD_DIR.resolve()


def test_the_package_holds_the_main_files_the_bundle_and_the_kafka_connector(code_build):
    names = {
        path.relative_to(code_build).as_posix() for path in code_build.rglob("*") if path.is_file()
    }
    assert {
        "platform.zip",
        "spark_jobs/batch.py",
        "spark_jobs/streaming.py",
        "deploy/migrate_job.py",
    } <= names
    spark = re.search(
        r"<spark.version>([\d.]+)</spark.version>", SPARK_KAFKA_POM.read_text()
    ).group(1)
    assert f"jars/spark-sql-kafka-0-10_2.13-{spark}.jar" in names
    assert any(name.startswith("jars/kafka-clients-") for name in names)


def test_the_streaming_job_is_a_valid_restartable_job_on_uploaded_code(
    terraform, evaluator, uploaded_uris
):
    job = dataproc_v1.Job(
        job_request(evaluator, terraform.resource("google_dataproc_job", "streaming"))
    )

    assert set(gs_uris(job)) <= uploaded_uris, set(gs_uris(job)) - uploaded_uris
    assert job.pyspark_job.main_python_file_uri.endswith("/spark_jobs/streaming.py")
    assert any("spark-sql-kafka" in uri for uri in job.pyspark_job.jar_file_uris)
    assert (
        1 <= job.scheduling.max_failures_per_hour <= 10
        and 1 <= job.scheduling.max_failures_total <= 240
    )
    assert job.placement.cluster_name == evaluator.value(
        terraform.resource("google_dataproc_cluster", "platform")["name"]
    )
    args = dict(zip(job.pyspark_job.args[::2], job.pyspark_job.args[1::2], strict=True))
    assert args["--bootstrap-servers"] == f"{KAFKA_IP}:9092" and args["--topic"] == "devices"
    assert args["--storage-root"] == f"gs://{BUCKET}/lake"
    assert args["--checkpoint"].startswith(f"gs://{BUCKET}/lake/checkpoints/")
    # The password travels in Secret Manager, never in the job's arguments.
    assert "--pg-dsn" not in args and args["--pg-dsn-secret"].startswith(
        f"projects/{PROJECT}/secrets/"
    )


def test_the_streaming_job_accepts_its_arguments(terraform, evaluator):
    from spark_jobs.streaming import parse_args

    job = job_request(evaluator, terraform.resource("google_dataproc_job", "streaming"))
    args = parse_args(job["pyspark_job"]["args"])
    assert args.trigger_seconds == 5.0 and args.pg_dsn_secret.endswith("/versions/latest")


def gcloud_pyspark_job(argv: list[str]) -> dict:
    """The Job message `gcloud dataproc jobs submit pyspark MAIN --flag=value ... -- ARGS` sends."""
    assert argv[:5] == ["gcloud", "dataproc", "jobs", "submit", "pyspark"], argv
    flags, job_args = argv[6:], []
    if "--" in flags:
        flags, job_args = flags[: flags.index("--")], flags[flags.index("--") + 1 :]
    options = dict(flag.removeprefix("--").split("=", 1) for flag in flags)
    return {
        "placement": {"cluster_name": options.pop("cluster")},
        "labels": dict(label.split("=") for label in options.pop("labels", "").split(",") if label),
        "pyspark_job": {
            "main_python_file_uri": argv[5],
            "python_file_uris": options.pop("py-files", "").split(","),
            "args": job_args,
        },
        "_unplaced": {name: options.pop(name) for name in ("project", "region")},
        "_unknown": options,
    }


@pytest.mark.skipif(terraform_binary() is None, reason="terraform is not on PATH")
def test_the_migration_job_is_valid_and_runs_the_uploaded_migrate_job(
    terraform, sample_values, uploaded_uris
):
    command = block(terraform.resource("terraform_data", "migrate"), "provisioner")["local-exec"][
        "command"
    ]
    attributes = {
        "google_storage_bucket.platform.name": BUCKET,
        "google_dataproc_cluster.platform.name": "usage-cluster",
    }
    request = gcloud_pyspark_job(
        console_value(inline(terraform, command[2:-1], sample_values, attributes)).split()
    )
    assert request.pop("_unknown") == {}
    assert request.pop("_unplaced") == {"project": PROJECT, "region": "europe-west1"}
    job = dataproc_v1.Job(request)

    assert set(gs_uris(job)) <= uploaded_uris
    assert job.pyspark_job.main_python_file_uri.endswith("/deploy/migrate_job.py")
    assert list(job.pyspark_job.args[:1]) == ["--pg-dsn-secret"]
    assert job.labels["pipeline"] == "migrate" and re.fullmatch(
        r"[0-9a-f]{12}", job.labels["schema"]
    )
    from deploy.migrate_job import parse_args

    assert parse_args(list(job.pyspark_job.args)).pg_dsn_secret.endswith("/versions/latest")


@pytest.fixture(scope="module")
def airflow_config(terraform, evaluator) -> dict[str, str]:
    variables = evaluator.value(terraform.locals["airflow_variables"])
    assert terraform.outputs["airflow_variables"]["value"] == "${local.airflow_variables}"
    return {
        **variables,
        "AIRFLOW_CONN_PLATFORM_POSTGRES": "postgresql://platform:from-secret-manager@10.30.0.3:5432/platform",
    }


# Read with a default that only suits the laptop or that is a tuning knob, not a deployment fact.
OPTIONAL_VARIABLES = {"batch_lateness_minutes"}
CONNECTION_ATTRIBUTES = ("conn_id", "gcp_conn_id", "postgres_conn_id")


@pytest.fixture(scope="module")
def cloud_dag(airflow_config):
    """batch_hourly parsed as Airflow on Google Cloud parses it: BATCH_RUNNER=dataproc."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as env:
        env.setenv("BATCH_RUNNER", "dataproc")
        return DagBag(dag_folder=REPO_ROOT / "dags").dags["batch_hourly"]


def templated_strings(task) -> list[str]:
    return [
        text for field in task.template_fields for text in all_strings(getattr(task, field, None))
    ]


def test_terraform_provides_every_connection_and_variable_batch_hourly_uses_on_dataproc(
    terraform, evaluator, cloud_dag
):
    connections, variables = set(), set()
    for task in cloud_dag.tasks:
        connections |= {
            getattr(task, name) for name in CONNECTION_ATTRIBUTES if getattr(task, name, None)
        }
        for text in templated_strings(task):
            connections |= set(re.findall(r"\bconn\.(\w+)", text))
            variables |= {
                a or b for a, b in re.findall(r"var\.value\.(?:get\(['\"](\w+)['\"]|(\w+))", text)
            } - {"get"}
    assert {"platform_postgres", "google_cloud_default"} <= connections, (
        "the DAG's connections are not found"
    )
    assert {"code_uri", "kafka_bootstrap_servers"} <= variables, "the DAG's Variables are not found"

    output_env = " ".join(all_strings(terraform.outputs["airflow_env"]["value"]))
    assert "local.airflow_connections" in output_env and "local.airflow_variables" in output_env
    provided_connections = {
        name.removeprefix("AIRFLOW_CONN_").lower()
        for name in evaluator.value(terraform.locals["airflow_connections"])
    }
    # Airflow's Secret Manager backend (prefix airflow-connections, airflow_env) reads these.
    secret_ids = [
        evaluator.value(body["secret_id"])
        for body in terraform.resources("google_secret_manager_secret").values()
    ]
    provided_connections |= {
        secret.removeprefix("airflow-connections-")
        for secret in secret_ids
        if secret.startswith("airflow-connections-")
    }
    provided_variables = {
        name.removeprefix("AIRFLOW_VAR_").lower()
        for name in evaluator.value(terraform.locals["airflow_variables"])
    }

    assert connections <= provided_connections, (
        f"no connection {connections - provided_connections} on Google Cloud"
    )
    assert variables - OPTIONAL_VARIABLES <= provided_variables, (
        f"no Variable {variables - OPTIONAL_VARIABLES - provided_variables}"
    )


def test_the_google_connection_uses_the_vm_identity_in_the_platform_project(terraform, evaluator):
    (value,) = evaluator.value(terraform.locals["airflow_connections"]).values()
    connection = json.loads(value)
    assert connection == {"conn_type": "google_cloud_platform", "extra": {"project": PROJECT}}


def test_the_completeness_sensor_reaches_kafka_from_the_airflow_vm(
    terraform, evaluator, airflow_config
):
    """The sensor runs where Airflow runs: the VM of `airflow_subnetwork`, tagged
    `airflow_network_tag`."""
    tag = evaluator.value(terraform.outputs["airflow_network_tag"]["value"])
    kafka_tags = set(
        evaluator.value(terraform.resource("google_compute_instance", "kafka")["tags"])
    )
    port = airflow_config["AIRFLOW_VAR_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]
    admitted = [
        name
        for (_, name), rule in terraform.resources("google_compute_firewall").items()
        if tag in evaluator.value(rule.get("source_tags", []))
        and kafka_tags & set(evaluator.value(rule["target_tags"]))
        and any(port in evaluator.value(allow.get("ports", [])) for allow in rule["allow"])
    ]
    assert admitted, f"no firewall rule lets the Airflow VM (tag {tag}) reach Kafka on port {port}"
    assert (
        terraform.outputs["airflow_subnetwork"]["value"]
        == "${google_compute_subnetwork.platform.id}"
    )
    create = " ".join(all_strings(terraform.outputs["airflow_vm_create_command"]["value"]))
    assert (
        "--tags=${local.airflow_network_tag}" in create
        and "google_service_account.airflow.email" in create
    )


@pytest.fixture(scope="module")
def dag_tasks(airflow_config):
    return dataproc_run_batch_tasks(airflow_config)


def test_the_dag_submits_a_valid_job_on_the_terraform_cluster_and_uploaded_code(
    dag_tasks, airflow_config, uploaded_uris, monkeypatch
):
    for name, value in airflow_config.items():
        monkeypatch.setenv(name, value)
    job = dataproc_v1.Job(rendered(dag_tasks["dataproc"]).job)

    assert set(gs_uris(job)) <= uploaded_uris, set(gs_uris(job)) - uploaded_uris
    assert job.placement.cluster_name == airflow_config["AIRFLOW_VAR_DATAPROC_CLUSTER"]
    assert airflow_config["AIRFLOW_VAR_STORAGE_ROOT"] in job.pyspark_job.args
    # With Terraform's configuration the job reads the DSN from Secret Manager.
    assert not any("from-secret-manager" in arg for arg in job.pyspark_job.args)
    from spark_jobs.batch import parse_args

    args = parse_args(list(job.pyspark_job.args))
    assert args.pg_dsn_secret == airflow_config["AIRFLOW_VAR_PG_DSN_SECRET"] and args.pg_dsn == ""
