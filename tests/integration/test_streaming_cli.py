"""Bad configuration gets one line naming the problem and the fix, and a non-zero exit."""

from __future__ import annotations

import psycopg2
import pytest

from tests.integration.conftest import run_module, streaming_args

pytestmark = pytest.mark.services


def assert_one_line_error(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# Outages are waited out (tests/integration/test_speed_layer_faults.py); with no wait allowed the
# job must say at once what is down.
NO_WAIT = ("--outage-limit-minutes", "0")


def test_unreachable_broker(scratch_dsn, tmp_path):
    result = run_module(
        "spark_jobs.streaming",
        "--bootstrap-servers",
        "127.0.0.1:1",
        *streaming_args("devices", scratch_dsn, tmp_path),
        *NO_WAIT,
        check=False,
    )

    assert_one_line_error(result, "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1", "make up")


def test_missing_topic(scratch_dsn, tmp_path):
    result = run_module(
        "spark_jobs.streaming",
        *streaming_args("no-such-topic-here", scratch_dsn, tmp_path),
        *NO_WAIT,
        check=False,
    )

    assert_one_line_error(result, "no-such-topic-here", "does not exist")


def test_missing_table(topic, scratch_dsn, tmp_path):
    with psycopg2.connect(scratch_dsn) as conn, conn.cursor() as cur:
        # CASCADE: the serving views read the table too; the job must name the table it misses.
        cur.execute("DROP TABLE bytes_agg_app CASCADE")
    conn.close()
    result = run_module(
        "spark_jobs.streaming", *streaming_args(topic, scratch_dsn, tmp_path), check=False
    )

    assert_one_line_error(result, "bytes_agg_app", "make up")


def test_unreachable_database(topic, tmp_path):
    dsn = "postgresql://nobody:x@127.0.0.1:1/none"

    result = run_module(
        "spark_jobs.streaming", *streaming_args(topic, dsn, tmp_path), *NO_WAIT, check=False
    )

    assert_one_line_error(result, "PG_DSN", "make up")


def test_malformed_flag():
    result = run_module("spark_jobs.streaming", "--trigger-seconds", "-1", check=False)

    assert result.returncode == 2
    assert "--trigger-seconds" in result.stderr


@pytest.mark.parametrize("window", ["7 minutes", "90 minutes", "0 seconds", "5 fortnights"])
def test_window_that_does_not_divide_an_hour_is_refused(window):
    result = run_module("spark_jobs.streaming", "--window", window, check=False)

    assert result.returncode == 2
    assert "--window" in result.stderr and repr(window) in result.stderr


def test_batch_size_that_could_overflow_a_sum_is_refused():
    result = run_module("spark_jobs.streaming", "--max-offsets-per-trigger", "1000001", check=False)

    assert result.returncode == 2
    assert "64 bits" in result.stderr
