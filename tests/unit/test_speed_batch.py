"""The speed layer's micro-batch totals, window lengths and the records behind refused rows, on
small DataFrames. The totals are compared whole: every table, every hour, the quarantined records
by reason and the newest valid event's time."""

from __future__ import annotations

import argparse
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from spark_jobs import postgres
from spark_jobs.aggregations import BY_ANTENNA, BY_APP, BY_USER
from spark_jobs.events import classify_records, quarantine_records, reject_records, valid_events
from spark_jobs.streaming import (
    SPEED_TABLES,
    micro_batch_totals,
    refused_conditions,
    waited_for_on_failure,
    window_seconds,
    without_py4j_connection_tracebacks,
)

H = 1764237600  # 2026-11-27T10:00:00Z


def kafka_rows(spark, events):
    values = [e if isinstance(e, str) else json.dumps(e) for e in events]
    rows = [(v.encode("utf-8"), "devices", 0, offset) for offset, v in enumerate(values)]
    return spark.createDataFrame(rows, "value binary, topic string, partition int, offset long")


def report(bytes_, ts, app="SKYPE", device="u1", antenna="a1"):
    return {"bytes": bytes_, "timestamp": ts, "app": app, "id": device, "antenna_id": antenna}


def totals_of(spark, events, window="5 minutes") -> postgres.SpeedBatchTotals:
    return micro_batch_totals(classify_records(kafka_rows(spark, events)), window)


def expected_totals(antenna=(), user=(), app=(), hours=(), quarantined=None, newest=None):
    """A micro-batch's totals written by hand; rows in sorted order, as the result gives them.
    `quarantined`: {reason: records}; `newest`: the newest valid event's epoch second."""
    return postgres.SpeedBatchTotals(
        increments={
            SPEED_TABLES[BY_ANTENNA]: list(antenna),
            SPEED_TABLES[BY_USER]: list(user),
            SPEED_TABLES[BY_APP]: list(app),
        },
        hours=list(hours),
        quarantined_by_reason=tuple(sorted((quarantined or {}).items())),
        newest_event_time=newest,
    )


def test_two_windows_across_two_hours_with_several_keys_and_rejected_records(spark):
    totals = totals_of(
        spark,
        [
            report(10, H - 5, app="SKYPE", device="u1", antenna="a1"),
            report(20, H - 200, app="WHATSAPP", device="u2", antenna="a1"),
            report(30, H + 1, app="SKYPE", device="u2", antenna="a2"),
            "not json",
            report(40, H + 299, app="SKYPE", device="u3", antenna="a1"),
            "[1, 2]",
            report(-5, H),
            {**report(1, H), "bytes": "1"},
            report(50, H + 120, app="WHATSAPP", device="u1", antenna="a2"),
        ],
    )

    assert totals == expected_totals(
        antenna=[("a1", H - 300, 30), ("a1", H, 40), ("a2", H, 80)],
        user=[
            ("u1", H - 300, 10),
            ("u1", H, 50),
            ("u2", H - 300, 20),
            ("u2", H, 30),
            ("u3", H, 40),
        ],
        app=[
            ("SKYPE", H - 300, 10),
            ("SKYPE", H, 70),
            ("WHATSAPP", H - 300, 20),
            ("WHATSAPP", H, 50),
        ],
        hours=[(H - 3600, 2, 30), (H, 3, 120)],
        quarantined={
            "invalid_json": 1,
            "not_an_object": 1,
            "negative_bytes": 1,
            "wrong_type:bytes": 1,
        },
        newest=H + 299,
    )


def test_the_window_length_decides_the_windows_but_not_the_hours(spark):
    events = [
        report(1, H),
        report(2, H + 1800),
        report(4, H + 3599, antenna="a2"),
        report(8, H - 1),
    ]

    totals = totals_of(spark, events, window="1 hour")

    assert totals == expected_totals(
        antenna=[("a1", H - 3600, 8), ("a1", H, 3), ("a2", H, 4)],
        user=[("u1", H - 3600, 8), ("u1", H, 7)],
        app=[("SKYPE", H - 3600, 8), ("SKYPE", H, 7)],
        hours=[(H - 3600, 1, 8), (H, 3, 7)],
        newest=H + 3599,
    )


def test_a_batch_without_records_adds_nothing(spark):
    assert totals_of(spark, []) == expected_totals()


def test_a_batch_of_rejected_records_only_counts_them(spark):
    totals = totals_of(spark, ["not json", "[]", {"bytes": 1}, report(1, 2**62), report(-1, H)])

    assert totals == expected_totals(
        quarantined={
            "invalid_json": 1,
            "not_an_object": 1,
            "missing_field:timestamp": 1,
            "timestamp_out_of_range": 1,
            "negative_bytes": 1,
        }
    )


