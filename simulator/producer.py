"""Sending generated records to Kafka with confluent-kafka (librdkafka), paced, with exact
accounting.

`send()` works with anything shaped like confluent_kafka.Producer (tests pass a fake), counts
each record into a `TrafficSummary` as it hands it to the producer, and only returns once every
record has been acknowledged (acks=all); if any delivery failed it raises `DeliveryError`
instead, so a returned summary is always exactly what Kafka holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException, Producer

from simulator.generator import Record
from simulator.summary import TrafficSummary

# librdkafka batches per partition in its own threads: a 20 ms linger fills large produce
# requests at full speed, while a paced run (one tick a minute) still sees its records within
# 20 ms. The local queue holds up to a million records (about 150 MB at the simulator's record
# size) so a fast run rarely has to wait for room.
DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_SIZE = 1_000_000
DEFAULT_QUEUE_MAX_MESSAGES = 1_000_000
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10.0
# How long a record may wait for its acknowledgement, retries included, before it counts as
# failed: the Java client's default delivery.timeout.ms, so a broker restart is ridden out.
DEFAULT_DELIVERY_TIMEOUT_SECONDS = 120.0

# Sleeping in short slices keeps a stop request (Ctrl-C, SIGTERM) noticed within this time
# even while a paced run waits a whole minute for its next tick.
_SLEEP_SLICE_SECONDS = 0.2
# A rate-paced sender only sleeps once it is this far ahead: shorter sleeps cost more than they
# pace.
_MIN_SLEEP_SECONDS = 0.002
# An unpaced run serves librdkafka's delivery reports once per this many records: poll() is
# cheap, but not free at 100,000 records a second. Every report waits in the local queue until
# it is served (and holds a place there), but only failures call back into Python
# (delivery.report.only.error).
_RECORDS_PER_POLL = 1024
# While librdkafka's local queue is full, wait this long for acknowledgements to make room.
_FULL_QUEUE_WAIT_SECONDS = 0.05

# librdkafka's own log lines (connection refused, broker down) go through Python logging, served
# by poll() and flush(), rather than straight to stderr, so a command's one-line error stays one
# line; configure logging to see them.
_librdkafka_log = logging.getLogger("simulator.librdkafka")
_librdkafka_log.addHandler(logging.NullHandler())


class BrokerUnavailableError(Exception):
    """No Kafka broker answered at the bootstrap servers."""


class DeliveryError(Exception):
    """Kafka did not acknowledge every record."""


DeliveryCallback = Callable[[Any, Any], None]  # (KafkaError or None, Message)


class ProducerLike(Protocol):
    """The part of confluent_kafka.Producer that `send()` uses."""

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
    ) -> None: ...

    def poll(self, timeout: float = -1) -> int: ...

    def flush(self, timeout: float = -1) -> int: ...


@dataclass(frozen=True)
class ProducerSettings:
    bootstrap_servers: str
    linger_ms: int = DEFAULT_LINGER_MS
    batch_size: int = DEFAULT_BATCH_SIZE
    queue_max_messages: int = DEFAULT_QUEUE_MAX_MESSAGES
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    delivery_timeout_seconds: float = DEFAULT_DELIVERY_TIMEOUT_SECONDS

    def server_list(self) -> list[str]:
        return [server.strip() for server in self.bootstrap_servers.split(",") if server.strip()]

    def librdkafka_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": ",".join(self.server_list()),
            "client.id": "simulator",
            "acks": "all",
            # Retries after a lost acknowledgement neither double a record nor reorder a
            # partition (kafka-python's default too; librdkafka's is off).
            "enable.idempotence": True,
            # murmur2 of the key, as the Java client and kafka-python partition: a device's
            # records land on the same partition whichever client sent them.
            "partitioner": "murmur2_random",
            "linger.ms": self.linger_ms,
            "batch.size": self.batch_size,
            "queue.buffering.max.messages": self.queue_max_messages,
            "message.timeout.ms": int(self.delivery_timeout_seconds * 1000),
            # Successes need no Python callback: send() counts a record when it hands it over
            # and flush() waits for every acknowledgement, so only failures are news.
            "delivery.report.only.error": True,
            "logger": _librdkafka_log,
        }


def create_producer(settings: ProducerSettings) -> Producer:
    """A Producer tuned for throughput with full acknowledgement, or BrokerUnavailableError.

    librdkafka connects in the background and would queue records for an absent broker until
    they time out, so the broker is asked for its metadata first.
    """
    try:
        producer = Producer(settings.librdkafka_config())
        producer.list_topics(timeout=settings.connect_timeout_seconds)
    except KafkaException as error:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {error}"
        ) from error
    return producer


def close_producer(producer: Any, timeout_seconds: float = 5.0) -> None:
    """Release the producer's threads and sockets. After a successful send() nothing is left to
    deliver; after a failed one, what is still queued is dropped: the run has already failed.
    Called in `finally`, it raises nothing of the client's: a failing close must not hide the
    run's real outcome."""
    with suppress(KafkaException):
        producer.purge()
        # close() flushes without a timeout and cannot be interrupted: only call it on an empty
        # queue, else leave the producer to the garbage collector.
        if producer.flush(timeout_seconds) == 0:
            producer.close()


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
    """Collects delivery errors reported by librdkafka (from poll() and flush())."""

    def __init__(self) -> None:
        self.count = 0
        self.first: Any = None  # a KafkaError, or a message of our own

    def record(self, error: Any, count: int = 1) -> None:
        self.count += count
        if self.first is None:
            self.first = error

    def on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self.record(error)


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
    # Bound once: this loop runs for every record, at 100,000 records a second.
    poll = producer.poll
    count_event = summary.add
    count_malformed = summary.add_malformed

    for record_number, record in enumerate(records):
        if pacer is not None:
            pacer.wait_for(record_number, record)
            _serve_reports(poll, 0, failures)  # a paced run has the time to hear of a failure
        elif record_number % _RECORDS_PER_POLL == 0:
            _serve_reports(poll, 0, failures)
        # Stop handing over records once one failed: the run can't produce an exact summary anymore.
        if stop.requested or failures.first is not None:
            break
        if not _hand_over(producer, topic, record, failures, stop):
            break
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
            f"{_describe(failures.first)}"
        )
    return summary


