"""Alerts of a failed batch_hourly task: which hour failed, in which task, and why.

Every task of batch_hourly carries `hour_failure_notifier()` as its failure callback, through
Airflow's notifier mechanism, so a task that fails for good (the quality gate, the completeness
sensor's timeout, the job after its retries) sends one alert. The channel comes from the
environment of the Airflow components, read when the DAG file is parsed:

    ALERT_NOTIFIER       `log` (default): one line on the task's log at ERROR level, beginning
                         with ALERT; `smtp`: that line too, and a mail through the SMTP provider
    ALERT_EMAIL_TO       recipients of the mail, comma-separated (required with `smtp`)
    ALERT_EMAIL_FROM     sender (default: the SMTP connection's `from_email`)
    ALERT_SMTP_CONN_ID   Airflow connection of the SMTP server (default: smtp_default)

When the quality gate failed, the alert names the failed checks as the batch job recorded them in
`batch_hour_failures` during this try (docs/contract.md §7), not as a log line would paraphrase
them.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import BaseNotifier

from platform_airflow.hours import batch_hour

log = logging.getLogger(__name__)

CHANNELS = ("log", "smtp")
MAX_REASON_CHARS = 500
# user:password@ in a URI: a spark-submit failure quotes its command line, DSN included.
URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+):[^@\s]+@", re.I)
FAILED_CHECKS_SQL = """
    SELECT failed_checks, details FROM batch_hour_failures
    WHERE date = %(hour)s AND failed_at >= %(since)s
"""


@dataclass(frozen=True)
class GateFailure:
    failed_checks: str
    details: str


@dataclass(frozen=True)
class HourFailure:
    """What an operator needs to act: the hour, where it failed, and why."""

    dag_id: str
    task_id: str
    hour: str
    reason: str
    gate: GateFailure | None = None

    @property
    def subject(self) -> str:
        return f"[mobile-usage] {self.dag_id}: hour {self.hour} failed in {self.task_id}"

    def line(self) -> str:
        checks = f"; failed checks: {self.gate.failed_checks}" if self.gate else ""
        return (
            f"ALERT {self.dag_id} hour {self.hour} failed in {self.task_id}{checks}: {self.reason}"
        )

    def html(self) -> str:
        rows = [("hour", self.hour), ("task", self.task_id), ("reason", self.reason)]
        if self.gate:
            rows += [("failed checks", self.gate.failed_checks), ("details", self.gate.details)]
        cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        return f"<p>{escape(self.subject)}</p><table>{cells}</table>"


def without_credentials(text: str) -> str:
    return URI_CREDENTIALS.sub(r"\g<scheme>:***@", text)


def failure_reason(exception: BaseException | str | None) -> str:
    """The exception's first line, credentials masked, cut to a readable length."""
    if exception is None:
        return "no exception recorded"
    text = str(exception).strip() or type(exception).__name__
    first = without_credentials(text.splitlines()[0])
    return first if len(first) <= MAX_REASON_CHARS else first[: MAX_REASON_CHARS - 3] + "..."


def hour_of(context: dict[str, Any]) -> str:
    try:
        return batch_hour(context.get("dag_run"), context.get("data_interval_start")).isoformat()
    except ValueError as error:
        return f"unknown ({error})"


def gate_failure_in_database(conn_id: str) -> Callable[[str, datetime | None], GateFailure | None]:
    """Reads what the batch job recorded for the hour since the try started; never raises, so
    that an unreachable database still lets the alert out."""

    def read(hour: str, since: datetime | None) -> GateFailure | None:
        if since is None:
            return None
        try:
            connection = PostgresHook(postgres_conn_id=conn_id).get_conn()
            try:
                with connection.cursor() as cursor:
                    cursor.execute(FAILED_CHECKS_SQL, {"hour": hour, "since": since})
                    row = cursor.fetchone()
            finally:
                connection.close()
        except Exception as error:  # noqa: BLE001 - the alert matters more than its detail
            log.warning("alert: could not read batch_hour_failures: %s", failure_reason(error))
            return None
        return GateFailure(*row) if row else None

    return read


def hour_failure(
    context: dict[str, Any], gate_failure: Callable[[str, datetime | None], GateFailure | None]
) -> HourFailure:
    task_instance = context["ti"]
    hour = hour_of(context)
    return HourFailure(
        dag_id=task_instance.dag_id,
        task_id=task_instance.task_id,
        hour=hour,
        reason=failure_reason(context.get("exception")),
        gate=gate_failure(hour, getattr(task_instance, "start_date", None)),
    )


class HourFailureNotifier(BaseNotifier):
    """Logs the failure, and mails it when the channel is `smtp`."""

    def __init__(
        self,
        conn_id: str,
        channel: str = "log",
        email_to: list[str] | None = None,
        email_from: str | None = None,
        smtp_conn_id: str = "smtp_default",
    ) -> None:
        super().__init__()
        if channel not in CHANNELS:
            raise ValueError(f"ALERT_NOTIFIER={channel!r}: expected one of {', '.join(CHANNELS)}")
        if channel == "smtp" and not email_to:
            raise ValueError("ALERT_NOTIFIER=smtp needs ALERT_EMAIL_TO (comma-separated addresses)")
        self.conn_id = conn_id
        self.channel = channel
        self.email_to = email_to or []
        self.email_from = email_from
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: Any) -> None:
        failure = hour_failure(context, gate_failure_in_database(self.conn_id))
        log.error("%s", failure.line())
        if self.channel == "smtp":
            self._mail(failure, context)

    def _mail(self, failure: HourFailure, context: Any) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(
            to=self.email_to,
            from_email=self.email_from,
            subject=failure.subject,
            html_content=failure.html(),
            smtp_conn_id=self.smtp_conn_id,
        ).notify(context)


def hour_failure_notifier(conn_id: str) -> HourFailureNotifier:
    """The notifier the environment configures (see the module's docstring)."""
    recipients = os.environ.get("ALERT_EMAIL_TO", "")
    return HourFailureNotifier(
        conn_id=conn_id,
        channel=os.environ.get("ALERT_NOTIFIER", "log").strip().lower() or "log",
        email_to=[address.strip() for address in recipients.split(",") if address.strip()],
        email_from=os.environ.get("ALERT_EMAIL_FROM") or None,
        smtp_conn_id=os.environ.get("ALERT_SMTP_CONN_ID", "smtp_default"),
    )
