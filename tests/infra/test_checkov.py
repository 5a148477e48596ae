"""Checkov on terraform/: no failed check, no parsing error, and every skip is inline with a reason.

Checkov runs from its own virtualenv (`make checkov`, pinned by terraform/checkov-requirements.txt)
because its dependencies conflict with Airflow's; CHECKOV names another binary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.terraform import TERRAFORM_DIR

CHECKOV = os.environ.get(
    "CHECKOV", str(REPO_ROOT / ".state" / "tools" / "checkov" / "bin" / "checkov")
)
INLINE_SKIP = re.compile(r"#\s*checkov:skip=(?P<check>[A-Z0-9_]+)(?::(?P<reason>.*))?")


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    if not os.access(CHECKOV, os.X_OK):
        pytest.fail(f"Checkov is not installed at {CHECKOV}: run `make checkov` (make test does)")
    result = subprocess.run(
        [CHECKOV, "--directory", str(TERRAFORM_DIR), "--framework", "terraform", "--output", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.stdout, f"Checkov printed nothing: {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    # One framework gives one report; Checkov prints a list when it ran several.
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_no_failed_check(checkov_report):
    summary = checkov_report["summary"]
    failed = [
        f"{check['check_id']} {check['resource']} "
        f"({check['file_path']}:{check['file_line_range']}): {check['check_name']}"
        for check in checkov_report["results"].get("failed_checks", [])
    ]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 50, "Checkov checked suspiciously little"
    assert failed == [], "\n".join(failed)


def test_every_skipped_check_is_inline_with_a_reason(checkov_report):
    skips = [
        INLINE_SKIP.search(line)
        for path in TERRAFORM_DIR.rglob("*.tf")
        for line in path.read_text().splitlines()
    ]
    skips = [skip for skip in skips if skip]
    assert all(skip["reason"] and len(skip["reason"].strip()) > 20 for skip in skips), (
        "a skip lacks its reason"
    )
    skipped = {check["check_id"] for check in checkov_report["results"]["skipped_checks"]}
    assert skipped == {skip["check"] for skip in skips}, "skipped checks and inline skips differ"
