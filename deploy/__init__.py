"""What the Google Cloud deployment needs from this repository: the code bundle Terraform uploads
(`python -m deploy.package`), the pinned jar list of the Kafka VM (`python -m deploy.kafka_jars`),
and the Dataproc entry point that migrates Cloud SQL (`deploy/migrate_job.py`)."""
