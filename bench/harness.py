"""What the benchmarks share: a topic of their own, the streaming job's command line, and the
description of the machine that goes beside every figure."""

from __future__ import annotations

import os
import platform
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from kafka.admin import KafkaAdminClient, NewTopic

from common import settings


@contextmanager
def scratch_topic(prefix: str) -> Iterator[str]:
    """A new topic with the contract's partition count, deleted afterwards: a benchmark never
    reads records of another run."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers())
    try:
        admin.create_topics(
            [NewTopic(name, num_partitions=settings.TOPIC_PARTITIONS, replication_factor=1)]
        )
        try:
            yield name
        finally:
            admin.delete_topics([name])
    finally:
        admin.close()


def streaming_options(topic: str, dsn: str, storage: str, *extra: str) -> list[str]:
    """The streaming job's options for a benchmark's own topic, database and storage root."""
    return ["--topic", topic, "--pg-dsn", dsn, "--storage-root", storage, *extra]


def streaming_command(topic: str, dsn: str, storage: str, *extra: str) -> list[str]:
    """The streaming job as its own process, as `make` and Airflow start it."""
    return [
        sys.executable,
        "-m",
        "spark_jobs.streaming",
        *streaming_options(topic, dsn, storage, *extra),
    ]


def machine(**versions: str) -> dict:
    """The machine a figure was measured on, with the versions of what it measured."""
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
    }
