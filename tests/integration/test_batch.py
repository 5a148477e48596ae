"""The batch layer end to end: simulator -> Kafka -> streaming job -> raw Parquet -> batch job."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone

import psycopg2
import pytest

from tests.integration.conftest import (
    REPO_ROOT,
    epoch,
    load_summary,
    query,
    run_module,
    streaming_args,
)

pytestmark = pytest.mark.services

HOUR = "2026-11-27T10:00:00Z"


def hourly_expectations(summary: dict, users: dict[str, tuple[str, int]]) -> dict[str, set[tuple]]:
    """The four *_1h tables as the simulator's exact totals say they must be."""
    hour = epoch(HOUR)
    user_rows = {(users[r["id"]][0], hour, r["bytes"]) for r in summary["hours"]["user"] if r["id"] in users and epoch(r["date"]) == hour}
    quotas = {email: quota for email, quota in users.values()}
    return {
        "antenna": {(r["antenna_id"], epoch(r["date"]), r["bytes"]) for r in summary["hours"]["antenna"] if epoch(r["date"]) == hour},
        "app": {(r["app"], epoch(r["date"]), r["bytes"]) for r in summary["hours"]["app"] if epoch(r["date"]) == hour},
        "user": user_rows,
        "over_quota": {(email, d, quotas[email], total) for email, d, total in user_rows if total > quotas[email]},
    }


def hourly_tables(dsn: str) -> dict[str, set[tuple]]:
    epoch_date = "extract(epoch FROM date)::bigint"
    return {
        "antenna": set(query(dsn, f"SELECT antenna_id, {epoch_date}, sum_antenna_bytes FROM bytes_agg_antenna_1h")),
        "app": set(query(dsn, f"SELECT app, {epoch_date}, sum_app_bytes FROM bytes_agg_app_1h")),
        "user": set(query(dsn, f"SELECT email, {epoch_date}, sum_user_bytes FROM bytes_agg_user_1h")),
        "over_quota": set(query(dsn, f"SELECT email, {epoch_date}, quota, sum_user_bytes FROM users_over_quota_1h")),
    }


@pytest.fixture
def streamed_hour(topic, scratch_dsn, tmp_path):
    """One simulated hour (plus a minute either side), drained into raw Parquet by the streaming job."""
    summary_path = tmp_path / "summary.json"
    run_module(
        "simulator", "--topic", topic, "--start", "2026-11-27T09:59:00Z", "--duration", "3720", "--rate", "0",
        "--seed", "5", "--unknown-devices", "3", "--malformed-rate", "0.02", "--summary-out", str(summary_path), "--no-progress",
    )
    storage = tmp_path / "storage"
    run_module("spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now"))
    return load_summary(summary_path), storage


def batch_args(dsn: str, storage, hour: str = HOUR) -> list[str]:
    return ["--hour", hour, "--pg-dsn", dsn, "--storage-root", str(storage), "--master", "local[2]"]


def test_batch_hour_equals_summary_rerun_is_identical_and_empty_hour_writes_nothing(streamed_hour, scratch_dsn):
    summary, storage = streamed_hour
    users = {id_: (email, quota) for id_, email, quota in query(scratch_dsn, "SELECT id, email, quota FROM user_metadata")}

    run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage))

    expected = hourly_expectations(summary, users)
    assert hourly_tables(scratch_dsn) == expected
    assert expected["over_quota"], "a full hour at one report a minute puts some users over quota"
    hour_bytes = sum(r["bytes"] for r in summary["hours"]["app"] if epoch(r["date"]) == epoch(HOUR))
    unknown = sum(r["bytes"] for r in summary["hours"]["user"] if r["id"] not in users and epoch(r["date"]) == epoch(HOUR))
    assert query(scratch_dsn, "SELECT valid_bytes, unknown_device_bytes FROM batch_hour_runs") == [(hour_bytes, unknown)]

    run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage))

    assert hourly_tables(scratch_dsn) == expected

    # An hour without data writes nothing, says so and leaves the other hours alone.
    empty = run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage, hour="2026-11-27T15:00:00Z"))

    assert "no data for hour 2026-11-27T15:00:00Z" in empty.stderr
    assert hourly_tables(scratch_dsn) == expected


def dsn_uri(dsn: str) -> str:
    parts = psycopg2.extensions.parse_dsn(dsn)
    return f"postgresql://{parts['user']}:{parts['password']}@{parts['host']}:{parts.get('port', 5432)}/{parts['dbname']}"


def airflow_dags_test(dsn: str, storage, logical_date: str) -> subprocess.CompletedProcess:
    """`./airflow.sh dags test`, exactly as an operator types it, against this test's database and storage."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_PLATFORM")}
    env.update(PG_DSN=dsn_uri(dsn), STORAGE_ROOT=str(storage))
    return subprocess.run(
        ["./airflow.sh", "dags", "test", "batch_hourly", logical_date],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )


def test_batch_hourly_dag_computes_the_hour_reruns_identically_and_fails_on_corruption(
    streamed_hour, scratch_dsn, airflow_db, monkeypatch
):
    summary, storage = streamed_hour
    users = {id_: (email, quota) for id_, email, quota in query(scratch_dsn, "SELECT id, email, quota FROM user_metadata")}
    expected = hourly_expectations(summary, users)

    # dags test takes the end of the interval: 11:00 runs the hour 10:00-11:00.
    first = airflow_dags_test(scratch_dsn, storage, "2026-11-27T11:00:00+00:00")

    assert hourly_tables(scratch_dsn) == expected, first.stdout[-3000:] + first.stderr[-3000:]
    (first_computed_at,) = query(scratch_dsn, "SELECT computed_at FROM batch_hour_runs")[0]

    second = airflow_dags_test(scratch_dsn, storage, "2026-11-27T11:00:00+00:00")

    assert hourly_tables(scratch_dsn) == expected, second.stdout[-3000:] + second.stderr[-3000:]
    assert query(scratch_dsn, "SELECT computed_at FROM batch_hour_runs")[0][0] > first_computed_at

    # A corrupted row after the batch job: the quality gate must fail the run.
    with psycopg2.connect(scratch_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE bytes_agg_app_1h SET sum_app_bytes = sum_app_bytes + 1 WHERE app = 'SKYPE'")
    conn.close()
    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_POSTGRES", dsn_uri(scratch_dsn))
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=REPO_ROOT / "dags").dags["batch_hourly"]
    run = dag.test(
        logical_date=datetime(2026, 11, 27, 11, tzinfo=timezone.utc), mark_success_pattern="wait_for_hour_to_close|run_batch"
    )

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["check_quality"] == "failed"
