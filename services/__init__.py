"""Local services of the platform: a single-node Kafka broker, PostgreSQL and the schema.

`python -m services up|down|status|migrate` (what `make up` / `make down` run) starts what the
defaults of `common.settings` point at, or only checks and migrates servers given through
KAFKA_BOOTSTRAP_SERVERS / PG_DSN. Everything it keeps lives under the state directory.
"""
