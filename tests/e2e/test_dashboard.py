"""The dashboards in a real browser: headless Chromium (Debian's chromium and chromium-driver) logs
in to Superset, opens each dashboard, waits for every chart, and saves a screenshot
(docs/dashboard.png and docs/pipeline-health.png, shown in the README). Every chart must have
rendered without an error, and Superset's chart data API must return rows for each: from both
layers where the chart shows the layer, for every partition, reason, layer and hour state on the
Pipeline health dashboard."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, time

import psycopg2
import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from common.settings import TOPIC_PARTITIONS
from tests.e2e.conftest import ADMIN, REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DASHBOARD_SLUG = "mobile-usage"
SCREENSHOT = REPO_ROOT / "docs" / "dashboard.png"
HEALTH_DASHBOARD_SLUG = "pipeline-health"
HEALTH_SCREENSHOT = REPO_ROOT / "docs" / "pipeline-health.png"
QUARANTINE_REASONS = "SELECT DISTINCT reason FROM speed_micro_batch_quarantine"
RECENT_HOUR_STATES = (
    "SELECT DISTINCT state FROM batch_hour_states WHERE date > now() - interval '2 days'"
)
HEALTH_CHARTS = {
    "Kafka lag per partition",
    "Events per second",
    "Micro-batch duration per step",
    "Quarantine by reason",
    "Freshness per layer",
    "Hours and their state",
}
CHARTS = {
    "Traffic by answering layer",
    "Traffic per antenna",
    "Top users",
    "Share per app",
    "Users over quota",
    "Speed-versus-batch drift",
}
CHART_LOAD_TIMEOUT = 120


def system_chromium() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = system_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1650",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    # The system's chromedriver, matching the system's chromium: Selenium Manager downloads nothing.
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=driver_path), options=options
    )
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def logged_in_browser(browser, superset_url):
    # Once per module: a second visit to /login/ while logged in redirects away from the form.
    log_in(browser, superset_url)
    return browser


@pytest.fixture(scope="module")
def api(superset_url) -> requests.Session:
    session = requests.Session()
    login = session.post(
        f"{superset_url}/api/v1/security/login",
        json={**ADMIN, "provider": "db", "refresh": False},
        timeout=30,
    )
    login.raise_for_status()
    session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return session


def log_in(browser, superset_url: str) -> None:
    browser.get(f"{superset_url}/login/")
    wait = WebDriverWait(browser, 60)
    wait.until(EC.presence_of_element_located((By.ID, "username"))).send_keys(ADMIN["username"])
    browser.find_element(By.ID, "password").send_keys(ADMIN["password"])
    browser.find_element(By.CSS_SELECTOR, "button[data-test='login-button']").click()
    wait.until(lambda driver: "/login" not in driver.current_url)


def open_dashboard_and_wait_for_charts(browser, superset_url: str, slug: str, charts: int) -> list:
    """The dashboard's chart containers, once none is loading any more."""
    browser.get(f"{superset_url}/superset/dashboard/{slug}/")
    wait = WebDriverWait(browser, CHART_LOAD_TIMEOUT)
    wait.until(lambda driver: len(driver.find_elements(By.CLASS_NAME, "chart-container")) >= charts)
    try:
        wait.until(lambda driver: not driver.find_elements(By.CLASS_NAME, "loading"))
    except TimeoutException:
        pytest.fail(f"charts still loading after {CHART_LOAD_TIMEOUT} s")
    return browser.find_elements(By.CLASS_NAME, "chart-container")


def chart_ids(api: requests.Session, superset_url: str, slug: str) -> dict[str, int]:
    response = api.get(f"{superset_url}/api/v1/dashboard/{slug}/charts", timeout=30)
    response.raise_for_status()
    return {chart["slice_name"]: chart["id"] for chart in response.json()["result"]}


