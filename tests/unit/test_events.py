"""Parsing and validation of `devices` records (docs/contract.md §1) on small DataFrames."""

from __future__ import annotations

import json

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_jobs.events import classify_records, quarantine_records, reject_records, valid_events

GOOD = {
    "bytes": 9082,
    "timestamp": 1600545287,
    "app": "SKYPE",
    "id": "00000000-0000-0000-0000-000000000001",
    "antenna_id": "11111111-1111-1111-1111-111111111111",
}


def kafka_rows(spark, values):
    """Rows shaped like the Kafka source: binary value, topic, partition, offset."""
    rows = [
        (None if v is None else v.encode("utf-8"), "devices", 0, offset)
        for offset, v in enumerate(values)
    ]
    return spark.createDataFrame(rows, "value binary, topic string, partition int, offset long")


def with_field(**changes):
    record = dict(GOOD)
    for field, value in changes.items():
        if value is ...:
            del record[field]
        else:
            record[field] = value
    return json.dumps(record)


MALFORMED = [
    ("not json at all", "invalid_json"),
    ("", "invalid_json"),
    ('{"bytes": 1,', "invalid_json"),
    ("[1, 2, 3]", "not_an_object"),
    ('"a string"', "not_an_object"),
    ("null", "not_an_object"),
    ("42", "not_an_object"),
    (with_field(bytes=...), "missing_field:bytes"),
    (with_field(timestamp=...), "missing_field:timestamp"),
    (with_field(app=...), "missing_field:app"),
    (with_field(id=...), "missing_field:id"),
    (with_field(antenna_id=...), "missing_field:antenna_id"),
    (with_field(bytes=None), "null_field:bytes"),
    (with_field(id=None), "null_field:id"),
    (with_field(bytes="12"), "wrong_type:bytes"),
    (with_field(bytes=12.5), "wrong_type:bytes"),
    (with_field(bytes=12.0), "wrong_type:bytes"),
    (with_field(bytes=2**64), "wrong_type:bytes"),
    (with_field(timestamp="2020-09-19T19:54:47Z"), "wrong_type:timestamp"),
    (with_field(timestamp=1.6e9), "wrong_type:timestamp"),
    (with_field(app=7), "wrong_type:app"),
    (with_field(id=["x"]), "wrong_type:id"),
    (with_field(antenna_id={"a": 1}), "wrong_type:antenna_id"),
    (with_field(antenna_id=True), "wrong_type:antenna_id"),
    (with_field(bytes=-1), "negative_bytes"),
    (with_field(timestamp=2**62), "timestamp_out_of_range"),
    (with_field(timestamp=-62135596801), "timestamp_out_of_range"),
    (with_field(timestamp=253402300800), "timestamp_out_of_range"),
    # Values PostgreSQL or a 64-bit sum could not take: each would fail every replay of its batch.
    (with_field(app="SKY\u0000PE"), "nul_character:app"),
    (with_field(id="\u0000"), "nul_character:id"),
    (with_field(antenna_id="a" * 257), "too_long:antenna_id"),
    (with_field(id="x" * 10_000), "too_long:id"),
    (with_field(bytes=10**12 + 1), "bytes_too_large"),
    (with_field(bytes=2**63 - 1), "bytes_too_large"),
]


def test_every_malformed_record_is_quarantined_with_its_reason_while_valid_ones_flow(spark):
    # Valid records sit between the malformed ones, as they would in a real partition.
    values = [v for value, _ in MALFORMED for v in (with_field(), value)] + [with_field()]

    classified = classify_records(kafka_rows(spark, values))

    expected_quarantine = spark.createDataFrame(
        [(value, reason, "devices", 0, 2 * i + 1) for i, (value, reason) in enumerate(MALFORMED)],
        quarantine_records(classified).schema,
    )
    assertDataFrameEqual(quarantine_records(classified), expected_quarantine)
    valid_offsets = sorted(r["kafka_offset"] for r in valid_events(classified).collect())
    assert valid_offsets == list(range(0, len(values), 2))


