"""`python -m migrations [--dsn DSN]`: bring a database to the current schema and load the
reference users (what `make up` runs after starting PostgreSQL).

A failure is one line on stderr and a non-zero exit status, like `python -m localstack`.
"""

from __future__ import annotations

import argparse
import sys

from common.errors import exit_status
from common.settings import pg_dsn
from migrations.runner import migrate


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m migrations",
        description="Apply the schema migrations and the users seed to a database.",
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="libpq URI of the database (default: PG_DSN, else the local server's)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status(lambda: migrate(args.dsn or pg_dsn()))


if __name__ == "__main__":
    sys.exit(main())
