"""The batch layer end to end: simulator -> Kafka -> streaming job -> raw Parquet -> batch job."""

from __future__ import annotations

import email.message
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

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
    user_rows = {
        (users[r["id"]][0], hour, r["bytes"])
        for r in summary["hours"]["user"]
        if r["id"] in users and epoch(r["date"]) == hour
    }
    quotas = dict(users.values())
    return {
        "antenna": {
            (r["antenna_id"], epoch(r["date"]), r["bytes"])
            for r in summary["hours"]["antenna"]
            if epoch(r["date"]) == hour
        },
        "app": {
            (r["app"], epoch(r["date"]), r["bytes"])
            for r in summary["hours"]["app"]
            if epoch(r["date"]) == hour
        },
        "user": user_rows,
        "over_quota": {
            (email, d, quotas[email], total)
            for email, d, total in user_rows
            if total > quotas[email]
        },
    }


def hourly_tables(dsn: str) -> dict[str, set[tuple]]:
    epoch_date = "extract(epoch FROM date)::bigint"
    return {
        "antenna": set(
            query(
                dsn, f"SELECT antenna_id, {epoch_date}, sum_antenna_bytes FROM bytes_agg_antenna_1h"
            )
        ),
        "app": set(query(dsn, f"SELECT app, {epoch_date}, sum_app_bytes FROM bytes_agg_app_1h")),
        "user": set(
            query(dsn, f"SELECT email, {epoch_date}, sum_user_bytes FROM bytes_agg_user_1h")
        ),
        "over_quota": set(
            query(
                dsn, f"SELECT email, {epoch_date}, quota, sum_user_bytes FROM users_over_quota_1h"
            )
        ),
    }


@pytest.fixture
def streamed_hour(topic, scratch_dsn, tmp_path):
    """One simulated hour (plus a minute either side), drained into raw Parquet by the streaming
    job."""
    summary_path = tmp_path / "summary.json"
    run_module(
        "simulator",
        "--topic",
        topic,
        "--start",
        "2026-11-27T09:59:00Z",
        "--duration",
        "3720",
        "--rate",
        "0",
        "--seed",
        "5",
        "--unknown-devices",
        "3",
        "--malformed-rate",
        "0.02",
        "--summary-out",
        str(summary_path),
        "--no-progress",
    )
    storage = tmp_path / "storage"
    run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now")
    )
    return load_summary(summary_path), storage


def batch_args(dsn: str, storage, hour: str = HOUR, *extra: str) -> list[str]:
    return [
        "--hour",
        hour,
        "--pg-dsn",
        dsn,
        "--storage-root",
        str(storage),
        "--master",
        "local[2]",
        *extra,
    ]


def test_batch_hour_equals_summary_rerun_is_identical_and_empty_hour_writes_nothing(
    streamed_hour, scratch_dsn
):
    summary, storage = streamed_hour
    users = {
        id_: (email, quota)
        for id_, email, quota in query(scratch_dsn, "SELECT id, email, quota FROM user_metadata")
    }

    run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage))

    expected = hourly_expectations(summary, users)
    assert hourly_tables(scratch_dsn) == expected
    assert expected["over_quota"], "a full hour at one report a minute puts some users over quota"
    hour_bytes = sum(r["bytes"] for r in summary["hours"]["app"] if epoch(r["date"]) == epoch(HOUR))
    unknown = sum(
        r["bytes"]
        for r in summary["hours"]["user"]
        if r["id"] not in users and epoch(r["date"]) == epoch(HOUR)
    )
    assert query(scratch_dsn, "SELECT valid_bytes, unknown_device_bytes FROM batch_hour_runs") == [
        (hour_bytes, unknown)
    ]

    run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage))

    assert hourly_tables(scratch_dsn) == expected

    # An hour without data writes nothing, says so and leaves the other hours alone.
    empty = run_module(
        "spark_jobs.batch", *batch_args(scratch_dsn, storage, hour="2026-11-27T15:00:00Z")
    )

    assert "no committed events for hour 2026-11-27T15:00:00Z" in empty.stderr
    assert hourly_tables(scratch_dsn) == expected


