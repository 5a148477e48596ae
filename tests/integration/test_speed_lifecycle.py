"""The speed windows' lifecycle (sql/migrations/V008, spark_jobs/lifecycle.py
roll_up_speed_hours) on a real PostgreSQL database: the served old hours are rolled up, every
other hour is left as it was, and every serving view, reconciliation and quality check answers
exactly as before, also after a late event reopens a rolled-up hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from spark_jobs import quality_gate
from spark_jobs.lifecycle import roll_up_speed_hours
from tests.integration.conftest import execute, query

pytestmark = pytest.mark.services

CUTOFF = datetime(2026, 11, 20, tzinfo=UTC)
SERVED = datetime(2026, 11, 1, 10, tzinfo=UTC)
UNPUBLISHED = SERVED + timedelta(hours=1)
FAILED = SERVED + timedelta(hours=2)
PENDING = SERVED + timedelta(hours=3)
RECENT = CUTOFF + timedelta(hours=5)
HOURS = (SERVED, UNPUBLISHED, FAILED, PENDING, RECENT)
KEPT_AS_THEY_ARE = (UNPUBLISHED, FAILED, PENDING, RECENT)
ANTENNA = "11111111-1111-1111-1111-111111111111"
USER_IDS = ("00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000003")
APPS = ("SKYPE", "TELEGRAM")
MINUTES = (0, 5, 30, 55)
# The speed layer's app windows of the served hour missed this many bytes (a late event past its
# watermark) that its hour count and the batch layer have: a drift to keep.
MISSED_APP_BYTES = 700
VIEWS = {
    "serving_antenna_hourly": "antenna_id, date, sum_antenna_bytes, layer",
    "serving_app_hourly": "app, date, sum_app_bytes, layer",
    "serving_user_hourly": "email, date, sum_user_bytes, layer",
    "serving_users_over_quota": "email, date, quota, sum_user_bytes, layer",
    "serving_speed_drift": "date, batch_table, batch_bytes, speed_bytes, drift_bytes",
    "batch_served_hours": "date, last_streaming_batch",
    "batch_hours_to_republish": "date, last_batch_id, published_from_batch, failed_at_batch",
    "speed_hour_totals": "date, events, bytes, last_batch_id",
    "speed_window_hours": "date",
    "batch_hour_states": "date, state, published_from_batch, newest_speed_batch, speed_events",
}


def window_bytes(hour_index: int, minute: int, key_index: int) -> int:
    return 1000 * (hour_index + 1) + 10 * minute + key_index


def write_windows(dsn: str, hour: datetime, hour_index: int) -> None:
    for minute in MINUTES:
        at = hour + timedelta(minutes=minute)
        execute(
            dsn,
            "INSERT INTO bytes_agg_antenna VALUES (%s, %s, %s)",
            (ANTENNA, at, window_bytes(hour_index, minute, 0) * 2),
        )
        # The two users' devices send all of the antenna's bytes, half each.
        for user in USER_IDS:
            execute(
                dsn,
                "INSERT INTO bytes_agg_user VALUES (%s, %s, %s)",
                (user, at, window_bytes(hour_index, minute, 0)),
            )
        for key, app in enumerate(APPS):
            # Per minute the apps sum to the antenna, as the stream counts them.
            bytes_ = window_bytes(hour_index, minute, 0) * 2 - window_bytes(hour_index, minute, 1)
            execute(
                dsn,
                "INSERT INTO bytes_agg_app VALUES (%s, %s, %s)",
                (app, at, window_bytes(hour_index, minute, 1) if key else bytes_),
            )


def publish(dsn: str, hour: datetime, last_batch: int) -> None:
    """The batch rows of the hour as its windows sum them, and its run from input up to
    `last_batch`."""
    execute(
        dsn,
        "INSERT INTO bytes_agg_antenna_1h SELECT antenna_id, %s, sum(sum_antenna_bytes)"
        " FROM bytes_agg_antenna WHERE date >= %s AND date < %s + interval '1 hour' GROUP BY 1",
        (hour, hour, hour),
    )
    execute(
        dsn,
        "INSERT INTO bytes_agg_app_1h SELECT app, %s, sum(sum_app_bytes)"
        " FROM bytes_agg_app WHERE date >= %s AND date < %s + interval '1 hour' GROUP BY 1",
        (hour, hour, hour),
    )
    execute(
        dsn,
        "INSERT INTO bytes_agg_user_1h SELECT email, %s, sum(sum_user_bytes)"
        " FROM bytes_agg_user JOIN user_metadata USING (id)"
        " WHERE date >= %s AND date < %s + interval '1 hour' GROUP BY 1",
        (hour, hour, hour),
    )
    execute(
        dsn,
        "INSERT INTO users_over_quota_1h SELECT email, date, quota, sum_user_bytes"
        " FROM bytes_agg_user_1h JOIN user_metadata USING (email)"
        " WHERE date = %s AND sum_user_bytes > quota",
        (hour,),
    )
    execute(
        dsn,
        "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
        " last_streaming_batch, raw_rows, distinct_offsets)"
        " SELECT %s, 8, sum(sum_antenna_bytes), 0, %s, 8, 8 FROM bytes_agg_antenna_1h"
        " WHERE date = %s",
        (hour, last_batch, hour),
    )


def count_batches(dsn: str, hour: datetime, batch_ids: tuple[int, ...]) -> None:
    """The stream's count of the hour: its antenna bytes spread over the micro-batches."""
    (total,) = query(
        dsn,
        "SELECT sum(sum_antenna_bytes) FROM bytes_agg_antenna"
        " WHERE date >= %s AND date < %s + interval '1 hour'",
        (hour, hour),
    )[0]
    share = total // len(batch_ids)
    for position, batch in enumerate(batch_ids):
        bytes_ = total - share * (len(batch_ids) - 1) if position == 0 else share
        execute(
            dsn,
            "INSERT INTO speed_hour_batches VALUES (%s, %s, %s, %s)",
            (
                hour,
                batch,
                8 // len(batch_ids) + (8 % len(batch_ids) if position == 0 else 0),
                bytes_,
            ),
        )


