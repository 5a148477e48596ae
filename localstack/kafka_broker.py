"""A single-node Apache Kafka broker in KRaft mode, from the official jars, or a check of an
existing one.

With the default KAFKA_BOOTSTRAP_SERVERS (a local address) `up` formats the storage once and starts
`kafka.Kafka` as broker and controller in one JVM; with any other address it starts nothing and
only checks that the cluster answers. Either way it makes sure the topic exists.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from common.errors import CommandError, first_line, require_command
from common.settings import TOPIC_PARTITIONS as CONTRACT_TOPIC_PARTITIONS
from common.settings import kafka_bootstrap_servers, kafka_topic, state_dir
from localstack import processes
from localstack.ports import is_local_host, require_free_port, split_host_port

DEFAULT_CONTROLLER_PORT = 9093
TOPIC_PARTITIONS = CONTRACT_TOPIC_PARTITIONS
STARTUP_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
# Kafka's own scripts read the heap from KAFKA_HEAP_OPTS too; 512 MB is plenty for one laptop topic.
DEFAULT_HEAP_OPTS = "-Xmx512m"


@dataclass(frozen=True)
class KafkaPaths:
    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def server_properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j2_config(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def server_log(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def console_log(self) -> Path:
        """The JVM's own stdout/stderr: startup failures that happen before logging is set up."""
        return self.home / "logs" / "console.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def formatted_marker(self) -> Path:
        return self.data / "meta.properties"


def paths() -> KafkaPaths:
    return KafkaPaths(state_dir() / "kafka")


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
    if cmdline is not None and str(kafka.server_properties) not in cmdline:
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
    require_free_port(
        host,
        controller_port(),
        "Kafka KRaft controller",
        "choose another port with KAFKA_CONTROLLER_PORT=PORT",
    )


def up(jars_dir: Path) -> str:
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
    started = time.monotonic()
    pid = start_broker(jars_dir, *listener)
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


def start_broker(jars_dir: Path, host: str, port: int) -> int:
    kafka = paths()
    for folder in (kafka.data, kafka.server_log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    write_if_changed(kafka.server_properties, server_properties(kafka, host, port))
    write_if_changed(kafka.log4j2_config, log4j2_properties(kafka))
    if not kafka.formatted_marker.exists():
        format_storage(jars_dir, kafka)
    command = [*java_command(jars_dir, kafka), "kafka.Kafka", str(kafka.server_properties)]
    pid = processes.start_detached(command, kafka.console_log, cwd=kafka.home)
    kafka.pid_file.write_text(f"{pid}\n")
    return pid


def server_properties(kafka: KafkaPaths, host: str, port: int) -> str:
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port()}"
    return f"""\
# Written by `python -m localstack up` on every start; edit localstack/kafka_broker.py instead.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={host}:{controller_port()}
listeners={listeners}
advertised.listeners={listeners}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={kafka.data}
num.partitions={TOPIC_PARTITIONS}
# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumers of tests and jobs join a group alone; waiting for more members only slows them.
group.initial.rebalance.delay.ms=0
"""


def log4j2_properties(kafka: KafkaPaths) -> str:
    """Broker logs to a size-capped file; the properties format needs no extra jar (YAML would)."""
    log = kafka.server_log
    return f"""\
# Written by `python -m localstack up`; edit localstack/kafka_broker.py instead.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
# Per-request and per-state-change lines drown what matters on a laptop.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
"""


def java_command(jars_dir: Path, kafka: KafkaPaths) -> list[str]:
    heap = shlex.split(os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS))
    return [
        "java", *heap, "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={kafka.log4j2_config}",
        f"-Dkafka.logs.dir={kafka.server_log.parent}",
        "-cp", f"{jars_dir}/*",
    ]  # fmt: skip


def format_storage(jars_dir: Path, kafka: KafkaPaths) -> None:
    """Write the cluster id and the single-voter quorum into the empty data folder, once.

    `--standalone` makes this node the only voter of a dynamic quorum, which is what
    `controller.quorum.bootstrap.servers` in server.properties expects (KIP-853).
    """
    command = [
        *java_command(jars_dir, kafka), "kafka.tools.StorageTool", "format",
        "--cluster-id", new_cluster_id(), "--config", str(kafka.server_properties), "--standalone",
    ]  # fmt: skip
    with open(kafka.console_log, "ab") as log:
        result = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if result.returncode != 0:
        raise CommandError(
            f"formatting Kafka's storage in {kafka.data} failed; see {kafka.console_log}, then "
            "rerun `make up`"
        )


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them: 16 bytes, URL-safe base64, unpadded."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka never issues ids starting with "-": command lines would read them as options.
        if not cluster_id.startswith("-"):
            return cluster_id


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


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
