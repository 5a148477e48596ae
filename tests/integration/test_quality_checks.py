"""The quality gate's checks of sql/quality/checks/ on a real PostgreSQL database: an hour written
as the batch job writes it passes every check; each kind of corruption fails the check that
guards against it, with a message naming the check and the values. The speed layer's drift runs
through the operator batch_hourly uses, and once through `dag.test()` of batch_hourly itself (its
sensor and Spark job marked done). The gate inside the batch job is tested end to end in
test_batch.py, with raw files duplicated or deleted and a stream behind."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import psycopg2
import pytest
from platform_airflow.quality import SpeedDriftOperator
from psycopg2.extras import execute_values

from devtools.scratch_db import scratch_database
from spark_jobs.quality_gate import load_checks, run_checks
from tests.integration.conftest import query

pytestmark = pytest.mark.services

HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)
HOUR_PARAM = HOUR.isoformat()
ANDRES, JUAN, FEDE = (f"00000000-0000-0000-0000-0000000000{n:02d}" for n in (1, 3, 4))
UNKNOWN_DEVICE = "ffffffff-ffff-ffff-ffff-ffffffffffff"
ANTENNA_A, ANTENNA_B = (
    "11111111-1111-1111-1111-111111111111",
    "22222222-2222-2222-2222-222222222222",
)
WINDOW = timedelta(minutes=5)
HOUR_TABLES = (
    "bytes_agg_antenna_1h",
    "bytes_agg_app_1h",
    "bytes_agg_user_1h",
    "users_over_quota_1h",
    "batch_hour_runs",
    "bytes_agg_antenna",
    "bytes_agg_app",
    "bytes_agg_user",
    "speed_hour_batches",
)


class Event(NamedTuple):
    device: str
    antenna: str
    app: str
    minute: int
    bytes: int

    @property
    def window(self) -> datetime:
        return HOUR + WINDOW * (self.minute // 5)


# Quotas: andres 200000, juan 100000, fede 5000. 286000 bytes in all, 7000 of an unknown device.
EVENTS = [
    Event(FEDE, ANTENNA_A, "SKYPE", 1, 4000),
    Event(FEDE, ANTENNA_B, "TELEGRAM", 7, 5000),
    Event(ANDRES, ANTENNA_A, "SKYPE", 2, 90000),
    Event(ANDRES, ANTENNA_A, "WHATSAPP", 33, 60000),
    Event(JUAN, ANTENNA_B, "FACETIME", 12, 70000),
    Event(JUAN, ANTENNA_B, "FACEBOOK", 58, 50000),
    Event(UNKNOWN_DEVICE, ANTENNA_A, "SKYPE", 20, 7000),
]


def sums(pairs) -> dict:
    totals = defaultdict(int)
    for key, value in pairs:
        totals[key] += value
    return dict(totals)


def rows_of_hour(events: list[Event], users: dict[str, tuple[str, int]]) -> dict[str, list[tuple]]:
    """{table (columns): rows} as the batch job and the speed layer write them, computed with
    loops."""
    user_totals = sums((users[e.device][0], e.bytes) for e in events if e.device in users)
    quota_of = dict(users.values())
    return {
        "bytes_agg_antenna_1h (antenna_id, date, sum_antenna_bytes)": [
            (antenna, HOUR, total)
            for antenna, total in sums((e.antenna, e.bytes) for e in events).items()
        ],
        "bytes_agg_app_1h (app, date, sum_app_bytes)": [
            (app, HOUR, total) for app, total in sums((e.app, e.bytes) for e in events).items()
        ],
        "bytes_agg_user_1h (email, date, sum_user_bytes)": [
            (email, HOUR, total) for email, total in user_totals.items()
        ],
        "users_over_quota_1h (email, date, quota, sum_user_bytes)": [
            (email, HOUR, quota_of[email], total)
            for email, total in user_totals.items()
            if total > quota_of[email]
        ],
        (
            "batch_hour_runs (date, valid_events, valid_bytes, unknown_device_bytes,"
            " last_streaming_batch, raw_rows, distinct_offsets)"
        ): [
            (
                HOUR,
                len(events),
                sum(e.bytes for e in events),
                sum(e.bytes for e in events if e.device not in users),
                0,
                len(events),
                len(events),
            )
        ],
        # The speed layer's own count, in its micro-batch 0, which the run read.
        "speed_hour_batches (date, batch_id, events, bytes)": [
            (HOUR, 0, len(events), sum(e.bytes for e in events))
        ],
        "bytes_agg_antenna (antenna_id, date, sum_antenna_bytes)": [
            (*key, total)
            for key, total in sums(((e.antenna, e.window), e.bytes) for e in events).items()
        ],
        "bytes_agg_app (app, date, sum_app_bytes)": [
            (*key, total)
            for key, total in sums(((e.app, e.window), e.bytes) for e in events).items()
        ],
        "bytes_agg_user (id, date, sum_user_bytes)": [
            (*key, total)
            for key, total in sums(((e.device, e.window), e.bytes) for e in events).items()
        ],
    }


def write_hour(dsn: str, events: list[Event] = EVENTS) -> None:
    users = {
        user_id: (email, quota)
        for user_id, email, quota in query(dsn, "SELECT id, email, quota FROM user_metadata")
    }
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for table, rows in rows_of_hour(events, users).items():
            execute_values(cur, f"INSERT INTO {table} VALUES %s", rows)
    conn.close()


def execute(dsn: str, statement: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement, {"hour": HOUR})
    conn.close()


def failed_checks(dsn: str) -> dict[str, str]:
    """{name: message} of the checks that fail for HOUR, run as the batch job's gate runs them."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cursor:
            outcomes = run_checks(cursor, load_checks(), HOUR_PARAM)
    finally:
        conn.close()
    return {outcome.name: outcome.describe() for outcome in outcomes if not outcome.passed}


