"""Fault-injection benchmark of the speed layer: does every total stay exact through crashes and
outages?

A seeded stream of N simulated events (a few malformed, a few from devices that are no user) is
sent into a fresh 4-partition topic over most of the run, while the streaming job runs
continuously (2 s trigger, compaction of each closed hour at once) into a fresh database and
storage root. Meanwhile, at seeded random moments:

* the job's process group is SIGKILLed and the job started again (default 20 times);
* the local PostgreSQL server is stopped for 2 minutes and started again (default 5 times);
* the local Kafka broker is stopped and started again (default 5 times).

Outages never overlap each other; kills may land during one. Whenever the job exits on its own,
it is started again and counted as a restart the job needed, with its exit code and last stderr
line: a job that waits out outages needs none. Afterwards every service is restored, the job
drains the topic with `--available-now`, and the topic is read back with a plain Kafka consumer
and recounted in Python, independently of Spark: valid and malformed records by the data
contract, and byte totals per antenna, app and user per 5-minute window. The figures are the
events lost and doubled in raw Parquet (per Kafka partition and offset), the windows whose
PostgreSQL total differs from the recount, and whether speed_layer_progress counts what Kafka
holds.

    python -m bench.faults [--events 500000] [--seed 1] [--kills 20] [--pg-outages 5] \\
        [--pg-outage-seconds 120] [--broker-restarts 5]          # about 25 minutes
    python -m bench.faults --events 20000 --kills 2 --pg-outages 1 --pg-outage-seconds 20 \\
        --broker-restarts 1 --out /tmp/faults-smoke.json         # smoke run, a few minutes

It stops and starts the Kafka broker and PostgreSQL server of `make up` (anyone else using them
sees the outages too) and refuses to run against external ones. Figures go to
bench/results/faults.json; exit status 0 when no event is lost or doubled and no window is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pyarrow.dataset as ds
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bench import harness
from common import settings
from common.cli_types import non_negative_float, non_negative_int, positive_float, positive_int
from common.errors import CommandError
from devtools.scratch_db import scratch_database
from localstack import kafka_broker, postgres_server
from simulator.cli import parse_start
from spark_jobs.storage import StorageLayout

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "faults.json"
WINDOW_SECONDS = 300
# The stream: the simulator's 20 users, two devices that are no user, one record in a thousand
# malformed.
KNOWN_DEVICES = 20
UNKNOWN_DEVICES = 2
MALFORMED_RATE = 0.001
# Event time spans about this many hours (all closed, all within the job's 24 h compaction
# recovery window), so that hours close during the stream and get compacted.
EVENT_HOURS = 6
TRIGGER_SECONDS = 2
MASTER = "local[2]"
OUTAGE_LIMIT_MINUTES = 30

# Faults happen inside this share of the stream, not while it starts or ends.
FAULT_WINDOW = (0.05, 0.95)
# Between two outages, so that the job and the producer have a moment with everything up.
OUTAGE_GAP_SECONDS = 15
KILL_GAP_SECONDS = 20
# A kill waits for the restarted job's first micro-batch (or an outage, or this long), then lands
# up to two triggers later: in a batch at work, as a crash would, not always in Spark's start-up.
KILL_MAX_WAIT_SECONDS = 60
JOB_START_TIMEOUT_SECONDS = 300
# What stopping and starting the broker takes on a loaded 2-core machine, for planning only.
BROKER_RESTART_ALLOWANCE_SECONDS = 30
# Room left for randomness when the stream is stretched to fit the faults.
FAULT_SLACK_SECONDS = 30
# Like a scheduler's restart delay: a job that fails at once does not restart in a tight loop.
JOB_RESTART_DELAY_SECONDS = 5
SIMULATOR_RESTART_DELAY_SECONDS = 5
MAX_SIMULATOR_RUNS = 20
SERVICE_UP_ATTEMPTS = 3
DRAIN_ATTEMPTS = 3
DRAIN_TIMEOUT_SECONDS = 900
STOP_TIMEOUT_SECONDS = 60
RECOUNT_TIMEOUT_SECONDS = 600
LOOP_SECONDS = 0.5

# The data contract (docs/contract.md §1), written out again here rather than imported, so that the
# recount shares no code with the job it checks (spark_jobs/events.py is the reference).
MAX_BYTES = 10**12
MAX_STRING_LENGTH = 256
MIN_TIMESTAMP = int(datetime(1, 1, 1, tzinfo=UTC).timestamp())
MAX_TIMESTAMP = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())
INT64 = range(-(2**63), 2**63)
INTEGER_FIELDS = ("bytes", "timestamp")
STRING_FIELDS = ("app", "id", "antenna_id")
SPEED_TABLES = {
    "bytes_agg_antenna": ("antenna_id", "sum_antenna_bytes"),
    "bytes_agg_app": ("app", "sum_app_bytes"),
    "bytes_agg_user": ("id", "sum_user_bytes"),
}
# One log line per micro-batch of spark_jobs/streaming.py: "batch 12: 840 events, 1 quarantined,
# applied (...)".
BATCH_LINE = re.compile(r"batch \d+: \d+ events, \d+ quarantined")
REPLAYED = "already applied before a restart"

log = logging.getLogger("bench.faults")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--events", type=positive_int, default=500_000, help="records sent, valid and malformed"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seeds the simulator and the fault schedule"
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=420.0,
        help=(
            "records per second (default: 420, about 20 minutes for 500,000); lowered when the "
            "faults need a longer stream"
        ),
    )
    parser.add_argument(
        "--kills", type=non_negative_int, default=20, help="SIGKILLs of the streaming job"
    )
    parser.add_argument("--pg-outages", type=non_negative_int, default=5, help="PostgreSQL outages")
    parser.add_argument(
        "--pg-outage-seconds",
        type=positive_float,
        default=120.0,
        help="length of each PostgreSQL outage",
    )
    parser.add_argument(
        "--broker-restarts", type=non_negative_int, default=5, help="Kafka broker restarts"
    )
    parser.add_argument(
        "--broker-down-seconds",
        type=non_negative_float,
        default=0.0,
        help="pause between stopping and starting the broker",
    )
    parser.add_argument(
        "--start",
        type=parse_start,
        help=(
            "event time of the first record, ISO-8601 UTC (default: the start of a closed hour "
            "some 8 hours ago)"
        ),
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


# ---- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamPlan:
    events: int
    seed: int
    rate: float
    seconds: float
    start: int
    tick_seconds: int

    @property
    def devices(self) -> int:
        return KNOWN_DEVICES + UNKNOWN_DEVICES


@dataclass(frozen=True)
class PlannedFault:
    kind: str  # "kill", "postgres_outage" or "broker_restart"
    at: float  # seconds after the stream starts
    down_seconds: float = 0.0  # how long the service stays stopped, for outages
    jitter: float = 0.0  # for kills: seconds after the job is found at work


def outage_lengths(args: argparse.Namespace) -> dict[str, float]:
    return {
        "postgres_outage": args.pg_outage_seconds,
        "broker_restart": args.broker_down_seconds + BROKER_RESTART_ALLOWANCE_SECONDS,
    }


def stream_seconds_needed(args: argparse.Namespace) -> float:
    """The shortest stream whose fault window holds every outage (in a row) and every kill."""
    lengths = outage_lengths(args)
    outages = args.pg_outages + args.broker_restarts
    outage_need = (
        args.pg_outages * lengths["postgres_outage"]
        + args.broker_restarts * lengths["broker_restart"]
    )
    outage_need += OUTAGE_GAP_SECONDS * max(outages - 1, 0)
    kill_need = KILL_GAP_SECONDS * max(args.kills - 1, 0)
    return (max(outage_need, kill_need) + FAULT_SLACK_SECONDS) / (FAULT_WINDOW[1] - FAULT_WINDOW[0])


def plan_stream(args: argparse.Namespace) -> StreamPlan:
    seconds = max(args.events / args.rate, stream_seconds_needed(args))
    ticks = math.ceil(args.events / (KNOWN_DEVICES + UNKNOWN_DEVICES))
    tick_seconds = max(1, round(EVENT_HOURS * 3600 / ticks))
    if args.start is not None:
        start = args.start
    else:
        # Every event hour ends at least an hour before now: closed, so the job compacts it.
        this_hour = int(time.time()) // 3600 * 3600
        start = this_hour - 3600 * (math.ceil(ticks * tick_seconds / 3600) + 1)
    return StreamPlan(args.events, args.seed, args.events / seconds, seconds, start, tick_seconds)


def spread(
    rng: random.Random, lengths: list[float], begin: float, end: float, gap: float
) -> list[float]:
    """Random start times in [begin, end] for intervals of `lengths`, in that order, each at least
    `gap` after the previous one ends: the free room is split at sorted uniform points."""
    room = (end - begin) - sum(lengths) - gap * max(len(lengths) - 1, 0)
    if room < 0:
        raise ValueError("the faults do not fit in the stream")
    starts, used = [], 0.0
    for point, length in zip(sorted(rng.uniform(0, room) for _ in lengths), lengths, strict=True):
        starts.append(begin + point + used)
        used += length + gap
    return starts


def plan_faults(args: argparse.Namespace, stream_seconds: float) -> list[PlannedFault]:
    """Two tracks in the fault window: outages one after another in a shuffled order, and kills."""
    rng = random.Random(args.seed)
    begin, end = (share * stream_seconds for share in FAULT_WINDOW)
    lengths = outage_lengths(args)
    kinds = ["postgres_outage"] * args.pg_outages + ["broker_restart"] * args.broker_restarts
    rng.shuffle(kinds)
    down_seconds = {
        "postgres_outage": args.pg_outage_seconds,
        "broker_restart": args.broker_down_seconds,
    }
    outages = [
        PlannedFault(kind, at, down_seconds[kind])
        for kind, at in zip(
            kinds,
            spread(rng, [lengths[k] for k in kinds], begin, end, OUTAGE_GAP_SECONDS),
            strict=True,
        )
    ]
    kills = [
        PlannedFault("kill", at, jitter=rng.uniform(0, 2 * TRIGGER_SECONDS))
        for at in spread(rng, [0.0] * args.kills, begin, end, KILL_GAP_SECONDS)
    ]
    return sorted(outages + kills, key=lambda fault: fault.at)


# ---- Kafka and PostgreSQL helpers -----------------------------------------------------------


def topic_end_offsets(topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers(),
        enable_auto_commit=False,
        request_timeout_ms=20_000,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.TOPIC_PARTITIONS)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def query(dsn: str, statement: str) -> list[tuple]:
    with psycopg2.connect(dsn, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall()
    conn.close()
    return rows


def bring_up(start) -> str:
    """A service's `up()`, tried again a few times: a broker that just stopped may hold its port
    briefly."""
    for attempt in range(1, SERVICE_UP_ATTEMPTS + 1):
        try:
            return start()
        except CommandError as error:
            if attempt == SERVICE_UP_ATTEMPTS:
                raise
            log.warning("starting a service failed (%s); trying again", error)
            time.sleep(5)
    raise AssertionError("unreachable")


def start_postgres() -> str:
    return bring_up(postgres_server.up)


def start_kafka() -> str:
    return bring_up(kafka_broker.up)


def restore_services() -> list[str]:
    """Both services up, whatever state a fault left them in; each is tried even if the other
    fails."""
    reports = []
    for start in (start_postgres, start_kafka):
        try:
            reports.append(start())
        except CommandError as error:
            reports.append(f"error: {error}")
    return reports


def require_local_services() -> None:
    if not kafka_broker.is_local() or postgres_server.is_external():
        raise SystemExit(
            "error: bench.faults stops and starts the local services of `make up`; unset PG_DSN "
            "and KAFKA_BOOTSTRAP_SERVERS"
        )
    if kafka_broker.our_running_pid() is None or postgres_server.our_running_pid() is None:
        raise SystemExit("error: the local Kafka broker and PostgreSQL server must run: `make up`")


# ---- processes ------------------------------------------------------------------------------


class Child:
    """A child process in its own process group (SIGKILL of the group takes the Spark JVM too, as a
    crash would), stderr appended to a log file, whose lines of this run can be read back."""

    def __init__(self, command: list[str], log_path: Path):
        self.command = command
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self._log_offset = 0

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None  # waited for only once started
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL to the whole group, also after the leader exited (an orphaned JVM would hold the
        lease)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def stop(self) -> int | None:
        """SIGTERM to the leader only (the streaming job then stops between batches), SIGKILL if it
        lingers; its exit code, None if it had to be killed."""
        code = None
        if self.running():
            assert self.process is not None  # running() checked it
            self.process.terminate()
            code = self.wait(STOP_TIMEOUT_SECONDS)
        self.kill()
        return code

    def output(self) -> str:
        """What this run wrote to stderr."""
        with self.log_path.open("rb") as stderr:
            stderr.seek(self._log_offset)
            return stderr.read().decode("utf-8", errors="replace")

    def last_line(self) -> str:
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        return lines[-1][:500] if lines else ""

    def uptime(self) -> float:
        return round(time.monotonic() - self.started_at, 1)

    def batches_logged(self) -> int:
        return len(BATCH_LINE.findall(self.output()))

    def wait_for_line(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            if text in self.output():
                return True
            time.sleep(1)
        return False


def streaming_command(topic: str, dsn: str, storage: str, *extra: str) -> list[str]:
    command = harness.streaming_command(
        topic,
        dsn,
        storage,
        "--master",
        MASTER,
        "--trigger-seconds",
        str(TRIGGER_SECONDS),
        "--compact-after-minutes",
        "0",
        *extra,
    )
    if job_waits_out_outages():
        command += ["--outage-limit-minutes", str(OUTAGE_LIMIT_MINUTES)]
    return command


@functools.cache
def job_waits_out_outages() -> bool:
    """Whether this version of the job has `--outage-limit-minutes` (older ones exit at the first
    outage)."""
    result = subprocess.run(
        [sys.executable, "-m", "spark_jobs.streaming", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return "--outage-limit-minutes" in result.stdout


def simulator_command(
    topic: str, records: int, seed: int, rate: float, start: int, tick_seconds: int
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simulator",
        "--topic",
        topic,
        "--events",
        str(records),
        "--seed",
        str(seed),
        "--rate",
        f"{rate:.3f}",
        "--start",
        datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--tick-seconds",
        str(tick_seconds),
        "--devices",
        str(KNOWN_DEVICES),
        "--unknown-devices",
        str(UNKNOWN_DEVICES),
        "--malformed-rate",
        str(MALFORMED_RATE),
        "--no-progress",
    ]


# ---- outages --------------------------------------------------------------------------------


class OutageInjector(threading.Thread):
    """Runs the outages in order at their planned times (later if the previous one ran long),
    always bringing the service back, also when told to stop."""

    def __init__(self, outages: list[PlannedFault], clock, stop: threading.Event):
        super().__init__(name="outages", daemon=True)
        self.outages = outages
        self.clock = clock
        self.stop = stop
        self.active: str | None = None
        self.executed: list[dict] = []

    def run(self) -> None:
        previous_end = -math.inf
        for fault in self.outages:
            if self.stop.wait(
                max(0.0, max(fault.at, previous_end + OUTAGE_GAP_SECONDS) - self.clock())
            ):
                return
            record = {
                "kind": fault.kind,
                "planned_at_seconds": round(fault.at, 1),
                **moment(self.clock()),
            }
            self.active = fault.kind
            try:
                if fault.kind == "postgres_outage":
                    self._outage(record, postgres_server.down, start_postgres, fault.down_seconds)
                else:
                    self._outage(record, kafka_broker.down, start_kafka, fault.down_seconds)
            except Exception as error:  # noqa: BLE001 - recorded; the next outages still run
                record["error"] = f"{type(error).__name__}: {error}"
            finally:
                self.active = None
            previous_end = self.clock()
            record["ended_at_seconds"] = round(previous_end, 1)
            self.executed.append(record)

    def _outage(self, record: dict, stop_service, start_service, seconds: float) -> None:
        try:
            record["down"] = stop_service()
            record["down_at_seconds"] = round(self.clock(), 1)
            # Cut short when the bench is interrupted; the service comes back either way.
            self.stop.wait(seconds)
        finally:
            record["up"] = start_service()
            record["up_at_seconds"] = round(self.clock(), 1)


def moment(seconds: float) -> dict:
    return {
        "started_at_seconds": round(seconds, 1),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# ---- the stream with faults -----------------------------------------------------------------


@dataclass
class FaultRun:
    """The streaming job and the simulator under supervision while the faults happen."""

    topic: str
    plan: StreamPlan
    faults: list[PlannedFault]
    job: Child
    logs: Path
    started: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    kills_done: list[dict] = field(default_factory=list)
    job_exits: list[dict] = field(default_factory=list)
    simulator_runs: list[dict] = field(default_factory=list)
    simulator: Child | None = None
    injector: OutageInjector | None = None
    simulator_done: bool = False
    timed_out: bool = False
    final_stop: dict = field(default_factory=dict)
    _job_restart_at: float | None = None
    _simulator_retry_at: float | None = None

    def clock(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> None:
        kills = [f for f in self.faults if f.kind == "kill"]
        self.injector = OutageInjector(
            [f for f in self.faults if f.kind != "kill"], self.clock, self.stop
        )
        self.job.start()
        # The stream and the fault clock start once the job is up: Spark's start-up is no fault.
        if not self.job.wait_for_line("speed layer running", JOB_START_TIMEOUT_SECONDS):
            log.warning(
                "the streaming job did not report running within %d s; starting the stream anyway",
                JOB_START_TIMEOUT_SECONDS,
            )
        self.started = time.monotonic()
        self._start_simulator(self.plan.events, self.plan.seed, self.plan.start)
        self.injector.start()
        # Generous: outages that run long push the later ones back, and the producer may stall.
        deadline = self.plan.seconds + max(600.0, self.plan.seconds)
        while not (self.simulator_done and not kills and not self.injector.is_alive()):
            if self.clock() > deadline:
                self.timed_out = True
                log.warning(
                    "stream phase past its deadline of %.0f s; going on with what Kafka holds",
                    deadline,
                )
                break
            self._restart_job_if_it_exited()
            self._restart_simulator_if_it_failed()
            if kills and self._kill_is_due(kills[0]):
                if self.injector.active is None:
                    time.sleep(kills[0].jitter)
                # Gone meanwhile: its exit is the supervisor's to count, the kill comes later.
                if self.job.running():
                    self._kill_job(kills.pop(0))
            time.sleep(LOOP_SECONDS)

    def close(self) -> list[str]:
        """Outages ended, services restored, simulator and job stopped: on every path out."""
        self.stop.set()
        if self.injector is not None and self.injector.is_alive():
            self.injector.join(timeout=300)
        reports = restore_services()
        if self.simulator is not None:
            self.simulator.kill()
        stopping = time.monotonic()
        self.final_stop = {
            "exit_code": self.job.stop(),
            "seconds": round(time.monotonic() - stopping, 1),
        }
        return reports

    def _kill_is_due(self, fault: PlannedFault) -> bool:
        """Due at its time, once the job runs and is at work: a micro-batch since its start, an
        outage it is riding out, or start-up taking long."""
        if fault.at > self.clock() or not self.job.running():
            return False
        assert self.injector is not None  # set by run(), the only caller
        return (
            self.injector.active is not None
            or self.job.uptime() >= KILL_MAX_WAIT_SECONDS
            or self.job.batches_logged() > 0
        )

    def _kill_job(self, fault: PlannedFault) -> None:
        assert self.injector is not None  # set by run(), the only caller
        record = {
            "kind": "kill",
            "planned_at_seconds": round(fault.at, 1),
            **moment(self.clock()),
            "job_uptime_seconds": self.job.uptime(),
            "batches_logged_since_start": self.job.batches_logged(),
            "during": self.injector.active,
        }
        self.job.kill()
        self.job.start()
        record["ended_at_seconds"] = round(self.clock(), 1)
        self.kills_done.append(record)
        log.info("fault: killed the streaming job (%s)", record)

    def _restart_job_if_it_exited(self) -> None:
        if self._job_restart_at is None:
            code = self.job.exit_code()
            if code is None:
                return
            assert self.injector is not None  # set by run(), the only caller
            exit_record = {
                "at_seconds": round(self.clock(), 1),
                "exit_code": code,
                "last_stderr_line": self.job.last_line(),
                "job_uptime_seconds": self.job.uptime(),
                "during": self.injector.active,
            }
            self.job_exits.append(exit_record)
            log.warning("the streaming job exited on its own: %s", exit_record)
            self._job_restart_at = time.monotonic() + JOB_RESTART_DELAY_SECONDS
        elif time.monotonic() >= self._job_restart_at:
            self.job.kill()
            self.job.start()
            self._job_restart_at = None

    def _start_simulator(self, records: int, seed: int, start: int) -> None:
        command = simulator_command(
            self.topic, records, seed, self.plan.rate, start, self.plan.tick_seconds
        )
        self.simulator = Child(command, self.logs / "simulator.log")
        self.simulator.start()
        self.simulator_runs.append(
            {"at_seconds": round(self.clock(), 1), "records": records, "seed": seed, "start": start}
        )

    def _restart_simulator_if_it_failed(self) -> None:
        """A failed producer is recorded; the records still missing from the topic are sent by a new
        run (another seed, event time going on), once the broker is back."""
        if self.simulator_done:
            return
        # Both set by run(), the only caller, before it supervises anything.
        assert self.simulator is not None
        assert self.injector is not None
        if self._simulator_retry_at is None:
            code = self.simulator.exit_code()
            if code is None:
                return
            self.simulator_runs[-1].update(
                exit_code=code,
                last_stderr_line=self.simulator.last_line(),
                ended_at_seconds=round(self.clock(), 1),
            )
            if code == 0 or len(self.simulator_runs) >= MAX_SIMULATOR_RUNS:
                self.simulator_done = True
                return
            log.warning("the simulator failed: %s", self.simulator_runs[-1])
            self._simulator_retry_at = time.monotonic() + SIMULATOR_RESTART_DELAY_SECONDS
            return
        if time.monotonic() < self._simulator_retry_at or self.injector.active == "broker_restart":
            return
        try:
            in_topic = sum(topic_end_offsets(self.topic).values())
        except KafkaError:
            self._simulator_retry_at = time.monotonic() + SIMULATOR_RESTART_DELAY_SECONDS
            return
        self._simulator_retry_at = None
        if in_topic >= self.plan.events:
            self.simulator_done = True
            return
        ticks_sent = in_topic // self.plan.devices
        self._start_simulator(
            self.plan.events - in_topic,
            self.plan.seed + len(self.simulator_runs),
            self.plan.start + ticks_sent * self.plan.tick_seconds,
        )

    def executed_faults(self) -> list[dict]:
        assert self.injector is not None  # set by run(), called before this
        return sorted(
            self.kills_done + self.injector.executed,
            key=lambda record: record["started_at_seconds"],
        )


# ---- draining -------------------------------------------------------------------------------


def committed_offsets(checkpoint: Path, topic: str) -> dict[int, int]:
    """The end offsets of the newest micro-batch the checkpoint's commit log holds."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("*") if p.name.isdigit()]
    if not commits:
        return {}
    # Line 1 is the log's version, line 2 the batch's metadata, then one line per source.
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().splitlines()
    return {int(p): offset for p, offset in json.loads(lines[2]).get(topic, {}).items()}


