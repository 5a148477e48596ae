"""The micro-batch health record and its writer (docs/contract.md §10), without services: which
rows a batch gets, that a Kafka or PostgreSQL failure costs a warning line and never the batch,
and that old rows are deleted at most every few minutes."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from spark_jobs import health, postgres
from spark_jobs.streaming import parse_args

TOTALS = postgres.SpeedBatchTotals(
    increments={},
    hours=[(1764237600, 7, 70), (1764241200, 3, 30)],
    quarantined_by_reason=(("invalid_json", 2), ("negative_bytes", 1)),
    newest_event_time=1764241300,
)
END_OFFSETS = [
    postgres.PartitionOffset("devices", 1, 40),
    postgres.PartitionOffset("devices", 0, 9),
]
STEPS = {"read+aggregate": 1.5, "raw": 0.5, "postgres": 0.25, "compaction": 0.0}


def test_a_batch_health_has_its_counts_step_times_and_each_partitions_offsets():
    record = health.micro_batch_health(
        "q", 3, TOTALS, STEPS, END_OFFSETS, {("devices", 0): 12, ("devices", 1): 40}
    )

    assert record == health.MicroBatchHealth(
        query_id="q",
        batch_id=3,
        events=10,
        quarantined_by_reason=(("invalid_json", 2), ("negative_bytes", 1)),
        newest_event_time=1764241300,
        # read+aggregate, raw, quarantine (not run), postgres, compaction
        step_seconds=(1.5, 0.5, 0.0, 0.25, 0.0),
        partitions=(
            health.PartitionHealth("devices", 0, 9, 12),
            health.PartitionHealth("devices", 1, 40, 40),
        ),
    )
    assert record.quarantined == 3


def test_without_kafka_s_latest_offsets_a_batch_has_no_partition_rows():
    record = health.micro_batch_health("q", 3, TOTALS, STEPS, END_OFFSETS, None)

    assert record.partitions == ()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def writer(monkeypatch):
    """A HealthWriter whose database and Kafka are lists and functions of the test."""
    calls: dict[str, list] = {"written": [], "expired": []}
    monkeypatch.setattr(health, "write_micro_batch", lambda dsn, row: calls["written"].append(row))
    monkeypatch.setattr(
        health, "delete_expired", lambda dsn, days: calls["expired"].append(days) or 0
    )
    clock = FakeClock()
    writer = health.HealthWriter("dsn", "kafka:9092", retention_days=7, clock=clock)
    monkeypatch.setattr(
        writer.latest_offsets, "of", lambda partitions: dict.fromkeys(partitions, 50)
    )
    return writer, calls, clock


def test_the_writer_writes_each_batch_and_deletes_old_rows_at_most_every_five_minutes(writer):
    health_writer, calls, clock = writer

    for seconds in (0, 60, 299, 301, 400):
        clock.now = 1000.0 + seconds
        health_writer.record("q", seconds, TOTALS, STEPS, END_OFFSETS)

    assert [row.batch_id for row in calls["written"]] == [0, 60, 299, 301, 400]
    assert [len(row.partitions) for row in calls["written"]] == [2] * 5
    # At the first batch and the first one 5 minutes later.
    assert calls["expired"] == [7, 7]


def test_kafka_not_answering_writes_the_row_without_its_lag_and_warns(writer, caplog, monkeypatch):
    health_writer, calls, _ = writer

    def no_answer(partitions):
        raise TimeoutError("Failed to get offsets by timestamps in 5000 ms")

    monkeypatch.setattr(health_writer.latest_offsets, "of", no_answer)

    with caplog.at_level(logging.WARNING, logger="spark_jobs.health"):
        health_writer.record("q", 8, TOTALS, STEPS, END_OFFSETS)

    assert [(row.batch_id, row.partitions) for row in calls["written"]] == [(8, ())]
    assert "batch 8: Kafka did not give the latest offsets (Failed to get offsets" in caplog.text


def test_a_failing_health_write_is_a_warning_and_never_reaches_the_batch(
    writer, caplog, monkeypatch
):
    health_writer, calls, _ = writer

    def refused(dsn, row):
        raise postgres.DatabaseUnavailable("cannot connect to PostgreSQL at PG_DSN")

    monkeypatch.setattr(health, "write_micro_batch", refused)

    with caplog.at_level(logging.WARNING, logger="spark_jobs.health"):
        health_writer.record("q", 9, TOTALS, STEPS, END_OFFSETS)

    assert "batch 9: health row not written (cannot connect to PostgreSQL" in caplog.text
    assert calls["expired"] == []


def test_the_retention_is_a_streaming_option_with_a_default_of_a_week(monkeypatch):
    monkeypatch.delenv("HEALTH_RETENTION_DAYS", raising=False)
    assert parse_args([]).health_retention_days == 7.0
    monkeypatch.setenv("HEALTH_RETENTION_DAYS", "2")
    assert parse_args([]).health_retention_days == 2.0
    assert parse_args(["--health-retention-days", "0.5"]).health_retention_days == 0.5
    with pytest.raises(SystemExit):
        parse_args(["--health-retention-days", "0"])


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0 s"), (4.9, "4 s"), (182, "3 min 2 s"), (18_720, "5 h 12 min"), (183_600, "2 d 3 h")],
)
def test_durations_read_at_a_glance(seconds, text):
    assert health.duration(timedelta(seconds=seconds)) == text
