"""Benchmark of the batch layer: seconds per million events to recompute one UTC hour.

N events of one hour are written straight to raw Parquet in the streaming job's layout
(`raw/event_hour=H/batch_id=N/`, one file per micro-batch: 1,800 by default, an hour of the
streaming job's default 2-second trigger), plus one micro-batch that the streaming checkpoint has
not committed yet, which every reader must skip. Then, against a scratch database:

1. after start-up, hour not compacted: the job in-process (`spark_jobs.batch.run_with_session`)
   on one Spark session built beforehand, reading every micro-batch file (what it meets when the
   streaming job has not compacted the hour yet); a warm-up run apart, then the median of runs;
2. the streaming job's compaction of the closed hour (`raw_hours.compact_hour`), timed once,
   leaving the last micro-batches (late events) after it, as in a running stream;
3. after start-up, hour compacted: as 1, on the compacted hour: what `batch_hourly` normally
   meets, as the streaming job compacts an hour 5 minutes after it ends and the DAG waits 10;
4. with start-up: `python -m spark_jobs.batch` as a subprocess on the compacted hour, wall time
   (JVM, Spark session, job, PostgreSQL), median of runs;
5. reference: DuckDB computes the same four aggregates and input totals from the micro-batch
   files (median of runs), and must agree exactly with what every Spark run wrote to PostgreSQL
   and with the generator's own totals: the benchmark doubles as a cross-check.

    python -m bench.batch [--events 1000000] [--runs 3]

Figures go to bench/results/batch.json. Needs `make up`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq

from bench import harness
from common.settings import TOPIC_PARTITIONS
from devtools.scratch_db import scratch_database
from simulator import APPS, antenna_id, device_id, unknown_device_id
from spark_jobs import batch as batch_job
from spark_jobs import postgres
from spark_jobs.raw_hours import compact_hour
from spark_jobs.session import build_session
from spark_jobs.storage import EVENT_HOUR_FORMAT, StorageLayout

TABLES = postgres.HOURLY_TABLES

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "batch.json"
# The goals: after start-up, a compacted hour at most 1 s per million events and 1.5x
# DuckDB on the same files in the same run (the ratio is what holds across machines and days),
# an hour not yet compacted at most 3 s per million.
GOAL_COMPACTED_SECONDS_PER_MILLION = 1.0
GOAL_RATIO_TO_DUCKDB = 1.5
GOAL_NOT_COMPACTED_SECONDS_PER_MILLION = 3.0

KNOWN_USERS = 20
# Users 1..18 report all hour long (far over their quota); 19 and 20 only a few small events, so
# the hour also has users under quota.
RARE_USERS = (19, 20)
RARE_EVENTS_PER_USER = 3
UNKNOWN_DEVICES = 50
UNKNOWN_SHARE = 0.1
ANTENNAS = 5
KAFKA_PARTITIONS = TOPIC_PARTITIONS
MAX_BYTES = 10_000  # the simulator's range: uniform in [0, 10000)
FIRST_BATCH_ID = 1000  # a streaming query that has been running for a while

RAW_SCHEMA = pa.schema(
    [
        ("bytes", pa.int64()),
        ("timestamp", pa.int64()),
        ("app", pa.string()),
        ("id", pa.string()),
        ("antenna_id", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="committed events of the hour"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each mode (the median is reported)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=1_800,
        help="committed micro-batches (one Parquet file each) the hour is spread over",
    )
    parser.add_argument(
        "--late-batches",
        type=int,
        default=2,
        help="committed micro-batches after the compaction (late events)",
    )
    parser.add_argument(
        "--uncommitted-events",
        type=int,
        default=1_000,
        help="events of one more micro-batch, not yet committed: must be skipped",
    )
    parser.add_argument(
        "--hour",
        type=batch_job.parse_hour,
        default=batch_job.parse_hour("2026-11-27T10:00:00Z"),
        help="the UTC hour",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated events")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if (
        args.events < 1_000
        or args.batches < 1
        or args.runs < 1
        or args.uncommitted_events < 0
        or not 0 <= args.late_batches < args.batches
    ):
        parser.error(
            "need --events >= 1000, --batches >= 1, --runs >= 1, --uncommitted-events >= 0, 0 <= "
            "--late-batches < --batches"
        )
    return args


# ---- input ------------------------------------------------------------------------------------


# The generated hour never went through Kafka: its topic is not on the broker, so the job is told
# to publish without the completeness check (it still asks the broker, and logs that it could not).
BENCH_TOPIC = "bench-devices"
NO_STREAM = ("--allow-incomplete",)


@dataclass(frozen=True)
class GeneratedHour:
    events: int
    files: int
    last_committed_batch: int
    valid_bytes: int
    unknown_device_bytes: int
    uncommitted_events: int
    bytes_on_disk: int
    seconds: float


def _strings(indices: np.ndarray, vocabulary: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices, pa.int32()), pa.array(vocabulary, pa.string())
    ).dictionary_decode()


def _events(rng: np.random.Generator, count: int, hour_start: int) -> tuple[pa.Table, int, int]:
    """`count` events of the hour in event-time order, their bytes, and the bytes of unknown
    devices."""
    frequent = [device_id(n) for n in range(1, KNOWN_USERS + 1) if n not in RARE_USERS]
    unknown = [unknown_device_id(n) for n in range(1, UNKNOWN_DEVICES + 1)]
    rare = [device_id(n) for n in RARE_USERS]
    ids = frequent + unknown + rare
    weights = np.array(
        [(1 - UNKNOWN_SHARE) / len(frequent)] * len(frequent)
        + [UNKNOWN_SHARE / len(unknown)] * len(unknown)
    )
    id_index = rng.choice(len(frequent) + len(unknown), size=count, p=weights / weights.sum())
    byte_counts = rng.integers(0, MAX_BYTES, size=count, dtype=np.int64)
    rare_rows = rng.choice(count, size=len(rare) * RARE_EVENTS_PER_USER, replace=False)
    id_index[rare_rows] = (
        len(frequent) + len(unknown) + np.repeat(np.arange(len(rare)), RARE_EVENTS_PER_USER)
    )
    partitions = rng.integers(0, KAFKA_PARTITIONS, size=count, dtype=np.int32)
    offsets = np.zeros(count, dtype=np.int64)
    for partition in range(KAFKA_PARTITIONS):
        rows = partitions == partition
        offsets[rows] = np.arange(rows.sum())
    unknown_rows = (id_index >= len(frequent)) & (id_index < len(frequent) + len(unknown))
    table = pa.table(
        [
            pa.array(byte_counts),
            pa.array(hour_start + np.sort(rng.integers(0, 3600, size=count, dtype=np.int64))),
            _strings(rng.integers(0, len(APPS), size=count), list(APPS)),
            _strings(id_index, ids),
            _strings(
                rng.integers(0, ANTENNAS, size=count), [antenna_id(i) for i in range(ANTENNAS)]
            ),
            pa.array(partitions),
            pa.array(offsets),
        ],
        schema=RAW_SCHEMA,
    )
    return table, int(byte_counts.sum()), int(byte_counts[unknown_rows].sum())


def _write_batch(rng: np.random.Generator, hour_folder: Path, batch_id: int, rows: pa.Table) -> int:
    """One micro-batch's file, named as Spark names the single task's output."""
    folder = hour_folder / f"batch_id={batch_id}"
    folder.mkdir(parents=True)
    path = folder / f"part-00000-{uuid.UUID(bytes=rng.bytes(16))}.c000.snappy.parquet"
    pq.write_table(rows, path, compression="snappy")
    return path.stat().st_size


def generate_hour(
    storage: str, hour: datetime, events: int, batches: int, uncommitted_events: int, seed: int
) -> GeneratedHour:
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    layout = StorageLayout(storage)
    hour_folder = Path(layout.raw_hour(hour.strftime(EVENT_HOUR_FORMAT)))
    hour_start = int(hour.timestamp())
    table, valid_bytes, unknown_bytes = _events(rng, events, hour_start)
    # Micro-batch k holds the k-th slice of event time, as a stream read in order would.
    bounds = [events * k // batches for k in range(batches + 1)]
    on_disk = sum(
        _write_batch(
            rng, hour_folder, FIRST_BATCH_ID + k, table.slice(bounds[k], bounds[k + 1] - bounds[k])
        )
        for k in range(batches)
    )
    last_committed = FIRST_BATCH_ID + batches - 1
    files = batches
    if uncommitted_events:
        # Being written (or replayed) right now: in the hour's folder, not in the commit log.
        pending, _, _ = _events(rng, uncommitted_events, hour_start)
        on_disk += _write_batch(rng, hour_folder, last_committed + 1, pending)
        files += 1
    commits = Path(layout.streaming_checkpoint) / "commits"
    commits.mkdir(parents=True)
    (commits / str(last_committed)).write_text('v1\n{"nextBatchWatermarkMs":0}')
    # Where the committed batches end in Kafka, as Spark's offset log says it: the completeness
    # check reads it (the topic is not in Kafka: see speed_layer_count).
    offsets = Path(layout.streaming_checkpoint) / "offsets"
    offsets.mkdir(parents=True)
    (offsets / str(last_committed)).write_text(
        f'v1\n{{"batchWatermarkMs":0}}\n{{"{BENCH_TOPIC}":{{"0":{events}}}}}'
    )
    return GeneratedHour(
        events=events,
        files=files,
        last_committed_batch=last_committed,
        valid_bytes=valid_bytes,
        unknown_device_bytes=unknown_bytes,
        uncommitted_events=uncommitted_events,
        bytes_on_disk=on_disk,
        seconds=time.monotonic() - started,
    )


def speed_layer_count(dsn: str, hour: datetime, generated: GeneratedHour) -> None:
    """What the speed layer would have counted of the hour, which the quality gate reconciles the
    raw files against: the generator's own totals, in the last committed micro-batch."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO speed_hour_batches (date, batch_id, events, bytes) "
            "VALUES (%s, %s, %s, %s)",
            (hour, generated.last_committed_batch, generated.events, generated.valid_bytes),
        )
    conn.close()


