"""Pipeline health (docs/contract.md §10): what each micro-batch did and how far behind Kafka it
was, written by the streaming job itself, and the status report of `make status`.

Health rows are operational facts, not numbers anyone reconciles: they are written after the
micro-batch is applied, in a transaction of their own, and a failure to write them is one warning
line, never a failed or slower batch. A replay of a batch after a crash rewrites its rows. The
partitions' latest offsets come from one kafka-python consumer the job keeps open, asked once
per batch with a short timeout.

    python -m spark_jobs.health     # the streaming lag, the last micro-batch, each layer's
                                    # freshness, the newest published hour, hours that need a look
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

from common import job_args, secret_manager
from common.cli_types import positive_float, positive_int
from common.errors import CommandError, exit_status, first_line
from spark_jobs import postgres

log = logging.getLogger("spark_jobs.health")

# The StepTimer names of spark_jobs/streaming.py and the columns of speed_micro_batches they go
# to; a step the batch did not run is 0 s.
STEP_COLUMNS = {
    "read+aggregate": "read_aggregate_seconds",
    "raw": "raw_seconds",
    "quarantine": "quarantine_seconds",
    "postgres": "postgres_seconds",
    "compaction": "compaction_seconds",
}
# Deleting old rows once every few minutes is enough for a retention counted in days, and keeps
# the extra statement off almost every batch.
RETENTION_INTERVAL_SECONDS = 300.0
# Bounds on what a health write may cost a batch: the database answered moments ago, when the
# batch was applied, so a slow answer now is a problem to report, not to wait out.
HEALTH_STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = '10s'"
KAFKA_TIMEOUT_MS = 5_000
# What the streaming job writes: it refuses to start without them (REQUIRED_TABLES), rather than
# warn at every batch that a database not migrated to V007 has no place for its health.
HEALTH_TABLES = (
    "speed_micro_batches",
    "speed_micro_batch_partitions",
    "speed_micro_batch_quarantine",
)
# What `python -m spark_jobs.health` reads; a database without them is not migrated to V007.
STATUS_RELATIONS = (
    "speed_micro_batches",
    "speed_micro_batch_partitions",
    "batch_hour_states",
    "layer_freshness",
)
# The states of batch_hour_states that need someone's eye (or patience).
ATTENTION_STATES = ("failed", "waiting for completeness", "republication pending")


# ---- one micro-batch's health ----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class PartitionHealth:
    """Where a micro-batch ended on one partition (`committed_offset`, the next offset to read)
    and the partition's latest offset in Kafka when the batch ended."""

    topic: str
    partition: int
    committed_offset: int
    latest_offset: int


@dataclass(frozen=True)
class MicroBatchHealth:
    """One row of speed_micro_batches with its partition and quarantine rows."""

    query_id: str
    batch_id: int
    events: int
    quarantined_by_reason: tuple[tuple[str, int], ...]
    # Epoch seconds (years 1 to 9999 of docs/contract.md §1), None without valid events.
    newest_event_time: int | None
    step_seconds: tuple[float, ...]  # in the order of STEP_COLUMNS
    partitions: tuple[PartitionHealth, ...]

    @property
    def quarantined(self) -> int:
        return sum(records for _, records in self.quarantined_by_reason)


def micro_batch_health(
    query_id: str,
    batch_id: int,
    totals: postgres.SpeedBatchTotals,
    step_seconds: Mapping[str, float],
    end_offsets: Sequence[postgres.PartitionOffset],
    latest_offsets: Mapping[tuple[str, int], int] | None,
) -> MicroBatchHealth:
    """The health of a batch from what it computed. `latest_offsets` None (Kafka did not answer):
    no partition rows, rather than made-up ones."""
    partitions = (
        ()
        if latest_offsets is None
        else tuple(
            sorted(
                PartitionHealth(
                    end.topic,
                    end.partition,
                    end.next_offset,
                    latest_offsets[(end.topic, end.partition)],
                )
                for end in end_offsets
                if (end.topic, end.partition) in latest_offsets
            )
        )
    )
    return MicroBatchHealth(
        query_id=query_id,
        batch_id=batch_id,
        events=totals.valid_events,
        quarantined_by_reason=totals.quarantined_by_reason,
        newest_event_time=totals.newest_event_time,
        step_seconds=tuple(step_seconds.get(step, 0.0) for step in STEP_COLUMNS),
        partitions=partitions,
    )


