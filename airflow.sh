#!/usr/bin/env bash
# The Airflow CLI against the local setup, as in Airflow's docker-compose guide:
#
#   ./airflow.sh dags test batch_hourly 2026-11-27T10:00:00+00:00   # runs the hour 09:00-10:00
#   ./airflow.sh backfill create --dag-id batch_hourly --from-date ... --to-date ...
#   ./airflow.sh standalone                                           # UI on http://localhost:8080
#
# Airflow keeps its home (SQLite metadata database, logs, generated config) under
# .state/airflow, reads this repository's dags/ and plugins/, and reaches PostgreSQL through
# connection `platform_postgres`, made from PG_DSN (the same variable every entry point reads,
# default: the server `make up` starts). Variables already set in the environment win.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$REPO/.venv"

if [[ ! -x "$VENV/bin/airflow" ]]; then
    echo "airflow.sh: $VENV has no airflow; creating the venv first (make venv)" >&2
    make --no-print-directory -C "$REPO" venv >&2
fi

# The venv's bin first: `spark-submit` must be the pip package's, the one the jobs are tested with.
export PATH="$VENV/bin:$PATH"
# The local Spark driver runs spark_jobs/batch.py as a file and imports `common` and `spark_jobs`.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

STATE_DIR="${PLATFORM_STATE_DIR:-$REPO/.state}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$STATE_DIR/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$REPO/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$REPO/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
# Every time in the platform is UTC; the UI shows it too.
export AIRFLOW__CORE__DEFAULT_TIMEZONE="${AIRFLOW__CORE__DEFAULT_TIMEZONE:-utc}"
# The LocalExecutor of `standalone` keeps this many worker processes (default 32): a laptop needs few.
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
mkdir -p "$AIRFLOW_HOME"

# PG_DSN is a libpq URI (postgresql://user:password@host:port/db); Airflow reads the same URI as a
# connection of type postgres. Its default lives in common/settings.py, so it is asked for, not copied.
if [[ -z "${AIRFLOW_CONN_PLATFORM_POSTGRES:-}" ]]; then
    PG_DSN="${PG_DSN:-$("$VENV/bin/python" -c 'from common import settings; print(settings.pg_dsn())')}"
    if [[ "$PG_DSN" != postgres://* && "$PG_DSN" != postgresql://* ]]; then
        echo "airflow.sh: PG_DSN must be a URI like postgresql://user:password@host:5432/db" \
             "(or set AIRFLOW_CONN_PLATFORM_POSTGRES yourself)" >&2
        exit 2
    fi
    export AIRFLOW_CONN_PLATFORM_POSTGRES="$PG_DSN"
fi
# Local Spark in one thread: the hourly batch is small and the machine is shared.
export AIRFLOW_CONN_SPARK_LOCAL="${AIRFLOW_CONN_SPARK_LOCAL:-spark://local}"

# Migrate the metadata database once per Airflow version (idempotent, a few seconds), so every
# command, `dags test` included, works on a fresh checkout.
AIRFLOW_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))')"
MIGRATED_MARKER="$AIRFLOW_HOME/.migrated-$AIRFLOW_VERSION"
if [[ ! -f "$MIGRATED_MARKER" ]]; then
    echo "airflow.sh: migrating the Airflow metadata database in $AIRFLOW_HOME" >&2
    "$VENV/bin/airflow" db migrate >&2
    touch "$MIGRATED_MARKER"
fi

# `backfill` finds DAGs in the metadata database, where only a DAG processor (as in `standalone`)
# puts them: serialize the current files first, so a backfill works on a fresh home and never
# runs an outdated version of the DAG.
if [[ "${1:-}" == "backfill" ]]; then
    "$VENV/bin/airflow" dags reserialize >&2
fi

exec "$VENV/bin/airflow" "$@"
