"""
### batch_hourly: recompute each closed UTC hour exactly

For the data interval [H, H+1h), once the hour is complete (docs/contract.md §7: on every Kafka
partition the speed layer has committed what Kafka held at H + 1 h + lateness, Variable
`batch_lateness_minutes`, default 10; a reschedule sensor waits for it, for up to 2 hours, then
fails saying how many records behind the stream is), the batch job recomputes the hour from raw
Parquet into `bytes_agg_antenna_1h`, `bytes_agg_user_1h`, `bytes_agg_app_1h`,
`users_over_quota_1h` and `batch_hour_runs`, checks it with the quality gate of
`sql/quality/checks/` (docs/contract.md §8) and publishes it, in one transaction: a failed check
fails the task naming itself and its values, and the hour is then served by the speed layer.
Then the speed layer's drift from the published totals is logged per table.

Kafka is read for the offsets an hour needs: Variables `kafka_bootstrap_servers` and
`kafka_topic` (default: KAFKA_BOOTSTRAP_SERVERS and KAFKA_TOPIC when the file is parsed).

**Runner**, from the environment variable `BATCH_RUNNER` when the file is parsed:
`local` (default: spark-submit on this machine, connection `spark_local`) or `dataproc` (a job on
the cluster of Variable `dataproc_cluster`, submitted with connection `google_cloud_default`). The
Dataproc runner reads Variables `gcp_project`, `gcp_region`, `code_uri` (gs:// prefix of
`spark_jobs/batch.py` and `platform.zip`) and `storage_root` (gs:// root of the raw data), and
optionally `pg_dsn_secret` (a Secret Manager version holding the DSN: the job reads it there, and
the password stays out of the job's arguments).
The database is connection `platform_postgres`, for the job and the checks alike; locally the
job takes the storage root from STORAGE_ROOT.

A run triggered with conf `{"hour": "2026-11-27T10:00:00+00:00"}` computes that hour instead of
its data interval: batch_republish triggers such runs for hours whose input changed after their
publication (late data).

**Alerts**: a task that fails for good notifies through `platform_airflow.alerts` with the hour,
the task and the reason (the failed checks when the gate failed): a log line beginning with ALERT,
and a mail when ALERT_NOTIFIER=smtp (ALERT_EMAIL_TO, ALERT_EMAIL_FROM, ALERT_SMTP_CONN_ID).

Run one hour by hand: `./airflow.sh dags test batch_hourly 2026-11-27T10:00:00+00:00` runs the
hour 09:00-10:00, the one that *ends* at the date given.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, chain
from platform_airflow.alerts import hour_failure_notifier
from platform_airflow.hours import batch_hour
from platform_airflow.quality import SpeedDriftOperator
from platform_airflow.runners import batch_runner, build_batch_task
from platform_airflow.schedule import batch_start_date
from platform_airflow.sensors import SpeedLayerCaughtUpSensor

from common import settings

RUNNER = batch_runner()
POSTGRES_CONN_ID = "platform_postgres"
# catchup: unpausing the DAG schedules every hour since START_DATE: BATCH_START_DATE, else the first
# hour with data (platform_airflow/schedule.py), so a new deployment queues no empty hours.
START_DATE = batch_start_date(POSTGRES_CONN_ID)
MAX_ACTIVE_RUNS = 2

# The hour is the data interval's start, or conf["hour"] of a republication
# (platform_airflow.hours): the batch job's --hour, and %(hour)s of the SQL.
THE_HOUR = "batch_hour(dag_run, data_interval_start)"
HOUR_FLAG = f"{{{{ {THE_HOUR}.strftime('%Y-%m-%dT%H:%M:%SZ') }}}}"
HOUR_START = f"{{{{ {THE_HOUR}.isoformat() }}}}"
HOUR_ID = f"{{{{ {THE_HOUR}.strftime('%Y%m%dT%H') }}}}"
# Labels allow lowercase letters only.
HOUR_ID_LOWER = f"{{{{ {THE_HOUR}.strftime('%Y%m%dt%H') }}}}"
# Connection POSTGRES_CONN_ID as a libpq URI: the job writes to the database the checks read.
PG_DSN = "{{ conn.platform_postgres.get_uri() }}"
LATENESS_MINUTES = "{{ var.value.get('batch_lateness_minutes', 10) }}"
KAFKA_BOOTSTRAP_SERVERS = (
    f"{{{{ var.value.get('kafka_bootstrap_servers', '{settings.kafka_bootstrap_servers()}') }}}}"
)
KAFKA_TOPIC = f"{{{{ var.value.get('kafka_topic', '{settings.kafka_topic()}') }}}}"
COMPLETENESS_ARGS = [
    "--bootstrap-servers", KAFKA_BOOTSTRAP_SERVERS,
    "--topic", KAFKA_TOPIC,
    "--lateness-minutes", LATENESS_MINUTES,
]  # fmt: skip
CODE_URI = "{{ var.value.code_uri }}"

# On Dataproc the job reads the DSN from the Secret Manager version of Variable `pg_dsn_secret`
# when it is set, so that the password is not in the job's arguments; else from the connection.
PG_DSN_SECRET = "{{ var.value.get('pg_dsn_secret', '') }}"
CLOUD_PG_DSN = (
    "{{ '' if var.value.get('pg_dsn_secret', '') else conn.platform_postgres.get_uri() }}"
)

LOCAL_JOB_ARGS = ["--hour", HOUR_FLAG, "--pg-dsn", PG_DSN, *COMPLETENESS_ARGS]
CLOUD_JOB_ARGS = [
    "--hour", HOUR_FLAG, "--pg-dsn", CLOUD_PG_DSN, "--pg-dsn-secret", PG_DSN_SECRET,
    "--storage-root", "{{ var.value.storage_root }}", *COMPLETENESS_ARGS,
]  # fmt: skip
JOB_LABELS = {"pipeline": "batch-hourly", "hour": HOUR_ID_LOWER}
PYSPARK_CODE = {
    "main_python_file_uri": f"{CODE_URI}/spark_jobs/batch.py",
    "python_file_uris": [f"{CODE_URI}/platform.zip"],
    "args": CLOUD_JOB_ARGS,
}

# The job id is the base of the ids the operator submits under (`-1`, then `-2` after a failed
# job, ...): derived from the hour only, so a retry finds the job of an earlier try.
DATAPROC_JOB = {
    "reference": {"job_id": f"batch-hourly-{HOUR_ID}"},
    "placement": {"cluster_name": "{{ var.value.dataproc_cluster }}"},
    "labels": JOB_LABELS,
    "pyspark_job": PYSPARK_CODE,
}

with DAG(
    dag_id="batch_hourly",
    description="Recompute each closed UTC hour from raw data, then check it",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=True,
    max_active_runs=MAX_ACTIVE_RUNS,
    dagrun_timeout=timedelta(hours=3),
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        # A task that fails for good (gate, completeness timeout, job after its retries) alerts:
        # ALERT_NOTIFIER and friends (platform_airflow/alerts.py).
        "on_failure_callback": [hour_failure_notifier(POSTGRES_CONN_ID)],
    },
    tags=["batch", "quality", f"runner:{RUNNER}"],
    user_defined_macros={"batch_hour": batch_hour},
) as dag:
    wait_for_complete_hour = SpeedLayerCaughtUpSensor(
        task_id="wait_for_complete_hour",
        conn_id=POSTGRES_CONN_ID,
        hour=HOUR_START,
        lateness_minutes=LATENESS_MINUTES,
        bootstrap_servers=KAFKA_BOOTSTRAP_SERVERS,
        topic=KAFKA_TOPIC,
        # Reschedule frees the worker slot between pokes and needs no triggerer.
        mode="reschedule",
        poke_interval=60,
        timeout=timedelta(hours=2).total_seconds(),
    )

    run_batch = build_batch_task(
        RUNNER,
        task_id="run_batch",
        local_args=LOCAL_JOB_ARGS,
        dataproc_job=DATAPROC_JOB,
        gcp_project="{{ var.value.gcp_project }}",
        gcp_region="{{ var.value.gcp_region }}",
        execution_timeout=timedelta(hours=1),
    )

    measure_speed_drift = SpeedDriftOperator(
        task_id="measure_speed_drift", conn_id=POSTGRES_CONN_ID, hour=HOUR_START
    )

    chain(wait_for_complete_hour, run_batch, measure_speed_drift)
