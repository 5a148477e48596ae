"""The batch layer's transformations on small DataFrames, hour boundaries included."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from spark_jobs.batch import (
    compute_hour,
    events_of_hour,
    last_committed_batch,
    parse_hour,
    users_over_quota,
)

HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)
H = int(HOUR.timestamp())
RAW_SCHEMA = "bytes long, timestamp long, app string, id string, antenna_id string, batch_id int"
USERS = [("u1", "u1@gmail.com", 100), ("u2", "u2@gmail.com", 5000)]


@pytest.fixture
def users(spark):
    return spark.createDataFrame(USERS, "id string, email string, quota long")


def test_hour_is_half_open_and_only_committed_batches_count(spark):
    raw = spark.createDataFrame(
        [
            (1, H - 1, "SKYPE", "u1", "a1", 0),
            (2, H, "SKYPE", "u1", "a1", 0),
            (4, H + 3599, "SKYPE", "u1", "a1", 1),
            (8, H + 3600, "SKYPE", "u1", "a1", 1),
            (16, H + 10, "SKYPE", "u1", "a1", 2),
        ],
        RAW_SCHEMA,
    )

    events = events_of_hour(raw, HOUR, last_committed_batch=1)

    assert sorted(r["bytes"] for r in events.collect()) == [2, 4]


def test_users_strictly_over_quota_only():
    quotas = {"u1@gmail.com": 99, "u2@gmail.com": 5000, "u3@gmail.com": 10}

    over = users_over_quota(
        [("u1@gmail.com", 100), ("u2@gmail.com", 5000), ("u3@gmail.com", 0)], quotas
    )

    # u2 is exactly at its quota, which is not over it.
    assert over == [("u1@gmail.com", 99, 100)]


def test_compute_hour_sums_users_by_email_and_counts_unknown_devices_apart(spark):
    users = spark.createDataFrame(
        [
            ("u1", "u1@gmail.com", 99),
            ("u1-tablet", "u1@gmail.com", 99),
            ("u2", "u2@gmail.com", 5000),
        ],
        "id string, email string, quota long",
    )
    events = events_of_hour(
        spark.createDataFrame(
            [
                (60, H, "SKYPE", "u1", "a1", 0),
                (40, H + 5, "SKYPE", "u1-tablet", "a1", 0),
                (5000, H, "SKYPE", "u2", "a1", 0),
                (3 * 2**31, H, "SKYPE", "ghost", "a2", 0),
            ],
            RAW_SCHEMA,
        ),
        HOUR,
        last_committed_batch=0,
    )

    result = compute_hour(events, users)

    assert sorted(result.user) == [("u1@gmail.com", 100), ("u2@gmail.com", 5000)]
    assert result.over_quota == [("u1@gmail.com", 99, 100)]
    assert (result.valid_events, result.valid_bytes, result.unknown_device_bytes) == (
        4,
        5100 + 3 * 2**31,
        3 * 2**31,
    )


def test_compute_hour_collects_every_table(spark, users):
    events = events_of_hour(
        spark.createDataFrame(
            [
                (70, H, "SKYPE", "u1", "a1", 0),
                (50, H + 1, "WHATSAPP", "u1", "a2", 0),
                (9, H + 2, "SKYPE", "ghost", "a1", 0),
            ],
            RAW_SCHEMA,
        ),
        HOUR,
        last_committed_batch=0,
    )

    result = compute_hour(events, users)

    assert sorted(result.antenna) == [("a1", 79), ("a2", 50)]
    assert sorted(result.app) == [("SKYPE", 79), ("WHATSAPP", 50)]
    assert result.user == [("u1@gmail.com", 120)]
    assert result.over_quota == [("u1@gmail.com", 100, 120)]
    assert (result.valid_events, result.valid_bytes, result.unknown_device_bytes) == (3, 129, 9)


def test_last_committed_batch_reads_the_commit_log(spark, tmp_path):
    assert last_committed_batch(spark, str(tmp_path)) is None
    (tmp_path / "commits").mkdir()
    for name in ("0", "1", "7", ".7.crc"):
        (tmp_path / "commits" / name).write_text("v1")

    assert last_committed_batch(spark, str(tmp_path)) == 7


@pytest.mark.parametrize("text", ["2026-11-27T10:30:00Z", "yesterday", "2026-11-27T10:00:01Z"])
def test_hour_flag_rejects_what_is_not_an_hour_start(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_hour(text)


def test_hour_flag_accepts_offsets_as_utc():
    assert parse_hour("2026-11-27T11:00:00+01:00") == HOUR


@pytest.mark.parametrize(
    "hour",
    [
        datetime(1969, 12, 31, 23, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, tzinfo=UTC),
    ],
)
def test_hours_before_1970_and_at_the_ends_of_the_calendar_are_one_hour_each(spark, users, hour):
    start = int(hour.timestamp())
    raw = spark.createDataFrame(
        [
            (1, start, "SKYPE", "u1", "a1", 0),
            (2, start + 1800, "SKYPE", "u1", "a1", 0),
            (4, start + 3599, "SKYPE", "u1", "a1", 0),
        ],
        RAW_SCHEMA,
    )

    result = compute_hour(events_of_hour(raw, hour, last_committed_batch=0), users)

    assert result.antenna == [("a1", 7)]
    assert result.user == [("u1@gmail.com", 7)]
    assert result.valid_events == 3


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00Z", "1969-12-31T23:00:00Z", "9999-12-31T23:00:00Z"]
)
def test_any_valid_hour_parses_and_names_its_partition(text):
    from spark_jobs.storage import event_hour_name, iso_hour

    hour = parse_hour(text)

    assert iso_hour(hour) == text
    assert event_hour_name(hour) == text[:10] + "-" + text[11:13]


def test_an_hour_outside_the_utc_calendar_is_a_usage_error():
    with pytest.raises(argparse.ArgumentTypeError, match="years 1 to 9999"):
        parse_hour("0001-01-01T00:00:00+01:00")
