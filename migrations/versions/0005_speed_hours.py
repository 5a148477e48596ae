"""The speed layer's count per event hour, and the hours with speed windows that the views read."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V005__speed_hours.sql")
