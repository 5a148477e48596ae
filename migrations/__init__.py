"""Alembic migrations of the serving database; the SQL itself lives in `sql/migrations/*.sql`."""
