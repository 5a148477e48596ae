"""Data lifecycle: roll up the speed windows of old served hours, and the drift they had."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V008__data_lifecycle.sql")
