"""The serving layer's views: batch values for closed hours, speed-layer sums for the others."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V003__serving_views.sql")