def write_micro_batch(dsn: str, health: MicroBatchHealth) -> None:
    """Replace the batch's rows (a replay after a crash writes them again) in one transaction."""
    conn = postgres.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(HEALTH_STATEMENT_TIMEOUT)
            # The partition and quarantine rows go with it (ON DELETE CASCADE).
            cur.execute(
                "DELETE FROM speed_micro_batches WHERE query_id = %s AND batch_id = %s",
                (health.query_id, health.batch_id),
            )
            cur.execute(
                "INSERT INTO speed_micro_batches (query_id, batch_id, events, quarantined,"
                f" newest_event_time, {', '.join(STEP_COLUMNS.values())})"
                " VALUES (%s, %s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s)",
                (
                    health.query_id,
                    health.batch_id,
                    health.events,
                    health.quarantined,
                    health.newest_event_time,
                    *health.step_seconds,
                ),
            )
            if health.partitions:
                execute_values(
                    cur,
                    "INSERT INTO speed_micro_batch_partitions (query_id, batch_id, topic,"
                    " partition, committed_offset, latest_offset) VALUES %s",
                    [
                        (health.query_id, health.batch_id, p.topic, p.partition,
                         p.committed_offset, p.latest_offset)
                        for p in health.partitions
                    ],
                )  # fmt: skip
            if health.quarantined_by_reason:
                execute_values(
                    cur,
                    "INSERT INTO speed_micro_batch_quarantine (query_id, batch_id, reason, records)"
                    " VALUES %s",
                    [
                        (health.query_id, health.batch_id, reason, records)
                        for reason, records in health.quarantined_by_reason
                    ],
                )
    finally:
        conn.close()


def delete_expired(dsn: str, retention_days: float) -> int:
    """Delete the micro-batches that finished more than `retention_days` ago, with their
    partition and quarantine rows; returns how many micro-batches went."""
    conn = postgres.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(HEALTH_STATEMENT_TIMEOUT)
            cur.execute(
                "DELETE FROM speed_micro_batches WHERE finished_at < now() - %s * interval '1 day'",
                (retention_days,),
            )
            return cur.rowcount
    finally:
        conn.close()


class LatestOffsets:
    """The partitions' latest offsets from one kafka-python consumer kept open across batches
    (a new connection per batch would cost more than the question)."""

    def __init__(self, bootstrap_servers: str):
        self.bootstrap_servers = bootstrap_servers
        self._consumer: Any = None

    def of(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """{(topic, partition): latest offset}; raises what kafka-python raises."""
        from kafka import KafkaConsumer, TopicPartition

        if not partitions:
            return {}
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                enable_auto_commit=False,
                bootstrap_timeout_ms=KAFKA_TIMEOUT_MS,
                request_timeout_ms=2 * KAFKA_TIMEOUT_MS,
            )
        try:
            ends = self._consumer.end_offsets(
                [TopicPartition(topic, partition) for topic, partition in partitions],
                timeout_ms=KAFKA_TIMEOUT_MS,
            )
        except Exception:
            # A consumer that failed once may hold a broken connection: the next batch starts anew.
            self.close()
            raise
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close(timeout_ms=KAFKA_TIMEOUT_MS)
            except Exception as error:  # noqa: BLE001 - closing is best effort
                log.debug("closing the health consumer: %s", error)


