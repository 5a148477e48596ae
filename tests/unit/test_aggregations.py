"""Window totals shared by the speed (5-minute) and batch (1-hour) layers."""

from __future__ import annotations

from datetime import datetime

from pyspark.testing import assertDataFrameEqual

from spark_jobs.aggregations import BY_ANTENNA, BY_USER, aggregate, known_users_only

EVENT_SCHEMA = "bytes long, id string, antenna_id string, app string, event_time timestamp"


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_five_minute_windows_start_on_boundaries_and_sum_per_key(spark):
    events = spark.createDataFrame(
        [
            (100, "u1", "a1", "SKYPE", ts("2026-11-28 03:00:00")),
            (200, "u1", "a1", "SKYPE", ts("2026-11-28 03:04:59")),
            (300, "u1", "a1", "SKYPE", ts("2026-11-28 03:05:00")),
            (400, "u2", "a2", "SKYPE", ts("2026-11-28 03:01:00")),
        ],
        EVENT_SCHEMA,
    )

    totals = aggregate(events, BY_ANTENNA, "5 minutes")

    expected = spark.createDataFrame(
        [
            ("a1", ts("2026-11-28 03:00:00"), 300),
            ("a1", ts("2026-11-28 03:05:00"), 300),
            ("a2", ts("2026-11-28 03:00:00"), 400),
        ],
        "antenna_id string, date timestamp, sum_antenna_bytes long",
    )
    assertDataFrameEqual(totals, expected)


def test_hour_boundary_belongs_to_the_next_hour(spark):
    events = spark.createDataFrame(
        [
            (1, "u1", "a1", "SKYPE", ts("2026-11-28 03:59:59")),
            (2, "u1", "a1", "SKYPE", ts("2026-11-28 04:00:00")),
        ],
        EVENT_SCHEMA,
    )

    totals = aggregate(events, BY_ANTENNA, "1 hour")

    expected = spark.createDataFrame(
        [("a1", ts("2026-11-28 03:00:00"), 1), ("a1", ts("2026-11-28 04:00:00"), 2)],
        "antenna_id string, date timestamp, sum_antenna_bytes long",
    )
    assertDataFrameEqual(totals, expected)


def test_sums_beyond_32_bits_stay_exact(spark):
    big = 2**31 + 5
    events = spark.createDataFrame(
        [
            (big, "u1", "a1", "SKYPE", ts("2026-11-28 03:00:00")),
            (big, "u1", "a1", "SKYPE", ts("2026-11-28 03:00:01")),
        ],
        EVENT_SCHEMA,
    )

    (row,) = aggregate(events, BY_ANTENNA, "5 minutes").collect()

    assert row["sum_antenna_bytes"] == 2 * big


def test_unknown_devices_do_not_count_toward_users(spark):
    events = spark.createDataFrame(
        [
            (10, "u1", "a1", "SKYPE", ts("2026-11-28 03:00:00")),
            (20, "ghost", "a1", "SKYPE", ts("2026-11-28 03:00:00")),
        ],
        EVENT_SCHEMA,
    )
    users = spark.createDataFrame(
        [("u1", "u1@gmail.com", 5000)], "id string, email string, quota long"
    )

    totals = aggregate(known_users_only(events, users), BY_USER, "5 minutes")

    expected = spark.createDataFrame(
        [("u1", ts("2026-11-28 03:00:00"), 10)], "id string, date timestamp, sum_user_bytes long"
    )
    assertDataFrameEqual(totals, expected)


def test_totals_per_window_gives_every_table_in_long_form(spark):
    from spark_jobs.aggregations import BY_APP, totals_per_window

    events = spark.createDataFrame(
        [
            (100, "u1", "a1", "SKYPE", ts("2026-11-28 03:00:00")),
            (200, "u2", "a1", "SKYPE", ts("2026-11-28 03:04:59")),
            (300, "u1", "a2", "TELEGRAM", ts("2026-11-28 03:05:00")),
        ],
        EVENT_SCHEMA,
    )

    totals = totals_per_window(events, [BY_ANTENNA, BY_USER, BY_APP], "5 minutes")

    w0, w1 = ts("2026-11-28 03:00:00"), ts("2026-11-28 03:05:00")
    expected = spark.createDataFrame(
        [
            ("antenna_id", "a1", w0, 300, 2),
            ("antenna_id", "a2", w1, 300, 1),
            ("id", "u1", w0, 100, 1),
            ("id", "u2", w0, 200, 1),
            ("id", "u1", w1, 300, 1),
            ("app", "SKYPE", w0, 300, 2),
            ("app", "TELEGRAM", w1, 300, 1),
        ],
        "table string, key string, date timestamp, total long, events long",
    )
    assertDataFrameEqual(totals, expected)


def test_totals_per_window_sums_the_count_column_of_pre_aggregated_rows(spark):
    from spark_jobs.aggregations import totals_per_window

    cube = spark.createDataFrame(
        [
            (100, 3, "a1", ts("2026-11-28 03:00:00")),
            (50, 2, "a1", ts("2026-11-28 03:00:00")),
            (7, 1, None, ts("2026-11-28 03:00:00")),
        ],
        "bytes long, events long, antenna_id string, event_time timestamp",
    )

    totals = totals_per_window(cube, [BY_ANTENNA], "1 hour", count_column="events")

    hour = ts("2026-11-28 03:00:00")
    expected = spark.createDataFrame(
        [("antenna_id", "a1", hour, 150, 5), ("antenna_id", None, hour, 7, 1)],
        "table string, key string, date timestamp, total long, events long",
    )
    assertDataFrameEqual(totals, expected)
