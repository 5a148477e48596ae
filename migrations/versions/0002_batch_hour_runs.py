"""What each batch run of an hour read, for the quality checks."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V002__batch_hour_runs.sql")
