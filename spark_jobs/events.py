"""Parsing and validation of the `devices` records (SPEC.md section 1), as pure DataFrame functions.

Each JSON value is parsed once into a VARIANT, which keeps the JSON type of every field: a string
"12", a fraction 12.5 or an ISO date are told apart from an integer, which a typed `from_json`
would coerce or silently null. Every record gets either a parsed event or a machine-readable
`reason`, so nothing is dropped without trace.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

EVENT_COLUMNS = ("bytes", "timestamp", "app", "id", "antenna_id")
INTEGER_FIELDS = ("bytes", "timestamp")
STRING_FIELDS = ("app", "id", "antenna_id")
KAFKA_METADATA_COLUMNS = ("topic", "partition", "offset")
QUARANTINE_COLUMNS = ("value", "reason", *KAFKA_METADATA_COLUMNS)

# Epoch seconds Spark can turn into a timestamp without overflow: year 1 to year 9999.
MIN_EPOCH_SECONDS = -62135596800
MAX_EPOCH_SECONDS = 253402300799

# The names schema_of_variant gives a JSON integer that fits in 64 bits, a string and a JSON null.
_VARIANT_INTEGER = "BIGINT"
_VARIANT_STRING = "STRING"
_VARIANT_NULL = "VOID"


def _type_column(field: str) -> str:
    return f"_type_{field}"


def _field_problem(field: str, expected_type: str) -> Column:
    field_type = F.col(_type_column(field))
    return (
        F.when(field_type.isNull(), F.lit(f"missing_field:{field}"))
        .when(field_type == _VARIANT_NULL, F.lit(f"null_field:{field}"))
        .when(field_type != expected_type, F.lit(f"wrong_type:{field}"))
    )


def _rejection_reason() -> Column:
    """The first problem of a record, in a fixed order, or NULL for a valid event.

    Reads the per-field JSON types computed once beforehand. The whole-value object check is
    costly, so it only runs for records that lack every field (`and` short-circuits).
    """
    parsed = F.col("parsed")
    lacks_every_field = reduce(lambda a, b: a & b, [F.col(_type_column(f)).isNull() for f in EVENT_COLUMNS])
    is_object = F.schema_of_variant(parsed).startswith("OBJECT<")
    field_problems = [_field_problem(f, _VARIANT_INTEGER) for f in INTEGER_FIELDS] + [
        _field_problem(f, _VARIANT_STRING) for f in STRING_FIELDS
    ]
    return (
        F.when(parsed.isNull(), F.lit("invalid_json"))
        .when(lacks_every_field & ~is_object, F.lit("not_an_object"))
        .otherwise(
            F.coalesce(
                *field_problems,
                F.when(F.col("bytes") < 0, F.lit("negative_bytes")),
                F.when(
                    (F.col("timestamp") < MIN_EPOCH_SECONDS) | (F.col("timestamp") > MAX_EPOCH_SECONDS),
                    F.lit("timestamp_out_of_range"),
                ),
            )
        )
    )


def classify_records(records: DataFrame) -> DataFrame:
    """Kafka rows (binary `value`, topic, partition, offset) -> one row per record with the
    typed event columns and `reason`, NULL when the record is a valid event.

    Built in steps so that each field's JSON type is computed once per record and then reused.
    """
    parsed = records.select(
        F.col("value").cast("string").alias("value"),
        *KAFKA_METADATA_COLUMNS,
    ).withColumn("parsed", F.try_parse_json("value"))
    typed = parsed.select(
        "*",
        *[F.schema_of_variant(F.variant_get("parsed", f"$.{f}", "variant")).alias(_type_column(f)) for f in EVENT_COLUMNS],
        *[F.try_variant_get("parsed", f"$.{f}", "bigint").alias(f) for f in INTEGER_FIELDS],
        *[F.try_variant_get("parsed", f"$.{f}", "string").alias(f) for f in STRING_FIELDS],
    )
    classified = typed.select("value", *KAFKA_METADATA_COLUMNS, *EVENT_COLUMNS, _rejection_reason().alias("reason"))
    # A rejected record keeps only its raw value, so no half-parsed field can leak into a sum;
    # a valid one drops its raw text, which only the quarantine needs.
    return classified.select(
        F.when(F.col("reason").isNotNull(), F.col("value")).alias("value"),
        *KAFKA_METADATA_COLUMNS,
        "reason",
        *[F.when(F.col("reason").isNull(), F.col(c)).alias(c) for c in EVENT_COLUMNS],
    )


def valid_events(classified: DataFrame) -> DataFrame:
    """The valid events with their event time and UTC event hour (the raw-storage partition)."""
    events = classified.where(F.col("reason").isNull())
    event_time = F.timestamp_seconds("timestamp")
    return events.select(
        *EVENT_COLUMNS,
        event_time.alias("event_time"),
        F.date_format(F.date_trunc("hour", event_time), "yyyy-MM-dd-HH").alias("event_hour"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
    )


def quarantine_records(classified: DataFrame) -> DataFrame:
    """The rejected records, each kept once with its raw value and where it came from."""
    return classified.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