# ---- the hour's figures, compared -------------------------------------------------------------


@dataclass(frozen=True)
class HourFigures:
    """What the batch layer must produce for an hour, in a form every source can be put in: the
    rows of each *_1h table (by table name, sorted) and the hour's totals."""

    rows: dict[str, list[tuple]]
    valid_events: int
    valid_bytes: int
    unknown_device_bytes: int
    last_streaming_batch: int

    @classmethod
    def of(
        cls, rows: dict[str, list[tuple]], totals: tuple, last_streaming_batch: int
    ) -> HourFigures:
        events, total, unknown = (int(value) for value in totals)
        return cls(
            rows={table.name: sorted(tuple(r) for r in rows[table.name]) for table in TABLES},
            valid_events=events,
            valid_bytes=total,
            unknown_device_bytes=unknown,
            last_streaming_batch=last_streaming_batch,
        )

    @classmethod
    def of_result(cls, result: postgres.HourResult, last_streaming_batch: int) -> HourFigures:
        return cls.of(
            {table.name: table.rows_of(result) for table in TABLES},
            (result.valid_events, result.valid_bytes, result.unknown_device_bytes),
            last_streaming_batch,
        )

    def differences(self, other: HourFigures) -> list[str]:
        found = [
            f"{name}: {self.rows[name]!r} != {other.rows[name]!r}"
            for name in self.rows
            if self.rows[name] != other.rows.get(name)
        ]
        return found + [
            f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
            for name in (
                "valid_events",
                "valid_bytes",
                "unknown_device_bytes",
                "last_streaming_batch",
            )
            if getattr(self, name) != getattr(other, name)
        ]


