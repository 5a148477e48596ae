"""Completeness of an hour by offsets (SPEC.md section 7) on a real broker and database: the
sensor of batch_hourly waits while the speed layer is behind at the hour's deadline, says by how
much when it gives up, and passes once the stream has committed the hour; records that reach
Kafka after the deadline are late data and hold nothing back."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from platform_airflow.sensors import SpeedLayerCaughtUpSensor
from tests.integration.conftest import epoch, query, run_module, streaming_args
from tests.integration.test_quality_checks import airflow_connection

pytestmark = pytest.mark.services

HOUR = "2026-11-27T10:00:00Z"


def send(topic: str, count: int, stamp: int | None, partition: int = 0) -> None:
    """`count` events of HOUR; `stamp` is the Kafka timestamp (epoch seconds), None for now."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers="localhost:9092")
    for n in range(count):
        event = {"bytes": 10 + n, "timestamp": epoch(HOUR) + n, "app": "SKYPE",
                 "id": "00000000-0000-0000-0000-000000000001", "antenna_id": "a-1"}
        producer.send(topic, json.dumps(event).encode(), partition=partition, timestamp_ms=None if stamp is None else stamp * 1000)
    producer.flush()
    producer.close()


def sensor(topic: str, **kwargs) -> SpeedLayerCaughtUpSensor:
    return SpeedLayerCaughtUpSensor(
        task_id="wait_for_complete_hour", conn_id="platform_postgres", hour=datetime(2026, 11, 27, 10, tzinfo=timezone.utc).isoformat(),
        lateness_minutes=10, bootstrap_servers="localhost:9092", topic=topic, **kwargs,
    )


def test_the_sensor_waits_for_a_stream_behind_and_passes_once_it_has_caught_up(topic, scratch_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PLATFORM_POSTGRES", airflow_connection(scratch_dsn))
    # Sent during the hour (stamped 10:30), to two partitions; the stream has read none of it.
    send(topic, 7, stamp=epoch(HOUR) + 1800, partition=0)
    send(topic, 3, stamp=epoch(HOUR) + 1800, partition=1)

    assert sensor(topic).poke(context={}) is False
    with pytest.raises(AirflowSensorTimeout, match=f"speed layer is 7 records behind on {topic}-0 \\(and 3 on {topic}-1\\)"):
        sensor(topic, mode="poke", timeout=0, poke_interval=0).execute(context={})

    run_module("spark_jobs.streaming", *streaming_args(topic, scratch_dsn, tmp_path / "storage", "--available-now"))

    assert query(scratch_dsn, "SELECT sum(next_offset) FROM speed_partition_offsets WHERE topic = %s", (topic,)) == [(10,)]
    assert sensor(topic).poke(context={}) is True

    # Records that reach Kafka after the deadline are late data: the hour stays complete.
    send(topic, 4, stamp=None)
    assert sensor(topic).poke(context={}) is True
