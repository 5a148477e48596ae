"""The Kafka VM's startup script: it passes shellcheck, it installs and starts the broker when its
steps run against a scratch root on this machine, and it runs named steps alone (what the laptop's
broker, localstack/kafka_broker.py, uses).

Only what needs a real VM is replaced: the jars come from a Maven-layout folder resolved from
the same pom as the lock (file:// instead of Maven Central), there is no data disk to format,
and `systemctl enable --now` is a stand-in that runs the ExecStart of the generated unit. The
test then checks, with a Kafka client, that the broker answers and holds the topic.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from common.settings import TOPIC_PARTITIONS
from deploy.kafka_jars import LOCK_FILE, lock_text, resolve_into
from localstack.kafka_broker import NO_METADATA_SERVER
from tests.infra.terraform import TERRAFORM_DIR

STARTUP_SCRIPT = TERRAFORM_DIR / "kafka" / "startup.sh"
FAKE_SYSTEMCTL = textwrap.dedent(
    # Two of the script's lines are too long for this file: adjacent literals carry them over.
    """\
    #!{python}
    # systemctl stand-in: `enable --now UNIT` runs the unit's ExecStart in the background.
    import os, shlex, subprocess, sys
    root = os.environ["KAFKA_ROOT"]
    if sys.argv[1:3] == ["enable", "--now"]:
        unit = open(os.path.join(root, "etc/systemd/system", sys.argv[3])).read()
        command = next(line.split("=", 1)[1] for line in unit.splitlines()"""
    """ if line.startswith("ExecStart="))
        log = open(os.path.join(root, "console.log"), "ab")
        process = subprocess.Popen(shlex.split(command), stdout=log,"""
    """ stderr=subprocess.STDOUT, start_new_session=True)
        open(os.path.join(root, "kafka.pid"), "w").write(str(process.pid))
    """
)


@pytest.fixture(scope="module")
def maven_repository(tmp_path_factory) -> Path:
    """The lock's jars in a Maven-layout folder, resolved from the pom (Maven's local cache)."""
    repository = tmp_path_factory.mktemp("maven-repository")
    jars = resolve_into(repository)
    assert lock_text(repository, jars) == LOCK_FILE.read_text(), (
        "kafka-jars.lock is stale: run python -m deploy.kafka_jars"
    )
    return repository


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck missing: make test installs it"
)
def test_the_startup_script_passes_shellcheck():
    result = subprocess.run(
        ["shellcheck", "--severity=style", str(STARTUP_SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_the_startup_script_installs_and_starts_kafka_with_the_topic(tmp_path, maven_repository):
    root = tmp_path / "root"
    root.mkdir()
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    systemctl.chmod(0o755)
    port, controller_port = find_free_port(), find_free_port()
    env = {
        **os.environ,
        "KAFKA_ROOT": str(root),
        "KAFKA_MAVEN_REPOSITORY": maven_repository.as_uri(),
        "KAFKA_JARS_LOCK_FILE": str(LOCK_FILE),
        "KAFKA_LISTEN_HOST": "127.0.0.1",
        "KAFKA_ADVERTISED_HOST": "127.0.0.1",
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_TOPIC": "devices",
        "KAFKA_TOPIC_PARTITIONS": str(TOPIC_PARTITIONS),
        "KAFKA_RETENTION_HOURS": "1",
        "KAFKA_HEAP_OPTS": "-Xmx256m",
        "KAFKA_DATA_DEVICE": "",
        "KAFKA_USER": subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip(),
        "SYSTEMCTL": str(systemctl),
        # Nothing may fall back to the metadata server: an unset setting fails loudly instead.
        "METADATA_URL": "http://127.0.0.1:9/unreachable",
    }
    try:
        result = subprocess.run(
            ["bash", str(STARTUP_SCRIPT)], env=env, capture_output=True, text=True, timeout=150
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "topic devices ready" in result.stderr

        unit = (root / "etc/systemd/system/kafka.service").read_text()
        exec_start = next(
            line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")
        )
        assert shlex.split(exec_start)[-2:] == [
            "kafka.Kafka",
            str(root / "etc/kafka/server.properties"),
        ]
        assert "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit
        assert (root / "var/lib/kafka/logs/meta.properties").is_file()
        assert (
            len(list((root / "opt/kafka/libs").glob("*.jar")))
            == len(LOCK_FILE.read_text().splitlines()) - 2
        )

        assert topic_partitions(f"127.0.0.1:{port}", "devices") == TOPIC_PARTITIONS

        # A second boot changes nothing and finds the topic again.
        again = subprocess.run(
            ["bash", str(STARTUP_SCRIPT)],
            env={**env, "SYSTEMCTL": "true"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "formatting" not in again.stderr
    finally:
        stop_broker(root / "kafka.pid")


def test_named_steps_run_alone_and_print_the_units_command(tmp_path):
    """`startup.sh STEP...` runs only those steps, and print_broker_command prints the ExecStart of
    the unit: the command the laptop starts. The laptop's metadata URL fails at once, so no
    setting waits on a metadata server (curl would give each one 5 s)."""
    env = {
        **os.environ,
        "KAFKA_ROOT": str(tmp_path),
        "KAFKA_HEAP_OPTS": "-Xmx256m -Xms64m",
        "KAFKA_USER": "nobody",
        "METADATA_URL": NO_METADATA_SERVER,
    }
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(STARTUP_SCRIPT), "write_unit", "print_broker_command"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10

    unit = (tmp_path / "etc/systemd/system/kafka.service").read_text()
    exec_start = next(
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")
    )
    printed = result.stdout.split("\0")[:-1]
    assert printed == shlex.split(exec_start)
    assert printed[1:3] == ["-Xmx256m", "-Xms64m"]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [
        tmp_path / "etc/systemd/system/kafka.service"
    ]

    unknown = subprocess.run(
        ["bash", str(STARTUP_SCRIPT), "install_jars", "no_such_step"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert "unknown step no_such_step" in unknown.stderr
    assert not (tmp_path / "opt").exists()


def find_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def topic_partitions(servers: str, topic: str) -> int:
    from kafka import KafkaAdminClient

    client = KafkaAdminClient(bootstrap_servers=[servers], request_timeout_ms=10000)
    try:
        (description,) = client.describe_topics([topic])
        return len(description["partitions"])
    finally:
        client.close()


def stop_broker(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(60):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
