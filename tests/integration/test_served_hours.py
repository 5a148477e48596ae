"""The table of hours the batch layer serves (sql/migrations/V011) on a real PostgreSQL server:
after every kind of write it holds what the definition of docs/contract.md §7 gives (published,
and no speed micro-batch newer than the one the run read), and a late micro-batch committed
while a run publishes its hour is never lost behind the publication."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from devtools.scratch_db import scratch_database
from tests.integration.conftest import execute, query

pytestmark = pytest.mark.services

HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)
NEXT_HOUR = HOUR + timedelta(hours=1)
# The definition, computed from the two tables it depends on (as batch_served_hours was up to V010).
DEFINITION = """
    SELECT runs.date, runs.last_streaming_batch FROM batch_hour_runs AS runs
    WHERE NOT EXISTS (
        SELECT 1 FROM speed_hour_batches AS batches
        WHERE batches.date = runs.date AND batches.batch_id > runs.last_streaming_batch
    )
"""


@pytest.fixture(scope="module")
def module_dsn():
    with scratch_database("test_served") as dsn:
        yield dsn


@pytest.fixture
def dsn(module_dsn):
    execute(module_dsn, "TRUNCATE batch_hour_runs, speed_hour_batches")
    return module_dsn


def publish(cur, hour: datetime, from_batch: int) -> None:
    cur.execute(
        "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
        " last_streaming_batch) VALUES (%s, 1, 1, 0, %s) ON CONFLICT (date) DO UPDATE SET"
        " last_streaming_batch = EXCLUDED.last_streaming_batch",
        (hour, from_batch),
    )


def count_in_stream(cur, hour: datetime, batch_id: int) -> None:
    cur.execute(
        "INSERT INTO speed_hour_batches (date, batch_id, events, bytes) VALUES (%s, %s, 1, 1)",
        (hour, batch_id),
    )


def write(dsn: str, *writes) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for do, *args in writes:
            do(cur, *args)
    conn.close()


def served(dsn: str) -> set[tuple]:
    return set(query(dsn, "SELECT date, last_streaming_batch FROM batch_served_hours"))


def defined(dsn: str) -> set[tuple]:
    return set(query(dsn, DEFINITION))


def test_a_published_hour_is_served_until_a_newer_micro_batch_counts_events_in_it(dsn):
    write(dsn, (count_in_stream, HOUR, 3), (publish, HOUR, 3))
    assert served(dsn) == {(HOUR, 3)}

    write(dsn, (count_in_stream, HOUR, 4))  # late data

    assert served(dsn) == set()


def test_republication_from_the_newer_input_serves_the_hour_again(dsn):
    write(dsn, (count_in_stream, HOUR, 3), (publish, HOUR, 3), (count_in_stream, HOUR, 4))
    write(dsn, (publish, HOUR, 4))
    assert served(dsn) == {(HOUR, 4)}


def test_a_withdrawn_hour_is_not_served_and_other_hours_are_untouched(dsn):
    write(dsn, (publish, HOUR, 3), (publish, NEXT_HOUR, 3))
    execute(dsn, "DELETE FROM batch_hour_runs WHERE date = %s", (HOUR,))
    assert served(dsn) == {(NEXT_HOUR, 3)}


def test_rolling_up_an_hours_micro_batch_counts_leaves_it_served(dsn):
    write(dsn, (count_in_stream, HOUR, 2), (count_in_stream, HOUR, 3), (publish, HOUR, 3))
    # What roll_up_speed_hour (V008) does to the counts of a served hour.
    execute(dsn, "DELETE FROM speed_hour_batches WHERE date = %s AND batch_id = 2", (HOUR,))
    execute(dsn, "UPDATE speed_hour_batches SET events = 2 WHERE date = %s", (HOUR,))
    assert served(dsn) == {(HOUR, 3)}


def test_truncating_either_table_recomputes_every_hour(dsn):
    write(dsn, (publish, HOUR, 3), (count_in_stream, HOUR, 4), (publish, NEXT_HOUR, 3))
    assert served(dsn) == {(NEXT_HOUR, 3)}

    execute(dsn, "TRUNCATE speed_hour_batches")
    assert served(dsn) == {(HOUR, 3), (NEXT_HOUR, 3)}

    execute(dsn, "TRUNCATE batch_hour_runs")
    assert served(dsn) == set()


def test_after_a_sequence_of_writes_the_table_holds_what_the_definition_gives(dsn):
    hours = [HOUR + timedelta(hours=n) for n in range(6)]
    for step in range(40):
        hour = hours[(step * 7) % len(hours)]
        if step % 3 == 0:
            write(dsn, (publish, hour, step))
        elif step % 5 == 0:
            execute(dsn, "DELETE FROM batch_hour_runs WHERE date = %s", (hour,))
        else:
            write(dsn, (count_in_stream, hour, step))
        assert served(dsn) == defined(dsn), f"after step {step}"
    assert served(dsn), "the sequence should leave some hour served"


def test_a_late_micro_batch_committed_during_a_publication_unserves_the_hour(dsn):
    """The stream counts events of the hour (batch 8) while a run that read up to batch 7 is
    publishing it. Whichever commits first, the hour must end up not served: the speed layer holds
    events the run did not read. Without V011's per-hour lock the stream's recomputation would run
    on a snapshot without the run's row and leave the hour served."""
    write(dsn, (count_in_stream, HOUR, 7))
    publication = psycopg2.connect(dsn)
    stream = psycopg2.connect(dsn)
    try:
        with publication.cursor() as cur:
            publish(cur, HOUR, 7)  # uncommitted: holds the hour's lock
        stream_done = threading.Event()

        def stream_commits_batch_8():
            with stream, stream.cursor() as cur:
                count_in_stream(cur, HOUR, 8)
            stream_done.set()

        writer = threading.Thread(target=stream_commits_batch_8)
        writer.start()
        time.sleep(1.0)
        assert not stream_done.is_set(), "the stream's write should wait for the publication"
        publication.commit()
        writer.join(timeout=30)
        assert stream_done.is_set()
    finally:
        publication.close()
        stream.close()

    assert served(dsn) == set()
    assert defined(dsn) == set()
