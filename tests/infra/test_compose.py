"""docker-compose.airflow.yml: valid Compose, the services of Airflow 3 and its metadata
database, this repository's dags/ and plugins/ mounted, pinned images, the Airflow image built
with the versions pyproject.toml pins, and the environment each service gets, resolved by
Compose's own loader (compose-go, built by `make go-tools` as `composeenv`) with the env file
Terraform writes. `docker compose config` runs too where it exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.infra.terraform import console_value, inline, terraform_binary

COMPOSE_FILE = REPO_ROOT / "docker-compose.airflow.yml"
DOCKERFILE = REPO_ROOT / "docker" / "airflow" / "Dockerfile"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
METADATA_SERVICE = "airflow-metadata"
PINNED_IMAGE = re.compile(r"^[\w./-]+:\d+(\.\d+)+[\w.-]*$")
COMPOSEENV = REPO_ROOT / ".state" / "tools" / "go" / "bin" / "composeenv"
INSTALL_SECRETS = {
    "AIRFLOW_JWT_SECRET": "jwt-of-this-install",
    "AIRFLOW_METADATA_PASSWORD": "metadata-of-this-install",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def pinned_requirements() -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return dict(
        re.match(r"([\w-]+)(?:\[\w+\])?==([\w.]+)", dep).groups()
        for dep in pyproject["project"]["dependencies"]
        if "==" in dep
    )


def test_compose_names_airflow_3_and_its_metadata_database(compose):
    services = compose["services"]
    assert set(services) == AIRFLOW_SERVICES | {METADATA_SERVICE}
    for name in AIRFLOW_SERVICES:
        environment = services[name]["environment"]
        assert environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(
            f"@{METADATA_SERVICE}/airflow"
        )
        assert services[name]["depends_on"][METADATA_SERVICE]["condition"] == "service_healthy"
    assert "healthcheck" in services[METADATA_SERVICE]


def test_every_dependency_and_volume_is_declared(compose):
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert set(service.get("depends_on", {})) <= set(services), (
            f"{name} depends on an unknown service"
        )
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in compose.get("volumes", {}), (
                    f"named volume {source} is not declared"
                )


def test_the_project_dags_plugins_and_sql_are_mounted(compose):
    for name in AIRFLOW_SERVICES:
        mounts = {
            volume.split(":")[0]: volume.split(":")[1]
            for volume in compose["services"][name]["volumes"]
        }
        assert (
            mounts["./dags"] == "/opt/airflow/dags"
            and mounts["./plugins"] == "/opt/airflow/plugins"
        )
        # platform_airflow finds sql/ beside plugins/ (REPO_ROOT = the plugins folder's parent).
        assert mounts["./sql"] == "/opt/airflow/sql"
        assert (REPO_ROOT / "dags").is_dir() and (
            REPO_ROOT / "plugins" / "platform_airflow"
        ).is_dir()


def test_the_configuration_comes_from_local_defaults_then_an_optional_env_file(compose):
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        defaults, deployment = service["env_file"]
        assert (
            defaults == {"path": "docker/airflow/local.env"}
            and (REPO_ROOT / defaults["path"]).is_file()
        )
        assert (
            deployment["path"] == "${AIRFLOW_ENV_FILE:-.env.airflow}"
            and deployment["required"] is False
        )


def test_no_secret_of_the_compose_file_has_a_fixed_value(compose):
    """A default secret is a secret every install shares: each must come from the installer."""
    secret_name = re.compile(r"SECRET|PASSWORD|FERNET|_KEY$")
    for name, service in compose["services"].items():
        for variable, value in service.get("environment", {}).items():
            if secret_name.search(variable):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), (
                    f"{name}: {variable} has a fixed value"
                )
            for password in re.findall(r"://\w+:([^@]+)@", str(value)):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), (
                    f"{name}: {variable} holds a fixed password"
                )


def test_images_are_pinned_and_airflow_is_the_locked_version(compose):
    requirements = pinned_requirements()
    for name, service in compose["services"].items():
        assert PINNED_IMAGE.match(service["image"]), (
            f"{name} image {service['image']} is not pinned"
        )
    dockerfile = DOCKERFILE.read_text()
    base = re.search(r"^FROM apache/airflow:([\d.]+)-python3\.11$", dockerfile, re.M)
    assert base and base.group(1) == requirements["apache-airflow"]
    installed = dict(re.findall(r'"([\w-]+)(?:\[\w+\])?==([\w.]+)"', dockerfile))
    for package, version in installed.items():
        assert requirements.get(package) == version, (
            f"{package}=={version} in the Dockerfile, {requirements.get(package)} in pyproject.toml"
        )


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def resolved_environment(**interpolation: str) -> subprocess.CompletedProcess:
    """Every service's environment as Compose resolves it, with only `interpolation` as the
    shell's."""
    if not COMPOSEENV.exists():
        pytest.fail(f"{COMPOSEENV} is missing: run `make go-tools` (make test does)")
    args = [str(COMPOSEENV), "-f", str(COMPOSE_FILE)]
    for name, value in interpolation.items():
        args += ["--env", f"{name}={value}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def environments(**interpolation: str) -> dict[str, dict[str, str]]:
    result = resolved_environment(**interpolation)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def terraform_env_file(terraform, sample_values, tmp_path_factory) -> Path:
    """The env file of `terraform output -raw airflow_env`, evaluated by Terraform."""
    if terraform_binary() is None:
        pytest.skip("terraform is not on PATH")
    value = terraform.outputs["airflow_env"]["value"]
    path = tmp_path_factory.mktemp("gcp") / ".env.airflow"
    path.write_text(
        console_value(
            inline(terraform, value[2:-1] if value.startswith("${") else value, sample_values)
        )
    )
    return path


def test_without_an_env_file_airflow_targets_the_local_services():
    for name, environment in environments(
        **INSTALL_SECRETS, AIRFLOW_ENV_FILE="/nonexistent/.env"
    ).items():
        if name in AIRFLOW_SERVICES:
            assert environment["BATCH_RUNNER"] == "local", name
            assert (
                "host.docker.internal:5432/platform"
                in environment["AIRFLOW_CONN_PLATFORM_POSTGRES"]
            )


def test_the_env_file_terraform_writes_yields_the_dataproc_runner_and_its_connections(
    terraform_env_file,
):
    """Compose gives `environment:` precedence over env files: nothing there may shadow them."""
    resolved = environments(**INSTALL_SECRETS, AIRFLOW_ENV_FILE=str(terraform_env_file))
    written = dict(
        line.split("=", 1) for line in terraform_env_file.read_text().splitlines() if line
    )
    assert written["BATCH_RUNNER"] == "dataproc"
    for name in AIRFLOW_SERVICES:
        for variable, value in written.items():
            assert resolved[name].get(variable) == value, (
                f"{name}: {variable} is not the env file's"
            )
        assert "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT" in resolved[name]
        assert (
            resolved[name]["AIRFLOW__API_AUTH__JWT_SECRET"] == INSTALL_SECRETS["AIRFLOW_JWT_SECRET"]
        )


def test_compose_refuses_to_start_without_the_install_secrets():
    result = resolved_environment(AIRFLOW_ENV_FILE="/nonexistent/.env")
    assert result.returncode != 0
    assert "AIRFLOW_JWT_SECRET" in result.stderr or "AIRFLOW_METADATA_PASSWORD" in result.stderr
