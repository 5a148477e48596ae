"""Speed layer: Kafka topic `devices` -> raw Parquet, quarantine and 5-minute aggregates in
PostgreSQL.

One streaming query reads Kafka once; each micro-batch (`foreachBatch`) classifies its records,
writes the valid ones to raw Parquet and the rejected ones to quarantine (both idempotently, in
folders of their own batch id), and adds its window totals to PostgreSQL in one transaction that
also records the batch id. Killed at any moment and restarted, it replays the unfinished batch
and every total stays exact.

    python -m spark_jobs.streaming                   # runs until stopped
    python -m spark_jobs.streaming --available-now   # drains the topic, then exits
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from py4j.protocol import Py4JError
from pyspark.errors import StreamingQueryException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from common import job_args, secret_manager, settings
from common.cli_types import non_negative_float, positive_float, positive_int
from spark_jobs import postgres
from spark_jobs.aggregations import BY_ANTENNA, BY_APP, BY_USER, totals_per_window
from spark_jobs.events import classify_records, quarantine_records, reject_records, valid_events
from spark_jobs.health import HEALTH_TABLES, HealthWriter
from spark_jobs.lease import Lease, LeaseHeld
from spark_jobs.outages import DependencyDown, Interrupted, OutagePolicy, wait_out
from spark_jobs.raw_hours import (
    RAW_COLUMNS,
    ClosedHourCompaction,
    child_names,
    delete,
    last_committed_batch,
    logged_end_offsets,
)
from spark_jobs.session import build_session, jvm_of
from spark_jobs.storage import StorageLayout, event_hour_of_epoch

log = logging.getLogger("spark_jobs.streaming")

SPEED_TABLES = {
    BY_ANTENNA: postgres.SpeedTable("bytes_agg_antenna", BY_ANTENNA.key, BY_ANTENNA.sum_column),
    # Enriched with user_metadata as it is upserted: unknown devices count for antennas and apps
    # only.
    BY_USER: postgres.SpeedTable(
        "bytes_agg_user", BY_USER.key, BY_USER.sum_column, known_users_only=True
    ),
    BY_APP: postgres.SpeedTable("bytes_agg_app", BY_APP.key, BY_APP.sum_column),
}
REQUIRED_TABLES = (
    "user_metadata",
    "speed_layer_progress",
    "speed_hour_batches",
    "speed_partition_offsets",
    "speed_refused_rows",
    *(t.name for t in SPEED_TABLES.values()),
    *HEALTH_TABLES,
)
WINDOW_UNITS = {"second": 1, "minute": 60, "hour": 3600}
WINDOW_PATTERN = re.compile(r"(?P<count>[0-9]+) (?P<unit>second|minute|hour)s?", re.ASCII)
SECONDS_PER_HOUR = 3600
# A bound on every sum a micro-batch computes: a million reports of at most 10^12 bytes (the cap
# of spark_jobs/events.py) cannot overflow 64 bits.
MAX_OFFSETS_PER_TRIGGER = 1_000_000
# Rounds of taking out the records the database refused before the batch is given up.
MAX_REFUSAL_ROUNDS = 3
# Times in a row the query may fail at one batch, with its dependencies answering, before the
# job stops instead of looping.
MAX_FAILURES_AT_ONE_BATCH = 5


def window_seconds(text: str) -> int:
    """'5 minutes' -> 300. Only lengths that divide an hour: a window must never straddle two of
    the batch layer's hours, or the speed and batch totals of an hour could not be compared."""
    match = WINDOW_PATTERN.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a window length like '5 minutes'")
    seconds = int(match["count"]) * WINDOW_UNITS[match["unit"]]
    if seconds == 0 or SECONDS_PER_HOUR % seconds:
        raise argparse.ArgumentTypeError(
            f"{text!r} does not divide an hour (e.g. '1 minute', '5 minutes', '1 hour')"
        )
    return seconds


def _window(text: str) -> str:
    window_seconds(text)
    return text


