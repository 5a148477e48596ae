"""The speed layer under hostile input and faults (docs/contract.md §1, §5), against the real
broker, Spark and PostgreSQL: poison records among normal traffic, a value the database refuses,
PostgreSQL cut mid-stream and at start-up, a broker restart, a SIGKILL at a chosen point with the
replay it forces, and a second job on the same storage root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pyarrow.dataset as ds
import pytest
from kafka import KafkaProducer

from common import settings
from localstack import kafka_broker as local_kafka
from localstack.postgres_server import dsn_parts
from spark_jobs.storage import StorageLayout
from tests.integration.conftest import (
    REPO_ROOT,
    epoch,
    query,
    run_module,
    streaming_args,
    summary_totals,
    table_totals,
)
from tests.integration.fault_proxy import FaultProxy
from tests.integration.test_streaming import (
    HOUR_START,
    assert_raw_holds_each_event_once,
    assert_speed_tables_equal,
    raw_events,
    simulate,
)

pytestmark = pytest.mark.services

H = epoch(HOUR_START)
KNOWN_USER = "00000000-0000-0000-0000-000000000004"
YEAR_1, YEAR_9999, BEFORE_1970 = -62135596800, 253402297200, -3600


def event(bytes_, ts=H, app="WHATSAPP", id_=KNOWN_USER, antenna="a-1") -> str:
    return json.dumps(
        {"bytes": bytes_, "timestamp": ts, "app": app, "id": id_, "antenna_id": antenna}
    )


POISON = {
    event(1, app="WHATS\u0000APP"): "nul_character:app",
    event(1, id_="d" * 10_000): "too_long:id",
    event(1, antenna="a" * 257): "too_long:antenna_id",
    event(10**12 + 1): "bytes_too_large",
    event(2**62): "bytes_too_large",
    event(2**63 - 1, app="SKYPE"): "bytes_too_large",
    (
        b'{"bytes": 1, "timestamp": 1795773600, "app": "\xff", "id": "x", "antenna_id": "a-1"}'
    ): "invalid_utf8",
}


def send(topic: str, values, partition: int | None = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers(), acks="all")
    for value in values:
        producer.send(
            topic, value if isinstance(value, bytes) else value.encode("utf-8"), partition=partition
        )
    producer.flush()
    producer.close()


def quarantined(storage: Path) -> list[dict]:
    return (
        ds.dataset(StorageLayout(str(storage)).quarantine, format="parquet", partitioning="hive")
        .to_table()
        .to_pylist()
    )


def progress(dsn: str) -> tuple[int, int, int]:
    rows = query(
        dsn, "SELECT last_batch_id, valid_events, quarantined_events FROM speed_layer_progress"
    )
    return rows[0] if rows else (-1, 0, 0)


def start_job(topic: str, dsn: str, storage: Path, log_path: Path, *extra: str) -> subprocess.Popen:
    """The job in its own process group, so SIGKILL takes the Spark JVM down with it, as a crash
    would."""
    args = streaming_args(
        topic, dsn, storage, "--trigger-seconds", "0.5", "--compact-after-minutes", "0", *extra
    )
    return subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.streaming", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("ab"),
        start_new_session=True,
    )


def wait_until(
    condition,
    what: str,
    timeout: float = 240,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise AssertionError(
                f"the streaming job exited ({process.returncode}) while waiting for {what}:\n{tail}"
            )
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, the graceful stop between two batches, then make sure the group is gone."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def proxy(scratch_dsn):
    parts = dsn_parts(scratch_dsn)
    fault_proxy = FaultProxy(parts.get("host", "127.0.0.1"), int(parts.get("port", 5432)))
    yield fault_proxy
    fault_proxy.close()


def test_poison_records_among_normal_traffic_are_quarantined_and_every_year_is_served(
    topic, scratch_dsn, tmp_path
):
    summary = simulate(topic, tmp_path / "summary.json")
    calendar_edges = [
        event(3, ts=YEAR_1),
        event(5, ts=BEFORE_1970 + 1799),
        event(7, ts=YEAR_9999 + 3599),
    ]
    send(topic, [*POISON, *calendar_edges])
    storage = tmp_path / "storage"

    run_module(
        "spark_jobs.streaming",
        *streaming_args(
            topic, scratch_dsn, storage, "--available-now", "--compact-after-minutes", "0"
        ),
    )

    rejected = quarantined(storage)
    assert sorted(
        (r["value"], r["reason"]) for r in rejected if r["reason"] != "invalid_utf8"
    ) == sorted((value, reason) for value, reason in POISON.items() if isinstance(value, str))
    assert sorted(r["reason"] for r in rejected) == sorted(POISON.values())
    # The normal hour is exact, and the three edge events are in hours of their own.
    edge_hours = {YEAR_1: 3, BEFORE_1970: 5, YEAR_9999: 7}
    antenna = table_totals(scratch_dsn, "bytes_agg_antenna", "antenna_id", "sum_antenna_bytes")
    assert {
        key: total for key, total in antenna.items() if H <= key[1] < H + 3600
    } == summary_totals(summary, "windows", "antenna", "antenna_id")
    assert query(
        scratch_dsn,
        "SELECT extract(epoch FROM date)::bigint, events, bytes"
        " FROM speed_hour_totals ORDER BY date",
    ) == [
        (YEAR_1, 1, 3),
        (BEFORE_1970, 1, 5),
        (H, summary["events"], summary["total_bytes"]),
        (YEAR_9999, 1, 7),
    ]

    # The batch layer takes each of those hours, and the serving views answer them at once. The
    # last hour of 9999 is in the future, so never complete: it is published by hand.
    for hour, total in edge_hours.items():
        hour_text = {
            YEAR_1: "0001-01-01T00:00:00Z",
            BEFORE_1970: "1969-12-31T23:00:00Z",
            YEAR_9999: "9999-12-31T23:00:00Z",
        }[hour]
        forced = ["--allow-incomplete"] if hour == YEAR_9999 else []
        run_module(
            "spark_jobs.batch",
            "--hour",
            hour_text,
            "--pg-dsn",
            scratch_dsn,
            "--storage-root",
            str(storage),
            "--master",
            "local[2]",
            "--topic",
            topic,
            *forced,
        )
        assert query(
            scratch_dsn,
            "SELECT sum_app_bytes FROM bytes_agg_app_1h WHERE date = to_timestamp(%s)",
            (hour,),
        ) == [(total,)]
    started = time.monotonic()
    served = query(
        scratch_dsn,
        "SELECT extract(epoch FROM date)::bigint, layer, sum(sum_antenna_bytes)"
        " FROM serving_antenna_hourly GROUP BY 1, 2",
    )
    assert time.monotonic() - started < 2
    assert sorted(served) == sorted(
        [
            (YEAR_1, "batch", 3),
            (BEFORE_1970, "batch", 5),
            (YEAR_9999, "batch", 7),
            (H, "speed", summary["total_bytes"]),
        ]
    )


def test_records_the_database_refuses_are_quarantined_instead_of_a_crash_loop(
    topic, scratch_dsn, tmp_path
):
    # A window whose running total is a few bytes from the top of bigint: adding to it overflows
    # in PostgreSQL, on every replay of the batch, though each record is valid on its own.
    with psycopg2.connect(scratch_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO bytes_agg_app (app, date, sum_app_bytes)"
            " VALUES ('FACETIME', to_timestamp(%s), %s)",
            (H, 2**63 - 10),
        )
    conn.close()
    send(
        topic,
        [
            event(5, app="SKYPE"),
            event(100, app="FACETIME"),
            event(7, app="FACETIME", ts=H + 300),
            event(11, app="SKYPE"),
        ],
    )
    storage = tmp_path / "storage"

    result = run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now")
    )

    assert (
        "quarantining the records behind 1 refused rows"
        " (database_refused:numeric_value_out_of_range)" in result.stderr
    )
    assert [(r["offset"], r["reason"]) for r in quarantined(storage)] == [
        (1, "database_refused:numeric_value_out_of_range")
    ]
    assert json.loads(quarantined(storage)[0]["value"])["bytes"] == 100
    # Everything else counts, in every table alike, and the raw storage holds exactly those events.
    assert sorted(query(scratch_dsn, "SELECT app, sum_app_bytes FROM bytes_agg_app")) == [
        ("FACETIME", 7),
        ("FACETIME", 2**63 - 10),
        ("SKYPE", 16),
    ]
    assert query(scratch_dsn, "SELECT sum(sum_antenna_bytes) FROM bytes_agg_antenna") == [(23,)]
    assert sorted(r["kafka_offset"] for r in raw_events(storage)) == [0, 2, 3]
    assert progress(scratch_dsn)[1:] == (3, 1)

    # A crash after the commit in PostgreSQL, before Spark's: the batch is replayed. Its raw files
    # are written again, and the refused record must stay out of them though PostgreSQL now
    # skips the batch as applied.
    commits = StorageLayout(str(storage)).streaming_checkpoint + "/commits"
    last = max(int(name) for name in os.listdir(commits) if name.isdigit())
    os.remove(f"{commits}/{last}")
    replay = run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now")
    )

    assert (
        f"batch {last}: 3 events, 1 quarantined (some refused by PostgreSQL),"
        " already applied before a restart" in replay.stderr
    )
    assert sorted(r["kafka_offset"] for r in raw_events(storage)) == [0, 2, 3]
    assert [(r["offset"], r["reason"]) for r in quarantined(storage)] == [
        (1, "database_refused:numeric_value_out_of_range")
    ]
    assert query(scratch_dsn, "SELECT sum(sum_antenna_bytes) FROM bytes_agg_antenna") == [(23,)]


def test_postgres_cut_mid_stream_and_at_start_up_is_waited_out_and_totals_stay_exact(
    topic, scratch_dsn, proxy, tmp_path
):
    summary = simulate(topic, tmp_path / "summary.json")
    storage, log = tmp_path / "storage", tmp_path / "streaming.log"
    dsn = proxy.dsn(scratch_dsn)

    proxy.cut()
    job = start_job(topic, dsn, storage, log, "--max-offsets-per-trigger", "200")
    try:
        wait_until(
            lambda: "PostgreSQL unavailable" in log.read_text(),
            "a start-up retry",
            process=job,
            log=log,
        )
        proxy.restore()
        wait_until(lambda: progress(scratch_dsn)[0] >= 1, "two micro-batches", process=job, log=log)
        with proxy.outage():
            time.sleep(25)
            assert job.poll() is None, "the job exited during the outage"
        wait_until(
            lambda: progress(scratch_dsn)[1] == summary["events"],
            "every event",
            process=job,
            log=log,
        )
    finally:
        stop(job)

    text = log.read_text()
    assert text.count("PostgreSQL unavailable") >= 3
    assert "Traceback" not in text
    assert_speed_tables_equal(scratch_dsn, summary)
    assert_raw_holds_each_event_once(storage, summary)


def test_sigkill_while_postgres_is_cut_forces_a_replay_that_keeps_every_number_exact(
    topic, scratch_dsn, proxy, tmp_path
):
    summary = simulate(topic, tmp_path / "summary.json", "--malformed-rate", "0.02")
    storage, log = tmp_path / "storage", tmp_path / "streaming.log"
    layout = StorageLayout(str(storage))
    dsn = proxy.dsn(scratch_dsn)

    job = start_job(topic, dsn, storage, log, "--max-offsets-per-trigger", "300")
    try:
        wait_until(lambda: progress(scratch_dsn)[0] >= 0, "a first batch", process=job, log=log)
        proxy.cut()
        # The next batch writes its raw files, then waits for PostgreSQL: kill it right there.
        frozen = progress(scratch_dsn)[0] + 1
        wait_until(
            lambda: (
                Path(layout.raw_batch("2026-11-27-10", frozen)).exists()
                and "PostgreSQL unavailable" in log.read_text()
            ),
            f"batch {frozen} frozen after its raw write",
            process=job,
            log=log,
        )
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        proxy.restore()
    assert progress(scratch_dsn)[0] == frozen - 1, (
        "the frozen batch must not have reached PostgreSQL"
    )

    result = run_module(
        "spark_jobs.streaming",
        *streaming_args(topic, dsn, storage, "--available-now", "--compact-after-minutes", "0"),
    )

    # The restarted job replayed the frozen batch (same id, same offsets) and applied it now.
    assert f"batch {frozen}: " in result.stderr
    assert f"batch {frozen - 1}: " not in result.stderr
    assert progress(scratch_dsn)[1] == summary["events"]
    assert progress(scratch_dsn)[2] == sum(summary["malformed"].values())
    assert_speed_tables_equal(scratch_dsn, summary)
    assert_raw_holds_each_event_once(storage, summary)
    assert len(quarantined(storage)) == sum(summary["malformed"].values())
    assert Path(layout.compacted_hour("2026-11-27-10")).exists()
    # The batch layer reads the compacted hour back exactly.
    run_module(
        "spark_jobs.batch",
        "--hour",
        HOUR_START,
        "--pg-dsn",
        scratch_dsn,
        "--storage-root",
        str(storage),
        "--master",
        "local[2]",
    )
    assert query(scratch_dsn, "SELECT valid_events, valid_bytes FROM batch_hour_runs") == [
        (summary["events"], summary["total_bytes"])
    ]


def test_broker_restart_mid_stream_is_ridden_out(topic, scratch_dsn, tmp_path):
    summary = simulate(topic, tmp_path / "summary.json")
    storage, log = tmp_path / "storage", tmp_path / "streaming.log"

    job = start_job(topic, scratch_dsn, storage, log, "--max-offsets-per-trigger", "100")
    try:
        wait_until(lambda: progress(scratch_dsn)[0] >= 1, "two micro-batches", process=job, log=log)
        local_kafka.down()
        time.sleep(15)
        assert job.poll() is None, "the job exited while the broker was down"
        local_kafka.up()
        wait_until(
            lambda: progress(scratch_dsn)[1] == summary["events"],
            "every event",
            timeout=420,
            process=job,
            log=log,
        )
    finally:
        if local_kafka.our_running_pid() is None:
            local_kafka.up()
        stop(job)

    assert "Traceback" not in log.read_text()
    assert_speed_tables_equal(scratch_dsn, summary)
    assert_raw_holds_each_event_once(storage, summary)


def test_a_second_job_on_the_same_storage_root_is_refused(topic, scratch_dsn, tmp_path):
    send(topic, [event(1)])
    storage, log = tmp_path / "storage", tmp_path / "first.log"
    first = start_job(topic, scratch_dsn, storage, log)
    try:
        wait_until(
            lambda: progress(scratch_dsn)[0] >= 0,
            "the first job's first batch",
            process=first,
            log=log,
        )

        same_root = run_module(
            "spark_jobs.streaming",
            *streaming_args(topic, scratch_dsn, storage),
            check=False,
            timeout=120,
        )
        same_checkpoint = run_module(
            "spark_jobs.streaming",
            *streaming_args(topic, scratch_dsn, tmp_path / "other-root"),
            "--checkpoint",
            StorageLayout(str(storage)).streaming_checkpoint,
            check=False,
            timeout=120,
        )
        assert first.poll() is None
    finally:
        stop(first)

    for result, what in ((same_root, "storage root"), (same_checkpoint, "checkpoint")):
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr[-3000:]
        assert errors[0].startswith(
            f"error: another streaming job holds the {what} (pid {first.pid} "
        )
    # Once the first job has stopped, the root is free again.
    run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now")
    )
