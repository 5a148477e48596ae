"""Endpoints and locations, read from the environment with the defaults `make up` starts.

Every entry point takes these as flag defaults, so the same code runs on a laptop
(defaults) and on GCP (variables set from the Terraform outputs).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_KAFKA_BOOTSTRAP_SERVERS = "localhost:9092"
DEFAULT_KAFKA_TOPIC = "devices"
# Partitions of the topic (docs/contract.md §1): the one definition; terraform/variables.tf and
# terraform/kafka/startup.sh default to it (tests/infra/test_kafka_startup.py checks).
TOPIC_PARTITIONS = 4
DEFAULT_PG_DSN = "postgresql://platform:platform@127.0.0.1:5432/platform"
# A week of micro-batch health rows (docs/contract.md §10): enough to look back over a weekend,
# small enough (one row per batch, every few seconds) to stay a small table.
DEFAULT_HEALTH_RETENTION_DAYS = "7"


def state_dir() -> Path:
    """Where local services keep their data, downloads and logs (git-ignored)."""
    return Path(os.environ.get("PLATFORM_STATE_DIR", REPO_ROOT / ".state"))


def kafka_bootstrap_servers() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS)


def kafka_topic() -> str:
    return os.environ.get("KAFKA_TOPIC", DEFAULT_KAFKA_TOPIC)


def pg_dsn() -> str:
    return os.environ.get("PG_DSN", DEFAULT_PG_DSN)


def health_retention_days() -> str:
    """Days the streaming job keeps its micro-batch health rows (HEALTH_RETENTION_DAYS), as the
    text of a flag default, which argparse then checks like a typed flag."""
    return os.environ.get("HEALTH_RETENTION_DAYS", DEFAULT_HEALTH_RETENTION_DAYS)


def storage_root() -> str:
    """A local folder or a `gs://bucket/prefix` URI; raw Parquet, quarantine and checkpoints live
    under it."""
    return os.environ.get("STORAGE_ROOT", str(state_dir() / "storage"))


def spark_jars_dir() -> Path:
    """The Kafka connector jars fetched by `make up` (Maven), given to local Spark."""
    return Path(os.environ.get("SPARK_JARS_DIR", state_dir() / "jars" / "spark"))


def storage_emulator_host() -> str | None:
    """`http://host:port` of a Cloud Storage emulator that gs:// paths go to instead of Google
    (STORAGE_EMULATOR_HOST, the variable Google's own client libraries read); unset in
    production."""
    return os.environ.get("STORAGE_EMULATOR_HOST") or None


def gcs_jars_dir() -> Path:
    """The Cloud Storage connector jar local Spark uses with the emulator (Dataproc ships its
    own)."""
    return state_dir() / "jars" / "gcs"


# Data lifecycle (docs/contract.md §11, spark_jobs/lifecycle.py): days an hour's data is kept
# after the hour ended (quarantine: after its files were written), once it may go at all.
DEFAULT_RAW_BATCH_RETENTION_DAYS = 3
DEFAULT_SPEED_WINDOW_RETENTION_DAYS = 7
DEFAULT_QUARANTINE_RETENTION_DAYS = 30


def _days(variable: str, default: int) -> int:
    return int(os.environ.get(variable) or default)


def raw_batch_retention_days() -> int:
    """Micro-batch folders of a compacted, published hour are deleted this long after it ended."""
    return _days("RAW_BATCH_RETENTION_DAYS", DEFAULT_RAW_BATCH_RETENTION_DAYS)


def speed_window_retention_days() -> int:
    """5-minute speed windows of an hour the batch layer serves are rolled up this long after."""
    return _days("SPEED_WINDOW_RETENTION_DAYS", DEFAULT_SPEED_WINDOW_RETENTION_DAYS)


def quarantine_retention_days() -> int:
    """Quarantine folders are deleted this long after their files were written."""
    return _days("QUARANTINE_RETENTION_DAYS", DEFAULT_QUARANTINE_RETENTION_DAYS)