def figures_in_postgres(dsn: str, hour: datetime) -> HourFigures:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        rows = {}
        for table in postgres.HOURLY_TABLES:
            cur.execute(
                f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE date = %s", (hour,)
            )
            rows[table.name] = cur.fetchall()
        cur.execute(
            "SELECT valid_events, valid_bytes, unknown_device_bytes, last_streaming_batch "
            "FROM batch_hour_runs WHERE date = %s",
            (hour,),
        )
        run = cur.fetchone()
    conn.close()
    if run is None:
        raise SystemExit(
            f"error: the batch job wrote no batch_hour_runs row for {hour:%Y-%m-%dT%H:%M:%SZ}"
        )
    return HourFigures.of(rows, run[:3], int(run[3]))


def check_equal(what: str, expected: HourFigures, actual: HourFigures) -> None:
    differences = expected.differences(actual)
    if differences:
        raise SystemExit(
            f"error: {what} differs from DuckDB's reference:\n  " + "\n  ".join(differences)
        )


def check_generated(reference: HourFigures, generated: GeneratedHour) -> None:
    expected = (
        generated.events,
        generated.valid_bytes,
        generated.unknown_device_bytes,
        generated.last_committed_batch,
    )
    actual = (
        reference.valid_events,
        reference.valid_bytes,
        reference.unknown_device_bytes,
        reference.last_streaming_batch,
    )
    if expected != actual:
        raise SystemExit(
            f"error: DuckDB's totals {actual} differ from the generated hour's {expected}"
        )


