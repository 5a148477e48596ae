"""Turns one `sql/migrations/VNNN__name.sql` file into the attributes of an Alembic revision.

The schema is written as plain SQL files, reviewed and run as they are; Alembic only records
which have been applied. Revision ids are the file numbers (V002 -> "0002", which follows
"0001"), so a new version is a module in `versions/` holding one line:

    revision, down_revision, upgrade, downgrade = sql_revision("V002__what_it_does.sql")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from alembic import op

SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "migrations"
SQL_FILE_NAME = re.compile(r"V(?P<number>\d+)__\w+\.sql")


def sql_revision(file_name: str) -> tuple[str, str | None, Callable[[], None], Callable[[], None]]:
    """(revision, down_revision, upgrade, downgrade) for the SQL file `file_name`."""
    match = SQL_FILE_NAME.fullmatch(file_name)
    if match is None:
        raise ValueError(f"{file_name} is not named like V001__what_it_does.sql")
    number = int(match["number"])
    path = SQL_DIR / file_name
    if not path.is_file():
        raise FileNotFoundError(path)

    def upgrade() -> None:
        run_sql_file(path)

    def downgrade() -> None:
        # Forward-only, as the SQL files are: undoing a schema change means writing the next one.
        raise NotImplementedError(f"{file_name} has no downgrade; write a new migration instead")

    return revision_id(number), revision_id(number - 1) if number > 1 else None, upgrade, downgrade


def revision_id(number: int) -> str:
    return f"{number:04d}"


def run_sql_file(path: Path) -> None:
    """Execute the file inside the migration's transaction."""
    execute_sql_file(op.get_bind(), path)


def execute_sql_file(connection, path: Path) -> None:
    """Send the whole file to the driver as it is, in one call.

    `no_parameters` keeps SQLAlchemy and psycopg2 from reading `:name` or `%` in the SQL as
    placeholders.
    """
    connection.exec_driver_sql(path.read_text(), execution_options={"no_parameters": True})
