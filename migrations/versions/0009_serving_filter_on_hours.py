"""Serving views: a chart's time filter applies to the served hours, not to every batch row."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V009__serving_filter_on_hours.sql")
