"""The code bundle Dataproc runs: reproducible, complete, and the migration job applies the
schema from the bundle alone, as it does on the cluster (a PostgreSQL database of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import psycopg2
import pytest

from deploy import package
from devtools.scratch_db import scratch_database

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    target = tmp_path_factory.mktemp("code")
    package.build(target, jars=[])
    return target


def test_the_bundle_is_byte_for_byte_reproducible(tmp_path, bundle):
    again = package.write_bundle(tmp_path / "platform.zip")
    assert again.read_bytes() == (bundle / "platform.zip").read_bytes()


def test_the_bundle_holds_the_packages_and_sql_but_no_byte_code(bundle):
    names = zipfile.ZipFile(bundle / "platform.zip").namelist()
    for required in (
        "common/settings.py",
        "common/secret_manager.py",
        "spark_jobs/batch.py",
        "spark_jobs/postgres.py",
        "migrations/runner.py",
        "migrations/env.py",
        "sql/migrations/V001__serving_schema.sql",
        "sql/seed_users.sql",
    ):
        assert required in names, f"{required} missing from platform.zip"
    assert not [name for name in names if name.endswith(".pyc") or "__pycache__" in name]
    # The laptop's tooling stays out of what Dataproc runs.
    assert not [name for name in names if name.split("/")[0] in ("localstack", "devtools")]


def run_migrate_job(bundle, dsn, cwd):
    # Only the zip on the path, as --py-files gives it on Dataproc: nothing from this checkout.
    env = {**os.environ, "PYTHONPATH": str(bundle / "platform.zip")}
    return subprocess.run(
        [sys.executable, str(bundle / "deploy" / "migrate_job.py"), "--pg-dsn", dsn],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_migration_job_applies_the_schema_from_the_bundle_and_is_repeatable(bundle, tmp_path):
    with scratch_database("infra_migrate", migrated=False) as dsn:
        first = run_migrate_job(bundle, dsn, tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        second = run_migrate_job(bundle, dsn, tmp_path)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "at revision" in second.stdout

        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM user_metadata")
            assert cur.fetchone()[0] == 20
            cur.execute(
                "SELECT to_regclass('bytes_agg_antenna_1h') IS NOT NULL,"
                " to_regclass('batch_hour_runs') IS NOT NULL"
            )
            assert cur.fetchone() == (True, True)
        conn.close()


def test_the_migration_job_without_the_bundle_says_how_to_submit_it(bundle, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(bundle / "deploy" / "migrate_job.py"), "--pg-dsn", "postgresql://x@127.0.0.1/x"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "--py-files" in result.stderr
