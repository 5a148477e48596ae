"""Offsets and per-batch hour counts of the speed layer, the gate's run figures and failures, late
hours."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V006__hour_publication.sql")
