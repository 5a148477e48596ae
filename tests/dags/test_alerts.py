"""The alert of a failed batch_hourly task: what it says, where it goes, and that every task of
the DAG carries it. The mail itself, through a real SMTP server, is tested on a failing gate in
tests/integration/test_batch.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import pendulum
import pytest
from platform_airflow.alerts import (
    GateFailure,
    HourFailure,
    HourFailureNotifier,
    failure_reason,
    hour_failure,
    hour_failure_notifier,
)

TRY_STARTED = datetime(2026, 11, 27, 11, 30, tzinfo=UTC)
GATE = GateFailure("raw_rows_are_distinct_offsets", "2 rows share an offset")


def failure_context(exception: BaseException, conf: dict | None = None) -> dict:
    return {
        "ti": SimpleNamespace(dag_id="batch_hourly", task_id="run_batch", start_date=TRY_STARTED),
        "dag_run": SimpleNamespace(conf=conf or {}),
        "data_interval_start": pendulum.datetime(2026, 11, 27, 10, tz="UTC"),
        "exception": exception,
    }


def test_a_gate_failure_names_the_hour_the_task_and_the_checks_of_this_try():
    asked = []

    def gate_failure(hour, since):
        asked.append((hour, since))
        return GATE

    failure = hour_failure(failure_context(RuntimeError("exit status 3")), gate_failure)

    assert failure == HourFailure(
        dag_id="batch_hourly",
        task_id="run_batch",
        hour="2026-11-27T10:00:00+00:00",
        reason="exit status 3",
        gate=GATE,
    )
    assert asked == [("2026-11-27T10:00:00+00:00", TRY_STARTED)]
    assert failure.line() == (
        "ALERT batch_hourly hour 2026-11-27T10:00:00+00:00 failed in run_batch; failed checks: "
        "raw_rows_are_distinct_offsets: exit status 3"
    )
    assert "raw_rows_are_distinct_offsets" in failure.html()
    assert "2 rows share an offset" in failure.html()


def test_a_republication_alerts_for_the_hour_of_its_conf():
    context = failure_context(RuntimeError("boom"), conf={"hour": "2026-11-26T08:00:00+00:00"})
    assert hour_failure(context, lambda hour, since: None).hour == "2026-11-26T08:00:00+00:00"


def test_the_reason_masks_credentials_and_keeps_one_line():
    error = RuntimeError(
        "Cannot execute: spark-submit --pg-dsn postgresql://platform:s3cret@10.0.0.3/platform\n"
        "Traceback (most recent call last): ..."
    )
    reason = failure_reason(error)
    assert "s3cret" not in reason
    assert reason == (
        "Cannot execute: spark-submit --pg-dsn postgresql://platform:***@10.0.0.3/platform"
    )


def test_without_configuration_the_alert_is_a_log_line_even_without_a_database(caplog):
    # The connection does not exist: the gate's record cannot be read, and the alert still goes.
    notifier = HourFailureNotifier(conn_id="no_such_connection")
    context = failure_context(TimeoutError("the hour is 1,200 records short"))
    context["ti"].task_id = "wait_for_complete_hour"

    with caplog.at_level(logging.WARNING, logger="platform_airflow.alerts"):
        notifier.notify(context)

    assert notifier.channel == "log"
    assert [r.levelname for r in caplog.records] == ["WARNING", "ERROR"]
    assert caplog.messages[-1] == (
        "ALERT batch_hourly hour 2026-11-27T10:00:00+00:00 failed in wait_for_complete_hour: "
        "the hour is 1,200 records short"
    )


def test_the_environment_chooses_the_channel(monkeypatch):
    monkeypatch.setenv("ALERT_NOTIFIER", "smtp")
    monkeypatch.setenv("ALERT_EMAIL_TO", "a@example.com, b@example.com")
    notifier = hour_failure_notifier("platform_postgres")
    assert (notifier.channel, notifier.email_to) == ("smtp", ["a@example.com", "b@example.com"])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALERT_NOTIFIER": "pager"}, "expected one of log, smtp"),
        ({"ALERT_NOTIFIER": "smtp"}, "needs ALERT_EMAIL_TO"),
    ],
)
def test_a_wrong_configuration_is_refused_when_the_dag_is_parsed(monkeypatch, env, message):
    monkeypatch.delenv("ALERT_EMAIL_TO", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        hour_failure_notifier("platform_postgres")
