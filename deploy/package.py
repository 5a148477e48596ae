"""Builds what Dataproc runs into build/gcp/code/, the folder Terraform uploads to
gs://BUCKET/code/ (storage.tf): `python -m deploy.package` (or `make package`).

    platform.zip               the packages the jobs import (common, spark_jobs), what the
                               migration job needs (migrations, sql), for --py-files, and the
                               simulator, to send traffic from a node inside the VPC; none of
                               the laptop's tooling (localstack, devtools)
    spark_jobs/batch.py        main file of the hourly batch job (the DAG's code_uri layout)
    spark_jobs/streaming.py    main file of the long-running streaming job
    spark_jobs/lifecycle.py    main file of the daily data lifecycle job (DAG data_lifecycle)
    deploy/migrate_job.py      main file of the job that migrates Cloud SQL
    jars/*.jar                 Spark's Kafka connector and its dependencies (Maven Central)

The zip is byte-for-byte reproducible (sorted entries, fixed timestamps): an unchanged tree gives
the same MD5, so `terraform apply` uploads only what changed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

from common.settings import REPO_ROOT

BUILD_DIR = REPO_ROOT / "build" / "gcp" / "code"
BUNDLE_NAME = "platform.zip"
BUNDLED_PACKAGES = ("common", "spark_jobs", "migrations", "simulator")
BUNDLED_DATA = ("sql",)
MAIN_FILES = (
    "spark_jobs/batch.py",
    "spark_jobs/streaming.py",
    "spark_jobs/lifecycle.py",
    "deploy/migrate_job.py",
)
JARS_FOLDER = "jars"
# zip's earliest representable time; any fixed value makes the archive reproducible.
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def bundle_members(repo: Path = REPO_ROOT) -> list[Path]:
    """Files of the bundle, relative to `repo`, in a stable order; no byte-code, no caches."""
    members = []
    for folder in (*BUNDLED_PACKAGES, *BUNDLED_DATA):
        for path in (repo / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                members.append(path.relative_to(repo))
    return sorted(members, key=lambda path: path.as_posix())


def write_bundle(target: Path, repo: Path = REPO_ROOT) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for member in bundle_members(repo):
            info = zipfile.ZipInfo(member.as_posix(), date_time=FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, (repo / member).read_bytes())
    return target


def copy_main_files(target_dir: Path, repo: Path = REPO_ROOT) -> list[Path]:
    copied = []
    for relative in MAIN_FILES:
        destination = target_dir / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / relative, destination)
        copied.append(destination)
    return copied


def copy_connector_jars(target_dir: Path, jars: list[Path]) -> list[Path]:
    folder = target_dir / JARS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return [Path(shutil.copy2(jar, folder / jar.name)) for jar in jars]


def spark_kafka_connector_jars() -> list[Path]:
    """The connector jars local Spark uses (fetched by Maven once): the same versions on
    Dataproc."""
    from devtools import maven

    return maven.ensure_jars(maven.spark_kafka_jars())


def build(target_dir: Path = BUILD_DIR, jars: list[Path] | None = None) -> list[Path]:
    """Everything under `target_dir`, rebuilt from scratch; the files written."""
    shutil.rmtree(target_dir, ignore_errors=True)
    target_dir.mkdir(parents=True)
    bundle = write_bundle(target_dir / BUNDLE_NAME)
    mains = copy_main_files(target_dir)
    copied_jars = copy_connector_jars(
        target_dir, spark_kafka_connector_jars() if jars is None else jars
    )
    return [bundle, *mains, *copied_jars]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.package",
        description="Build the code Terraform uploads for Dataproc.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=BUILD_DIR,
        help=f"target folder (default: {BUILD_DIR.relative_to(REPO_ROOT)})",
    )
    args = parser.parse_args(argv)
    files = build(args.out)
    print(f"package: {len(files)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
