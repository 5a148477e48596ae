"""The lease that keeps one streaming job per storage root, on real Spark and a real folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spark_jobs import lease as lease_module
from spark_jobs.lease import Lease, LeaseHeld, generation_file


@pytest.fixture
def location(tmp_path) -> Path:
    return tmp_path / "leases" / "streaming"


def write_generation(location: Path, number: int, text: str | None = None, **holder) -> Path:
    location.mkdir(parents=True, exist_ok=True)
    path = location / generation_file(number)
    fields = {"owner": "someone-else", "host": socket.gethostname(), "pid": 1, **holder}
    path.write_text(json.dumps(fields) if text is None else text)
    return path


def generations(location: Path) -> dict[str, dict]:
    return {
        path.name: json.loads(path.read_text() or "{}") for path in sorted(location.glob("*.json"))
    }


def test_a_free_root_is_leased_and_released(spark, location):
    lease = Lease(spark, str(location), "storage root")

    lease.acquire()
    assert [(name, held["owner"]) for name, held in generations(location).items()] == [
        (generation_file(0), lease.owner)
    ]
    lease.release()

    assert generations(location) == {}


def test_a_live_job_on_this_host_is_not_displaced(spark, location):
    other = subprocess.Popen(["sleep", "60"])
    try:
        write_generation(location, 3, pid=other.pid)

        with pytest.raises(
            LeaseHeld, match=f"another streaming job holds the storage root \\(pid {other.pid} on "
        ):
            Lease(spark, str(location), "storage root").acquire()
        assert list(generations(location)) == [generation_file(3)]
    finally:
        other.kill()
        other.wait()


def test_the_lease_of_a_job_that_died_on_this_host_is_taken_at_once_as_the_next_generation(
    spark, location
):
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_generation(location, 3, pid=dead.pid)
    lease = Lease(spark, str(location), "storage root")

    started = time.monotonic()
    lease.acquire()

    assert time.monotonic() - started < 5
    assert {name: held["owner"] for name, held in generations(location).items()} == {
        generation_file(4): lease.owner
    }


def test_a_lease_of_another_host_that_stopped_changing_is_taken_after_the_ttl(spark, location):
    write_generation(location, 0, host="another-host", pid=4242)
    lease = Lease(spark, str(location), "storage root", ttl_seconds=3)

    started = time.monotonic()
    lease.acquire()

    assert 3 <= time.monotonic() - started < 10
    assert generations(location)[generation_file(1)]["owner"] == lease.owner


def test_a_half_written_lease_file_is_judged_by_its_age(spark, location):
    write_generation(location, 0, text="")
    lease = Lease(spark, str(location), "storage root", ttl_seconds=2)

    lease.acquire()

    assert lease.number == 1


def test_a_lease_another_host_keeps_renewing_is_refused(spark, location):
    path = write_generation(location, 0, host="another-host", pid=4242)
    renewer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time,pathlib\n"
            "p=pathlib.Path(sys.argv[1]); t=p.read_text()\n"
            "for _ in range(60):\n"
            "    time.sleep(0.5); p.write_text(t)",
            str(path),
        ]
    )
    try:
        started = time.monotonic()
        with pytest.raises(LeaseHeld, match="pid 4242 on another-host"):
            Lease(spark, str(location), "storage root", ttl_seconds=30).acquire()
        assert time.monotonic() - started < 10
    finally:
        renewer.kill()
        renewer.wait()


def test_two_jobs_never_take_the_same_generation(spark, location):
    first, second = (
        Lease(spark, str(location), "storage root"),
        Lease(spark, str(location), "storage root"),
    )

    assert first._create_exclusive(7)
    assert not second._create_exclusive(7)
    assert generations(location)[generation_file(7)]["owner"] == first.owner


def test_a_job_whose_lease_was_taken_knows_it_lost_it(spark, location, monkeypatch):
    monkeypatch.setattr(lease_module, "RENEW_EVERY_SECONDS", 0.2)
    lease = Lease(spark, str(location), "storage root")
    lease.acquire()
    lease.start_renewing()

    write_generation(location, lease.number + 1, host="another-host", pid=4242)
    deadline = time.monotonic() + 10
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.1)

    assert lease.lost
    lease.release()
    assert generation_file(lease.number + 1) in generations(location)
