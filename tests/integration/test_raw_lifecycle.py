"""The raw files' lifecycle (spark_jobs/lifecycle.py) with real Spark on real files, on a local
folder and on gs:// (the Cloud Storage emulator): the micro-batch folders a compaction covers go
once the hour is published and old enough, the batch layer then reads exactly the same rows, and
nothing goes of an hour that is not published, not compacted, too recent, failed or waiting for
its republication; a late-data folder newer than the compaction stays; old quarantine goes."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from devtools.gcs_emulator import GcsEmulator
from devtools.maven import ensure_jars, gcs_connector_jars
from spark_jobs import lifecycle, raw_hours
from spark_jobs.raw_hours import COMPACTED_SCHEMA, RAW_SCHEMA, SUCCESS_MARKER
from spark_jobs.storage import StorageLayout, event_hour_start
from tests.integration.conftest import execute, run_module

pytestmark = [pytest.mark.services, pytest.mark.spark]

NOW = "2026-12-10T00:00:00Z"
# Ended more than the 3 days of raw retention before NOW, but for RECENT.
PUBLISHED = "2026-11-27-10"  # compacted through 2 (and through 1 before), late batch 5 after
UNPUBLISHED = "2026-11-27-11"  # compacted, never published
UNCOMPACTED = "2026-11-27-12"  # published, never compacted
PENDING = "2026-11-27-13"  # compacted, published, then late data: republication pending
FAILED = "2026-11-27-14"  # compacted, its last run failed the gate
RECENT = "2026-12-09-10"  # compacted and published, ended less than 3 days before NOW
BATCHES = {
    PUBLISHED: (0, 1, 2, 5),
    UNPUBLISHED: (0, 1),
    UNCOMPACTED: (0, 1),
    PENDING: (0, 1),
    FAILED: (0, 1),
    RECENT: (7, 8),
}
COMPACTIONS = {
    PUBLISHED: (1, 2),
    UNPUBLISHED: (1,),
    PENDING: (1,),
    FAILED: (1,),
    RECENT: (8,),
}
RUN_BATCH = {PUBLISHED: 5, UNCOMPACTED: 1, PENDING: 1, RECENT: 8}
BUCKET = "usage-platform"


def hour_rows(event_hour: str, batch: int) -> list[tuple]:
    start = int(event_hour_start(event_hour).timestamp())
    return [
        (
            100 * batch + n,
            start + 60 * n + batch,
            "SKYPE",
            f"device-{n}",
            "antenna-1",
            n % 2,
            10 * batch + n,
        )
        for n in range(3)
    ]


def write_hours(spark, layout: StorageLayout) -> None:
    """Every micro-batch folder in one Spark write (the stream's layout is a partitioned write),
    the compactions of the hours kept as they are in another, each with its `_SUCCESS`; the one
    the deletion relies on by raw_hours.compact_hour itself, over the compaction before it."""
    batch_rows = [
        (*row, hour, batch)
        for hour, batches in BATCHES.items()
        for batch in batches
        for row in hour_rows(hour, batch)
    ]
    spark.createDataFrame(
        batch_rows, f"{RAW_SCHEMA}, event_hour string, batch_id int"
    ).write.partitionBy("event_hour", "batch_id").parquet(layout.raw)
    compacted = [(hour, through) for hour, throughs in COMPACTIONS.items() for through in throughs]
    by_hand = [(hour, through) for hour, through in compacted if (hour, through) != (PUBLISHED, 2)]
    compaction_rows = [
        (*row, batch, hour, through)
        for hour, through in by_hand
        for batch in BATCHES[hour]
        if batch <= through
        for row in hour_rows(hour, batch)
    ]
    spark.createDataFrame(
        compaction_rows, f"{COMPACTED_SCHEMA}, event_hour string, through_batch int"
    ).write.partitionBy("event_hour", "through_batch").parquet(layout.compacted)
    for hour, through in by_hand:
        Path(layout.compaction(hour, through), SUCCESS_MARKER).touch()
    assert raw_hours.compact_hour(spark, layout, PUBLISHED, 2)


def record_publications(dsn: str) -> None:
    """batch_hour_runs of the published hours, the stream's counts per batch, and the failure."""
    for hour, batches in BATCHES.items():
        for batch in batches:
            execute(
                dsn,
                "INSERT INTO speed_hour_batches VALUES (%s, %s, 3, 1)",
                (event_hour_start(hour), batch),
            )
    execute(
        dsn, "INSERT INTO speed_hour_batches VALUES (%s, 6, 1, 1)", (event_hour_start(PENDING),)
    )
    for hour, batch in RUN_BATCH.items():
        execute(
            dsn,
            "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
            " last_streaming_batch) VALUES (%s, 1, 1, 0, %s)",
            (event_hour_start(hour), batch),
        )
    execute(
        dsn,
        "INSERT INTO batch_hour_failures (date, failed_checks, details, last_streaming_batch)"
        " VALUES (%s, 'raw_rows_equal_speed_events', 'x', 1)",
        (event_hour_start(FAILED),),
    )


def read_every_hour(spark, layout: StorageLayout) -> dict[str, list]:
    """What the batch layer reads of each hour, up to the newest batch (as a run would)."""
    parts = [
        raw_hours.read_hour(spark, layout, hour, 9).withColumn("hour", F.lit(hour))
        for hour in BATCHES
    ]
    rows = reduce(DataFrame.unionByName, parts).collect()  # one Spark job for every hour
    read: dict[str, list] = {hour: [] for hour in BATCHES}
    for row in rows:
        read[row["hour"]].append(tuple(row))
    return {hour: sorted(hour_rows) for hour, hour_rows in read.items()}


def folders(spark, layout: StorageLayout) -> set[str]:
    names = set()
    for hour in BATCHES:
        names |= {f"raw/{hour}/{n}" for n in raw_hours.child_names(spark, layout.raw_hour(hour))}
        names |= {
            f"compacted/{hour}/{n}"
            for n in raw_hours.child_names(spark, layout.compacted_hour(hour))
        }
    return names


def lifecycle_args(dsn: str, root: str, *extra: str) -> list[str]:
    return ["--pg-dsn", dsn, "--storage-root", root, "--now", NOW, "--master", "local[2]", *extra]


def expected_after(before: set[str]) -> set[str]:
    gone = {f"raw/{PUBLISHED}/batch_id={b}" for b in (0, 1, 2)}
    gone.add(f"compacted/{PUBLISHED}/through_batch=1")
    assert gone <= before
    return before - gone


def test_compacted_published_old_batches_go_and_the_batch_layer_reads_the_same(
    spark, scratch_dsn, tmp_path
):
    layout = StorageLayout(str(tmp_path / "storage"))
    write_hours(spark, layout)
    record_publications(scratch_dsn)
    quarantine_old, quarantine_new = layout.quarantine_batch(3), layout.quarantine_batch(4)
    for folder, written in ((quarantine_old, "2026-11-01"), (quarantine_new, "2026-11-30")):
        Path(folder).mkdir(parents=True)
        part = Path(folder) / "part-0.parquet"
        part.write_bytes(b"rejected")
        moment = datetime.fromisoformat(f"{written}T00:00:00+00:00").timestamp()
        os.utime(part, (moment, moment))
    read_before, folders_before = read_every_hour(spark, layout), folders(spark, layout)

    dry = lifecycle.run_with_session(
        spark, lifecycle.parse_args(lifecycle_args(scratch_dsn, layout.root, "--dry-run"))
    )
    assert (dry.raw_folders, dry.quarantine_folders) == (4, 1)
    assert folders(spark, layout) == folders_before and Path(quarantine_old).exists()

    report = lifecycle.run_with_session(
        spark, lifecycle.parse_args(lifecycle_args(scratch_dsn, layout.root))
    )

    assert (report.raw_folders, report.quarantine_folders) == (4, 1)
    assert folders(spark, layout) == expected_after(folders_before)
    assert read_every_hour(spark, layout) == read_before
    assert not Path(quarantine_old).exists() and Path(quarantine_new).exists()
    # The compaction that makes the deleted folders unnecessary is complete and still there.
    assert Path(layout.compaction(PUBLISHED, 2), SUCCESS_MARKER).exists()
    again = lifecycle.run_with_session(
        spark, lifecycle.parse_args(lifecycle_args(scratch_dsn, layout.root))
    )
    assert (again.raw_folders, again.quarantine_folders) == (0, 0)


@pytest.fixture
def emulator(tmp_path):
    ensure_jars(gcs_connector_jars())
    emulator = GcsEmulator.start(tmp_path / "fake-gcs-server.log")
    emulator.create_bucket(BUCKET)
    yield emulator
    emulator.stop()


def upload(emulator: GcsEmulator, local_root: Path, prefix: str) -> None:
    for path in local_root.rglob("*"):
        if path.is_file() and not path.name.endswith(".crc"):
            emulator.write(BUCKET, f"{prefix}/{path.relative_to(local_root)}", path.read_bytes())


def folder_names(emulator: GcsEmulator, prefix: str) -> set[str]:
    """raw/<hour>/batch_id=N and compacted/<hour>/through_batch=N holding objects."""
    names = set()
    for name in emulator.object_names(BUCKET, f"{prefix}/"):
        parts = name.removeprefix(f"{prefix}/").split("/")
        if parts[0] in ("raw", "compacted") and len(parts) >= 4:
            names.add(f"{parts[0]}/{parts[1].removeprefix('event_hour=')}/{parts[2]}")
        elif parts[0] == "quarantine" and len(parts) >= 3:  # not the connector's folder marker
            names.add(f"quarantine/{parts[1]}")
    return names


def test_the_same_deletion_on_gs(spark, scratch_dsn, tmp_path, emulator, monkeypatch):
    local = StorageLayout(str(tmp_path / "storage"))
    write_hours(spark, local)
    record_publications(scratch_dsn)
    Path(local.quarantine_batch(3)).mkdir(parents=True)
    (Path(local.quarantine_batch(3)) / "part-0.parquet").write_bytes(b"rejected")
    prefix = f"lake-{uuid.uuid4().hex[:8]}"
    upload(emulator, Path(local.root), prefix)
    before = folder_names(emulator, prefix)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)

    # The job on its own, as the DAG submits it, forty days on: the quarantine just uploaded is
    # past its 30 days, and the raw retention still ends 3 days before NOW.
    later = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=40)
    raw_cutoff = datetime.fromisoformat(NOW.replace("Z", "+00:00")) - timedelta(days=3)
    run_module(
        "spark_jobs.lifecycle",
        "--pg-dsn", scratch_dsn, "--storage-root", f"gs://{BUCKET}/{prefix}",
        "--now", later.strftime("%Y-%m-%dT%H:00:00Z"),
        "--raw-retention-days", str((later - raw_cutoff).days),
        "--master", "local[2]",
    )  # fmt: skip

    assert folder_names(emulator, prefix) == expected_after(before) - {"quarantine/batch_id=3"}
