"""Batch layer: recompute one UTC hour exactly from raw Parquet and replace it in PostgreSQL.

    python -m spark_jobs.batch --hour 2026-11-27T10:00:00Z

Reads only that hour's folders, and in them only the micro-batches the streaming job has
committed (its checkpoint's commit log), so a file being written or replayed is never read: the
streaming job's compaction of the closed hour, plus the micro-batches after it (raw_hours.py).
The four `*_1h` tables and the run's input totals are replaced in one transaction: a rerun gives
identical rows, and readers see the old hour or the new one, never a mix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from common import secrets, settings
from spark_jobs import postgres, raw_hours
from spark_jobs.raw_hours import last_committed_batch
from spark_jobs.aggregations import BY_ANTENNA, BY_APP, BY_EMAIL, totals_per_window
from spark_jobs.outages import DependencyDown, OutagePolicy
from spark_jobs.session import build_session
from spark_jobs.storage import StorageLayout, event_hour_name, iso_hour

log = logging.getLogger("spark_jobs.batch")

HOUR = "1 hour"
# A run is one task of batch_hourly, which retries it: a short wait rides out a failover.
DATABASE_OUTAGES = OutagePolicy(limit=timedelta(minutes=5))
REQUIRED_TABLES = (
    "user_metadata", "batch_hour_runs",
    *(table.name for table in postgres.HOURLY_TABLES),
)


def parse_hour(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 time like 2026-11-27T10:00:00Z") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        moment = moment.astimezone(timezone.utc)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not the start of an hour")
    return moment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.batch",
        description="Batch layer: recompute one UTC hour from raw Parquet into the *_1h tables.",
    )
    parser.add_argument("--hour", required=True, type=parse_hour, help="start of the UTC hour, e.g. 2026-11-27T10:00:00Z")
    parser.add_argument("--pg-dsn", default=settings.pg_dsn(), help="libpq URI of the serving database (env PG_DSN)")
    parser.add_argument("--pg-dsn-secret", default=secrets.pg_dsn_secret_default(), help="Secret Manager version holding the DSN, replaces --pg-dsn (env PG_DSN_SECRET)")
    parser.add_argument("--storage-root", default=settings.storage_root(), help="local folder or gs:// URI (env STORAGE_ROOT)")
    parser.add_argument("--checkpoint", help="the streaming job's checkpoint (default: STORAGE_ROOT/checkpoints/streaming)")
    parser.add_argument("--master", default=None, help="Spark master (default: local[*], or what spark-submit sets)")
    return parser.parse_args(argv)


# ---- pure transformations -------------------------------------------------------------------


def events_of_hour(raw: DataFrame, hour: datetime, last_committed_batch: int) -> DataFrame:
    """Raw rows of one hour's partition -> events with event time, from committed batches only.

    The time filter repeats what the partition already guarantees, so a misplaced file could
    never leak into another hour: [hour, hour + 1h), an event at exactly hour + 1h is the next's.
    """
    start = int(hour.timestamp())
    return raw.where(
        (F.col("batch_id") <= last_committed_batch)
        & (F.col("timestamp") >= start)
        & (F.col("timestamp") < start + 3600)
    ).withColumn("event_time", F.timestamp_seconds("timestamp"))


def hour_cube(events: DataFrame) -> DataFrame:
    """events -> one row per (antenna, app, device) of the hour with its bytes and event count.

    Far fewer rows than events: the raw files are scanned once, and every total of the hour is a
    sum over these rows (`event_time` = the hour start).
    """
    # The hour by integer arithmetic on the epoch seconds: per event, cheaper than window(). pmod,
    # not %, whose remainder is negative before 1970 and would split such an hour in two.
    hour_start = F.timestamp_seconds(F.col("timestamp") - F.pmod("timestamp", F.lit(3600))).alias("event_time")
    return events.groupBy("antenna_id", "app", "id", hour_start).agg(
        F.sum("bytes").cast("bigint").alias("bytes"), F.count(F.lit(1)).alias("events")
    )


def hour_totals(events: DataFrame, users: DataFrame) -> DataFrame:
    """(table, key, date, total, events) per antenna_id, app and email: the whole hour in one Spark
    job over one scan, through the speed layer's long-form aggregation.

    Devices missing from user_metadata land under email = null: that row is the unknown devices'
    bytes, which count for antennas and apps but for no user.
    """
    with_emails = hour_cube(events).join(F.broadcast(users.select("id", "email")), on="id", how="left")
    return totals_per_window(with_emails, [BY_ANTENNA, BY_APP, BY_EMAIL], HOUR, count_column="events")


def users_over_quota(user_bytes: list[tuple[str, int]], quotas: dict[str, int]) -> list[tuple[str, int, int]]:
    """(email, quota, sum_user_bytes) of the users strictly above their hourly quota."""
    return [(email, quotas[email], total) for email, total in user_bytes if total > quotas[email]]


@dataclass(frozen=True)
class HourResult:
    antenna: list[tuple]
    user: list[tuple]
    app: list[tuple]
    over_quota: list[tuple]
    valid_events: int
    valid_bytes: int
    unknown_device_bytes: int


def compute_hour(events: DataFrame, users: DataFrame) -> HourResult:
    """The hour's aggregates: a few dozen rows, collected once and written by the driver."""
    rows: dict[str, list] = defaultdict(list)
    # Without the hour's date, which Python could not hold for year 1: the hour is known anyway.
    for row in hour_totals(events, users).drop("date").collect():
        rows[row["table"]].append(row)
    user_bytes = [(row["key"], row["total"]) for row in rows[BY_EMAIL.key] if row["key"] is not None]
    quotas = {row["email"]: row["quota"] for row in users.select("email", "quota").collect()}
    antenna = [(row["key"], row["total"]) for row in rows[BY_ANTENNA.key]]
    return HourResult(
        antenna=antenna,
        user=user_bytes,
        app=[(row["key"], row["total"]) for row in rows[BY_APP.key]],
        over_quota=users_over_quota(user_bytes, quotas),
        valid_events=sum(row["events"] for row in rows[BY_ANTENNA.key]),
        valid_bytes=sum(total for _, total in antenna),
        unknown_device_bytes=sum(row["total"] for row in rows[BY_EMAIL.key] if row["key"] is None),
    )


