#!/usr/bin/env bash
# The Superset CLI against the local setup, like ./airflow.sh for Airflow:
#
#   ./superset.sh setup                          # metadata database, admin user, roles, superset/assets
#   ./superset.sh run -p 8088 --with-threads     # the UI on http://localhost:8088
#
# Superset runs from its own venv (.state/superset-venv, from superset/requirements.txt: its pins
# conflict with Airflow's), keeps its SQLite metadata database under .state/superset, and reads
# superset/superset_config.py. The dashboards read the serving database of PG_DSN (default: the
# server `make up` starts). The admin user comes from SUPERSET_ADMIN_USERNAME /
# SUPERSET_ADMIN_PASSWORD (default admin / admin: a local setup; set your own anywhere else).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${PLATFORM_STATE_DIR:-$REPO/.state}"
# Where `make superset-venv` puts it.
VENV="$REPO/.state/superset-venv"

if [[ ! -f "$VENV/.synced" ]]; then
    echo "superset.sh: $VENV is missing; creating it first (make superset-venv)" >&2
    make --no-print-directory -C "$REPO" superset-venv >&2
fi

export SUPERSET_HOME="${SUPERSET_HOME:-$STATE_DIR/superset}"
export SUPERSET_CONFIG_PATH="${SUPERSET_CONFIG_PATH:-$REPO/superset/superset_config.py}"
export FLASK_APP=superset
mkdir -p "$SUPERSET_HOME"

# The key that encrypts the stored database password: one per state folder unless given.
if [[ -z "${SUPERSET_SECRET_KEY:-}" ]]; then
    KEY_FILE="$SUPERSET_HOME/secret_key"
    if [[ ! -s "$KEY_FILE" ]]; then
        (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(42))' > "$KEY_FILE")
    fi
    SUPERSET_SECRET_KEY="$(cat "$KEY_FILE")"
fi
export SUPERSET_SECRET_KEY

# PG_DSN's default lives in common/settings.py, so it is asked for, not copied.
if [[ -z "${PG_DSN:-}" && -x "$REPO/.venv/bin/python" ]]; then
    PG_DSN="$(cd "$REPO" && .venv/bin/python -c 'from common import settings; print(settings.pg_dsn())')"
fi
export PG_DSN="${PG_DSN:-postgresql://platform:platform@127.0.0.1:5432/platform}"

export SUPERSET_ADMIN_USERNAME="${SUPERSET_ADMIN_USERNAME:-admin}"
SUPERSET_ADMIN_PASSWORD="${SUPERSET_ADMIN_PASSWORD:-admin}"

setup() {
    "$VENV/bin/superset" db upgrade
    if ! "$VENV/bin/superset" fab list-users 2>/dev/null | grep -q "username:$SUPERSET_ADMIN_USERNAME "; then
        "$VENV/bin/superset" fab create-admin --username "$SUPERSET_ADMIN_USERNAME" --password "$SUPERSET_ADMIN_PASSWORD" \
            --firstname Platform --lastname Admin --email "${SUPERSET_ADMIN_EMAIL:-admin@localhost}"
    fi
    "$VENV/bin/superset" init
    "$VENV/bin/python" "$REPO/superset/import_assets.py"
}

if [[ "${1:-}" == "setup" ]]; then
    setup
else
    exec "$VENV/bin/superset" "$@"
fi
