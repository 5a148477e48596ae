"""data_lifecycle parses for each runner, runs daily without catchup, and submits
spark_jobs/lifecycle.py with the retentions of its Variables (or the environment's defaults), on
local Spark or on Dataproc with the gs:// storage root."""

from __future__ import annotations

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.google.cloud.operators.dataproc import DataprocSubmitJobOperator
from airflow.timetables.trigger import CronTriggerTimetable

from tests.conftest import REPO_ROOT
from tests.dags.conftest import CLOUD_CONFIG, CODE_URI, STORAGE_ROOT, rendered


def lifecycle_task(runner: str, env: dict[str, str]):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**env, "BATCH_RUNNER": runner}.items():
            patch.setenv(name, value)
        bag = DagBag(dag_folder=REPO_ROOT / "dags")
        assert bag.import_errors == {}
        dag = bag.dags["data_lifecycle"]
        return dag, dag.get_task("apply_retentions")


def flag_values(args: list[str]) -> dict[str, str]:
    values = {}
    for position, arg in enumerate(args):
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            values[name] = value
        elif arg.startswith("--") and position + 1 < len(args):
            values[arg] = args[position + 1]
    return values


@pytest.fixture(scope="module")
def local():
    return lifecycle_task("local", {"RAW_BATCH_RETENTION_DAYS": "4"})


def test_data_lifecycle_runs_once_a_day_without_catchup(local):
    dag, task = local
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.timetable._expression == "20 3 * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert task.retries >= 2 and task.owner == "data-platform"


def test_locally_it_submits_the_lifecycle_job_with_the_retentions(local, monkeypatch):
    _, task = local
    assert isinstance(task, SparkSubmitOperator)
    assert task.application == str(REPO_ROOT / "spark_jobs" / "lifecycle.py")
    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_POSTGRES", "postgresql://u:p@db:5432/platform")
    monkeypatch.setenv("AIRFLOW_VAR_QUARANTINE_RETENTION_DAYS", "60")
    flags = flag_values(rendered(task).application_args)
    assert flags == {
        "--pg-dsn": "postgres://u:p@db:5432/platform",  # as get_uri() spells it
        # The environment's default when the file was parsed, a Variable's value when set.
        "--raw-retention-days": "4",
        "--speed-retention-days": "7",
        "--quarantine-retention-days": "60",
        "--dry-run": "false",
    }


def test_on_dataproc_it_submits_the_job_on_the_gs_storage_root(monkeypatch):
    _, task = lifecycle_task("dataproc", CLOUD_CONFIG)
    assert isinstance(task, DataprocSubmitJobOperator)
    for name, value in CLOUD_CONFIG.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AIRFLOW_VAR_LIFECYCLE_DRY_RUN", "true")
    job = rendered(task).job
    assert job["pyspark_job"]["main_python_file_uri"] == f"{CODE_URI}/spark_jobs/lifecycle.py"
    assert job["pyspark_job"]["python_file_uris"] == [f"{CODE_URI}/platform.zip"]
    assert job["reference"]["job_id"] == "data-lifecycle-20261127"
    flags = flag_values(job["pyspark_job"]["args"])
    assert flags["--storage-root"] == STORAGE_ROOT
    assert flags["--raw-retention-days"] == "3" and flags["--dry-run"] == "true"


def test_the_job_reads_the_flags_the_dag_passes():
    from spark_jobs.lifecycle import parse_args

    args = parse_args(["--raw-retention-days", "4", "--dry-run=false", "--storage-root", "x"])
    assert (args.raw_retention_days, args.dry_run, args.storage_root) == (4, False, "x")
    assert parse_args(["--dry-run"]).dry_run is True
    assert parse_args(["--dry-run=true"]).dry_run is True