# ---- the three modes --------------------------------------------------------------------------


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_hour(dsn: str, storage: str, hour: datetime, last_committed: int) -> HourFigures:
    """The hour as the batch layer defines it, in DuckDB: committed micro-batches of the hour's
    folder, events in [hour, hour + 1h), devices joined to user_metadata for users and quotas."""
    users = postgres.fetch_users(dsn)
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = '2GB'")
        con.register(
            "users",
            pa.table(
                {
                    "id": [u[0] for u in users],
                    "email": [u[1] for u in users],
                    "quota": pa.array([u[2] for u in users], pa.int64()),
                }
            ),
        )
        files = (
            StorageLayout(storage).raw_hour(hour.strftime(EVENT_HOUR_FORMAT))
            + "/batch_id=*/*.parquet"
        )
        start = int(hour.timestamp())
        con.execute(
            "CREATE TEMP TABLE events AS SELECT bytes, app, id, antenna_id "
            f"FROM read_parquet({_sql_text(files)}, hive_partitioning = true, "
            "hive_types = {'batch_id': BIGINT}) "
            f"WHERE batch_id <= {int(last_committed)} "
            f"AND timestamp >= {start} AND timestamp < {start + 3600}"
        )
        user_totals = (
            "SELECT u.email, u.quota, sum(e.bytes)::BIGINT AS total "
            "FROM events e JOIN users u USING (id) GROUP BY ALL"
        )
        # The reference, computed apart from the batch job: per table it writes.
        rows = {
            "bytes_agg_antenna_1h": con.execute(
                "SELECT antenna_id, sum(bytes)::BIGINT FROM events GROUP BY ALL"
            ).fetchall(),
            "bytes_agg_app_1h": con.execute(
                "SELECT app, sum(bytes)::BIGINT FROM events GROUP BY ALL"
            ).fetchall(),
            "bytes_agg_user_1h": con.execute(
                f"SELECT email, total FROM ({user_totals})"
            ).fetchall(),
            "users_over_quota_1h": con.execute(
                f"SELECT email, quota, total FROM ({user_totals}) WHERE total > quota"
            ).fetchall(),
        }

        totals = con.execute(
            "SELECT count(*), coalesce(sum(e.bytes), 0)::BIGINT, "
            "coalesce(sum(e.bytes) FILTER (WHERE u.id IS NULL), 0)::BIGINT "
            "FROM events e LEFT JOIN users u USING (id)"
        ).fetchone()
        assert totals is not None  # an aggregate without GROUP BY always returns one row
    finally:
        con.close()
    return HourFigures.of(rows, totals, last_committed)


def timed(action: Callable[[], T]) -> tuple[float, T]:
    started = time.monotonic()
    value = action()
    return time.monotonic() - started, value


def per_million(seconds: float, events: int) -> float:
    return round(seconds / (events / 1_000_000), 3)


def summary(seconds: list[float], events: int) -> dict:
    median = statistics.median(seconds)
    return {
        "runs_seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(median, 3),
        "median_seconds_per_million_events": per_million(median, events),
    }


