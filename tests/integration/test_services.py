"""`make up` and `python -m localstack` / `python -m migrations` against real servers: `up` is
idempotent, and failures are one clean line.

These run `make up` itself (quick when it already ran) and leave the services running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psycopg2
import pytest
from kafka import KafkaAdminClient

from common.settings import (
    REPO_ROOT,
    TOPIC_PARTITIONS,
    kafka_bootstrap_servers,
    kafka_topic,
    pg_dsn,
    spark_jars_dir,
)
from devtools import maven
from devtools.scratch_db import scratch_database
from localstack import kafka_broker, postgres_server, processes
from migrations.runner import migrate

pytestmark = [pytest.mark.services, pytest.mark.timeout(600)]

# docs/contract.md §2.
SPEC_USERS = {
    1: ("andres", 200000),
    2: ("paco", 300000),
    3: ("juan", 100000),
    4: ("fede", 5000),
    5: ("gorka", 200000),
    6: ("luis", 200000),
    7: ("eric", 300000),
    8: ("carlos", 100000),
    9: ("david", 300000),
    10: ("juanchu", 300000),
    11: ("charo", 300000),
    12: ("delicidas", 1000000),
    13: ("milagros", 200000),
    14: ("antonio", 1000000),
    15: ("sergio", 1000000),
    16: ("maria", 1000000),
    17: ("cristina", 300000),
    18: ("lucia", 300000),
    19: ("carlota", 200000),
    20: ("emilio", 200000),
}
EXPECTED_USER_ROWS = [
    (f"00000000-0000-0000-0000-{number:012d}", name, f"{name}@gmail.com", quota)
    for number, (name, quota) in sorted(SPEC_USERS.items())
]


def run_up() -> subprocess.CompletedProcess:
    """The README's `make up`: the local stack, Spark's jars, the migrations."""
    return run(["make", "-s", "up"])


def run_module(module: str, *args: str, env: dict[str, str] | None = None):
    return run([sys.executable, "-m", module, *args], env=env)


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540
    )


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    connection.close()
    return rows


def schema_of(dsn: str) -> dict[str, list[tuple]]:
    return {
        "columns": query(
            dsn,
            """
            SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3""",
        ),
        "constraints": query(
            dsn,
            """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
        ),
        "indexes": query(
            dsn,
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
        ),
        "alembic_version": query(dsn, "SELECT version_num FROM alembic_version"),
    }


def user_rows(dsn: str) -> list[tuple]:
    return query(dsn, "SELECT id, name, email, quota FROM user_metadata ORDER BY id")


def topic_partitions(servers: str, topic: str) -> int:
    client = KafkaAdminClient(bootstrap_servers=servers.split(","))
    try:
        (description,) = client.describe_topics([topic])
        return len(description["partitions"])
    finally:
        client.close()


def local_state() -> dict[str, object]:
    """What a second `up` must not touch: the running broker, its storage and the fetched jars."""
    state: dict[str, object] = {
        "spark jars": sorted(p.name for p in spark_jars_dir().glob("*.jar")),
        "spark jars stamp mtime": (spark_jars_dir() / maven.STAMP_NAME).stat().st_mtime_ns,
    }
    if kafka_broker.is_local():
        state["kafka pid"] = kafka_broker.our_running_pid()
        state["kafka storage"] = (
            kafka_broker.paths().formatted_marker.read_text()
        )  # holds the cluster id
        state["kafka jars mtimes"] = {
            jar.name: jar.stat().st_mtime_ns for jar in kafka_broker.paths().libs.glob("*.jar")
        }
        state["kafka jar repository stamp mtime"] = (
            (kafka_broker.jar_repository() / maven.STAMP_NAME).stat().st_mtime_ns
        )
    if not postgres_server.is_external():
        state["postgres pid"] = postgres_server.our_running_pid()
    return state


def snapshot() -> dict[str, object]:
    return {
        "schema": schema_of(pg_dsn()),
        "users": user_rows(pg_dsn()),
        "partitions": topic_partitions(kafka_bootstrap_servers(), kafka_topic()),
        "local state": local_state(),
    }


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def after_first_up() -> dict[str, object]:
    result = run_up()
    assert result.returncode == 0, result.stderr
    return snapshot()


