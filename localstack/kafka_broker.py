"""A single-node Apache Kafka broker in KRaft mode, exactly as the Kafka VM runs it, or a check of
an existing one.

The broker's configuration has one definition: the VM's startup script, terraform/kafka/startup.sh.
With the default KAFKA_BOOTSTRAP_SERVERS (a local address) `up` runs its steps `install_jars
write_config format_storage` with KAFKA_ROOT at `.state/kafka` and the laptop's settings (below),
then starts the command line the script's `print_broker_command` gives (the VM unit's ExecStart)
detached, with a pid file. The jars are those of terraform/kafka/kafka-jars.lock, which the script
installs and checks from a Maven-layout folder under `.state/jars` as the VM does from Maven
Central. With any other address `up` starts nothing and only checks that the cluster answers.
Either way it makes sure the topic exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import CommandError, first_line, require_command
from common.settings import REPO_ROOT, kafka_bootstrap_servers, kafka_topic, state_dir
from common.settings import TOPIC_PARTITIONS as CONTRACT_TOPIC_PARTITIONS
from deploy.kafka_jars import LOCK_FILE, lock_text, resolve_into
from devtools.maven import STAMP_NAME
from localstack import processes
from localstack.ports import is_local_host, require_free_port, split_host_port

STARTUP_SCRIPT = REPO_ROOT / "terraform" / "kafka" / "startup.sh"
# The script's steps that install and configure the broker without systemd, a service user or a
# data disk; the laptop starts the broker itself and creates the topic with ensure_topic.
SETUP_STEPS = ("install_jars", "write_config", "format_storage")
DEFAULT_CONTROLLER_PORT = 9093
TOPIC_PARTITIONS = CONTRACT_TOPIC_PARTITIONS
STARTUP_TIMEOUT_S = 60
SETUP_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30
# Settings of the script that differ on a laptop: the environment may override each of them.
LAPTOP_SETTINGS = {
    # Kafka's own scripts read the heap from KAFKA_HEAP_OPTS too; 512 MB is plenty for one topic.
    "KAFKA_HEAP_OPTS": "-Xmx512m",
    # Consumers of tests and jobs join a group alone; waiting for more members only slows them.
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "KAFKA_APP_LOG_FILE_SIZE": "20MB",
    "KAFKA_APP_LOG_FILES": "3",
}
# Refused at once: no setting may wait on, or come from, Google's metadata server.
NO_METADATA_SERVER = "http://127.0.0.1:9/no-metadata-server"


@dataclass(frozen=True)
class KafkaPaths:
    """The script's layout under KAFKA_ROOT (its INSTALL_DIR, CONFIG_DIR, LOG_DIRS, APP_LOG_DIR)."""

    home: Path

    @property
    def libs(self) -> Path:
        return self.home / "opt" / "kafka" / "libs"

    @property
    def data(self) -> Path:
        return self.home / "var" / "lib" / "kafka" / "logs"

    @property
    def server_properties(self) -> Path:
        return self.home / "etc" / "kafka" / "server.properties"

    @property
    def log4j2_config(self) -> Path:
        return self.home / "etc" / "kafka" / "log4j2.properties"

    @property
    def server_log(self) -> Path:
        return self.home / "var" / "log" / "kafka" / "server.log"

    @property
    def console_log(self) -> Path:
        """The startup script's output and the JVM's own stdout/stderr: failures that happen
        before logging is set up."""
        return self.home / "var" / "log" / "kafka" / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def formatted_marker(self) -> Path:
        return self.data / "meta.properties"

    @property
    def legacy_server_properties(self) -> Path:
        """Where brokers started before the script configured the laptop's read their settings:
        such a broker is still recognised, so that `down` stops it."""
        return self.home / "server.properties"


def paths() -> KafkaPaths:
    return KafkaPaths(state_dir() / "kafka")


def jar_repository() -> Path:
    """The locked jars in a Maven-layout folder: the laptop's stand-in for Maven Central."""
    return state_dir() / "jars" / "kafka-repository"


def controller_port() -> int:
    return int(os.environ.get("KAFKA_CONTROLLER_PORT", DEFAULT_CONTROLLER_PORT))


def local_listener() -> tuple[str, int] | None:
    """(host, port) to start a broker on, or None when the servers are somewhere else."""
    servers = [s for s in kafka_bootstrap_servers().split(",") if s.strip()]
    if len(servers) != 1:
        return None
    host, port = split_host_port(servers[0], 9092)
    return (host, port) if is_local_host(host) else None


def is_local() -> bool:
    return local_listener() is not None


# --- what runs -------------------------------------------------------------------------------


def our_running_pid() -> int | None:
    """The pid of the broker this state directory started, if it still runs."""
    kafka = paths()
    pid = processes.read_pid(kafka.pid_file)
    if pid is None or not processes.is_running(pid):
        return None
    cmdline = processes.command_line(pid)
    # A pid file can outlive its process (reboot, kill -9) and the pid be reused by another program.
    if cmdline is not None and not any(
        str(config) in cmdline
        for config in (kafka.server_properties, kafka.legacy_server_properties)
    ):
        return None
    return pid


