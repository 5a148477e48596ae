"""Helpers the platform's DAGs share: how the batch job is run, and the quality checks.

Airflow puts the plugins folder on `sys.path`, so DAG files import this package as
`platform_airflow`. The repository layout (plugins/ beside dags/, sql/ and spark_jobs/) is
what locates the SQL files and, for the local runner, the Spark job.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
