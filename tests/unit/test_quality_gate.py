"""Loading the quality gate's checks from the repository and from the code bundle Dataproc runs."""

from __future__ import annotations

import zipfile

import pytest

from spark_jobs import quality_gate
from spark_jobs.quality_gate import CheckOutcome, QualityGateFailed, load_checks


def test_the_repository_checks_load_in_name_order():
    names = [check.name for check in load_checks()]
    assert names == sorted(names)
    assert "raw_rows_are_distinct_offsets" in names


def test_inside_the_code_bundle_the_checks_are_read_from_the_zip(tmp_path, monkeypatch):
    bundle = tmp_path / "platform.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("sql/quality/checks/b_second.sql", "SELECT 2")
        archive.writestr("sql/quality/checks/a_first.sql", "SELECT 1")
        archive.writestr("sql/quality/speed_drift.sql", "SELECT 3")
    monkeypatch.setattr(quality_gate, "repository_root", lambda: bundle)

    assert [(check.name, check.sql) for check in load_checks()] == [
        ("a_first", "SELECT 1"),
        ("b_second", "SELECT 2"),
    ]


def test_an_empty_checks_folder_is_an_error_not_a_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no quality check files"):
        load_checks(tmp_path)


def test_a_failed_gate_names_each_failed_check_and_its_values():
    failed = CheckOutcome("raw_rows_are_distinct_offsets", [{"raw_rows": 8, "distinct_offsets": 7}])

    message = str(QualityGateFailed("2026-11-27T10:00:00Z", [failed], total=6))

    assert message.startswith(
        "1 of 6 quality checks failed for hour 2026-11-27T10:00:00Z; not published:"
    )
    assert (
        "quality check raw_rows_are_distinct_offsets failed: raw_rows=8, distinct_offsets=7"
        in message
    )
