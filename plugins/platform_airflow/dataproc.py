"""How the Dataproc runner submits the batch job of an hour: once, whatever the tries.

Each submission of an hour has the id `<base id>-N`, N = 1, 2, ..., the base derived from the hour
alone. A try first looks at the submissions already made for the hour and waits for one still
running instead of submitting again; it submits under the next free id only when every earlier
one has finished, because a failed job must be retried and a finished one re-run when the hour is
cleared or backfilled. Dataproc refuses a second job with an existing id, so two tries
racing for the same id can never both submit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from airflow.providers.google.cloud.hooks.dataproc import DataprocHook
from airflow.providers.google.cloud.operators.dataproc import DataprocSubmitJobOperator
from airflow.sdk.exceptions import AirflowException
from google.api_core.exceptions import NotFound

# Terminal states of google.cloud.dataproc_v1.JobStatus.State; any other state means the
# submission may still produce the hour.
JOB_FINISHED_STATES = frozenset({"DONE", "ERROR", "CANCELLED"})
# More submissions than this for one hour is a loop, not bad luck.
MAX_SUBMISSIONS_PER_HOUR = 20


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
    """Submits `job` once per hour: `job["reference"]["job_id"]` is the base of the ids (module
    doc)."""

    def execute(self, context):
        hook = DataprocHook(
            gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain
        )
        base_id = self.job["reference"]["job_id"]
        submission = choose_submission(
            base_id, lambda job_id: self._job_state(hook, job_id), JOB_FINISHED_STATES
        )
        if submission.already_running:
            self.log.info(
                "Dataproc job %s of this hour is %s (an earlier try's): waiting for it, not "
                "submitting again",
                submission.id,
                submission.running_state,
            )
            hook.wait_for_job(
                job_id=submission.id,
                project_id=self.project_id,
                region=self.region,
                timeout=self.wait_timeout,
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
