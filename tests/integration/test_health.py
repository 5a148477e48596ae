"""Pipeline health in PostgreSQL (docs/contract.md §10), with rows written by hand: the hour
states of `batch_hour_states`, the retention delete of the micro-batch rows, and the report of
`python -m spark_jobs.health` (`make status`), including its one line for a database it cannot
use."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from devtools.scratch_db import scratch_database
from spark_jobs import health
from tests.integration.conftest import execute, query, run_module

pytestmark = pytest.mark.services

HEALTH_TABLES = (
    "speed_micro_batches",
    "speed_hour_batches",
    "batch_hour_runs",
    "batch_hour_failures",
)
FAILED_CHECKS = "input_complete, raw_rows_equal_speed_events"


@pytest.fixture(scope="module")
def module_dsn():
    with scratch_database("test_health") as dsn:
        yield dsn


@pytest.fixture
def dsn(module_dsn):
    execute(module_dsn, f"TRUNCATE {', '.join(HEALTH_TABLES)} CASCADE")
    return module_dsn


def hours_ago(hours: int) -> datetime:
    """The start of the UTC hour `hours` before the current one (0: the current hour)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=hours)


def speed_counted(dsn: str, hour: datetime, *batch_ids: int) -> None:
    """The stream counted events of `hour` in these micro-batches (speed_hour_batches)."""
    for batch_id in batch_ids:
        execute(
            dsn,
            "INSERT INTO speed_hour_batches (date, batch_id, events, bytes)"
            " VALUES (%s, %s, 10, 100)",
            (hour, batch_id),
        )


def published(dsn: str, hour: datetime, from_batch: int) -> None:
    execute(
        dsn,
        "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
        " last_streaming_batch) VALUES (%s, 10, 100, 0, %s)",
        (hour, from_batch),
    )


def failed(dsn: str, hour: datetime, at_batch: int) -> None:
    execute(
        dsn,
        "INSERT INTO batch_hour_failures (date, failed_checks, details, last_streaming_batch)"
        " VALUES (%s, %s, 'quality check input_complete failed: records_behind=5', %s)",
        (hour, FAILED_CHECKS, at_batch),
    )


def micro_batch(
    dsn: str,
    batch_id: int,
    finished_at: datetime,
    events: int = 100,
    partitions: tuple[tuple[int, int, int], ...] = ((0, 50, 50),),
    quarantine: tuple[tuple[str, int], ...] = (),
    newest_event_time: datetime | None = None,
    query_id: str = "q",
) -> None:
    """A micro-batch's health rows as the streaming job writes them; partitions are
    (partition, committed offset, latest offset)."""
    execute(
        dsn,
        "INSERT INTO speed_micro_batches (query_id, batch_id, finished_at, events, quarantined,"
        " newest_event_time, read_aggregate_seconds, raw_seconds, quarantine_seconds,"
        " postgres_seconds, compaction_seconds) VALUES (%s, %s, %s, %s, %s, %s, 1, 1, 0, 1, 0)",
        (
            query_id,
            batch_id,
            finished_at,
            events,
            sum(n for _, n in quarantine),
            newest_event_time,
        ),
    )
    for partition, committed, latest in partitions:
        execute(
            dsn,
            "INSERT INTO speed_micro_batch_partitions VALUES (%s, %s, 'devices', %s, %s, %s)",
            (query_id, batch_id, partition, committed, latest),
        )
    for reason, records in quarantine:
        execute(
            dsn,
            "INSERT INTO speed_micro_batch_quarantine VALUES (%s, %s, %s, %s)",
            (query_id, batch_id, reason, records),
        )


# ---- batch_hour_states ---------------------------------------------------------------------


def only_open_hour(dsn):
    speed_counted(dsn, hours_ago(0), 3)
    return hours_ago(0), ("open", None, None, 3)


def ended_hour_not_published(dsn):
    speed_counted(dsn, hours_ago(3), 3)
    return hours_ago(3), ("waiting for completeness", None, None, 3)


def hour_published_from_its_newest_batch(dsn):
    speed_counted(dsn, hours_ago(3), 2, 3)
    published(dsn, hours_ago(3), from_batch=3)
    return hours_ago(3), ("published", None, 3, 3)


def hour_published_then_late_events(dsn):
    speed_counted(dsn, hours_ago(3), 2, 5)
    published(dsn, hours_ago(3), from_batch=3)
    return hours_ago(3), ("republication pending", None, 3, 5)


def hour_whose_gate_failed(dsn):
    speed_counted(dsn, hours_ago(3), 2)
    failed(dsn, hours_ago(3), at_batch=2)
    return hours_ago(3), ("failed", FAILED_CHECKS, None, 2)


@pytest.mark.parametrize(
    "rows",
    [
        only_open_hour,
        ended_hour_not_published,
        hour_published_from_its_newest_batch,
        hour_published_then_late_events,
        hour_whose_gate_failed,
    ],
)
def test_each_hour_state_arises_from_the_rows_that_cause_it(dsn, rows):
    hour, expected = rows(dsn)

    assert query(
        dsn,
        "SELECT date, state, failed_checks, published_from_batch, newest_speed_batch"
        " FROM batch_hour_states",
    ) == [(hour, *expected)]


