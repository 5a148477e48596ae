"""One streaming job per storage root and checkpoint (SPEC.md section 5), by a lease file.

Two jobs on one storage root would both write `raw/.../batch_id=N` for their own batch N, and two
on one checkpoint would interleave Spark's offset log: either corrupts the data for good. Spark
does not notice a second process, so the job holds a lease: a small JSON file it creates only if
absent (Hadoop's `create(overwrite=false)`, on a local disk as on `gs://`) and renews every few
seconds. A second job finds it fresh and is refused. A holder that died is recognised without a
wait when it ran on this host (its pid is gone), else once it has not renewed for `ttl`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from pyspark.sql import SparkSession

log = logging.getLogger("spark_jobs.lease")

DEFAULT_TTL_SECONDS = 45.0
RENEW_EVERY_SECONDS = 10.0


class LeaseHeld(RuntimeError):
    """Another live job holds the lease."""


@dataclass(frozen=True)
class Holder:
    owner: str
    host: str
    pid: int
    renewed_at: float

    @classmethod
    def me(cls, owner: str) -> Holder:
        return cls(owner=owner, host=socket.gethostname(), pid=os.getpid(), renewed_at=time.time())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, renewed {max(0.0, time.time() - self.renewed_at):.0f} s ago"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease file at `location`, for one job. `acquire()` first, then `start_renewing()`."""

    def __init__(self, spark: SparkSession, location: str, purpose: str, ttl_seconds: float = DEFAULT_TTL_SECONDS):
        self.location = location
        self.purpose = purpose
        self.ttl = ttl_seconds
        self.owner = uuid.uuid4().hex
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        self._path = jvm.org.apache.hadoop.fs.Path(location)
        # A private instance, not the cached one Spark writes with, for the settings below: a local
        # disk's checksum side files would go stale whenever anything but Hadoop writes the lease
        # (an operator, a test), and a lease is a few bytes of JSON that is parsed anyway.
        self._fs = jvm.org.apache.hadoop.fs.FileSystem.newInstance(
            self._path.toUri(), spark.sparkContext._jsc.hadoopConfiguration()
        )
        self._fs.setVerifyChecksum(False)
        self._fs.setWriteChecksum(False)
        self._lost = threading.Event()
        self._stop = threading.Event()

    # ---- the file -------------------------------------------------------------------------

    def _read(self) -> Holder | None:
        try:
            stream = self._fs.open(self._path)
        except Exception as error:  # noqa: BLE001 - Py4J wraps FileNotFoundException
            if "FileNotFoundException" in str(error):
                return None
            raise
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError):
            # Half-written by a job that died while creating it: nobody holds it.
            return None

    def _write(self, overwrite: bool) -> None:
        stream = self._fs.create(self._path, overwrite)
        try:
            stream.write(json.dumps(asdict(Holder.me(self.owner))).encode("utf-8"))
        finally:
            stream.close()

    # ---- taking it ------------------------------------------------------------------------

    def _free(self, holder: Holder) -> bool:
        """Whether `holder` is certainly gone: it stopped renewing, or its process on this host ended
        (the same pid as ours is an earlier run, say in a container that restarted)."""
        if time.time() - holder.renewed_at > self.ttl:
            return True
        return holder.host == socket.gethostname() and (holder.pid == os.getpid() or not _pid_alive(holder.pid))

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming the job that holds it.

        A fresh lease of another host is watched for one renewal period: a live holder renews it
        (refused), a dead one does not and expires (taken once `ttl` has passed).
        """
        deadline = time.monotonic() + self.ttl + RENEW_EVERY_SECONDS
        first_seen = None
        while True:
            holder = self._read()
            if holder is None or self._free(holder):
                if holder is not None:
                    log.warning("taking over the %s lease of a job that is gone (%s)", self.purpose, holder.describe())
                    self._fs.delete(self._path, False)
                if self._create():
                    return
                holder = self._read()
            if holder is not None:
                if first_seen is not None and holder.renewed_at > first_seen.renewed_at or time.monotonic() > deadline:
                    raise LeaseHeld(self._refusal(holder))
                if holder.host == socket.gethostname():
                    raise LeaseHeld(self._refusal(holder))
                first_seen = first_seen or holder
            time.sleep(1.0)

    def _create(self) -> bool:
        try:
            self._write(overwrite=False)
        except Exception as error:  # noqa: BLE001 - Py4J wraps FileAlreadyExistsException
            if "AlreadyExists" in str(error) or "already exists" in str(error):
                return False
            raise
        holder = self._read()
        return holder is not None and holder.owner == self.owner

    def _refusal(self, holder: Holder) -> str:
        return (
            f"another streaming job holds the {self.purpose} ({holder.describe()}; lease {self.location}):"
            " one streaming job per storage root and checkpoint. Stop that job first; if it died on"
            f" another host, its lease expires {self.ttl:.0f} s after its last renewal"
        )

    # ---- keeping it -----------------------------------------------------------------------

    def start_renewing(self) -> None:
        threading.Thread(target=self._renew_until_stopped, name=f"lease-{self.purpose}", daemon=True).start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(RENEW_EVERY_SECONDS):
            try:
                holder = self._read()
                if holder is not None and holder.owner != self.owner:
                    log.error("the %s lease was taken by %s; this job stops writing", self.purpose, holder.describe())
                    self._lost.set()
                    return
                self._write(overwrite=True)
            except Exception as error:  # noqa: BLE001 - storage unreachable: try again next period
                log.warning("could not renew the %s lease (%s); retrying", self.purpose, str(error).splitlines()[0])

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def release(self) -> None:
        self._stop.set()
        try:
            holder = self._read()
            if holder is not None and holder.owner == self.owner:
                self._fs.delete(self._path, False)
        except Exception as error:  # noqa: BLE001 - a lease left behind only delays the next start on another host
            log.warning("could not release the %s lease: %s", self.purpose, str(error).splitlines()[0])
