"""Pure, seeded generation of the device usage records the simulator sends to Kafka.

Nothing here touches the network or the clock: the same `SimulatorConfig` always yields
the same records, which is what lets tests and benchmarks recompute the expected totals.

Every tick, each device reports once (docs/contract.md §3): it is attached to a random antenna,
uses a random app and a uniform number of bytes in [0, 10000). The event time of tick `n`
is `start + n * tick_seconds`. With a malformed rate above zero, some reports are replaced by
one of the malformed shapes of docs/contract.md §1, so the pipeline's quarantine has something
to catch.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypedDict

APPS = ("SKYPE", "TELEGRAM", "FACETIME", "FACEBOOK", "WHATSAPP")
BYTES_UPPER_BOUND = 10_000  # exclusive, as in the original simulator
KNOWN_USER_COUNT = 20  # the users the provisioner loads into user_metadata (docs/contract.md §2)
EventField = Literal["bytes", "timestamp", "app", "id", "antenna_id"]
EVENT_FIELDS: tuple[EventField, ...] = ("bytes", "timestamp", "app", "id", "antenna_id")

# Antennas 0..15 repeat one hex digit (00000000-..., 11111111-..., ffffffff-...); beyond that
# a counter keeps ids unique, in a prefix none of the repeated-digit ids or devices use.
_REPEATED_DIGIT_ANTENNAS = 16
_EXTRA_ANTENNA_PREFIX = "aaaaaaaa-0000-0000-0000-"
_KNOWN_DEVICE_PREFIX = "00000000-0000-0000-0000-"
_UNKNOWN_DEVICE_PREFIX = "ffffffff-0000-0000-0000-"
_MAX_COUNTER = 10**12 - 1  # what fits in the last 12 digits of a UUID


class Event(TypedDict):
    """One valid usage report, exactly the JSON object of docs/contract.md §1."""

    bytes: int
    timestamp: int
    app: str
    id: str
    antenna_id: str


class Record(NamedTuple):
    """One Kafka record to send, with what it encodes.

    `event` is the valid event the value encodes, or None when the value is malformed,
    in which case `malformed_kind` names how (one of MALFORMED_KINDS).
    """

    key: bytes
    value: bytes
    tick: int
    event: Event | None
    malformed_kind: str | None


@dataclass(frozen=True)
class SimulatorConfig:
    """What to generate. Limits left at None don't apply; with none set, generation never ends."""

    start: int  # event time of the first tick, epoch seconds UTC
    antennas: int = 5
    devices: int = KNOWN_USER_COUNT
    unknown_devices: int = 0
    tick_seconds: int = 60
    ticks: int | None = None
    duration_seconds: int | None = None
    max_records: int | None = None
    seed: int = 0
    malformed_rate: float = 0.0

    def __post_init__(self) -> None:
        _require(self.antennas >= 1, "antennas must be at least 1")
        _require(self.antennas <= _MAX_COUNTER, "too many antennas")
        _require(
            self.devices >= 0 and self.unknown_devices >= 0, "device counts must not be negative"
        )
        _require(
            self.devices <= _MAX_COUNTER and self.unknown_devices <= _MAX_COUNTER,
            "too many devices",
        )
        _require(
            self.devices + self.unknown_devices >= 1,
            "at least one device (known or unknown) is needed",
        )
        _require(self.tick_seconds >= 1, "tick_seconds must be at least 1")
        _require(self.ticks is None or self.ticks >= 1, "ticks must be at least 1")
        _require(
            self.duration_seconds is None or self.duration_seconds >= 1,
            "duration must be at least 1 second",
        )
        _require(self.max_records is None or self.max_records >= 1, "events must be at least 1")
        _require(0.0 <= self.malformed_rate <= 1.0, "malformed_rate must be within [0, 1]")

    @property
    def devices_per_tick(self) -> int:
        return self.devices + self.unknown_devices

    def tick_limit(self) -> int | None:
        """How many ticks to generate: the tighter of --ticks and --duration, or None for no end."""
        limits = []
        if self.ticks is not None:
            limits.append(self.ticks)
        if self.duration_seconds is not None:
            # Ticks at start, start + tick, ... strictly before start + duration.
            limits.append(math.ceil(self.duration_seconds / self.tick_seconds))
        return min(limits) if limits else None

    def record_limit(self) -> int | None:
        """How many records (valid + malformed) generation yields, or None for no end."""
        limits = []
        tick_limit = self.tick_limit()
        if tick_limit is not None:
            limits.append(tick_limit * self.devices_per_tick)
        if self.max_records is not None:
            limits.append(self.max_records)
        return min(limits) if limits else None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def antenna_id(index: int) -> str:
    """The id of antenna `index` (0-based): the repeated-digit ids of docs/contract.md §3 first."""
    if index < _REPEATED_DIGIT_ANTENNAS:
        digit = format(index, "x")
        return f"{digit * 8}-{digit * 4}-{digit * 4}-{digit * 4}-{digit * 12}"
    return f"{_EXTRA_ANTENNA_PREFIX}{index:012d}"


def device_id(number: int) -> str:
    """The id of device `number` (1-based); 1..20 are the users of user_metadata."""
    return f"{_KNOWN_DEVICE_PREFIX}{number:012d}"


