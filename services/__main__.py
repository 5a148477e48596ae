"""`python -m services up|down|status|migrate`: the local Kafka and PostgreSQL behind `make up` /
`make down`.

Every failure is one line on stderr and a non-zero exit status; SERVICES_DEBUG=1 adds the
traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from common.settings import (
    kafka_bootstrap_servers,
    kafka_topic,
    pg_dsn,
    spark_jars_dir,
    storage_root,
)
from services import kafka, maven, postgres
from services.errors import ServiceError
from services.migrate import migrate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m services",
        description=(
            "Start, stop and inspect the local Kafka broker and PostgreSQL server, and migrate "
            "databases."
            " Endpoints come from KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC, PG_DSN, STORAGE_ROOT and"
            " PLATFORM_STATE_DIR; when KAFKA_BOOTSTRAP_SERVERS points elsewhere or PG_DSN is set,"
            " those servers are used and nothing is started for them."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "up",
        help=(
            "fetch jars, start Kafka and PostgreSQL (or check the given ones), ensure the topic, "
            "migrate, load users"
        ),
    )
    commands.add_parser(
        "down", help="stop the Kafka and PostgreSQL that `up` started (fine if none runs)"
    )
    commands.add_parser("status", help="show what runs and where")
    migrate_parser = commands.add_parser(
        "migrate", help="apply the schema migrations and the users seed to a database"
    )
    migrate_parser.add_argument(
        "--dsn",
        default=None,
        help="libpq URI of the database (default: PG_DSN, else the local server's)",
    )
    return parser.parse_args(argv)


def up() -> None:
    started = time.monotonic()
    # Checks first, so a taken port or a missing tool fails in a second, not after downloads.
    kafka.preflight()
    postgres.preflight()
    maven.ensure_jars(maven.spark_kafka_jars())
    # A running broker keeps its jars: replacing them under a live JVM could break it mid-run.
    if kafka.is_local() and kafka.our_running_pid() is None:
        maven.ensure_jars(maven.kafka_broker_jars())
    print(kafka.up(maven.kafka_jars_dir()), flush=True)
    print(postgres.up(), flush=True)
    migrate(pg_dsn())
    create_local_storage_root()
    print_endpoints()
    print(f"up: ready in {time.monotonic() - started:.1f} s")


def create_local_storage_root() -> None:
    if "://" not in storage_root():
        Path(storage_root()).mkdir(parents=True, exist_ok=True)


def print_endpoints() -> None:
    dsn = postgres.masked(pg_dsn()) if postgres.is_external() else pg_dsn()
    endpoints = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap_servers(),
        "KAFKA_TOPIC": kafka_topic(),
        "PG_DSN": dsn,
        "STORAGE_ROOT": storage_root(),
        "SPARK_JARS_DIR": str(spark_jars_dir()),
    }
    print("endpoints (the defaults every entry point uses):")
    for name, value in endpoints.items():
        print(f"  {name}={shlex.quote(value)}")


def down() -> None:
    print(kafka.down(), flush=True)
    print(postgres.down(), flush=True)


def status() -> None:
    print(kafka.status())
    print(postgres.status())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "status":
            status()
        elif args.command == "migrate":
            migrate(args.dsn or pg_dsn())
        return 0
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("SERVICES_DEBUG"):
            raise
        message = " ".join(str(error).split())
        print(
            f"error: unexpected {type(error).__name__}: {message}; rerun with SERVICES_DEBUG=1 "
            "for the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