def _hand_over(
    producer: ProducerLike,
    topic: str,
    record: Record,
    failures: _FailedDeliveries,
    stop: StopFlag,
) -> bool:
    """Queue one record in librdkafka; False if it was not queued (a failure or a stop came
    first), and then it is not counted."""
    while True:
        try:
            producer.produce(topic, record.value, record.key, on_delivery=failures.on_delivery)
            return True
        except BufferError:
            # The local queue is full: serve acknowledgements until there is room. A broker
            # that stays away fails the queued records after the delivery timeout, which ends
            # this wait through `failures`.
            _serve_reports(producer.poll, _FULL_QUEUE_WAIT_SECONDS, failures)
            if failures.first is not None or stop.requested:
                return False
        except KafkaException as error:  # e.g. over librdkafka's own message.max.bytes check
            failures.record(_kafka_error(error))
            return False


def _serve_reports(
    serve: Callable[[float], int], timeout_seconds: float, failures: _FailedDeliveries
) -> int:
    """poll() or flush(): deliver the failure reports into `failures`, and return what `serve`
    returns. A fatal error of the client itself (raised by librdkafka's error callback) is a
    failure too."""
    try:
        return serve(timeout_seconds)
    except KafkaException as error:
        failures.record(_kafka_error(error))
        return 0


def _kafka_error(exception: KafkaException) -> object:
    """The KafkaError a KafkaException carries (its first argument), for the failure report."""
    return exception.args[0] if exception.args else exception


def _flush(
    producer: ProducerLike, timeout_seconds: float | None, failures: _FailedDeliveries
) -> None:
    # librdkafka's flush() without a timeout waits until every record is acknowledged or has
    # failed after the delivery timeout; either way its report arrives through `failures`.
    unsettled = _serve_reports(
        producer.flush, -1 if timeout_seconds is None else timeout_seconds, failures
    )
    if unsettled:
        failures.record(
            f"{unsettled} record(s) still unacknowledged after {timeout_seconds} s", unsettled
        )


def _describe(error: Any) -> str:
    """librdkafka's own wording of an error (KafkaError.str()), else the error as text."""
    describe = getattr(error, "str", None)
    return describe() if callable(describe) else str(error)
