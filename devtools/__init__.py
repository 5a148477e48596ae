"""The developer's tooling, kept out of what Google Cloud runs (`deploy.package` bundles none of
it): jars from Maven Central (`maven`), scratch databases for tests and benchmarks
(`scratch_db`), the Cloud Storage emulator of the gs:// tests (`gcs_emulator`) and the demo
(`python -m devtools.demo`).
"""
