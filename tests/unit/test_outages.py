"""Waiting out an unavailable dependency: retries with backoff, one log line each, a limit."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest

from spark_jobs.outages import DependencyDown, Interrupted, OutagePolicy, wait_out


class Flaky:
    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"refused, attempt {self.calls}")
        return "answer"


def test_retries_until_the_dependency_answers_with_one_line_per_retry(caplog):
    action = Flaky(failures=3)
    policy = OutagePolicy(
        limit=timedelta(seconds=5), first_delay_seconds=0.01, max_delay_seconds=0.02
    )

    with caplog.at_level(logging.WARNING, logger="spark_jobs.outages"):
        assert (
            wait_out(action, what="PostgreSQL", transient=(ConnectionError,), policy=policy)
            == "answer"
        )

    assert action.calls == 4
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        f"PostgreSQL unavailable (refused, attempt {n})" for n in (1, 2, 3)
    ]


def test_past_the_limit_it_names_what_is_down():
    policy = OutagePolicy(
        limit=timedelta(seconds=0.1), first_delay_seconds=0.02, max_delay_seconds=0.05
    )

    with pytest.raises(
        DependencyDown, match=r"refused, attempt \d+ \(still unavailable after 0 s; outage limit"
    ):
        wait_out(Flaky(failures=1000), what="Kafka", transient=(ConnectionError,), policy=policy)


def test_no_limit_means_no_retry():
    action = Flaky(failures=1)

    with pytest.raises(DependencyDown):
        wait_out(
            action,
            what="Kafka",
            transient=(ConnectionError,),
            policy=OutagePolicy(limit=timedelta(0)),
        )
    assert action.calls == 1


def test_other_errors_are_not_retried():
    def broken():
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        wait_out(broken, what="Kafka", transient=(ConnectionError,), policy=OutagePolicy())


def test_delays_double_up_to_the_cap():
    delays = OutagePolicy(first_delay_seconds=1, max_delay_seconds=30).delays()

    assert [next(delays) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_the_limit_is_wall_clock_time_slow_attempts_included():
    def slow_refusal():
        time.sleep(0.3)
        raise ConnectionError("timed out")

    policy = OutagePolicy(
        limit=timedelta(seconds=0.5), first_delay_seconds=0.01, max_delay_seconds=0.01
    )
    started = time.monotonic()

    with pytest.raises(DependencyDown):
        wait_out(slow_refusal, what="PostgreSQL", transient=(ConnectionError,), policy=policy)
    assert time.monotonic() - started < 1.2


def test_a_stop_request_ends_the_wait():
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    policy = OutagePolicy(limit=timedelta(minutes=30), first_delay_seconds=60, stop=stop)
    started = time.monotonic()

    with pytest.raises(Interrupted):
        wait_out(Flaky(failures=1000), what="Kafka", transient=(ConnectionError,), policy=policy)
    assert time.monotonic() - started < 5
