"""Batch layer: recompute one UTC hour exactly from raw Parquet and replace it in PostgreSQL.

    python -m spark_jobs.batch --hour 2026-11-27T10:00:00Z

Publishes an hour only when it is complete and correct (docs/contract.md §7, §8):

1. complete: the micro-batches the streaming job has committed (its checkpoint's commit and
   offset logs) reach, on every Kafka partition, the offset Kafka held at H + 1 h + lateness
   (completeness.py); else it refuses, naming the lag, unless run with --allow-incomplete;
2. computed from that hour's folders only, and in them from the committed micro-batches only,
   so a file being written or replayed is never read (raw_hours.py);
3. gated: the four `*_1h` tables and the run's figures are written, checked by the quality gate
   (sql/quality/checks/, reconciled against the speed layer's own count) and committed in one
   transaction under the hour's lock; a failing hour is rolled back and withdrawn from the batch
   layer, and a run from older input than the published one changes nothing.

A rerun gives identical rows, and readers see the old hour or the new one, never a mix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from common import job_args, secret_manager
from common.cli_types import non_negative_int
from spark_jobs import completeness, postgres, quality_gate, raw_hours
from spark_jobs.aggregations import BY_ANTENNA, BY_APP, BY_EMAIL, totals_per_window
from spark_jobs.completeness import HourIncomplete, KafkaUnavailable, PartitionLag
from spark_jobs.outages import DependencyDown, OutagePolicy
from spark_jobs.postgres import HourResult
from spark_jobs.quality_gate import QualityGateFailed
from spark_jobs.raw_hours import last_committed_batch, logged_end_offsets
from spark_jobs.session import build_session
from spark_jobs.storage import StorageLayout, event_hour_name, iso_hour

log = logging.getLogger("spark_jobs.batch")

HOUR = "1 hour"
# The exit status of a run whose hour cannot be published as it is (its gate failed, or its raw
# files are missing): running it again on the same input fails the same way, so the DAG's runner
# fails the task at once instead of retrying it.
EXIT_NOT_PUBLISHABLE = 3
# A run is one task of batch_hourly, which retries it: a short wait rides out a failover.
DATABASE_OUTAGES = OutagePolicy(limit=timedelta(minutes=5))
REQUIRED_TABLES = (
    "user_metadata",
    "batch_hour_runs",
    "batch_hour_failures",
    "speed_hour_batches",
    *(table.name for table in postgres.HOURLY_TABLES),
)


def parse_hour(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 time like 2026-11-27T10:00:00Z"
        ) from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside the years 1 to 9999 in UTC"
        ) from None
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not the start of an hour")
    return moment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.batch",
        description="Batch layer: recompute one UTC hour from raw Parquet into the *_1h tables.",
    )
    parser.add_argument(
        "--hour",
        required=True,
        type=parse_hour,
        help="start of the UTC hour, e.g. 2026-11-27T10:00:00Z",
    )
    job_args.add_database_and_storage_args(
        parser, "the streaming job's checkpoint (default: STORAGE_ROOT/checkpoints/streaming)"
    )
    parser.add_argument(
        "--master", default=None, help="Spark master (default: local[*], or what spark-submit sets)"
    )
    job_args.add_kafka_args(
        parser,
        servers_help="Kafka, asked for the offsets an hour needs",
        topic_help="topic the streaming job reads, when its checkpoint has no batch yet",
    )
    parser.add_argument(
        "--lateness-minutes",
        type=non_negative_int,
        default=int(completeness.DEFAULT_LATENESS.total_seconds() // 60),
        help="lateness allowance after the hour (default 10)",
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help=(
            "publish even if the speed layer has not committed the whole hour"
            " (logged, and recorded with the run)"
        ),
    )
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
    hour_start = F.timestamp_seconds(F.col("timestamp") - F.pmod("timestamp", F.lit(3600))).alias(
        "event_time"
    )
    return events.groupBy("antenna_id", "app", "id", hour_start).agg(
        F.sum("bytes").cast("bigint").alias("bytes"), F.count(F.lit(1)).alias("events")
    )


def hour_totals(events: DataFrame, users: DataFrame) -> DataFrame:
    """(table, key, date, total, events) per antenna_id, app and email: the whole hour in one Spark
    job over one scan, through the speed layer's long-form aggregation.

    Devices missing from user_metadata land under email = null: that row is the unknown devices'
    bytes, which count for antennas and apps but for no user.
    """
    with_emails = hour_cube(events).join(
        F.broadcast(users.select("id", "email")), on="id", how="left"
    )
    return totals_per_window(
        with_emails, [BY_ANTENNA, BY_APP, BY_EMAIL], HOUR, count_column="events"
    )


def users_over_quota(
    user_bytes: list[tuple[str, int]], quotas: dict[str, int]
) -> list[tuple[str, int, int]]:
    """(email, quota, sum_user_bytes) of the users strictly above their hourly quota."""
    return [(email, quotas[email], total) for email, total in user_bytes if total > quotas[email]]


@dataclass(frozen=True)
class NoDataForCountedHour(RuntimeError):
    """The speed layer counted events in the hour, but its raw files hold none."""


def raw_figures(events: DataFrame) -> tuple[int, int]:
    """(raw rows, distinct Kafka (partition, offset) pairs) of the hour's events: equal unless a
    record is stored twice. Counted apart from the aggregates, for the quality gate."""
    per_offset = events.groupBy("kafka_partition", "kafka_offset").count()
    row = per_offset.agg(F.sum("count").alias("rows"), F.count(F.lit(1)).alias("distinct")).first()
    assert row is not None, "a global aggregation has one row"
    return int(row["rows"] or 0), int(row["distinct"] or 0)


def compute_hour(events: DataFrame, users: DataFrame) -> HourResult:
    """The hour's aggregates: a few dozen rows, collected once and written by the driver."""
    rows: dict[str, list] = defaultdict(list)
    # Without the hour's date, which Python could not hold for year 1: the hour is known anyway.
    for row in hour_totals(events, users).drop("date").collect():
        rows[row["table"]].append(row)
    user_bytes = [
        (row["key"], row["total"]) for row in rows[BY_EMAIL.key] if row["key"] is not None
    ]
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
    behind = require_complete(spark, args, checkpoint, committed)
    events = None
    if committed is not None:
        raw = raw_hours.read_hour(spark, layout, event_hour_name(args.hour), committed)
        events = events_of_hour(raw, args.hour, committed) if raw is not None else None
    users = spark.createDataFrame(
        postgres.fetch_users(args.pg_dsn), "id string, email string, quota bigint"
    )
    result = compute_hour(events, users) if events is not None else None
    if result is None or result.valid_events == 0:
        require_no_counted_events(args, layout, committed)
        log.warning(
            "no committed events for hour %s under %s: nothing written", hour_text, layout.raw
        )
        return None
    # A result came from events of committed micro-batches.
    assert events is not None and committed is not None
    raw_rows, distinct_offsets = raw_figures(events)
    run = postgres.HourRun(
        committed, raw_rows, distinct_offsets, records_behind=behind, forced=args.allow_incomplete
    )
    if not publish(args, hour_text, result, run):
        return None
    log.info(
        "hour %s: %d events, %d bytes (%d from unknown devices), %d users over quota, from "
        "streaming batches up to %d;"
        " passed the quality gate and published",
        hour_text,
        result.valid_events,
        result.valid_bytes,
        result.unknown_device_bytes,
        len(result.over_quota),
        committed,
    )
    return result


