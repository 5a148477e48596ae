"""The sensor batch_hourly waits with until hour H may be published (docs/contract.md §7): the speed
layer has committed, on every Kafka partition, what Kafka held at H + 1 h + lateness. The rule
itself is spark_jobs/completeness.py, which the batch job applies again before it publishes.

Reschedule mode: between pokes the worker slot is free and no triggerer is needed. Past the
timeout the task fails saying how far behind the stream is, for example "speed layer is 12,345
records behind on devices-2".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from spark_jobs import completeness


class SpeedLayerCaughtUpSensor(BaseSensorOperator):
    """Waits until the speed layer has committed every record hour `hour` (templated ISO start)
    needs, from its offsets in PostgreSQL (connection `conn_id`) and Kafka's time index."""

    template_fields: Sequence[str] = ("hour", "lateness_minutes", "bootstrap_servers", "topic")
    ui_color = "#e8f4ff"

    def __init__(
        self,
        *,
        conn_id: str,
        hour: str,
        lateness_minutes: str | int,
        bootstrap_servers: str,
        topic: str,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.hour = hour
        self.lateness_minutes = lateness_minutes
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._last_state = "not checked yet"

    def poke(self, context) -> bool:
        hour = datetime.fromisoformat(self.hour)
        connection = PostgresHook(postgres_conn_id=self.conn_id).get_conn()
        try:
            with connection.cursor() as cursor:
                committed = completeness.committed_offsets(cursor, self.topic)
        finally:
            connection.close()
        try:
            lags = completeness.hour_lags(
                self.bootstrap_servers,
                self.topic,
                committed,
                hour,
                timedelta(minutes=int(self.lateness_minutes)),
            )
        except (completeness.HourIncomplete, completeness.KafkaUnavailable) as waiting:
            self._last_state = str(waiting)
            self.log.info("%s", waiting)
            return False
        self._last_state = completeness.describe_lag(lags)
        self.log.info("hour %s: %s", self.hour, self._last_state)
        return completeness.records_behind(lags) == 0

    def execute(self, context) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as timeout:
            raise AirflowSensorTimeout(
                f"hour {self.hour} not complete: {self._last_state} ({timeout})"
            ) from None