def dsn_uri(dsn: str) -> str:
    parts = psycopg2.extensions.parse_dsn(dsn)
    return (
        f"postgresql://{parts['user']}:{parts['password']}"
        f"@{parts['host']}:{parts.get('port', 5432)}/{parts['dbname']}"
    )


def airflow_dags_test(
    dsn: str, storage, topic: str, logical_date: str, alert_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`./airflow.sh dags test`, exactly as an operator types it, against this test's database,
    storage and topic."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AIRFLOW_CONN_PLATFORM")
    }
    env.update(PG_DSN=dsn_uri(dsn), STORAGE_ROOT=str(storage), AIRFLOW_VAR_KAFKA_TOPIC=topic)
    env.update(alert_env or {})
    return subprocess.run(
        ["./airflow.sh", "dags", "test", "batch_hourly", logical_date],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def duplicate_a_raw_file(storage: Path, hour_folder: str = "event_hour=2026-11-27-10") -> Path:
    """A copy of one Parquet file of the hour beside it, as a botched restore or copy job leaves
    it."""
    original = sorted(
        (storage / "compacted" / hour_folder).rglob("*.parquet")
        or (storage / "raw" / hour_folder).rglob("*.parquet")
    )[0]
    copy = original.with_name("copy-" + original.name)
    shutil.copy(original, copy)
    return copy


def serving_layers(dsn: str, hour: str = HOUR) -> set[str]:
    return {
        layer
        for (layer,) in query(
            dsn, "SELECT DISTINCT layer FROM serving_antenna_hourly WHERE date = %s", (hour,)
        )
    }


class Inbox:
    """A real SMTP server's handler (aiosmtpd): keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_inbox():
    """An SMTP server on a free port, and the environment that points batch_hourly's alerts at
    it through an Airflow connection."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@localhost"},
    }
    env = {
        "ALERT_NOTIFIER": "smtp",
        "ALERT_EMAIL_TO": "operators@example.com",
        "ALERT_SMTP_CONN_ID": "smtp_alerts",
        "AIRFLOW_CONN_SMTP_ALERTS": json.dumps(connection),
    }
    try:
        yield inbox, env
    finally:
        controller.stop()


def mail_text(message: email.message.Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "".join(
        part.get_payload(decode=True).decode()
        for part in parts
        if part.get_content_maintype() == "text"
    )


def test_batch_hourly_dag_computes_the_hour_and_a_failed_gate_leaves_it_to_the_speed_layer(
    streamed_hour, topic, scratch_dsn, airflow_db, smtp_inbox
):
    inbox, alert_env = smtp_inbox
    summary, storage = streamed_hour
    users = {
        id_: (email, quota)
        for id_, email, quota in query(scratch_dsn, "SELECT id, email, quota FROM user_metadata")
    }
    expected = hourly_expectations(summary, users)

    # dags test takes the end of the interval: 11:00 runs the hour 10:00-11:00. The sensor really
    # asks Kafka and PostgreSQL: the stream has drained, so the hour is complete.
    first = airflow_dags_test(scratch_dsn, storage, topic, "2026-11-27T11:00:00+00:00", alert_env)

    assert hourly_tables(scratch_dsn) == expected, first.stdout[-3000:] + first.stderr[-3000:]
    assert serving_layers(scratch_dsn) == {"batch"}
    # (A rerun leaving identical rows is tested on the job itself above.)
    assert inbox.messages == [], "a published hour alerts nobody"

    # A raw file stored twice: the gate fails the run, and the hour leaves the batch layer.
    duplicate_a_raw_file(storage)
    failed = airflow_dags_test(scratch_dsn, storage, topic, "2026-11-27T11:00:00+00:00", alert_env)

    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-3000:]
    assert "quality check raw_rows_are_distinct_offsets failed" in output, output[-3000:]
    assert "not retried" in output, "a failed gate fails again on the same input: no retries"
    assert query(scratch_dsn, "SELECT count(*) FROM batch_hour_runs") == [(0,)]
    assert all(not rows for rows in hourly_tables(scratch_dsn).values())
    ((failed_checks,),) = query(scratch_dsn, "SELECT failed_checks FROM batch_hour_failures")
    assert "raw_rows_are_distinct_offsets" in failed_checks
    assert serving_layers(scratch_dsn) == {"speed"}

    # The operators were told, once: the hour, the task and the check, in a mail and a log line.
    (alert,) = inbox.messages
    assert alert["To"] == "operators@example.com"
    assert "hour 2026-11-27T10:00:00+00:00 failed in run_batch" in alert["Subject"]
    assert "raw_rows_are_distinct_offsets" in mail_text(alert)
    assert "ALERT batch_hourly hour 2026-11-27T10:00:00+00:00 failed in run_batch" in output


