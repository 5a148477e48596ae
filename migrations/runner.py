"""Brings a database to the current schema with Alembic, then loads the reference users.

`migrate(dsn)` works on any database the DSN's role may change: the serving database of
`make up`, a Cloud SQL instance, or a scratch database a test has just created.
"""

from __future__ import annotations

from common.errors import CommandError, first_line
from common.settings import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "migrations"
SEED_USERS_SQL = REPO_ROOT / "sql" / "seed_users.sql"


def sqlalchemy_url(dsn: str):
    """The SQLAlchemy URL (psycopg2 driver) of a libpq DSN, a `postgresql://` URI or `key=value`
    pairs.

    libpq itself splits the DSN (percent-escapes, query options such as sslmode), and
    `URL.create` escapes each part again for SQLAlchemy, so no password breaks the conversion.
    """
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn
    from sqlalchemy.engine import URL

    try:
        parts = parse_dsn(dsn)
    except ProgrammingError as error:  # libpq's message
        raise CommandError(
            f"the DSN is not valid ({first_line(error)}); write it like "
            "postgresql://user:password@host:5432/database"
        ) from None
    port = parts.pop("port", None)
    return URL.create(
        "postgresql+psycopg2",
        username=parts.pop("user", None),
        password=parts.pop("password", None),
        host=parts.pop("host", None),
        port=int(port) if port else None,
        database=parts.pop("dbname", None),
        query=parts,
    )


def alembic_config(connection):
    from alembic.config import Config

    config = Config()
    # Config values go through configparser interpolation, where a lone % is an error.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def migrate(dsn: str) -> None:
    """Apply every pending migration and the users seed, in one transaction."""
    current = upgrade_and_seed(dsn)
    print(f"schema: at revision {current} (head); reference users loaded", flush=True)


def upgrade_and_seed(dsn: str) -> str | None:
    """Run both in one transaction, so a failure leaves the database as it was; the new revision."""
    import sqlalchemy
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.pool import NullPool

    from migrations.sql_revision import execute_sql_file

    engine = sqlalchemy.create_engine(sqlalchemy_url(dsn), poolclass=NullPool)
    try:
        connection = connect(engine)
        with connection, connection.begin():
            command.upgrade(alembic_config(connection), "head")
            execute_sql_file(connection, SEED_USERS_SQL)
            return MigrationContext.configure(connection).get_current_revision()
    except sqlalchemy.exc.DBAPIError as error:
        raise CommandError(f"migrating the database failed: {first_line(error.orig)}") from None
    finally:
        engine.dispose()


def connect(engine):
    import sqlalchemy

    try:
        return engine.connect()
    except sqlalchemy.exc.DBAPIError as error:
        raise CommandError(
            f"cannot connect to PostgreSQL to migrate it ({first_line(error.orig)});"
            " check the DSN and that the server runs"
        ) from None
