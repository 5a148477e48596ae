"""batch_hourly's start date: configured, else the first hour with data, else the current hour;
a database that cannot be read stops the DAG from parsing rather than guess."""

from __future__ import annotations

from datetime import UTC, datetime

import pendulum
import psycopg2
import pytest
from airflow.dag_processing.dagbag import DagBag
from platform_airflow.schedule import START_DATE_VARIABLE, StartDateUnknown, batch_start_date

from devtools.scratch_db import scratch_database
from tests.conftest import REPO_ROOT
from tests.integration.test_batch import dsn_uri

CONN_ID = "platform_postgres"
CONN_VARIABLE = "AIRFLOW_CONN_PLATFORM_POSTGRES"
# Nothing listens on port 1: the connection is refused at once.
UNREACHABLE_URI = "postgresql://platform:secret@127.0.0.1:1/platform"


def parse_batch_hourly(monkeypatch, database_uri: str) -> DagBag:
    """The DAG folder parsed as the DAG processor parses it, without a configured start date."""
    monkeypatch.delenv(START_DATE_VARIABLE, raising=False)
    monkeypatch.setenv(CONN_VARIABLE, database_uri)
    return DagBag(dag_folder=REPO_ROOT / "dags")


def test_a_configured_start_date_is_used_without_reading_the_database(monkeypatch):
    monkeypatch.setenv(CONN_VARIABLE, UNREACHABLE_URI)

    start = batch_start_date(CONN_ID, environ={START_DATE_VARIABLE: "2026-11-28T05:00:00+01:00"})

    assert start == pendulum.datetime(2026, 11, 28, 4, tz="UTC")


def test_an_unreadable_database_fails_the_parse_and_names_the_setting(monkeypatch):
    monkeypatch.setenv(CONN_VARIABLE, UNREACHABLE_URI)
    with pytest.raises(StartDateUnknown, match=START_DATE_VARIABLE):
        batch_start_date(CONN_ID, environ={})

    bag = parse_batch_hourly(monkeypatch, UNREACHABLE_URI)

    assert "batch_hourly" not in bag.dags
    (error,) = (
        text for path, text in bag.import_errors.items() if path.endswith("batch_hourly.py")
    )
    assert "set BATCH_START_DATE" in error
    assert "secret" not in error


@pytest.fixture
def empty_database():
    with scratch_database("schedule") as dsn:
        yield dsn


def insert(dsn: str, statement: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


@pytest.mark.services
def test_a_database_without_data_starts_at_the_current_hour(monkeypatch, empty_database):
    monkeypatch.setenv(CONN_VARIABLE, dsn_uri(empty_database))
    now = datetime(2026, 12, 2, 13, 41, 28, tzinfo=UTC)

    assert batch_start_date(CONN_ID, environ={}, now=now) == pendulum.datetime(
        2026, 12, 2, 13, tz="UTC"
    )


@pytest.mark.services
def test_the_dag_starts_at_the_first_hour_either_layer_has(monkeypatch, empty_database):
    # The speed layer counted 09:00 and 11:00; the batch layer published 08:00 (its speed rows
    # are gone): the first hour with data is 08:00.
    insert(
        empty_database,
        "INSERT INTO speed_hour_batches (date, batch_id, events, bytes) VALUES"
        " ('2026-11-27 11:00+00', 7, 3, 30), ('2026-11-27 09:00+00', 4, 2, 20);"
        "INSERT INTO batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
        " last_streaming_batch) VALUES ('2026-11-27 08:00+00', 1, 10, 0, 2)",
    )

    dag = parse_batch_hourly(monkeypatch, dsn_uri(empty_database)).dags["batch_hourly"]

    assert dag.start_date == pendulum.datetime(2026, 11, 27, 8, tz="UTC")
    assert dag.catchup
