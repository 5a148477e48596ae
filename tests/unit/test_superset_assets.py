"""The dashboards-as-code of superset/assets hang together before Superset ever sees them: every
reference resolves, every saved query context is JSON, and no password is in a file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ASSETS_SCRIPT = Path(__file__).resolve().parents[2] / "superset" / "import_assets.py"


def load_import_assets():
    # superset/ is not a package of this project (Superset's own package has that name).
    spec = importlib.util.spec_from_file_location("import_assets", ASSETS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


import_assets = load_import_assets()


@pytest.fixture(scope="module")
def assets() -> dict[str, dict]:
    return {
        path: yaml.safe_load(text)
        for path, text in import_assets.bundle(import_assets.ASSETS).items()
    }


def of_kind(assets: dict[str, dict], folder: str) -> dict[str, dict]:
    return {path: config for path, config in assets.items() if path.startswith(f"{folder}/")}


def test_the_bundle_is_an_assets_export(assets):
    assert assets["metadata.yaml"]["type"] == "assets"
    assert {path.split("/")[0] for path in assets} == {
        "metadata.yaml",
        "databases",
        "datasets",
        "charts",
        "dashboards",
    }


def placed_chart_uuids(dashboard: dict) -> list[str]:
    return [
        item["meta"]["uuid"]
        for item in dashboard["position"].values()
        if isinstance(item, dict) and item.get("type") == "CHART"
    ]


def test_every_reference_resolves(assets):
    database_uuids = {c["uuid"] for c in of_kind(assets, "databases").values()}
    datasets = of_kind(assets, "datasets")
    dataset_uuids = {c["uuid"] for c in datasets.values()}
    charts = of_kind(assets, "charts")
    chart_uuids = {c["uuid"] for c in charts.values()}
    dashboards = of_kind(assets, "dashboards").values()
    placed = [uuid for dashboard in dashboards for uuid in placed_chart_uuids(dashboard)]

    assert {c["database_uuid"] for c in datasets.values()} <= database_uuids
    assert {c["dataset_uuid"] for c in charts.values()} <= dataset_uuids
    # A native filter's dataset: the import resolves it, or fails the whole import.
    filter_targets = {
        target["datasetUuid"]
        for dashboard in dashboards
        for native_filter in dashboard["metadata"]["native_filter_configuration"]
        for target in native_filter["targets"]
        if "datasetUuid" in target
    }
    assert filter_targets <= dataset_uuids
    # Every chart is on exactly one dashboard: none is orphaned, none placed twice.
    assert sorted(placed) == sorted(chart_uuids)
    assert len(chart_uuids) == len(charts)
    assert len(dataset_uuids) == len(datasets)


def test_the_dashboards_have_their_own_slugs_and_charts(assets):
    dashboards = {c["slug"]: c for c in of_kind(assets, "dashboards").values()}
    charts = {c["uuid"]: c for c in of_kind(assets, "charts").values()}

    assert set(dashboards) == {"mobile-usage", "pipeline-health"}
    assert len({c["uuid"] for c in dashboards.values()}) == len(dashboards)
    for slug, dashboard in dashboards.items():
        placed = placed_chart_uuids(dashboard)
        assert len(placed) == 6, slug
        # The name on the grid is the chart's own (Superset shows sliceName until it loads).
        names = {
            item["meta"]["uuid"]: item["meta"]["sliceName"]
            for item in dashboard["position"].values()
            if isinstance(item, dict) and item.get("type") == "CHART"
        }
        assert names == {uuid: charts[uuid]["slice_name"] for uuid in placed}, slug


def test_virtual_datasets_select_every_column_they_declare(assets):
    for path, dataset in of_kind(assets, "datasets").items():
        if dataset["sql"] is None:
            continue
        # The outer select list: everything before the first line that starts with FROM.
        select_list = re.split(r"^\s*FROM\b", dataset["sql"], flags=re.MULTILINE)[0]
        for column in dataset["columns"]:
            assert column["column_name"] in select_list, (path, column["column_name"])


def test_time_series_charts_filter_on_their_dataset_time_column(assets):
    # A time filter on the indexed time column keeps the health charts' queries to the hours shown.
    datasets = {c["uuid"]: c for c in of_kind(assets, "datasets").values()}
    for path, chart in of_kind(assets, "charts").items():
        params = chart["params"]
        if not params["viz_type"].startswith("echarts_timeseries") or params.get("x_axis") in (
            None,
            "email",
        ):
            continue
        time_column = datasets[chart["dataset_uuid"]]["main_dttm_col"]
        assert params["x_axis"] == time_column, path
        assert [f["subject"] for f in params["adhoc_filters"]] == [time_column], path
        (query,) = json.loads(chart["query_context"])["queries"]
        assert [f["col"] for f in query["filters"]] == [time_column], path


def test_charts_use_only_their_dataset_columns_and_metrics(assets):
    datasets = {c["uuid"]: c for c in of_kind(assets, "datasets").values()}
    for path, chart in of_kind(assets, "charts").items():
        dataset = datasets[chart["dataset_uuid"]]
        columns = {c["column_name"] for c in dataset["columns"]}
        metrics = {m["metric_name"] for m in dataset["metrics"]}
        params = chart["params"]
        used_columns = set(params.get("groupby", [])) | set(params.get("all_columns", []))
        used_columns |= {params[key] for key in ("x_axis",) if key in params}
        used_metrics = set(params.get("metrics", [])) | (
            {params["metric"]} if "metric" in params else set()
        )
        query = json.loads(chart["query_context"])["queries"][0]

        assert used_columns <= columns, path
        assert used_metrics <= metrics, path
        assert set(query["metrics"] or []) <= metrics, path
        assert {
            c if isinstance(c, str) else c["sqlExpression"] for c in query["columns"]
        } <= columns, path


def test_the_database_file_holds_no_password(assets):
    (database,) = of_kind(assets, "databases").values()
    assert ":" + import_assets.MASKED_PASSWORD + "@" in database["sqlalchemy_uri"]


def test_the_import_takes_address_and_password_from_the_dsn():
    contents = import_assets.bundle(import_assets.ASSETS)

    updated, passwords = import_assets.with_database_from(
        contents, "postgresql://reader:s%40cret@db.internal:6543/serving"
    )

    database = yaml.safe_load(updated[import_assets.DATABASE_FILE])
    assert (
        database["sqlalchemy_uri"]
        == "postgresql+psycopg2://reader:XXXXXXXXXX@db.internal:6543/serving"
    )
    assert passwords == {import_assets.DATABASE_FILE: "s@cret"}
    assert "s@cret" not in "".join(updated.values())
