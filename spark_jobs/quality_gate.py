"""The quality gate of a batch hour: the SQL checks of sql/quality/checks/, run by the batch job
inside the transaction that publishes the hour, so a failing hour is never committed.

A check is a file `sql/quality/checks/<name>.sql` returning the rows that violate it, so a
passing check returns nothing and a failing one says what is wrong with which values. Every
file takes one parameter, `%(hour)s`, the start of the UTC hour; because the driver substitutes
parameters, a literal percent sign in a file must be written `%%`. Checks read the run's own
figures from batch_hour_runs (raw rows, distinct offsets) and the speed layer's independent
count (speed_hour_batches), not only the aggregates they check (docs/contract.md §8).

The files are read from the repository, or from platform.zip when the job runs on Dataproc
(deploy/package.py bundles sql/).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

CHECKS_FOLDER = PurePosixPath("sql/quality/checks")


@dataclass(frozen=True)
class QualityCheck:
    name: str
    sql: str

    @classmethod
    def from_file(cls, path: Path) -> QualityCheck:
        return cls(name=path.stem, sql=path.read_text())


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    violations: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        if self.passed:
            return f"quality check {self.name} passed"
        rows = "; ".join(_format_row(row) for row in self.violations)
        return f"quality check {self.name} failed: {rows}"


class QualityGateFailed(RuntimeError):
    """The hour failed its quality gate: it is not published (the message names checks and
    values)."""

    def __init__(self, hour: str, failures: Sequence[CheckOutcome], total: int):
        self.failures = list(failures)
        summary = "\n".join(outcome.describe() for outcome in failures)
        super().__init__(
            f"{len(failures)} of {total} quality checks failed for hour {hour}; not "
            f"published:\n{summary}"
        )


def repository_root() -> Path:
    """The repository, or the zip it is bundled in (…/platform.zip when imported from it)."""
    return Path(__file__).resolve().parents[1]


def load_checks(folder: Path | None = None) -> list[QualityCheck]:
    """Every check file, in name order; an empty folder is an error, not a pass."""
    root = repository_root()
    if folder is None and zipfile.is_zipfile(root):
        checks = _checks_in_zip(root)
        location = f"{root}/{CHECKS_FOLDER}"
    else:
        folder = folder or root / CHECKS_FOLDER
        checks = [QualityCheck.from_file(path) for path in sorted(folder.glob("*.sql"))]
        location = str(folder)
    if not checks:
        raise FileNotFoundError(f"no quality check files (*.sql) in {location}")
    return checks


def _checks_in_zip(bundle: Path) -> list[QualityCheck]:
    with zipfile.ZipFile(bundle) as archive:
        names = sorted(
            name
            for name in archive.namelist()
            if PurePosixPath(name).parent == CHECKS_FOLDER and name.endswith(".sql")
        )
        return [
            QualityCheck(PurePosixPath(name).stem, archive.read(name).decode("utf-8"))
            for name in names
        ]


def run_checks(cursor, checks: Sequence[QualityCheck], hour: str) -> list[CheckOutcome]:
    """Each check on `cursor`, in its transaction (the publishing one: it sees the rows not yet
    committed, and nothing a concurrent writer commits meanwhile changes what it compares)."""
    return [CheckOutcome(check.name, query_dicts(cursor, check.sql, hour)) for check in checks]


def query_dicts(cursor, sql: str, hour: str) -> list[dict[str, Any]]:
    cursor.execute(sql, {"hour": hour})
    columns = [column[0] for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{column}={value}" for column, value in row.items())
