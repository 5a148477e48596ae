"""What a first `terraform apply` in an empty project, a later one and `terraform destroy` need,
checked offline: every expression evaluated by Terraform itself (`terraform console`, which needs
no provider), every resource created after its API is enabled, the jobs started only after the
schema migrated, a new cluster given a new streaming job, and destroy not stopped by Cloud SQL.
Each rule here failed on the configuration before it was fixed."""

from __future__ import annotations

import json
import re

import pytest

from tests.infra.terraform import (
    all_strings,
    block,
    console_value,
    inline,
    interpolations,
    terraform_binary,
)

needs_terraform = pytest.mark.skipif(
    terraform_binary() is None,
    reason="terraform is not on PATH (README: Terraform >= 1.11 deploys the platform)",
)

# Which API a resource type needs. Service Usage and Cloud Resource Manager are enabled by hand
# before the first apply (README): Terraform needs them to enable the others.
API_OF_TYPE = {
    "google_compute_": "compute.googleapis.com",
    "google_dataproc_": "dataproc.googleapis.com",
    "google_sql_": "sqladmin.googleapis.com",
    "google_secret_manager_": "secretmanager.googleapis.com",
    "google_service_account": "iam.googleapis.com",
    "google_storage_": "storage.googleapis.com",
    "google_service_networking_": "servicenetworking.googleapis.com",
    "google_project_iam_": "cloudresourcemanager.googleapis.com",
}
ENABLED_BY_HAND = {"serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com"}
API_SERVICE = ("google_project_service", "required")
# Resources Cloud SQL deletes with the instance or the network, and refuses to delete first.
DELETED_WITH_THEIR_PARENT = {
    "google_sql_user": "ABANDON",
    "google_sql_database": "ABANDON",
    "google_service_networking_connection": "ABANDON",
}
NOT_EVALUATED_KEYS = {"depends_on", "replace_triggered_by"}
EACH = re.compile(r"\beach\.(value|key)\b")
FILESET = re.compile(r'fileset\((?P<path>[^,]+),\s*"(?P<pattern>[^"]*)"\)')


def api_of(resource_type: str) -> str:
    for prefix, api in API_OF_TYPE.items():
        if resource_type.startswith(prefix):
            return api
    raise AssertionError(f"{resource_type}: which API does it need? Add it to API_OF_TYPE")


def test_every_resource_is_created_after_its_api_is_enabled(terraform):
    enabled = set(re.findall(r'"([a-z]+\.googleapis\.com)"', terraform.locals["required_apis"]))
    for kind, name in terraform.resources():
        if not kind.startswith("google_") or (kind, name) == API_SERVICE:
            continue
        api = api_of(kind)
        if api in ENABLED_BY_HAND:
            continue
        assert api in enabled, (
            f"{kind}.{name} needs {api}, which google_project_service.required does not enable"
        )
        assert API_SERVICE in terraform.depends_on_transitively((kind, name)), (
            f"{kind}.{name} may be created before {api} is enabled: "
            "make it depend on google_project_service.required"
        )


def test_every_fileset_is_one_plain_glob(terraform):
    """Terraform's glob knows `*`, `**`, `?` and `[...]` but no `{a,b}` choice spanning folders."""
    calls = [match for expr in expressions_of(terraform) for match in FILESET.finditer(expr)]
    assert calls, "no fileset call found: the pattern is outdated"
    for call in calls:
        assert not set(call["pattern"]) & set("{}[]\\"), (
            f"fileset pattern {call['pattern']!r}: use one plain glob per call"
        )


@needs_terraform
def test_terraform_evaluates_every_expression_of_the_configuration(terraform, sample_values):
    """Every expression, with the example tfvars and sample resource attributes, evaluated by
    `terraform console`: a function call Terraform rejects (a bad glob, a wrong argument type)
    fails here as it would fail `plan`."""
    inlined, for_each_keys = [], {}
    for key, value, body in configuration_items(terraform):
        for expr in top_interpolations(value):
            if EACH.search(expr):
                # each.key / each.value: the first key of the resource's for_each, evaluated too.
                if key not in for_each_keys:
                    keys = console_value(inline(terraform, body["for_each"][2:-1], sample_values))
                    for_each_keys[key] = sorted(keys if isinstance(keys, list) else keys.keys())
                if not for_each_keys[key]:
                    continue  # an empty for_each (e.g. no `make package` yet): nothing to evaluate
                expr = EACH.sub(json.dumps(for_each_keys[key][0]), expr)
            inlined.append((key, inline(terraform, expr, sample_values)))
    assert len(inlined) > 100, "too few expressions found: the walk is outdated"
    try:
        console_value("[" + ", ".join(text for _, text in inlined) + "]")
    except ValueError:
        for key, text in inlined:  # find the one Terraform rejects, and say where it is
            try:
                console_value(text)
            except ValueError as error:
                pytest.fail(f"{key}: {strip_colors(str(error))}")
        raise


@needs_terraform
def test_the_example_tfvars_and_the_defaults_pass_every_validation(terraform, sample_values):
    for name, body in terraform.variables.items():
        for validation in body.get("validation", []):
            condition = inline(terraform, validation["condition"][2:-1], sample_values)
            assert console_value(condition) is True, f"var.{name}: {validation['error_message']}"