def require_complete(
    spark: SparkSession, args: argparse.Namespace, checkpoint: str, committed: int | None
) -> int:
    """Records the speed layer is behind by for the hour: 0, or HourIncomplete unless forced."""
    lags = hour_lags(spark, args, checkpoint, committed)
    behind = completeness.records_behind(lags)
    if behind and not args.allow_incomplete:
        raise HourIncomplete(
            f"hour {iso_hour(args.hour)} is not complete: {completeness.describe_lag(lags)}; not "
            "published."
            " Wait for the streaming job to catch up (batch_hourly waits by itself), or publish it "
            "anyway with --allow-incomplete"
        )
    if behind:
        log.warning(
            "--allow-incomplete: publishing hour %s although the %s",
            iso_hour(args.hour),
            completeness.describe_lag(lags),
        )
    return behind


def hour_lags(
    spark: SparkSession, args: argparse.Namespace, checkpoint: str, committed: int | None
) -> list[PartitionLag]:
    """Per partition, where the committed micro-batches end and what the hour needs; the topic is
    the one the checkpoint reads (or --topic before its first batch)."""
    logged = (
        logged_end_offsets(spark, checkpoint, committed)
        if committed is not None
        else {args.topic: {}}
    )
    lateness = timedelta(minutes=args.lateness_minutes)
    lags: list[PartitionLag] = []
    try:
        for topic, partitions in logged.items():
            ends = {int(partition): offset for partition, offset in partitions.items()}
            lags += completeness.hour_lags(args.bootstrap_servers, topic, ends, args.hour, lateness)
    except (HourIncomplete, KafkaUnavailable) as error:
        if not args.allow_incomplete:
            raise
        log.warning("--allow-incomplete: completeness not checked (%s)", error)
    return lags