def test_limits_themselves_are_valid(spark):
    values = [
        with_field(bytes=10**12),
        with_field(app="a" * 256),
        with_field(timestamp=-62135596800),
        with_field(timestamp=253402300799),
        with_field(app="\u00e9\u6f22\U0001f600"),
    ]

    events = valid_events(classify_records(kafka_rows(spark, values)))

    assert sorted(r["kafka_offset"] for r in events.select("kafka_offset").collect()) == list(
        range(len(values))
    )


def test_value_that_is_not_utf8_is_quarantined(spark):
    rows = [
        (
            b'{"bytes": 1, "timestamp": 1600545287, "app": "SK\xffPE",'
            b' "id": "u", "antenna_id": "a"}',
            "devices",
            0,
            0,
        )
    ]
    frame = spark.createDataFrame(rows, "value binary, topic string, partition int, offset long")

    quarantined = quarantine_records(classify_records(frame)).collect()

    assert [(r["value"], r["reason"]) for r in quarantined] == [
        (
            '{"bytes": 1, "timestamp": 1600545287, "app": "SK\ufffdPE",'
            ' "id": "u", "antenna_id": "a"}',
            "invalid_utf8",
        )
    ]


def test_events_of_every_year_get_their_utc_hour(spark):
    values = [
        with_field(timestamp=-62135596800),
        with_field(timestamp=-1),
        with_field(timestamp=253402300799),
    ]

    events = valid_events(classify_records(kafka_rows(spark, values)))

    # Only the names: Python's datetime cannot hold every Spark timestamp of year 1 in local time.
    assert [
        r["event_hour"] for r in events.orderBy("kafka_offset").select("event_hour").collect()
    ] == [
        "0001-01-01-00",
        "1969-12-31-23",
        "9999-12-31-23",
    ]


def test_rejected_records_keep_their_event_as_json_and_the_reason(spark):
    values = [with_field(), with_field(app="WHATSAPP"), "not json"]
    classified = classify_records(kafka_rows(spark, values))

    marked = reject_records(
        classified, [(F.col("app") == "WHATSAPP", "database_refused:numeric_value_out_of_range")]
    )

    assert sorted((r["offset"], r["reason"]) for r in quarantine_records(marked).collect()) == [
        (1, "database_refused:numeric_value_out_of_range"),
        (2, "invalid_json"),
    ]
    refused = quarantine_records(marked).where("offset = 1").first()
    assert json.loads(refused["value"]) == {**GOOD, "app": "WHATSAPP"}
    assert [r["kafka_offset"] for r in valid_events(marked).select("kafka_offset").collect()] == [0]


def test_null_value_is_quarantined(spark):
    quarantined = quarantine_records(classify_records(kafka_rows(spark, [None])))

    assert [(r["value"], r["reason"]) for r in quarantined.collect()] == [(None, "invalid_json")]


def test_valid_event_is_typed_with_utc_event_time_and_hour(spark):
    big = 3 * 2**31
    values = [with_field(), with_field(bytes=big, timestamp=1600545600, extra="ignored")]

    events = valid_events(classify_records(kafka_rows(spark, values)))

    expected = (
        spark.createDataFrame(
            [
                (
                    9082,
                    1600545287,
                    "SKYPE",
                    GOOD["id"],
                    GOOD["antenna_id"],
                    "2020-09-19 19:54:47",
                    "2020-09-19-19",
                    0,
                    0,
                ),
                (
                    big,
                    1600545600,
                    "SKYPE",
                    GOOD["id"],
                    GOOD["antenna_id"],
                    "2020-09-19 20:00:00",
                    "2020-09-19-20",
                    0,
                    1,
                ),
            ],
            "bytes long, timestamp long, app string, id string, antenna_id string, "
            "event_time string, event_hour string, kafka_partition int, kafka_offset long",
        )
        .selectExpr("*", "cast(event_time as timestamp) as t")
        .drop("event_time")
        .withColumnRenamed("t", "event_time")
    )
    assertDataFrameEqual(events.select(*expected.columns), expected)
    assert quarantine_records(classify_records(kafka_rows(spark, values))).count() == 0


def test_zero_bytes_and_unknown_device_are_valid(spark):
    values = [with_field(bytes=0), with_field(id="not-a-known-user")]

    events = valid_events(classify_records(kafka_rows(spark, values)))

    assert sorted((r["bytes"], r["id"]) for r in events.collect()) == [
        (0, GOOD["id"]),
        (9082, "not-a-known-user"),
    ]
