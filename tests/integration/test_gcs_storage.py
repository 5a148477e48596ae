"""The jobs on object storage: STORAGE_ROOT=gs://bucket/prefix against a Cloud Storage emulator
(fake-gcs-server), through the Cloud Storage connector, as on Dataproc.

What the jobs assume of their storage is checked where object storage differs from a disk: the
checkpoint's offset and commit logs (create-if-absent, rename), the lease (create-if-absent),
the micro-batch folders a replay overwrites, the compaction's `_SUCCESS` marker and the batch
job's listing of an hour's folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from devtools.gcs_emulator import GcsEmulator
from devtools.maven import ensure_jars, gcs_connector_jars
from tests.integration.conftest import REPO_ROOT, epoch, load_summary, query, run_module
from tests.integration.test_batch import HOUR, hourly_expectations, hourly_tables

pytestmark = [pytest.mark.services, pytest.mark.spark]

BUCKET = "usage-platform"
EVENT_HOUR = "2026-11-27-10"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    ensure_jars(gcs_connector_jars())
    emulator = GcsEmulator.start(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log")
    emulator.create_bucket(BUCKET)
    yield emulator
    emulator.stop()


@pytest.fixture
def gs_root(emulator, monkeypatch) -> str:
    """A fresh gs:// storage root; the jobs started from here on reach it through the emulator."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    return f"gs://{BUCKET}/lake-{uuid.uuid4().hex[:8]}"


def prefix_of(gs_root: str, *parts: str) -> str:
    return "/".join([gs_root.removeprefix(f"gs://{BUCKET}/"), *parts])


def log_numbers(emulator: GcsEmulator, gs_root: str, log: str) -> set[int]:
    """Batch ids in the checkpoint's offset or commit log."""
    names = emulator.object_names(BUCKET, prefix_of(gs_root, "checkpoints", "streaming", log) + "/")
    return {int(name.rsplit("/", 1)[1]) for name in names if name.rsplit("/", 1)[1].isdigit()}


def streaming(topic: str, dsn: str, gs_root: str, *extra: str) -> list[str]:
    return [
        "--topic",
        topic,
        "--pg-dsn",
        dsn,
        "--storage-root",
        gs_root,
        "--master",
        "local[2]",
        *extra,
    ]


def kill_with_a_batch_in_flight(
    process: subprocess.Popen, emulator: GcsEmulator, gs_root: str, timeout: float = 240
) -> int:
    """SIGKILL the job's process group while a micro-batch is logged in the offsets but not
    committed (past the first few batches), so that the restart must replay it. Its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the streaming job ended before it was killed"
        in_flight = log_numbers(emulator, gs_root, "offsets") - log_numbers(
            emulator, gs_root, "commits"
        )
        if in_flight and min(in_flight) >= 3:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return min(in_flight)
        time.sleep(0.05)
    raise AssertionError(f"no micro-batch was seen in flight within {timeout} s")


def test_the_jobs_on_gs_are_exact_across_a_sigkill_and_read_only_committed_batches(
    topic, scratch_dsn, tmp_path, emulator, gs_root
):
    summary_path = tmp_path / "summary.json"
    run_module(
        "simulator",
        "--topic", topic,
        "--start", "2026-11-27T09:59:00Z",
        "--duration", "3720",
        "--rate", "0",
        "--seed", "5",
        "--unknown-devices", "3",
        "--malformed-rate", "0.02",
        "--summary-out", str(summary_path),
        "--no-progress",
    )  # fmt: skip
    summary = load_summary(summary_path)
    log_path = tmp_path / "streaming.log"

    # Small micro-batches, so that the kill lands mid-stream with batches still to come.
    process = subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.streaming",
         *streaming(topic, scratch_dsn, gs_root,
                    "--trigger-seconds", "0.5",
                    "--max-offsets-per-trigger", "400")],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"),
        start_new_session=True,
    )  # fmt: skip
    replayed = kill_with_a_batch_in_flight(process, emulator, gs_root)
    offsets_log = prefix_of(gs_root, "checkpoints", "streaming", "offsets", str(replayed))
    logged_before = emulator.read(BUCKET, offsets_log)

    # A micro-batch folder the commit log does not list (as a job killed after its raw write
    # leaves one): no reader may count it. A copy of a real batch, so only the listing can tell.
    raw_hour = prefix_of(gs_root, "raw", f"event_hour={EVENT_HOUR}")
    part = next(
        name for name in emulator.object_names(BUCKET, raw_hour + "/") if name.endswith(".parquet")
    )
    emulator.write(
        BUCKET, f"{raw_hour}/batch_id=999999/{part.rsplit('/', 1)[1]}", emulator.read(BUCKET, part)
    )

    run_module(
        "spark_jobs.streaming",
        *streaming(topic, scratch_dsn, gs_root, "--available-now"),
        timeout=600,
    )

    # The restart replayed the batch in flight with the offsets it had logged, and committed it.
    assert replayed in log_numbers(emulator, gs_root, "commits")
    assert emulator.read(BUCKET, offsets_log) == logged_before
    assert_speed_layer_counted_every_event_once(scratch_dsn, summary)
    compactions = emulator.object_names(
        BUCKET, prefix_of(gs_root, "compacted", f"event_hour={EVENT_HOUR}") + "/"
    )
    assert any(name.endswith("/_SUCCESS") for name in compactions), (
        "the closed hour was not compacted on gs://"
    )

    batch = run_module(
        "spark_jobs.batch",
        "--hour", HOUR,
        "--pg-dsn", scratch_dsn,
        "--storage-root", gs_root,
        "--topic", topic,
        "--master", "local[2]",
    )  # fmt: skip

    users = {
        id_: (email, quota)
        for id_, email, quota in query(scratch_dsn, "SELECT id, email, quota FROM user_metadata")
    }
    assert hourly_tables(scratch_dsn) == hourly_expectations(summary, users), batch.stderr[-2000:]
    raw_rows, distinct = query(
        scratch_dsn, "SELECT raw_rows, distinct_offsets FROM batch_hour_runs"
    )[0]
    hour_events = query(
        scratch_dsn, "SELECT sum(events) FROM speed_hour_batches WHERE date = %s", (HOUR,)
    )[0][0]
    assert raw_rows == distinct == hour_events, (
        "the batch job read an uncommitted or duplicated micro-batch"
    )


def assert_speed_layer_counted_every_event_once(dsn: str, summary: dict) -> None:
    """The speed layer's hour totals equal the simulator's: each valid event counted once."""
    for hour in (row for row in summary["hours"]["app"]):
        rows = query(
            dsn,
            "SELECT sum(sum_app_bytes) FROM bytes_agg_app WHERE app = %s"
            " AND date >= to_timestamp(%s)"
            " AND date < to_timestamp(%s) + interval '1 hour'",
            (hour["app"], epoch(hour["date"]), epoch(hour["date"])),
        )
        assert rows[0][0] == hour["bytes"], f"{hour['app']} at {hour['date']}"
