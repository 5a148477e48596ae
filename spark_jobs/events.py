"""Parsing and validation of the `devices` records (docs/contract.md §1), as pure DataFrame
functions.

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
# Ids are UUIDs and app names are short: a longer string is hostile, and the serving database
# could not index it. A NUL is refused by PostgreSQL's text type.
MAX_STRING_LENGTH = 256
NUL = "\u0000"
# 1 TB in one report. With --max-offsets-per-trigger capped at a million records, no sum a
# micro-batch computes can overflow 64 bits (10^6 x 10^12 < 2^63).
MAX_BYTES = 10**12

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


def _string_problem(field: str) -> Column:
    value = F.col(field)
    return F.when(F.instr(value, NUL) > 0, F.lit(f"nul_character:{field}")).when(
        F.length(value) > MAX_STRING_LENGTH, F.lit(f"too_long:{field}")
    )


def _rejection_reason() -> Column:
    """The first problem of a record, in a fixed order, or NULL for a valid event.

    Reads the per-field JSON types computed once beforehand. The whole-value object check is
    costly, so it only runs for records that lack every field (`and` short-circuits).
    """
    parsed = F.col("parsed")
    lacks_every_field = reduce(
        lambda a, b: a & b, [F.col(_type_column(f)).isNull() for f in EVENT_COLUMNS]
    )
    is_object = F.schema_of_variant(parsed).startswith("OBJECT<")
    field_problems = [_field_problem(f, _VARIANT_INTEGER) for f in INTEGER_FIELDS] + [
        _field_problem(f, _VARIANT_STRING) for f in STRING_FIELDS
    ]
    return (
        # Not UTF-8: Python would turn its strings into replacement characters, merging keys.
        F.when(~F.is_valid_utf8("value"), F.lit("invalid_utf8"))
        .when(parsed.isNull(), F.lit("invalid_json"))
        .when(lacks_every_field & ~is_object, F.lit("not_an_object"))
        .otherwise(
            F.coalesce(
                *field_problems,
                *[_string_problem(f) for f in STRING_FIELDS],
                F.when(F.col("bytes") < 0, F.lit("negative_bytes")),
                F.when(F.col("bytes") > MAX_BYTES, F.lit("bytes_too_large")),
                F.when(
                    (F.col("timestamp") < MIN_EPOCH_SECONDS)
                    | (F.col("timestamp") > MAX_EPOCH_SECONDS),
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
        *[
            F.schema_of_variant(F.variant_get("parsed", f"$.{f}", "variant")).alias(_type_column(f))
            for f in EVENT_COLUMNS
        ],
        *[F.try_variant_get("parsed", f"$.{f}", "bigint").alias(f) for f in INTEGER_FIELDS],
        *[F.try_variant_get("parsed", f"$.{f}", "string").alias(f) for f in STRING_FIELDS],
    )
    classified = typed.select(
        "value", *KAFKA_METADATA_COLUMNS, *EVENT_COLUMNS, _rejection_reason().alias("reason")
    )
    # A rejected record keeps only its raw value, so no half-parsed field can leak into a sum;
    # a valid one drops its raw text, which only the quarantine needs.
    # A value that is not UTF-8 is kept with its bad bytes replaced (U+FFFD), so that every reader
    # of the quarantine can open it; its offset still points at the original.
    rejected_value = F.when(
        F.col("reason") == "invalid_utf8", F.make_valid_utf8("value")
    ).otherwise(F.col("value"))
    return classified.select(
        F.when(F.col("reason").isNotNull(), rejected_value).alias("value"),
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


def reject_records(classified: DataFrame, rejections: list[tuple[Column, str]]) -> DataFrame:
    """`classified` with the valid records that match a condition of `rejections` turned into
    rejected ones, with that condition's reason (the first that matches).

    For records that pass every rule here and are still refused downstream (by the database).
    Their raw value was already dropped, so they keep the event re-encoded as JSON; topic,
    partition and offset point at the original.
    """
    if not rejections:
        return classified
    (first_condition, first_reason), *others = rejections
    matched = reduce(
        lambda chain, rule: chain.when(rule[0], F.lit(rule[1])),
        others,
        F.when(first_condition, F.lit(first_reason)),
    )
    new_reason = F.when(F.col("reason").isNull(), matched)
    marked = classified.withColumn("_new_reason", new_reason)
    rejected_now = F.col("_new_reason").isNotNull()
    return marked.select(
        F.when(rejected_now, F.to_json(F.struct(*EVENT_COLUMNS)))
        .otherwise(F.col("value"))
        .alias("value"),
        *KAFKA_METADATA_COLUMNS,
        F.coalesce("reason", "_new_reason").alias("reason"),
        *[F.when(~rejected_now, F.col(c)).alias(c) for c in EVENT_COLUMNS],
    )


def quarantine_records(classified: DataFrame) -> DataFrame:
    """The rejected records, each kept once with its raw value and where it came from."""
    return classified.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
