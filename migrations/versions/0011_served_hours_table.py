"""The hours the batch layer serves, kept in a table by triggers (the year's dashboards)."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V011__served_hours_table.sql")
