"""One event hour of raw data: reading exactly its committed events, and compacting it.

The streaming job writes one small file per micro-batch and event hour; an hour of a 2-second
trigger is 1,800 of them, and opening them costs the batch layer more than summing their rows.
So once an hour has closed the streaming job compacts it into one file, in a folder that names
the newest micro-batch it covers:

    compacted/event_hour=H/through_batch=N/part-*.parquet + _SUCCESS

Spark writes `_SUCCESS` after every file is in place, so a folder without it (a compaction cut
short) is never read. A reader of hour H up to the committed batch C takes the newest complete
compaction with N <= C, plus the raw micro-batch folders with N < batch_id <= C: late events
that arrived after the compaction still count, and nothing is read twice. Compaction never
deletes: the micro-batch files stay until the data lifecycle (spark_jobs/lifecycle.py,
docs/contract.md §11) deletes those a compaction covers, once their hour is published and old.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.events import EVENT_COLUMNS
from spark_jobs.session import jvm_of
from spark_jobs.storage import StorageLayout, event_hour_name, event_hour_start

log = logging.getLogger("spark_jobs.raw_hours")

RAW_COLUMNS = (*EVENT_COLUMNS, "kafka_partition", "kafka_offset")
HOUR_COLUMNS = (*RAW_COLUMNS, "batch_id")
# Given to the reader, so it does not start a Spark job to infer what the streaming job wrote.
RAW_SCHEMA = (
    "bytes bigint, timestamp bigint, app string, id string, antenna_id string,"
    " kafka_partition int, kafka_offset bigint"
)
COMPACTED_SCHEMA = f"{RAW_SCHEMA}, batch_id bigint"
# Several row groups per compacted file, so that Spark reads one file with every core.
COMPACTED_ROW_GROUP_BYTES = 8 * 1024 * 1024
SUCCESS_MARKER = "_SUCCESS"
BATCH_PREFIX = "batch_id="
COMPACTION_PREFIX = "through_batch="


# ---- files ------------------------------------------------------------------------------------


def _filesystem(spark: SparkSession, location: str):
    jvm = jvm_of(spark)
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def exists(spark: SparkSession, location: str) -> bool:
    path, fs = _filesystem(spark, location)
    return fs.exists(path)


def child_names(spark: SparkSession, location: str) -> list[str]:
    """Names in a folder (local or gs://), or none when it does not exist: one listing call."""
    path, fs = _filesystem(spark, location)
    if not fs.exists(path):
        return []
    # The names come back as one string: an hour holds up to a few thousand micro-batch folders,
    # and two Py4J calls per entry would cost a second. (Scala's generic array wrapper is the one
    # JVM helper Py4J lets a Path[] through to.)
    jvm = jvm_of(spark)
    listing = jvm.scala.Predef.genericWrapArray(
        jvm.org.apache.hadoop.fs.FileUtil.stat2Paths(fs.listStatus(path))
    ).mkString("\n")
    return [entry.rsplit("/", 1)[-1] for entry in listing.split("\n") if entry]


def read_text(spark: SparkSession, location: str) -> str:
    """A small text file (local or gs://), whole."""
    path, fs = _filesystem(spark, location)
    stream = fs.open(path)
    try:
        return jvm_of(spark).org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def logged_end_offsets(
    spark: SparkSession, checkpoint: str, batch_id: int
) -> dict[str, dict[str, int]]:
    """{topic: {partition: offset}} where micro-batch `batch_id` ends, from the checkpoint's offset
    log (Spark writes it before the batch runs; batch N reads from batch N-1's end to its own)."""
    lines = read_text(spark, f"{checkpoint.rstrip('/')}/offsets/{batch_id}").splitlines()
    # Line 1 is the log's version, line 2 the batch's metadata, then one line per source.
    return json.loads(lines[2])


def delete(spark: SparkSession, location: str) -> None:
    """Delete a file or folder (local or gs://), fine when it does not exist."""
    path, fs = _filesystem(spark, location)
    fs.delete(path, True)


def last_committed_batch(spark: SparkSession, checkpoint: str) -> int | None:
    """The newest micro-batch in the streaming checkpoint's commit log.

    Batches commit in order and a batch is replayed only while it is uncommitted, so every
    batch id up to this one is final. None when the streaming job never committed a batch.
    """
    names = child_names(spark, f"{checkpoint.rstrip('/')}/commits")
    return max((int(name) for name in names if name.isdigit()), default=None)


def _numbers(names: list[str], prefix: str) -> list[int]:
    suffixes = (name[len(prefix) :] for name in names if name.startswith(prefix))
    return [int(suffix) for suffix in suffixes if suffix.isdigit()]


# ---- reading ----------------------------------------------------------------------------------


def newest_compaction(
    spark: SparkSession, layout: StorageLayout, event_hour: str, through_batch: int
) -> int | None:
    """The newest complete compaction of the hour covering no batch after `through_batch`."""
    candidates = sorted(
        (
            n
            for n in _numbers(
                child_names(spark, layout.compacted_hour(event_hour)), COMPACTION_PREFIX
            )
            if n <= through_batch
        ),
        reverse=True,
    )
    return next(
        (
            n
            for n in candidates
            if exists(spark, f"{layout.compaction(event_hour, n)}/{SUCCESS_MARKER}")
        ),
        None,
    )


def raw_batches(
    spark: SparkSession, layout: StorageLayout, event_hour: str, after: int, through: int
) -> list[int]:
    """The hour's micro-batch folders with after < batch_id <= through."""
    return sorted(
        n
        for n in _numbers(child_names(spark, layout.raw_hour(event_hour)), BATCH_PREFIX)
        if after < n <= through
    )


def read_hour(
    spark: SparkSession, layout: StorageLayout, event_hour: str, through_batch: int
) -> DataFrame | None:
    """Every raw row of the hour from micro-batches up to `through_batch`, each exactly once
    (HOUR_COLUMNS), or None when there is none. Only this hour's folders are listed."""
    compacted = newest_compaction(spark, layout, event_hour, through_batch)
    parts = []
    if compacted is not None:
        parts.append(
            spark.read.schema(COMPACTED_SCHEMA).parquet(layout.compaction(event_hour, compacted))
        )
    batches = raw_batches(
        spark,
        layout,
        event_hour,
        after=-1 if compacted is None else compacted,
        through=through_batch,
    )
    if batches:
        # basePath turns the folder names back into the batch_id column.
        folders = [layout.raw_batch(event_hour, n) for n in batches]
        parts.append(spark.read.schema(RAW_SCHEMA).option("basePath", layout.raw).parquet(*folders))
    if not parts:
        return None
    columns = [
        F.col(c).cast("bigint").alias(c) if c == "batch_id" else F.col(c) for c in HOUR_COLUMNS
    ]
    return reduce(DataFrame.unionByName, (part.select(*columns) for part in parts))


# ---- compacting -------------------------------------------------------------------------------


def compact_hour(
    spark: SparkSession, layout: StorageLayout, event_hour: str, through_batch: int
) -> bool:
    """Rewrite the hour up to `through_batch` (committed batches only) as one file.

    Idempotent: a complete compaction through the same batch is kept, so replaying the
    micro-batch that ran it changes nothing. Returns whether it wrote one.
    """
    target = layout.compaction(event_hour, through_batch)
    if exists(spark, f"{target}/{SUCCESS_MARKER}"):
        return False
    rows = read_hour(spark, layout, event_hour, through_batch)
    if rows is None:
        return False
    rows.coalesce(1).write.mode("overwrite").option(
        "parquet.block.size", COMPACTED_ROW_GROUP_BYTES
    ).parquet(target)
    return True


class ClosedHourCompaction:
    """Which hours the streaming job still has to compact, and compacting those that have closed.

    An hour is compacted once it ended `delay` ago (wall clock), through the newest micro-batch
    that wrote to it, as soon as that batch has committed. A late event reopens its hour: the
    next compaction covers the previous one plus the new batches. Failures are logged and retried
    at the next micro-batch: compaction only ever makes reading faster, never different.

    The running stream compacts on a thread of its own (`compact_in_background`): an hour at
    10,000 events/s takes minutes to rewrite, and micro-batches that waited for it would fall
    that far behind. It is one Spark task (`compact_hour` writes one file), so it holds one core
    and leaves the others to the micro-batches. Micro-batches keep calling `wrote` meanwhile,
    hence the lock.
    """

    # After a restart, hours this recent are checked for micro-batches no compaction covers.
    RECOVERY_WINDOW = timedelta(hours=24)

    def __init__(self, spark: SparkSession, layout: StorageLayout, delay: timedelta):
        self.spark = spark
        self.layout = layout
        self.delay = delay
        self.pending: dict[str, int] = {}
        self._recovered = False
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def wrote(self, event_hours: set[str], batch_id: int) -> None:
        with self._lock:
            for hour in event_hours:
                self.pending[hour] = max(batch_id, self.pending.get(hour, -1))

    def compact_closed_hours(self, current_batch: int, now: datetime | None = None) -> list[str]:
        """Compact, before returning, every closed hour whose newest batch is before
        `current_batch` (the running micro-batch, or one past the last committed)."""
        now = now or datetime.now(UTC)
        if not self._recovered:
            self._recover(current_batch, now)
        done = []
        for hour, newest in self._due(current_batch, now):
            try:
                compact_hour(self.spark, self.layout, hour, newest)
            except Exception as error:  # noqa: BLE001 - a failed compaction must not stop the stream
                log.warning(
                    "compaction of hour %s through batch %d failed, retried later: %s",
                    hour,
                    newest,
                    error,
                )
                continue
            self._covered(hour, newest)
            done.append(hour)
        return done

    def compact_in_background(self, current_batch: int, now: datetime | None = None) -> bool:
        """Start `compact_closed_hours` on the compaction thread and return at once; nothing when
        that thread still runs (the next micro-batch asks again) or no hour is due. Returns
        whether it started."""
        if self.compacting():
            return False
        if self._recovered and not self._due(current_batch, now or datetime.now(UTC)):
            return False
        self._worker = threading.Thread(
            target=self._compact_and_log,
            args=(current_batch, now),
            name="hour-compaction",
            # A stopping job does not wait: a compaction cut short has no _SUCCESS, is never
            # read, and the next start finds its hour again (`_recover`).
            daemon=True,
        )
        self._worker.start()
        return True

    def compacting(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def wait(self) -> None:
        """Until the compaction thread, if one runs, has finished."""
        if self._worker is not None:
            self._worker.join()

    def _compact_and_log(self, current_batch: int, now: datetime | None) -> None:
        started = time.monotonic()
        try:
            done = self.compact_closed_hours(current_batch, now)
        except Exception as error:  # noqa: BLE001 - a thread's exception would only be printed
            log.warning("looking for hours to compact failed, retried later: %s", error)
            return
        if done:
            log.info(
                "compacted hours %s in %.1f s, beside the micro-batches",
                ", ".join(done),
                time.monotonic() - started,
            )

    def _due(self, current_batch: int, now: datetime) -> list[tuple[str, int]]:
        """Closed hours whose newest batch has committed, oldest first, with that batch."""
        with self._lock:
            return [
                (hour, newest)
                for hour, newest in sorted(self.pending.items())
                if newest < current_batch and self._closed(hour, now)
            ]

    def _covered(self, hour: str, newest: int) -> None:
        with self._lock:
            # A micro-batch that wrote to the hour while it was compacted keeps it pending.
            if self.pending.get(hour) == newest:
                del self.pending[hour]

    def _closed(self, event_hour: str, now: datetime) -> bool:
        # Moved to the side of `now`: the end of an hour of year 9999 is past datetime's range.
        return event_hour_start(event_hour) <= now - timedelta(hours=1) - self.delay

    def _recover(self, current_batch: int, now: datetime) -> None:
        """After a (re)start: recent hours whose committed micro-batches outrun their compaction.
        Marked done only once it succeeded: a listing that failed is tried again."""
        oldest = event_hour_name(now - self.RECOVERY_WINDOW)
        hours = [
            name.split("=", 1)[1]
            for name in child_names(self.spark, self.layout.raw)
            if name.startswith("event_hour=")
        ]
        for hour in (h for h in hours if h >= oldest):
            committed = raw_batches(self.spark, self.layout, hour, -1, current_batch - 1)
            compacted = newest_compaction(self.spark, self.layout, hour, current_batch - 1)
            if committed and (compacted is None or max(committed) > compacted):
                self.wrote({hour}, max(committed))
        self._recovered = True