def airflow_connection(dsn: str) -> str:
    """The DSN as an AIRFLOW_CONN_* value (JSON form: scratch DSNs are key=value strings)."""
    parts = psycopg2.extensions.parse_dsn(dsn)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parts.get("host"),
            "port": int(parts.get("port", 5432)),
            "login": parts.get("user"),
            "password": parts.get("password"),
            "schema": parts.get("dbname"),
        }
    )


@pytest.fixture(scope="module")
def module_dsn():
    """One migrated scratch database for the whole module: creating one takes seconds, emptying
    it none."""
    with scratch_database("test_quality") as dsn:
        yield dsn


@pytest.fixture
def empty_dsn(module_dsn, monkeypatch):
    """The module's database without any hour, as connection platform_postgres."""
    execute(module_dsn, f"TRUNCATE {', '.join(HOUR_TABLES)}")
    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_POSTGRES", airflow_connection(module_dsn))
    return module_dsn


@pytest.fixture
def hour_dsn(empty_dsn):
    """The module's database holding HOUR as the pipeline writes it, as connection
    platform_postgres."""
    write_hour(empty_dsn)
    return empty_dsn


def test_a_consistent_hour_passes_every_check(hour_dsn):
    assert failed_checks(hour_dsn) == {}


def test_an_hour_without_data_passes_every_check(empty_dsn):
    assert failed_checks(empty_dsn) == {}


