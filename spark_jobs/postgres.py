"""PostgreSQL access for the Spark drivers: reference users in, aggregates out.

The aggregates of a micro-batch or an hour are small (keys x windows), so the driver writes them
with psycopg2 in one transaction; that transaction is what makes the writes exactly-once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
from psycopg2 import errorcodes, sql
from psycopg2.extras import execute_values

from spark_jobs.outages import OutagePolicy, first_line, wait_out

T = TypeVar("T")

USER_COLUMNS = ("id", "email", "quota")
# Every session: no statement or lock wait hangs a micro-batch for ever, a driver that died in a
# transaction releases its locks (the progress row) within a minute, and the server notices a
# vanished client through TCP keepalives. UTC, so dates of any year read back as they were written.
SESSION_SETTINGS = {
    "statement_timeout": "120s",
    "lock_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
    "TimeZone": "UTC",
}
CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
# Errors that say the database is (for now) out of reach, as opposed to refusing what was sent.
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)
# Errors in which the database refuses a value: the same rows would fail on every replay.
REFUSED_VALUE_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError, UnicodeError)


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached."""


class SchemaNotMigrated(RuntimeError):
    """PostgreSQL answers but lacks a table: a configuration error, not an outage."""


class InvalidDsn(ValueError):
    """PG_DSN cannot be parsed: no wait would help."""


@dataclass(frozen=True)
class SpeedTable:
    name: str
    key: str
    sum_column: str
    # Only keys that are ids in user_metadata, checked in the transaction that writes them.
    known_users_only: bool = False


# One row of a speed table's increment: (key, window start epoch seconds, bytes).
Increment = tuple[str, int, int]
# One event hour's share of a micro-batch: (hour start epoch seconds, events, bytes).
HourCount = tuple[int, int, int]


@dataclass(frozen=True)
class SpeedBatchTotals:
    """What one micro-batch adds to the serving database."""

    increments: dict[SpeedTable, list[Increment]]
    hours: list[HourCount]
    # (reason, records) per quarantine reason of docs/contract.md §1, sorted by reason.
    quarantined_by_reason: tuple[tuple[str, int], ...] = ()
    # The newest valid event's time, epoch seconds; None without valid events. For the batch's
    # health row (docs/contract.md §10), not for the totals.
    newest_event_time: int | None = None

    @property
    def valid_events(self) -> int:
        return sum(events for _, events, _ in self.hours)

    @property
    def quarantined_events(self) -> int:
        return sum(records for _, records in self.quarantined_by_reason)


@dataclass(frozen=True, order=True)
class PartitionOffset:
    """Where a micro-batch ends on one Kafka partition: the offset of the next record to read."""

    topic: str
    partition: int
    next_offset: int


def end_offsets_of(logged: dict[str, dict[str, int]]) -> list[PartitionOffset]:
    """The offsets one line of Spark's offset log holds ({topic: {partition: offset}})."""
    return [
        PartitionOffset(topic, int(partition), int(offset))
        for topic, partitions in logged.items()
        for partition, offset in partitions.items()
    ]


@dataclass(frozen=True)
class RefusedRow:
    """A row the database refuses on its own: `table` None is the batch's row for an event hour."""

    table: SpeedTable | None
    key: str
    start: int
    reason: str


class RowsRefused(Exception):
    """The database refused rows of a micro-batch: replaying it as it is would fail the same way."""

    def __init__(self, error: BaseException, rows: list[RefusedRow]):
        super().__init__(f"PostgreSQL refused the micro-batch's totals: {first_line(error)}")
        self.error = error
        self.rows = rows


def refusal_reason(error: BaseException) -> str:
    """A short machine-readable name of what the database refused, for the quarantine."""
    code = getattr(error, "pgcode", None)
    name = errorcodes.lookup(code).lower() if code else type(error).__name__.lower()
    return f"database_refused:{name}"


def connect(dsn: str):
    options = " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items())
    try:
        return psycopg2.connect(
            dsn,
            connect_timeout=10,
            application_name="mobile-usage-spark",
            options=options,
            **CLIENT_KEEPALIVES,
        )
    except psycopg2.ProgrammingError as error:
        raise InvalidDsn(f"PG_DSN is not a valid libpq DSN ({first_line(error)})") from error
    except psycopg2.OperationalError as error:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at PG_DSN ({first_line(error)}); is it running (`make "
            "up`)?"
        ) from error


