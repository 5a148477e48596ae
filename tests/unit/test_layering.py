"""What Google Cloud runs imports none of the laptop's tooling: every module of the packages
`deploy.package` bundles, read as source, names no import of `localstack`, `devtools`, `bench` or
`tests`, and no module shadows a module of the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from common.settings import REPO_ROOT
from deploy.package import BUNDLED_PACKAGES, MAIN_FILES

LAPTOP_ONLY = {"localstack", "devtools", "bench", "tests"}
PROJECT_PACKAGES = (*BUNDLED_PACKAGES, "localstack", "devtools", "deploy", "bench", "plugins")


def shipped_sources() -> list[Path]:
    sources = [path for package in BUNDLED_PACKAGES for path in (REPO_ROOT / package).rglob("*.py")]
    return sorted({*sources, *(REPO_ROOT / main for main in MAIN_FILES)})


def imported_top_level_names(source: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif is_import_module_call(node):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def is_import_module_call(node: ast.AST) -> bool:
    """importlib.import_module("pkg.module"), as the migration job does after unpacking."""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "import_module"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
    )


@pytest.mark.parametrize(
    "source", shipped_sources(), ids=lambda path: path.relative_to(REPO_ROOT).as_posix()
)
def test_shipped_code_imports_no_laptop_tooling(source):
    assert not imported_top_level_names(source) & LAPTOP_ONLY


def test_the_check_sees_an_import_of_the_local_stack(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from localstack import kafka_broker\n")
    assert imported_top_level_names(planted) & LAPTOP_ONLY == {"localstack"}


def test_no_module_shadows_the_standard_library():
    shadowing = [
        path.relative_to(REPO_ROOT).as_posix()
        for package in PROJECT_PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if path.stem in sys.stdlib_module_names
    ]
    assert shadowing == []


def test_no_two_modules_share_a_name_for_different_jobs():
    # Benchmarks are named after what they measure (bench/batch.py times spark_jobs/batch.py).
    by_name: dict[str, list[str]] = {}
    for package in (name for name in PROJECT_PACKAGES if name != "bench"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path.stem not in ("__init__", "__main__") and "versions" not in path.parts:
                by_name.setdefault(path.stem, []).append(path.relative_to(REPO_ROOT).as_posix())
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
