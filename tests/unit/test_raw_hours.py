"""Reading one hour of raw data (compaction + later micro-batches, committed only) and compacting
it, on real Spark and real files."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_jobs import raw_hours
from spark_jobs.raw_hours import ClosedHourCompaction, compact_hour, read_hour
from spark_jobs.storage import StorageLayout

HOUR = "2026-11-27-10"
HOUR_END = datetime(2026, 11, 27, 11, tzinfo=UTC)
H = int(datetime(2026, 11, 27, 10, tzinfo=UTC).timestamp())


@pytest.fixture
def layout(tmp_path) -> StorageLayout:
    return StorageLayout(str(tmp_path))


def write_batch(
    layout: StorageLayout, batch_id: int, byte_counts: list[int], hour: str = HOUR
) -> None:
    """One micro-batch's raw file, as the streaming job lays it out."""
    folder = Path(layout.raw_batch(hour, batch_id))
    folder.mkdir(parents=True)
    rows = len(byte_counts)
    pq.write_table(
        pa.table(
            {
                "bytes": pa.array(byte_counts, pa.int64()),
                "timestamp": pa.array([H + i for i in range(rows)], pa.int64()),
                "app": ["SKYPE"] * rows,
                "id": ["u1"] * rows,
                "antenna_id": ["a1"] * rows,
                "kafka_partition": pa.array([0] * rows, pa.int32()),
                "kafka_offset": pa.array(range(batch_id * 100, batch_id * 100 + rows), pa.int64()),
            }
        ),
        folder / "part-00000.snappy.parquet",
    )


def rows_of(spark, layout, through) -> Counter:
    frame = read_hour(spark, layout, HOUR, through)
    return (
        Counter()
        if frame is None
        else Counter((r["batch_id"], r["bytes"]) for r in frame.collect())
    )


def test_reading_keeps_to_committed_batches(spark, layout):
    write_batch(layout, 0, [1, 2])
    write_batch(layout, 1, [4])
    write_batch(layout, 2, [8])  # not committed yet

    assert rows_of(spark, layout, through=1) == Counter({(0, 1): 1, (0, 2): 1, (1, 4): 1})
    assert read_hour(spark, layout, "2026-11-27-11", through_batch=1) is None


def test_compaction_is_read_instead_of_its_batches_and_later_batches_still_count(spark, layout):
    write_batch(layout, 0, [1, 2])
    write_batch(layout, 1, [4])
    before = rows_of(spark, layout, through=1)

    assert compact_hour(spark, layout, HOUR, through_batch=1)
    write_batch(layout, 3, [16])  # a late event, after the compaction

    assert rows_of(spark, layout, through=1) == before
    assert rows_of(spark, layout, through=3) == before + Counter({(3, 16): 1})
    assert len(list(Path(layout.compaction(HOUR, 1)).glob("*.parquet"))) == 1
    # The micro-batch files are not read any more: deleting them changes nothing.
    for batch in (0, 1):
        for file in Path(layout.raw_batch(HOUR, batch)).iterdir():
            file.unlink()
    assert rows_of(spark, layout, through=3) == before + Counter({(3, 16): 1})


def test_compacting_again_through_the_same_batch_changes_nothing(spark, layout):
    write_batch(layout, 0, [1])
    assert compact_hour(spark, layout, HOUR, through_batch=0)
    files = sorted(Path(layout.compaction(HOUR, 0)).iterdir())

    assert not compact_hour(spark, layout, HOUR, through_batch=0)
    assert sorted(Path(layout.compaction(HOUR, 0)).iterdir()) == files


def test_incomplete_or_uncommitted_compactions_are_ignored(spark, layout):
    write_batch(layout, 0, [1])
    write_batch(layout, 1, [2])
    assert compact_hour(spark, layout, HOUR, through_batch=1)
    # A compaction cut short (no _SUCCESS), and one covering a batch the reader may not see yet.
    (Path(layout.compaction(HOUR, 1)) / "_SUCCESS").rename(
        Path(layout.compaction(HOUR, 1)) / "moved"
    )
    write_batch(layout, 2, [4])
    assert compact_hour(spark, layout, HOUR, through_batch=2)

    assert rows_of(spark, layout, through=1) == Counter({(0, 1): 1, (1, 2): 1})
    assert rows_of(spark, layout, through=2) == Counter({(0, 1): 1, (1, 2): 1, (2, 4): 1})


