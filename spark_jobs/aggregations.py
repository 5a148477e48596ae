"""Byte totals per key and tumbling event-time window, shared by the speed layer (5-minute
windows) and the batch layer (one-hour windows).

Windows come from Spark's `window()`, which aligns them on the epoch, so with the session time
zone at UTC every window starts on a UTC boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Aggregate:
    """One serving table: the event column it groups by and the column its sum goes to."""

    key: str
    sum_column: str


BY_ANTENNA = Aggregate(key="antenna_id", sum_column="sum_antenna_bytes")
BY_USER = Aggregate(key="id", sum_column="sum_user_bytes")
BY_APP = Aggregate(key="app", sum_column="sum_app_bytes")
# The batch layer keys users by email (docs/contract.md §7), the speed layer by device id.
BY_EMAIL = Aggregate(key="email", sum_column="sum_user_bytes")


def bytes_per_window(
    events: DataFrame, key: str, window_duration: str, sum_column: str
) -> DataFrame:
    """events(key, event_time, bytes) -> (key, date = window start, sum_column)."""
    return events.groupBy(
        F.col(key), F.window("event_time", window_duration).start.alias("date")
    ).agg(F.sum("bytes").cast("bigint").alias(sum_column))


def known_users_only(events: DataFrame, users: DataFrame) -> DataFrame:
    """Events of devices listed in user_metadata, with the user's email and quota.

    Unknown devices still count toward antennas and apps, just not toward any user.
    """
    return events.join(F.broadcast(users.select("id", "email", "quota")), on="id", how="inner")


def aggregate(events: DataFrame, table: Aggregate, window_duration: str) -> DataFrame:
    return bytes_per_window(events, table.key, window_duration, table.sum_column)


def totals_per_window(
    events: DataFrame,
    tables: list[Aggregate],
    window_duration: str,
    count_column: str | None = None,
    newest_column: str | None = None,
) -> DataFrame:
    """Several tables' window totals in one pass and one shuffle, in long form:
    (table = the key column's name, key, date = window start, total, events).

    Each event is fanned out once per table before a single group-by, which costs less than one
    aggregation (and one shuffle) per table. `events` counts the rows, or sums `count_column`
    when the rows are already pre-aggregated (the batch layer's hour cube). With
    `newest_column`, a column `newest` holds its maximum per row, in the same aggregation (the
    speed layer's newest event time, for its health row).
    """
    per_table = F.array(
        *[
            F.struct(F.lit(table.key).alias("table"), F.col(table.key).cast("string").alias("key"))
            for table in tables
        ]
    )
    weight = F.col(count_column) if count_column else F.lit(1)
    newest = [F.max(newest_column).alias("newest")] if newest_column else []
    return (
        events.select(
            F.window("event_time", window_duration).start.alias("date"),
            "bytes",
            weight.alias("weight"),
            *([newest_column] if newest_column else []),
            F.explode(per_table).alias("k"),
        )
        .groupBy(F.col("k.table").alias("table"), F.col("k.key").alias("key"), "date")
        .agg(
            F.sum("bytes").cast("bigint").alias("total"),
            F.sum("weight").cast("bigint").alias("events"),
            *newest,
        )
    )
