"""Data lifecycle: delete what no reader needs any more, and roll up old speed windows.

    python -m spark_jobs.lifecycle [--dry-run]

Three retentions (docs/contract.md §11), the same on a local folder and on gs:// (Hadoop's
FileSystem, as raw_hours.py reads them):

1. raw micro-batch folders `raw/event_hour=H/batch_id=B` are deleted when hour H ended more than
   --raw-retention-days ago, the batch layer serves H from input up to streaming batch L (in
   `batch_served_hours`: published, no republication pending, not failed), and a complete
   compaction through N <= L exists: exactly the folders with B <= N go, and the compactions
   through fewer batches than N. Later (late-data) folders stay: the compaction does not hold them;
2. the 5-minute speed windows of hours the batch layer serves, ended more than
   --speed-retention-days ago, are rolled up into one row per key and hour, and their
   `speed_hour_batches` rows into one (SQL function `roll_up_speed_hour`, sql/migrations/V008);
3. quarantine folders `quarantine/batch_id=N` whose newest file is older than
   --quarantine-retention-days are deleted.

Every deletion is logged; a rerun finds nothing left to do. --dry-run logs the same, deletes
nothing.

Why deleting raw folders B <= N never changes what a reader gets: an hour is read up to the
committed batch C as the newest complete compaction through N' <= C plus the folders with
N' < B <= C (raw_hours.read_hour). Compaction N is complete and N <= L <= C for every reader
from now on (C only grows, and L was committed when the served run read it), so every reader
takes a compaction N' >= N and reads no folder B <= N': none of the deleted ones, nor an older
compaction. A compaction through M > N written meanwhile was computed through read_hour too, from
a compaction >= N, and is not read before its `_SUCCESS`. The only reader that could list a
folder B <= N is a run that started before batch N committed, days after its hour ended: its
hour is published from input L >= N, so its result would be refused as older (HourSuperseded),
and a missing file fails it rather than changes it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession

from common import job_args, secret_manager, settings
from common.cli_types import non_negative_int
from spark_jobs import postgres, raw_hours
from spark_jobs.batch import parse_hour
from spark_jobs.raw_hours import BATCH_PREFIX, COMPACTION_PREFIX
from spark_jobs.session import build_session, jvm_of
from spark_jobs.storage import StorageLayout, event_hour_name, event_hour_start

log = logging.getLogger("spark_jobs.lifecycle")

HOUR_PREFIX = "event_hour="
REQUIRED_TABLES = ("batch_hour_runs", "speed_hour_batches", "speed_drift_hours")
SERVED_HOURS = (
    "SELECT date, last_streaming_batch FROM batch_served_hours"
    " WHERE date + interval '1 hour' <= %s ORDER BY date"
)
SPEED_HOURS_TO_ROLL_UP = "SELECT date FROM speed_hours_to_roll_up(%s)"
ROLL_UP_SPEED_HOUR = "SELECT roll_up_speed_hour(%s)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spark_jobs.lifecycle",
        description="Delete raw micro-batches and quarantine past their retention, and roll up "
        "old speed windows (docs/contract.md §11).",
    )
    job_args.add_database_and_storage_args(parser, checkpoint_help=None)
    parser.add_argument(
        "--master", default=None, help="Spark master (default: local[*], or what spark-submit sets)"
    )
    parser.add_argument(
        "--raw-retention-days",
        type=non_negative_int,
        default=settings.raw_batch_retention_days(),
        help="days after an hour ended before its compacted micro-batch folders go "
        "(env RAW_BATCH_RETENTION_DAYS, default 3)",
    )
    parser.add_argument(
        "--speed-retention-days",
        type=non_negative_int,
        default=settings.speed_window_retention_days(),
        help="days after a served hour ended before its speed windows are rolled up "
        "(env SPEED_WINDOW_RETENTION_DAYS, default 7)",
    )
    parser.add_argument(
        "--quarantine-retention-days",
        type=non_negative_int,
        default=settings.quarantine_retention_days(),
        help="days after a quarantine folder was written before it goes "
        "(env QUARANTINE_RETENTION_DAYS, default 30)",
    )
    parser.add_argument(
        "--now",
        type=parse_hour,
        default=None,
        help="pretend the current time is this hour start (tests, catching up by hand)",
    )
    parser.add_argument(
        "--dry-run",
        nargs="?",
        const=True,
        default=False,
        type=true_or_false,
        help="log what would go, delete nothing (also --dry-run=true|false, as the DAG passes it)",
    )
    return parser.parse_args(argv)


def true_or_false(text: str) -> bool:
    if text.strip().lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.strip().lower() == "true"


# ---- pure decisions ---------------------------------------------------------------------------


def ended_before(event_hour: str, cutoff: datetime) -> bool:
    """Whether the hour named `event_hour` ended at or before `cutoff`."""
    # Moved to the side of `cutoff`: the end of an hour of year 9999 is past datetime's range.
    return event_hour_start(event_hour) <= cutoff - timedelta(hours=1)


def numbered(names: Iterable[str], prefix: str) -> list[int]:
    suffixes = (name[len(prefix) :] for name in names if name.startswith(prefix))
    return sorted(int(suffix) for suffix in suffixes if suffix.isdigit())


@dataclass(frozen=True)
class RawHourDeletion:
    """What goes of one hour: its micro-batch folders and older compactions covered by
    compaction `through_batch`."""

    event_hour: str
    through_batch: int
    batches: tuple[int, ...]
    compactions: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return not self.batches and not self.compactions


def raw_hour_deletion(
    event_hour: str,
    compacted_through: int,
    batch_names: Iterable[str],
    compaction_names: Iterable[str],
) -> RawHourDeletion:
    """The folders compaction `compacted_through` makes unreadable: batches B <= N (a reader of the
    hour reads no folder its compaction covers) and compactions through fewer batches."""
    return RawHourDeletion(
        event_hour,
        compacted_through,
        tuple(b for b in numbered(batch_names, BATCH_PREFIX) if b <= compacted_through),
        tuple(n for n in numbered(compaction_names, COMPACTION_PREFIX) if n < compacted_through),
    )


def expired_quarantine(newest_file_times: dict[str, datetime], cutoff: datetime) -> list[str]:
    """Quarantine folder names whose newest file was written before `cutoff`."""
    return sorted(name for name, written in newest_file_times.items() if written < cutoff)


# ---- files ------------------------------------------------------------------------------------


def _filesystem(spark: SparkSession, location: str):
    path = jvm_of(spark).org.apache.hadoop.fs.Path(location)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def newest_file_time(spark: SparkSession, folder: str) -> datetime:
    """When the newest entry of `folder` was written (the folder's own time when it is empty).

    The files' times, not the folder's: Cloud Storage has no real folders, and a folder's time
    there may be 0 or its first file's."""
    path, fs = _filesystem(spark, folder)
    times = [status.getModificationTime() for status in fs.listStatus(path)]
    millis = max(times) if times else fs.getFileStatus(path).getModificationTime()
    return datetime.fromtimestamp(millis / 1000, UTC)


def delete_folder(spark: SparkSession, location: str, dry_run: bool) -> None:
    if dry_run:
        log.info("dry run: would delete %s", location)
        return
    raw_hours.delete(spark, location)
    log.info("deleted %s", location)


def delete_if_empty(spark: SparkSession, location: str) -> None:
    """Remove an hour folder left empty. Not recursive: a folder the stream writes into meanwhile
    is not empty, and the filesystem refuses."""
    path, fs = _filesystem(spark, location)
    try:
        if fs.exists(path) and not fs.listStatus(path):
            fs.delete(path, False)
    except Exception as error:  # noqa: BLE001 - an empty folder left behind costs nothing
        log.info("kept %s: %s", location, error)


# ---- the three retentions ---------------------------------------------------------------------


def plan_raw_deletions(
    spark: SparkSession, layout: StorageLayout, served: dict[str, int], cutoff: datetime
) -> list[RawHourDeletion]:
    """Per served hour ended before `cutoff` with a complete compaction through N <= the served
    run's batch L: what goes. `served` is {event hour name: L}."""
    names = raw_hours.child_names(spark, layout.raw)
    hours = [name[len(HOUR_PREFIX) :] for name in names if name.startswith(HOUR_PREFIX)]
    plans = []
    for hour in sorted(h for h in hours if h in served and ended_before(h, cutoff)):
        compacted = raw_hours.newest_compaction(spark, layout, hour, served[hour])
        if compacted is None:
            log.info(
                "hour %s: served but not compacted through its batch %d; kept", hour, served[hour]
            )
            continue
        plan = raw_hour_deletion(
            hour,
            compacted,
            raw_hours.child_names(spark, layout.raw_hour(hour)),
            raw_hours.child_names(spark, layout.compacted_hour(hour)),
        )
        if not plan.empty:
            plans.append(plan)
    return plans


def delete_raw(
    spark: SparkSession, layout: StorageLayout, plans: list[RawHourDeletion], dry_run: bool
) -> int:
    """Delete the planned folders; returns how many."""
    deleted = 0
    for plan in plans:
        for batch in plan.batches:
            delete_folder(spark, layout.raw_batch(plan.event_hour, batch), dry_run)
        for through in plan.compactions:
            delete_folder(spark, layout.compaction(plan.event_hour, through), dry_run)
        if not dry_run:
            delete_if_empty(spark, layout.raw_hour(plan.event_hour))
        deleted += len(plan.batches) + len(plan.compactions)
        log.info(
            "hour %s: %d micro-batch folders and %d older compactions covered by compaction "
            "through batch %d %s",
            plan.event_hour,
            len(plan.batches),
            len(plan.compactions),
            plan.through_batch,
            "would go" if dry_run else "deleted",
        )
    return deleted


def delete_quarantine(
    spark: SparkSession, layout: StorageLayout, cutoff: datetime, dry_run: bool
) -> list[str]:
    names = [
        n for n in raw_hours.child_names(spark, layout.quarantine) if n.startswith(BATCH_PREFIX)
    ]
    written = {name: newest_file_time(spark, f"{layout.quarantine}/{name}") for name in names}
    expired = expired_quarantine(written, cutoff)
    for name in expired:
        delete_folder(spark, f"{layout.quarantine}/{name}", dry_run)
    return expired


def served_hours(dsn: str, cutoff: datetime) -> dict[str, int]:
    """{event hour name: last_streaming_batch} of the hours the batch layer serves that ended by
    `cutoff`."""
    with postgres.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(SERVED_HOURS, (cutoff,))
        rows = cur.fetchall()
    conn.close()
    return {event_hour_name(date): int(batch) for date, batch in rows}


def roll_up_speed_hours(dsn: str, cutoff: datetime, dry_run: bool) -> dict[datetime, int]:
    """{hour: windows removed} of the served hours ended by `cutoff` not rolled up yet; one
    transaction per hour, so that the stream and the publications wait for one hour at most."""
    conn = postgres.connect(dsn)
    conn.autocommit = True
    rolled: dict[datetime, int] = {}
    try:
        with conn.cursor() as cur:
            cur.execute(SPEED_HOURS_TO_ROLL_UP, (cutoff,))
            hours = [row[0] for row in cur.fetchall()]
            for hour in hours:
                if dry_run:
                    log.info("dry run: would roll up the speed windows of hour %s", hour)
                    continue
                cur.execute(ROLL_UP_SPEED_HOUR, (hour,))
                row = cur.fetchone()
                rolled[hour] = int(row[0]) if row else 0
    finally:
        conn.close()
    if rolled:
        log.info(
            "rolled up the speed windows of %d hours (%s to %s): %d windows removed",
            len(rolled),
            min(rolled),
            max(rolled),
            sum(rolled.values()),
        )
    return rolled


# ---- the job ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleReport:
    raw_folders: int
    speed_hours: int
    quarantine_folders: int


def run(args: argparse.Namespace) -> LifecycleReport:
    postgres.require_tables(args.pg_dsn, REQUIRED_TABLES)
    spark = build_session("data-lifecycle", args.master)
    return run_with_session(spark, args)


def run_with_session(spark: SparkSession, args: argparse.Namespace) -> LifecycleReport:
    now = args.now or datetime.now(UTC)
    layout = StorageLayout(args.storage_root)
    raw_cutoff = now - timedelta(days=args.raw_retention_days)
    plans = plan_raw_deletions(spark, layout, served_hours(args.pg_dsn, raw_cutoff), raw_cutoff)
    raw_folders = delete_raw(spark, layout, plans, args.dry_run)
    rolled = roll_up_speed_hours(
        args.pg_dsn, now - timedelta(days=args.speed_retention_days), args.dry_run
    )
    quarantine = delete_quarantine(
        spark, layout, now - timedelta(days=args.quarantine_retention_days), args.dry_run
    )
    report = LifecycleReport(raw_folders, len(rolled), len(quarantine))
    log.info(
        "lifecycle%s: %d raw folders, speed windows of %d hours rolled up, %d quarantine folders",
        " (dry run)" if args.dry_run else "",
        report.raw_folders,
        report.speed_hours,
        report.quarantine_folders,
    )
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    args.pg_dsn = secret_manager.resolve_pg_dsn(args.pg_dsn, args.pg_dsn_secret)
    try:
        run(args)
    except (
        postgres.DatabaseUnavailable,
        postgres.SchemaNotMigrated,
        postgres.InvalidDsn,
    ) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