CORRUPTIONS = {
    "antenna total off by one": (
        "UPDATE bytes_agg_antenna_1h SET sum_antenna_bytes = sum_antenna_bytes + 1"
        f" WHERE antenna_id = '{ANTENNA_A}'",
        {
            "bytes_equal_speed_bytes": (
                "batch_table=bytes_agg_antenna_1h, batch_bytes=286001, speed_bytes=286000,"
                " drift_bytes=1"
            )
        },
    ),
    "app total short": (
        "UPDATE bytes_agg_app_1h SET sum_app_bytes = sum_app_bytes - 10 WHERE app = 'FACEBOOK'",
        {
            "bytes_equal_speed_bytes": (
                "batch_table=bytes_agg_app_1h, batch_bytes=285990, speed_bytes=286000,"
                " drift_bytes=-10"
            )
        },
    ),
    "user over quota missing": (
        "DELETE FROM users_over_quota_1h WHERE email = 'fede@gmail.com'",
        {
            "over_quota_rows_match_user_totals": (
                "email=fede@gmail.com, problem=over quota but not listed"
            )
        },
    ),
    "user listed under quota": (
        "INSERT INTO users_over_quota_1h VALUES ('andres@gmail.com', %(hour)s, 200000, 150000)",
        {
            "over_quota_rows_match_user_totals": (
                "email=andres@gmail.com, problem=listed but not over quota"
            )
        },
    ),
    "over-quota row with a stale quota": (
        "UPDATE users_over_quota_1h SET quota = 4000 WHERE email = 'fede@gmail.com'",
        {
            "over_quota_rows_match_user_totals": (
                "problem=listed quota differs from user_metadata, listed_quota=4000,"
                " metadata_quota=5000"
            )
        },
    ),
    "user total changed": (
        "UPDATE bytes_agg_user_1h SET sum_user_bytes = sum_user_bytes + 5"
        " WHERE email = 'andres@gmail.com'",
        {
            "bytes_equal_speed_bytes": (
                "batch_table=bytes_agg_user_1h + unknown devices, batch_bytes=286005,"
                " speed_bytes=286000, drift_bytes=5"
            )
        },
    ),
    "unknown device counted as a user": (
        "INSERT INTO bytes_agg_user_1h VALUES ('ghost@example.com', %(hour)s, 7000)",
        {
            "user_rows_are_known_users": "email=ghost@example.com, sum_user_bytes=7000",
            "bytes_equal_speed_bytes": "drift_bytes=7000",
        },
    ),
    "a record stored twice in raw storage": (
        "UPDATE batch_hour_runs SET raw_rows = raw_rows + 1",
        {
            "raw_rows_are_distinct_offsets": "raw_rows=8, distinct_offsets=7, duplicated_rows=1",
            "raw_rows_equal_speed_events": "raw_rows=8, speed_events=7, difference=1",
        },
    ),
    "a micro-batch the stream counted but raw storage lost": (
        "INSERT INTO speed_hour_batches VALUES (%(hour)s, -1, 3, 900)",
        {
            "raw_rows_equal_speed_events": "raw_rows=7, speed_events=10, difference=-3",
            "bytes_equal_speed_bytes": (
                "batch_table=bytes_agg_antenna_1h, batch_bytes=286000, speed_bytes=286900,"
                " drift_bytes=-900"
            ),
        },
    ),
    "a late micro-batch after the one the run read": (
        "INSERT INTO speed_hour_batches VALUES (%(hour)s, 1, 3, 900)",
        {},
    ),
    "a stream behind": (
        "UPDATE batch_hour_runs SET records_behind = 12345",
        {"input_complete": "records_behind=12345, forced=False"},
    ),
    "a stream behind, published by hand with --allow-incomplete": (
        "UPDATE batch_hour_runs SET records_behind = 12345, forced = true",
        {},
    ),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_a_corrupted_hour_fails_the_check_that_guards_it(hour_dsn, corruption):
    statement, expected = CORRUPTIONS[corruption]
    execute(hour_dsn, statement)

    failures = failed_checks(hour_dsn)

    assert set(failures) == set(expected)
    for name, values in expected.items():
        assert failures[name].startswith(f"quality check {name} failed: ")
        assert values in failures[name]


def drift_per_table(drift: int) -> dict[str, int]:
    return dict.fromkeys(("bytes_agg_antenna_1h", "bytes_agg_app_1h", "bytes_agg_user_1h"), drift)


def test_the_speed_drift_is_zero_when_the_speed_layer_saw_every_event(hour_dsn):
    operator = SpeedDriftOperator(
        task_id="measure_speed_drift", conn_id="platform_postgres", hour=HOUR_PARAM
    )
    assert operator.execute(context={}) == drift_per_table(0)


def test_the_speed_drift_counts_the_bytes_the_speed_layer_missed(hour_dsn):
    # Fede's 5000 bytes at 10:07 arrived after the watermark: in the batch totals, not in the
    # windows.
    window = "date = %(hour)s + interval '5 minutes'"
    execute(
        hour_dsn, f"DELETE FROM bytes_agg_antenna WHERE antenna_id = '{ANTENNA_B}' AND {window}"
    )
    execute(hour_dsn, "DELETE FROM bytes_agg_app WHERE app = 'TELEGRAM'")
    execute(hour_dsn, f"DELETE FROM bytes_agg_user WHERE id = '{FEDE}' AND {window}")
    # A window of the next hour never counts toward this one.
    execute(
        hour_dsn, "INSERT INTO bytes_agg_app VALUES ('SKYPE', %(hour)s + interval '1 hour', 999)"
    )
    operator = SpeedDriftOperator(
        task_id="measure_speed_drift", conn_id="platform_postgres", hour=HOUR_PARAM
    )

    assert operator.execute(context={}) == drift_per_table(5000)


@pytest.fixture
def batch_hourly(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO_ROOT

    return DagBag(dag_folder=REPO_ROOT / "dags").dags["batch_hourly"]


def run_hour_with_dag_test(dag) -> dict[str, str]:
    """{task_id: state} of a `dag.test()` run of HOUR, the Spark job marked done instead of run."""
    # dag.test(logical_date=T) runs the interval that ends at T.
    run = dag.test(
        logical_date=HOUR + timedelta(hours=1),
        mark_success_pattern="wait_for_complete_hour|run_batch",
    )
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_dag_test_of_batch_hourly_measures_the_published_hour(hour_dsn, batch_hourly):
    assert run_hour_with_dag_test(batch_hourly) == dict.fromkeys(
        ("wait_for_complete_hour", "run_batch", "measure_speed_drift"), "success"
    )
