"""The command-line options the Spark jobs (and `python -m spark_jobs.health`) share, declared
once: where the serving database is (a DSN, or the Secret Manager version holding it), where the
data lives, and the Kafka topic."""

from __future__ import annotations

import argparse

from common import secret_manager, settings


def add_database_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-dsn", default=settings.pg_dsn(), help="libpq URI of the serving database (env PG_DSN)"
    )
    parser.add_argument(
        "--pg-dsn-secret",
        default=secret_manager.pg_dsn_secret_default(),
        help="Secret Manager version holding the DSN, replaces --pg-dsn (env PG_DSN_SECRET)",
    )


def add_database_and_storage_args(
    parser: argparse.ArgumentParser, checkpoint_help: str | None
) -> None:
    """--pg-dsn, --pg-dsn-secret, --storage-root, and --checkpoint unless `checkpoint_help` is
    None (a job that never reads the streaming checkpoint)."""
    add_database_args(parser)
    parser.add_argument(
        "--storage-root",
        default=settings.storage_root(),
        help="local folder or gs:// URI (env STORAGE_ROOT)",
    )
    if checkpoint_help is not None:
        parser.add_argument("--checkpoint", help=checkpoint_help)


def add_kafka_args(parser: argparse.ArgumentParser, servers_help: str, topic_help: str) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        default=settings.kafka_bootstrap_servers(),
        help=f"{servers_help} (env KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--topic", default=settings.kafka_topic(), help=f"{topic_help} (env KAFKA_TOPIC)"
    )
