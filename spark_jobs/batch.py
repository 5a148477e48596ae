"""Batch layer: recompute one UTC hour exactly from raw Parquet and replace it in PostgreSQL.

    python -m spark_jobs.batch --hour 2026-11-27T10:00:00Z

Reads only that hour's partition, and in it only the micro-batches the streaming job has
committed (its checkpoint's commit log), so a file being written or replayed is never read.
The four `*_1h` tables and the run's input totals are replaced in one transaction: a rerun gives
identical rows, and readers see the old hour or the new one, never a mix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from common import secrets, settings
from spark_jobs import postgres
from spark_jobs.aggregations import BY_ANTENNA, BY_APP, BY_EMAIL, aggregate, known_users_only
from spark_jobs.session import build_session
from spark_jobs.storage import EVENT_HOUR_FORMAT, StorageLayout

log = logging.getLogger("spark_jobs.batch")

HOUR = "1 hour"
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
    moment = moment.astimezone(timezone.utc)
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


def user_totals(events: DataFrame, users: DataFrame) -> DataFrame:
    """(email, date, sum_user_bytes) for the users in user_metadata."""
    return aggregate(known_users_only(events, users), BY_EMAIL, HOUR)


def users_over_quota(totals: DataFrame, users: DataFrame) -> DataFrame:
    """The users whose hourly total is strictly above their quota."""
    return (
        totals.join(F.broadcast(users.select("email", "quota")), on="email")
        .where(F.col("sum_user_bytes") > F.col("quota"))
        .select("email", "date", "quota", "sum_user_bytes")
    )


def hour_cube(events: DataFrame) -> DataFrame:
    """events -> one row per (antenna, app, device) of the hour with its bytes and event count.

    Every hourly total is a sum over these rows, far fewer than the events: the raw files are
    scanned once, and the shared aggregations run on the cube (`event_time` = the hour start).
    """
    return events.groupBy(
        "antenna_id", "app", "id", F.window("event_time", HOUR).start.alias("event_time")
    ).agg(F.sum("bytes").cast("bigint").alias("bytes"), F.count(F.lit(1)).alias("events"))


def input_totals(cube: DataFrame, users: DataFrame) -> DataFrame:
    """One row: events, bytes and unknown devices' bytes, from the cube, not from the aggregates."""
    known = F.broadcast(users.select("id").withColumn("known", F.lit(True)))
    return cube.join(known, on="id", how="left").agg(
        F.coalesce(F.sum("events"), F.lit(0)).cast("bigint").alias("valid_events"),
        F.coalesce(F.sum("bytes"), F.lit(0)).cast("bigint").alias("valid_bytes"),
        F.coalesce(F.sum(F.when(F.col("known").isNull(), F.col("bytes"))), F.lit(0)).cast("bigint").alias("unknown_device_bytes"),
    )


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
    """Collect the hour's aggregates (a few dozen rows, written by the driver) from one scan."""
    cube = hour_cube(events).persist()
    try:
        totals = user_totals(cube, users)
        inputs = input_totals(cube, users).first()
        as_rows = lambda frame, *columns: [tuple(row) for row in frame.select(*columns).collect()]  # noqa: E731
        return HourResult(
            antenna=as_rows(aggregate(cube, BY_ANTENNA, HOUR), "antenna_id", "sum_antenna_bytes"),
            user=as_rows(totals, "email", "sum_user_bytes"),
            app=as_rows(aggregate(cube, BY_APP, HOUR), "app", "sum_app_bytes"),
            over_quota=as_rows(users_over_quota(totals, users), "email", "quota", "sum_user_bytes"),
            valid_events=inputs["valid_events"],
            valid_bytes=inputs["valid_bytes"],
            unknown_device_bytes=inputs["unknown_device_bytes"],
        )
    finally:
        cube.unpersist()


# ---- storage --------------------------------------------------------------------------------


def _hadoop_path(spark: SparkSession, location: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def last_committed_batch(spark: SparkSession, checkpoint: str) -> int | None:
    """The newest micro-batch in the streaming checkpoint's commit log.

    Batches commit in order and a batch is replayed only while it is uncommitted, so every
    batch id up to this one is final. None when the streaming job never committed a batch.
    """
    commits, fs = _hadoop_path(spark, f"{checkpoint.rstrip('/')}/commits")
    if not fs.exists(commits):
        return None
    ids = [int(status.getPath().getName()) for status in fs.listStatus(commits) if status.getPath().getName().isdigit()]
    return max(ids, default=None)


def read_raw_hour(spark: SparkSession, layout: StorageLayout, hour: datetime) -> DataFrame | None:
    location = layout.raw_hour(hour.strftime(EVENT_HOUR_FORMAT))
    path, fs = _hadoop_path(spark, location)
    if not fs.exists(path):
        return None
    # Only this hour's folder is listed: partition pruning by path, never a scan of raw/.
    return spark.read.option("basePath", layout.raw).parquet(location)


# ---- the job --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> HourResult | None:
    postgres.require_tables(args.pg_dsn, REQUIRED_TABLES)
    spark = build_session(f"batch-layer-{args.hour.strftime('%Y-%m-%dT%H:%M:%SZ')}", args.master)
    return run_with_session(spark, args)


def run_with_session(spark: SparkSession, args: argparse.Namespace) -> HourResult | None:
    """The job on an existing session (the benchmark times it apart from Spark's start-up)."""
    layout = StorageLayout(args.storage_root)
    checkpoint = args.checkpoint or layout.streaming_checkpoint
    hour_text = args.hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    committed = last_committed_batch(spark, checkpoint)
    raw = read_raw_hour(spark, layout, args.hour) if committed is not None else None
    if raw is None:
        log.warning("no data for hour %s under %s: nothing written", hour_text, layout.raw)
        return None
    users = spark.createDataFrame(postgres.fetch_users(args.pg_dsn), "id string, email string, quota bigint")
    result = compute_hour(events_of_hour(raw, args.hour, committed), users)
    if result.valid_events == 0:
        log.warning("no committed events for hour %s: nothing written", hour_text)
        return None
    postgres.with_retries(lambda: postgres.replace_hour(args.pg_dsn, args.hour, result, committed))
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
    except postgres.DatabaseUnavailable as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
