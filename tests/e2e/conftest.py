"""The whole platform for the dashboard test: a database filled by the pipeline as `make demo` runs
it, and Superset serving the dashboards-as-code against it.

The pipeline runs in isolation from any demo or other test on the same services: its own
database, Kafka topic, storage folder (raw Parquet and the streaming checkpoint) and Superset
home. The last complete UTC hour is simulated, streamed and closed by `./airflow.sh dags test
batch_hourly` (the batch layer answers it); the current hour so far is simulated and streamed
only (the speed layer answers it), so every chart has both layers to show.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import requests
from kafka.admin import KafkaAdminClient, NewTopic

from common import settings
from devtools.scratch_db import scratch_database

REPO_ROOT = Path(__file__).resolve().parents[2]
TOPIC_PARTITIONS = settings.TOPIC_PARTITIONS
ADMIN = {"username": "admin", "password": "admin"}
SUPERSET_START_TIMEOUT = 300


def dsn_uri(dsn: str) -> str:
    """Scratch DSNs are key=value strings; Airflow and Superset take a URI."""
    parts = psycopg2.extensions.parse_dsn(dsn)
    return (
        f"postgresql://{parts['user']}:{parts['password']}"
        f"@{parts['host']}:{parts.get('port', 5432)}/{parts['dbname']}"
    )


def run(command: list[str], env: dict[str, str], timeout: float) -> None:
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def simulate(
    env: dict[str, str], topic: str, start: datetime, seconds: int, seed: int, *extra: str
) -> None:
    run(
        [
            sys.executable,
            "-m",
            "simulator",
            "--topic",
            topic,
            "--start",
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--duration",
            str(seconds),
            "--rate",
            "0",
            "--unknown-devices",
            "2",
            "--seed",
            str(seed),
            "--no-progress",
            *extra,
        ],
        env,
        timeout=300,
    )


@pytest.fixture(scope="session")
def pipeline_dsn(tmp_path_factory):
    """A database holding one closed hour (batch layer) and the current hour so far (speed
    layer)."""
    now = datetime.now(UTC)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    closed_hour = current_hour - timedelta(hours=1)
    storage = tmp_path_factory.mktemp("e2e-storage")
    topic = f"e2e-devices-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers(), bootstrap_timeout_ms=10_000
    )
    admin.create_topics([NewTopic(topic, num_partitions=TOPIC_PARTITIONS, replication_factor=1)])
    try:
        with scratch_database("e2e_serving") as dsn:
            env = {
                key: value
                for key, value in os.environ.items()
                if not key.startswith("AIRFLOW_CONN_PLATFORM")
            }
            # The hour is over and fully streamed: no need to wait out the lateness allowance.
            env.update(
                PG_DSN=dsn_uri(dsn),
                STORAGE_ROOT=str(storage),
                KAFKA_TOPIC=topic,
                AIRFLOW_VAR_BATCH_LATENESS_MINUTES="0",
            )
            simulate(env, topic, closed_hour, 3600, seed=7)
            # The current hour so far, at least ten minutes of it (a few ticks in the future do no
            # harm), so that users with small quotas are over them live.
            simulate(
                env,
                topic,
                current_hour,
                max(600, int((now - current_hour).total_seconds())),
                8,
                # Malformed records, so that the Pipeline health dashboard has quarantine reasons.
                "--malformed-rate",
                "0.01",
            )
            run(
                [
                    sys.executable,
                    "-m",
                    "spark_jobs.streaming",
                    "--available-now",
                    "--topic",
                    topic,
                    "--pg-dsn",
                    dsn_uri(dsn),
                    "--storage-root",
                    str(storage),
                    "--master",
                    "local[2]",
                ],
                env,
                timeout=900,
            )
            # `dags test` takes the end of the hour it runs.
            run(
                ["./airflow.sh", "dags", "test", "batch_hourly", current_hour.isoformat()],
                env,
                timeout=900,
            )
            yield dsn
    finally:
        admin.delete_topics([topic])
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base_url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SUPERSET_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"Superset exited {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base_url}/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(2)
    raise AssertionError(
        f"Superset did not answer on {base_url} within {SUPERSET_START_TIMEOUT} s:\n"
        f"{log.read_text()[-3000:]}"
    )


@pytest.fixture(scope="session")
def superset_url(pipeline_dsn):
    """Superset, set up and assets imported by `./superset.sh setup`, serving the pipeline's
    database.

    Its home is .state/superset-e2e, not the one of `make superset`: the import points the
    dashboards' database at this test's database.
    """
    env = dict(os.environ)
    env.update(
        PG_DSN=dsn_uri(pipeline_dsn),
        SUPERSET_HOME=str(settings.state_dir() / "superset-e2e"),
        SUPERSET_ADMIN_USERNAME=ADMIN["username"],
        SUPERSET_ADMIN_PASSWORD=ADMIN["password"],
    )
    env.pop("SUPERSET_SECRET_KEY", None)
    run(["./superset.sh", "setup"], env, timeout=900)
    port = free_port()
    log = Path(env["SUPERSET_HOME"]) / "server.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            ["./superset.sh", "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, server, log)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


# The pipeline of `pipeline_dsn` publishes one hour and streams the current one: its micro-batches
# fill the Pipeline health dashboard, but its hours are only open or published. The other states
# come from the rows a failed gate, late data and an unpublished hour leave in the publication
# tables (docs/contract.md §7), for hours before the pipeline's two.
HOURS_IN_EVERY_STATE_SQL = """
-- Hours older than the pipeline's two (the current hour is open, the last one published), one
-- per remaining state: 2 h ago waiting for completeness (counted by the stream, no run), 3 h ago
-- republication pending (published from batch 1005, late events in batch 1010), 4 h ago
-- published, 5 h ago failed its gate.
INSERT INTO speed_hour_batches (date, batch_id, events, bytes)
VALUES (%(hour)s - interval '2 hours', 1012, 41000, 410000000),
       (%(hour)s - interval '3 hours', 1003, 40000, 400000000),
       (%(hour)s - interval '3 hours', 1010, 12, 120000),
       (%(hour)s - interval '4 hours', 1003, 39000, 390000000),
       (%(hour)s - interval '5 hours', 1003, 38000, 380000000);
INSERT INTO batch_hour_runs
    (date, valid_events, valid_bytes, unknown_device_bytes, last_streaming_batch, computed_at,
     raw_rows, distinct_offsets)
VALUES (%(hour)s - interval '3 hours', 40000, 400000000, 0, 1005,
        %(hour)s - interval '1 hour 50 minutes', 40000, 40000),
       (%(hour)s - interval '4 hours', 39000, 390000000, 0, 1005,
        %(hour)s - interval '2 hours 50 minutes', 39000, 39000);
INSERT INTO batch_hour_failures (date, failed_checks, details, last_streaming_batch, failed_at)
VALUES (%(hour)s - interval '5 hours', 'raw_rows_are_distinct_offsets',
        'raw rows 38012, distinct offsets 38000', 1003, %(hour)s - interval '3 hours 50 minutes');
"""


@pytest.fixture(scope="session")
def hours_in_every_state(pipeline_dsn) -> None:
    current_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg2.connect(pipeline_dsn) as connection, connection.cursor() as cursor:
        cursor.execute(HOURS_IN_EVERY_STATE_SQL, {"hour": current_hour})
    connection.close()
