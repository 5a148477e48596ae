"""Speed layer: Kafka topic `devices` -> raw Parquet, quarantine and 5-minute aggregates in PostgreSQL.

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
from contextlib import contextmanager
import logging
import re
import signal
import sys
import threading
import time
from datetime import timedelta

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from common import secrets, settings
from common.cli_types import non_negative_float, positive_float, positive_int
from spark_jobs import postgres
from spark_jobs.aggregations import BY_ANTENNA, BY_APP, BY_USER, totals_per_window
from spark_jobs.events import classify_records, quarantine_records, valid_events
from spark_jobs.raw_hours import RAW_COLUMNS, ClosedHourCompaction
from spark_jobs.session import build_session
from spark_jobs.storage import StorageLayout

log = logging.getLogger("spark_jobs.streaming")

SPEED_TABLES = {
    BY_ANTENNA: postgres.SpeedTable("bytes_agg_antenna", BY_ANTENNA.key, BY_ANTENNA.sum_column),
    # Enriched with user_metadata as it is upserted: unknown devices count for antennas and apps only.
    BY_USER: postgres.SpeedTable("bytes_agg_user", BY_USER.key, BY_USER.sum_column, known_users_only=True),
    BY_APP: postgres.SpeedTable("bytes_agg_app", BY_APP.key, BY_APP.sum_column),
}
REQUIRED_TABLES = ("user_metadata", "speed_layer_progress", *(t.name for t in SPEED_TABLES.values()))
WINDOW_PATTERN = re.compile(r"^\d+ (second|minute|hour)s?$")
# Mark the rows of the per-batch result that carry record counts rather than window totals.
HOURS_TAG = "__events_per_hour__"
QUARANTINED_TAG = "__quarantined__"


def _window(text: str) -> str:
    if not WINDOW_PATTERN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a window length like '5 minutes'")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.streaming",
        description="Speed layer: Kafka -> raw Parquet, quarantine and 5-minute aggregates in PostgreSQL.",
    )
    parser.add_argument("--bootstrap-servers", default=settings.kafka_bootstrap_servers(), help="Kafka servers (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic", default=settings.kafka_topic(), help="Kafka topic (env KAFKA_TOPIC)")
    parser.add_argument("--pg-dsn", default=settings.pg_dsn(), help="libpq URI of the serving database (env PG_DSN)")
    parser.add_argument("--pg-dsn-secret", default=secrets.pg_dsn_secret_default(), help="Secret Manager version holding the DSN, replaces --pg-dsn (env PG_DSN_SECRET)")
    parser.add_argument("--storage-root", default=settings.storage_root(), help="local folder or gs:// URI (env STORAGE_ROOT)")
    parser.add_argument("--checkpoint", help="checkpoint location (default: STORAGE_ROOT/checkpoints/streaming)")
    parser.add_argument("--window", type=_window, default="5 minutes", help="tumbling window length (default: '5 minutes')")
    parser.add_argument("--trigger-seconds", type=positive_float, default=2.0, help="micro-batch interval (default: 2)")
    parser.add_argument("--max-offsets-per-trigger", type=positive_int, default=500_000, help="cap on records per micro-batch")
    parser.add_argument("--starting-offsets", choices=("earliest", "latest"), default="earliest", help="where a new checkpoint starts reading")
    parser.add_argument("--available-now", action="store_true", help="process what the topic holds now, then exit")
    parser.add_argument(
        "--compact-after-minutes", type=non_negative_float, default=5.0,
        help="compact an hour's raw files into one this long after the hour ends (default: 5; before batch_hourly's lateness)",
    )
    parser.add_argument("--master", default=None, help="Spark master (default: local[*], or what spark-submit sets)")
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
            self.seconds[name] = time.monotonic() - started

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.seconds.items())


class SpeedLayerBatch:
    """The body of every micro-batch. Each step is idempotent for a given batch id."""

    def __init__(self, spark: SparkSession, layout: StorageLayout, pg_dsn: str, window: str, compaction: ClosedHourCompaction):
        self.spark = spark
        self.layout = layout
        self.pg_dsn = pg_dsn
        self.window = window
        self.compaction = compaction
        self._query_id: str | None = None
        self._query_started = threading.Event()

    def set_query_id(self, query_id: str) -> None:
        """The query id survives restarts from the same checkpoint: it names the progress row."""
        self._query_id = query_id
        self._query_started.set()

    def __call__(self, classified_records: DataFrame, batch_id: int) -> None:
        """`classified_records`: this micro-batch's records through `classify_records`."""
        self._query_started.wait()
        timings = StepTimer()
        classified = classified_records.persist()
        events = valid_events(classified)
        try:
            with timings.step("read+aggregate"):
                # This first job also fills the cache that the writes below read from.
                increments, valid_count, quarantined_count, event_hours = self._increments_and_counts(classified, events)
            if valid_count:
                with timings.step("raw"):
                    self._write_raw(events, batch_id)
            if quarantined_count:
                with timings.step("quarantine"):
                    self._write_quarantine(quarantine_records(classified), batch_id)
            with timings.step("postgres"):
                applied = postgres.with_retries(
                    lambda: postgres.apply_speed_batch(
                        self.pg_dsn, self._query_id, batch_id, increments, valid_count, quarantined_count
                    )
                )
        finally:
            classified.unpersist()
        # After the speed tables, so a compaction (once an hour) never delays their update. Hours
        # this batch wrote to wait for a batch that does not: a backlog compacts each hour once.
        self.compaction.wrote(event_hours, batch_id)
        with timings.step("compaction"):
            compacted = self.compaction.compact_closed_hours(batch_id)
        log.info(
            "batch %d: %d events, %d quarantined, %s%s (%s)",
            batch_id, valid_count, quarantined_count,
            "applied" if applied else "already applied before a restart",
            f", compacted hours {', '.join(compacted)}" if compacted else "", timings,
        )

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

    def _write_quarantine(self, rejected: DataFrame, batch_id: int) -> None:
        (
            rejected.withColumn("batch_id", F.lit(batch_id))
            .coalesce(1)
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy("batch_id")
            .parquet(self.layout.quarantine)
        )

    def _increments_and_counts(
        self, classified: DataFrame, events: DataFrame
    ) -> tuple[dict[postgres.SpeedTable, list[tuple[str, int, int]]], int, int, set[str]]:
        """The three tables' window totals, the valid / quarantined counts and the event hours the
        valid records fall in, in one Spark job."""
        totals = totals_per_window(events, list(SPEED_TABLES), self.window).select(
            "table", "key", F.unix_seconds("date").alias("window_start"), "total"
        )
        counts = events.groupBy("event_hour").count().select(
            F.lit(HOURS_TAG).alias("table"), F.col("event_hour").alias("key"),
            F.lit(0).cast("bigint").alias("window_start"), F.col("count").alias("total"),
        ).unionByName(
            classified.where(F.col("reason").isNotNull()).groupBy().count().select(
                F.lit(QUARANTINED_TAG).alias("table"), F.lit("").alias("key"),
                F.lit(0).cast("bigint").alias("window_start"), F.col("count").alias("total"),
            )
        )
        increments: dict[postgres.SpeedTable, list[tuple[str, int, int]]] = {t: [] for t in SPEED_TABLES.values()}
        by_key = {aggregate.key: table for aggregate, table in SPEED_TABLES.items()}
        events_per_hour, quarantined = {}, 0
        for row in totals.unionByName(counts).collect():
            if row["table"] == HOURS_TAG:
                events_per_hour[row["key"]] = row["total"]
            elif row["table"] == QUARANTINED_TAG:
                quarantined = row["total"]
            else:
                increments[by_key[row["table"]]].append((row["key"], row["window_start"], row["total"]))
        return increments, sum(events_per_hour.values()), quarantined, set(events_per_hour)


