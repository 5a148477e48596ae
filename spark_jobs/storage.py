"""Where the streaming job keeps its files under STORAGE_ROOT (a local folder or gs://...).

    raw/event_hour=YYYY-MM-DD-HH/batch_id=N/part-*.parquet  valid events of micro-batch N
    compacted/event_hour=YYYY-MM-DD-HH/through_batch=N/     a closed hour up to batch N, one file
    quarantine/batch_id=N/part-*.parquet                    rejected records of micro-batch N
    checkpoints/streaming/                                  Spark's offsets and commits
    leases/streaming/, checkpoints/streaming.lease/         the running streaming job's leases

A micro-batch rewrites exactly its own `batch_id=N` folders, so replaying it after a crash
replaces its files instead of adding to them; Spark's commit log under the checkpoint says which
batches are final, and readers of raw/ keep to those (spark_jobs/raw_hours.py reads an hour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

RAW_PARTITION_COLUMNS = ("event_hour", "batch_id")
EVENT_HOUR_FORMAT = "%Y-%m-%d-%H"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_hour_name(moment: datetime) -> str:
    """The partition name of the UTC hour holding `moment`, as Spark's `yyyy-MM-dd-HH` writes it.

    Not strftime: on Linux its %Y drops the leading zeros of years before 1000, and every year
    from 1 to 9999 is a valid event time.
    """
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}-{utc.hour:02d}"


def event_hour_of_epoch(epoch_seconds: int) -> str:
    return event_hour_name(EPOCH + timedelta(seconds=epoch_seconds))


def event_hour_start(name: str) -> datetime:
    """The start of the hour a partition name stands for."""
    return datetime.strptime(name, EVENT_HOUR_FORMAT).replace(tzinfo=UTC)


def iso_hour(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` for any year from 1 to 9999 (strftime drops leading zeros)."""
    return f"{event_hour_name(moment)[:10]}T{moment.astimezone(UTC):%H:%M:%S}Z"


@dataclass(frozen=True)
class StorageLayout:
    root: str

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def raw(self) -> str:
        return self._path("raw")

    @property
    def compacted(self) -> str:
        return self._path("compacted")

    @property
    def quarantine(self) -> str:
        return self._path("quarantine")

    @property
    def streaming_lease(self) -> str:
        """The file that gives one streaming job at a time this storage root
        (spark_jobs/lease.py)."""
        return self._path("leases", "streaming")

    @property
    def streaming_checkpoint(self) -> str:
        return self._path("checkpoints", "streaming")

    def raw_hour(self, event_hour: str) -> str:
        return self._path("raw", f"event_hour={event_hour}")

    def raw_batch(self, event_hour: str, batch_id: int) -> str:
        return self._path("raw", f"event_hour={event_hour}", f"batch_id={batch_id}")

    def quarantine_batch(self, batch_id: int) -> str:
        return self._path("quarantine", f"batch_id={batch_id}")

    def compacted_hour(self, event_hour: str) -> str:
        return self._path("compacted", f"event_hour={event_hour}")

    def compaction(self, event_hour: str, through_batch: int) -> str:
        return self._path("compacted", f"event_hour={event_hour}", f"through_batch={through_batch}")