# ---- the job --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> HourResult | None:
    postgres.require_tables(args.pg_dsn, REQUIRED_TABLES)
    spark = build_session(f"batch-layer-{iso_hour(args.hour)}", args.master)
    return run_with_session(spark, args)


def run_with_session(spark: SparkSession, args: argparse.Namespace) -> HourResult | None:
    """The job on an existing session (the benchmark times it apart from Spark's start-up)."""
    layout = StorageLayout(args.storage_root)
    checkpoint = args.checkpoint or layout.streaming_checkpoint
    hour_text = iso_hour(args.hour)
    committed = last_committed_batch(spark, checkpoint)
    raw = raw_hours.read_hour(spark, layout, event_hour_name(args.hour), committed) if committed is not None else None
    if raw is None:
        log.warning("no data for hour %s under %s: nothing written", hour_text, layout.raw)
        return None
    users = spark.createDataFrame(postgres.fetch_users(args.pg_dsn), "id string, email string, quota bigint")
    result = compute_hour(events_of_hour(raw, args.hour, committed), users)
    if result.valid_events == 0:
        log.warning("no committed events for hour %s: nothing written", hour_text)
        return None
    postgres.with_retries(lambda: postgres.replace_hour(args.pg_dsn, args.hour, result, committed), DATABASE_OUTAGES)
    log.info(
        "hour %s: %d events, %d bytes (%d from unknown devices), %d users over quota; replaced atomically",
        hour_text, result.valid_events, result.valid_bytes, result.unknown_device_bytes, len(result.over_quota),
    )
    return result


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.pg_dsn = secrets.resolve_pg_dsn(args.pg_dsn, args.pg_dsn_secret)
    try:
        run(args)
    except (postgres.DatabaseUnavailable, postgres.SchemaNotMigrated, postgres.InvalidDsn, DependencyDown) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
