"""Pipeline health: the speed layer's micro-batches, their Kafka lag and quarantine, hour states."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V007__pipeline_health.sql")
