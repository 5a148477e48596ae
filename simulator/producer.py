"""Sending generated records to Kafka with kafka-python, paced, with exact accounting.

`send()` works with anything shaped like a KafkaProducer (tests pass a fake), counts each
record into a `TrafficSummary` as it hands it to the producer, and only returns once every
record has been acknowledged (acks='all'); if any delivery failed it raises `DeliveryError`
instead, so a returned summary is always exactly what Kafka holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner import DefaultPartitioner

from simulator.generator import Record
from simulator.summary import TrafficSummary

# Batches of 512 KiB and a 20 ms linger let kafka-python fill large produce requests at full
# speed, while a paced run (one tick a minute) still sees its records within 20 ms.
DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_SIZE = 512 * 1024
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0

# Sleeping in short slices keeps a stop request (Ctrl-C, SIGTERM) noticed within this time
# even while a paced run waits a whole minute for its next tick.
_SLEEP_SLICE_SECONDS = 0.2
# A rate-paced sender only sleeps once it is this far ahead: shorter sleeps cost more than they
# pace.
_MIN_SLEEP_SECONDS = 0.002


class BrokerUnavailableError(Exception):
    """No Kafka broker answered at the bootstrap servers."""


class DeliveryError(Exception):
    """Kafka did not acknowledge every record."""


class ProducerLike(Protocol):
    """The part of KafkaProducer that `send()` uses."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


@dataclass(frozen=True)
class ProducerSettings:
    bootstrap_servers: str
    linger_ms: int = DEFAULT_LINGER_MS
    batch_size: int = DEFAULT_BATCH_SIZE
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS

    def server_list(self) -> list[str]:
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]


class CachedKeyPartitioner(DefaultPartitioner):
    """The default partitioning (murmur2 of the key, as the Java client does), computed once per
    key.

    kafka-python hashes every key in pure Python; with a few dozen devices the same keys
    repeat all the time, and caching the answer per partition count is a large share of the
    per-record cost at tens of thousands of records a second.
    """

    def __init__(self) -> None:
        self._partition_by_key: dict[tuple[str, bytes, int], int] = {}

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        partitions = cluster.partitions_for_topic(topic)
        cache_key = (topic, serialized_key, len(partitions) if partitions else 0)
        partition = self._partition_by_key.get(cache_key)
        if partition is None:
            partition = super().partition(
                topic, key, serialized_key, value, serialized_value, cluster
            )
            self._partition_by_key[cache_key] = partition
        return partition


def create_producer(settings: ProducerSettings) -> KafkaProducer:
    """A KafkaProducer tuned for throughput with full acknowledgement, or BrokerUnavailableError."""
    timeout_ms = int(settings.connect_timeout_seconds * 1000)
    try:
        return KafkaProducer(
            bootstrap_servers=settings.server_list(),
            client_id="simulator",
            acks="all",
            linger_ms=settings.linger_ms,
            batch_size=settings.batch_size,
            partitioner=CachedKeyPartitioner(),
            bootstrap_timeout_ms=timeout_ms,
            # Bounds the wait for a topic's metadata too, e.g. when the topic does not exist.
            max_block_ms=max(timeout_ms, 30_000),
        )
    except (KafkaError, OSError) as error:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {error}"
        ) from error


class StopFlag:
    """Set (e.g. from a signal handler) to end a run early but cleanly: flush, then summarise."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, *_: object) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early once a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, _SLEEP_SLICE_SECONDS))


class Pacer(Protocol):
    def wait_for(self, record_number: int, record: Record) -> None:
        """Block until `record`, the `record_number`-th of the run (0-based), is due."""


class EventRatePacer:
    """At most `events_per_second` records a second on average, from the first record on."""

    def __init__(
        self,
        events_per_second: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._seconds_per_record = 1.0 / events_per_second
        self._sleep = sleep
        self._clock = clock
        self._started_at: float | None = None

    def wait_for(self, record_number: int, record: Record) -> None:
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        ahead = self._started_at + record_number * self._seconds_per_record - now
        if ahead >= _MIN_SLEEP_SECONDS:
            self._sleep(ahead)


class TickPacer:
    """One tick per `tick_seconds` of real time, like the original: each tick's records go out
    together."""

    def __init__(
        self,
        tick_seconds: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self._tick_seconds = tick_seconds
        self._sleep = sleep
        self._clock = clock
        self._started_at: float | None = None
        self._current_tick: int | None = None

    def wait_for(self, record_number: int, record: Record) -> None:
        if record.tick == self._current_tick:
            return
        now = self._clock()
        if self._started_at is None:
            self._started_at = now - record.tick * self._tick_seconds
        self._current_tick = record.tick
        ahead = self._started_at + record.tick * self._tick_seconds - now
        if ahead > 0:
            self._sleep(ahead)


def choose_pacer(rate: float | None, tick_seconds: float, stop: StopFlag) -> Pacer | None:
    """None paces by tick, 0 does not pace at all (returns None), a positive rate paces by
    record."""
    if rate is None:
        return TickPacer(tick_seconds, stop.sleep)
    if rate == 0:
        return None
    return EventRatePacer(rate, stop.sleep)


class _FailedDeliveries:
    """Collects delivery errors from the producer's I/O thread."""

    def __init__(self) -> None:
        self.count = 0
        self.first: BaseException | None = None

    def record(self, error: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = error


def send(
    records: Iterable[Record],
    producer: ProducerLike,
    topic: str,
    *,
    pacer: Pacer | None = None,
    summary: TrafficSummary | None = None,
    stop: StopFlag | None = None,
    on_sent: Callable[[Record], None] | None = None,
    flush_timeout_seconds: float | None = None,
) -> TrafficSummary:
    """Send records until they run out or a stop is requested, then wait for every acknowledgement.

    Without a pacer records go out as fast as the producer takes them. Returns the summary of
    what was sent; raises DeliveryError if any record was not acknowledged.
    """
    summary = summary or TrafficSummary()
    stop = stop or StopFlag()
    failures = _FailedDeliveries()
    # Bound once: this loop runs for every record, and kafka-python leaves it little time to spare.
    produce = producer.send
    record_failure = failures.record
    count_event = summary.add
    count_malformed = summary.add_malformed

    for record_number, record in enumerate(records):
        # Stop handing over records once one failed: the run can't produce an exact summary anymore.
        if stop.requested or failures.first is not None:
            break
        if pacer is not None:
            pacer.wait_for(record_number, record)
            if stop.requested:
                break
        try:
            future = produce(topic, value=record.value, key=record.key)
        except KafkaError as error:
            failures.record(error)
            break
        future.add_errback(record_failure)
        if record.event is not None:
            count_event(record.event)
        else:
            assert record.malformed_kind is not None  # a Record without an event is malformed
            count_malformed(record.malformed_kind)
        if on_sent is not None:
            on_sent(record)

    _flush(producer, flush_timeout_seconds, failures)
    if failures.first is not None:
        raise DeliveryError(
            f"{failures.count} record(s) not delivered to topic {topic!r}, first error: "
            f"{failures.first}"
        )
    return summary


def _flush(
    producer: ProducerLike, timeout_seconds: float | None, failures: _FailedDeliveries
) -> None:
    try:
        producer.flush(timeout=timeout_seconds)
    except KafkaError as error:  # e.g. the flush timed out with records still unacknowledged
        failures.record(error)