def test_terraform_destroy_is_not_stopped_by_what_cloud_sql_deletes_itself(terraform):
    for kind, policy in DELETED_WITH_THEIR_PARENT.items():
        resources = terraform.resources(kind)
        assert resources, f"no {kind}: the rule is outdated"
        for (_, name), body in resources.items():
            assert body.get("deletion_policy") == f'"{policy}"', (
                f"{kind}.{name} needs deletion_policy = {policy!r}"
            )


def test_no_dataproc_job_resource_runs_the_migration(terraform):
    """The provider returns once a job RUNS: a failed migration would count as applied."""
    for (_, name), job in terraform.resources("google_dataproc_job").items():
        main_file = block(job, "pyspark_config")["main_python_file_uri"]
        assert "migrate_job.py" not in main_file, (
            f"google_dataproc_job.{name} runs the migration without waiting for it"
        )


@needs_terraform
def test_the_migration_is_waited_for_and_fails_the_apply_when_it_fails(terraform, sample_values):
    migrate = terraform.resource("terraform_data", "migrate")
    command = block(migrate, "provisioner")["local-exec"]["command"]
    argv = console_value(inline(terraform, command[2:-1], sample_values)).split()
    # `gcloud dataproc jobs submit` waits for the job and exits non-zero when it failed;
    # --async would return at submission, like the provider.
    assert argv[:5] == ["gcloud", "dataproc", "jobs", "submit", "pyspark"] and "--async" not in argv
    assert argv[5].endswith("/deploy/migrate_job.py")
    for (_, name), _job in terraform.resources("google_dataproc_job").items():
        assert ("terraform_data", "migrate") in terraform.depends_on_transitively(
            ("google_dataproc_job", name)
        ), f"google_dataproc_job.{name} may start before the schema is migrated"


def test_a_replaced_cluster_gets_its_streaming_job_again(terraform):
    """Dataproc jobs die with their cluster; Terraform only resubmits a job whose arguments
    change."""
    cluster = "${google_dataproc_cluster.platform}"
    for (_, name), job in terraform.resources("google_dataproc_job").items():
        # The job itself, or a random_id in its id (a new id is a new job).
        triggers = [
            job,
            *[
                terraform.resources()[ref]
                for ref in terraform.references(job)
                if ref[0] == "random_id"
            ],
        ]
        triggers = [body for body in triggers if "lifecycle" in body]
        replaced_with_cluster = [
            body
            for body in triggers
            if cluster in block(body, "lifecycle").get("replace_triggered_by", [])
        ]
        assert replaced_with_cluster, (
            f"google_dataproc_job.{name} is not resubmitted when the cluster is replaced"
        )


def test_the_database_password_never_reaches_the_state(terraform):
    user = terraform.resource("google_sql_user", "platform")
    assert (
        "password" not in user
        and user["password_wo"] == "${ephemeral.random_password.postgres.result}"
    )
    for (_, name), version in terraform.resources("google_secret_manager_secret_version").items():
        assert "secret_data" not in version, (
            f"secret version {name} keeps its data in the state: use secret_data_wo"
        )
        assert "secret_data_wo_version" in version
    assert not terraform.resources("random_password"), (
        "a random_password resource keeps its result in the state"
    )
    required = re.search(
        r">=\s*1\.(\d+)", terraform.files["versions.tf"]["terraform"][0]["required_version"]
    )
    assert required and int(required.group(1)) >= 11, (
        "ephemeral resources and write-only arguments need Terraform 1.11"
    )


def test_terraform_state_and_tfvars_are_never_committed():
    from tests.conftest import REPO_ROOT

    ignored = set((REPO_ROOT / ".gitignore").read_text().split())
    assert {"*.tfstate", "*.tfstate.*", ".terraform/", "terraform/terraform.tfvars"} <= ignored


# --- evaluating the configuration with Terraform -------------------------------------------------


def configuration_items(terraform):
    """(where, value, the resource's body) of every attribute of every block Terraform evaluates."""
    for (kind, name), body in {**terraform.resources(), **terraform.ephemerals()}.items():
        where = f"{kind}.{name}"
        for key, value in body.items():
            if key not in NOT_EVALUATED_KEYS and key not in ("lifecycle", "provisioner"):
                yield where, value, body
        for lifecycle in body.get("lifecycle", []):
            for precondition in lifecycle.get("precondition", []):
                yield where, precondition["condition"], body
        for provisioner in body.get("provisioner", []):
            yield where, provisioner, body
    for name, value in terraform.locals.items():
        yield f"local.{name}", value, {}
    for name, body in terraform.outputs.items():
        yield f"output.{name}", body["value"], {}


def expressions_of(terraform) -> list[str]:
    return [
        expr
        for tree in terraform.files.values()
        for text in all_strings(tree)
        for expr in interpolations(text)
    ]


def top_interpolations(value) -> list[str]:
    """The outermost `${...}` expressions of `value`; nested ones are evaluated with them."""
    found = []
    for text in all_strings(value):
        position = 0
        for expr in interpolations(text):
            start = text.find("${" + expr + "}", position)
            if start >= position:
                found.append(expr)
                position = start + len(expr) + 3
    return found


def strip_colors(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_every_terraform_output_the_readme_names_exists(terraform):
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    named = set(re.findall(r"terraform -chdir=terraform output(?: -raw| -json)? (\w+)", readme))
    assert len(named) >= 5, "the README's output commands are not found: the pattern is outdated"
    assert named <= set(terraform.outputs), (
        f"the README names outputs that do not exist: {named - set(terraform.outputs)}"
    )