def _max_offsets(text: str) -> int:
    value = positive_int(text)
    if value > MAX_OFFSETS_PER_TRIGGER:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_OFFSETS_PER_TRIGGER:,} (keeps every sum of a batch within 64 bits), got "
            f"{text!r}"
        )
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.streaming",
        description=(
            "Speed layer: Kafka -> raw Parquet, quarantine and 5-minute aggregates in PostgreSQL."
        ),
    )
    job_args.add_kafka_args(parser, servers_help="Kafka servers", topic_help="Kafka topic")
    job_args.add_database_and_storage_args(
        parser, "checkpoint location (default: STORAGE_ROOT/checkpoints/streaming)"
    )
    parser.add_argument(
        "--window",
        type=_window,
        default="5 minutes",
        help="tumbling window length that divides an hour (default: '5 minutes')",
    )
    parser.add_argument(
        "--trigger-seconds",
        type=positive_float,
        default=2.0,
        help="micro-batch interval (default: 2)",
    )
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=_max_offsets,
        default=500_000,
        help=f"cap on records per micro-batch (default: 500000, at most {MAX_OFFSETS_PER_TRIGGER})",
    )
    parser.add_argument(
        "--starting-offsets",
        choices=("earliest", "latest"),
        default="earliest",
        help="where a new checkpoint starts reading",
    )
    parser.add_argument(
        "--available-now", action="store_true", help="process what the topic holds now, then exit"
    )
    parser.add_argument(
        "--compact-after-minutes",
        type=non_negative_float,
        default=5.0,
        help=(
            "compact an hour's raw files into one this long after the hour ends"
            " (default: 5; before batch_hourly's lateness)"
        ),
    )
    parser.add_argument(
        "--outage-limit-minutes",
        type=non_negative_float,
        default=30.0,
        help=(
            "how long to wait for an unavailable PostgreSQL or Kafka broker before exiting"
            " (default: 30; 0: do not wait)"
        ),
    )
    parser.add_argument(
        "--health-retention-days",
        type=positive_float,
        default=settings.health_retention_days(),
        help=(
            "keep the micro-batch health rows this many days (env HEALTH_RETENTION_DAYS,"
            " default: 7)"
        ),
    )
    parser.add_argument(
        "--master", default=None, help="Spark master (default: local[*], or what spark-submit sets)"
    )
    return parser.parse_args(argv)


class StepTimer:
    """Seconds spent per step of a micro-batch, for the log line that tells where time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.seconds.items())


class StreamStopped(Exception):
    """The job must stop: retrying would not help (the message says why and what to do)."""


# ---- pure transformations -------------------------------------------------------------------


def micro_batch_totals(records: DataFrame, window: str) -> postgres.SpeedBatchTotals:
    """What a micro-batch adds to the serving database, from its classified records (`reason`
    NULL for a valid event): each speed table's window totals, each event hour's count, the
    records that go to the quarantine by reason, and the newest valid event's time. Lists are
    sorted, so equal batches give equal results.

    One Spark job; when the caller has persisted `records`, it fills the cache (or a job beside it
    does).
    """
    rows = window_totals_and_quarantined(records, window).collect()
    windows = [row["window_total"] for row in rows if row["window_total"] is not None]
    by_key = {aggregate.key: table for aggregate, table in SPEED_TABLES.items()}
    increments: dict[postgres.SpeedTable, list[postgres.Increment]] = {
        table: [] for table in SPEED_TABLES.values()
    }
    for total in windows:
        increments[by_key[total["table"]]].append(
            (total["key"], total["window_start"], total["total"])
        )
    return postgres.SpeedBatchTotals(
        increments={table: sorted(table_rows) for table, table_rows in increments.items()},
        # Every valid event is in one antenna window, and windows never straddle hours.
        hours=hour_counts(
            (total["window_start"], total["events"], total["total"])
            for total in windows
            if total["table"] == BY_ANTENNA.key
        ),
        quarantined_by_reason=tuple(
            sorted(
                (row["reason"], row["quarantined_events"])
                for row in rows
                if row["window_total"] is None
            )
        ),
        newest_event_time=max((total["newest"] for total in windows), default=None),
    )


def window_totals_and_quarantined(records: DataFrame, window: str) -> DataFrame:
    """The speed tables' window totals of the valid events, as `window_total` structs (table,
    key, window_start epoch, total, events, newest event time epoch), and one more row per
    quarantine `reason` whose `quarantined_events` counts the rejected records.

    A union, so one Spark job computes both. Each row sets either `window_total` or the reason
    and its count: the counts have typed columns of their own rather than window rows with a
    marker in them.
    """
    totals = totals_per_window(
        valid_events(records), list(SPEED_TABLES), window, newest_column="timestamp"
    ).select(
        F.struct(
            "table",
            "key",
            F.unix_seconds("date").alias("window_start"),
            "total",
            "events",
            "newest",
        ).alias("window_total"),
        F.lit(None).cast("string").alias("reason"),
        F.lit(None).cast("bigint").alias("quarantined_events"),
    )
    quarantined = (
        records.where(F.col("reason").isNotNull())
        .groupBy("reason")
        .count()
        .select(
            F.lit(None).cast(totals.schema["window_total"].dataType).alias("window_total"),
            "reason",
            F.col("count").alias("quarantined_events"),
        )
    )
    return totals.unionByName(quarantined)


def hour_counts(windows: Iterable[tuple[int, int, int]]) -> list[postgres.HourCount]:
    """(window start epoch, events, bytes) of windows that together hold each event once ->
    (hour start epoch, events, bytes) per event hour, sorted."""
    hours: dict[int, tuple[int, int]] = {}
    for start, events, total in windows:
        hour = start - start % SECONDS_PER_HOUR
        hour_events, hour_bytes = hours.get(hour, (0, 0))
        hours[hour] = (hour_events + events, hour_bytes + total)
    return sorted((hour, events, total) for hour, (events, total) in hours.items())


def event_hours(totals: postgres.SpeedBatchTotals) -> set[str]:
    """The raw-storage partitions (event hours) a batch's valid events go to."""
    return {event_hour_of_epoch(start) for start, _, _ in totals.hours}