class HealthWriter:
    """What the streaming job calls after each micro-batch. It never raises: health is worth a
    warning line, never a micro-batch."""

    def __init__(
        self,
        dsn: str,
        bootstrap_servers: str,
        retention_days: float,
        clock=time.monotonic,
    ):
        self.dsn = dsn
        self.retention_days = retention_days
        self.latest_offsets = LatestOffsets(bootstrap_servers)
        self._clock = clock
        self._next_retention: float | None = None

    def record(
        self,
        query_id: str,
        batch_id: int,
        totals: postgres.SpeedBatchTotals,
        step_seconds: Mapping[str, float],
        end_offsets: Sequence[postgres.PartitionOffset],
    ) -> None:
        health = micro_batch_health(
            query_id,
            batch_id,
            totals,
            step_seconds,
            end_offsets,
            self._latest_offsets(batch_id, end_offsets),
        )
        try:
            write_micro_batch(self.dsn, health)
        except Exception as error:  # noqa: BLE001 - health must never fail a micro-batch
            log.warning("batch %d: health row not written (%s)", batch_id, first_line(error))
            return
        self._delete_expired_now_and_then()

    def close(self) -> None:
        self.latest_offsets.close()

    def _latest_offsets(
        self, batch_id: int, end_offsets: Sequence[postgres.PartitionOffset]
    ) -> dict[tuple[str, int], int] | None:
        try:
            return self.latest_offsets.of([(end.topic, end.partition) for end in end_offsets])
        except Exception as error:  # noqa: BLE001 - without Kafka's answer the row goes without lag
            log.warning(
                "batch %d: Kafka did not give the latest offsets (%s); health row written "
                "without its lag",
                batch_id,
                first_line(error) or type(error).__name__,
            )
            return None

    def _delete_expired_now_and_then(self) -> None:
        now = self._clock()
        if self._next_retention is not None and now < self._next_retention:
            return
        self._next_retention = now + RETENTION_INTERVAL_SECONDS
        try:
            deleted = delete_expired(self.dsn, self.retention_days)
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("old health rows not deleted (%s)", first_line(error))
            return
        if deleted:
            log.info(
                "deleted the health rows of %d micro-batches older than %g days",
                deleted,
                self.retention_days,
            )


# ---- the status report -----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.health",
        description=(
            "Pipeline health from the serving database: the streaming job's lag and last"
            " micro-batch, each layer's freshness, the newest published hour and the hours that"
            " failed or wait."
        ),
    )
    job_args.add_database_args(parser)
    parser.add_argument(
        "--days",
        type=positive_float,
        default=7.0,
        help="list the hours that failed or wait from this many days back (default: 7)",
    )
    parser.add_argument(
        "--max-hours",
        type=positive_int,
        default=48,
        help="list at most this many of those hours, the newest (default: 48)",
    )
    return parser.parse_args(argv)


