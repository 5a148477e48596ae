"""Jars from Maven Central for local Spark: the Kafka connector and the Cloud Storage connector.

Each `maven/*/pom.xml` only lists what to download; `mvn dependency:copy-dependencies` resolves it
with Maven's own dependency mediation and we flatten the result into one folder of jars. A stamp
file beside the jars records what they were fetched from, so a second `up` skips Maven entirely.
The Kafka broker's jars are the VM's (`maven/kafka-vm/`, locked in terraform/kafka/kafka-jars.lock
by `python -m deploy.kafka_jars`), which the VM's startup script installs on the laptop too
(localstack/kafka_broker.py).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import CommandError, exit_status, first_line, require_command
from common.settings import gcs_jars_dir, spark_jars_dir, state_dir

POMS_DIR = Path(__file__).resolve().parent / "maven"
STAMP_NAME = ".fetched-from"
# Named in full, so the result does not depend on whichever plugin version is newest, and Maven
# needs no plugin-prefix lookup.
COPY_DEPENDENCIES = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"


@dataclass(frozen=True)
class JarSet:
    """One folder of jars described by one pom."""

    name: str
    pom: Path
    target: Path
    # File names of jars already on the same classpath; any version of their artifacts is left out.
    excluded_jar_names: frozenset[str] = frozenset()


def spark_kafka_jars() -> JarSet:
    """The connector minus every artifact the pyspark wheel already ships.

    Spark puts its own jars first on the classpath; a second, different version of e.g.
    scala-library or slf4j-api from the connector's pom would at best be dead weight and at worst
    win for some classes and break Spark in ways that are hard to trace.
    """
    return JarSet(
        "Spark Kafka connector",
        POMS_DIR / "spark-kafka" / "pom.xml",
        spark_jars_dir(),
        excluded_jar_names=frozenset(pyspark_jar_names()),
    )


def gcs_connector_jars() -> JarSet:
    """The shaded Cloud Storage connector, for local jobs on gs:// against the tests' emulator."""
    return JarSet("Cloud Storage connector", POMS_DIR / "gcs-connector" / "pom.xml", gcs_jars_dir())


def pyspark_jar_names() -> list[str]:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise CommandError(
            "pyspark is not installed in this Python; run `make venv` and use .venv/bin/python"
        )
    return sorted(jar.name for jar in (Path(spec.origin).parent / "jars").glob("*.jar"))


def ensure_jars(jar_set: JarSet) -> list[Path]:
    """The jars of `jar_set`, fetched with Maven unless the folder already matches the pom."""
    fingerprint = fingerprint_of(jar_set)
    if is_up_to_date(jar_set.target, fingerprint):
        return sorted(jar_set.target.glob("*.jar"))
    mvn = require_command(
        "mvn", "install Maven (Debian: `apt-get install -y maven`) and rerun `make up`"
    )
    print(
        f"maven: fetching the {jar_set.name} jars (first run: downloads from Maven Central)...",
        flush=True,
    )
    staging = jar_set.target.parent / f".{jar_set.target.name}.download"
    shutil.rmtree(staging, ignore_errors=True)
    run_copy_dependencies(mvn, jar_set, staging)
    kept, left_out = split_excluded(downloaded_jars(staging), jar_set.excluded_jar_names)
    replace_jars(jar_set.target, kept)
    shutil.rmtree(staging, ignore_errors=True)
    # Written last: an interrupted fetch leaves no stamp and is simply redone.
    (jar_set.target / STAMP_NAME).write_text(fingerprint + "\n")
    note = f" ({len(left_out)} already shipped with pyspark left out)" if left_out else ""
    print(f"maven: {len(kept)} jars in {jar_set.target}{note}", flush=True)
    return sorted(jar_set.target.glob("*.jar"))


def fingerprint_of(jar_set: JarSet) -> str:
    digest = hashlib.sha256(jar_set.pom.read_bytes())
    for name in sorted(jar_set.excluded_jar_names):
        digest.update(name.encode() + b"\n")
    return digest.hexdigest()


def is_up_to_date(target: Path, fingerprint: str) -> bool:
    stamp = target / STAMP_NAME
    try:
        return stamp.read_text().strip() == fingerprint and any(target.glob("*.jar"))
    except OSError:
        return False


def run_copy_dependencies(mvn: str, jar_set: JarSet, staging: Path) -> None:
    log_path = state_dir() / "logs" / f"maven-{jar_set.pom.parent.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        mvn, "-B", "-q", "-f", str(jar_set.pom), COPY_DEPENDENCIES,
        f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
        # groupId/artifactId/version/ folders tell us each jar's artifactId without guessing
        # where a file name's artifactId ends and its version begins.
        "-Dmdep.useRepositoryLayout=true",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        result = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if result.returncode != 0:
        reason = first_maven_error(log_path.read_text(errors="replace"))
        raise CommandError(
            f"Maven could not fetch the {jar_set.name} jars ({reason}); check access to Maven "
            "Central"
            f" (full output: {log_path}) and rerun `make up`"
        )


def first_maven_error(output: str) -> str:
    for line in output.splitlines():
        if "[ERROR]" in line:
            return line.split("[ERROR]", 1)[1].strip()[:300]
    return first_line(output)[:300] or "no output"


def downloaded_jars(staging: Path) -> list[tuple[str, Path]]:
    """(artifactId, jar) pairs of a repository-layout folder: .../artifactId/version/file.jar."""
    return sorted((jar.parent.parent.name, jar) for jar in staging.rglob("*.jar"))


def split_excluded(
    jars: list[tuple[str, Path]], excluded_jar_names: frozenset[str]
) -> tuple[list[Path], list[Path]]:
    kept: list[Path] = []
    left_out: list[Path] = []
    for artifact_id, jar in jars:
        (left_out if is_shipped(artifact_id, excluded_jar_names) else kept).append(jar)
    return kept, left_out


def is_shipped(artifact_id: str, jar_names: frozenset[str]) -> bool:
    """True if some `artifactId-version*.jar` in `jar_names` is this artifact, in any version."""
    prefix = artifact_id + "-"
    return any(name.startswith(prefix) and name[len(prefix) :][:1].isdigit() for name in jar_names)


def replace_jars(target: Path, jars: list[Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / STAMP_NAME).unlink(missing_ok=True)
    for old in target.glob("*.jar"):
        old.unlink()
    for jar in jars:
        shutil.move(str(jar), target / jar.name)


JAR_SETS = {
    "spark-kafka": spark_kafka_jars,
    "gcs-connector": gcs_connector_jars,
}


def main(argv: list[str] | None = None) -> int:
    """`python -m devtools.maven [SET...]`: fetch the named jar sets (default: Spark's Kafka
    connector, what every local Spark job needs; `make up` runs this)."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.maven", description="Fetch jars from Maven Central, once."
    )
    parser.add_argument("sets", nargs="*", choices=sorted(JAR_SETS), default=["spark-kafka"])
    args = parser.parse_args(argv)
    return exit_status(lambda: [ensure_jars(JAR_SETS[name]()) for name in args.sets])


if __name__ == "__main__":
    sys.exit(main())