def with_startup(args: argparse.Namespace, dsn: str, storage: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "spark_jobs.batch",
        "--hour",
        args.hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--pg-dsn",
        dsn,
        "--storage-root",
        storage,
        *NO_STREAM,
    ]
    seconds = []
    for _ in range(args.runs):
        elapsed, done = timed(
            lambda: subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        )
        if done.returncode != 0:
            raise SystemExit(
                "error: python -m spark_jobs.batch failed "
                f"({done.returncode}):\n{done.stderr[-4000:]}"
            )
        seconds.append(elapsed)
    return {
        "command": (
            "python -m spark_jobs.batch --hour H --pg-dsn DSN --storage-root ROOT "
            "--allow-incomplete"
        ),
        **summary(seconds, args.events),
    }


def in_process_runs(
    spark, args: argparse.Namespace, dsn: str, storage: str, reference: HourFigures
) -> dict:
    """The job on an existing session: a warm-up run apart, then the median of runs, each
    result checked against DuckDB's."""
    job_args = batch_job.parse_args(
        [
            "--hour",
            args.hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--pg-dsn",
            dsn,
            "--storage-root",
            storage,
            *NO_STREAM,
        ]
    )
    seconds = []
    for _ in range(1 + args.runs):
        elapsed, result = timed(lambda: batch_job.run_with_session(spark, job_args))
        if result is None:
            raise SystemExit("error: the batch job found no committed events for the hour")
        check_equal(
            "the batch job's result",
            reference,
            HourFigures.of_result(result, reference.last_streaming_batch),
        )
        seconds.append(elapsed)
    check_equal(
        "PostgreSQL after the in-process runs", reference, figures_in_postgres(dsn, args.hour)
    )
    warm_up, measured = seconds[0], seconds[1:]
    return {
        "warmup_seconds": round(warm_up, 3),
        **summary(measured, args.events),
    }


def compact(spark, args: argparse.Namespace, storage: str, generated: GeneratedHour) -> dict:
    """The streaming job's compaction of the closed hour, through all but the late batches."""
    through = generated.last_committed_batch - args.late_batches
    elapsed, wrote = timed(
        lambda: compact_hour(
            spark, StorageLayout(storage), args.hour.strftime(EVENT_HOUR_FORMAT), through
        )
    )
    if not wrote:
        raise SystemExit("error: the compaction wrote nothing")
    return {
        "through_batch": through,
        "late_batches_after_it": args.late_batches,
        "seconds": round(elapsed, 3),
        "seconds_per_million_events": per_million(elapsed, args.events),
    }


def duckdb_reference(
    args: argparse.Namespace, dsn: str, storage: str, last_committed: int
) -> tuple[dict, HourFigures]:
    seconds: list[float] = []
    figures: HourFigures | None = None
    for _ in range(args.runs):
        elapsed, current = timed(lambda: duckdb_hour(dsn, storage, args.hour, last_committed))
        if figures is not None and current != figures:
            raise SystemExit("error: two DuckDB runs over the same files disagree")
        seconds.append(elapsed)
        figures = current
    assert figures is not None  # parse_args requires --runs >= 1
    return {
        "duckdb": duckdb.__version__,
        "what": (
            "fetch users, read the hour's committed Parquet once into a temp table, four "
            "aggregates and input totals; no write"
        ),
        **summary(seconds, args.events),
    }, figures


# ---- main -------------------------------------------------------------------------------------