@pytest.fixture
def hours_dsn(scratch_dsn):
    """Five old hours in every state, and one recent served hour."""
    for index, hour in enumerate(HOURS):
        write_windows(scratch_dsn, hour, index)
    count_batches(scratch_dsn, SERVED, (0, 1, 2))
    publish(scratch_dsn, SERVED, last_batch=4)
    execute(
        scratch_dsn,
        "UPDATE bytes_agg_app SET sum_app_bytes = sum_app_bytes - %s WHERE app = %s AND date = %s",
        (MISSED_APP_BYTES, APPS[1], SERVED + timedelta(minutes=30)),
    )
    count_batches(scratch_dsn, UNPUBLISHED, (3,))
    count_batches(scratch_dsn, FAILED, (3,))
    execute(
        scratch_dsn,
        "INSERT INTO batch_hour_failures (date, failed_checks, details, last_streaming_batch)"
        " VALUES (%s, 'bytes_equal_speed_bytes', 'corrupted', 3)",
        (FAILED,),
    )
    count_batches(scratch_dsn, PENDING, (1, 6))  # batch 6: late data after the run from 4
    publish(scratch_dsn, PENDING, last_batch=4)
    count_batches(scratch_dsn, RECENT, (7, 8))
    publish(scratch_dsn, RECENT, last_batch=8)
    return scratch_dsn


def everything_served(dsn: str) -> dict[str, list[tuple]]:
    return {
        view: sorted(query(dsn, f"SELECT {columns} FROM {view}"), key=repr)
        for view, columns in VIEWS.items()
    }


def windows_of(dsn: str, hour: datetime) -> list[tuple]:
    rows = []
    for table in ("bytes_agg_antenna", "bytes_agg_user", "bytes_agg_app"):
        rows += query(
            dsn,
            f"SELECT %s, * FROM {table} WHERE date >= %s AND date < %s + interval '1 hour'",
            (table, hour, hour),
        )
    return sorted(rows, key=repr)


