"""Riding out an unavailable dependency (docs/contract.md §5): wait and retry with backoff, one log
line per retry, up to a limit; past it, one error naming what is down.

The streaming job runs for weeks: PostgreSQL failing over or the broker restarting for a few
minutes must cost it a pause, not its life, and a restarted job must not fail its start-up
checks in a loop that uses up the restarts its scheduler allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("spark_jobs.outages")

DEFAULT_OUTAGE_LIMIT = timedelta(minutes=30)


class DependencyDown(RuntimeError):
    """A dependency stayed unavailable past the outage limit: the job cannot go on."""


class Interrupted(RuntimeError):
    """The job was told to stop (SIGTERM) while it waited for a dependency."""


@dataclass(frozen=True)
class OutagePolicy:
    """How long to wait for a dependency, how often to ask again, and what ends the wait early."""

    limit: timedelta = DEFAULT_OUTAGE_LIMIT
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0
    # Set on SIGTERM: a job told to stop must not sit out the rest of a 30-minute wait.
    stop: threading.Event | None = None

    def delays(self):
        """Seconds to wait before each retry: doubling, capped."""
        delay = self.first_delay_seconds
        while True:
            yield min(delay, self.max_delay_seconds)
            delay *= 2


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def wait_out(
    action: Callable[[], T],
    *,
    what: str,
    transient: tuple[type[BaseException], ...],
    policy: OutagePolicy,
) -> T:
    """`action()`, retried while it raises one of `transient`; DependencyDown once the limit has
    passed in wall-clock time (the attempts' own time-outs count too).

    Only for idempotent actions: a retry may repeat work whose outcome was lost with the
    connection.
    """
    started = time.monotonic()
    limit = policy.limit.total_seconds()
    delays = policy.delays()
    attempt = 0
    while True:
        try:
            return action()
        except transient as error:
            waited = time.monotonic() - started
            if waited >= limit:
                raise DependencyDown(
                    f"{first_line(error)} (still unavailable after {waited:.0f} s; outage limit "
                    f"{_minutes(policy.limit)})"
                ) from error
            delay = min(next(delays), limit - waited)
            attempt += 1
            log.warning(
                "%s unavailable (%s); retry %d in %.0f s, giving up after %s",
                what,
                first_line(error),
                attempt,
                delay,
                _minutes(policy.limit),
            )
            if policy.stop is not None:
                if policy.stop.wait(delay):
                    raise Interrupted(f"stopped while waiting for {what}") from error
            else:
                time.sleep(delay)


def _minutes(limit: timedelta) -> str:
    minutes = limit.total_seconds() / 60
    return f"{minutes:g} min"