def test_second_up_succeeds_and_changes_nothing(after_first_up):
    result = run_up()

    assert result.returncode == 0, result.stderr
    assert snapshot() == after_first_up


def test_up_loads_exactly_the_users_of_the_spec(after_first_up):
    assert after_first_up["users"] == EXPECTED_USER_ROWS


def test_up_creates_the_topic_with_four_partitions(after_first_up):
    assert after_first_up["partitions"] == TOPIC_PARTITIONS


def test_up_prints_the_endpoints(after_first_up):
    result = run_up()

    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_TOPIC",
        "PG_DSN",
        "STORAGE_ROOT",
        "SPARK_JARS_DIR",
    ):
        assert f"{name}=" in result.stdout


def test_status_reports_both_services_running(after_first_up):
    result = run_module("localstack", "status")

    assert result.returncode == 0, result.stderr
    assert "kafka: running" in result.stdout or "kafka: external" in result.stdout
    assert "postgres: running" in result.stdout or "postgres: external" in result.stdout


def test_the_local_broker_runs_what_the_vm_startup_script_defines(after_first_up, tmp_path):
    """The laptop's broker has no configuration of its own: its files are what the VM's startup
    script's write_config writes for the laptop's settings, and it runs the script's command."""
    listener = kafka_broker.local_listener()
    if listener is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster: no local broker")
    kafka = kafka_broker.paths()
    scratch = tmp_path / "root"
    result = subprocess.run(
        ["bash", str(kafka_broker.STARTUP_SCRIPT), "write_config"],
        env=kafka_broker.script_env(*listener, root=scratch),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for local in (kafka.server_properties, kafka.log4j2_config):
        written = (scratch / local.relative_to(kafka.home)).read_text()
        assert local.read_text() == written.replace(str(scratch), str(kafka.home)), (
            f"{local} is not what startup.sh writes: `make down` and `make up` rewrite it"
        )
    host, port = listener
    assert f"listeners=PLAINTEXT://{host}:{port}," in kafka.server_properties.read_text()
    assert "group.initial.rebalance.delay.ms=0\n" in kafka.server_properties.read_text()
    pid = kafka_broker.our_running_pid()
    assert pid is not None
    command = kafka_broker.broker_command(kafka_broker.script_env(*listener))
    assert processes.command_line(pid) == " ".join(command)


def test_up_refuses_a_kafka_port_taken_by_another_program(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {
            **os.environ,
            "PLATFORM_STATE_DIR": str(tmp_path),
            "KAFKA_BOOTSTRAP_SERVERS": f"localhost:{port}",
        }

        result = run_module("localstack", "up", env=env)

    error = assert_one_line_error(result)
    assert f"port {port}" in error
    assert not (tmp_path / "kafka").exists()


def test_up_without_java_says_so(tmp_path):
    env = {
        **os.environ,
        "PLATFORM_STATE_DIR": str(tmp_path),
        "PATH": str(tmp_path / "no-tools-here"),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    result = run_module("localstack", "up", env=env)

    assert "java" in assert_one_line_error(result)


def test_migrate_of_an_unreachable_database_is_one_line():
    result = run_module(
        "migrations", "--dsn", f"postgresql://nobody:secret@127.0.0.1:{free_port()}/nowhere"
    )

    error = assert_one_line_error(result)
    assert "PostgreSQL" in error
    assert "secret" not in error


@pytest.fixture
def empty_database(after_first_up):
    """A database without any schema, for migrate() to start from nothing."""
    with scratch_database("scratch", migrated=False) as dsn:
        yield dsn


def test_migrate_twice_gives_the_schema_and_users_of_up(empty_database, after_first_up):
    migrate(empty_database)
    once = schema_of(empty_database), user_rows(empty_database)
    migrate(empty_database)

    assert (schema_of(empty_database), user_rows(empty_database)) == once
    assert once == (after_first_up["schema"], EXPECTED_USER_ROWS)
