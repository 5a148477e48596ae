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
from kafka.partitioner.default import murmur2

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


def java_client_partition(key: bytes) -> int:
    """The partition of `key` under the Java client's default partitioner (kafka-python's copy of
    it), independent of the librdkafka producer under test."""
    return (murmur2(key) & 0x7FFFFFFF) % PARTITIONS


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
    # ... and the partition the Java client (and kafka-python) would choose: murmur2 of the key.
    assert {key: partitions.pop() for key, partitions in partitions_by_key.items()} == {
        key: java_client_partition(key) for key in partitions_by_key
    }
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
    from simulator.producer import ProducerSettings, close_producer, create_producer, send

    config = SimulatorConfig(start=START_EPOCH, ticks=5, seed=4)
    producer = create_producer(ProducerSettings(kafka_bootstrap_servers()))
    try:
        summary = send(generate_records(config), producer, fresh_topic)
    finally:
        close_producer(producer)

    received = consume_all(fresh_topic, 100)
    events = [json.loads(value) for _, _, value in received]
    assert len(events) == summary.events == 100
    assert summary.total_bytes == sum(event["bytes"] for event in events)


class RefusalCounter:
    """A real producer, counting how often its local queue was full."""

    def __init__(self, producer) -> None:
        self.producer = producer
        self.refusals = 0

    def produce(self, *args, **kwargs) -> None:
        try:
            self.producer.produce(*args, **kwargs)
        except BufferError:
            self.refusals += 1
            raise

    def __getattr__(self, name):
        return getattr(self.producer, name)


def test_a_full_local_queue_is_waited_out_without_losing_or_doubling_a_record(fresh_topic):
    from simulator.producer import ProducerSettings, close_producer, create_producer, send

    config = SimulatorConfig(start=START_EPOCH, ticks=100, seed=9)
    # Room for 50 records only, and a long linger: the queue is full many times over.
    settings = ProducerSettings(kafka_bootstrap_servers(), queue_max_messages=50, linger_ms=200)
    producer = RefusalCounter(create_producer(settings))
    try:
        summary = send(generate_records(config), producer, fresh_topic)
    finally:
        close_producer(producer)

    assert producer.refusals > 0
    received = consume_all(fresh_topic, 2000)
    assert sorted(value for _, _, value in received) == sorted(
        record.value for record in generate_records(config)
    )
    assert summary.events == 2000


def test_a_record_over_the_message_size_limit_is_a_delivery_error_after_the_ones_before_landed(
    fresh_topic,
):
    from simulator.producer import (
        DeliveryError,
        ProducerSettings,
        close_producer,
        create_producer,
        send,
    )

    good = list(generate_records(SimulatorConfig(start=START_EPOCH, ticks=1, seed=2)))
    too_large = good[0]._replace(value=b"x" * 2_000_000)  # over librdkafka's message.max.bytes
    producer = create_producer(ProducerSettings(kafka_bootstrap_servers()))
    try:
        with pytest.raises(DeliveryError, match="1 record.*too large"):
            send([*good, too_large, good[1]], producer, fresh_topic)
    finally:
        close_producer(producer)
    assert sorted(value for _, _, value in consume_all(fresh_topic, len(good))) == sorted(
        record.value for record in good
    )
