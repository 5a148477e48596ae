"""Benchmark of the speed layer, every sink on (raw Parquet, quarantine, PostgreSQL upserts).

1. Throughput: N simulated events are loaded into a fresh topic, then the streaming job drains
   them with `availableNow` from a new checkpoint into a fresh database, several times; the
   figure is events per second of drain time (Spark start-up reported apart), median of runs.
   Beside each run, in the same Spark session, a no-op reference drains the same topic: the same
   Kafka source, options and record classification (`classify_records`: parsing and
   validation), counting the records per outcome and writing nothing. The ratio of the two says
   how much of the drain the sinks cost on this machine, whatever the machine's speed that day.
   `--master local[1]` / `local[2]` give the events per second per core of the capacity model.
2. Latency: the job runs continuously while a producer sends a steady 10,000 events/s. Events
   are sent in 100 ms groups, each group on an antenna id of its own, and a poller records when
   each group's total becomes complete in PostgreSQL: that minus the send time of the group's
   last event is one event-to-PostgreSQL latency sample.

    python -m bench.streaming [--events 500000] [--runs 3] [--latency-seconds 60]
                              [--latency-runs 3] [--master local[2]]
                              [--no-latency | --no-throughput]

Figures go to bench/results/streaming.json. Needs `make up`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
from kafka import KafkaProducer

from bench.harness import machine, scratch_topic, streaming_command, streaming_options
from common import settings
from devtools.scratch_db import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "streaming.json"
GROUP_SECONDS = 0.1


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.streaming", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--events", type=int, default=500_000, help="events drained per throughput run"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="throughput runs (the median is reported)"
    )
    parser.add_argument(
        "--latency-rate", type=int, default=10_000, help="events per second in the latency test"
    )
    parser.add_argument(
        "--latency-seconds", type=int, default=60, help="length of the latency test"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=int,
        default=30,
        help="steady load before the latency test, not measured (JIT, caches)",
    )
    parser.add_argument(
        "--trigger-seconds",
        type=float,
        default=0.5,
        help="micro-batch interval in the latency test (default 0.5: the job's own default, 2 s, "
        "trades latency for fewer raw files per hour)",
    )
    parser.add_argument(
        "--master",
        default="local[*]",
        help="Spark master of the throughput runs (local[N]: N cores)",
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=3,
        help="runs of the latency test, each with a new job (the median p95 is the figure)",
    )
    measured = parser.add_mutually_exclusive_group()
    measured.add_argument("--no-latency", action="store_true", help="measure the throughput only")
    measured.add_argument("--no-throughput", action="store_true", help="measure the latency only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.latency_runs < 1:
        parser.error("need --latency-runs >= 1")
    return args


def load_events(topic: str, count: int) -> dict:
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "--topic",
            topic,
            "--events",
            str(count),
            "--rate",
            "0",
            "--seed",
            "1",
            "--start",
            "2026-11-27T00:00:00Z",
            "--tick-seconds",
            "1",
            # Generating and counting records is Python under the GIL: one worker process per
            # core keeps the load from being the slow part (simulator/parallel.py).
            "--workers",
            str(os.cpu_count() or 1),
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        check=True,
    )
    elapsed = time.monotonic() - started
    return {
        "events": count,
        "seconds": round(elapsed, 2),
        "events_per_second": round(count / elapsed),
    }


def streaming_args(topic: str, dsn: str, storage: str, *extra: str):
    from spark_jobs.streaming import parse_args as streaming_parse_args

    return streaming_parse_args(streaming_options(topic, dsn, storage, *extra))


def drain_once(spark, topic: str, expected_events: int) -> dict:
    from spark_jobs.storage import StorageLayout
    from spark_jobs.streaming import outage_policy, speed_layer_batch, start_query

    with (
        scratch_database("bench") as dsn,
        tempfile.TemporaryDirectory(prefix="bench-storage-") as storage,
    ):
        args = streaming_args(topic, dsn, storage, "--available-now")
        batch = speed_layer_batch(spark, args, StorageLayout(storage), outage_policy(args))
        started = time.monotonic()
        query = start_query(spark, args, batch)
        query.awaitTermination()
        elapsed = time.monotonic() - started
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT sum(valid_events), sum(last_batch_id + 1) FROM speed_layer_progress"
            )
            row = cur.fetchone()
            assert row is not None  # an aggregate without GROUP BY always returns one row
            events, batches = (int(value) for value in row)
        conn.close()
    if events != expected_events:
        raise SystemExit(f"error: drained {events} events, expected {expected_events}")
    return {
        "seconds": round(elapsed, 2),
        "events_per_second": round(events / elapsed),
        "micro_batches": int(batches),
    }


class CountingBatch:
    """The no-op reference's micro-batch: counts the classified records per outcome (valid, or
    the quarantine reason), so that parsing and validation run in full, and writes nothing."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint
        self.records_by_outcome: dict[str, int] = {}

    def new_run(self) -> None:
        pass

    def set_query_id(self, query_id: str) -> None:
        pass

    def __call__(self, classified_records, batch_id: int) -> None:
        for row in classified_records.groupBy("reason").count().collect():
            outcome = row["reason"] or "valid"
            self.records_by_outcome[outcome] = self.records_by_outcome.get(outcome, 0) + row[1]


