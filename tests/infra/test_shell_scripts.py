"""Every shell script of the repository passes shellcheck (the Kafka VM's startup script has its
own test beside its run), and the system-packages script refuses a need it does not know."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from common.settings import REPO_ROOT

SCRIPTS = ("scripts/system-packages.sh", "airflow.sh", "superset.sh", ".ci/run")


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck missing: make test installs it"
)
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_passes_shellcheck(script):
    result = subprocess.run(
        ["shellcheck", "--severity=style", str(REPO_ROOT / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_system_packages_names_an_unknown_need_and_installs_nothing():
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/system-packages.sh"), "java", "cobol"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown need 'cobol'" in result.stderr


def run_with_stand_in_apt(tmp_path, need: str, tools: tuple[str, ...]):
    """The script with only `tools` on PATH and an apt-get that records its arguments."""
    calls = tmp_path / "apt-calls"
    stand_in = tmp_path / "apt-get"
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stand_in.chmod(0o755)
    for tool in ("id", *tools):
        found = shutil.which(tool)
        assert found, f"{tool} is on PATH wherever the suite runs"
        (tmp_path / tool).symlink_to(found)
    result = subprocess.run(
        ["/bin/bash", str(REPO_ROOT / "scripts/system-packages.sh"), need],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
    )
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_system_packages_with_the_need_present_runs_no_apt(tmp_path):
    result, apt_calls = run_with_stand_in_apt(tmp_path, "java", tools=("java",))
    assert result.returncode == 0, result.stderr
    assert apt_calls == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the script installs only as root")
def test_system_packages_installs_a_missing_need_with_apt(tmp_path):
    result, apt_calls = run_with_stand_in_apt(tmp_path, "maven", tools=())
    assert result.returncode == 0, result.stderr
    assert apt_calls == ["update -qq", "install -y -qq maven"]
