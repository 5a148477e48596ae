"""Fixtures for tests against the real Kafka broker and PostgreSQL server that `make up` starts.

Each test gets its own topic, database and storage folder, so tests neither see each other's
data nor disturb a demo running on the same services.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import psycopg2
import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

from common import settings
from devtools.scratch_db import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPIC_PARTITIONS = settings.TOPIC_PARTITIONS


@pytest.fixture(scope="session")
def kafka_admin():
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers(), bootstrap_timeout_ms=10_000
        )
    except KafkaError:
        pytest.fail(f"no Kafka broker at {settings.kafka_bootstrap_servers()}: run `make up` first")
    yield admin
    admin.close()


@pytest.fixture
def topic(kafka_admin):
    name = f"test-devices-{uuid.uuid4().hex[:10]}"
    kafka_admin.create_topics(
        [NewTopic(name, num_partitions=TOPIC_PARTITIONS, replication_factor=1)]
    )
    yield name
    kafka_admin.delete_topics([name])


@pytest.fixture
def scratch_dsn():
    """A freshly migrated database of its own on the PostgreSQL server of PG_DSN."""
    with scratch_database("test") as dsn:
        yield dsn


def query(dsn: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall()
    conn.close()
    return rows


def execute(dsn: str, statement: str, params=None) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
    conn.close()


def run_module(
    module: str, *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


def streaming_args(topic: str, dsn: str, storage_root: Path, *extra: str) -> list[str]:
    return [
        "--topic",
        topic,
        "--pg-dsn",
        dsn,
        "--storage-root",
        str(storage_root),
        "--master",
        "local[2]",
        *extra,
    ]


def epoch(iso_utc: str) -> int:
    return int(datetime.fromisoformat(iso_utc.replace("Z", "+00:00")).timestamp())


def summary_totals(
    summary: dict, grain: str, dimension: str, key: str, keep=lambda key: True
) -> dict[tuple[str, int], int]:
    """The simulator's exact totals as {(key, window start epoch): bytes}."""
    return {
        (row[key], epoch(row["date"])): row["bytes"]
        for row in summary[grain][dimension]
        if keep(row[key])
    }


def table_totals(dsn: str, table: str, key: str, total: str) -> dict[tuple[str, int], int]:
    rows = query(dsn, f"SELECT {key}, extract(epoch FROM date)::bigint, {total} FROM {table}")
    return {(k, d): t for k, d, t in rows}


def known_user_ids(dsn: str) -> set[str]:
    return {row[0] for row in query(dsn, "SELECT id FROM user_metadata")}


def load_summary(path: Path) -> dict:
    return json.loads(path.read_text())
