"""Sending from several processes at once, for rates one producer process can't reach.

Generating a record and counting it into the summary is Python under the GIL, a few
microseconds per record, which caps one process (librdkafka does the sending in its own
threads) at somewhat over 100,000 records a second. Each worker process here owns a
share of the devices and sends their records with its own producer. Every worker generates
the same seeded stream and keeps only its devices' records, so together they send exactly
the records one process would, and each device's records in the same order (a device's key
always lands on the same partition, so its order in Kafka is kept too).
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from typing import Any

from simulator.generator import Record, SimulatorConfig, device_ids, generate_records
from simulator.producer import (
    BrokerUnavailableError,
    DeliveryError,
    ProducerSettings,
    StopFlag,
    choose_pacer,
    close_producer,
    create_producer,
    send,
)
from simulator.summary import TrafficSummary

# Workers publish their progress in steps of this many records: a shared counter behind a
# lock is too dear to touch for every record.
_PROGRESS_STEP = 1000
_POLL_SECONDS = 0.2

_OK = "ok"
_BROKER_UNAVAILABLE = "broker_unavailable"
_DELIVERY_FAILED = "delivery_failed"


@dataclass(frozen=True)
class SendJob:
    """Everything a worker needs to do its share of a run (sent to it by pickling)."""

    config: SimulatorConfig
    settings: ProducerSettings
    topic: str
    rate: float | None  # for the whole run; None paces by tick, 0 not at all
    window_seconds: int


def worker_devices(config: SimulatorConfig, worker_index: int, workers: int) -> list[str]:
    """The devices worker `worker_index` of `workers` sends for: every workers-th one."""
    return device_ids(config)[worker_index::workers]


def worker_records(config: SimulatorConfig, worker_index: int, workers: int) -> Iterator[Record]:
    """The records of the whole run that belong to the worker's devices, in run order."""
    own_keys = {device.encode() for device in worker_devices(config, worker_index, workers)}
    return (record for record in generate_records(config) if record.key in own_keys)


def worker_rate(job: SendJob, worker_index: int, workers: int) -> float | None:
    """The worker's part of a whole-run rate, in proportion to its devices."""
    if not job.rate:
        return job.rate
    share = len(worker_devices(job.config, worker_index, workers)) / job.config.devices_per_tick
    return job.rate * share


def send_in_parallel(
    job: SendJob,
    workers: int,
    stop: StopFlag,
    on_progress: Callable[[int], None] | None = None,
) -> TrafficSummary:
    """Run `workers` sending processes and merge their summaries.

    Raises BrokerUnavailableError or DeliveryError like the single-process path; once a worker
    fails, or `stop` is requested, the others are told to stop cleanly (flush, then report).
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    # spawn, not fork: a fork copies whatever threads and sockets the parent holds.
    context = multiprocessing.get_context("spawn")
    sent_counter = context.Value("q", 0)
    results = context.Queue()
    processes = [
        context.Process(
            target=_worker_main,
            args=(job, index, workers, sent_counter, results),
            name=f"simulator-worker-{index}",
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = _collect_outcomes(processes, results, stop, sent_counter, on_progress)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return _merged_summary(outcomes, job.window_seconds)


def _collect_outcomes(
    processes: list[SpawnProcess],
    results: Any,
    stop: StopFlag,
    sent_counter: Any,
    on_progress: Callable[[int], None] | None,
) -> dict[int, tuple[str, Any]]:
    outcomes: dict[int, tuple[str, Any]] = {}
    told_to_stop = False
    reported = 0
    while len(outcomes) < len(processes):
        failed = any(status != _OK for status, _ in outcomes.values())
        if (stop.requested or failed) and not told_to_stop:
            _tell_workers_to_stop(processes)
            told_to_stop = True
        try:
            index, status, payload = results.get(timeout=_POLL_SECONDS)
            outcomes[index] = (status, payload)
        except queue.Empty:
            _note_silent_deaths(processes, outcomes)
        if on_progress is not None:
            sent = sent_counter.value
            on_progress(sent - reported)
            reported = sent
    return outcomes


def _tell_workers_to_stop(processes: list[SpawnProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM, which a worker takes as a request to stop cleanly


def _note_silent_deaths(
    processes: list[SpawnProcess], outcomes: dict[int, tuple[str, Any]]
) -> None:
    # A worker that exited without reporting (killed, crashed) must not leave the parent waiting
    # forever.
    for index, process in enumerate(processes):
        if index not in outcomes and not process.is_alive() and process.exitcode is not None:
            outcomes[index] = (
                _DELIVERY_FAILED,
                f"worker {index} exited with status {process.exitcode} without reporting",
            )


def _merged_summary(outcomes: dict[int, tuple[str, Any]], window_seconds: int) -> TrafficSummary:
    for status, payload in outcomes.values():
        if status == _BROKER_UNAVAILABLE:
            raise BrokerUnavailableError(payload)
    failures = [payload for status, payload in outcomes.values() if status != _OK]
    if failures:
        raise DeliveryError("; ".join(failures))
    merged = TrafficSummary(window_seconds)
    for index in sorted(outcomes):
        merged.merge(outcomes[index][1])
    return merged


def _worker_main(
    job: SendJob, worker_index: int, workers: int, sent_counter: Any, results: Any
) -> None:
    """One worker process: send its devices' records, then report its summary or its failure."""
    stop = StopFlag()
    # Ctrl-C reaches every process of the terminal; the parent alone decides, and tells workers with
    # SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop.request)
    try:
        producer = create_producer(job.settings)
    except BrokerUnavailableError as error:
        results.put((worker_index, _BROKER_UNAVAILABLE, str(error)))
        return

    progress = _ProgressPublisher(sent_counter)
    try:
        summary = send(
            worker_records(job.config, worker_index, workers),
            producer,
            job.topic,
            pacer=choose_pacer(
                worker_rate(job, worker_index, workers), job.config.tick_seconds, stop
            ),
            summary=TrafficSummary(job.window_seconds),
            stop=stop,
            on_sent=progress.count,
        )
        results.put((worker_index, _OK, summary))
    except DeliveryError as error:
        results.put((worker_index, _DELIVERY_FAILED, str(error)))
    finally:
        progress.publish()
        close_producer(producer)


class _ProgressPublisher:
    def __init__(self, shared_counter: Any) -> None:
        self._shared_counter = shared_counter
        self._unpublished = 0

    def count(self, record: Record) -> None:
        self._unpublished += 1
        if self._unpublished >= _PROGRESS_STEP:
            self.publish()

    def publish(self) -> None:
        with self._shared_counter.get_lock():
            self._shared_counter.value += self._unpublished
        self._unpublished = 0
