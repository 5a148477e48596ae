"""The Dataproc jobs Terraform declares and the one batch_hourly submits, with the configuration
Terraform outputs: each is a valid request for google-cloud-dataproc's own types (which reject
unknown fields), and every gs:// file it names is an object Terraform uploads from the build of
`python -m deploy.package`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.cloud import dataproc_v1

from deploy import package
from tests.conftest import REPO_ROOT
from tests.dags.conftest import dataproc_run_batch_tasks, rendered
from tests.infra.conftest import BUCKET, KAFKA_IP, PROJECT, evaluator_for
from tests.infra.terraform import TERRAFORM_DIR, block


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
    files = [path.relative_to(code_build).as_posix() for path in code_build.rglob("*") if path.is_file()]
    return {f"gs://{BUCKET}/{prefix}/{file}" for file in files}


@pytest.fixture(scope="module")
def evaluator(terraform, example_tfvars, code_build):
    jars = sorted(path.relative_to(code_build).as_posix() for path in (code_build / package.JARS_FOLDER).glob("*.jar"))
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
    names = {path.relative_to(code_build).as_posix() for path in code_build.rglob("*") if path.is_file()}
    assert {"platform.zip", "spark_jobs/batch.py", "spark_jobs/streaming.py", "deploy/migrate_job.py"} <= names
    assert any(re.fullmatch(r"jars/spark-sql-kafka-0-10_2\.13-4\.0\.\d+\.jar", name) for name in names)
    assert any(name.startswith("jars/kafka-clients-") for name in names)


def test_the_streaming_job_is_a_valid_restartable_job_on_uploaded_code(terraform, evaluator, uploaded_uris):
    job = dataproc_v1.Job(job_request(evaluator, terraform.resource("google_dataproc_job", "streaming")))

    assert set(gs_uris(job)) <= uploaded_uris, set(gs_uris(job)) - uploaded_uris
    assert job.pyspark_job.main_python_file_uri.endswith("/spark_jobs/streaming.py")
    assert any("spark-sql-kafka" in uri for uri in job.pyspark_job.jar_file_uris)
    assert 1 <= job.scheduling.max_failures_per_hour <= 10 and 1 <= job.scheduling.max_failures_total <= 240
    assert job.placement.cluster_name == evaluator.value(terraform.resource("google_dataproc_cluster", "platform")["name"])
    args = dict(zip(job.pyspark_job.args[::2], job.pyspark_job.args[1::2]))
    assert args["--bootstrap-servers"] == f"{KAFKA_IP}:9092" and args["--topic"] == "devices"
    assert args["--storage-root"] == f"gs://{BUCKET}/lake"
    assert args["--checkpoint"].startswith(f"gs://{BUCKET}/lake/checkpoints/")
    # The password travels in Secret Manager, never in the job's arguments.
    assert "--pg-dsn" not in args and args["--pg-dsn-secret"].startswith(f"projects/{PROJECT}/secrets/")


def test_the_streaming_job_accepts_its_arguments(terraform, evaluator):
    from spark_jobs.streaming import parse_args

    job = job_request(evaluator, terraform.resource("google_dataproc_job", "streaming"))
    args = parse_args(job["pyspark_job"]["args"])
    assert args.trigger_seconds == 5.0 and args.pg_dsn_secret.endswith("/versions/latest")


def test_the_migration_job_is_valid_and_runs_the_uploaded_migrate_job(terraform, evaluator, uploaded_uris):
    body = terraform.resource("google_dataproc_job", "migrate")
    assert body["reference"][0]["job_id"] == '"migrate-${local.schema_digest}"'
    evaluator.attributes["local.schema_digest"] = "0123456789ab"
    job = dataproc_v1.Job(job_request(evaluator, body))

    assert set(gs_uris(job)) <= uploaded_uris
    assert job.pyspark_job.main_python_file_uri.endswith("/deploy/migrate_job.py")
    assert list(job.pyspark_job.args[:1]) == ["--pg-dsn-secret"]
    streaming = terraform.resource("google_dataproc_job", "streaming")
    assert "${google_dataproc_job.migrate}" in streaming["depends_on"]


@pytest.fixture(scope="module")
def airflow_config(terraform, evaluator) -> dict[str, str]:
    variables = evaluator.value(terraform.locals["airflow_variables"])
    assert terraform.outputs["airflow_variables"]["value"] == "${local.airflow_variables}"
    return {**variables, "AIRFLOW_CONN_PLATFORM_POSTGRES": "postgresql://platform:from-secret-manager@10.30.0.3:5432/platform"}


def test_terraform_outputs_every_variable_batch_hourly_requires(airflow_config):
    dag_source = (REPO_ROOT / "dags" / "batch_hourly.py").read_text()
    required = set(re.findall(r"var\.value\.(\w+)", dag_source)) - {"get"}
    assert required, "the DAG reads no Variables: the pattern is outdated"
    assert {f"AIRFLOW_VAR_{name.upper()}" for name in required} <= set(airflow_config)


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


def test_the_dag_serverless_batch_runs_uploaded_code_in_the_dataproc_subnet(dag_tasks, airflow_config, uploaded_uris, monkeypatch):
    for name, value in airflow_config.items():
        monkeypatch.setenv(name, value)
    batch = dataproc_v1.Batch(rendered(dag_tasks["serverless"]).batch)

    pyspark = batch.pyspark_batch
    assert {pyspark.main_python_file_uri, *pyspark.python_file_uris} <= uploaded_uris
    assert batch.environment_config.execution_config.subnetwork_uri == airflow_config["AIRFLOW_VAR_DATAPROC_SUBNETWORK"]