def test_records_the_database_refused_leave_the_totals_for_the_quarantine(spark):
    classified = classify_records(
        kafka_rows(spark, [report(1, H), report(2, H, app="WHATSAPP"), report(4, H - 1)])
    )
    refused = [
        postgres.RefusedRow(SPEED_TABLES[BY_APP], "WHATSAPP", H, "database_refused:x"),
        postgres.RefusedRow(None, "", H - 3600, "database_refused:y"),
    ]

    totals = micro_batch_totals(
        reject_records(classified, refused_conditions(refused, "5 minutes")), "5 minutes"
    )

    assert totals == expected_totals(
        antenna=[("a1", H, 1)],
        user=[("u1", H, 1)],
        app=[("SKYPE", H, 1)],
        hours=[(H, 1, 1)],
        quarantined={"database_refused:x": 1, "database_refused:y": 1},
        newest=H,
    )


def test_quarantined_records_are_counted_per_reason_and_the_newest_valid_event_is_kept(spark):
    totals = totals_of(
        spark,
        [
            report(1, H + 10),
            "not json",
            report(-1, H + 3000),
            "also not json",
            report(2, H + 20, app="TELEGRAM"),
            {**report(1, H), "bytes": None},
            report(-2, H),
            report(4, H - 50),
        ],
    )

    # The rejected records' later timestamps do not count: only valid events are served.
    assert totals == expected_totals(
        antenna=[("a1", H - 300, 4), ("a1", H, 3)],
        user=[("u1", H - 300, 4), ("u1", H, 3)],
        app=[("SKYPE", H - 300, 4), ("SKYPE", H, 1), ("TELEGRAM", H, 2)],
        hours=[(H - 3600, 1, 4), (H, 2, 3)],
        quarantined={"invalid_json": 2, "negative_bytes": 2, "null_field:bytes": 1},
        newest=H + 20,
    )
    assert totals.quarantined_events == 5


def test_records_the_database_refused_count_under_their_refusal_and_leave_the_newest_time(
    spark,
):
    classified = classify_records(
        kafka_rows(
            spark,
            [report(1, H), report(2, H + 400, app="WHATSAPP"), "[]", report(8, H + 500, "X")],
        )
    )
    refused = [
        postgres.RefusedRow(SPEED_TABLES[BY_APP], "WHATSAPP", H + 300, "database_refused:x"),
        postgres.RefusedRow(SPEED_TABLES[BY_APP], "X", H + 300, "database_refused:x"),
    ]

    totals = micro_batch_totals(
        reject_records(classified, refused_conditions(refused, "5 minutes")), "5 minutes"
    )

    assert totals == expected_totals(
        antenna=[("a1", H, 1)],
        user=[("u1", H, 1)],
        app=[("SKYPE", H, 1)],
        hours=[(H, 1, 1)],
        quarantined={"database_refused:x": 2, "not_an_object": 1},
        newest=H,
    )


def test_the_newest_event_time_spans_windows_tables_and_years(spark):
    totals = totals_of(spark, [report(1, -3600, antenna="a2"), report(2, -62135596800)])

    assert totals.newest_event_time == -3600
    assert totals.quarantined_by_reason == ()


def test_batch_totals_per_table_window_and_hour_with_the_quarantined_count(spark):
    totals = totals_of(
        spark,
        [
            report(1, H),
            report(2, H + 299, app="TELEGRAM"),
            report(4, H + 300, antenna="a2"),
            report(8, H - 1, device="u2"),
            "not json",
            report(-1, H),
        ],
    )

    assert {t.name: sorted(rows) for t, rows in totals.increments.items()} == {
        "bytes_agg_antenna": [("a1", H - 300, 8), ("a1", H, 3), ("a2", H + 300, 4)],
        "bytes_agg_user": [("u1", H, 3), ("u1", H + 300, 4), ("u2", H - 300, 8)],
        "bytes_agg_app": [
            ("SKYPE", H - 300, 8),
            ("SKYPE", H, 1),
            ("SKYPE", H + 300, 4),
            ("TELEGRAM", H, 2),
        ],
    }
    assert sorted(totals.hours) == [(H - 3600, 1, 8), (H, 3, 7)]
    assert totals.valid_events == 4
    assert totals.quarantined_events == 2


def test_hours_before_1970_and_in_year_9999_are_counted_in_their_own_hour_and_window(spark):
    totals = totals_of(
        spark, [report(1, -1), report(2, -3600), report(8, -301), report(4, 253402300799)]
    )

    assert sorted(totals.hours) == [(-3600, 3, 11), (253402297200, 1, 4)]
    assert sorted(totals.increments[SPEED_TABLES[BY_ANTENNA]]) == [
        ("a1", -3600, 2),
        ("a1", -600, 8),
        ("a1", -300, 1),
        ("a1", 253402300500, 4),
    ]