def drain(
    command: list[str], log_path: Path, checkpoint: Path, topic: str, end_offsets: dict[int, int]
) -> list[dict]:
    """`--available-now` until the checkpoint has committed the topic's end offsets."""
    attempts = []
    for _ in range(DRAIN_ATTEMPTS):
        job = Child(command, log_path)
        job.start()
        code = job.wait(DRAIN_TIMEOUT_SECONDS)
        job.kill()
        committed = committed_offsets(checkpoint, topic)
        complete = all(committed.get(p, 0) == offset for p, offset in end_offsets.items())
        attempts.append(
            {
                "seconds": job.uptime(),
                "exit_code": code,
                "last_stderr_line": job.last_line(),
                "complete": complete,
            }
        )
        if complete:
            break
    return attempts


# ---- the independent recount ----------------------------------------------------------------


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def valid_event(value: bytes | None) -> dict | None:
    """The event a Kafka value encodes if it is valid by the data contract, else None."""
    if value is None:
        return None
    try:
        event = json.loads(value.decode("utf-8"), parse_constant=_no_constants)
    except ValueError:  # also UnicodeDecodeError and JSONDecodeError
        return None
    if not isinstance(event, dict):
        return None
    for name in INTEGER_FIELDS:
        # type() and not isinstance(): JSON true/false are bool, a subclass of int, and no integer.
        if type(event.get(name)) is not int or event[name] not in INT64:
            return None
    for name in STRING_FIELDS:
        text = event.get(name)
        if type(text) is not str or "\x00" in text or len(text) > MAX_STRING_LENGTH:
            return None
    if (
        not 0 <= event["bytes"] <= MAX_BYTES
        or not MIN_TIMESTAMP <= event["timestamp"] <= MAX_TIMESTAMP
    ):
        return None
    return event


