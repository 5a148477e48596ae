"""PostgreSQL access for the Spark drivers: reference users in, aggregates out.

The aggregates of a micro-batch or an hour are small (keys x windows), so the driver writes them
with psycopg2 in one transaction; that transaction is what makes the writes exactly-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg2
from psycopg2 import sql
from psycopg2.extras import execute_values

T = TypeVar("T")

USER_COLUMNS = ("id", "email", "quota")
RETRIES = 5


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached or lacks a table: the job cannot go on."""


@dataclass(frozen=True)
class SpeedTable:
    name: str
    key: str
    sum_column: str
    # Only keys that are ids in user_metadata, checked in the transaction that writes them.
    known_users_only: bool = False


def connect(dsn: str):
    try:
        return psycopg2.connect(dsn, connect_timeout=10, application_name="mobile-usage-spark")
    except psycopg2.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at PG_DSN ({first_line}); is it running (`make up`)?") from error


def require_tables(dsn: str, tables: Iterable[str]) -> None:
    """Fail early, with the fix, when the schema has not been migrated."""
    with connect(dsn) as conn, conn.cursor() as cur:
        for table in tables:
            cur.execute("SELECT to_regclass(%s)", (table,))
            if cur.fetchone()[0] is None:
                raise DatabaseUnavailable(f"table {table} is missing in PG_DSN's database; apply the migrations with `make up`")
    conn.close()


def fetch_users(dsn: str) -> list[tuple[str, str, int]]:
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, email, quota FROM user_metadata ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    return rows


def with_retries(action: Callable[[], T], retries: int = RETRIES, first_delay: float = 1.0) -> T:
    """Run `action`, retrying a lost connection with backoff: a restarted database must not end a
    long-running stream, and the action is idempotent so retrying is safe."""
    delay = first_delay
    for attempt in range(retries + 1):
        try:
            return action()
        except (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseUnavailable):
            if attempt == retries:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _upsert_increment(cur, table: SpeedTable, rows: Sequence[tuple[str, int, int]]) -> None:
    """Add each (key, window start epoch, bytes) to its window's running total."""
    user_filter = sql.SQL("JOIN user_metadata u ON u.id = v.key") if table.known_users_only else sql.SQL("")
    statement = sql.SQL(
        "INSERT INTO {table} ({key}, date, {total}) "
        "SELECT v.key, to_timestamp(v.window_start), v.total FROM (VALUES %s) AS v (key, window_start, total) {user_filter} "
        "ON CONFLICT ({key}, date) DO UPDATE SET {total} = {table}.{total} + EXCLUDED.{total}"
    ).format(
        table=sql.Identifier(table.name), key=sql.Identifier(table.key), total=sql.Identifier(table.sum_column),
        user_filter=user_filter,
    )
    # Sorted so that two writers never lock the same rows in opposite orders.
    execute_values(cur, statement, sorted(rows), template="(%s, %s::bigint, %s::bigint)", page_size=1000)


def apply_speed_batch(
    dsn: str,
    query_id: str,
    batch_id: int,
    increments: dict[SpeedTable, Sequence[tuple[str, int, int]]],
    valid_events: int,
    quarantined_events: int,
) -> bool:
    """Apply one micro-batch's window increments exactly once.

    The batch id is recorded in the same transaction as the increments, so a micro-batch that
    Spark replays after a crash finds itself already applied and changes nothing. Returns
    whether the batch was applied now (False: it already had been).
    """
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO speed_layer_progress (query_id, last_batch_id) VALUES (%s, -1) ON CONFLICT DO NOTHING",
                (query_id,),
            )
            cur.execute("SELECT last_batch_id FROM speed_layer_progress WHERE query_id = %s FOR UPDATE", (query_id,))
            (last_batch_id,) = cur.fetchone()
            if batch_id <= last_batch_id:
                return False
            for table, rows in increments.items():
                if rows:
                    _upsert_increment(cur, table, rows)
            cur.execute(
                "UPDATE speed_layer_progress SET last_batch_id = %s, valid_events = valid_events + %s, "
                "quarantined_events = quarantined_events + %s, updated_at = now() WHERE query_id = %s",
                (batch_id, valid_events, quarantined_events, query_id),
            )
        return True
    finally:
        conn.close()


@dataclass(frozen=True)
class HourlyTable:
    name: str
    columns: tuple[str, ...]
    result_field: str


HOURLY_TABLES = (
    HourlyTable("bytes_agg_antenna_1h", ("antenna_id", "sum_antenna_bytes"), "antenna"),
    HourlyTable("bytes_agg_user_1h", ("email", "sum_user_bytes"), "user"),
    HourlyTable("bytes_agg_app_1h", ("app", "sum_app_bytes"), "app"),
    HourlyTable("users_over_quota_1h", ("email", "quota", "sum_user_bytes"), "over_quota"),
)


def replace_hour(dsn: str, hour, result, last_streaming_batch: int) -> None:
    """Swap in one hour's rows of every *_1h table and its input totals, in one transaction.

    PostgreSQL's snapshots show concurrent readers the old hour until the commit and the new one
    after it, never a mix; a rerun deletes and re-inserts the same rows.
    """
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            for table in HOURLY_TABLES:
                cur.execute(sql.SQL("DELETE FROM {} WHERE date = %s").format(sql.Identifier(table.name)), (hour,))
                rows = [(row[0], hour, *row[1:]) for row in getattr(result, table.result_field)]
                if rows:
                    columns = (table.columns[0], "date", *table.columns[1:])
                    statement = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
                        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
                    )
                    execute_values(cur, statement, sorted(rows), page_size=1000)
            cur.execute(
                "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes, last_streaming_batch) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (date) DO UPDATE SET valid_events = EXCLUDED.valid_events, "
                "valid_bytes = EXCLUDED.valid_bytes, unknown_device_bytes = EXCLUDED.unknown_device_bytes, "
                "last_streaming_batch = EXCLUDED.last_streaming_batch, computed_at = now()",
                (hour, result.valid_events, result.valid_bytes, result.unknown_device_bytes, last_streaming_batch),
            )
    finally:
        conn.close()