def require_tables(dsn: str, tables: Iterable[str]) -> None:
    """Fail early, with the fix, when the schema has not been migrated."""
    with connect(dsn) as conn, conn.cursor() as cur:
        for table in tables:
            cur.execute("SELECT to_regclass(%s)", (table,))
            if cur.fetchone()[0] is None:
                raise SchemaNotMigrated(
                    f"table {table} is missing in PG_DSN's database; apply the migrations with "
                    "`make up`"
                )
    conn.close()


def fetch_users(dsn: str) -> list[tuple[str, str, int]]:
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, email, quota FROM user_metadata ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    return rows


def with_retries(action: Callable[[], T], policy: OutagePolicy | None = None) -> T:
    """Run `action`, waiting out a lost or refused connection: a restarted database must not end a
    long-running stream, and the action is idempotent so retrying is safe."""
    return wait_out(
        action,
        what="PostgreSQL",
        transient=(*CONNECTION_ERRORS, DatabaseUnavailable),
        policy=policy or OutagePolicy(),
    )


def _upsert_statement(table: SpeedTable) -> sql.Composed:
    user_filter = (
        sql.SQL("JOIN user_metadata u ON u.id = v.key") if table.known_users_only else sql.SQL("")
    )
    return sql.SQL(
        "INSERT INTO {table} ({key}, date, {total}) "
        "SELECT v.key, to_timestamp(v.window_start), v.total FROM (VALUES %s) AS v (key, "
        "window_start, total) {user_filter} "
        "ON CONFLICT ({key}, date) DO UPDATE SET {total} = {table}.{total} + EXCLUDED.{total}"
    ).format(
        table=sql.Identifier(table.name),
        key=sql.Identifier(table.key),
        total=sql.Identifier(table.sum_column),
        user_filter=user_filter,
    )


# The speed layer's own count of each event hour per micro-batch, which the batch layer's run of
# the hour is reconciled against (up to the batch that run read).
HOURS_STATEMENT = (
    "INSERT INTO speed_hour_batches (date, batch_id, events, bytes) "
    "SELECT to_timestamp(v.hour), v.batch_id, v.events, v.bytes FROM (VALUES %s) AS v (hour, "
    "batch_id, events, bytes)"
)
OFFSETS_STATEMENT = (
    "INSERT INTO speed_partition_offsets (topic, partition, next_offset, batch_id) VALUES %s "
    "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, "
    "batch_id = EXCLUDED.batch_id, updated_at = now()"
)
INCREMENT_TEMPLATE = "(%s, %s::bigint, %s::bigint)"
HOUR_TEMPLATE = "(%s::bigint, %s::bigint, %s::bigint, %s::bigint)"


def _upsert_increment(cur, table: SpeedTable, rows: Sequence[Increment]) -> None:
    """Add each (key, window start epoch, bytes) to its window's running total."""
    # Sorted so that two writers never lock the same rows in opposite orders.
    execute_values(
        cur, _upsert_statement(table), sorted(rows), template=INCREMENT_TEMPLATE, page_size=1000
    )


def _insert_hours(cur, hours: Sequence[HourCount], batch_id: int) -> None:
    rows = [(hour, batch_id, events, total) for hour, events, total in sorted(hours)]
    execute_values(cur, HOURS_STATEMENT, rows, template=HOUR_TEMPLATE, page_size=1000)


def apply_speed_batch(
    dsn: str,
    query_id: str,
    batch_id: int,
    totals: SpeedBatchTotals,
    refused: Sequence[RefusedRow] = (),
    end_offsets: Sequence[PartitionOffset] = (),
) -> bool:
    """Apply one micro-batch's window increments and hour counts exactly once, with the rows the
    database refused in earlier rounds of the batch (`refused`) and the Kafka offsets the batch
    ends at (`end_offsets`, from the checkpoint's offset log), which the completeness of an hour
    is judged by.

    The batch id is recorded in the same transaction as the increments, so a micro-batch that
    Spark replays after a crash finds itself already applied and changes nothing. Returns
    whether the batch was applied now (False: it already had been). Raises RowsRefused, naming
    the rows, when the database refuses a value.
    """
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO speed_layer_progress (query_id, last_batch_id) VALUES (%s, -1) ON "
                "CONFLICT DO NOTHING",
                (query_id,),
            )
            cur.execute(
                "SELECT last_batch_id FROM speed_layer_progress WHERE query_id = %s FOR UPDATE",
                (query_id,),
            )
            (last_batch_id,) = cur.fetchone()
            if batch_id <= last_batch_id:
                return False
            try:
                _write_totals(cur, totals, batch_id)
            except REFUSED_VALUE_ERRORS as error:
                conn.rollback()
                raise RowsRefused(error, refused_rows(conn, totals, batch_id)) from error
            if end_offsets:
                rows = [
                    (offset.topic, offset.partition, offset.next_offset, batch_id)
                    for offset in sorted(end_offsets)
                ]
                execute_values(cur, OFFSETS_STATEMENT, rows, page_size=1000)
            if refused:
                execute_values(
                    cur,
                    "INSERT INTO speed_refused_rows (query_id, batch_id, table_name, key, start, "
                    "reason) VALUES %s",
                    [
                        (
                            query_id,
                            batch_id,
                            row.table.name if row.table else "",
                            row.key,
                            row.start,
                            row.reason,
                        )
                        for row in refused
                    ],
                )
            cur.execute(
                "UPDATE speed_layer_progress SET last_batch_id = %s, valid_events = valid_events + "
                "%s, "
                "quarantined_events = quarantined_events + %s, updated_at = now() WHERE query_id = "
                "%s",
                (batch_id, totals.valid_events, totals.quarantined_events, query_id),
            )
        return True
    finally:
        conn.close()