def noop_drain_once(spark, topic: str, expected_records: int) -> dict:
    from spark_jobs.streaming import start_query

    with tempfile.TemporaryDirectory(prefix="bench-noop-") as checkpoint:
        args = streaming_args(topic, "", checkpoint, "--available-now")
        batch = CountingBatch(f"{checkpoint}/checkpoint")
        started = time.monotonic()
        start_query(spark, args, batch).awaitTermination()  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
    records = sum(batch.records_by_outcome.values())
    if records != expected_records:
        raise SystemExit(
            f"error: the no-op query counted {records} records, expected {expected_records}"
        )
    return {"seconds": round(elapsed, 2), "events_per_second": round(records / elapsed)}


def throughput(args: argparse.Namespace) -> dict:
    from spark_jobs.session import build_session

    with scratch_topic("bench-throughput") as topic:
        load = load_events(topic, args.events)
        started = time.monotonic()
        spark = build_session("bench-speed-layer", args.master, {"spark.ui.enabled": "false"})
        startup = time.monotonic() - started
        # One untimed drain first, so that neither side pays for the cold JVM alone.
        noop_drain_once(spark, topic, args.events)
        runs, references = [], []
        for _ in range(args.runs):  # alternated, so that both see the same machine
            runs.append(drain_once(spark, topic, args.events))
            references.append(noop_drain_once(spark, topic, args.events))
        spark.stop()
    rates = [r["events_per_second"] for r in runs]
    reference_rates = [r["events_per_second"] for r in references]
    return {
        "master": args.master,
        "events_per_run": args.events,
        "producer_load": load,
        "spark_startup_seconds": round(startup, 2),
        "runs": runs,
        "median_events_per_second": round(statistics.median(rates)),
        "noop_reference_runs": references,
        "noop_reference_median_events_per_second": round(statistics.median(reference_rates)),
        "ratio_to_noop_reference": round(
            statistics.median(run / ref for run, ref in zip(rates, reference_rates, strict=True)),
            3,
        ),
        "goal_events_per_second": 60_000,
        "goal_ratio_to_noop_reference": 0.7,
    }


