"""Soak benchmark of the speed layer: does the streaming job hold steady for an hour?

The job runs as its own process, every sink on, while a producer sends a steady 10,000 events/s
(bench.streaming's SteadyProducer: 100 ms groups, each on an antenna id of its own). Every
minute the benchmark samples the resident memory of the job's Python driver, of its Spark JVM
and of its Python workers; at the end it reads each micro-batch's duration from the job's own
health rows (speed_micro_batches) and buckets the event-to-PostgreSQL latencies by the minute
their group was sent. Then it checks the totals against what the producer sent: every event
counted once.

    python -m bench.soak [--minutes 60] [--rate 10000]

Figures go to bench/results/soak.json, the plot to bench/results/soak.png. Needs `make up`; not
part of `make test` (an hour).
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
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg2

from bench.harness import machine, scratch_topic, streaming_command
from bench.streaming import SteadyProducer, send_warm_up_event, wait_until_running
from devtools.scratch_db import scratch_database

log = logging.getLogger("bench.soak")

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "soak.json"
PLOT = REPO_ROOT / "bench" / "results" / "soak.png"
MB = 2**20
# The goal's windows: the p95 latency of the last ten minutes against the first ten.
COMPARED_MINUTES = 10
LATENCY_GROWTH_AT_MOST = 1.2
# Flat memory: the fitted trend after the first ten minutes (the JVM grows its heap while it
# warms up), extrapolated to an hour, stays within this share of the median.
MEMORY_TREND_PER_HOUR_AT_MOST = 0.05


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--minutes", type=int, default=60, help="measured length (default: 60)")
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument(
        "--warmup-seconds", type=int, default=60, help="steady load before the measured minutes"
    )
    parser.add_argument(
        "--trigger-seconds", type=float, default=1.0, help="the job's micro-batch interval"
    )
    parser.add_argument(
        "--sample-seconds", type=float, default=60.0, help="interval of the memory samples"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    return parser.parse_args(argv)


# ---- what is measured ---------------------------------------------------------------------


@dataclass(frozen=True)
class MemorySample:
    at: float
    driver_mb: float
    jvm_mb: float
    workers_mb: float


def memory_of(job: psutil.Process) -> MemorySample:
    """Resident memory of the job's Python driver, its JVM (the `java` child) and the Python
    workers Spark forks: the driver is the job's own process."""
    jvm = workers = 0
    for child in job.children(recursive=True):
        try:
            rss = child.memory_info().rss
            if child.name() == "java":
                jvm += rss
            else:
                workers += rss
        except psutil.NoSuchProcess:
            continue
    return MemorySample(time.time(), job.memory_info().rss / MB, jvm / MB, workers / MB)


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.job = psutil.Process(pid)
        self.interval = interval
        self.samples: list[MemorySample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append(memory_of(self.job))
            self.stopping.wait(self.interval)


class VisibilityPoller(threading.Thread):
    """Records when each group's total is complete in PostgreSQL. It asks only for the groups
    not seen yet, by primary key, so a poll costs the same in the last minute as in the first."""

    def __init__(self, dsn: str, producer: SteadyProducer):
        super().__init__(daemon=True)
        self.dsn, self.producer = dsn, producer
        self.pending: dict[str, dict] = {}
        self.latencies: list[tuple[float, float]] = []  # (sent_at, seconds to visible)
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        try:
            while not self.stopping.is_set():
                self._take_sent()
                if self.pending:
                    self._poll(conn)
                self.stopping.wait(0.05)
        finally:
            conn.close()

    def _take_sent(self) -> None:
        while not self.producer.sent.empty():
            antenna, group = self.producer.sent.get()
            self.pending[antenna] = group

    def _poll(self, conn) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT antenna_id, sum(sum_antenna_bytes) FROM bytes_agg_antenna "
                "WHERE antenna_id = ANY(%s) GROUP BY 1",
                (list(self.pending),),
            )
            seen_at = time.time()
            for antenna, total in cur.fetchall():
                group = self.pending[antenna]
                if total == group["bytes"]:
                    self.latencies.append((group["sent_at"], seen_at - group["sent_at"]))
                    del self.pending[antenna]

    def all_seen(self) -> bool:
        self._take_sent()
        return not self.pending


