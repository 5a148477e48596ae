"""The Spark session every job starts from: UTC everywhere, and the Kafka connector jars that
`make up` fetched, unless the cluster already provides them (Dataproc passes them with the job).

With STORAGE_EMULATOR_HOST set (the tests' Cloud Storage emulator), gs:// paths go to the
emulator through the Cloud Storage connector jar of `gcs_jars_dir()`, unauthenticated. On
Dataproc the variable is unset and the image's own connector talks to Cloud Storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from common import settings


def local_connector_jars(jars_dir: Path | None = None) -> list[str]:
    folder = jars_dir or settings.spark_jars_dir()
    return sorted(str(jar) for jar in folder.glob("*.jar")) if folder.is_dir() else []


def jvm_of(spark: SparkSession) -> Any:
    """The session's JVM gateway (Hadoop's FileSystem, commons-io): there while the session runs."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        raise RuntimeError("the Spark session has no JVM: it was stopped")
    return jvm


def build_session(
    app_name: str, master: str | None = None, extra_conf: dict[str, str] | None = None
) -> SparkSession:
    """A session for one job. `master` stays unset under spark-submit, which decides it."""
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    conf = {
        # Windows, hour partitions and every timestamp are UTC, whatever the machine's zone.
        "spark.sql.session.timeZone": "UTC",
        # Rewriting one micro-batch's or one hour's partitions must leave the others alone.
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # Micro-batches are small; the default of 200 shuffle partitions only adds tasks.
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.showConsoleProgress": "false",
        # An hour holds one folder per micro-batch; listing them on the driver beats a Spark job.
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
    }
    jars = local_connector_jars()
    emulator = settings.storage_emulator_host()
    if emulator:
        conf.update(emulated_cloud_storage(emulator))
        jars += local_connector_jars(settings.gcs_jars_dir())
    if jars:
        conf["spark.jars"] = ",".join(jars)
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def emulated_cloud_storage(emulator: str) -> dict[str, str]:
    """The Cloud Storage connector's settings for an emulator at `emulator` (http://host:port)."""
    return {
        "spark.hadoop.fs.gs.impl": "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.gs.impl": (
            "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFS"
        ),
        "spark.hadoop.fs.gs.storage.root.url": emulator,
        "spark.hadoop.fs.gs.auth.type": "UNAUTHENTICATED",
        "spark.hadoop.fs.gs.project.id": "emulated",
        # The emulator has no objects.move (HTTP 400): the connector then renames by copy and
        # delete, its way before move existed. Every other setting is the connector's default.
        "spark.hadoop.fs.gs.operation.move.enable": "false",
    }
