"""Riding out an unavailable dependency (SPEC.md section 5): wait and retry with backoff, one log
line per retry, up to a limit; past it, one error naming what is down.

The streaming job runs for weeks: PostgreSQL failing over or the broker restarting for a few
minutes must cost it a pause, not its life, and a restarted job must not fail its start-up
checks in a loop that uses up the restarts its scheduler allows.
"""

from __future__ import annotations

import logging
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


@dataclass(frozen=True)
class OutagePolicy:
    """How long to wait for a dependency, and how often to ask again."""

    limit: timedelta = DEFAULT_OUTAGE_LIMIT
    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0

    def delays(self):
        """Seconds to wait before each retry: doubling, capped, never past the limit in total."""
        delay, waited = self.first_delay_seconds, 0.0
        limit = self.limit.total_seconds()
        while waited < limit:
            step = min(delay, self.max_delay_seconds, limit - waited)
            yield step
            waited += step
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
    """`action()`, retried while it raises one of `transient`; DependencyDown past the limit.

    Only for idempotent actions: a retry may repeat work whose outcome was lost with the
    connection.
    """
    started = time.monotonic()
    delays = policy.delays()
    attempt = 0
    while True:
        try:
            return action()
        except transient as error:
            delay = next(delays, None)
            if delay is None:
                waited = time.monotonic() - started
                raise DependencyDown(
                    f"{first_line(error)} (still unavailable after {waited:.0f} s; outage limit {_minutes(policy.limit)})"
                ) from error
            attempt += 1
            log.warning(
                "%s unavailable (%s); retry %d in %.0f s, giving up after %s",
                what, first_line(error), attempt, delay, _minutes(policy.limit),
            )
            time.sleep(delay)


def _minutes(limit: timedelta) -> str:
    minutes = limit.total_seconds() / 60
    return f"{minutes:g} min"