def test_an_empty_batch_adds_nothing(spark):
    totals = totals_of(spark, ["[]"])

    assert totals.hours == [] and all(rows == [] for rows in totals.increments.values())
    assert totals.quarantined_events == 1


def test_refused_rows_pick_exactly_the_records_behind_them(spark):
    classified = classify_records(
        kafka_rows(
            spark,
            [
                report(1, H, app="SKYPE"),
                report(2, H + 10, app="WHATSAPP"),
                report(4, H + 300, app="WHATSAPP"),
                report(8, 2 * H),
            ],
        )
    )
    refused = [
        postgres.RefusedRow(
            SPEED_TABLES[BY_APP], "WHATSAPP", H, "database_refused:numeric_value_out_of_range"
        ),
        postgres.RefusedRow(None, "", 2 * H - (2 * H) % 3600, "database_refused:check_violation"),
    ]

    marked = reject_records(classified, refused_conditions(refused, "5 minutes"))

    assert sorted((r["offset"], r["reason"]) for r in quarantine_records(marked).collect()) == [
        (1, "database_refused:numeric_value_out_of_range"),
        (3, "database_refused:check_violation"),
    ]
    assert sorted(
        r["kafka_offset"] for r in valid_events(marked).select("kafka_offset").collect()
    ) == [0, 2]


def test_malformed_records_stay_in_the_quarantine_beside_the_records_of_a_refused_window(spark):
    # A malformed record has no timestamp; the condition of a refused window must not drop it.
    classified = classify_records(
        kafka_rows(spark, ["not json", report(1, H, app="SKYPE"), report(2, H - 3600)])
    )
    (malformed_reason,) = [r["reason"] for r in classified.collect() if r["offset"] == 0]
    refused = [postgres.RefusedRow(SPEED_TABLES[BY_APP], "SKYPE", H, "database_refused:r")]

    marked = reject_records(classified, refused_conditions(refused, "5 minutes"))

    assert sorted((r["offset"], r["reason"]) for r in quarantine_records(marked).collect()) == [
        (0, malformed_reason),
        (1, "database_refused:r"),
    ]
    assert [r["kafka_offset"] for r in valid_events(marked).select("kafka_offset").collect()] == [2]


def test_user_and_antenna_rows_refused_by_key_and_window(spark):
    classified = classify_records(
        kafka_rows(spark, [report(1, H, device="u1"), report(2, H, device="u2")])
    )
    refused = [
        postgres.RefusedRow(SPEED_TABLES[BY_USER], "u2", H, "r1"),
        postgres.RefusedRow(SPEED_TABLES[BY_ANTENNA], "a9", H, "r2"),
    ]

    marked = reject_records(classified, refused_conditions(refused, "5 minutes"))

    assert [(r["offset"], r["reason"]) for r in quarantine_records(marked).collect()] == [(1, "r1")]


@pytest.mark.parametrize(
    "text, seconds", [("5 minutes", 300), ("1 minute", 60), ("1 hour", 3600), ("30 seconds", 30)]
)
def test_window_lengths_that_divide_an_hour(text, seconds):
    assert window_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "7 minutes",
        "2 hours",
        "0 minutes",
        "minutes",
        "5 parsecs",
        "-5 minutes",
        "5 minutess",
        "\u0665 minutes",
    ],
)
def test_window_lengths_that_do_not_divide_an_hour_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        window_seconds(text)


def test_py4j_connection_tracebacks_are_dropped_and_nothing_else():
    def record(name, pathname):
        return logging.LogRecord(
            name, logging.ERROR, pathname, 1, "Exception while sending command.", None, None
        )

    assert not without_py4j_connection_tracebacks(
        record("root", "/venv/site-packages/py4j/java_gateway.py")
    )
    assert without_py4j_connection_tracebacks(record("root", "/repo/spark_jobs/streaming.py"))
    assert not without_py4j_connection_tracebacks(
        record("py4j.clientserver", "/venv/site-packages/py4j/clientserver.py")
    )
    assert without_py4j_connection_tracebacks(
        record("spark_jobs.lease", "/repo/spark_jobs/lease.py")
    )


def test_a_failing_step_waits_for_the_raw_write_beside_it_before_failing():
    # A replay of the batch must not meet the failed attempt's raw write still writing.
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as writer:
        raw_write = writer.submit(release.wait, 5)
        threading.Timer(0.2, release.set).start()
        with (
            pytest.raises(RuntimeError, match="aggregation failed"),
            waited_for_on_failure(raw_write),
        ):
            raise RuntimeError("aggregation failed")
        assert raw_write.done()


def test_a_step_that_succeeds_leaves_the_raw_write_running():
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as writer:
        raw_write = writer.submit(release.wait, 5)
        with waited_for_on_failure(raw_write):
            pass
        assert not raw_write.done()
        release.set()