def refused_conditions(refused: list[postgres.RefusedRow], window: str) -> list[tuple[Column, str]]:
    """For each row the database refused, the condition that picks the records behind it.

    Window and hour starts by arithmetic, not `F.window`: Spark filters out the rows whose time
    is null wherever `F.window` is used, and the malformed records (no time) would vanish from
    the quarantine. `pmod` floors times before 1970 as the windows do.
    """
    window_start = F.col("timestamp") - F.pmod("timestamp", F.lit(window_seconds(window)))
    hour_start = F.col("timestamp") - F.pmod("timestamp", F.lit(SECONDS_PER_HOUR))
    return [
        (
            hour_start == row.start
            if row.table is None
            else (F.col(row.table.key) == row.key) & (window_start == row.start),
            row.reason,
        )
        for row in refused
    ]


# ---- the micro-batch ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOutcome:
    totals: postgres.SpeedBatchTotals
    applied: bool
    refused_records: bool
    end_offsets: list[postgres.PartitionOffset]


class SpeedLayerBatch:
    """The body of every micro-batch. Each step is idempotent for a given batch id."""

    def __init__(
        self,
        spark: SparkSession,
        layout: StorageLayout,
        checkpoint: str,
        pg_dsn: str,
        window: str,
        compaction: ClosedHourCompaction,
        outages: OutagePolicy,
        leases: tuple[Lease, ...] = (),
        health: HealthWriter | None = None,
    ):
        self.spark = spark
        self.layout = layout
        self.checkpoint = checkpoint
        self.pg_dsn = pg_dsn
        self.window = window
        self.compaction = compaction
        self.outages = outages
        self.leases = leases
        self.health = health
        self.fatal: str | None = None
        self.batches_done = 0
        self._query_id: str | None = None
        self._first_batch_of_run = True
        self._query_started = threading.Event()
        self._raw_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-writer")

    def new_run(self) -> None:
        """Before each start of the query: its first batch may replay one from before a crash."""
        self._query_started.clear()
        self._first_batch_of_run = True

    @property
    def query_id(self) -> str:
        if self._query_id is None:
            raise RuntimeError("a micro-batch ran before the query said its id")
        return self._query_id

    def set_query_id(self, query_id: str) -> None:
        """The query id survives restarts from the same checkpoint: it names the progress row."""
        self._query_id = query_id
        self._query_started.set()

    def __call__(self, classified_records: DataFrame, batch_id: int) -> None:
        """`classified_records`: this micro-batch's records through `classify_records`."""
        self._query_started.wait()
        try:
            self._run(classified_records, batch_id)
        except (StreamStopped, DependencyDown) as error:
            # Read by the supervisor: the query's own exception wraps this one in Py4J's text.
            self.fatal = str(error)
            raise
        self.batches_done += 1

    def _run(self, classified_records: DataFrame, batch_id: int) -> None:
        self._require_leases()
        timings = StepTimer()
        classified = classified_records.persist()
        try:
            outcome = self._write_batch(classified, batch_id, timings)
        finally:
            classified.unpersist()
        totals = outcome.totals
        # Hours this batch wrote to wait for a batch that does not: a backlog compacts each hour
        # once. The compaction runs beside the next micro-batches; this step only starts it.
        self.compaction.wrote(event_hours(totals), batch_id)
        with timings.step("compaction"):
            compacting = self.compaction.compact_in_background(batch_id)
        log.info(
            "batch %d: %d events, %d quarantined%s, %s%s (%s)",
            batch_id,
            totals.valid_events,
            totals.quarantined_events,
            " (some refused by PostgreSQL)" if outcome.refused_records else "",
            "applied" if outcome.applied else "already applied before a restart",
            ", compacting closed hours" if compacting else "",
            timings,
        )
        # Last, so that every step's time is known; a replay writes its row again.
        if self.health is not None:
            self.health.record(
                self.query_id, batch_id, totals, timings.seconds, outcome.end_offsets
            )

    def _write_batch(
        self, classified: DataFrame, batch_id: int, timings: StepTimer
    ) -> BatchOutcome:
        """Raw files, quarantine, then the database. Records the database refuses (a value it
        cannot store: replaying would fail the same way for ever) move to the quarantine, and the
        batch is written again without them."""
        possible_replay = self._first_batch_of_run
        refused_rows = self._refused_before(batch_id)
        records = reject_records(classified, refused_conditions(refused_rows, self.window))
        # A crashed attempt may have written raw files for the records refused since: their hours.
        written_hours = {
            event_hour_of_epoch(row.start - row.start % SECONDS_PER_HOUR) for row in refused_rows
        }
        for _ in range(MAX_REFUSAL_ROUNDS + 1):
            # With no earlier files to remove first (a round after a refusal has some), the raw
            # write runs beside the aggregation: two Spark jobs at once, each one's fixed cost
            # (planning, scheduling) overlapping the other's tasks.
            raw_write = None if written_hours else self._start_raw_write(records, batch_id)
            with waited_for_on_failure(raw_write):
                with timings.step("read+aggregate"):
                    # This job or the raw write beside it fills the cache the quarantine reads.
                    totals = micro_batch_totals(records, self.window)
                hours = event_hours(totals)
                with timings.step("raw"):
                    if raw_write is not None:
                        raw_write.result()  # what the write takes beyond the aggregation
                    else:
                        # A round after a refusal first removes the files of hours it no longer
                        # writes.
                        self._delete_raw(written_hours - hours, batch_id)
                        if totals.valid_events:
                            self._write_raw(valid_events(records), batch_id)
            written_hours = hours
            if totals.quarantined_events:
                with timings.step("quarantine"):
                    self._write_quarantine(quarantine_records(records), batch_id)
            elif possible_replay or refused_rows:
                # A crashed attempt, or an earlier round, may have quarantined what is valid now.
                delete(self.spark, self.layout.quarantine_batch(batch_id))
            self._require_leases()
            try:
                with timings.step("postgres"):
                    end_offsets = postgres.end_offsets_of(
                        logged_end_offsets(self.spark, self.checkpoint, batch_id)
                    )
                    applied = postgres.with_retries(
                        functools.partial(
                            postgres.apply_speed_batch,
                            self.pg_dsn,
                            self.query_id,
                            batch_id,
                            totals,
                            refused_rows,
                            end_offsets,
                        ),
                        self.outages,
                    )
                return BatchOutcome(totals, applied, bool(refused_rows), end_offsets)
            except postgres.RowsRefused as refusal:
                if not refusal.rows:
                    raise StreamStopped(self._stop_message(batch_id, str(refusal))) from refusal
                log.warning(
                    "batch %d: %s; quarantining the records behind %d refused rows (%s)",
                    batch_id,
                    refusal,
                    len(refusal.rows),
                    ", ".join(sorted({row.reason for row in refusal.rows})),
                )
                refused_rows = refused_rows + refusal.rows
                records = reject_records(classified, refused_conditions(refused_rows, self.window))
        raise StreamStopped(self._stop_message(batch_id, "PostgreSQL kept refusing its totals"))

    def _refused_before(self, batch_id: int) -> list[postgres.RefusedRow]:
        """Only the first batch of a query run can be a replay of one applied before a crash."""
        if not self._first_batch_of_run:
            return []
        self._first_batch_of_run = False
        return postgres.with_retries(
            lambda: postgres.refused_in_batch(
                self.pg_dsn, self.query_id, batch_id, SPEED_TABLES.values()
            ),
            self.outages,
        )

    def _stop_message(self, batch_id: int, problem: str) -> str:
        return (
            f"micro-batch {batch_id} ({batch_offsets(self.spark, self.checkpoint, batch_id)}): "
            f"{problem}."
            " The job stops rather than retry it for ever; fix the cause (see the log) and start "
            "it again:"
            " it resumes at this batch"
        )

    def _require_leases(self) -> None:
        for lease in self.leases:
            if lease.lost:
                raise StreamStopped(
                    f"this job lost its lease {lease.location} to another streaming job and stops "
                    "writing"
                )

    def _start_raw_write(self, records: DataFrame, batch_id: int) -> Future:
        """The raw write of `records`' valid events, on the raw writer's thread. A batch without
        valid events writes no file (only partitions that have rows are written)."""
        return self._raw_writer.submit(self._write_raw, valid_events(records), batch_id)

    def _write_raw(self, events: DataFrame, batch_id: int) -> None:
        # One writer task, so each micro-batch leaves one file per event hour for the batch layer.
        (
            events.select(*RAW_COLUMNS, "event_hour")
            .withColumn("batch_id", F.lit(batch_id))
            .coalesce(1)
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy("event_hour", "batch_id")
            .parquet(self.layout.raw)
        )

    def _delete_raw(self, hours: set[str], batch_id: int) -> None:
        for hour in hours:
            delete(self.spark, self.layout.raw_batch(hour, batch_id))

    def _write_quarantine(self, rejected: DataFrame, batch_id: int) -> None:
        (
            rejected.withColumn("batch_id", F.lit(batch_id))
            .coalesce(1)
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy("batch_id")
            .parquet(self.layout.quarantine)
        )