# ---- summaries (pure) ---------------------------------------------------------------------


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def minute_of(at: float, start: float) -> int:
    return int((at - start) // 60)


def latency_per_minute(
    latencies: list[tuple[float, float]], start: float, minutes: int
) -> list[dict]:
    """(sent_at, seconds) -> per measured minute of sending: samples, p50 and p95."""
    buckets: dict[int, list[float]] = {minute: [] for minute in range(minutes)}
    for sent_at, seconds in latencies:
        minute = minute_of(sent_at, start)
        if minute in buckets:
            buckets[minute].append(seconds)
    return [
        {
            "minute": minute,
            "samples": len(values),
            "p50_seconds": round(statistics.median(values), 3) if values else None,
            "p95_seconds": round(p95(values), 3) if values else None,
        }
        for minute, values in buckets.items()
    ]


def memory_per_minute(samples: list[MemorySample], start: float, minutes: int) -> list[dict]:
    """The last sample of each measured minute (one per minute at the default interval)."""
    last: dict[int, MemorySample] = {}
    for sample in samples:
        minute = minute_of(sample.at, start)
        if 0 <= minute < minutes:
            last[minute] = sample
    return [
        {
            "minute": minute,
            "driver_rss_mb": round(sample.driver_mb, 1),
            "jvm_rss_mb": round(sample.jvm_mb, 1),
            "workers_rss_mb": round(sample.workers_mb, 1),
        }
        for minute, sample in sorted(last.items())
    ]


def batches_per_minute(batches: list[tuple[float, float, int]], start: float, minutes: int):
    """(finished_at epoch, seconds, events) of each micro-batch -> per measured minute: how many
    batches finished, their median and longest duration, and the events they carried."""
    buckets: dict[int, list[tuple[float, int]]] = {minute: [] for minute in range(minutes)}
    for finished_at, seconds, events in batches:
        minute = minute_of(finished_at, start)
        if minute in buckets:
            buckets[minute].append((seconds, events))
    return [
        {
            "minute": minute,
            "micro_batches": len(rows),
            "median_seconds": round(statistics.median(s for s, _ in rows), 3) if rows else None,
            "max_seconds": round(max(s for s, _ in rows), 3) if rows else None,
            "events": sum(e for _, e in rows),
        }
        for minute, rows in buckets.items()
    ]


def trend_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, value), per 60 minutes; 0 with fewer than two points."""
    if len(points) < 2:
        return 0.0
    slope, _ = statistics.linear_regression([m for m, _ in points], [v for _, v in points])
    return slope * 60


def memory_verdict(per_minute: list[dict], column: str) -> dict:
    """Is `column` flat after the warm-up minutes? Trend extrapolated to an hour, against the
    median."""
    settled = [(row["minute"], row[column]) for row in per_minute if row["minute"] >= 10]
    if len(settled) < 2:
        settled = [(row["minute"], row[column]) for row in per_minute]
    median = statistics.median(v for _, v in settled) if settled else 0.0
    trend = trend_per_hour(settled)
    return {
        "median_mb": round(median, 1),
        "trend_mb_per_hour": round(trend, 1),
        "flat": abs(trend) <= MEMORY_TREND_PER_HOUR_AT_MOST * median,
    }


def latency_verdict(latencies: list[tuple[float, float]], start: float, minutes: int) -> dict:
    """p95 of the first and of the last COMPARED_MINUTES measured minutes."""
    window = min(COMPARED_MINUTES, max(1, minutes // 2))
    first = [s for at, s in latencies if 0 <= minute_of(at, start) < window]
    last = [s for at, s in latencies if minutes - window <= minute_of(at, start) < minutes]
    first_p95, last_p95 = p95(first), p95(last)
    return {
        "compared_minutes": window,
        "first_p95_seconds": round(first_p95, 3),
        "last_p95_seconds": round(last_p95, 3),
        "ratio": round(last_p95 / first_p95, 3),
        "within_goal": last_p95 <= LATENCY_GROWTH_AT_MOST * first_p95,
    }


# ---- the run ------------------------------------------------------------------------------


def micro_batches(dsn: str) -> list[tuple[float, float, int]]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM finished_at)::float8, read_aggregate_seconds + raw_seconds"
            " + quarantine_seconds + postgres_seconds + compaction_seconds, events"
            " FROM speed_micro_batches ORDER BY finished_at"
        )
        rows = [(float(at), float(seconds), int(events)) for at, seconds, events in cur]
    conn.close()
    return rows


STEPS = ("read_aggregate", "raw", "quarantine", "postgres", "compaction")


def median_step_seconds(dsn: str) -> dict[str, float]:
    """Where a micro-batch's time goes: the median seconds of each step over the run (the steps
    of spark_jobs/streaming.py's StepTimer, from the health rows)."""
    columns = ", ".join(
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {step}_seconds)" for step in STEPS
    )
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {columns} FROM speed_micro_batches WHERE events > 0")
        row = cur.fetchone() or (None,) * len(STEPS)
    conn.close()
    return {step: round(float(value or 0), 3) for step, value in zip(STEPS, row, strict=True)}