def chart_rows(api: requests.Session, superset_url: str, chart_id: int) -> list[dict]:
    response = api.get(
        f"{superset_url}/api/v1/chart/{chart_id}/data/", params={"force": "true"}, timeout=60
    )
    return only_result(response)["data"]


def only_result(response: requests.Response) -> dict:
    """The one query result of a chart data response, which must hold no error."""
    assert response.status_code == 200, response.text[:2000]
    (result,) = response.json()["result"]
    assert not result.get("error"), result["error"]
    return result


def screenshot_and_rows_of(
    browser, api, superset_url: str, slug: str, charts: set[str], screenshot
) -> dict[str, list[dict]]:
    """Opens the dashboard, saves its screenshot, checks that every chart drew without an error
    or an empty result, and returns each chart's rows from Superset's chart data API."""
    containers = open_dashboard_and_wait_for_charts(browser, superset_url, slug, len(charts))
    # Let the charts' drawing animations end before the screenshot.
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script("return document.readyState") == "complete"
    )
    browser.execute_script("return new Promise(done => setTimeout(done, 3000))")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(screenshot))

    errors = [alert.text for alert in browser.find_elements(By.XPATH, "//div[@role='alert']")]
    assert errors == [], f"{slug} shows errors: {errors}"
    assert len(containers) == len(charts)
    empty = [
        c.text
        for c in browser.find_elements(By.CSS_SELECTOR, ".chart-container")
        if "No results" in c.text
    ]
    assert empty == [], f"{slug}: charts without data: {empty}"

    ids = chart_ids(api, superset_url, slug)
    assert set(ids) == charts
    rows = {name: chart_rows(api, superset_url, chart_id) for name, chart_id in ids.items()}
    assert {name for name, data in rows.items() if not data} == set()
    assert screenshot.stat().st_size > 10_000
    return rows


def test_the_dashboard_renders_every_chart_with_data(logged_in_browser, api, superset_url):
    rows = screenshot_and_rows_of(
        logged_in_browser, api, superset_url, DASHBOARD_SLUG, CHARTS, SCREENSHOT
    )

    # The closed hour from the batch layer, the current one from the speed layer, side by side.
    assert {row["layer"] for row in rows["Traffic by answering layer"]} == {"batch", "speed"}
    assert {row["layer"] for row in rows["Users over quota"]} == {"batch", "speed"}


def column_of(dsn: str, statement: str) -> list:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(statement)
        values = [value for (value,) in cursor.fetchall()]
    connection.close()
    return values


def test_the_pipeline_health_dashboard_renders_every_chart_with_data(
    logged_in_browser, api, superset_url, pipeline_dsn, hours_in_every_state
):
    rows = screenshot_and_rows_of(
        logged_in_browser,
        api,
        superset_url,
        HEALTH_DASHBOARD_SLUG,
        HEALTH_CHARTS,
        HEALTH_SCREENSHOT,
    )

    # The streaming job's own health rows, every partition and every reason it quarantined.
    assert {row["partition"] for row in rows["Kafka lag per partition"]} == set(
        range(TOPIC_PARTITIONS)
    )
    quarantined = set(column_of(pipeline_dsn, QUARANTINE_REASONS))
    assert len(quarantined) >= 2
    assert {row["reason"] for row in rows["Quarantine by reason"]} == quarantined
    assert any(row["events_per_second"] > 0 for row in rows["Events per second"])
    assert {row["layer"] for row in rows["Freshness per layer"]} == {"speed", "batch"}
    hours = rows["Hours and their state"]
    # The test's current hour is open, or waiting once the clock has passed the end of the hour.
    states = set(column_of(pipeline_dsn, RECENT_HOUR_STATES))
    assert states >= {"waiting for completeness", "published", "republication pending", "failed"}
    assert {row["state"] for row in hours} == states
    # Newest first, as an operator reads it.
    assert [row["date"] for row in hours] == sorted((row["date"] for row in hours), reverse=True)