def machine() -> dict:
    import pyspark

    return harness.machine(
        pyspark=pyspark.__version__, pyarrow=pa.__version__, duckdb=duckdb.__version__
    )


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    hour_text = args.hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    with (
        scratch_database("bench") as dsn,
        tempfile.TemporaryDirectory(prefix="bench-batch-storage-") as storage,
    ):
        generated = generate_hour(
            storage, args.hour, args.events, args.batches, args.uncommitted_events, args.seed
        )
        speed_layer_count(dsn, args.hour, generated)
        print(
            f"generated {generated.events} events of {hour_text} in {generated.files} files "
            f"({generated.seconds:.1f} s)",
            flush=True,
        )

        reference_figures, reference = duckdb_reference(
            args, dsn, storage, generated.last_committed_batch
        )
        check_generated(reference, generated)
        print(f"duckdb: median {reference_figures['median_seconds']} s", flush=True)

        startup, spark = timed(
            lambda: build_session("bench-batch-layer", "local[*]", {"spark.ui.enabled": "false"})
        )
        try:
            uncompacted = in_process_runs(spark, args, dsn, storage, reference)
            print(
                f"spark, after start-up, not compacted: median {uncompacted['median_seconds']} s",
                flush=True,
            )
            compaction = compact(spark, args, storage, generated)
            print(f"compaction: {compaction['seconds']} s", flush=True)
            compacted = in_process_runs(spark, args, dsn, storage, reference)
            print(
                f"spark, after start-up, compacted: median {compacted['median_seconds']} s",
                flush=True,
            )
        finally:
            spark.stop()

        startup_figures = with_startup(args, dsn, storage)
        check_equal(
            "PostgreSQL after `python -m spark_jobs.batch`",
            reference,
            figures_in_postgres(dsn, args.hour),
        )
        print(
            f"spark, with start-up, compacted: median {startup_figures['median_seconds']} s",
            flush=True,
        )

    results = {
        "measured_at": measured_at,
        "machine": machine(),
        "input": {
            "hour": hour_text,
            "events": generated.events,
            "files": generated.files,
            "committed_micro_batches": args.batches,
            "late_micro_batches_after_compaction": args.late_batches,
            "uncommitted_events_skipped": generated.uncommitted_events,
            "parquet_bytes": generated.bytes_on_disk,
            "seed": args.seed,
            "generation_seconds": round(generated.seconds, 2),
        },
        "events": generated.events,
        "files": generated.files,
        "runs": args.runs,
        "goal": batch_goals(compacted, uncompacted, reference_figures),
        "spark_session_startup_seconds": round(startup, 3),
        "spark_after_startup_compacted": compacted,
        "spark_after_startup_not_compacted": uncompacted,
        "compaction_by_the_streaming_job": compaction,
        "spark_with_startup_compacted": startup_figures,
        "duckdb_reference": reference_figures,
        "cross_check": {
            "equal": True,
            "compared": (
                "DuckDB vs PostgreSQL's *_1h tables and batch_hour_runs (after each mode) vs the "
                "generator's totals"
            ),
            "valid_events": reference.valid_events,
            "valid_bytes": reference.valid_bytes,
            "unknown_device_bytes": reference.unknown_device_bytes,
            "antennas": len(reference.rows["bytes_agg_antenna_1h"]),
            "apps": len(reference.rows["bytes_agg_app_1h"]),
            "users": len(reference.rows["bytes_agg_user_1h"]),
            "users_over_quota": len(reference.rows["users_over_quota_1h"]),
            "last_streaming_batch": reference.last_streaming_batch,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def batch_goals(compacted: dict, uncompacted: dict, duckdb: dict) -> dict:
    """Each goal with the figure it is met by, from the medians of one run."""
    after = compacted["median_seconds_per_million_events"]
    not_compacted = uncompacted["median_seconds_per_million_events"]
    ratio = round(compacted["median_seconds"] / duckdb["median_seconds"], 3)
    return {
        "what": "the batch job after Spark start-up; compacted is what batch_hourly meets",
        "compacted_seconds_per_million_events_at_most": GOAL_COMPACTED_SECONDS_PER_MILLION,
        "compacted_seconds_per_million_events": after,
        "compacted_ratio_to_duckdb_at_most": GOAL_RATIO_TO_DUCKDB,
        "compacted_ratio_to_duckdb": ratio,
        "not_compacted_seconds_per_million_events_at_most": GOAL_NOT_COMPACTED_SECONDS_PER_MILLION,
        "not_compacted_seconds_per_million_events": not_compacted,
        "met": after <= GOAL_COMPACTED_SECONDS_PER_MILLION
        and ratio <= GOAL_RATIO_TO_DUCKDB
        and not_compacted <= GOAL_NOT_COMPACTED_SECONDS_PER_MILLION,
    }


if __name__ == "__main__":
    main()