def preflight() -> None:
    """Fail early, before any download, if a local broker is needed but cannot start."""
    listener = local_listener()
    if listener is None or our_running_pid() is not None:
        return
    require_command(
        "java", "install a Java 17+ runtime (Debian: `apt-get install -y openjdk-17-jre-headless`)"
    )
    host, port = listener
    require_free_port(
        host,
        port,
        "Kafka listener, from KAFKA_BOOTSTRAP_SERVERS",
        f"choose another port with KAFKA_BOOTSTRAP_SERVERS={host}:PORT",
    )
    # The script's controller listens on loopback whatever the listener's host.
    require_free_port(
        "127.0.0.1",
        controller_port(),
        "Kafka KRaft controller",
        "choose another port with KAFKA_CONTROLLER_PORT=PORT",
    )


def up() -> str:
    """Start (or find) the broker and make sure the topic exists; a one-line report."""
    servers = kafka_bootstrap_servers()
    listener = local_listener()
    if listener is None:
        wait_until_answering(servers, timeout_s=15, on_timeout=unreachable_external_cluster)
        partitions = ensure_topic(servers)
        return (
            f"kafka: using {servers} (external), topic {kafka_topic()} with {partitions} partitions"
        )
    pid = our_running_pid()
    if pid is not None:
        wait_until_answering(servers, STARTUP_TIMEOUT_S, on_timeout=lambda: startup_timed_out(pid))
        partitions = ensure_topic(servers)
        return (
            f"kafka: already running (pid {pid}) on {servers}, topic {kafka_topic()} with "
            f"{partitions} partitions"
        )
    # Only when none of ours runs: a running broker keeps its jars, since replacing them under a
    # live JVM could break it mid-run.
    ensure_jar_repository()
    started = time.monotonic()
    pid = start_broker(*listener)
    wait_until_answering(
        servers, STARTUP_TIMEOUT_S, on_timeout=lambda: startup_timed_out(pid), pid=pid
    )
    partitions = ensure_topic(servers)
    return (
        f"kafka: started (pid {pid}) on {servers} in {time.monotonic() - started:.1f} s,"
        f" topic {kafka_topic()} with {partitions} partitions"
    )


def down() -> str:
    if not is_local():
        return f"kafka: {kafka_bootstrap_servers()} is external, left alone"
    kafka = paths()
    pid = our_running_pid()
    if pid is None:
        kafka.pid_file.unlink(missing_ok=True)
        return "kafka: not running"
    clean = processes.terminate(pid, STOP_TIMEOUT_S)
    kafka.pid_file.unlink(missing_ok=True)
    return f"kafka: stopped (pid {pid})" + ("" if clean else f", killed after {STOP_TIMEOUT_S} s")


def status() -> str:
    servers = kafka_bootstrap_servers()
    if not is_local():
        answering = answers(servers)
        return f"kafka: external {servers}, " + ("answering" if answering else "NOT answering")
    pid = our_running_pid()
    if pid is None:
        return "kafka: not running"
    health = "answering" if answers(servers) else "NOT answering"
    return f"kafka: running (pid {pid}) on {servers}, {health}; log {paths().server_log}"


# --- starting the broker ---------------------------------------------------------------------


def start_broker(host: str, port: int) -> int:
    """Install and configure the broker with the VM's startup script, then start its command."""
    kafka = paths()
    env = script_env(host, port)
    run_startup_script(env, *SETUP_STEPS)
    command = broker_command(env)
    pid = processes.start_detached(command, kafka.console_log, cwd=kafka.home)
    kafka.pid_file.write_text(f"{pid}\n")
    return pid


def script_env(host: str, port: int, root: Path | None = None) -> dict[str, str]:
    """The environment the startup script runs with for a local broker on host:port under `root`
    (the state directory's kafka folder by default)."""
    laptop = {name: os.environ.get(name, value) for name, value in LAPTOP_SETTINGS.items()}
    return {
        **os.environ,
        **laptop,
        "KAFKA_ROOT": str(root or paths().home),
        "KAFKA_MAVEN_REPOSITORY": jar_repository().as_uri(),
        "KAFKA_JARS_LOCK_FILE": str(LOCK_FILE),
        "KAFKA_LISTEN_HOST": host,
        "KAFKA_ADVERTISED_HOST": host,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port()),
        "KAFKA_TOPIC": kafka_topic(),
        "KAFKA_TOPIC_PARTITIONS": str(TOPIC_PARTITIONS),
        "KAFKA_DATA_DEVICE": "",
        "METADATA_URL": NO_METADATA_SERVER,
    }


def run_startup_script(env: dict[str, str], *steps: str) -> None:
    """Run the named steps of the startup script; its output is appended to the console log."""
    log_path = paths().console_log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["bash", str(STARTUP_SCRIPT), *steps],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=SETUP_TIMEOUT_S,
    )
    with open(log_path, "a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise CommandError(
            f"the Kafka startup script failed in {' '.join(steps)} ({reason}); see {log_path}, "
            "then rerun `make up`"
        )


