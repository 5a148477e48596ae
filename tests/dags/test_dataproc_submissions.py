"""How the Dataproc runner submits an hour: once, whatever the tries. The Dataproc API is replaced
by an in-memory stand-in that keeps jobs by id and, like the API, refuses an id
that exists; everything else is the real operators of batch_hourly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.providers.google.cloud.operators import dataproc as dataproc_operators
from google.api_core.exceptions import AlreadyExists, NotFound
from google.cloud import dataproc_v1
from platform_airflow import dataproc
from platform_airflow.dataproc import JOB_FINISHED_STATES, choose_submission

from tests.dags.conftest import rendered

JOB = "batch-hourly-20261127T10"


class FakeDataprocApi:
    """Jobs by id with their state names; submissions validated as the client would."""

    project_id = None

    def __init__(self, jobs: dict[str, str] | None = None):
        self.jobs = dict(jobs or {})
        self.submitted: list[str] = []
        self.waited_for: list[str] = []

    def get_job(self, job_id, project_id, region, **_):
        if job_id not in self.jobs:
            raise NotFound(f"job {job_id}")
        return dataproc_v1.Job(reference={"job_id": job_id}, status={"state": self.jobs[job_id]})

    def submit_job(self, project_id, region, job, request_id=None, **_):
        request = dataproc_v1.Job(job)
        job_id = request.reference.job_id
        if job_id in self.jobs:
            raise AlreadyExists(f"job {job_id}")
        self.jobs[job_id] = "PENDING"
        self.submitted.append(job_id)
        return request

    def wait_for_job(self, job_id, project_id, region, timeout=None, **_):
        self.waited_for.append(job_id)
        self.jobs[job_id] = "DONE"


@pytest.fixture
def run_in_gcp(monkeypatch, run_batch_tasks, cloud_config):
    """run(runner, api): execute that runner's run_batch task for the sample hour against `api`."""

    def run(runner: str, api: FakeDataprocApi):
        monkeypatch.setattr(dataproc, "DataprocHook", lambda **_: api)
        monkeypatch.setattr(dataproc_operators, "DataprocHook", lambda **_: api)
        task = rendered(run_batch_tasks[runner])
        pushed = {}
        context = {"ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))}
        return task.execute(context)

    return run


def test_a_new_hour_is_submitted_once_under_its_first_id(run_in_gcp):
    api = FakeDataprocApi()
    run_in_gcp("dataproc", api)
    assert (api.submitted, api.waited_for) == ([f"{JOB}-1"], [f"{JOB}-1"])


def test_a_retry_waits_for_the_job_still_running_instead_of_submitting(run_in_gcp):
    api = FakeDataprocApi(jobs={f"{JOB}-1": "RUNNING"})
    run_in_gcp("dataproc", api)
    assert (api.submitted, api.waited_for) == ([], [f"{JOB}-1"])


def test_a_retry_after_a_failed_job_submits_the_next_id(run_in_gcp):
    api = FakeDataprocApi(jobs={f"{JOB}-1": "ERROR"})
    run_in_gcp("dataproc", api)
    assert api.submitted == [f"{JOB}-2"]


def test_a_cleared_hour_is_recomputed_even_after_a_successful_job(run_in_gcp):
    api = FakeDataprocApi(jobs={f"{JOB}-1": "DONE"})
    run_in_gcp("dataproc", api)
    assert api.submitted == [f"{JOB}-2"]


def test_the_latest_running_submission_is_found_past_finished_ones(run_in_gcp):
    api = FakeDataprocApi(jobs={f"{JOB}-1": "DONE", f"{JOB}-2": "ERROR", f"{JOB}-3": "SETUP_DONE"})
    run_in_gcp("dataproc", api)
    assert (api.submitted, api.waited_for) == ([], [f"{JOB}-3"])


def test_endless_failures_of_an_hour_stop_with_a_clear_error():
    with pytest.raises(Exception, match="submissions named job-N already exist"):
        choose_submission("job", lambda _: "ERROR", JOB_FINISHED_STATES, limit=3)