def test_streaming_compacts_closed_hours_through_committed_batches_only(spark, layout):
    compaction = ClosedHourCompaction(spark, layout, delay=timedelta(minutes=5))
    write_batch(layout, 4, [1])
    write_batch(layout, 5, [2])
    compaction.wrote({HOUR}, 5)

    assert compaction.compact_closed_hours(6, now=HOUR_END + timedelta(minutes=4)) == []
    assert compaction.compact_closed_hours(6, now=HOUR_END + timedelta(minutes=5)) == [HOUR]
    assert Path(layout.compaction(HOUR, 5), "_SUCCESS").exists()

    # A late event in batch 7: not compacted while batch 7 is uncommitted, then the hour again.
    write_batch(layout, 7, [4])
    compaction.wrote({HOUR}, 7)
    assert compaction.compact_closed_hours(7, now=HOUR_END + timedelta(hours=1)) == []
    assert compaction.compact_closed_hours(8, now=HOUR_END + timedelta(hours=1)) == [HOUR]
    assert rows_of(spark, layout, through=8) == Counter({(4, 1): 1, (5, 2): 1, (7, 4): 1})
    assert compaction.pending == {}


def test_a_background_compaction_returns_at_once_and_keeps_what_batches_wrote_meanwhile(
    spark, layout, monkeypatch
):
    # The compaction thread is held at its start, so the micro-batch side runs during it.
    started, release = threading.Event(), threading.Event()
    real_compact_hour = raw_hours.compact_hour

    def held_compact_hour(*args):
        started.set()
        assert release.wait(60)
        return real_compact_hour(*args)

    monkeypatch.setattr(raw_hours, "compact_hour", held_compact_hour)
    compaction = ClosedHourCompaction(spark, layout, delay=timedelta(minutes=5))
    later = HOUR_END + timedelta(hours=1)
    write_batch(layout, 4, [1])
    compaction.wrote({HOUR}, 4)

    assert compaction.compact_in_background(5, now=later)
    assert started.wait(60) and compaction.compacting()
    # Micro-batches go on: a late event in batch 5, and a second start is refused meanwhile.
    write_batch(layout, 5, [2])
    compaction.wrote({HOUR}, 5)
    assert not compaction.compact_in_background(6, now=later)
    release.set()
    compaction.wait()

    assert Path(layout.compaction(HOUR, 4), "_SUCCESS").exists()
    assert compaction.pending == {HOUR: 5}, "the late batch was forgotten"
    assert compaction.compact_in_background(6, now=later)
    compaction.wait()
    assert compaction.pending == {}
    assert not compaction.compact_in_background(7, now=later), "nothing is due"
    assert rows_of(spark, layout, through=6) == Counter({(4, 1): 1, (5, 2): 1})
    assert sorted(p.name for p in Path(layout.compacted_hour(HOUR)).iterdir()) == [
        "through_batch=4",
        "through_batch=5",
    ]


def test_a_failed_background_compaction_is_logged_and_retried(spark, layout, monkeypatch, caplog):
    real_compact_hour = raw_hours.compact_hour
    failures = iter([OSError("storage unavailable")])

    def failing_once(*args):
        for error in failures:
            raise error
        return real_compact_hour(*args)

    monkeypatch.setattr(raw_hours, "compact_hour", failing_once)
    compaction = ClosedHourCompaction(spark, layout, delay=timedelta(minutes=5))
    write_batch(layout, 0, [1])
    compaction.wrote({HOUR}, 0)
    later = HOUR_END + timedelta(hours=1)

    assert compaction.compact_in_background(1, now=later)
    compaction.wait()
    assert "storage unavailable" in caplog.text
    assert compaction.pending == {HOUR: 0}
    assert compaction.compact_in_background(2, now=later)
    compaction.wait()
    assert compaction.pending == {}
    assert Path(layout.compaction(HOUR, 0), "_SUCCESS").exists()


def test_after_a_restart_hours_with_uncompacted_batches_are_found(spark, layout):
    write_batch(layout, 0, [1])
    assert compact_hour(spark, layout, HOUR, through_batch=0)
    write_batch(layout, 1, [2])
    write_batch(layout, 2, [4])  # left by the crash: batch 2 is being replayed now
    write_batch(layout, 0, [8], hour="2026-11-26-10")  # older than the recovery window

    restarted = ClosedHourCompaction(spark, layout, delay=timedelta(minutes=5))
    compacted = restarted.compact_closed_hours(2, now=HOUR_END + timedelta(minutes=30))

    assert compacted == [HOUR]
    assert Path(layout.compaction(HOUR, 1), "_SUCCESS").exists()
    assert not Path(layout.compaction(HOUR, 2)).exists()
    assert not Path(layout.compacted_hour("2026-11-26-10")).exists()


def test_the_last_hour_of_year_9999_and_hours_before_1970_compact(spark, layout):
    compaction = ClosedHourCompaction(spark, layout, delay=timedelta(minutes=5))
    compaction.wrote({"9999-12-31-23", "1969-12-31-23"}, 0)
    write_batch(layout, 0, [1], hour="1969-12-31-23")

    # Year 9999 never closes (its end is past datetime's range), and asking must not overflow.
    assert compaction.compact_closed_hours(1, now=HOUR_END) == ["1969-12-31-23"]
    assert list(compaction.pending) == ["9999-12-31-23"]
