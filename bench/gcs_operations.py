"""Cloud Storage operations of the streaming job per micro-batch, for the cost estimate.

The job runs on `gs://` against the Cloud Storage emulator (fake-gcs-server, one log line per
request) with a steady live stream, every sink on; the requests made during a run of committed
micro-batches are counted by the class Cloud Storage bills them in:

    class A   object writes (uploads, copies, composes), listings, bucket reads and writes
    class B   object reads and metadata reads
    free      deletes

A rename is a copy and a delete, as the connector makes it. The figures per micro-batch, per
month at a 2-second and at the default 5-second trigger, and their price at the list prices of
Standard storage in a region, go to bench/results/gcs_operations.json.

    python -m bench.gcs_operations [--rate 2000] [--seconds 60] [--trigger-seconds 2]

Needs `make up` and `make go-tools`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import scratch_topic, streaming_command
from devtools.gcs_emulator import GcsEmulator
from devtools.maven import ensure_jars, gcs_connector_jars
from devtools.scratch_db import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "gcs_operations.json"
BUCKET = "usage-platform"
# USD per 1,000 operations, Standard storage in a region (cloud.google.com/storage/pricing).
CLASS_A_PER_1000 = 0.005
CLASS_B_PER_1000 = 0.0004
SECONDS_PER_MONTH = 730 * 3600
REQUEST_LINE = re.compile(r'\\"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gcs_operations", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rate", type=int, default=2000, help="events per second of the live stream"
    )
    parser.add_argument(
        "--seconds", type=float, default=60, help="how long to count, once the job is warm"
    )
    parser.add_argument(
        "--trigger-seconds", type=float, default=2.0, help="the streaming job's trigger"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def operation_class(method: str, path: str) -> str:
    """Cloud Storage's billing class of one JSON API request."""
    if method == "DELETE":
        return "free"
    if method in ("POST", "PUT", "PATCH"):
        return "A"
    object_path = re.match(r"^/storage/v1/b/[^/?]+/o/[^?]+", path)
    if object_path:
        return "B"  # an object's metadata or media
    if re.match(r"^/storage/v1/b/[^/?]+/o(\?|$)", path):
        return "A"  # objects.list
    return "B" if re.match(r"^/storage/v1/b/[^/?]+(\?|$)", path) else "A"


def count_requests(log_text: str) -> Counter:
    return Counter(operation_class(method, path) for method, path in REQUEST_LINE.findall(log_text))


def committed_batches(emulator: GcsEmulator, root_prefix: str) -> int:
    names = emulator.object_names(BUCKET, f"{root_prefix}/checkpoints/streaming/commits/")
    return sum(1 for name in names if name.rsplit("/", 1)[1].isdigit())


def wait_for_batches(
    emulator: GcsEmulator, root_prefix: str, at_least: int, process, timeout: float = 300
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the streaming job exited with {process.returncode}")
        count = committed_batches(emulator, root_prefix)
        if count >= at_least:
            return count
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {at_least} micro-batches committed within {timeout} s")


def measure(args: argparse.Namespace, work: Path) -> dict:
    ensure_jars(gcs_connector_jars())
    log_path = work / "fake-gcs-server.log"
    emulator = GcsEmulator.start(log_path, log_requests=True)
    root_prefix = f"lake-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "STORAGE_EMULATOR_HOST": emulator.url}
    try:
        emulator.create_bucket(BUCKET)
        with scratch_topic("bench-gcs") as topic, scratch_database("bench_gcs") as dsn:
            producer = subprocess.Popen(
                [sys.executable, "-m", "simulator", "--topic", topic, "--devices", str(args.rate),
                 "--tick-seconds", "1", "--rate", str(args.rate), "--no-progress"],
                cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                stderr=(work / "simulator.log").open("ab"),
            )  # fmt: skip
            job = subprocess.Popen(
                streaming_command(topic, dsn, f"gs://{BUCKET}/{root_prefix}",
                                  "--trigger-seconds", str(args.trigger_seconds),
                                  "--master", "local[2]"),
                cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                stderr=(work / "streaming.log").open("ab"),
                start_new_session=True,
            )  # fmt: skip
            try:
                first = wait_for_batches(emulator, root_prefix, 5, job)
                before = log_path.read_text(errors="replace")
                time.sleep(args.seconds)
                last = committed_batches(emulator, root_prefix)
                during = log_path.read_text(errors="replace")[len(before) :]
            finally:
                os.killpg(job.pid, signal.SIGTERM)
                job.wait(timeout=120)
                producer.terminate()
                producer.wait(timeout=30)
    finally:
        emulator.stop()
    batches = last - first
    if batches <= 0:
        raise RuntimeError("no micro-batch committed while counting")
    counts = count_requests(during)
    return figures(counts, batches, args)


def figures(counts: Counter, batches: int, args: argparse.Namespace) -> dict:
    per_batch = {kind: round(counts[kind] / batches, 1) for kind in ("A", "B", "free")}

    def per_month(trigger_seconds: float) -> dict:
        batches_per_month = SECONDS_PER_MONTH / trigger_seconds
        class_a = per_batch["A"] * batches_per_month
        class_b = per_batch["B"] * batches_per_month
        return {
            "micro_batches": round(batches_per_month),
            "class_a_operations": round(class_a),
            "class_b_operations": round(class_b),
            "usd": round(class_a / 1000 * CLASS_A_PER_1000 + class_b / 1000 * CLASS_B_PER_1000, 2),
        }

    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "stream": {
            "events_per_second": args.rate,
            "trigger_seconds": args.trigger_seconds,
            "seconds_counted": args.seconds,
        },
        "micro_batches_counted": batches,
        "requests_counted": dict(counts),
        "per_micro_batch": {
            "class_a": per_batch["A"],
            "class_b": per_batch["B"],
            "deletes": per_batch["free"],
        },
        "prices_usd_per_1000": {"class_a": CLASS_A_PER_1000, "class_b": CLASS_B_PER_1000},
        "per_month_at_2s_trigger": per_month(2.0),
        "per_month_at_5s_trigger": per_month(5.0),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gcs-") as work:
        results = measure(args, Path(work))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