@contextmanager
def waited_for_on_failure(running: Future | None):
    """If the body fails, wait for `running` to end before the failure goes on: a replay of the
    batch must not meet this attempt's raw write still writing the same files."""
    try:
        yield
    except BaseException:
        if running is not None:
            futures_wait([running])
        raise


def batch_offsets(spark: SparkSession, checkpoint: str, batch_id: int) -> str:
    """'devices-0 offsets 100 to 199, ...': the Kafka records of a micro-batch, from the offset log
    of the checkpoint (batch N reads from batch N-1's end offsets to its own)."""
    try:
        end = logged_end_offsets(spark, checkpoint, batch_id)
        start = logged_end_offsets(spark, checkpoint, batch_id - 1) if batch_id > 0 else {}
    except Exception:  # noqa: BLE001 - the message must still go out without the offsets
        return "offsets unknown: see the checkpoint's offsets log"
    ranges = []
    for topic, partitions in end.items():
        for partition, until in sorted(partitions.items(), key=lambda item: int(item[0])):
            since = start.get(topic, {}).get(partition, 0)
            if until > since:
                ranges.append(f"{topic}-{partition} offsets {since} to {until - 1}")
    return ", ".join(ranges) or "no records"


def check_kafka(bootstrap_servers: str, topic: str) -> None:
    """Raise KafkaNotReady with the fix while no broker answers or the topic is missing."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","), bootstrap_timeout_ms=10_000
        )
    except KafkaError as error:
        raise KafkaNotReady(
            f"no Kafka broker at KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers}; start one with `make "
            "up`"
        ) from error
    try:
        topics = consumer.topics()
    except KafkaError as error:
        raise KafkaNotReady(
            f"the Kafka broker at KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers} does not answer "
            f"({error})"
        ) from error
    else:
        if topic not in topics:
            raise KafkaNotReady(
                f"Kafka topic {topic!r} does not exist at {bootstrap_servers}; `make up` creates it"
            )
    finally:
        consumer.close()


class KafkaNotReady(RuntimeError):
    """No broker answers, or the topic is not there (yet: the broker's VM creates it on boot)."""


def wait_for_dependencies(args: argparse.Namespace, policy: OutagePolicy) -> None:
    """Return once the broker has the topic and PostgreSQL has the schema; DependencyDown past the
    outage limit. A missing table is no outage: SchemaNotMigrated at once."""
    wait_out(
        lambda: check_kafka(args.bootstrap_servers, args.topic),
        what="Kafka",
        transient=(KafkaNotReady,),
        policy=policy,
    )
    postgres.with_retries(lambda: postgres.require_tables(args.pg_dsn, REQUIRED_TABLES), policy)


def start_query(spark: SparkSession, args: argparse.Namespace, batch: SpeedLayerBatch):
    records = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", args.starting_offsets)
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .load()
        .select("value", "topic", "partition", "offset")
    )
    # Classified on the stream, not in each batch: the plan is then built once, not per micro-batch.
    writer = (
        classify_records(records)
        .writeStream.queryName("speed_layer")
        .option("checkpointLocation", batch.checkpoint)
        .foreachBatch(batch)
    )
    writer = (
        writer.trigger(availableNow=True)
        if args.available_now
        else writer.trigger(processingTime=f"{args.trigger_seconds} seconds")
    )
    batch.new_run()
    query = writer.start()
    batch.set_query_id(str(query.id))
    return query


