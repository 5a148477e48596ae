"""The speed layer's drift from a batch hour, from sql/quality/speed_drift.sql, logged by
batch_hourly after the hour is published.

The quality gate itself (sql/quality/checks/) runs inside the batch job's publishing transaction
(spark_jobs/quality_gate.py), so a failing hour is never committed. The operator takes the
database from an Airflow connection through the common-sql provider's base operator, like
SQLCheckOperator does, and the same function runs the file in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.sql.operators.sql import BaseSQLOperator

from platform_airflow import REPO_ROOT
from spark_jobs.quality_gate import query_dicts

SPEED_DRIFT_SQL = REPO_ROOT / "sql" / "quality" / "speed_drift.sql"


def measure_speed_drift(connection, hour: str, sql: str | None = None) -> list[dict[str, Any]]:
    """One row per batch table: its bytes, the speed layer's bytes in the same hour, the
    difference."""
    try:
        with connection.cursor() as cursor:
            return query_dicts(cursor, sql or SPEED_DRIFT_SQL.read_text(), hour)
    finally:
        connection.rollback()


def describe_drift(row: dict[str, Any]) -> str:
    batch_bytes = row["batch_bytes"]
    share = (
        f"{100 * row['drift_bytes'] / batch_bytes:.3f} % of the batch total"
        if batch_bytes
        else "no batch bytes"
    )
    return (
        f"speed-layer drift {row['batch_table']}: batch {row['batch_bytes']} - speed "
        f"{row['speed_bytes']}"
        f" = {row['drift_bytes']} bytes ({share}); {row['keys_differing']} of {row['keys']} keys "
        "differ"
    )


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
