"""Imports the dashboards-as-code of superset/assets into Superset (run by `./superset.sh setup`).

The YAML files are Superset's own v1 export format (metadata.yaml, databases/, datasets/, charts/,
dashboards/), imported with the command behind Superset's "import assets" API, which overwrites
what an earlier import created (same uuids). The database's address and password come from
PG_DSN at import time: the password is handed to Superset, which keeps it encrypted in its
metadata database, and is never written to a file.

    python superset/import_assets.py   # with Superset's venv and SUPERSET_CONFIG_PATH set
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote

import yaml
from psycopg2.extensions import parse_dsn

ASSETS = Path(__file__).resolve().parent / "assets"
DATABASE_FILE = "databases/platform.yaml"
MASKED_PASSWORD = "XXXXXXXXXX"  # what Superset's own exports put in place of a password
DEFAULT_PG_DSN = "postgresql://platform:platform@127.0.0.1:5432/platform"


def bundle(root: Path) -> dict[str, str]:
    """{path inside the bundle: YAML text}, as Superset reads an exported ZIP."""
    return {
        path.relative_to(root).as_posix(): path.read_text() for path in sorted(root.rglob("*.yaml"))
    }


def database_uri_and_password(dsn: str) -> tuple[str, str]:
    """The SQLAlchemy URI of the DSN with the password masked, and the password."""
    parts = parse_dsn(dsn)
    password = parts.get("password", "")
    user = quote(parts.get("user", ""), safe="")
    host, port, name = (
        parts.get("host", "127.0.0.1"),
        parts.get("port", "5432"),
        parts.get("dbname", "platform"),
    )
    return (
        f"postgresql+psycopg2://{user}:{MASKED_PASSWORD}@{host}:{port}/{quote(name, safe='')}",
        password,
    )


def with_database_from(contents: dict[str, str], dsn: str) -> tuple[dict[str, str], dict[str, str]]:
    database = yaml.safe_load(contents[DATABASE_FILE])
    database["sqlalchemy_uri"], password = database_uri_and_password(dsn)
    return {**contents, DATABASE_FILE: yaml.safe_dump(database)}, {DATABASE_FILE: password}


def main() -> None:
    from superset.app import create_app

    contents, passwords = with_database_from(
        bundle(ASSETS), os.environ.get("PG_DSN", DEFAULT_PG_DSN)
    )
    app = create_app()
    with app.app_context():
        from superset.commands.importers.v1.assets import ImportAssetsCommand
        from superset.utils.core import override_user

        from superset import security_manager

        admin = security_manager.find_user(
            username=os.environ.get("SUPERSET_ADMIN_USERNAME", "admin")
        )
        if admin is None:
            sys.exit("import_assets: no admin user yet; run `./superset.sh setup`")
        with override_user(admin):
            ImportAssetsCommand(contents, passwords=passwords).run()
    print(f"import_assets: imported {len(contents)} files of {ASSETS.name}/ (database from PG_DSN)")


if __name__ == "__main__":
    main()
