"""The simulator against the real local broker: what it sends is what Kafka holds, and its summary
is exact.

Each test creates its own uniquely named topic, so it neither reads nor disturbs `devices`.
Needs the broker `make up` starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from common.settings import REPO_ROOT, kafka_bootstrap_servers
from simulator.generator import SimulatorConfig, generate_records

pytestmark = pytest.mark.services

PARTITIONS = 3
START = "2026-11-28T03:00:00Z"
START_EPOCH = int(datetime(2026, 11, 28, 3, tzinfo=UTC).timestamp())
CONSUME_DEADLINE_SECONDS = 60


@pytest.fixture
def fresh_topic() -> Iterator[str]:
    admin = KafkaAdminClient(
        bootstrap_servers=kafka_bootstrap_servers(), client_id="simulator-test-admin"
    )
    topic = f"simulator-test-{uuid.uuid4().hex[:12]}"
    admin.create_topics(
        {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True
    )
    try:
        yield topic
    finally:
        admin.delete_topics([topic])
        admin.close()


def consume_all(topic: str, expected_count: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every record in the topic, in offset order per partition."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap_servers(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    received: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + CONSUME_DEADLINE_SECONDS
    try:
        while len(received) < expected_count and time.monotonic() < deadline:
            for message in consumer:
                received.append((message.partition, message.key, message.value))
                if len(received) >= expected_count:
                    break
        # A short extra poll: the topic must hold nothing beyond what was generated.
        extra = consumer.poll(timeout_ms=1000)
        received.extend((m.partition, m.key, m.value) for batch in extra.values() for m in batch)
    finally:
        consumer.close()
    return received


def run_simulator(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "--bootstrap-servers",
            kafka_bootstrap_servers(),
            "--no-progress",
            *flags,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_sends_exactly_the_generated_records_and_an_exact_summary(
    fresh_topic, tmp_path, workers
):
    summary_path = tmp_path / "summary.json"
    config = SimulatorConfig(
        start=START_EPOCH, duration_seconds=900, unknown_devices=2, seed=11, malformed_rate=0.05
    )
    result = run_simulator(
        "--topic", fresh_topic,
        "--start", START,
        "--duration", "900",
        "--unknown-devices", "2",
        "--seed", "11",
        "--malformed-rate", "0.05",
        "--rate", "0",
        "--summary-out", str(summary_path),
        "--workers", str(workers),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    generated = list(generate_records(config))
    received = consume_all(fresh_topic, len(generated))
    assert len(received) == len(generated) == 15 * 22

    # Same key, same partition; within a partition Kafka keeps the sending order.
    partitions_by_key = defaultdict(set)
    values_by_key = defaultdict(list)
    for partition, key, value in received:
        partitions_by_key[key].add(partition)
        values_by_key[key].append(value)
    assert all(len(partitions) == 1 for partitions in partitions_by_key.values())
    expected_by_key = defaultdict(list)
    for record in generated:
        expected_by_key[record.key].append(record.value)
    assert values_by_key == expected_by_key

    valid = [json.loads(record.value) for record in generated if record.event is not None]
    summary = json.loads(summary_path.read_text())
    assert summary["events"] == len(valid)
    assert summary["total_bytes"] == sum(event["bytes"] for event in valid)
    assert sum(summary["malformed"].values()) == len(generated) - len(valid)
    user_hours = defaultdict(int)
    for event in valid:
        user_hours[event["id"]] += event["bytes"]
    assert {row["id"]: row["bytes"] for row in summary["hours"]["user"]} == dict(user_hours)


def test_library_send_returns_the_totals_of_what_kafka_holds(fresh_topic):
    from simulator.producer import ProducerSettings, create_producer, send

    config = SimulatorConfig(start=START_EPOCH, ticks=5, seed=4)
    producer = create_producer(ProducerSettings(kafka_bootstrap_servers()))
    try:
        summary = send(generate_records(config), producer, fresh_topic)
    finally:
        producer.close()

    received = consume_all(fresh_topic, 100)
    events = [json.loads(value) for _, _, value in received]
    assert len(events) == summary.events == 100
    assert summary.total_bytes == sum(event["bytes"] for event in events)
