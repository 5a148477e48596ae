"""Dataproc job that brings Cloud SQL to the current schema: the same Alembic migrations and
reference users as `make up`, from inside the VPC (Cloud SQL has a private IP only).

    gcloud dataproc jobs submit pyspark gs://BUCKET/code/deploy/migrate_job.py \
        --cluster CLUSTER --region REGION --py-files gs://BUCKET/code/platform.zip \
        -- --pg-dsn-secret projects/P/secrets/S/versions/latest

Repeatable: Alembic applies only the revisions the database lacks, and the users seed is an
upsert. The migrations read their SQL files from disk, which an import from the zip cannot
provide, so the bundle is unpacked into a temporary folder first.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import zipfile
from pathlib import Path

BUNDLE_NAME = "platform.zip"


def find_bundle(search_path: list[str]) -> Path:
    """The platform.zip that --py-files put on the Python path."""
    for entry in search_path:
        if Path(entry).name == BUNDLE_NAME and zipfile.is_zipfile(entry):
            return Path(entry)
    raise SystemExit(
        f"error: {BUNDLE_NAME} is not on the Python path; submit the job with --py-files "
        f".../{BUNDLE_NAME}"
    )


def unpack_bundle(bundle: Path, target: Path) -> Path:
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(target)
    # Ahead of the zip, so that the packages' files resolve to the unpacked tree.
    sys.path.insert(0, str(target))
    return target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="migrate_job.py", description="Apply the schema migrations and the users seed."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pg-dsn", help="libpq URI of the database")
    source.add_argument("--pg-dsn-secret", help="Secret Manager version holding the libpq URI")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="platform-") as scratch:
        unpack_bundle(find_bundle(sys.path), Path(scratch))
        secret_manager = importlib.import_module("common.secret_manager")
        runner = importlib.import_module("migrations.runner")
        errors = importlib.import_module("common.errors")
        try:
            runner.migrate(secret_manager.resolve_pg_dsn(args.pg_dsn or "", args.pg_dsn_secret))
        except errors.CommandError as error:
            sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