def refused_in_batch(
    dsn: str, query_id: str, batch_id: int, tables: Iterable[SpeedTable]
) -> list[RefusedRow]:
    """The rows refused when the batch was applied before (a replay after a crash), or none."""
    by_name = {table.name: table for table in tables}
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, key, start, reason FROM speed_refused_rows WHERE query_id = %s AND "
            "batch_id = %s",
            (query_id, batch_id),
        )
        rows = cur.fetchall()
    conn.close()
    return [RefusedRow(by_name.get(name), key, start, reason) for name, key, start, reason in rows]


def _write_totals(cur, totals: SpeedBatchTotals, batch_id: int) -> None:
    for table, rows in totals.increments.items():
        if rows:
            _upsert_increment(cur, table, rows)
    if totals.hours:
        _insert_hours(cur, totals.hours, batch_id)


def refused_rows(conn, totals: SpeedBatchTotals, batch_id: int) -> list[RefusedRow]:
    """Each row the database refuses on its own, tried one at a time under a savepoint in a
    transaction that is rolled back: only the failure path pays for it."""
    attempts: list[tuple[SpeedTable | None, tuple, Callable]] = [
        (table, row, lambda cur, t=table, r=row: _upsert_increment(cur, t, [r]))
        for table, rows in totals.increments.items()
        for row in rows
    ] + [
        (None, hour, lambda cur, h=hour: _insert_hours(cur, [h], batch_id)) for hour in totals.hours
    ]
    refused = []
    try:
        with conn.cursor() as cur:
            for table, row, attempt in attempts:
                cur.execute("SAVEPOINT one_row")
                try:
                    attempt(cur)
                except REFUSED_VALUE_ERRORS as error:
                    cur.execute("ROLLBACK TO SAVEPOINT one_row")
                    key = "" if table is None else row[0]
                    refused.append(
                        RefusedRow(
                            table, key, row[0] if table is None else row[1], refusal_reason(error)
                        )
                    )
    finally:
        conn.rollback()
    return refused


@dataclass(frozen=True)
class HourResult:
    """One hour's aggregates as the batch job computed them, without the hour's date (Python
    cannot hold year 1's): rows of the four *_1h tables, and the hour's totals."""

    antenna: list[tuple]
    user: list[tuple]
    app: list[tuple]
    over_quota: list[tuple]
    valid_events: int
    valid_bytes: int
    unknown_device_bytes: int


@dataclass(frozen=True)
class HourlyTable:
    name: str
    # The first column is the key; `date` goes after it.
    columns: tuple[str, ...]
    rows_of: Callable[[HourResult], list[tuple]]


HOURLY_TABLES = (
    HourlyTable("bytes_agg_antenna_1h", ("antenna_id", "sum_antenna_bytes"), lambda r: r.antenna),
    HourlyTable("bytes_agg_user_1h", ("email", "sum_user_bytes"), lambda r: r.user),
    HourlyTable("bytes_agg_app_1h", ("app", "sum_app_bytes"), lambda r: r.app),
    HourlyTable(
        "users_over_quota_1h", ("email", "quota", "sum_user_bytes"), lambda r: r.over_quota
    ),
)


@dataclass(frozen=True)
class HourRun:
    """What one batch run of an hour read, beside its aggregates: the input it was computed from
    (the streaming job's micro-batches up to `last_streaming_batch`) and the figures the quality
    gate reconciles (raw rows, their distinct Kafka offsets, how far behind the stream was)."""

    last_streaming_batch: int
    raw_rows: int
    distinct_offsets: int
    records_behind: int = 0
    forced: bool = False


class HourSuperseded(Exception):
    """A run computed from newer input has published the hour already: this one changes nothing."""


