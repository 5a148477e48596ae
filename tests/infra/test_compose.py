"""docker-compose.airflow.yml: valid Compose, the services of Airflow 3 and its metadata
database, this repository's dags/ and plugins/ mounted, pinned images, and the Airflow image
built with the versions pyproject.toml pins. `docker compose config` runs too where it exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from tests.conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.airflow.yml"
DOCKERFILE = REPO_ROOT / "docker" / "airflow" / "Dockerfile"
AIRFLOW_SERVICES = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
METADATA_SERVICE = "airflow-metadata"
PINNED_IMAGE = re.compile(r"^[\w./-]+:\d+(\.\d+)+[\w.-]*$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def pinned_requirements() -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return dict(re.match(r"([\w-]+)(?:\[\w+\])?==([\w.]+)", dep).groups() for dep in pyproject["project"]["dependencies"] if "==" in dep)


def test_compose_names_airflow_3_and_its_metadata_database(compose):
    services = compose["services"]
    assert set(services) == AIRFLOW_SERVICES | {METADATA_SERVICE}
    for name in AIRFLOW_SERVICES:
        environment = services[name]["environment"]
        assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f"@{METADATA_SERVICE}/airflow")
        assert services[name]["depends_on"][METADATA_SERVICE]["condition"] == "service_healthy"
    assert "healthcheck" in services[METADATA_SERVICE]


def test_every_dependency_and_volume_is_declared(compose):
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert set(service.get("depends_on", {})) <= set(services), f"{name} depends on an unknown service"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in compose.get("volumes", {}), f"named volume {source} is not declared"


def test_the_project_dags_plugins_and_sql_are_mounted(compose):
    for name in AIRFLOW_SERVICES:
        mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in compose["services"][name]["volumes"]}
        assert mounts["./dags"] == "/opt/airflow/dags" and mounts["./plugins"] == "/opt/airflow/plugins"
        # platform_airflow finds sql/ beside plugins/ (REPO_ROOT = the plugins folder's parent).
        assert mounts["./sql"] == "/opt/airflow/sql"
        assert (REPO_ROOT / "dags").is_dir() and (REPO_ROOT / "plugins" / "platform_airflow").is_dir()


def test_the_configuration_comes_from_an_optional_env_file_with_local_defaults(compose):
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        (env_file,) = service["env_file"]
        assert env_file["path"] == "${AIRFLOW_ENV_FILE:-.env.airflow}" and env_file["required"] is False
        assert service["environment"]["BATCH_RUNNER"] == "${BATCH_RUNNER:-local}"
        assert "host.docker.internal:5432/platform" in service["environment"]["AIRFLOW_CONN_PLATFORM_POSTGRES"]


def test_images_are_pinned_and_airflow_is_the_locked_version(compose):
    requirements = pinned_requirements()
    for name, service in compose["services"].items():
        assert PINNED_IMAGE.match(service["image"]), f"{name} image {service['image']} is not pinned"
    dockerfile = DOCKERFILE.read_text()
    base = re.search(r"^FROM apache/airflow:([\d.]+)-python3\.11$", dockerfile, re.M)
    assert base and base.group(1) == requirements["apache-airflow"]
    installed = dict(re.findall(r'"([\w-]+)(?:\[\w+\])?==([\w.]+)"', dockerfile))
    for package, version in installed.items():
        assert requirements.get(package) == version, f"{package}=={version} in the Dockerfile, {requirements.get(package)} in pyproject.toml"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