@dataclass
class Recount:
    valid_offsets: set = field(default_factory=set)
    malformed: int = 0
    per_partition: Counter = field(default_factory=Counter)
    totals: dict = field(default_factory=lambda: {table: Counter() for table in SPEED_TABLES})

    def add(self, partition: int, offset: int, value: bytes | None) -> None:
        self.per_partition[partition] += 1
        event = valid_event(value)
        if event is None:
            self.malformed += 1
            return
        self.valid_offsets.add((partition, offset))
        window = event["timestamp"] - event["timestamp"] % WINDOW_SECONDS
        for table, (key, _) in SPEED_TABLES.items():
            # `+= 0` still creates the key: a window of zero-byte events is a row too.
            self.totals[table][(event[key], window)] += event["bytes"]


def recount_topic(topic: str, end_offsets: dict[int, int]) -> Recount:
    """Every record of the topic, read with a plain consumer up to the given end offsets."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers(),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    recount = Recount()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.TOPIC_PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + RECOUNT_TIMEOUT_SECONDS
        while any(consumer.position(tp) < end_offsets[tp.partition] for tp in partitions):
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"error: could not read topic {topic} to its end within "
                    f"{RECOUNT_TIMEOUT_SECONDS} s"
                )
            for tp, records in consumer.poll(timeout_ms=1000, max_records=10_000).items():
                for record in records:
                    if record.offset < end_offsets[tp.partition]:
                        recount.add(tp.partition, record.offset, record.value)
    finally:
        consumer.close()
    return recount


def table_totals(dsn: str, table: str) -> dict[tuple[str, int], int]:
    key, total = SPEED_TABLES[table]
    rows = query(
        dsn,
        f"SELECT {key}, extract(epoch FROM date)::bigint, sum({total})::bigint "
        f"FROM {table} GROUP BY 1, 2",
    )
    return {(k, int(window)): int(value) for k, window, value in rows}


def compare_windows(expected: dict, actual: dict) -> dict:
    keys = expected.keys() | actual.keys()
    wrong = sorted(k for k in keys if expected.get(k) != actual.get(k))
    return {
        "windows": len(keys),
        "wrong": len(wrong),
        "missing_in_postgres": sum(k not in actual for k in wrong),
        "extra_in_postgres": sum(k not in expected for k in wrong),
        "examples": [
            {
                "key": k,
                "window_start": window,
                "expected": expected.get((k, window)),
                "postgres": actual.get((k, window)),
            }
            for k, window in wrong[:5]
        ],
    }


def raw_offsets(storage: str) -> list[tuple[int, int]]:
    """(partition, offset) of every raw Parquet row, read without Spark (hidden and `_` folders
    skipped)."""
    raw = StorageLayout(storage).raw
    if not Path(raw).exists():
        return []
    table = ds.dataset(raw, format="parquet", partitioning="hive").to_table(
        columns=["kafka_partition", "kafka_offset"]
    )
    return list(
        zip(
            table.column("kafka_partition").to_pylist(),
            table.column("kafka_offset").to_pylist(),
            strict=True,
        )
    )


def verify(dsn: str, storage: str, recount: Recount) -> dict:
    users = {row[0] for row in query(dsn, "SELECT id FROM user_metadata")}
    expected = dict(recount.totals)
    expected["bytes_agg_user"] = Counter(
        {k: v for k, v in recount.totals["bytes_agg_user"].items() if k[0] in users}
    )
    windows = {
        table: compare_windows(expected[table], table_totals(dsn, table)) for table in SPEED_TABLES
    }
    rows = raw_offsets(storage)
    distinct = set(rows)
    valid_events, quarantined, batches, queries = query(
        dsn,
        "SELECT coalesce(sum(valid_events), 0), coalesce(sum(quarantined_events), 0),"
        " coalesce(sum(last_batch_id + 1), 0), count(*) FROM speed_layer_progress",
    )[0]
    return {
        "events_lost": len(recount.valid_offsets - distinct),
        "events_doubled": len(rows) - len(distinct),
        "raw_rows_not_valid_in_kafka": len(distinct - recount.valid_offsets),
        "windows_wrong": {
            **{table: result["wrong"] for table, result in windows.items()},
            "total": sum(r["wrong"] for r in windows.values()),
        },
        "windows": windows,
        "progress_check": {
            "valid_events": int(valid_events),
            "expected_valid_events": len(recount.valid_offsets),
            "quarantined_events": int(quarantined),
            "expected_quarantined_events": recount.malformed,
            "ok": int(valid_events) == len(recount.valid_offsets)
            and int(quarantined) == recount.malformed,
        },
        "micro_batches_in_progress_table": int(batches),
        "progress_rows": int(queries),
    }


def batch_lines(log_path: Path) -> dict:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = [line for line in text.splitlines() if BATCH_LINE.search(line)]
    replayed = sum(REPLAYED in line for line in lines)
    return {"applied": len(lines) - replayed, "already_applied_after_restart": replayed}


# ---- the benchmark --------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, logs: Path) -> dict:
    plan = plan_stream(args)
    faults = plan_faults(args, plan.seconds)
    began = time.monotonic()
    with (
        harness.scratch_topic("bench-faults") as topic,
        scratch_database("bench_faults") as dsn,
        tempfile.TemporaryDirectory(prefix="bench-faults-storage-") as storage,
    ):
        job_log = logs / "streaming.log"
        run = FaultRun(
            topic, plan, faults, Child(streaming_command(topic, dsn, storage), job_log), logs
        )
        log.info(
            "stream of %d records over %.0f s (%.0f/s), faults: %s",
            plan.events,
            plan.seconds,
            plan.rate,
            ", ".join(f"{f.kind}@{f.at:.0f}s" for f in faults),
        )
        try:
            run.run()
        finally:
            restored = run.close()
        stream_seconds = run.clock()
        end_offsets = topic_end_offsets(topic)
        checkpoint = Path(StorageLayout(storage).streaming_checkpoint)
        drains = drain(
            streaming_command(topic, dsn, storage, "--available-now"),
            job_log,
            checkpoint,
            topic,
            end_offsets,
        )
        recount = recount_topic(topic, end_offsets)
        checks = verify(dsn, storage, recount)
    return {
        "parameters": {
            "events": args.events,
            "seed": args.seed,
            "rate_requested": args.rate,
            "rate": round(plan.rate, 1),
            "stream_seconds_planned": round(plan.seconds, 1),
            "event_time_start": plan.start,
            "tick_seconds": plan.tick_seconds,
            "known_devices": KNOWN_DEVICES,
            "unknown_devices": UNKNOWN_DEVICES,
            "malformed_rate": MALFORMED_RATE,
            "kills": args.kills,
            "pg_outages": args.pg_outages,
            "pg_outage_seconds": args.pg_outage_seconds,
            "broker_restarts": args.broker_restarts,
            "broker_down_seconds": args.broker_down_seconds,
            "trigger_seconds": TRIGGER_SECONDS,
            "master": MASTER,
            "outage_limit_minutes": OUTAGE_LIMIT_MINUTES if job_waits_out_outages() else None,
        },
        "fault_schedule": run.executed_faults(),
        "faults_executed": dict(Counter(f["kind"] for f in run.executed_faults())),
        "stream_seconds": round(stream_seconds, 1),
        "stream_timed_out": run.timed_out,
        "final_sigterm_of_the_job": run.final_stop,
        "services_restored": restored,
        "simulator_runs": run.simulator_runs,
        "simulator_failures": sum(r.get("exit_code") not in (0, None) for r in run.simulator_runs),
        "events_sent": {
            "records": sum(end_offsets.values()),
            "valid": len(recount.valid_offsets),
            "malformed": recount.malformed,
            "per_partition": {str(p): n for p, n in sorted(recount.per_partition.items())},
        },
        "restarts_the_job_needed": {
            "count": len(run.job_exits),
            "exit_codes": [e["exit_code"] for e in run.job_exits],
            "exits": run.job_exits,
        },
        "drain": drains,
        "micro_batches_logged": batch_lines(job_log),
        **checks,
        "runtime_seconds": round(time.monotonic() - began, 1),
    }


def print_summary(results: dict, out: Path) -> None:
    sent, lost, doubled = results["events_sent"], results["events_lost"], results["events_doubled"]
    wrong, progress = results["windows_wrong"], results["progress_check"]
    needed = results["restarts_the_job_needed"]
    print(
        f"faults executed: {results['faults_executed']} in {results['stream_seconds']:.0f} s of "
        "stream"
    )
    print(
        f"events sent: {sent['records']:,} records, {sent['valid']:,} valid, "
        f"{sent['malformed']:,} malformed ({results['simulator_failures']} simulator failures)"
    )
    print(
        f"events lost: {lost}, doubled: {doubled}, raw rows not valid in Kafka: "
        f"{results['raw_rows_not_valid_in_kafka']}"
    )
    print("windows wrong: " + ", ".join(f"{table} {n}" for table, n in wrong.items()))
    print(
        f"progress table: {progress['valid_events']:,} valid / "
        f"{progress['quarantined_events']:,} quarantined,"
        f" recount {progress['expected_valid_events']:,} / "
        f"{progress['expected_quarantined_events']:,} ({'ok' if progress['ok'] else 'DIFFERENT'})"
    )
    print(f"restarts the job needed: {needed['count']} (exit codes {needed['exit_codes']})")
    print(
        f"micro-batches: {results['micro_batches_in_progress_table']:,} in PostgreSQL, logged "
        f"{results['micro_batches_logged']}; drain attempts {len(results['drain'])}, complete "
        f"{results['drain'][-1]['complete'] if results['drain'] else False}"
    )
    print(f"runtime {results['runtime_seconds']:.0f} s; figures in {out}")
    print("PASS" if results["ok"] else "FAIL")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kafka-python logs every refused connection while the broker is down on purpose.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, through every finally: services back up, children gone, topic
    # dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    require_local_services()
    logs = Path(tempfile.mkdtemp(prefix="bench-faults-logs-"))
    results = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        **run_benchmark(args, logs),
    }
    results["ok"] = (
        results["events_lost"]
        == results["events_doubled"]
        == results["windows_wrong"]["total"]
        == 0
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_summary(results, args.out)
    print(f"logs of the job and the simulator: {logs}")
    sys.exit(0 if results["ok"] else 1)


if __name__ == "__main__":
    main()
