"""The serving database's DSN from Secret Manager, so that on Google Cloud no job argument,
job description or log line carries the password.

Jobs take `--pg-dsn-secret projects/P/secrets/S/versions/V` (env PG_DSN_SECRET); when it is
given, the secret's payload (a libpq URI) replaces `--pg-dsn`. The client library is imported
only then: local runs never need it.
"""

from __future__ import annotations

import os

SECRET_VERSION_PREFIX = "projects/"


def pg_dsn_secret_default() -> str | None:
    return os.environ.get("PG_DSN_SECRET") or None


def resolve_pg_dsn(pg_dsn: str, pg_dsn_secret: str | None, client=None) -> str:
    """`pg_dsn`, or the payload of the secret version `pg_dsn_secret` when one is named."""
    if not pg_dsn_secret:
        return pg_dsn
    if not pg_dsn_secret.startswith(SECRET_VERSION_PREFIX) or "/secrets/" not in pg_dsn_secret:
        raise ValueError(
            f"--pg-dsn-secret {pg_dsn_secret!r} is not a secret version name like"
            " projects/PROJECT/secrets/NAME/versions/latest"
        )
    if client is None:
        from google.cloud import secretmanager

        client = secretmanager.SecretManagerServiceClient()
    response = client.access_secret_version(request={"name": pg_dsn_secret})
    return response.payload.data.decode("utf-8").strip()
