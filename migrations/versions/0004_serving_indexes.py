"""Time-leading indexes that keep the serving views and dashboards fast with a year of data."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V004__serving_indexes.sql")
