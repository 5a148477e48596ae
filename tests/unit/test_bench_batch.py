"""The batch benchmark's goals (bench/batch.py): each one can fail the run on its own."""

from __future__ import annotations

import pytest

from bench.batch import batch_goals


def figures(median_seconds: float) -> dict:
    # One million events in each benchmark run, so seconds and seconds per million are equal.
    return {"median_seconds": median_seconds, "median_seconds_per_million_events": median_seconds}


def test_a_fast_compacted_hour_close_to_duckdb_meets_the_goals():
    goals = batch_goals(figures(0.9), figures(2.5), figures(0.8))

    assert goals["compacted_ratio_to_duckdb"] == 1.125
    assert goals["met"] is True


@pytest.mark.parametrize(
    ("compacted", "not_compacted", "duckdb"),
    [
        (1.2, 2.5, 1.0),  # over 1 s per million, though within 1.5x DuckDB
        (0.9, 2.5, 0.5),  # under 1 s per million, but 1.8x DuckDB in the same run
        (0.9, 3.5, 0.8),  # the hour not yet compacted over 3 s per million
    ],
)
def test_each_goal_fails_the_run_on_its_own(compacted, not_compacted, duckdb):
    assert batch_goals(figures(compacted), figures(not_compacted), figures(duckdb))["met"] is False
