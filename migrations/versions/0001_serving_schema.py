"""The serving schema: the tables of docs/contract.md §2, §5, §7."""

from migrations.sql_revision import sql_revision

revision, down_revision, upgrade, downgrade = sql_revision("V001__serving_schema.sql")