class Supervisor:
    """Runs the query until it is stopped, restarting it from its checkpoint when it fails for a
    reason that passes (a broker restart, a database failover): Spark replays the unfinished
    batch, which is idempotent, so a restart changes no number."""

    def __init__(
        self,
        spark: SparkSession,
        args: argparse.Namespace,
        batch: SpeedLayerBatch,
        policy: OutagePolicy,
    ):
        self.spark = spark
        self.args = args
        self.batch = batch
        self.policy = policy
        self.stopping = policy.stop or threading.Event()
        self.query: StreamingQuery | None = None

    def stop(self) -> None:
        """Between two batches (SIGTERM from systemd, Dataproc or `kill`), never mid-write; a
        wait for a dependency ends at once (outages.Interrupted)."""
        self.stopping.set()
        threading.Thread(target=self._stop_between_batches, daemon=True).start()

    def _stop_between_batches(self) -> None:
        query = self.query
        if query is None:
            return
        try:
            # A batch in progress (commit log included) finishes first, within reason.
            deadline = time.monotonic() + 600
            while (
                query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            query.stop()
        except Exception as error:  # noqa: BLE001 - the job may be exiting already; nothing to stop then
            log.debug("stopping the query: %s", error)

    def run(self) -> None:
        failures, first_failure, batches_at_failure = 0, 0.0, -1
        while not self.stopping.is_set():
            self.query = query = start_query(self.spark, self.args, self.batch)
            try:
                query.awaitTermination()
                return
            except StreamingQueryException as error:
                if self.stopping.is_set():
                    return
                if self.batch.fatal:
                    raise StreamStopped(self.batch.fatal) from None
                if self.batch.batches_done != batches_at_failure:
                    failures, first_failure = 0, time.monotonic()
                failures += 1
                batches_at_failure = self.batch.batches_done
                self._after_failure(error, failures, time.monotonic() - first_failure)

    def _after_failure(
        self, error: StreamingQueryException, failures: int, failing_for: float
    ) -> None:
        """Wait, then let the loop restart the query. A batch that keeps failing is given up only
        once it has failed several times and for as long as an outage may last: a broker that
        answers metadata but cannot serve fetches yet looks the same as a real error."""
        problem = _query_error_line(error)
        if (
            failures >= MAX_FAILURES_AT_ONE_BATCH
            and failing_for >= self.policy.limit.total_seconds()
        ):
            next_batch = _next_batch(self.spark, self.batch.checkpoint)
            raise StreamStopped(
                f"the streaming query failed {failures} times in {failing_for:.0f} s at "
                f"micro-batch {next_batch}"
                f" ({batch_offsets(self.spark, self.batch.checkpoint, next_batch)}) while Kafka "
                "and PostgreSQL"
                f" answer: {problem}. Fix the cause (see the log) and start the job again: it "
                "resumes at this batch"
            )
        delay = min(2**failures, 60)
        log.warning(
            "streaming query stopped (%s); restarting it from its checkpoint in %d s once Kafka "
            "and PostgreSQL answer"
            " (failure %d in a row)",
            problem,
            delay,
            failures,
        )
        if self.stopping.wait(delay):
            return
        wait_for_dependencies(self.args, self.policy)


def _query_error_line(error: StreamingQueryException) -> str:
    """The useful line of a query's failure, which Py4J and Spark wrap in several layers."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for marker in ("Exception:", "Error:", "error:"):
        for line in reversed(lines):
            if marker in line and "Traceback" not in line:
                return line[:500]
    return (lines[0] if lines else type(error).__name__)[:500]


def _next_batch(spark: SparkSession, checkpoint: str) -> int:
    logged = [
        int(name)
        for name in child_names(spark, f"{checkpoint.rstrip('/')}/offsets")
        if name.isdigit()
    ]
    return max(logged, default=0)


def outage_policy(args: argparse.Namespace, stop: threading.Event | None = None) -> OutagePolicy:
    return OutagePolicy(limit=timedelta(minutes=args.outage_limit_minutes), stop=stop)


def speed_layer_batch(
    spark: SparkSession,
    args: argparse.Namespace,
    layout: StorageLayout,
    policy: OutagePolicy,
    leases: tuple[Lease, ...] = (),
) -> SpeedLayerBatch:
    compaction = ClosedHourCompaction(spark, layout, timedelta(minutes=args.compact_after_minutes))
    checkpoint = args.checkpoint or layout.streaming_checkpoint
    health = HealthWriter(args.pg_dsn, args.bootstrap_servers, args.health_retention_days)
    return SpeedLayerBatch(
        spark, layout, checkpoint, args.pg_dsn, args.window, compaction, policy, leases, health
    )


def run(args: argparse.Namespace) -> None:
    stopping = threading.Event()
    policy = outage_policy(args, stopping)
    layout = StorageLayout(args.storage_root)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    wait_for_dependencies(args, policy)
    spark = build_session("speed-layer", args.master)
    quiet_kafka_client(spark)
    batch = speed_layer_batch(spark, args, layout, policy)
    batch.leases = (
        Lease(spark, layout.streaming_lease, "storage root"),
        Lease(spark, f"{batch.checkpoint.rstrip('/')}.lease", "checkpoint"),
    )
    supervisor = Supervisor(spark, args, batch, policy)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    taken: list[Lease] = []
    try:
        for lease in batch.leases:
            lease.acquire()
            taken.append(lease)
        for lease in taken:
            lease.start_renewing()
        log.info(
            "speed layer running: topic %s -> %s, checkpoint %s",
            args.topic,
            layout.raw,
            batch.checkpoint,
        )
        supervisor.run()
        if args.available_now and not stopping.is_set():
            compact_after_drain(spark, batch)
    except (Py4JError, ConnectionError):
        if not stopping.is_set():
            raise
        # A SIGTERM sent to the whole process group (systemd's default, `kill -- -PID`) also stops
        # the Spark JVM, often before the query's graceful stop: nothing is lost, the checkpoint
        # replays an unfinished batch on the next start.
        log.info(
            "the Spark JVM stopped with the job; an unfinished micro-batch replays on the next "
            "start"
        )
    except KeyboardInterrupt:
        supervisor.stop()
    except Interrupted:
        log.info("stopped while waiting for a dependency")
    finally:
        if batch.health is not None:
            batch.health.close()
        for lease in taken:
            lease.release()


def compact_after_drain(spark: SparkSession, batch: SpeedLayerBatch) -> None:
    """Every batch of an `--available-now` drain has committed: the hours its last batches wrote
    need not wait for a next batch to be compacted."""
    batch.compaction.wait()
    committed = last_committed_batch(spark, batch.checkpoint)
    if committed is not None:
        compacted = batch.compaction.compact_closed_hours(committed + 1)
        if compacted:
            log.info("compacted hours %s after the drain", ", ".join(compacted))


def quiet_kafka_client(spark: SparkSession) -> None:
    """The Kafka client inside Spark logs a warning per reconnect while the broker is down; the
    job's own retry lines say it once per attempt."""
    jvm = jvm_of(spark)
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.kafka", jvm.org.apache.logging.log4j.Level.ERROR
    )


def without_py4j_connection_tracebacks(record: logging.LogRecord) -> bool:
    """Py4J logs each lost connection to the JVM, and each error of a Python callback, traceback
    included, and then raises the same error to the caller, which reports it in one line."""
    return f"{os.sep}py4j{os.sep}" not in record.pathname


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(without_py4j_connection_tracebacks)
    # kafka-python only serves the start-up check, whose failure is reported in one line below.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Py4J's callback server logs every connection; its lines would bury the job's own.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = parse_args(argv)
    args.pg_dsn = secret_manager.resolve_pg_dsn(args.pg_dsn, args.pg_dsn_secret)
    try:
        run(args)
    except Interrupted:
        log.info("stopped while waiting for a dependency")
    except (
        DependencyDown,
        StreamStopped,
        LeaseHeld,
        postgres.SchemaNotMigrated,
        postgres.InvalidDsn,
        postgres.DatabaseUnavailable,
    ) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
