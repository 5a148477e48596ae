"""Late data re-published through the scheduler: `./airflow.sh standalone` (scheduler, DAG
processor, triggerer, API server) runs batch_republish, which triggers batch_hourly for the hour
whose input changed after its publication; that run waits for completeness, gates and publishes
the hour again. Used by test_batch.py's late-data test, which sets the hour up and checks the
served numbers (one stream and one set of Spark runs for both)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta

from tests.integration.conftest import REPO_ROOT
from tests.integration.test_speed_layer_faults import stop


def dsn_uri(dsn: str) -> str:
    from tests.integration.test_batch import dsn_uri as uri

    return uri(dsn)


def airflow(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["./airflow.sh", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, (
        f"airflow {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    )
    return result


def parsed_dags(home) -> set[str]:
    """The DAGs the standalone's DAG processor has put in the metadata database."""
    try:
        with sqlite3.connect(home / "airflow.db") as db:
            return {dag_id for (dag_id,) in db.execute("SELECT dag_id FROM dag WHERE NOT is_stale")}
    except sqlite3.Error:
        return set()


def republished_runs(home) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "airflow.db") as db:
        return db.execute(
            "SELECT run_id, state FROM dag_run"
            " WHERE dag_id = 'batch_hourly' AND run_id LIKE 'republish__%'"
        ).fetchall()


def wait_for(condition, what: str, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(3)
    raise AssertionError(
        f"timed out waiting for {what}; standalone log:\n{log.read_text()[-4000:]}"
    )


def republish_with_the_scheduler(topic: str, dsn: str, storage, tmp_path) -> str:
    """Runs `./airflow.sh standalone` until batch_republish has republished the late hour through
    batch_hourly; returns the id of that batch_hourly run."""
    home = tmp_path / "airflow"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW_", "AIRFLOW__"))
    }
    env.update(
        AIRFLOW_HOME=str(home),
        PG_DSN=dsn_uri(dsn),
        STORAGE_ROOT=str(storage),
        AIRFLOW_VAR_KAFKA_TOPIC=topic,
        # No scheduled hour of its own during the test: only the triggered one runs.
        BATCH_START_DATE=(datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
    )
    log = tmp_path / "standalone.log"
    standalone = subprocess.Popen(
        ["./airflow.sh", "standalone"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: {"batch_hourly", "batch_republish"} <= parsed_dags(home),
            "the DAGs to be parsed",
            300,
            log,
        )
        airflow(env, "dags", "unpause", "batch_hourly")
        # Unpausing schedules its latest cycle at once; a manual trigger meanwhile finds the same
        # input already triggered and skips it.
        airflow(env, "dags", "unpause", "batch_republish")
        airflow(env, "dags", "trigger", "batch_republish")
        wait_for(
            lambda: "success" in {state for _, state in republished_runs(home)},
            "the republished hour",
            600,
            log,
        )
    finally:
        stop(standalone)
    runs = republished_runs(home)
    assert len(runs) == 1, f"one input, one republication: {runs}"
    return runs[0][0]
