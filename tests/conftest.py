"""Fixtures shared by every test: one local Spark session per test run, and Airflow's test home."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Naive datetimes in test rows mean UTC, as every time in the platform does.
os.environ["TZ"] = "UTC"
time.tzset()
# Spark's Python workers must use this interpreter, not whatever `python3` is on PATH.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# Airflow reads its configuration when first imported, so it is set here, before any test module
# imports it: a home of its own under .state/ (SQLite metadata database), never the user's, and
# this repository's DAGs and plugins.
AIRFLOW_TEST_HOME = (
    Path(os.environ.get("PLATFORM_STATE_DIR", REPO_ROOT / ".state")) / "airflow-tests"
)
os.environ.update(
    AIRFLOW_HOME=str(AIRFLOW_TEST_HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO_ROOT / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
)
# The tests' hours are of 2026-11-27. Without this batch_hourly would start at the first hour of
# data in the database of `platform_postgres` (tests/dags/test_schedule.py tests that default).
os.environ.setdefault("BATCH_START_DATE", "2026-11-27T00:00:00Z")
# The local runner's Spark master, as ./airflow.sh sets it.
os.environ.setdefault("AIRFLOW_CONN_SPARK_LOCAL", "spark://local")
# Airflow puts the plugins folder on sys.path; tests import its helpers before Airflow may have.
sys.path.append(str(REPO_ROOT / "plugins"))


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import build_session

    session = build_session("tests", master="local[2]", extra_conf={"spark.ui.enabled": "false"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The test home's metadata database, migrated once per Airflow version (as ./airflow.sh
    does)."""
    from importlib.metadata import version

    marker = AIRFLOW_TEST_HOME / f".migrated-{version('apache-airflow')}"
    if not marker.exists():
        AIRFLOW_TEST_HOME.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
        )
        marker.touch()
    return AIRFLOW_TEST_HOME
