"""
### data_lifecycle: delete what no reader needs, roll up old speed windows

Once a day, runs `spark_jobs/lifecycle.py` (docs/contract.md §11) on the batch job's runner:

- the raw micro-batch folders of hours that are compacted, published by the batch layer (no
  republication pending, not failed) and ended more than `raw_batch_retention_days` ago (default
  RAW_BATCH_RETENTION_DAYS, or 3) are deleted, those the compaction covers only;
- the 5-minute speed windows of hours the batch layer serves, ended more than
  `speed_window_retention_days` ago (SPEED_WINDOW_RETENTION_DAYS, or 7), are rolled up into one
  row per key and hour;
- quarantine folders older than `quarantine_retention_days` (QUARANTINE_RETENTION_DAYS, or 30)
  are deleted.

The retentions are Variables (`AIRFLOW_VAR_RAW_BATCH_RETENTION_DAYS`, ...), defaulting to the
environment variables of the same name when the file is parsed. Variable
`lifecycle_dry_run` = `true` makes the job log what it would delete and delete nothing.

**Runner**: the one of batch_hourly (`BATCH_RUNNER`: `local` spark-submit, or `dataproc` with
Variables `gcp_project`, `gcp_region`, `dataproc_cluster`, `code_uri`, `storage_root` and
optionally `pg_dsn_secret`). The database is connection `platform_postgres`.

Each run looks at the whole storage and database: a missed day needs no catching up, and a rerun
finds nothing left to do. Run it by hand: `./airflow.sh dags test data_lifecycle`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable
from platform_airflow.runners import LOCAL_LIFECYCLE_APPLICATION, batch_runner, build_batch_task

from common import settings

RUNNER = batch_runner()
SCHEDULE = "20 3 * * *"
PG_DSN = "{{ conn.platform_postgres.get_uri() }}"
CLOUD_PG_DSN = (
    "{{ '' if var.value.get('pg_dsn_secret', '') else conn.platform_postgres.get_uri() }}"
)
PG_DSN_SECRET = "{{ var.value.get('pg_dsn_secret', '') }}"
CODE_URI = "{{ var.value.code_uri }}"


def variable(name: str, default: object) -> str:
    return f"{{{{ var.value.get('{name}', '{default}') }}}}"


RETENTION_ARGS = [
    "--raw-retention-days",
    variable("raw_batch_retention_days", settings.raw_batch_retention_days()),
    "--speed-retention-days",
    variable("speed_window_retention_days", settings.speed_window_retention_days()),
    "--quarantine-retention-days",
    variable("quarantine_retention_days", settings.quarantine_retention_days()),
]
DRY_RUN_ARG = "--dry-run={{ var.value.get('lifecycle_dry_run', 'false') }}"
LOCAL_JOB_ARGS = ["--pg-dsn", PG_DSN, *RETENTION_ARGS, DRY_RUN_ARG]
CLOUD_JOB_ARGS = [
    "--pg-dsn", CLOUD_PG_DSN, "--pg-dsn-secret", PG_DSN_SECRET,
    "--storage-root", "{{ var.value.storage_root }}", *RETENTION_ARGS, DRY_RUN_ARG,
]  # fmt: skip
DATAPROC_JOB = {
    # One base id per day: a retry finds the job of an earlier try (platform_airflow.dataproc).
    "reference": {"job_id": "data-lifecycle-{{ data_interval_end.strftime('%Y%m%d') }}"},
    "placement": {"cluster_name": "{{ var.value.dataproc_cluster }}"},
    "labels": {"pipeline": "data-lifecycle"},
    "pyspark_job": {
        "main_python_file_uri": f"{CODE_URI}/spark_jobs/lifecycle.py",
        "python_file_uris": [f"{CODE_URI}/platform.zip"],
        "args": CLOUD_JOB_ARGS,
    },
}

with DAG(
    dag_id="data_lifecycle",
    description="Delete raw micro-batches and quarantine past their retention, roll up speed "
    "windows",
    doc_md=__doc__,
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 27, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=3),
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["lifecycle", f"runner:{RUNNER}"],
) as dag:
    apply_retentions = build_batch_task(
        RUNNER,
        task_id="apply_retentions",
        local_args=LOCAL_JOB_ARGS,
        dataproc_job=DATAPROC_JOB,
        gcp_project="{{ var.value.gcp_project }}",
        gcp_region="{{ var.value.gcp_region }}",
        local_application=LOCAL_LIFECYCLE_APPLICATION,
        local_name="data-lifecycle",
        execution_timeout=timedelta(hours=2),
    )
