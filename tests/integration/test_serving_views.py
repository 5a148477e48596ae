"""The serving views of sql/migrations/V003 on a real PostgreSQL database: the batch layer answers
the hours it closed (a row in batch_hour_runs), the speed layer's 5-minute windows every other
hour, each row says which, and users are keyed by email in both halves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from devtools.scratch_db import scratch_database
from tests.integration.conftest import execute, query

pytestmark = pytest.mark.services

CLOSED = datetime(2026, 11, 27, 10, tzinfo=UTC)
OPEN = CLOSED + timedelta(hours=1)
# Batch rows were written for this hour but no batch_hour_runs row: not closed, the speed layer
# answers.
UNCLOSED_WITH_ROWS = CLOSED + timedelta(hours=2)
MINUTES = timedelta(minutes=1)
ANTENNA = "11111111-1111-1111-1111-111111111111"
ANDRES, JUAN, FEDE = (
    f"00000000-0000-0000-0000-0000000000{n:02d}" for n in (1, 3, 4)
)  # quotas 200000, 100000, 5000
SPEED_ONLY_TABLES = ("bytes_agg_antenna", "bytes_agg_user", "bytes_agg_app")
ALL_TABLES = (
    *SPEED_ONLY_TABLES,
    "bytes_agg_antenna_1h",
    "bytes_agg_user_1h",
    "bytes_agg_app_1h",
    "users_over_quota_1h",
    "batch_hour_runs",
)


@pytest.fixture(scope="module")
def module_dsn():
    with scratch_database("test_serving") as dsn:
        yield dsn


@pytest.fixture
def dsn(module_dsn):
    execute(module_dsn, f"TRUNCATE {', '.join(ALL_TABLES)}")
    return module_dsn


def insert(dsn: str, table: str, rows: list[tuple]) -> None:
    placeholders = ", ".join(["%s"] * len(rows[0]))
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} VALUES ({placeholders})", rows)
    conn.close()


def close_hour(dsn: str, hour: datetime, valid_bytes: int = 0) -> None:
    insert(
        dsn,
        "batch_hour_runs"
        " (date, valid_events, valid_bytes, unknown_device_bytes, last_streaming_batch)",
        [(hour, 1, valid_bytes, 0, 0)],
    )


def view(dsn: str, name: str, columns: str) -> set[tuple]:
    return set(query(dsn, f"SELECT {columns} FROM {name}"))


def test_closed_hours_come_from_the_batch_layer_and_open_ones_from_the_speed_windows(dsn):
    insert(
        dsn,
        "bytes_agg_antenna",
        [
            # The closed hour's windows missed 500 bytes the batch layer counted.
            (ANTENNA, CLOSED, 1000),
            (ANTENNA, CLOSED + 55 * MINUTES, 2000),
            (ANTENNA, OPEN, 300),
            (ANTENNA, OPEN + 5 * MINUTES, 400),
            (ANTENNA, OPEN + 55 * MINUTES, 5),
            (ANTENNA, UNCLOSED_WITH_ROWS, 70),
        ],
    )
    insert(
        dsn, "bytes_agg_antenna_1h", [(ANTENNA, CLOSED, 3500), (ANTENNA, UNCLOSED_WITH_ROWS, 99999)]
    )
    close_hour(dsn, CLOSED, 3500)

    assert view(dsn, "serving_antenna_hourly", "antenna_id, date, sum_antenna_bytes, layer") == {
        (ANTENNA, CLOSED, 3500, "batch"),
        (ANTENNA, OPEN, 705, "speed"),
        (ANTENNA, UNCLOSED_WITH_ROWS, 70, "speed"),
    }


def test_a_closed_hour_is_answered_by_the_batch_layer_even_where_only_the_speed_layer_has_a_key(
    dsn,
):
    # The batch layer is the source of truth for a closed hour: a key it did not write has no bytes.
    insert(dsn, "bytes_agg_app", [("SKYPE", CLOSED, 10), ("TELEGRAM", CLOSED + 5 * MINUTES, 20)])
    insert(dsn, "bytes_agg_app_1h", [("SKYPE", CLOSED, 10)])
    close_hour(dsn, CLOSED, 10)

    assert view(dsn, "serving_app_hourly", "app, date, sum_app_bytes, layer") == {
        ("SKYPE", CLOSED, 10, "batch")
    }


def test_an_hour_closes_in_the_view_as_soon_as_its_batch_run_commits(dsn):
    insert(dsn, "bytes_agg_app", [("SKYPE", OPEN, 10), ("SKYPE", OPEN + 10 * MINUTES, 15)])
    assert view(dsn, "serving_app_hourly", "app, date, sum_app_bytes, layer") == {
        ("SKYPE", OPEN, 25, "speed")
    }

    insert(dsn, "bytes_agg_app_1h", [("SKYPE", OPEN, 26)])
    close_hour(dsn, OPEN, 26)

    assert view(dsn, "serving_app_hourly", "app, date, sum_app_bytes, layer") == {
        ("SKYPE", OPEN, 26, "batch")
    }


def test_users_are_keyed_by_email_in_both_layers(dsn):
    unknown_device = "ffffffff-ffff-ffff-ffff-ffffffffffff"
    insert(
        dsn,
        "bytes_agg_user",
        [
            (ANDRES, CLOSED, 1),
            (ANDRES, OPEN, 40000),
            (ANDRES, OPEN + 20 * MINUTES, 2000),
            (FEDE, OPEN + 5 * MINUTES, 6000),
            (unknown_device, OPEN, 777),
        ],
    )
    insert(
        dsn,
        "bytes_agg_user_1h",
        [("andres@gmail.com", CLOSED, 150000), ("juan@gmail.com", CLOSED, 90000)],
    )
    close_hour(dsn, CLOSED, 240000)

    assert view(dsn, "serving_user_hourly", "email, date, sum_user_bytes, layer") == {
        ("andres@gmail.com", CLOSED, 150000, "batch"),
        ("juan@gmail.com", CLOSED, 90000, "batch"),
        ("andres@gmail.com", OPEN, 42000, "speed"),
        ("fede@gmail.com", OPEN, 6000, "speed"),
    }


def test_users_over_quota_are_exact_for_closed_hours_and_live_for_open_ones(dsn):
    insert(dsn, "users_over_quota_1h", [("fede@gmail.com", CLOSED, 5000, 84536)])
    insert(
        dsn,
        "bytes_agg_user_1h",
        [("fede@gmail.com", CLOSED, 84536), ("juan@gmail.com", CLOSED, 100000)],
    )
    close_hour(dsn, CLOSED, 184536)
    insert(
        dsn,
        "bytes_agg_user",
        [
            # Juan's windows of the closed hour would put him over: the batch layer says he is not.
            (JUAN, CLOSED, 150000),
            (FEDE, OPEN, 3000),
            (FEDE, OPEN + 5 * MINUTES, 2001),  # 5001 > 5000: over
            (JUAN, OPEN, 100000),  # exactly the quota: not over (strictly more is)
            (ANDRES, OPEN, 250000),
        ],
    )

    assert view(dsn, "serving_users_over_quota", "email, date, quota, sum_user_bytes, layer") == {
        ("fede@gmail.com", CLOSED, 5000, 84536, "batch"),
        ("fede@gmail.com", OPEN, 5000, 5001, "speed"),
        ("andres@gmail.com", OPEN, 200000, 250000, "speed"),
    }


def test_the_drift_is_batch_minus_speed_per_closed_hour_and_table(dsn):
    insert(
        dsn,
        "bytes_agg_antenna",
        [(ANTENNA, CLOSED, 1000), (ANTENNA, CLOSED + 5 * MINUTES, 1500), (ANTENNA, OPEN, 9)],
    )
    insert(dsn, "bytes_agg_antenna_1h", [(ANTENNA, CLOSED, 3000)])
    insert(dsn, "bytes_agg_app", [("SKYPE", CLOSED, 3000)])
    insert(dsn, "bytes_agg_app_1h", [("SKYPE", CLOSED, 3000)])
    insert(
        dsn,
        "bytes_agg_user",
        [(FEDE, CLOSED + 50 * MINUTES, 1200), (ANDRES, CLOSED + 60 * MINUTES, 50)],
    )
    insert(dsn, "bytes_agg_user_1h", [("fede@gmail.com", CLOSED, 1000)])
    close_hour(dsn, CLOSED, 3000)

    assert view(
        dsn, "serving_speed_drift", "date, batch_table, batch_bytes, speed_bytes, drift_bytes"
    ) == {
        (CLOSED, "bytes_agg_antenna_1h", 3000, 2500, 500),
        (CLOSED, "bytes_agg_app_1h", 3000, 3000, 0),
        (CLOSED, "bytes_agg_user_1h", 1000, 1200, -200),
    }


def test_hours_are_utc_whatever_the_session_time_zone(dsn):
    # In a +05:30 zone date_trunc('hour', ...) would put 10:55 UTC in the hour starting 10:30 UTC.
    insert(
        dsn,
        "bytes_agg_antenna",
        [(ANTENNA, OPEN + 25 * MINUTES, 1), (ANTENNA, OPEN + 35 * MINUTES, 2)],
    )
    with psycopg2.connect(dsn, options="-c TimeZone=Asia/Kolkata") as conn, conn.cursor() as cur:
        cur.execute("SELECT date, sum_antenna_bytes FROM serving_antenna_hourly")
        rows = cur.fetchall()
    conn.close()

    assert rows == [(OPEN, 3)]


def test_a_time_range_filter_reads_the_speed_windows_through_the_date_index(dsn):
    # What keeps the dashboards fast (figures in bench/results/serving.json): no scan of every
    # window.
    insert(dsn, "bytes_agg_antenna", [(ANTENNA, OPEN, 1)])
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SET enable_seqscan = off"
        )  # a few rows: make the planner show the plan a year of rows gets
        cur.execute("EXPLAIN SELECT * FROM serving_antenna_hourly WHERE date >= %s", (OPEN,))
        plan = "\n".join(row[0] for row in cur.fetchall())
    conn.close()

    assert "bytes_agg_antenna_by_date" in plan
    assert "Seq Scan" not in plan
