"""The lease that keeps one streaming job per storage root, on real Spark and a real folder."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from spark_jobs import lease as lease_module
from spark_jobs.lease import Lease, LeaseHeld


@pytest.fixture
def location(tmp_path) -> str:
    return str(tmp_path / "leases" / "streaming.json")


def write_holder(location: str, **holder) -> None:
    path = lease_module.Holder(**{"owner": "someone-else", "host": socket.gethostname(), "pid": 1, "renewed_at": time.time(), **holder})
    with open(location, "w") as file:
        json.dump(path.__dict__, file)


def holder_of(location: str) -> dict:
    with open(location) as file:
        return json.load(file)


def test_a_free_root_is_leased_and_released(spark, location):
    lease = Lease(spark, location, "storage root")

    lease.acquire()
    assert holder_of(location)["owner"] == lease.owner
    lease.release()

    with pytest.raises(FileNotFoundError):
        holder_of(location)


def test_a_live_job_on_this_host_is_not_displaced(spark, location, tmp_path):
    Lease(spark, location, "storage root").acquire()  # creates the folder
    other = subprocess.Popen(["sleep", "60"])
    try:
        write_holder(location, pid=other.pid)

        with pytest.raises(LeaseHeld, match=f"another streaming job holds the storage root \\(pid {other.pid}"):
            Lease(spark, location, "storage root").acquire()
        assert holder_of(location)["owner"] == "someone-else"
    finally:
        other.kill()
        other.wait()


def test_the_lease_of_a_job_that_died_on_this_host_is_taken_at_once(spark, location):
    Lease(spark, location, "storage root").acquire()
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_holder(location, pid=dead.pid)
    lease = Lease(spark, location, "storage root")

    started = time.monotonic()
    lease.acquire()

    assert holder_of(location)["owner"] == lease.owner
    assert time.monotonic() - started < 5


def test_a_lease_of_another_host_is_taken_only_once_it_expired(spark, location, monkeypatch):
    Lease(spark, location, "storage root").acquire()
    write_holder(location, host="another-host", pid=4242, renewed_at=time.time() - 3)
    monkeypatch.setattr(lease_module, "RENEW_EVERY_SECONDS", 1.0)
    lease = Lease(spark, location, "storage root", ttl_seconds=5)

    started = time.monotonic()
    lease.acquire()

    # It waited for the two seconds the other host's lease still had.
    assert 1.0 <= time.monotonic() - started < 8
    assert holder_of(location)["owner"] == lease.owner


def test_a_lease_another_host_keeps_renewing_is_refused(spark, location, monkeypatch):
    Lease(spark, location, "storage root").acquire()
    monkeypatch.setattr(lease_module, "RENEW_EVERY_SECONDS", 1.0)
    write_holder(location, host="another-host", pid=4242)
    renewer = subprocess.Popen([
        "python3", "-c",
        "import json,sys,time\n"
        "for _ in range(20):\n"
        "    h=json.load(open(sys.argv[1])); h['renewed_at']=time.time(); json.dump(h, open(sys.argv[1],'w')); time.sleep(0.5)",
        location,
    ])
    try:
        with pytest.raises(LeaseHeld, match="on another-host"):
            Lease(spark, location, "storage root", ttl_seconds=30).acquire()
    finally:
        renewer.kill()
        renewer.wait()


def test_a_job_whose_lease_was_taken_knows_it_lost_it(spark, location, monkeypatch):
    monkeypatch.setattr(lease_module, "RENEW_EVERY_SECONDS", 0.2)
    lease = Lease(spark, location, "storage root")
    lease.acquire()
    lease.start_renewing()

    write_holder(location, host="another-host", pid=4242)
    deadline = time.monotonic() + 10
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.1)

    assert lease.lost
    assert holder_of(location)["owner"] == "someone-else"
