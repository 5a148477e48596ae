"""`python -m localstack up|down|status`: the laptop's Kafka and PostgreSQL behind `make up` /
`make down`.

Every failure is one line on stderr and a non-zero exit status; LOCALSTACK_DEBUG=1 adds the
traceback of unexpected errors.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from common.errors import CommandError
from common.settings import (
    kafka_bootstrap_servers,
    kafka_topic,
    pg_dsn,
    spark_jars_dir,
    storage_root,
)
from localstack import kafka_broker, postgres_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m localstack",
        description=(
            "Start, stop and inspect the local Kafka broker and PostgreSQL server."
            " Endpoints come from KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC, PG_DSN, STORAGE_ROOT and"
            " PLATFORM_STATE_DIR; when KAFKA_BOOTSTRAP_SERVERS points elsewhere or PG_DSN is set,"
            " those servers are used and nothing is started for them."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "up",
        help="start Kafka and PostgreSQL (or check the given ones) and ensure the topic",
    )
    commands.add_parser(
        "down", help="stop the Kafka and PostgreSQL that `up` started (fine if none runs)"
    )
    commands.add_parser("status", help="show what runs and where")
    return parser.parse_args(argv)


def up() -> None:
    started = time.monotonic()
    # Checks first, so a taken port or a missing tool fails in a second, not after downloads.
    kafka_broker.preflight()
    postgres_server.preflight()
    print(kafka_broker.up(), flush=True)
    print(postgres_server.up(), flush=True)
    create_local_storage_root()
    print_endpoints()
    print(f"up: ready in {time.monotonic() - started:.1f} s")


def create_local_storage_root() -> None:
    if "://" not in storage_root():
        Path(storage_root()).mkdir(parents=True, exist_ok=True)


def print_endpoints() -> None:
    dsn = postgres_server.masked(pg_dsn()) if postgres_server.is_external() else pg_dsn()
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
    print(kafka_broker.down(), flush=True)
    print(postgres_server.down(), flush=True)


def status() -> None:
    print(kafka_broker.status())
    print(postgres_server.status())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "status":
            status()
        return 0
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if os.environ.get("LOCALSTACK_DEBUG"):
            raise
        message = " ".join(str(error).split())
        print(
            f"error: unexpected {type(error).__name__}: {message}; rerun with LOCALSTACK_DEBUG=1 "
            "for the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