def send_events_stamped_in_the_hour(
    topic: str, count: int, first: int = 0, partition: int | None = None, stamp_now: bool = False
) -> int:
    """`count` valid events of HOUR, each stamped by the producer with its own event time, as an
    antenna sending live would: Kafka held them before the hour's deadline (with `stamp_now`,
    stamped when sent: after it). Returns their bytes."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers="localhost:9092")
    total = 0
    for n in range(first, first + count):
        timestamp = epoch(HOUR) + (n * 7) % 3600
        event = {
            "bytes": 1000 + n,
            "timestamp": timestamp,
            "app": ("SKYPE", "TELEGRAM")[n % 2],
            "id": f"00000000-0000-0000-0000-0000000000{n % 6 + 1:02d}",
            "antenna_id": f"antenna-{n % 3}",
        }
        producer.send(
            topic,
            json.dumps(event).encode(),
            partition=partition,
            timestamp_ms=None if stamp_now else timestamp * 1000,
        )
        total += event["bytes"]
    producer.flush()
    producer.close()
    return total


def antenna_bytes(dsn: str) -> int:
    return query(
        dsn, "SELECT coalesce(sum(sum_antenna_bytes), 0)::bigint FROM bytes_agg_antenna_1h"
    )[0][0]


def completeness_sensor(topic: str, **kwargs):
    from platform_airflow.sensors import SpeedLayerCaughtUpSensor

    return SpeedLayerCaughtUpSensor(
        task_id="wait_for_complete_hour",
        conn_id="platform_postgres",
        hour=datetime.fromisoformat(HOUR.replace("Z", "+00:00")).isoformat(),
        lateness_minutes=10,
        bootstrap_servers="localhost:9092",
        topic=topic,
        **kwargs,
    )


def test_an_hour_is_published_when_complete_and_checked_and_republished_after_late_data(
    topic, scratch_dsn, tmp_path, monkeypatch
):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from tests.integration.republish_helpers import republish_with_the_scheduler
    from tests.integration.test_quality_checks import airflow_connection

    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_POSTGRES", airflow_connection(scratch_dsn))
    hour_bytes = send_events_stamped_in_the_hour(topic, 1500)
    storage = tmp_path / "storage"
    # Small micro-batches and no compaction: the hour stays one folder per micro-batch.
    drain = streaming_args(
        topic,
        scratch_dsn,
        storage,
        "--available-now",
        "--max-offsets-per-trigger",
        "400",
        "--compact-after-minutes",
        "100000",
    )

    # Behind at the deadline: Kafka held the hour's records, the stream has committed none.
    assert completeness_sensor(topic).poke(context={}) is False
    refused = run_module(
        "spark_jobs.batch", *batch_args(scratch_dsn, storage, HOUR, "--topic", topic), check=False
    )
    assert refused.returncode != 0 and "records behind on" in refused.stderr, refused.stderr[-3000:]

    run_module("spark_jobs.streaming", *drain)
    assert completeness_sensor(topic).poke(context={}) is True
    run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage))
    assert antenna_bytes(scratch_dsn) == hour_bytes

    # A micro-batch folder deleted: fewer raw rows than the stream counted.
    folders = sorted((storage / "raw" / "event_hour=2026-11-27-10").glob("batch_id=*"))
    assert len(folders) > 2, "the drain should leave several micro-batches"
    moved = tmp_path / folders[1].name
    shutil.move(folders[1], moved)
    lost = run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage), check=False)
    assert lost.returncode != 0
    assert "quality check raw_rows_equal_speed_events failed" in lost.stderr, lost.stderr[-3000:]
    assert serving_layers(scratch_dsn) == {"speed"}
    shutil.move(moved, folders[1])

    # Behind again: records of the hour Kafka held before its deadline that the stream has not read.
    late_bytes = send_events_stamped_in_the_hour(topic, 5, first=1500, partition=0)
    behind = run_module("spark_jobs.batch", *batch_args(scratch_dsn, storage), check=False)
    assert behind.returncode != 0
    assert f"speed layer is 5 records behind on {topic}-0" in behind.stderr, behind.stderr[-3000:]
    assert query(scratch_dsn, "SELECT count(*) FROM batch_hour_runs") == [(0,)]
    with pytest.raises(AirflowSensorTimeout, match=f"speed layer is 5 records behind on {topic}-0"):
        completeness_sensor(topic, mode="poke", timeout=0, poke_interval=0).execute(context={})

    forced = run_module(
        "spark_jobs.batch", *batch_args(scratch_dsn, storage, HOUR, "--allow-incomplete")
    )
    assert "--allow-incomplete: publishing hour 2026-11-27T10:00:00Z" in forced.stderr
    assert query(scratch_dsn, "SELECT records_behind, forced FROM batch_hour_runs") == [(5, True)]
    assert antenna_bytes(scratch_dsn) == hour_bytes
    assert serving_layers(scratch_dsn) == {"batch"}

    # The stream catches up: the hour's input changed after its publication, so it is listed to
    # be published again; records that reach Kafka after the deadline (stamped now) hold nothing
    # back.
    run_module("spark_jobs.streaming", *drain)
    send_events_stamped_in_the_hour(topic, 3, first=2000, partition=1, stamp_now=True)
    assert completeness_sensor(topic).poke(context={}) is True
    assert [
        hour for (hour,) in query(scratch_dsn, "SELECT date FROM batch_hours_to_republish")
    ] == [datetime.fromisoformat(HOUR.replace("Z", "+00:00"))]
    # Meanwhile the published run is older than the hour's input: the speed layer answers, late
    # events included.
    assert serving_layers(scratch_dsn) == {"speed"}
    assert served_antenna_bytes(scratch_dsn) == hour_bytes + late_bytes

    run_id = republish_with_the_scheduler(topic, scratch_dsn, storage, tmp_path)

    assert run_id.startswith("republish__20261127T10__input_")
    assert antenna_bytes(scratch_dsn) == hour_bytes + late_bytes
    assert query(scratch_dsn, "SELECT records_behind, forced FROM batch_hour_runs") == [(0, False)]
    assert query(scratch_dsn, "SELECT count(*) FROM batch_hours_to_republish") == [(0,)]
    assert serving_layers(scratch_dsn) == {"batch"}
    assert served_antenna_bytes(scratch_dsn) == hour_bytes + late_bytes


def served_antenna_bytes(dsn: str) -> int:
    return query(
        dsn,
        "SELECT sum(sum_antenna_bytes)::bigint FROM serving_antenna_hourly WHERE date = %s",
        (HOUR,),
    )[0][0]


def test_runs_of_one_hour_take_turns_and_older_input_never_replaces_newer(scratch_dsn):
    from spark_jobs import postgres
    from spark_jobs.batch import HourResult

    hour = datetime.fromisoformat(HOUR.replace("Z", "+00:00"))

    def result(total: int) -> HourResult:
        return HourResult([("a-1", total)], [], [("SKYPE", total)], [], 1, total, total)

    def publish(total: int, batch: int) -> None:
        postgres.publish_hour(
            scratch_dsn,
            hour,
            result(total),
            postgres.HourRun(batch, 1, 1),
            gate=lambda cursor: None,
        )

    holder = psycopg2.connect(scratch_dsn)
    with holder.cursor() as cur:
        cur.execute(postgres.HOUR_LOCK, (hour,))
    newer = threading.Thread(target=publish, args=(200, 9))
    newer.start()
    time.sleep(3)
    assert newer.is_alive(), "a second run of the hour must wait for the lock"
    assert query(scratch_dsn, "SELECT count(*) FROM batch_hour_runs") == [(0,)]
    holder.rollback()
    holder.close()
    newer.join(timeout=30)
    assert query(scratch_dsn, "SELECT last_streaming_batch FROM batch_hour_runs") == [(9,)]

    with pytest.raises(postgres.HourSuperseded):
        publish(100, 5)
    assert antenna_bytes(scratch_dsn) == 200
