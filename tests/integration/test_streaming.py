"""The speed layer end to end: simulator -> real Kafka -> Spark Structured Streaming ->
PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from common import settings
from spark_jobs.storage import StorageLayout
from tests.integration.conftest import (
    REPO_ROOT,
    known_user_ids,
    load_summary,
    query,
    run_module,
    streaming_args,
    summary_totals,
    table_totals,
)

pytestmark = pytest.mark.services

HOUR_START = "2026-11-27T10:00:00Z"


def simulate(topic: str, summary_path: Path, *extra: str) -> dict:
    run_module(
        "simulator",
        "--topic",
        topic,
        "--start",
        HOUR_START,
        "--duration",
        "3600",
        "--rate",
        "0",
        "--seed",
        "7",
        "--unknown-devices",
        "2",
        "--summary-out",
        str(summary_path),
        "--no-progress",
        *extra,
    )
    return load_summary(summary_path)


def assert_speed_tables_equal(dsn: str, summary: dict) -> None:
    users = known_user_ids(dsn)
    assert table_totals(
        dsn, "bytes_agg_antenna", "antenna_id", "sum_antenna_bytes"
    ) == summary_totals(summary, "windows", "antenna", "antenna_id")
    assert table_totals(dsn, "bytes_agg_user", "id", "sum_user_bytes") == summary_totals(
        summary, "windows", "user", "id", keep=users.__contains__
    )
    assert table_totals(dsn, "bytes_agg_app", "app", "sum_app_bytes") == summary_totals(
        summary, "windows", "app", "app"
    )


def raw_events(storage_root: Path):
    """Every row of raw Parquet, read without Spark (hidden and `_` folders are skipped, as Spark
    does)."""
    dataset = ds.dataset(
        StorageLayout(str(storage_root)).raw, format="parquet", partitioning="hive"
    )
    return dataset.to_table(
        columns=["kafka_partition", "kafka_offset", "bytes", "event_hour"]
    ).to_pylist()


def assert_raw_holds_each_event_once(storage_root: Path, summary: dict) -> None:
    rows = raw_events(storage_root)
    offsets = {(r["kafka_partition"], r["kafka_offset"]) for r in rows}
    assert len(rows) == summary["events"]
    assert len(offsets) == len(rows)
    assert sum(r["bytes"] for r in rows) == summary["total_bytes"]


def kafka_end_offsets(topic: str) -> list[tuple[int, int]]:
    """(partition, end offset) of every partition of the topic, as Kafka says now."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers())
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        return sorted(
            (tp.partition, offset) for tp, offset in consumer.end_offsets(partitions).items()
        )
    finally:
        consumer.close()


def assert_health_rows_match_the_run(dsn: str, topic: str, events: int) -> None:
    """docs/contract.md §10: one health row per applied micro-batch, whose events add up to the
    events stored, and a last batch that committed what Kafka holds (lag 0)."""
    (last_batch,) = query(dsn, "SELECT last_batch_id FROM speed_layer_progress")[0]
    batches = query(dsn, "SELECT batch_id, events FROM speed_micro_batches ORDER BY batch_id")
    assert [batch_id for batch_id, _ in batches] == list(range(last_batch + 1))
    assert sum(batch_events for _, batch_events in batches) == events
    assert query(
        dsn,
        "SELECT partition, committed_offset, latest_offset FROM speed_micro_batch_partitions"
        " WHERE batch_id = %s AND topic = %s ORDER BY partition",
        (last_batch, topic),
    ) == [(partition, end, end) for partition, end in kafka_end_offsets(topic)]
    assert query(
        dsn,
        "SELECT sum(records_behind) FROM speed_partition_lag WHERE batch_id = %s",
        (last_batch,),
    ) == [(0,)]


def test_seeded_run_equals_simulator_summary_and_rerun_changes_nothing(
    topic, scratch_dsn, tmp_path
):
    summary = simulate(topic, tmp_path / "summary.json")

    run_module(
        "spark_jobs.streaming",
        *streaming_args(topic, scratch_dsn, tmp_path / "storage", "--available-now"),
    )

    assert summary["events"] == 60 * 22
    assert_speed_tables_equal(scratch_dsn, summary)
    assert_raw_holds_each_event_once(tmp_path / "storage", summary)
    assert {r["event_hour"] for r in raw_events(tmp_path / "storage")} == {"2026-11-27-10"}

    run_module(
        "spark_jobs.streaming",
        *streaming_args(topic, scratch_dsn, tmp_path / "storage", "--available-now"),
    )

    assert_speed_tables_equal(scratch_dsn, summary)
    assert_raw_holds_each_event_once(tmp_path / "storage", summary)


def event(
    bytes_, id_="00000000-0000-0000-0000-000000000004", ts=1764237600, app="WHATSAPP", antenna="a-1"
):
    return json.dumps(
        {"bytes": bytes_, "timestamp": ts, "app": app, "id": id_, "antenna_id": antenna}
    )