def counted_exactly(dsn: str, producer: SteadyProducer) -> dict:
    """Every event the producer sent, counted once: the job's event count against the producer's
    (plus bench.streaming's one warm-up event), and the measured groups' bytes against theirs."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(valid_events), 0) FROM speed_layer_progress")
        (counted,) = cur.fetchone() or (0,)
        cur.execute(
            "SELECT coalesce(sum(sum_antenna_bytes), 0) FROM bytes_agg_antenna"
            " WHERE antenna_id LIKE %s",
            (producer.prefix + "%",),
        )
        (measured_bytes,) = cur.fetchone() or (0,)
    conn.close()
    sent = producer.events_sent + 1
    sent_bytes = sum(group["bytes"] for group in producer.groups.values())
    return {
        "events_sent": sent,
        "events_counted": int(counted),
        "bytes_sent": sent_bytes,
        "bytes_counted": int(measured_bytes),
        "exact": int(counted) == sent and int(measured_bytes) == sent_bytes,
    }


def wait_for_all(dsn: str, producer: SteadyProducer, poller: VisibilityPoller, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = not producer.is_alive() and poller.all_seen()
        if done and counted_exactly(dsn, producer)["events_counted"] >= producer.events_sent + 1:
            return
        time.sleep(1)
    log.warning("not every event was visible %d s after the producer stopped", timeout)


def soak(args: argparse.Namespace) -> dict:
    with (
        scratch_topic("bench-soak") as topic,
        scratch_database("bench") as dsn,
        tempfile.TemporaryDirectory(prefix="bench-storage-") as storage,
    ):
        send_warm_up_event(topic)
        job = subprocess.Popen(
            streaming_command(topic, dsn, storage, "--trigger-seconds", str(args.trigger_seconds)),
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_running(dsn)
            memory = MemorySampler(job.pid, args.sample_seconds)
            producer = SteadyProducer(
                topic,
                args.rate,
                args.minutes * 60,
                prefix=f"soak-{uuid.uuid4().hex[:4]}-",
                warmup_seconds=args.warmup_seconds,
            )
            poller = VisibilityPoller(dsn, producer)
            start = time.time() + args.warmup_seconds
            memory.start()
            producer.start()
            poller.start()
            log.info(
                "soak: %d events/s for %d min after a %d s warm-up",
                args.rate,
                args.minutes,
                args.warmup_seconds,
            )
            producer.join()
            wait_for_all(dsn, producer, poller, timeout=300)
            poller.stopping.set()
            memory.stopping.set()
            batches = micro_batches(dsn)
            steps = median_step_seconds(dsn)
            exactness = counted_exactly(dsn, producer)
        finally:
            job.terminate()
            job.wait(timeout=60)
    latency = latency_per_minute(poller.latencies, start, args.minutes)
    rss = memory_per_minute(memory.samples, start, args.minutes)
    return {
        "rate_events_per_second": args.rate,
        "minutes": args.minutes,
        "warmup_seconds": args.warmup_seconds,
        "trigger_seconds": args.trigger_seconds,
        "exactness": exactness,
        "groups_not_visible": len(poller.pending),
        "summary": {
            "driver_rss": memory_verdict(rss, "driver_rss_mb"),
            "jvm_rss": memory_verdict(rss, "jvm_rss_mb"),
            "workers_rss": memory_verdict(rss, "workers_rss_mb"),
            "latency": latency_verdict(poller.latencies, start, args.minutes),
            "p95_seconds": round(p95([s for _, s in poller.latencies]), 3),
            "micro_batch_median_step_seconds": steps,
        },
        "per_minute": {
            "latency": latency,
            "memory": rss,
            "micro_batches": batches_per_minute(batches, start, args.minutes),
        },
    }


def panel(axis, rows: list[dict], series: list[tuple[str, str]], ylabel: str) -> None:
    """One line per (column, label) of `rows` against their minute, from zero up."""
    for column, label in series:
        axis.plot([row["minute"] for row in rows], [row[column] for row in rows], label=label)
    axis.set_ylabel(ylabel)
    axis.set_ylim(bottom=0)
    axis.legend(loc="best")


def plot(result: dict, path: Path) -> None:
    """Memory, latency and micro-batch duration per minute, one panel each."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    from matplotlib import pyplot

    per_minute = result["per_minute"]
    figure, (memory, latency, batches) = pyplot.subplots(3, 1, figsize=(9, 9), sharex=True)
    panel(
        memory,
        per_minute["memory"],
        [("driver_rss_mb", "Python driver"), ("jvm_rss_mb", "Spark JVM"),
         ("workers_rss_mb", "Python workers")],
        "resident memory (MiB)",
    )  # fmt: skip
    panel(
        latency,
        [row for row in per_minute["latency"] if row["samples"]],
        [("p50_seconds", "p50"), ("p95_seconds", "p95")],
        "event to PostgreSQL (s)",
    )
    panel(
        batches,
        [row for row in per_minute["micro_batches"] if row["micro_batches"]],
        [("median_seconds", "median"), ("max_seconds", "longest")],
        "micro-batch (s)",
    )
    batches.set_xlabel("minute of the soak")
    figure.suptitle(
        f"Speed layer at {result['rate_events_per_second']:,} events/s for "
        f"{result['minutes']} min, every sink on"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **soak(args),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.plot)
    print(json.dumps({"exactness": result["exactness"], **result["summary"]}, indent=2))
    if not result["exactness"]["exact"]:
        raise SystemExit("error: the soak's totals differ from what was sent")


if __name__ == "__main__":
    main()
