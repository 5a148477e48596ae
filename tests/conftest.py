"""Fixtures shared by every test: one local Spark session per test run."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def spark():
    from spark_jobs.session import build_session

    session = build_session("tests", master="local[2]", extra_conf={"spark.ui.enabled": "false"})
    yield session
    session.stop()
