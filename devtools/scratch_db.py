"""Databases of their own on the PostgreSQL server of PG_DSN, for tests and benchmarks, so that
they never touch the serving database and never see each other's rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn

from common.settings import pg_dsn
from migrations.runner import migrate


def _run_on_server(statement: sql.Composable) -> None:
    # CREATE / DROP DATABASE cannot run inside a transaction.
    conn = psycopg2.connect(pg_dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextmanager
def scratch_database(prefix: str, migrated: bool = True, keep: bool = False) -> Iterator[str]:
    """The DSN of a new database (migrated and seeded unless told otherwise), dropped afterwards
    unless `keep` (a benchmark's data, to measure again without generating it again)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _run_on_server(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = make_dsn(pg_dsn(), dbname=name)
        if migrated:
            migrate(dsn)
        yield dsn
    finally:
        if not keep:
            _drop(name)


def _drop(name: str, attempts: int = 10) -> None:
    """DROP ... WITH (FORCE), retried: a session of another role still closing (a job's child
    process, an autovacuum worker) cannot be terminated by the test's role, and ends by itself."""
    for attempt in range(attempts):
        try:
            _run_on_server(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            return
        except psycopg2.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