# What the dashboard's two native filters send when set to a year by the day, as the
# `extraFormData` of Superset's filter_time and filter_timegrain plugins.
YEAR = 'DATEADD(DATETIME("now"), -366, day) : DATEADD(DATETIME("now"), 1, hour)'
DAY = "P1D"
BENCH_QUERIES = REPO_ROOT / "bench" / "serving_sql" / "dashboard"
BENCHMARKED = {
    "Traffic by answering layer": "traffic_per_layer.sql",
    "Traffic per antenna": "traffic_per_antenna.sql",
    "Top users": "top_users.sql",
    "Share per app": "share_per_app.sql",
    "Users over quota": "users_over_quota.sql",
    "Speed-versus-batch drift": "speed_drift.sql",
}
TIME_SERIES = {"Traffic by answering layer", "Traffic per antenna", "Speed-versus-batch drift"}
# The chart's SQL less its bound values: the time range's bounds as rendered by Superset, and the
# placeholders of the benchmark's copy (bench/serving.py binds the grain, 'day', and the bounds).
BOUND_VALUES = re.compile(r"TO_TIMESTAMP\('[^']*'|TO_TIMESTAMP\(%\(\w+\)s|%\(grain\)s|'day'")


def widened_to_a_year_by_the_day(query_context: dict) -> dict:
    """The chart's own query context with the dashboard's Time range and Time grain applied."""
    (query,) = query_context["queries"]
    for time_filter in query["filters"]:
        if time_filter["op"] == "TEMPORAL_RANGE":
            time_filter["val"] = YEAR
    query["extras"]["time_grain_sqla"] = DAY
    for column in query["columns"]:
        if isinstance(column, dict) and column.get("columnType") == "BASE_AXIS":
            column["timeGrain"] = DAY
    query_context["form_data"] = {"time_range": YEAR, "time_grain_sqla": DAY}
    return query_context


def chart_data(api, superset_url: str, query_context: dict, result_type: str) -> dict:
    response = api.post(
        f"{superset_url}/api/v1/chart/data",
        json={**query_context, "result_type": result_type, "force": True},
        timeout=60,
    )
    return only_result(response)


def comparable(sql: str) -> str:
    """SQL without comments, bound values, quotes of identifiers, case and layout."""
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return " ".join(BOUND_VALUES.sub("?", sql).replace('"', "").rstrip(";\n ").lower().split())


def test_the_dashboard_widened_to_a_year_by_the_day_draws_every_day_with_the_benchmarked_sql(
    logged_in_browser, api, superset_url
):
    # The filter bar offers both filters.
    open_dashboard_and_wait_for_charts(logged_in_browser, superset_url, DASHBOARD_SLUG, len(CHARTS))
    page = logged_in_browser.find_element(By.TAG_NAME, "body").text
    assert "Time range" in page and "Time grain" in page

    ids = chart_ids(api, superset_url, DASHBOARD_SLUG)
    for name, bench_file in BENCHMARKED.items():
        chart = api.get(f"{superset_url}/api/v1/chart/{ids[name]}", timeout=30).json()["result"]
        # The import set the saved query context's datasource to the chart's dataset.
        query_context = widened_to_a_year_by_the_day(json.loads(chart["query_context"]))

        # The SQL the serving benchmark times for a year is the SQL this chart sends.
        sent = chart_data(api, superset_url, query_context, "query")["query"]
        assert comparable(sent) == comparable((BENCH_QUERIES / bench_file).read_text()), sent
        if name not in TIME_SERIES:
            continue
        assert "DATE_TRUNC('day', date)" in sent, sent

        # By the day, every point is drawn: each at a UTC midnight, none cut by the row limit.
        rows = chart_data(api, superset_url, query_context, "full")["data"]
        assert rows, name
        assert len(rows) < query_context["queries"][0]["row_limit"]
        assert {datetime.fromtimestamp(row["date"] / 1000, UTC).time() for row in rows} == {
            time(0, 0)
        }, name