def check_outcomes(dsn: str, hour: datetime) -> dict[str, list]:
    checks = quality_gate.load_checks()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        outcomes = quality_gate.run_checks(cur, checks, hour.isoformat())
    conn.close()
    return {outcome.name: outcome.violations for outcome in outcomes}


def test_old_served_hours_are_rolled_up_others_kept_and_every_reader_answers_as_before(hours_dsn):
    dsn = hours_dsn
    served_before = everything_served(dsn)
    kept_before = {hour: windows_of(dsn, hour) for hour in KEPT_AS_THEY_ARE}
    served_windows = windows_of(dsn, SERVED)
    checks_before = {hour: check_outcomes(dsn, hour) for hour in (SERVED, PENDING, RECENT)}
    assert all(not rows for rows in checks_before[SERVED].values()), checks_before[SERVED]
    assert (SERVED, "bytes_agg_app_1h", MISSED_APP_BYTES) in {
        (row[0], row[1], row[4]) for row in served_before["serving_speed_drift"]
    }

    assert roll_up_speed_hours(dsn, CUTOFF, dry_run=True) == {}
    assert everything_served(dsn) == served_before
    assert windows_of(dsn, SERVED) == served_windows

    rolled = roll_up_speed_hours(dsn, CUTOFF, dry_run=False)

    # One antenna, two users and two apps, each down from 4 windows to 1.
    assert rolled == {SERVED: (1 + 2 + 2) * (len(MINUTES) - 1)}
    assert {row[2] for row in windows_of(dsn, SERVED)} == {SERVED}
    assert query(
        dsn, "SELECT batch_id, events FROM speed_hour_batches WHERE date = %s", (SERVED,)
    ) == [(2, 8)]
    assert {hour: windows_of(dsn, hour) for hour in KEPT_AS_THEY_ARE} == kept_before
    assert everything_served(dsn) == served_before
    assert {hour: check_outcomes(dsn, hour) for hour in checks_before} == checks_before
    assert query(dsn, "SELECT count(*) FROM speed_drift_hours WHERE date = %s", (SERVED,)) == [(3,)]
    # A rerun finds nothing left.
    assert roll_up_speed_hours(dsn, CUTOFF, dry_run=False) == {}
    assert everything_served(dsn) == served_before


def test_a_late_event_in_a_rolled_up_hour_is_served_whole_by_the_speed_layer(hours_dsn):
    dsn = hours_dsn
    (speed_total,) = query(dsn, "SELECT bytes FROM speed_hour_totals WHERE date = %s", (SERVED,))[0]
    roll_up_speed_hours(dsn, CUTOFF, dry_run=False)

    # What the stream writes for a late event: a window of the hour and its batch's count.
    execute(
        dsn,
        "INSERT INTO bytes_agg_antenna VALUES (%s, %s, 5)",
        (ANTENNA, SERVED + timedelta(minutes=10)),
    )
    execute(dsn, "INSERT INTO speed_hour_batches VALUES (%s, 9, 1, 5)", (SERVED,))

    assert query(dsn, "SELECT count(*) FROM batch_served_hours WHERE date = %s", (SERVED,)) == [
        (0,)
    ]
    assert query(
        dsn,
        "SELECT layer, sum(sum_antenna_bytes) FROM serving_antenna_hourly WHERE date = %s"
        " GROUP BY layer",
        (SERVED,),
    ) == [("speed", speed_total + 5)]
    assert query(dsn, "SELECT date FROM batch_hours_to_republish ORDER BY date") == [
        (SERVED,),
        (PENDING,),
    ]
    # The recorded drift is not the hour's any more: measured live again.
    assert (SERVED, "bytes_agg_antenna_1h", -5) in {
        (row[0], row[1], row[2])
        for row in query(dsn, "SELECT date, batch_table, drift_bytes FROM serving_speed_drift")
    }
