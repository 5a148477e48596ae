"""The laptop's local stack: a single-node Kafka broker and a PostgreSQL server, started and
stopped by `python -m localstack up|down|status` (what `make up` / `make down` run).

It starts what the defaults of `common.settings` point at, or only checks the servers given
through KAFKA_BOOTSTRAP_SERVERS / PG_DSN. Everything it keeps lives under the state directory.
Nothing here is shipped to Google Cloud: the schema comes from `migrations`, the jars and the
test helpers from `devtools`.
"""
