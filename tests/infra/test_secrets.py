"""The jobs' --pg-dsn-secret: the DSN comes from the named Secret Manager version, or from
--pg-dsn when no secret is named. The Secret Manager API is replaced by a stand-in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.secret_manager import resolve_pg_dsn

SECRET = "projects/usage-demo/secrets/usage-postgres-dsn/versions/latest"


class FakeSecretManager:
    def __init__(self, payloads: dict[str, str]):
        self.payloads = payloads
        self.requested: list[str] = []

    def access_secret_version(self, request):
        self.requested.append(request["name"])
        return SimpleNamespace(
            payload=SimpleNamespace(data=self.payloads[request["name"]].encode())
        )


def test_a_named_secret_replaces_the_dsn():
    client = FakeSecretManager(
        {SECRET: "postgresql://platform:pw@10.30.0.3:5432/platform?sslmode=require\n"}
    )
    assert (
        resolve_pg_dsn("", SECRET, client)
        == "postgresql://platform:pw@10.30.0.3:5432/platform?sslmode=require"
    )
    assert client.requested == [SECRET]


@pytest.mark.parametrize("secret", [None, ""])
def test_without_a_secret_the_dsn_is_used_and_secret_manager_is_not_called(secret):
    client = FakeSecretManager({})
    assert (
        resolve_pg_dsn("postgresql://local/platform", secret, client)
        == "postgresql://local/platform"
    )
    assert client.requested == []


def test_a_malformed_secret_name_is_refused_before_any_call():
    client = FakeSecretManager({})
    with pytest.raises(ValueError, match="projects/PROJECT/secrets/NAME"):
        resolve_pg_dsn("", "usage-postgres-dsn", client)
    assert client.requested == []


def test_both_jobs_take_the_secret_from_the_environment(monkeypatch):
    from spark_jobs import batch, streaming

    monkeypatch.setenv("PG_DSN_SECRET", SECRET)
    assert batch.parse_args(["--hour", "2026-11-27T10:00:00Z"]).pg_dsn_secret == SECRET
    assert streaming.parse_args([]).pg_dsn_secret == SECRET
