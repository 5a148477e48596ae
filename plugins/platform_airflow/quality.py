"""Quality checks and speed-layer drift of one batch hour, from the SQL files in sql/quality/.

A check is a file `sql/quality/checks/<name>.sql` returning the rows that violate it, so a
passing check returns nothing and a failing one says what is wrong with which values. Every
file takes one parameter, `%(hour)s`, the start of the UTC hour; because the driver substitutes
parameters, a literal percent sign in a file must be written `%%`.

The operators take the database from an Airflow connection through the common-sql provider's
base operator, like SQLCheckOperator does, and the same functions run the files in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.providers.common.sql.operators.sql import BaseSQLOperator

from platform_airflow import REPO_ROOT

QUALITY_SQL_DIR = REPO_ROOT / "sql" / "quality"
CHECKS_DIR = QUALITY_SQL_DIR / "checks"
SPEED_DRIFT_SQL = QUALITY_SQL_DIR / "speed_drift.sql"


@dataclass(frozen=True)
class QualityCheck:
    name: str
    sql: str

    @classmethod
    def from_file(cls, path: Path) -> QualityCheck:
        return cls(name=path.stem, sql=path.read_text())


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    violations: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        if self.passed:
            return f"quality check {self.name} passed"
        rows = "; ".join(_format_row(row) for row in self.violations)
        return f"quality check {self.name} failed: {rows}"


def load_checks(folder: Path = CHECKS_DIR) -> list[QualityCheck]:
    """Every check file of `folder`, in name order; an empty folder is an error, not a pass."""
    checks = [QualityCheck.from_file(path) for path in sorted(folder.glob("*.sql"))]
    if not checks:
        raise FileNotFoundError(f"no quality check files (*.sql) in {folder}")
    return checks


def run_checks(connection, checks: Sequence[QualityCheck], hour: str) -> list[CheckOutcome]:
    """Run `checks` for `hour` on a DB-API connection to PostgreSQL, all in one snapshot.

    A batch run replacing the hour meanwhile commits in one transaction; one repeatable-read
    snapshot keeps the checks from comparing its old rows with its new ones.
    """
    connection.autocommit = False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return [CheckOutcome(check.name, _query_dicts(cursor, check.sql, hour)) for check in checks]
    finally:
        connection.rollback()


def measure_speed_drift(connection, hour: str, sql: str | None = None) -> list[dict[str, Any]]:
    """One row per batch table: its bytes, the speed layer's bytes in the same hour, the difference."""
    try:
        with connection.cursor() as cursor:
            return _query_dicts(cursor, sql or SPEED_DRIFT_SQL.read_text(), hour)
    finally:
        connection.rollback()


def describe_drift(row: dict[str, Any]) -> str:
    batch_bytes = row["batch_bytes"]
    share = f"{100 * row['drift_bytes'] / batch_bytes:.3f} % of the batch total" if batch_bytes else "no batch bytes"
    return (
        f"speed-layer drift {row['batch_table']}: batch {row['batch_bytes']} - speed {row['speed_bytes']}"
        f" = {row['drift_bytes']} bytes ({share}); {row['keys_differing']} of {row['keys']} keys differ"
    )


def _query_dicts(cursor, sql: str, hour: str) -> list[dict[str, Any]]:
    cursor.execute(sql, {"hour": hour})
    columns = [column[0] for column in cursor.description]
    return [dict(zip(columns, row)) for row in cursor.fetchall()]


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{column}={value}" for column, value in row.items())


class QualityChecksOperator(BaseSQLOperator):
    """Runs every check of `checks` on the hour starting at `hour` (templated), failing with all the
    violations. A failed check fails the task without retries: the same data would fail again."""

    template_fields: Sequence[str] = ("hour", *BaseSQLOperator.template_fields)
    ui_color = "#fff7e6"

    def __init__(self, *, hour: str, checks: Sequence[QualityCheck] | None = None, **kwargs: Any) -> None:
        super().__init__(retry_on_failure=False, **kwargs)
        self.hour = hour
        # Read when the DAG is parsed, so a missing or unreadable file is an import error.
        self.checks = list(checks) if checks is not None else load_checks()

    def execute(self, context) -> dict[str, bool]:
        connection = self.get_db_hook().get_conn()
        try:
            outcomes = run_checks(connection, self.checks, self.hour)
        finally:
            connection.close()
        for outcome in outcomes:
            self.log.info("%s", outcome.describe())
        failures = [outcome for outcome in outcomes if not outcome.passed]
        if failures:
            summary = "\n".join(outcome.describe() for outcome in failures)
            self._raise_exception(
                f"{len(failures)} of {len(outcomes)} quality checks failed for hour {self.hour}:\n{summary}"
            )
        return {outcome.name: outcome.passed for outcome in outcomes}


class SpeedDriftOperator(BaseSQLOperator):
    """Logs, per table, how far the speed layer's windows inside the hour are from the batch totals,
    and returns the drift in bytes per table (XCom)."""

    template_fields: Sequence[str] = ("hour", *BaseSQLOperator.template_fields)

    def __init__(self, *, hour: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hour = hour
        self.sql = SPEED_DRIFT_SQL.read_text()

    def execute(self, context) -> dict[str, int]:
        connection = self.get_db_hook().get_conn()
        try:
            rows = measure_speed_drift(connection, self.hour, self.sql)
        finally:
            connection.close()
        for row in rows:
            self.log.info("%s", describe_drift(row))
        return {row["batch_table"]: row["drift_bytes"] for row in rows}
