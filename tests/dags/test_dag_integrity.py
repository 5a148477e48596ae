"""Every DAG parses and carries what the platform relies on: owner, retries, tags, an hourly UTC
schedule with catchup; and batch_hourly has its four tasks in one chain, for each runner.

The runner (BATCH_RUNNER) decides the operator that runs the batch job when the file is parsed,
so the DagBag is loaded once per runner.
"""

from __future__ import annotations

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.google.cloud.operators.dataproc import DataprocSubmitJobOperator
from airflow.sdk import CronDataIntervalTimetable
from platform_airflow.quality import SpeedDriftOperator
from platform_airflow.runners import RUNNERS
from platform_airflow.sensors import SpeedLayerCaughtUpSensor

from spark_jobs.quality_gate import load_checks
from tests.conftest import REPO_ROOT

BATCH_CHAIN = ("wait_for_complete_hour", "run_batch", "measure_speed_drift")
BATCH_OPERATOR_OF_RUNNER = {
    "local": SparkSubmitOperator,
    "dataproc": DataprocSubmitJobOperator,
}
HOURLY_UTC = CronDataIntervalTimetable("0 * * * *", timezone="UTC")


@pytest.fixture(scope="module", params=RUNNERS)
def parsed(request) -> tuple[str, DagBag]:
    """(runner, the dags folder parsed with BATCH_RUNNER=runner)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BATCH_RUNNER", request.param)
        return request.param, DagBag(dag_folder=REPO_ROOT / "dags")


@pytest.fixture
def dags(parsed):
    return list(parsed[1].dags.values())


@pytest.fixture
def batch_hourly(parsed):
    return parsed[1].dags["batch_hourly"]


def test_every_dag_file_imports(parsed):
    runner, bag = parsed
    assert bag.import_errors == {}
    assert {"batch_hourly", "batch_republish"} <= set(bag.dags)


def test_every_task_has_an_owner_and_retries(dags):
    for dag in dags:
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), (
                f"{dag.dag_id}.{task.task_id} has no owner of its own"
            )
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id} retries {task.retries} times"


def test_every_dag_is_tagged_and_documented(dags):
    for dag in dags:
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag.dag_id} has no doc_md"


def test_batch_hourly_runs_hourly_utc_intervals_with_catchup(batch_hourly):
    dag = batch_hourly
    # A plain cron string would give zero-width intervals in Airflow 3.
    assert isinstance(dag.timetable, CronDataIntervalTimetable), dag.dag_id
    assert (dag.timetable.expression, dag.timetable.timezone) == (
        HOURLY_UTC.expression,
        HOURLY_UTC.timezone,
    )
    assert dag.catchup is True, f"{dag.dag_id} cannot be backfilled by catchup"
    assert 1 <= dag.max_active_runs <= 4, (
        f"{dag.dag_id} may run {dag.max_active_runs} hours at once"
    )


def test_batch_republish_triggers_batch_hourly_for_the_late_hours(parsed):
    dag = parsed[1].dags["batch_republish"]
    assert dag.catchup is False and dag.max_active_runs == 1
    trigger = dag.get_task("republish_hour")
    assert trigger.partial_kwargs["trigger_dag_id"] == "batch_hourly"
    assert trigger.upstream_task_ids == {"find_hours_to_republish"}


def test_batch_hourly_is_one_chain(batch_hourly):
    assert set(batch_hourly.task_ids) == set(BATCH_CHAIN)
    for upstream, downstream in zip(BATCH_CHAIN, BATCH_CHAIN[1:], strict=False):
        assert batch_hourly.get_task(upstream).downstream_task_ids == {downstream}
    assert batch_hourly.get_task(BATCH_CHAIN[0]).upstream_task_ids == set()
    assert batch_hourly.get_task(BATCH_CHAIN[-1]).downstream_task_ids == set()


def test_batch_hourly_runs_the_job_on_the_configured_runner(parsed, batch_hourly):
    runner, _ = parsed
    assert isinstance(batch_hourly.get_task("run_batch"), BATCH_OPERATOR_OF_RUNNER[runner])
    assert f"runner:{runner}" in batch_hourly.tags


def test_batch_hourly_waits_for_a_complete_hour_without_holding_a_worker(batch_hourly):
    sensor = batch_hourly.get_task("wait_for_complete_hour")
    assert isinstance(sensor, SpeedLayerCaughtUpSensor)
    assert sensor.mode == "reschedule"
    assert sensor.conn_id == "platform_postgres"


def test_batch_hourly_gates_the_hour_in_the_job_and_measures_it_on_the_serving_database(
    batch_hourly,
):
    job = batch_hourly.get_task("run_batch")
    drift = batch_hourly.get_task("measure_speed_drift")
    assert isinstance(drift, SpeedDriftOperator) and drift.conn_id == "platform_postgres"
    # The job checks completeness itself too, against the same Kafka and lateness as the sensor.
    args = getattr(job, "application_args", None) or job.job["pyspark_job"]["args"]
    assert {"--bootstrap-servers", "--topic", "--lateness-minutes"} <= set(args)
    assert {check.name for check in load_checks()} >= {
        "raw_rows_are_distinct_offsets",
        "raw_rows_equal_speed_events",
        "bytes_equal_speed_bytes",
        "input_complete",
        "over_quota_rows_match_user_totals",
        "user_rows_are_known_users",
    }


def test_an_unknown_runner_fails_the_import():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BATCH_RUNNER", "kubernetes")
        bag = DagBag(dag_folder=REPO_ROOT / "dags")
    assert any("kubernetes" in error for error in bag.import_errors.values())


def test_a_run_computes_its_data_interval_or_the_hour_its_conf_names():
    import pendulum
    from platform_airflow.hours import batch_hour

    start = pendulum.datetime(2026, 11, 27, 10, tz="UTC")
    assert batch_hour(None, start) == start
    republication = type("DagRun", (), {"conf": {"hour": "2026-11-26T23:00:00+00:00"}})()
    assert batch_hour(republication, None) == pendulum.datetime(2026, 11, 26, 23, tz="UTC")
    with pytest.raises(ValueError, match="not the start of an hour"):
        batch_hour(type("DagRun", (), {"conf": {"hour": "2026-11-26T23:30:00+00:00"}})(), None)


def test_every_task_of_batch_hourly_alerts_when_it_fails(batch_hourly):
    from platform_airflow.alerts import HourFailureNotifier

    for task in batch_hourly.tasks:
        callbacks = task.on_failure_callback
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(isinstance(callback, HourFailureNotifier) for callback in callbacks), task
