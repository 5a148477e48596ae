"""The requests batch_hourly would send to Dataproc, rendered for a sample hour and validated
offline by the Dataproc client's own message types, which reject unknown fields."""

from __future__ import annotations

from google.cloud import dataproc_v1

from tests.dags.conftest import (
    CLOUD_SQL_URI,
    CODE_URI,
    HOUR_START,
    KAFKA_BOOTSTRAP_SERVERS,
    STORAGE_ROOT,
    rendered,
)


def test_the_dataproc_job_is_a_valid_job_request(run_batch_tasks, cloud_config):
    task = rendered(run_batch_tasks["dataproc"])
    job = dataproc_v1.Job(task.job)

    assert job.reference.job_id == "batch-hourly-20261127T10"
    assert job.placement.cluster_name == "usage-batch"
    assert (task.project_id, task.region) == ("usage-platform", "europe-west1")
    assert job.labels["hour"] == "20261127t10"
    assert job.pyspark_job.main_python_file_uri == f"{CODE_URI}/spark_jobs/batch.py"
    assert list(job.pyspark_job.python_file_uris) == [f"{CODE_URI}/platform.zip"]
    assert list(job.pyspark_job.args) == [
        "--hour",
        "2026-11-27T10:00:00Z",
        "--pg-dsn",
        CLOUD_SQL_URI.replace("postgresql://", "postgres://", 1),
        "--pg-dsn-secret",
        "",
        "--storage-root",
        STORAGE_ROOT,
        "--bootstrap-servers",
        KAFKA_BOOTSTRAP_SERVERS,
        "--topic",
        "devices",
        "--lateness-minutes",
        "10",
    ]


def test_with_a_dsn_secret_the_job_carries_no_password(run_batch_tasks, cloud_config, monkeypatch):
    secret = "projects/usage-platform/secrets/usage-postgres-dsn/versions/latest"
    monkeypatch.setenv("AIRFLOW_VAR_PG_DSN_SECRET", secret)
    args = list(dataproc_v1.Job(rendered(run_batch_tasks["dataproc"]).job).pyspark_job.args)

    assert args[args.index("--pg-dsn-secret") + 1] == secret
    assert args[args.index("--pg-dsn") + 1] == ""
    assert not any("s3cret-pw" in arg for arg in args)


def test_submission_ids_come_from_the_hour_and_not_the_try(run_batch_tasks, cloud_config):
    def id_of(task):
        return task.job["reference"]["job_id"]

    first_try = rendered(run_batch_tasks["dataproc"], try_number=1)
    third_try = rendered(run_batch_tasks["dataproc"], try_number=3)
    next_hour = rendered(run_batch_tasks["dataproc"], hour_start=HOUR_START.add(hours=1))

    assert id_of(first_try) == id_of(third_try)
    assert id_of(next_hour) != id_of(first_try)
    assert id_of(next_hour).lower().endswith("20261127t11")