def unknown_device_id(number: int) -> str:
    """The id of unknown device `number` (1-based), never among the users of user_metadata."""
    return f"{_UNKNOWN_DEVICE_PREFIX}{number:012d}"


def antenna_ids(count: int) -> list[str]:
    return [antenna_id(index) for index in range(count)]


def device_ids(config: SimulatorConfig) -> list[str]:
    """Every device that reports each tick, in reporting order: users first, then unknown
    devices."""
    known = [device_id(number) for number in range(1, config.devices + 1)]
    unknown = [unknown_device_id(number) for number in range(1, config.unknown_devices + 1)]
    return known + unknown


# The ids and apps come from fixed alphabets without quotes or backslashes, so plain formatting
# produces exactly json.dumps(event, separators=(",", ":")) at a quarter of the cost, which
# matters at tens of thousands of events a second.
_EVENT_TEMPLATE = '{"bytes":%d,"timestamp":%d,"app":"%s","id":"%s","antenna_id":"%s"}'


def encode_event(event: Event) -> bytes:
    """The compact UTF-8 JSON value of a valid event, fields in the order of docs/contract.md §1."""
    text = _EVENT_TEMPLATE % (
        event["bytes"],
        event["timestamp"],
        event["app"],
        event["id"],
        event["antenna_id"],
    )
    return text.encode()


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def iso_utc(epoch_seconds: int) -> str:
    """`2026-11-28T03:00:00Z` for an epoch second."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Malformed shapes, one per case of docs/contract.md §1. Each takes the event the device would have
# sent and returns the value to send instead.


def _not_json(event: Event, rng: random.Random) -> bytes:
    # A CSV line: what a producer with the wrong serializer would send.
    return ",".join(str(event[field]) for field in EVENT_FIELDS).encode()


def _json_array(event: Event, rng: random.Random) -> bytes:
    # An array around a valid event: a lax parser that takes the first element would count it.
    return _compact_json([event])


def _missing_field(event: Event, rng: random.Random) -> bytes:
    missing = rng.choice(EVENT_FIELDS)
    return _compact_json({field: value for field, value in event.items() if field != missing})


def _null_field(event: Event, rng: random.Random) -> bytes:
    return _compact_json({**event, rng.choice(EVENT_FIELDS): None})


def _string_bytes(event: Event, rng: random.Random) -> bytes:
    return _compact_json({**event, "bytes": str(event["bytes"])})


def _fractional_bytes(event: Event, rng: random.Random) -> bytes:
    return _compact_json({**event, "bytes": event["bytes"] + 0.5})


def _iso_timestamp(event: Event, rng: random.Random) -> bytes:
    return _compact_json({**event, "timestamp": iso_utc(event["timestamp"])})


def _negative_bytes(event: Event, rng: random.Random) -> bytes:
    # -(bytes + 1) so that a zero never turns into a still-valid 0.
    return _compact_json({**event, "bytes": -(event["bytes"] + 1)})


_MALFORMERS: dict[str, Callable[[Event, random.Random], bytes]] = {
    "not_json": _not_json,
    "json_array": _json_array,
    "missing_field": _missing_field,
    "null_field": _null_field,
    "string_bytes": _string_bytes,
    "fractional_bytes": _fractional_bytes,
    "iso_timestamp": _iso_timestamp,
    "negative_bytes": _negative_bytes,
}
MALFORMED_KINDS = tuple(_MALFORMERS)


def malformed_value(kind: str, event: Event, rng: random.Random) -> bytes:
    """The malformed value of `kind` standing in for `event`."""
    return _MALFORMERS[kind](event, rng)


def generate_records(config: SimulatorConfig) -> Iterator[Record]:
    """All the records of a run, in sending order, lazily (a run may be endless)."""
    records = _generate_unbounded(config)
    return itertools.islice(records, config.record_limit())


def generate_events(config: SimulatorConfig) -> Iterator[Event]:
    """Only the valid events of a run, e.g. to recompute expected totals."""
    return (record.event for record in generate_records(config) if record.event is not None)


def _generate_unbounded(config: SimulatorConfig) -> Iterator[Record]:
    # Event fields and malformed decisions use separate generators, so turning malformed
    # records on only replaces some events and leaves every other event exactly as it was.
    event_rng = random.Random(config.seed)
    malformed_rng = random.Random(f"malformed-{config.seed}")
    antennas = antenna_ids(config.antennas)
    devices = [(device, device.encode()) for device in device_ids(config)]
    tick_limit = config.tick_limit()
    ticks = itertools.count() if tick_limit is None else range(tick_limit)

    for tick in ticks:
        timestamp = config.start + tick * config.tick_seconds
        for device, key in devices:
            attached_antenna = event_rng.choice(antennas)
            app = event_rng.choice(APPS)
            used_bytes = event_rng.randrange(BYTES_UPPER_BOUND)
            event: Event = {
                "bytes": used_bytes,
                "timestamp": timestamp,
                "app": app,
                "id": device,
                "antenna_id": attached_antenna,
            }
            if config.malformed_rate and malformed_rng.random() < config.malformed_rate:
                kind = malformed_rng.choice(MALFORMED_KINDS)
                yield Record(key, malformed_value(kind, event, malformed_rng), tick, None, kind)
            else:
                yield Record(key, encode_event(event), tick, event, None)