def require_no_counted_events(
    args: argparse.Namespace, layout: StorageLayout, committed: int | None
) -> None:
    counted = postgres.speed_events_of_hour(
        args.pg_dsn, args.hour, committed if committed is not None else -1
    )
    if counted:
        raise NoDataForCountedHour(
            f"hour {iso_hour(args.hour)}: no raw data under {layout.raw} in the committed "
            "micro-batches, but the speed"
            f" layer counted {counted:,} events in them; raw files are missing (or --storage-root "
            "is not the stream's)"
        )


def publish(
    args: argparse.Namespace, hour_text: str, result: HourResult, run: postgres.HourRun
) -> bool:
    """Write, gate and commit the hour; False when a run from newer input published it already."""
    checks = quality_gate.load_checks()

    def gate(cursor) -> None:
        outcomes = quality_gate.run_checks(cursor, checks, hour_text)
        failures = [outcome for outcome in outcomes if not outcome.passed]
        if failures:
            raise QualityGateFailed(hour_text, failures, len(outcomes))

    try:
        postgres.with_retries(
            lambda: postgres.publish_hour(args.pg_dsn, args.hour, result, run, gate),
            DATABASE_OUTAGES,
        )
    except postgres.HourSuperseded as superseded:
        log.warning("%s", superseded)
        return False
    except QualityGateFailed as failed:
        names, details = [outcome.name for outcome in failed.failures], str(failed)
        withdrawn = postgres.with_retries(
            lambda: postgres.withdraw_hour(args.pg_dsn, args.hour, run, names, details),
            DATABASE_OUTAGES,
        )
        if withdrawn:
            log.error(
                "hour %s withdrawn from the batch layer: the speed layer answers it until a run "
                "passes",
                hour_text,
            )
        raise
    return True


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kafka-python serves the completeness check only, whose outcome is logged in one line.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    args = parse_args(argv)
    args.pg_dsn = secret_manager.resolve_pg_dsn(args.pg_dsn, args.pg_dsn_secret)
    try:
        run(args)
    except (QualityGateFailed, NoDataForCountedHour) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_NOT_PUBLISHABLE)
    except (
        postgres.DatabaseUnavailable,
        postgres.SchemaNotMigrated,
        postgres.InvalidDsn,
        DependencyDown,
        HourIncomplete,
        KafkaUnavailable,
    ) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