# One lock per hour, held to the end of the publishing transaction: runs of one hour take turns.
HOUR_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('batch_hour ' || %s::text, 0))"
# A concurrent run of the hour holds the lock for its transaction only; wait for it, within reason.
PUBLICATION_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10min'"


def publish_hour(
    dsn: str, hour, result: HourResult, run: HourRun, gate: Callable[[Any], None]
) -> None:
    """Swap in one hour's rows of every *_1h table and its run, check them, and commit only if
    `gate(cursor)` passes, all in one transaction under the hour's lock.

    PostgreSQL's snapshots show concurrent readers the old hour until the commit and the new one
    after it, never a mix; a rerun deletes and re-inserts the same rows. Raises HourSuperseded
    when the published run read newer input (a higher streaming batch), and whatever `gate`
    raises, after rolling back and withdrawing the hour from the batch layer (withdraw_hour).
    """
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            published = _lock_hour_and_find_newer_run(cur, hour, run)
            if published is not None:
                raise HourSuperseded(
                    f"hour {hour} is published from streaming batch {published}, newer than this "
                    "run's"
                    f" {run.last_streaming_batch}; left as it is"
                )
            _write_hour(cur, hour, result, run)
            gate(cur)
            cur.execute("DELETE FROM batch_hour_failures WHERE date = %s", (hour,))
    finally:
        conn.close()


def withdraw_hour(dsn: str, hour, run: HourRun, failed_checks: Sequence[str], details: str) -> bool:
    """Record the failed gate and take the hour out of the batch layer (the speed layer answers it
    then), unless a run from newer input published it meanwhile. Returns whether it withdrew."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            if _lock_hour_and_find_newer_run(cur, hour, run) is not None:
                return False
            for name in (*(table.name for table in HOURLY_TABLES), "batch_hour_runs"):
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE date = %s").format(sql.Identifier(name)), (hour,)
                )
            cur.execute(
                "INSERT INTO batch_hour_failures"
                " (date, failed_checks, details, last_streaming_batch) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (date) DO UPDATE SET failed_checks = EXCLUDED.failed_checks,"
                " details = EXCLUDED.details, last_streaming_batch = EXCLUDED.last_streaming_batch,"
                " failed_at = now()",
                (hour, ", ".join(failed_checks), details, run.last_streaming_batch),
            )
        return True
    finally:
        conn.close()


def speed_events_of_hour(dsn: str, hour, up_to_batch: int) -> int:
    """The events the speed layer counted in the hour, in its micro-batches up to `up_to_batch`."""
    with connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(events), 0) FROM speed_hour_batches WHERE date = %s AND batch_id "
            "<= %s",
            (hour, up_to_batch),
        )
        (events,) = cur.fetchone()
    conn.close()
    return int(events)


def _lock_hour_and_find_newer_run(cur, hour, run: HourRun) -> int | None:
    """Take the hour's lock (to the end of the transaction), then return the streaming batch of the
    published run if it read newer input than `run`, else None."""
    cur.execute(PUBLICATION_LOCK_TIMEOUT)
    cur.execute(HOUR_LOCK, (hour,))
    cur.execute("SELECT last_streaming_batch FROM batch_hour_runs WHERE date = %s", (hour,))
    row = cur.fetchone()
    return row[0] if row is not None and row[0] > run.last_streaming_batch else None


def _write_hour(cur, hour, result: HourResult, run: HourRun) -> None:
    for table in HOURLY_TABLES:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE date = %s").format(sql.Identifier(table.name)), (hour,)
        )
        rows = [(row[0], hour, *row[1:]) for row in table.rows_of(result)]
        if rows:
            columns = (table.columns[0], "date", *table.columns[1:])
            statement = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
                sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            execute_values(cur, statement, sorted(rows), page_size=1000)
    cur.execute(
        "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
        " last_streaming_batch, raw_rows, distinct_offsets, records_behind, forced)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (date) DO UPDATE SET valid_events = EXCLUDED.valid_events,"
        " valid_bytes = EXCLUDED.valid_bytes, unknown_device_bytes = EXCLUDED.unknown_device_bytes,"
        " last_streaming_batch = EXCLUDED.last_streaming_batch, raw_rows = EXCLUDED.raw_rows,"
        " distinct_offsets = EXCLUDED.distinct_offsets, records_behind = EXCLUDED.records_behind,"
        " forced = EXCLUDED.forced, computed_at = now()",
        (
            hour,
            result.valid_events,
            result.valid_bytes,
            result.unknown_device_bytes,
            run.last_streaming_batch,
            run.raw_rows,
            run.distinct_offsets,
            run.records_behind,
            run.forced,
        ),
    )
