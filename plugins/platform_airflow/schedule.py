"""Where batch_hourly's schedule starts.

`catchup` makes the scheduler run every hour from the start date on, so that no hour is skipped
after the scheduler was down. A start date fixed in the code would make a new deployment queue
every hour since that date, empty ones included. So the start is configuration:

- `BATCH_START_DATE` (ISO-8601, UTC) when it is set;
- else the first hour the platform has data for: the oldest hour the speed layer counted or the
  batch layer published, in the database of connection `platform_postgres`;
- else, on a database without data yet, the current hour: nothing to catch up.

A longer range is an explicit backfill (`airflow backfill create`, README "Operations").

The lookup runs when the DAG file is parsed: one indexed query. When the database cannot be read
the file fails to parse, on purpose: Airflow creates no runs for a DAG with an import error and
catches up once it parses again, whereas a guessed start date could skip hours or queue empty ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pendulum
import psycopg2

from common.errors import first_line
from platform_airflow.hours import parse_utc

START_DATE_VARIABLE = "BATCH_START_DATE"
CONNECT_TIMEOUT_SECONDS = 5
# `least` ignores NULLs: either table alone gives the first hour. Both are read by the primary key
# on `date`, so this is two index probes however long the platform has run.
FIRST_DATA_HOUR = (
    "SELECT least((SELECT min(date) FROM speed_hour_batches),"
    " (SELECT min(date) FROM batch_hour_runs))"
)


class StartDateUnknown(RuntimeError):
    """The start date is not configured and the database that would give it cannot be read."""


def batch_start_date(
    conn_id: str,
    environ: Mapping[str, str] = os.environ,
    now: datetime | None = None,
) -> pendulum.DateTime:
    """batch_hourly's start date: configured, else the first hour with data, else this hour."""
    configured = environ.get(START_DATE_VARIABLE, "").strip()
    if configured:
        return parse_utc(configured)
    first = first_data_hour(connection_parameters(conn_id))
    if first is not None:
        return pendulum.instance(first).in_timezone("UTC")
    current = pendulum.instance(now) if now is not None else pendulum.now("UTC")
    return current.in_timezone("UTC").start_of("hour")


def connection_parameters(conn_id: str) -> dict[str, Any]:
    """libpq keywords of an Airflow connection: keywords, not a URI, so that no error message
    repeats the password."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    return {
        "host": connection.host,
        "port": connection.port or 5432,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
    }


def first_data_hour(parameters: dict[str, Any]) -> datetime | None:
    """The oldest hour the speed layer counted or the batch layer published; None without data."""
    try:
        connection = psycopg2.connect(**parameters, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            with connection.cursor() as cursor:
                cursor.execute(FIRST_DATA_HOUR)
                row = cursor.fetchone()
        finally:
            connection.close()
    except psycopg2.Error as error:
        raise StartDateUnknown(
            f"batch_hourly starts at the first hour with data, and the database could not be read "
            f"({first_line(error)})"
            f"; set {START_DATE_VARIABLE} (for example 2026-11-27T00:00:00Z) or make the database "
            "reachable"
        ) from error
    return row[0] if row is not None else None