def speed_layer_batch(spark: SparkSession, args: argparse.Namespace, layout: StorageLayout) -> SpeedLayerBatch:
    compaction = ClosedHourCompaction(spark, layout, timedelta(minutes=args.compact_after_minutes))
    return SpeedLayerBatch(spark, layout, args.pg_dsn, args.window, compaction)


def check_kafka(bootstrap_servers: str, topic: str) -> None:
    """Fail with the fix instead of letting Spark retry an unreachable broker forever."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), bootstrap_timeout_ms=10_000)
    except KafkaError as error:
        raise SystemExit(f"error: no Kafka broker at KAFKA_BOOTSTRAP_SERVERS={bootstrap_servers}; start one with `make up`") from error
    try:
        if topic not in consumer.topics():
            raise SystemExit(f"error: Kafka topic {topic!r} does not exist at {bootstrap_servers}; `make up` creates it")
    finally:
        consumer.close()


def start_query(spark: SparkSession, args: argparse.Namespace, batch: SpeedLayerBatch, checkpoint: str):
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
    writer = classify_records(records).writeStream.queryName("speed_layer").option("checkpointLocation", checkpoint).foreachBatch(batch)
    writer = writer.trigger(availableNow=True) if args.available_now else writer.trigger(processingTime=f"{args.trigger_seconds} seconds")
    return writer.start()


def stop_on_sigterm(query) -> None:
    """A SIGTERM (systemd, Dataproc, `kill`) stops the query between two batches instead of mid-write."""
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=query.stop, daemon=True).start())


def run(args: argparse.Namespace) -> None:
    check_kafka(args.bootstrap_servers, args.topic)
    postgres.require_tables(args.pg_dsn, REQUIRED_TABLES)
    layout = StorageLayout(args.storage_root)
    checkpoint = args.checkpoint or layout.streaming_checkpoint
    spark = build_session("speed-layer", args.master)
    batch = speed_layer_batch(spark, args, layout)
    query = start_query(spark, args, batch, checkpoint)
    batch.set_query_id(str(query.id))
    stop_on_sigterm(query)
    log.info("speed layer running: topic %s -> %s, checkpoint %s", args.topic, layout.raw, checkpoint)
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        query.stop()
    except StreamingQueryException as error:
        raise SystemExit(f"error: the streaming query failed: {str(error).strip().splitlines()[0]}") from error


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python only serves the start-up check, whose failure is reported in one line below.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    args = parse_args(argv)
    args.pg_dsn = secrets.resolve_pg_dsn(args.pg_dsn, args.pg_dsn_secret)
    try:
        run(args)
    except postgres.DatabaseUnavailable as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
