"""Exact byte totals of what a simulator run sent, for checking the pipeline's tables against.

The totals mirror the serving tables: per antenna, per device id and per app, both per
tumbling window (the speed layer, docs/contract.md §5) and per UTC hour (the batch layer,
docs/contract.md §7). Windows and hours start on UTC epoch boundaries (docs/contract.md §4).
Per-user totals include unknown devices; whoever compares them with `bytes_agg_user*`
filters by `user_metadata`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from simulator.generator import MALFORMED_KINDS, Event, Record, iso_utc

HOUR_SECONDS = 3600
DEFAULT_WINDOW_SECONDS = 300

# Dimension name in the summary -> the event field it groups by, which is also the key's name in
# each row.
DIMENSIONS = {"antenna": "antenna_id", "user": "id", "app": "app"}

BucketTotals = defaultdict[tuple[int, str], int]  # (bucket start, key) -> bytes


class TrafficSummary:
    """Running totals of valid events, and counts of malformed records per kind."""

    def __init__(self, window_seconds: int = DEFAULT_WINDOW_SECONDS) -> None:
        if window_seconds < 1:
            raise ValueError("window_seconds must be at least 1")
        self.window_seconds = window_seconds
        self.events = 0
        self.total_bytes = 0
        self.first_timestamp: int | None = None
        self.last_timestamp: int | None = None
        self.malformed: Counter[str] = Counter(dict.fromkeys(MALFORMED_KINDS, 0))
        self.window_totals: dict[str, BucketTotals] = {
            dimension: defaultdict(int) for dimension in DIMENSIONS
        }
        self.hour_totals: dict[str, BucketTotals] = {
            dimension: defaultdict(int) for dimension in DIMENSIONS
        }

    def add(self, event: Event) -> None:
        """Count one valid event."""
        timestamp = event["timestamp"]
        used_bytes = event["bytes"]
        window_start = timestamp - timestamp % self.window_seconds
        hour_start = timestamp - timestamp % HOUR_SECONDS
        # Unrolled over the three dimensions: this runs for every event sent, at tens of thousands a
        # second.
        antenna, device, app = event["antenna_id"], event["id"], event["app"]
        windows, hours = self.window_totals, self.hour_totals
        windows["antenna"][window_start, antenna] += used_bytes
        windows["user"][window_start, device] += used_bytes
        windows["app"][window_start, app] += used_bytes
        hours["antenna"][hour_start, antenna] += used_bytes
        hours["user"][hour_start, device] += used_bytes
        hours["app"][hour_start, app] += used_bytes
        self.events += 1
        self.total_bytes += used_bytes
        if self.first_timestamp is None or timestamp < self.first_timestamp:
            self.first_timestamp = timestamp
        if self.last_timestamp is None or timestamp > self.last_timestamp:
            self.last_timestamp = timestamp

    def add_malformed(self, kind: str) -> None:
        """Count one malformed record; it carries no bytes that the pipeline may count."""
        self.malformed[kind] += 1

    def add_record(self, record: Record) -> None:
        if record.event is not None:
            self.add(record.event)
        else:
            self.add_malformed(record.malformed_kind or "unknown")

    def merge(self, other: TrafficSummary) -> None:
        """Add another summary's counts, e.g. from a parallel worker that sent other devices."""
        if other.window_seconds != self.window_seconds:
            raise ValueError("cannot merge summaries with different window lengths")
        self.events += other.events
        self.total_bytes += other.total_bytes
        for timestamp in (other.first_timestamp, other.last_timestamp):
            if timestamp is not None:
                self.first_timestamp = (
                    timestamp
                    if self.first_timestamp is None
                    else min(self.first_timestamp, timestamp)
                )
                self.last_timestamp = (
                    timestamp
                    if self.last_timestamp is None
                    else max(self.last_timestamp, timestamp)
                )
        self.malformed.update(other.malformed)
        for mine, theirs in (
            (self.window_totals, other.window_totals),
            (self.hour_totals, other.hour_totals),
        ):
            for dimension, totals in theirs.items():
                for bucket_key, used_bytes in totals.items():
                    mine[dimension][bucket_key] += used_bytes

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "malformed": dict(sorted(self.malformed.items())),
            "total_bytes": self.total_bytes,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "window_seconds": self.window_seconds,
            "windows": _rows_by_dimension(self.window_totals),
            "hours": _rows_by_dimension(self.hour_totals),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def write(self, path: str | Path) -> None:
        """Write the JSON atomically, so a reader never sees half a summary."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(self.to_json())
                stream.write("\n")
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _rows_by_dimension(totals: dict[str, BucketTotals]) -> dict[str, list[dict[str, Any]]]:
    return {dimension: _rows(totals[dimension], DIMENSIONS[dimension]) for dimension in DIMENSIONS}


def _rows(totals: BucketTotals, key_name: str) -> list[dict[str, Any]]:
    """Rows sorted by (date, key), shaped like the serving tables' rows."""
    return [
        {key_name: key, "date": iso_utc(bucket_start), "bytes": used_bytes}
        for (bucket_start, key), used_bytes in sorted(totals.items())
    ]
