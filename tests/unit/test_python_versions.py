"""The jobs run on Python 3.11 here and 3.12 on Dataproc image 3.0: the code Dataproc runs must
parse as 3.11 (nothing newer) and import nothing that 3.12 removed (PEP 594, PEP 632)."""

from __future__ import annotations

import ast

import pytest

from deploy.package import BUNDLED_PACKAGES, MAIN_FILES
from tests.conftest import REPO_ROOT

REMOVED_IN_3_12 = {"distutils", "imp", "asynchat", "asyncore", "smtpd"}


def shipped_sources() -> list:
    files = [REPO_ROOT / main for main in MAIN_FILES]
    for package in BUNDLED_PACKAGES:
        files += sorted((REPO_ROOT / package).rglob("*.py"))
    return files


@pytest.mark.parametrize(
    "path", shipped_sources(), ids=lambda path: str(path.relative_to(REPO_ROOT))
)
def test_shipped_code_parses_as_3_11_and_imports_nothing_3_12_removed(path):
    tree = ast.parse(path.read_text(), filename=str(path), feature_version=(3, 11))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & REMOVED_IN_3_12, (
        f"{path.name} imports {imported & REMOVED_IN_3_12}, gone in Python 3.12"
    )
