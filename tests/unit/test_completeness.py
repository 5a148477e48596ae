"""Completeness of an hour by offsets (spark_jobs/completeness.py): the lag per partition, how it
is told, and that no hour is judged before its lateness allowance has ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spark_jobs.completeness import (
    HourIncomplete,
    deadline,
    describe_lag,
    hour_lags,
    partition_lags,
    records_behind,
)

HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)


def test_the_deadline_is_the_end_of_the_hour_plus_the_lateness():
    assert deadline(HOUR) == datetime(2026, 11, 27, 11, 10, tzinfo=UTC)
    assert deadline(HOUR, timedelta(0)) == datetime(2026, 11, 27, 11, tzinfo=UTC)


def test_a_partition_the_stream_never_committed_counts_from_zero_and_one_ahead_is_not_behind():
    lags = partition_lags("devices", targets={0: 100, 1: 50, 2: 7}, committed={0: 100, 2: 9})

    assert [(lag.partition, lag.behind) for lag in lags] == [(0, 0), (1, 50), (2, 0)]
    assert records_behind(lags) == 50


def test_the_lag_is_told_worst_partition_first_with_thousands_separated():
    lags = partition_lags(
        "devices", targets={0: 20, 1: 5, 2: 12_345}, committed={0: 10, 1: 5, 2: 0}
    )

    assert (
        describe_lag(lags)
        == "speed layer is 12,345 records behind on devices-2 (and 10 on devices-0)"
    )
    assert (
        describe_lag(partition_lags("devices", {0: 5}, {0: 5}))
        == "speed layer has committed every record of the hour"
    )


def test_an_hour_is_never_judged_before_its_deadline_and_kafka_is_not_asked():
    with pytest.raises(HourIncomplete, match="ends at 2026-11-27T11:10:00"):
        hour_lags(
            "unreachable:1",
            "devices",
            {},
            HOUR,
            now=datetime(2026, 11, 27, 11, 9, 59, tzinfo=UTC),
        )


def test_the_last_hour_of_year_9999_is_never_complete_by_itself():
    with pytest.raises(HourIncomplete, match="after the year 9999"):
        deadline(datetime(9999, 12, 31, 23, tzinfo=UTC))
