"""Alembic's entry point for this project, used through `migrations.runner.migrate(dsn)`.

The caller passes an open connection in `config.attributes["connection"]`, so the migrations run in
the caller's transaction. There is no alembic.ini: the DSN is never written to a file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import context

# Revision modules import `migrations.sql_revision`; make the repository importable however
# Alembic was started.
REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run the migrations with `python -m migrations --dsn DSN`")
run_migrations(connection)
