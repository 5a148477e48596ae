"""Late data re-published through the scheduler: `./airflow.sh standalone` (scheduler, DAG
processor, triggerer, API server) runs batch_republish, which triggers batch_hourly for the hour
whose input changed after its publication; that run waits for completeness, gates and publishes
the hour again, and the served numbers include the late events."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.integration.conftest import REPO_ROOT, query, run_module, streaming_args
from tests.integration.test_batch import HOUR, antenna_bytes, batch_args, dsn_uri, send_events_stamped_in_the_hour

pytestmark = pytest.mark.services


def airflow(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["./airflow.sh", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=check)


def republished_runs(home) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "airflow.db") as db:
        return db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = 'batch_hourly' AND run_id LIKE 'republish__%'"
        ).fetchall()


def wait_for(condition, what: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}; standalone log:\n{log.read_text()[-4000:]}")


def test_the_scheduler_republishes_an_hour_that_received_late_data(topic, scratch_dsn, tmp_path):
    storage = tmp_path / "storage"
    drain = streaming_args(topic, scratch_dsn, storage, "--available-now")
    hour_bytes = send_events_stamped_in_the_hour(topic, 300)
    run_module("spark_jobs.streaming", *drain)
    run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage, HOUR, "--topic", topic))
    late_bytes = send_events_stamped_in_the_hour(topic, 5, first=300)
    run_module("spark_jobs.streaming", *drain)
    assert query(scratch_dsn, "SELECT count(*) FROM batch_hours_to_republish") == [(1,)]
    assert antenna_bytes(scratch_dsn) == hour_bytes

    home = tmp_path / "airflow"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(home), PG_DSN=dsn_uri(scratch_dsn), STORAGE_ROOT=str(storage), AIRFLOW_VAR_KAFKA_TOPIC=topic,
        # No scheduled hour of its own during the test: only the triggered one runs.
        BATCH_START_DATE=(datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
        AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
    )
    log = tmp_path / "standalone.log"
    standalone = subprocess.Popen(
        ["./airflow.sh", "standalone"], cwd=REPO_ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: airflow(env, "dags", "unpause", "batch_hourly", check=False).returncode == 0, "the DAGs to be parsed", 300, log)
        airflow(env, "dags", "unpause", "batch_republish")
        airflow(env, "dags", "trigger", "batch_republish")

        wait_for(lambda: ("success",) in {(state,) for _, state in republished_runs(home)}, "the republished hour", 600, log)
    finally:
        os.killpg(standalone.pid, signal.SIGTERM)
        try:
            standalone.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(standalone.pid, signal.SIGKILL)
            standalone.wait()

    assert antenna_bytes(scratch_dsn) == hour_bytes + late_bytes
    assert query(scratch_dsn, "SELECT count(*) FROM batch_hours_to_republish") == [(0,)]
    assert query(scratch_dsn, "SELECT drift_bytes FROM serving_speed_drift") == [(0,), (0,), (0,)]
    (run_id, _), = republished_runs(home)
    assert run_id.startswith("republish__20261127T10__input_")