def utc(moment: datetime | None) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def utc_hour(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def duration(span: timedelta) -> str:
    """'4 s', '3 min 2 s', '5 h 12 min', '2 d 3 h': two units are enough to read at a glance."""
    seconds = int(abs(span.total_seconds()))
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if seconds >= size or (name == "s" and not parts):
            parts.append(f"{seconds // size} {name}")
            seconds %= size
        if len(parts) == 2:
            break
    text = " ".join(parts)
    return f"-{text}" if span.total_seconds() < 0 else text


def streaming_lines(cur) -> list[str]:
    """The last micro-batch, when and how long ago, and its lag per partition and in total."""
    cur.execute(
        "SELECT query_id, batch_id, events, quarantined, finished_at, now() - finished_at"
        " FROM speed_micro_batches ORDER BY finished_at DESC, batch_id DESC LIMIT 1"
    )
    newest = cur.fetchone()
    if newest is None:
        return ["streaming: no micro-batch recorded yet", "streaming lag: unknown"]
    query_id, batch_id, events, quarantined, finished_at, ago = newest
    cur.execute(
        "SELECT topic, partition, greatest(latest_offset - committed_offset, 0)"
        " FROM speed_micro_batch_partitions WHERE query_id = %s AND batch_id = %s"
        " ORDER BY topic, partition",
        (query_id, batch_id),
    )
    lags = cur.fetchall()
    batch_line = (
        f"streaming: last micro-batch {batch_id} at {utc(finished_at)} ({duration(ago)} ago):"
        f" {events:,} events, {quarantined:,} quarantined"
    )
    if not lags:
        return [batch_line, f"streaming lag: unknown (Kafka did not answer after batch {batch_id})"]
    per_partition = ", ".join(
        f"{topic}-{partition} {behind:,}" for topic, partition, behind in lags
    )
    total = sum(behind for _, _, behind in lags)
    return [batch_line, f"streaming lag: {total:,} records behind Kafka ({per_partition})"]


def freshness_line(cur) -> str:
    cur.execute(
        "SELECT layer, newest_event_time, behind FROM layer_freshness"
        " ORDER BY layer = 'speed' DESC, layer"
    )
    layers = [
        f"{layer} layer serves nothing yet"
        if newest is None
        else f"{layer} layer up to {utc(newest)} ({duration(behind)} behind)"
        for layer, newest, behind in cur.fetchall()
    ]
    return "freshness: " + "; ".join(layers)


def published_line(cur) -> str:
    cur.execute(
        "SELECT date, state, published_from_batch, published_at, published_forced"
        " FROM batch_hour_states WHERE published_at IS NOT NULL ORDER BY date DESC LIMIT 1"
    )
    row = cur.fetchone()
    if row is None:
        return "newest published hour: none"
    hour, state, from_batch, published_at, forced = row
    notes = ", forced incomplete" if forced else ""
    notes += ", republication pending" if state == "republication pending" else ""
    return (
        f"newest published hour: {utc_hour(hour)} (from micro-batch {from_batch},"
        f" at {utc(published_at)}{notes})"
    )


def attention_lines(cur, days: float, max_hours: int) -> list[str]:
    """Every recent hour that failed, waits for completeness or waits for its republication."""
    cur.execute(
        "SELECT date, state, failed_checks, failed_at, published_from_batch, newest_speed_batch"
        " FROM batch_hour_states WHERE state = ANY(%s)"
        " AND date >= now() - %s * interval '1 day' ORDER BY date DESC LIMIT %s",
        (list(ATTENTION_STATES), days, max_hours),
    )
    rows = cur.fetchall()
    header = f"hours failed or waiting (last {days:g} days):"
    if not rows:
        return [f"{header} none"]
    lines = [f"{header} {len(rows)}{'+' if len(rows) == max_hours else ''}"]
    for hour, state, failed_checks, failed_at, from_batch, speed_batch in sorted(rows):
        if state == "failed":
            detail = f"failed: {failed_checks} (at {utc(failed_at)})"
        elif state == "republication pending":
            detail = (
                f"republication pending (published from micro-batch {from_batch}, late data up to"
                f" micro-batch {speed_batch})"
            )
        else:
            detail = state
        lines.append(f"  {utc_hour(hour)} {detail}")
    return lines


def status_lines(dsn: str, days: float = 7.0, max_hours: int = 48) -> list[str]:
    """The report of `make status`, from the serving database at `dsn`."""
    try:
        conn = postgres.connect(dsn)
    except (postgres.DatabaseUnavailable, postgres.InvalidDsn) as error:
        raise CommandError(str(error)) from error
    try:
        with conn, conn.cursor() as cur:
            missing = _missing_relations(cur)
            if missing:
                raise CommandError(
                    f"the database has no {', '.join(missing)}: it is not migrated; apply the"
                    " migrations with `make up` (or `python -m migrations --dsn ...`)"
                )
            return [
                *streaming_lines(cur),
                freshness_line(cur),
                published_line(cur),
                *attention_lines(cur, days, max_hours),
            ]
    except psycopg2.Error as error:
        raise CommandError(
            f"PostgreSQL did not answer the status queries ({first_line(error)})"
        ) from error
    finally:
        conn.close()


def _missing_relations(cur) -> list[str]:
    missing = []
    for name in STATUS_RELATIONS:
        cur.execute("SELECT to_regclass(%s)", (name,))
        if cur.fetchone()[0] is None:
            missing.append(name)
    return missing


def print_status(args: argparse.Namespace) -> None:
    try:
        dsn = secret_manager.resolve_pg_dsn(args.pg_dsn, args.pg_dsn_secret)
    except Exception as error:  # a bad name, no credentials, no access: one line each
        raise CommandError(f"cannot read --pg-dsn-secret ({first_line(error)})") from error
    print("\n".join(status_lines(dsn, args.days, args.max_hours)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status(lambda: print_status(args))


if __name__ == "__main__":
    sys.exit(main())
