"""One streaming job per storage root and checkpoint (docs/contract.md §5), by a lease.

Two jobs on one storage root would both write `raw/.../batch_id=N` for their own batch N, and two
on one checkpoint would interleave Spark's offset log: either corrupts the data for good. Spark
does not notice a second process, so the job holds a lease: a folder of numbered files
`<location>/<generation>.json`, of which the highest is the holder's. A file is only ever
created if absent (O_EXCL on a local disk; on `gs://`, Hadoop's `create(overwrite=false)`,
which the Cloud Storage connector turns into a create-only-if-absent request), so two jobs can
never both take one generation, and taking over is creating the next generation, never deleting
someone else's file. The holder rewrites its file every few seconds.

A second job finds the holder's file changing and is refused. A holder that died is recognised
without a wait when it ran on this host (its pid is gone), else once its file has not changed
for `ttl` seconds, as watched by the newcomer's own clock (no two clocks are compared). A holder
that cannot renew for that long, or sees a higher generation, knows it lost the lease.
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
from urllib.parse import urlsplit

from pyspark.sql import SparkSession

from spark_jobs.session import jvm_of

log = logging.getLogger("spark_jobs.lease")

DEFAULT_TTL_SECONDS = 45.0
RENEW_EVERY_SECONDS = 10.0
POLL_SECONDS = 1.0


class LeaseHeld(RuntimeError):
    """Another live job holds the lease."""


@dataclass(frozen=True)
class Holder:
    owner: str
    host: str
    pid: int

    @classmethod
    def me(cls, owner: str) -> Holder:
        return cls(owner=owner, host=socket.gethostname(), pid=os.getpid())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


UNKNOWN_HOLDER = Holder(owner="", host="?", pid=0)


@dataclass(frozen=True)
class Generation:
    number: int
    holder: Holder
    modified: int  # the storage's modification time, only ever compared with itself

    @property
    def file_name(self) -> str:
        return generation_file(self.number)


def generation_file(number: int) -> str:
    return f"{number:012d}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """The lease folder at `location`, for one job: `acquire()`, `start_renewing()`, `release()`."""

    def __init__(
        self,
        spark: SparkSession,
        location: str,
        purpose: str,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ):
        self.location = location.rstrip("/")
        self.purpose = purpose
        self.ttl = ttl_seconds
        self.owner = uuid.uuid4().hex
        self.number: int | None = None
        jvm = jvm_of(spark)
        self._jvm = jvm
        folder = jvm.org.apache.hadoop.fs.Path(self.location)
        # A private instance, not the cached one Spark writes with, for the settings below: a local
        # disk's checksum side files would go stale whenever anything but Hadoop writes a lease
        # file (an operator, a test), and a lease is a few bytes of JSON that is parsed anyway.
        self._fs = jvm.org.apache.hadoop.fs.FileSystem.newInstance(
            folder.toUri(), spark.sparkContext._jsc.hadoopConfiguration()
        )
        self._fs.setVerifyChecksum(False)
        self._fs.setWriteChecksum(False)
        self._local_folder = _local_path(self.location)
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._last_renewed = time.monotonic()

    # ---- the files ------------------------------------------------------------------------

    def _path(self, file_name: str):
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.location}/{file_name}")

    def _numbers(self) -> list[int]:
        folder = self._jvm.org.apache.hadoop.fs.Path(self.location)
        if not self._fs.exists(folder):
            return []
        names = [status.getPath().getName() for status in self._fs.listStatus(folder)]
        return sorted(
            int(name[:-5]) for name in names if name.endswith(".json") and name[:-5].isdigit()
        )

    def _current(self) -> Generation | None:
        """The highest generation, or None when nobody ever held the lease."""
        numbers = self._numbers()
        if not numbers:
            return None
        path = self._path(generation_file(numbers[-1]))
        try:
            modified = self._fs.getFileStatus(path).getModificationTime()
            stream = self._fs.open(path)
        except Exception as error:  # Py4J wraps FileNotFoundException: taken meanwhile
            if "FileNotFoundException" in str(error):
                return self._current()
            raise
        try:
            text = self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
        try:
            holder = Holder(**json.loads(text))
        except (ValueError, TypeError):
            # Cut short by a job that died while writing it: judged by its age alone.
            holder = UNKNOWN_HOLDER
        return Generation(numbers[-1], holder, modified)

    def _content(self) -> bytes:
        return json.dumps(asdict(Holder.me(self.owner))).encode("utf-8")

    def _create_exclusive(self, number: int) -> bool:
        """Create generation `number`'s file only if absent; False when another job was first."""
        if self._local_folder is not None:
            os.makedirs(self._local_folder, exist_ok=True)
            try:
                descriptor = os.open(
                    os.path.join(self._local_folder, generation_file(number)),
                    os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                )
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as file:
                file.write(self._content())
            return True
        try:
            stream = self._fs.create(self._path(generation_file(number)), False)
            try:
                stream.write(self._content())
            finally:
                stream.close()
        except Exception as error:  # Py4J wraps FileAlreadyExistsException / a 412
            if any(marker in str(error) for marker in ("AlreadyExists", "already exists", "412")):
                return False
            raise
        return True

    def _rewrite(self) -> None:
        assert self.number is not None, "only the holder of a generation rewrites it"
        stream = self._fs.create(self._path(generation_file(self.number)), True)
        try:
            stream.write(self._content())
        finally:
            stream.close()

    # ---- taking it ------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeld naming the job that holds it.

        A holder of another host is watched: its file changing means it is alive (refused); a file
        that stays as it is for `ttl` seconds is a dead holder's (taken).
        """
        watched: Generation | None = None
        watched_since = time.monotonic()
        while True:
            current = self._current()
            if (
                current is None
                or self._certainly_gone(current)
                or (
                    watched is not None
                    and current == watched
                    and time.monotonic() - watched_since > self.ttl
                )
            ):
                if current is not None:
                    log.warning(
                        "taking over the %s lease of a job that is gone (%s)",
                        self.purpose,
                        current.holder.describe(),
                    )
                number = 0 if current is None else current.number + 1
                if self._create_exclusive(number):
                    self.number = number
                    self._last_renewed = time.monotonic()
                    self._forget_older(number)
                    return
                continue  # another job took that generation first: judge it like any holder
            if (
                watched is not None
                and current != watched
                or current.holder.host == socket.gethostname()
            ):
                raise LeaseHeld(self._refusal(current))
            if watched is None:
                watched, watched_since = current, time.monotonic()
            time.sleep(POLL_SECONDS)

    def _certainly_gone(self, current: Generation) -> bool:
        """A holder on this host whose process ended (the same pid as ours is an earlier run, say
        in a container that restarted)."""
        holder = current.holder
        return holder.host == socket.gethostname() and (
            holder.pid == os.getpid() or not _pid_alive(holder.pid)
        )

    def _forget_older(self, number: int) -> None:
        for older in (n for n in self._numbers() if n < number):
            self._fs.delete(self._path(generation_file(older)), False)

    def _refusal(self, current: Generation) -> str:
        return (
            f"another streaming job holds the {self.purpose} ({current.holder.describe()}; lease "
            f"{self.location}):"
            " one streaming job per storage root and checkpoint. Stop that job first; if it died on"
            f" another host, its lease is free {self.ttl:.0f} s after its last renewal"
        )

    # ---- keeping it -----------------------------------------------------------------------

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{self.purpose}", daemon=True
        )
        self._renewer.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(RENEW_EVERY_SECONDS):
            try:
                current = self._current()
                if current is not None and current.number != self.number:
                    log.error(
                        "the %s lease was taken by %s; this job stops writing",
                        self.purpose,
                        current.holder.describe(),
                    )
                    self._lost.set()
                    return
                self._rewrite()
                self._last_renewed = time.monotonic()
            except Exception as error:  # noqa: BLE001 - storage unreachable: try again next period
                log.warning(
                    "could not renew the %s lease (%s); retrying",
                    self.purpose,
                    str(error).splitlines()[0],
                )
            # Past this, a newcomer may rightly think us dead and take over: stop writing first.
            if time.monotonic() - self._last_renewed > self.ttl - RENEW_EVERY_SECONDS:
                log.error(
                    "the %s lease could not be renewed for %.0f s; this job stops writing",
                    self.purpose,
                    self.ttl,
                )
                self._lost.set()
                return

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=60)
        try:
            if self.number is not None and not self.lost:
                current = self._current()
                if current is not None and current.number == self.number:
                    self._fs.delete(self._path(generation_file(self.number)), False)
        except Exception as error:  # noqa: BLE001 - a lease left behind only delays the next start on another host
            log.warning(
                "could not release the %s lease: %s", self.purpose, str(error).splitlines()[0]
            )
        self._close_filesystem()

    def _close_filesystem(self) -> None:
        try:
            self._fs.close()
        except Exception:  # noqa: BLE001 - the JVM is gone already (a SIGTERM to the process group)
            log.debug("the %s lease's file system was closed with the JVM", self.purpose)


def _local_path(location: str) -> str | None:
    """The folder on this machine's disk, or None for object storage (gs://...)."""
    parts = urlsplit(location)
    if parts.scheme in ("", "file"):
        return parts.path if parts.scheme else location
    return None
