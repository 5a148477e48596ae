"""Where the batch job of one hour runs: local Spark or the platform's Dataproc cluster.

The runner is read from the environment variable BATCH_RUNNER when the DAG file is parsed,
because it decides the operator class and so the shape of the DAG (a template could only choose
at run time, between tasks that all exist):

    local       spark-submit of spark_jobs/batch.py on this machine (connection `spark_local`)
    dataproc    a PySpark job on the cluster of Variable `dataproc_cluster`

There is no Dataproc Serverless runner: its runtime 3.0 runs Spark 4.0.1, not the Spark 4.1 of
the cluster image and of the tests, and the cluster that runs the streaming job has room for
the hourly batch at no extra cost. Add one when a Serverless runtime runs the tested Spark line.

The Dataproc runner reads the code from Variable `code_uri` (a gs:// prefix holding
`spark_jobs/batch.py` and `platform.zip`, a zip of the packages `common/` and `spark_jobs/`).
No connector jar is needed: the batch job reads Parquet through the GCS connector that Dataproc
images ship and writes PostgreSQL with psycopg2, which the cluster installs at creation
(`dataproc:pip.packages`); the Kafka connector is the streaming job's only. How the Dataproc
runner submits an hour once is in `platform_airflow.dataproc`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from platform_airflow import REPO_ROOT

RUNNER_VARIABLE = "BATCH_RUNNER"
LOCAL, DATAPROC = "local", "dataproc"
RUNNERS = (LOCAL, DATAPROC)

LOCAL_SPARK_CONN_ID = "spark_local"
LOCAL_BATCH_APPLICATION = REPO_ROOT / "spark_jobs" / "batch.py"
LOCAL_LIFECYCLE_APPLICATION = REPO_ROOT / "spark_jobs" / "lifecycle.py"


def batch_runner() -> str:
    """The runner named by BATCH_RUNNER (default: local); an unknown name fails the DAG's import."""
    runner = os.environ.get(RUNNER_VARIABLE, LOCAL).strip().lower()
    if runner not in RUNNERS:
        raise ValueError(f"{RUNNER_VARIABLE}={runner!r} is not one of {', '.join(RUNNERS)}")
    return runner


def build_batch_task(
    runner: str,
    *,
    task_id: str,
    local_args: Sequence[str],
    dataproc_job: dict[str, Any],
    gcp_project: str,
    gcp_region: str,
    local_application: Path = LOCAL_BATCH_APPLICATION,
    local_name: str = "batch-hourly",
    **operator_kwargs: Any,
):
    """The operator that runs a Spark job (the batch job of the DAG run's hour by default) on
    `runner`: `local_application` with `local_args`, or `dataproc_job`."""
    if runner == LOCAL:
        return local_spark_submit(
            task_id=task_id,
            application_args=local_args,
            application=local_application,
            name=local_name,
            **operator_kwargs,
        )
    # Imported only when used: the Google provider adds seconds to every parse of the DAG file.
    from platform_airflow.dataproc import DataprocSubmitHourJobOperator

    if runner == DATAPROC:
        return DataprocSubmitHourJobOperator(
            task_id=task_id,
            job=dataproc_job,
            project_id=gcp_project,
            region=gcp_region,
            **operator_kwargs,
        )
    raise ValueError(f"unknown runner {runner!r}; expected one of {', '.join(RUNNERS)}")


# spark_jobs.batch.EXIT_NOT_PUBLISHABLE (not imported: the DAG file must not import pyspark).
EXIT_NOT_PUBLISHABLE = 3


class LocalBatchSubmitOperator(SparkSubmitOperator):
    """spark-submit of the batch job; a run that says its hour cannot be published as it is (a
    failed quality gate, missing raw files) fails the task without retries: the same input fails
    again."""

    def execute(self, context) -> None:
        try:
            super().execute(context)
        except AirflowException as error:
            if f"Error code is: {EXIT_NOT_PUBLISHABLE}." in str(error):
                raise AirflowFailException(
                    "the batch job refused to publish the hour (quality gate failed or raw files "
                    "missing; the"
                    " reason is in the log above); not retried, the same input would fail again"
                ) from error
            raise


def local_spark_submit(
    *,
    task_id: str,
    application_args: Sequence[str],
    application: Path = LOCAL_BATCH_APPLICATION,
    name: str = "batch-hourly",
    **operator_kwargs: Any,
) -> SparkSubmitOperator:
    return LocalBatchSubmitOperator(
        task_id=task_id,
        conn_id=LOCAL_SPARK_CONN_ID,
        application=str(application),
        application_args=list(application_args),
        name=name,
        env_vars=local_driver_environment(),
        **operator_kwargs,
    )


def local_driver_environment() -> dict[str, str]:
    """What spark-submit and the Python driver need, whoever started Airflow (./airflow.sh, pytest).

    The venv's bin first, so `spark-submit` is the pip package's and not another Spark's; the
    repository on PYTHONPATH, since batch.py runs as a file and imports `common` and
    `spark_jobs`; and the Airflow interpreter as Spark's Python, the one with pyspark installed.
    """
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYSPARK_PYTHON": sys.executable,
    }
