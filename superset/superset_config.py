"""Superset's configuration for the local setup, read through SUPERSET_CONFIG_PATH (set by
superset.sh).

State (the SQLite metadata database) lives under the project's state folder; the secret key that
encrypts the stored database password comes from the environment (superset.sh generates one
per state folder when SUPERSET_SECRET_KEY is not set).
"""

import os
from pathlib import Path

STATE_DIR = Path(
    os.environ.get("SUPERSET_HOME") or Path(__file__).resolve().parents[1] / ".state" / "superset"
)

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = f"sqlite:///{STATE_DIR / 'superset.db'}"
