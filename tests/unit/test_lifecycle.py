"""The lifecycle's decisions, without files or a database: which folders a compaction makes
unreadable, when an hour is old enough, which quarantine has expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spark_jobs.lifecycle import ended_before, expired_quarantine, raw_hour_deletion

HOUR = "2026-11-27-10"


def test_a_compaction_covers_the_batches_up_to_it_and_older_compactions_only():
    plan = raw_hour_deletion(
        HOUR,
        5,
        ["batch_id=0", "batch_id=5", "batch_id=6", "batch_id=12", "_SUCCESS", "batch_id=x"],
        ["through_batch=2", "through_batch=5", "through_batch=9"],
    )
    # Batch 6 and 12 came after the compaction (late data); compaction 9 is newer (maybe being
    # written, maybe not yet read by the served run): all stay.
    assert (plan.batches, plan.compactions) == ((0, 5), (2,))
    assert not plan.empty
    assert raw_hour_deletion(HOUR, 5, ["batch_id=7"], ["through_batch=5"]).empty


def test_an_hour_is_old_enough_once_it_ended_by_the_cutoff():
    start = datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert ended_before(HOUR, start + timedelta(hours=1))
    assert not ended_before(HOUR, start + timedelta(minutes=59))
    assert not ended_before("9999-12-31-23", datetime(9999, 12, 31, 23, 30, tzinfo=UTC))


def test_quarantine_expires_by_its_newest_file():
    cutoff = datetime(2026, 11, 1, tzinfo=UTC)
    written = {
        "batch_id=1": cutoff - timedelta(seconds=1),
        "batch_id=2": cutoff,
        "batch_id=3": cutoff + timedelta(days=1),
    }
    assert expired_quarantine(written, cutoff) == ["batch_id=1"]