class SteadyProducer(threading.Thread):
    """Sends `rate` events/s in 100 ms groups; group g goes to antenna `<prefix>g`. The first
    `warmup_seconds` use another prefix: sent, processed, but not measured. Each measured group
    also goes to the `sent` queue as (antenna, group), for a poller that keeps only the groups
    it has not seen yet (the soak benchmark, whose hour of groups would slow a full scan)."""

    def __init__(self, topic: str, rate: int, seconds: int, prefix: str, warmup_seconds: int = 0):
        super().__init__(daemon=True)
        self.topic, self.rate, self.seconds, self.prefix = topic, rate, seconds, prefix
        self.warmup_groups = int(warmup_seconds / GROUP_SECONDS)
        self.groups: dict[str, dict] = {}
        self.sent: queue.SimpleQueue[tuple[str, dict]] = queue.SimpleQueue()
        self.events_sent = 0

    def run(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers(), acks="all", linger_ms=5
        )
        per_group = int(self.rate * GROUP_SECONDS)
        start = time.monotonic()
        for group in range(self.warmup_groups + int(self.seconds / GROUP_SECONDS)):
            due = start + group * GROUP_SECONDS
            time.sleep(max(0.0, due - time.monotonic()))
            measured = group >= self.warmup_groups
            antenna = f"{self.prefix if measured else 'warm-up-'}{group}"
            now = int(time.time())
            for i in range(per_group):
                value = (
                    b'{"bytes":%d,"timestamp":%d,"app":"SKYPE","id":"00000000-0000-0000-0000-0000000000%02d","antenna_id":"%s"}'
                    % (i, now, i % 20 + 1, antenna.encode())
                )
                producer.send(self.topic, value)
            producer.flush()
            self.events_sent += per_group
            if measured:
                sent = {"sent_at": time.time(), "bytes": per_group * (per_group - 1) // 2}
                self.groups[antenna] = sent
                self.sent.put((antenna, sent))
        producer.close()


def poll_visibility(dsn: str, producer: SteadyProducer, deadline: float) -> list[float]:
    latencies: dict[str, float] = {}
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    while time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT antenna_id, sum(sum_antenna_bytes) FROM bytes_agg_antenna WHERE "
                "antenna_id LIKE %s GROUP BY 1",
                (producer.prefix + "%",),
            )
            seen_at = time.time()
            for antenna, total in cur.fetchall():
                group = producer.groups.get(antenna)
                if group and antenna not in latencies and total == group["bytes"]:
                    latencies[antenna] = seen_at - group["sent_at"]
        if not producer.is_alive() and len(latencies) == len(producer.groups):
            break
        time.sleep(0.05)
    conn.close()
    if len(latencies) < len(producer.groups):
        raise SystemExit(
            f"error: only {len(latencies)} of {len(producer.groups)} groups became visible in "
            "PostgreSQL"
        )
    return list(latencies.values())


def latency(args: argparse.Namespace) -> dict:
    with (
        scratch_topic("bench-latency") as topic,
        scratch_database("bench") as dsn,
        tempfile.TemporaryDirectory(prefix="bench-storage-") as storage,
    ):
        send_warm_up_event(topic)
        job = subprocess.Popen(
            streaming_command(
                topic,
                dsn,
                storage,
                "--trigger-seconds",
                str(args.trigger_seconds),
                "--starting-offsets",
                "earliest",
            ),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_running(dsn)
            producer = SteadyProducer(
                topic,
                args.latency_rate,
                args.latency_seconds,
                prefix=f"lat-{uuid.uuid4().hex[:4]}-",
                warmup_seconds=args.warmup_seconds,
            )
            producer.start()
            samples = poll_visibility(
                dsn,
                producer,
                time.monotonic() + args.warmup_seconds + args.latency_seconds + 120,
            )
        finally:
            job.terminate()
            job.wait(timeout=60)
    samples.sort()
    return {
        "rate_events_per_second": args.latency_rate,
        "seconds": args.latency_seconds,
        "warmup_seconds": args.warmup_seconds,
        "trigger_seconds": args.trigger_seconds,
        "samples": len(samples),
        "p50_seconds": round(statistics.median(samples), 3),
        "p95_seconds": round(samples[int(0.95 * (len(samples) - 1))], 3),
        "max_seconds": round(samples[-1], 3),
    }


def latency_runs(args: argparse.Namespace) -> dict:
    """`--latency-runs` runs of the latency test; the figure is the median of their p95s."""
    runs = [latency(args) for _ in range(args.latency_runs)]
    return {
        "runs": runs,
        "median_p50_seconds": round(statistics.median(run["p50_seconds"] for run in runs), 3),
        "median_p95_seconds": round(statistics.median(run["p95_seconds"] for run in runs), 3),
        "goal_p95_seconds": 1.5,
    }


def send_warm_up_event(topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers(), acks="all")
    producer.send(
        topic,
        b'{"bytes":0,"timestamp":%d,"app":"SKYPE","id":"warm-up","antenna_id":"warm-up"}'
        % int(time.time()),
    )
    producer.flush()
    producer.close()


def wait_until_running(dsn: str, timeout: float = 120) -> None:
    """The job is up once it applied the warm-up event's micro-batch: Spark start-up is not
    latency."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM speed_layer_progress")
            row = cur.fetchone()
            assert row is not None  # count(*) always returns one row
            started = row[0] > 0
        conn.close()
        if started:
            return
        time.sleep(0.5)
    raise SystemExit("error: the streaming job did not start within 120 s")


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    results: dict = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }
    if not args.no_throughput:
        results["throughput"] = throughput(args)
    if not args.no_latency:
        results["latency"] = latency_runs(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
