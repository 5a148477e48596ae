"""Which UTC hour a run of batch_hourly computes.

A scheduled run (or a backfill, or `airflow dags test`) computes its data interval [H, H+1h). A
run triggered by batch_republish for an hour whose input changed after its publication (late
data) carries the hour in its conf instead, `{"hour": "2026-11-27T10:00:00+00:00"}`, and has no
logical date of its own: the scheduled run whose interval starts where that hour ends already
holds that logical date.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pendulum

HOUR_CONF_KEY = "hour"


def parse_utc(text: str) -> pendulum.DateTime:
    """An ISO-8601 date and time, in UTC; a bare date, time or duration is refused."""
    moment = pendulum.parse(text)
    if not isinstance(moment, pendulum.DateTime):
        raise ValueError(f"{text!r} is not a date and time")
    return moment.in_timezone("UTC")


def batch_hour(dag_run: Any, data_interval_start: datetime | None) -> pendulum.DateTime:
    """The start of the hour this run computes (a template macro of batch_hourly)."""
    conf = getattr(dag_run, "conf", None) or {}
    if conf.get(HOUR_CONF_KEY):
        hour = parse_utc(conf[HOUR_CONF_KEY])
        if (hour.minute, hour.second, hour.microsecond) != (0, 0, 0):
            raise ValueError(f"conf hour {conf[HOUR_CONF_KEY]!r} is not the start of an hour")
        return hour
    if data_interval_start is None:
        raise ValueError(
            f"a run of batch_hourly without a data interval needs conf {{{HOUR_CONF_KEY!r}: ...}}"
        )
    return pendulum.instance(data_interval_start).in_timezone("UTC")
