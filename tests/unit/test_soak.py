"""The soak benchmark's summaries (bench/soak.py): what it calls flat, and how it compares the
first and the last minutes."""

from __future__ import annotations

from bench.soak import (
    MemorySample,
    batches_per_minute,
    latency_per_minute,
    latency_verdict,
    memory_per_minute,
    memory_verdict,
    trend_per_hour,
)

START = 1_000_000.0


def memory_rows(values):
    return [{"minute": minute, "jvm_rss_mb": value} for minute, value in enumerate(values)]


def test_latencies_are_bucketed_by_the_minute_their_group_was_sent():
    latencies = [(START + 5, 1.0), (START + 59, 3.0), (START + 61, 2.0), (START - 1, 9.0)]

    assert latency_per_minute(latencies, START, 3) == [
        {"minute": 0, "samples": 2, "p50_seconds": 2.0, "p95_seconds": 1.0},
        {"minute": 1, "samples": 1, "p50_seconds": 2.0, "p95_seconds": 2.0},
        {"minute": 2, "samples": 0, "p50_seconds": None, "p95_seconds": None},
    ]


def test_the_last_memory_sample_of_each_measured_minute_is_kept():
    samples = [
        MemorySample(START - 30, 1, 1, 1),  # warm-up: not measured
        MemorySample(START + 10, 100, 900, 50),
        MemorySample(START + 50, 101, 901, 51),
        MemorySample(START + 70, 102, 902, 52),
    ]

    assert memory_per_minute(samples, START, 2) == [
        {"minute": 0, "driver_rss_mb": 101, "jvm_rss_mb": 901, "workers_rss_mb": 51},
        {"minute": 1, "driver_rss_mb": 102, "jvm_rss_mb": 902, "workers_rss_mb": 52},
    ]


def test_micro_batches_are_counted_in_the_minute_they_finished():
    batches = [(START + 1, 0.5, 10_000), (START + 2, 1.5, 20_000), (START + 65, 0.7, 5_000)]

    assert batches_per_minute(batches, START, 2) == [
        {"minute": 0, "micro_batches": 2, "median_seconds": 1.0, "max_seconds": 1.5,
         "events": 30_000},
        {"minute": 1, "micro_batches": 1, "median_seconds": 0.7, "max_seconds": 0.7,
         "events": 5_000},
    ]  # fmt: skip


def test_trend_is_the_least_squares_slope_per_hour():
    assert trend_per_hour([(0, 100.0), (30, 130.0), (60, 160.0)]) == 60.0
    assert trend_per_hour([(10, 5.0)]) == 0.0


def test_memory_that_grows_only_while_warming_up_is_flat():
    warming_then_steady = [500 + 50 * m for m in range(10)] + [1000] * 50

    verdict = memory_verdict(memory_rows(warming_then_steady), "jvm_rss_mb")

    assert verdict == {"median_mb": 1000, "trend_mb_per_hour": 0.0, "flat": True}


def test_memory_that_keeps_growing_is_not_flat():
    leaking = [1000 + 2 * m for m in range(60)]  # 120 MiB an hour on 1.1 GiB: 11 %

    verdict = memory_verdict(memory_rows(leaking), "jvm_rss_mb")

    assert verdict["trend_mb_per_hour"] == 120.0
    assert not verdict["flat"]


def test_latency_compares_the_p95_of_the_first_and_last_ten_minutes():
    steady = [(START + 60 * m + 1, 1.0) for m in range(60)]
    slower_at_the_end = steady[:50] + [(START + 60 * m + 1, 1.3) for m in range(50, 60)]

    assert latency_verdict(steady, START, 60)["within_goal"]
    verdict = latency_verdict(slower_at_the_end, START, 60)
    assert verdict["ratio"] == 1.3
    assert not verdict["within_goal"]