MALFORMED = {
    "this is not json": "invalid_json",
    '["a", "list"]': "not_an_object",
    (
        '{"timestamp": 1764237600, "app": "SKYPE", "id": "x", "antenna_id": "a-1"}'
    ): "missing_field:bytes",
    (
        '{"bytes": null, "timestamp": 1764237600, "app": "SKYPE", "id": "x", "antenna_id": "a-1"}'
    ): "null_field:bytes",
    (
        '{"bytes": "12", "timestamp": 1764237600, "app": "SKYPE", "id": "x", "antenna_id": "a-1"}'
    ): "wrong_type:bytes",
    (
        '{"bytes": 12.5, "timestamp": 1764237600, "app": "SKYPE", "id": "x", "antenna_id": "a-1"}'
    ): "wrong_type:bytes",
    (
        '{"bytes": 12, "timestamp": "2025-11-27T10:00:00Z",'
        ' "app": "SKYPE", "id": "x", "antenna_id": "a-1"}'
    ): "wrong_type:timestamp",
    (
        '{"bytes": -5, "timestamp": 1764237600, "app": "SKYPE", "id": "x", "antenna_id": "a-1"}'
    ): "negative_bytes",
}


def test_malformed_records_are_quarantined_and_valid_ones_around_them_count(
    topic, scratch_dsn, tmp_path
):
    big = 5 * 2**31
    valid = [event(big), event(7), event(1000, id_="ffffffff-not-a-user"), event(big, app="SKYPE")]
    values = [v for pair in zip(valid, MALFORMED, strict=False) for v in pair] + list(MALFORMED)[
        len(valid) :
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers(), acks="all")
    for value in values:
        producer.send(topic, value.encode("utf-8"), partition=0)
    producer.flush()
    producer.close()
    storage = tmp_path / "storage"

    run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now")
    )

    quarantined = (
        ds.dataset(StorageLayout(str(storage)).quarantine, format="parquet", partitioning="hive")
        .to_table()
        .to_pylist()
    )
    assert {(r["value"], r["reason"]) for r in quarantined} == set(MALFORMED.items())
    assert sorted(r["offset"] for r in quarantined) == sorted(values.index(v) for v in MALFORMED)
    assert {r["topic"] for r in quarantined} == {topic}
    window = 1764237600
    assert query(scratch_dsn, "SELECT antenna_id, sum_antenna_bytes FROM bytes_agg_antenna") == [
        ("a-1", 2 * big + 7 + 1000)
    ]
    assert query(
        scratch_dsn,
        "SELECT id, extract(epoch FROM date)::bigint, sum_user_bytes FROM bytes_agg_user",
    ) == [("00000000-0000-0000-0000-000000000004", window, 2 * big + 7)]
    assert sorted(query(scratch_dsn, "SELECT app, sum_app_bytes FROM bytes_agg_app")) == [
        ("SKYPE", big),
        ("WHATSAPP", big + 1007),
    ]
    assert query(
        scratch_dsn, "SELECT valid_events, quarantined_events FROM speed_layer_progress"
    ) == [(4, len(MALFORMED))]
    assert_health_rows_match_the_run(scratch_dsn, topic, events=4)
    assert dict(
        query(
            scratch_dsn, "SELECT reason, sum(records) FROM speed_micro_batch_quarantine GROUP BY 1"
        )
    ) == Counter(MALFORMED.values())
    assert query(scratch_dsn, "SELECT sum(quarantined) FROM speed_micro_batches") == [
        (len(MALFORMED),)
    ]
    assert query(
        scratch_dsn,
        "SELECT extract(epoch FROM max(newest_event_time))::bigint FROM speed_micro_batches",
    ) == [(window,)]


def start_streaming(topic: str, dsn: str, storage: Path, log_path: Path) -> subprocess.Popen:
    """The job in its own process group, so SIGKILL takes the Spark JVM down with it, as a crash
    would."""
    args = streaming_args(
        topic, dsn, storage, "--trigger-seconds", "0.5", "--max-offsets-per-trigger", "1500"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.streaming", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("ab"),
        start_new_session=True,
    )


def wait_for_batches(dsn: str, after: int, process: subprocess.Popen, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the streaming job ended before it was killed"
        rows = query(dsn, "SELECT last_batch_id FROM speed_layer_progress")
        if rows and rows[0][0] > after:
            return rows[0][0]
        time.sleep(0.2)
    raise AssertionError(f"no micro-batch after {after} was applied within {timeout} s")


def test_sigkill_mid_stream_and_restart_keeps_every_total_exact(topic, scratch_dsn, tmp_path):
    summary = simulate(
        topic,
        tmp_path / "summary.json",
        "--devices",
        "20",
        "--unknown-devices",
        "30",
        "--tick-seconds",
        "10",
    )
    storage, log_path = tmp_path / "storage", tmp_path / "streaming.log"
    rng = random.Random(11)
    last_batch = -1

    for _ in range(2):
        process = start_streaming(topic, scratch_dsn, storage, log_path)
        last_batch = wait_for_batches(scratch_dsn, last_batch, process)
        # Land the kill at an arbitrary point of a later micro-batch: writing Parquet, or
        # PostgreSQL.
        time.sleep(rng.uniform(0.0, 1.5))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        last_batch = query(scratch_dsn, "SELECT last_batch_id FROM speed_layer_progress")[0][0]

    run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, storage, "--available-now")
    )

    assert summary["events"] == 360 * 50
    assert_speed_tables_equal(scratch_dsn, summary)
    assert_raw_holds_each_event_once(storage, summary)
    # Batches replayed after the kills rewrote their health rows rather than adding to them.
    assert_health_rows_match_the_run(scratch_dsn, topic, events=summary["events"])
