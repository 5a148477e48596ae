"""Where the batch job of one hour runs: local Spark, a Dataproc cluster, or Dataproc Serverless.

The runner is read from the environment variable BATCH_RUNNER when the DAG file is parsed,
because it decides the operator class and so the shape of the DAG (a template could only choose
at run time, between tasks that all exist):

    local       spark-submit of spark_jobs/batch.py on this machine (connection `spark_local`)
    dataproc    a PySpark job on the cluster of Variable `dataproc_cluster`
    serverless  a Dataproc Serverless batch

Dataproc runners read the code from Variable `code_uri` (a gs:// prefix holding
`spark_jobs/batch.py` and `platform.zip`, a zip of the packages `common/` and `spark_jobs/`).
No connector jar is needed: the batch job reads Parquet through the GCS connector that Dataproc
images ship and writes PostgreSQL with psycopg2, which the cluster installs at creation
(`dataproc:pip.packages`); the Kafka connector is the streaming job's only.

Each Dataproc submission of an hour has the id `<base id>-N`, N = 1, 2, ...: a retry first looks
at the submissions already made for the hour and waits for one still running instead of
submitting again, and submits under the next free id only when every earlier one has finished
(a failed job must be retried, and a finished one re-run when the hour is cleared or backfilled).
Dataproc refuses a second job with an existing id, so two tries racing for the same id can never
both submit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.google.cloud.hooks.dataproc import DataprocHook
from airflow.providers.google.cloud.operators.dataproc import (
    DataprocCreateBatchOperator,
    DataprocSubmitJobOperator,
)
from airflow.sdk.exceptions import AirflowException
from google.api_core.exceptions import NotFound

from platform_airflow import REPO_ROOT

RUNNER_VARIABLE = "BATCH_RUNNER"
LOCAL, DATAPROC, SERVERLESS = "local", "dataproc", "serverless"
RUNNERS = (LOCAL, DATAPROC, SERVERLESS)

LOCAL_SPARK_CONN_ID = "spark_local"
LOCAL_BATCH_APPLICATION = REPO_ROOT / "spark_jobs" / "batch.py"

# Terminal states from google.cloud.dataproc_v1 (JobStatus.State, Batch.State); any other state
# means the submission may still produce the hour.
JOB_FINISHED_STATES = frozenset({"DONE", "ERROR", "CANCELLED"})
BATCH_FINISHED_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# More submissions than this for one hour is a loop, not bad luck.
MAX_SUBMISSIONS_PER_HOUR = 20


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
    serverless_batch: dict[str, Any],
    serverless_batch_id: str,
    gcp_project: str,
    gcp_region: str,
    **operator_kwargs: Any,
):
    """The operator that runs the batch job of the DAG run's hour on `runner`."""
    if runner == LOCAL:
        return local_spark_submit(task_id=task_id, application_args=local_args, **operator_kwargs)
    if runner == DATAPROC:
        return DataprocSubmitHourJobOperator(
            task_id=task_id, job=dataproc_job, project_id=gcp_project, region=gcp_region, **operator_kwargs
        )
    if runner == SERVERLESS:
        return DataprocCreateHourBatchOperator(
            task_id=task_id,
            batch=serverless_batch,
            batch_id=serverless_batch_id,
            project_id=gcp_project,
            region=gcp_region,
            **operator_kwargs,
        )
    raise ValueError(f"unknown runner {runner!r}; expected one of {', '.join(RUNNERS)}")


def local_spark_submit(*, task_id: str, application_args: Sequence[str], **operator_kwargs: Any) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id=LOCAL_SPARK_CONN_ID,
        application=str(LOCAL_BATCH_APPLICATION),
        application_args=list(application_args),
        name="batch-hourly",
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


@dataclass(frozen=True)
class Submission:
    """Which id to use for an hour's job: a new one to submit, or one still running to wait for."""

    id: str
    running_state: str | None = None

    @property
    def already_running(self) -> bool:
        return self.running_state is not None


def choose_submission(
    base_id: str,
    state_of: Callable[[str], str | None],
    finished_states: Collection[str],
    limit: int = MAX_SUBMISSIONS_PER_HOUR,
) -> Submission:
    """The first of `<base_id>-1`, `-2`, ... that is unused, or that is used and still running.

    `state_of(id)` is the state name of the submission with that id, None if there is none.
    """
    for number in range(1, limit + 1):
        candidate = f"{base_id}-{number}"
        state = state_of(candidate)
        if state is None:
            return Submission(candidate)
        if state not in finished_states:
            return Submission(candidate, running_state=state)
    raise AirflowException(
        f"{limit} Dataproc submissions named {base_id}-N already exist and all have finished;"
        " delete old ones or investigate why the hour keeps failing"
    )


class DataprocSubmitHourJobOperator(DataprocSubmitJobOperator):
    """Submits `job` once per hour: `job["reference"]["job_id"]` is the base of the ids (module doc)."""

    def execute(self, context):
        hook = DataprocHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)
        base_id = self.job["reference"]["job_id"]
        submission = choose_submission(base_id, lambda job_id: self._job_state(hook, job_id), JOB_FINISHED_STATES)
        if submission.already_running:
            self.log.info(
                "Dataproc job %s of this hour is %s (submitted by an earlier try): waiting for it, not submitting again",
                submission.id,
                submission.running_state,
            )
            hook.wait_for_job(
                job_id=submission.id, project_id=self.project_id, region=self.region, timeout=self.wait_timeout
            )
            self.log.info("Job %s completed successfully.", submission.id)
            return submission.id
        self.job = {**self.job, "reference": {**self.job["reference"], "job_id": submission.id}}
        return super().execute(context)

    def _job_state(self, hook: DataprocHook, job_id: str) -> str | None:
        try:
            job = hook.get_job(job_id=job_id, project_id=self.project_id, region=self.region)
        except NotFound:
            return None
        return job.status.state.name


class DataprocCreateHourBatchOperator(DataprocCreateBatchOperator):
    """Creates `batch` once per hour: `batch_id` is the base of the ids (module doc).

    For a batch still running the parent operator does the waiting: creating it again raises
    AlreadyExists, on which it attaches to the existing batch.
    """

    def execute(self, context):
        submission = choose_submission(self.batch_id, self._batch_state, BATCH_FINISHED_STATES)
        if submission.already_running:
            self.log.info("Dataproc batch %s of this hour is %s: attaching to it", submission.id, submission.running_state)
        self.batch_id = submission.id
        return super().execute(context)

    def _batch_state(self, batch_id: str) -> str | None:
        try:
            batch = self.hook.get_batch(batch_id=batch_id, project_id=self.project_id, region=self.region)
        except NotFound:
            return None
        return batch.state.name
