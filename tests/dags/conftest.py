"""Fixtures for the DAG tests: batch_hourly parsed with a Google Cloud configuration, and its
templates rendered as a run of a given hour renders them."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pendulum
import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.execution_time.context import ConnectionAccessor, VariableAccessor

from tests.conftest import REPO_ROOT

HOUR_START = pendulum.datetime(2026, 11, 27, 10, tz="UTC")
CODE_URI = "gs://usage-platform-code/releases/2026-11-27"
STORAGE_ROOT = "gs://usage-platform-data/lake"
CLOUD_SQL_URI = "postgresql://platform:s3cret-pw@10.20.0.3:5432/platform"
KAFKA_BOOTSTRAP_SERVERS = "10.10.0.2:9092"
CLOUD_CONFIG = {
    "AIRFLOW_VAR_GCP_PROJECT": "usage-platform",
    "AIRFLOW_VAR_GCP_REGION": "europe-west1",
    "AIRFLOW_VAR_DATAPROC_CLUSTER": "usage-batch",
    "AIRFLOW_VAR_CODE_URI": CODE_URI,
    "AIRFLOW_VAR_STORAGE_ROOT": STORAGE_ROOT,
    "AIRFLOW_CONN_PLATFORM_POSTGRES": CLOUD_SQL_URI,
    "AIRFLOW_VAR_KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP_SERVERS,
    "AIRFLOW_VAR_KAFKA_TOPIC": "devices",
}


def dataproc_run_batch_tasks(config: dict[str, str]) -> dict:
    """{runner: the unrendered run_batch task} for the Dataproc runner, batch_hourly parsed
    with `config` (AIRFLOW_VAR_* / AIRFLOW_CONN_* variables) in the environment."""
    tasks = {}
    with pytest.MonkeyPatch.context() as env:
        for name, value in config.items():
            env.setenv(name, value)
        for runner in ("dataproc",):
            env.setenv("BATCH_RUNNER", runner)
            tasks[runner] = (
                DagBag(dag_folder=REPO_ROOT / "dags").dags["batch_hourly"].get_task("run_batch")
            )
    return tasks


@pytest.fixture(scope="module")
def run_batch_tasks():
    return dataproc_run_batch_tasks(CLOUD_CONFIG)


@pytest.fixture
def cloud_config(monkeypatch):
    for name, value in CLOUD_CONFIG.items():
        monkeypatch.setenv(name, value)


def rendered(task, hour_start=HOUR_START, try_number=1):
    """A copy of `task` with its templates rendered as a run of the hour would render them."""
    task = copy.deepcopy(task)
    context = {
        "data_interval_start": hour_start,
        "data_interval_end": hour_start.add(hours=1),
        "logical_date": hour_start,
        "ti": SimpleNamespace(try_number=try_number),
        "dag_run": SimpleNamespace(conf={}),
        "var": {
            "value": VariableAccessor(deserialize_json=False),
            "json": VariableAccessor(deserialize_json=True),
        },
        "conn": ConnectionAccessor(),
    }
    task.render_template_fields(context)
    return task