# ---- retention -----------------------------------------------------------------------------


def test_the_retention_delete_removes_old_micro_batches_with_their_rows_and_keeps_recent_ones(dsn):
    now = datetime.now(UTC)
    micro_batch(dsn, 1, now - timedelta(days=8), quarantine=(("invalid_json", 2),))
    micro_batch(dsn, 2, now - timedelta(days=6, hours=23), quarantine=(("invalid_json", 1),))
    micro_batch(dsn, 3, now - timedelta(minutes=1))

    deleted = health.delete_expired(dsn, retention_days=7)

    assert deleted == 1
    assert query(dsn, "SELECT batch_id FROM speed_micro_batches ORDER BY 1") == [(2,), (3,)]
    assert query(dsn, "SELECT batch_id FROM speed_micro_batch_partitions ORDER BY 1") == [
        (2,),
        (3,),
    ]
    assert query(dsn, "SELECT batch_id, records FROM speed_micro_batch_quarantine") == [(2, 1)]


# ---- python -m spark_jobs.health -----------------------------------------------------------


def test_the_status_report_names_lag_last_batch_freshness_published_hour_and_hours_to_look_at(
    dsn, capsys
):
    now = datetime.now(UTC)
    micro_batch(dsn, 4, now - timedelta(minutes=5), partitions=((0, 10, 90), (1, 20, 20)))
    micro_batch(
        dsn,
        5,
        now - timedelta(seconds=30),
        events=1320,
        partitions=((0, 100, 100), (1, 40, 43), (2, 7, 7)),
        quarantine=(("invalid_json", 6), ("negative_bytes", 2)),
        newest_event_time=hours_ago(0),
    )
    speed_counted(dsn, hours_ago(0), 5)
    speed_counted(dsn, hours_ago(2), 3)
    speed_counted(dsn, hours_ago(3), 3, 5)
    published(dsn, hours_ago(3), from_batch=3)
    speed_counted(dsn, hours_ago(4), 2)
    failed(dsn, hours_ago(4), at_batch=2)
    speed_counted(dsn, hours_ago(5), 1)
    published(dsn, hours_ago(5), from_batch=1)
    # Older than the report looks back: not listed.
    failed(dsn, hours_ago(24 * 8), at_batch=0)

    assert health.main(["--pg-dsn", dsn]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"streaming: last micro-batch 5 at \S+ \S+ UTC \(3\d s ago\): 1,320 events, 8 quarantined",
        lines[0],
    )
    assert (
        lines[1] == "streaming lag: 3 records behind Kafka (devices-0 0, devices-1 3, devices-2 0)"
    )
    assert re.fullmatch(
        rf"freshness: speed layer up to {hours_ago(0):%Y-%m-%d %H:%M:%S} UTC \(.+ behind\);"
        rf" batch layer up to {hours_ago(4):%Y-%m-%d %H:%M:%S} UTC \(.+ behind\)",
        lines[2],
    )
    assert re.fullmatch(
        rf"newest published hour: {hours_ago(3):%Y-%m-%d %H:%M} UTC \(from micro-batch 3, at .+"
        r", republication pending\)",
        lines[3],
    )
    assert lines[4] == "hours failed or waiting (last 7 days): 3"
    assert re.fullmatch(
        rf"  {hours_ago(4):%Y-%m-%d %H:%M} UTC failed: {FAILED_CHECKS} \(at .+\)", lines[5]
    )
    assert lines[6:] == [
        f"  {hours_ago(3):%Y-%m-%d %H:%M} UTC republication pending (published from micro-batch 3,"
        " late data up to micro-batch 5)",
        f"  {hours_ago(2):%Y-%m-%d %H:%M} UTC waiting for completeness",
    ]


def test_the_status_report_of_a_pipeline_that_has_not_run_yet(dsn, capsys):
    assert health.main(["--pg-dsn", dsn]) == 0

    assert capsys.readouterr().out.splitlines() == [
        "streaming: no micro-batch recorded yet",
        "streaming lag: unknown",
        "freshness: speed layer serves nothing yet; batch layer serves nothing yet",
        "newest published hour: none",
        "hours failed or waiting (last 7 days): none",
    ]


def test_an_unreachable_database_is_one_line_and_a_failure_exit():
    result = run_module(
        "spark_jobs.health", "--pg-dsn", "postgresql://nobody@127.0.0.1:1/none", check=False
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot connect to PostgreSQL at PG_DSN")
    assert len(result.stderr.splitlines()) == 1


def test_a_database_without_the_health_schema_is_one_line_and_a_failure_exit(capsys):
    with scratch_database("test_health_unmigrated", migrated=False) as dsn:
        assert health.main(["--pg-dsn", dsn]) == 1

    error = capsys.readouterr().err
    assert error.startswith("error: the database has no speed_micro_batches, ")
    assert "not migrated" in error and len(error.splitlines()) == 1
