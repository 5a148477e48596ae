"""
### batch_republish: publish again the hours that received late data

Every 10 minutes, lists the hours whose input changed after their last batch run (view
`batch_hours_to_republish`: the speed layer wrote events for them in a micro-batch that run did
not read, or the hour failed its gate and has new input since) and triggers, for each, a run of
`batch_hourly` with conf `{"hour": ...}`: the same sensor, runner, quality gate and publication as
a scheduled run, so the served numbers include the late events within one cycle of this DAG.

A trigger's run id names the hour and the newest micro-batch of its input, so a later cycle that
sees the same input again (its run still going) triggers nothing, and new late data triggers one
more run. A run computed from older input than the published one never replaces it (the batch
job's rule). Hours are taken oldest first, at most `MAX_HOURS_PER_CYCLE` per cycle.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task
from airflow.timetables.trigger import CronTriggerTimetable
from platform_airflow.hours import HOUR_CONF_KEY

POSTGRES_CONN_ID = "platform_postgres"
MAX_HOURS_PER_CYCLE = 24
HOURS_TO_REPUBLISH = (
    "SELECT date, last_batch_id FROM batch_hours_to_republish ORDER BY date LIMIT %s"
)

with DAG(
    dag_id="batch_republish",
    description="Publish again the hours whose input changed after publication (late data)",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("*/10 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 27, tz="UTC"),
    # Each cycle looks at the whole table: a missed cycle needs no catching up.
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=30),
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["batch", "late-data"],
) as dag:

    @task
    def find_hours_to_republish() -> list[dict]:
        """One trigger per hour to publish again: its run id, its conf and when it may run."""
        rows = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID).get_records(
            HOURS_TO_REPUBLISH, parameters=(MAX_HOURS_PER_CYCLE,)
        )
        now = pendulum.now("UTC").isoformat()
        return [
            {
                "trigger_run_id": (
                    f"republish__{pendulum.instance(hour).in_timezone('UTC'):%Y%m%dT%H}"
                    f"__input_{last_batch}"
                ),
                "conf": {HOUR_CONF_KEY: pendulum.instance(hour).in_timezone("UTC").isoformat()},
                # A run_after and no logical date: the hour's logical date belongs to its
                # scheduled run.
                "run_after": now,
            }
            for hour, last_batch in rows
        ]

    TriggerDagRunOperator.partial(
        task_id="republish_hour",
        trigger_dag_id="batch_hourly",
        skip_when_already_exists=True,
        wait_for_completion=False,
    ).expand_kwargs(find_hours_to_republish())
