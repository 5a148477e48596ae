"""An index for the speed layer's freshness (layer_freshness)."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V010__health_freshness_index.sql")