def broker_command(env: dict[str, str]) -> list[str]:
    """The broker's command line as the script defines it (the VM unit's ExecStart)."""
    result = subprocess.run(
        ["bash", str(STARTUP_SCRIPT), "print_broker_command"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=SETUP_TIMEOUT_S,
    )
    command = result.stdout.split("\0")[:-1]
    # our_running_pid recognises the broker by its configuration file on the command line.
    if result.returncode != 0 or command[-2:] != ["kafka.Kafka", str(paths().server_properties)]:
        raise CommandError(
            f"the Kafka startup script gave no broker command line ({first_line(result.stderr)})"
        )
    return command


def ensure_jar_repository() -> Path:
    """The jars of kafka-jars.lock in a Maven-layout folder, fetched with Maven once per lock.

    The script's install_jars copies them from there (file://) and checks each against the lock's
    sha256, as the VM does from Maven Central: the laptop runs exactly the VM's jars.
    """
    repository = jar_repository()
    fingerprint = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    stamp = repository / STAMP_NAME
    with contextlib.suppress(OSError):
        if stamp.read_text().strip() == fingerprint:
            return repository
    print(
        "maven: fetching the Kafka broker jars of the VM's lock (first run: downloads from Maven "
        "Central)...",
        flush=True,
    )
    staging = repository.parent / f".{repository.name}.download"
    shutil.rmtree(staging, ignore_errors=True)
    jars = resolve_into(staging)
    if lock_text(staging, jars) != LOCK_FILE.read_text():
        shutil.rmtree(staging, ignore_errors=True)
        raise CommandError(
            f"{LOCK_FILE.relative_to(REPO_ROOT)} does not match the jars of its pom; run "
            "`python -m deploy.kafka_jars` and rerun `make up`"
        )
    shutil.rmtree(repository, ignore_errors=True)
    staging.rename(repository)
    # Written last: an interrupted fetch leaves no stamp and is simply redone.
    stamp.write_text(fingerprint + "\n")
    print(f"maven: {len(jars)} jars in {repository}", flush=True)
    return repository


# --- talking to the cluster ------------------------------------------------------------------


def admin_client(servers: str, timeout_ms: int):
    from kafka import KafkaAdminClient

    silence_client_logs()
    return KafkaAdminClient(
        bootstrap_servers=servers.split(","),
        client_id="platform-services",
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=max(timeout_ms, 5000),
    )


def silence_client_logs() -> None:
    """kafka-python logs every refused connection while the broker boots; our messages say
    enough."""
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    logging.getLogger("kafka").propagate = False


def answers(servers: str, timeout_ms: int = 3000) -> bool:
    from kafka.errors import KafkaError

    try:
        client = admin_client(servers, timeout_ms)
    except (KafkaError, OSError):
        return False
    try:
        client.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        client.close()


def wait_until_answering(
    servers: str, timeout_s: float, on_timeout, pid: int | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(servers, timeout_ms=2000):
            return
        if pid is not None and not processes.is_running(pid):
            processes.reap_if_child(pid)
            raise CommandError(
                f"Kafka exited while starting; see {paths().console_log} and {paths().server_log}"
            )
        time.sleep(0.5)
    raise on_timeout()


def startup_timed_out(pid: int) -> CommandError:
    return CommandError(
        f"Kafka (pid {pid}) did not answer on {kafka_bootstrap_servers()} within "
        f"{STARTUP_TIMEOUT_S} s;"
        f" see {paths().server_log} and {paths().console_log}, then `make down` and `make up`"
    )


def unreachable_external_cluster() -> CommandError:
    return CommandError(
        f"Kafka at KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap_servers()} does not answer;"
        " check the address and the network, or unset KAFKA_BOOTSTRAP_SERVERS to start a local "
        "broker"
    )


def ensure_topic(servers: str) -> int:
    """Create the topic if it is missing (never alter an existing one); its partition count."""
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    topic = kafka_topic()
    try:
        client = admin_client(servers, 10000)
    except KafkaError as error:
        raise CommandError(
            f"Kafka at {servers} stopped answering ({first_line(error)}); see "
            "`python -m localstack status`"
        ) from None
    try:
        if topic not in client.list_topics():
            # TopicAlreadyExistsError: created meanwhile by a producer with auto-creation, or a
            # concurrent `up`.
            with contextlib.suppress(TopicAlreadyExistsError):
                # Replication factor left to the cluster's default: 1 here, more on a real cluster.
                client.create_topics(
                    {topic: {"num_partitions": TOPIC_PARTITIONS}}, wait_for_metadata=True
                )
        (description,) = client.describe_topics([topic])
        return len(description["partitions"])
    except KafkaError as error:
        raise CommandError(
            f"could not create or describe Kafka topic {topic} on {servers}: {first_line(error)}"
        ) from None
    finally:
        client.close()
