"""`python -m simulator`: simulated device usage into the Kafka topic, optionally with a summary of
the exact totals.

Exit status: 0 when every record was acknowledged (also after Ctrl-C or SIGTERM, which stop
cleanly), 1 when Kafka did not acknowledge every record, 2 for bad flags or an unreachable broker.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType

from tqdm import tqdm

from common.cli_types import (
    integer,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from common.settings import kafka_bootstrap_servers, kafka_topic
from simulator.generator import KNOWN_USER_COUNT, SimulatorConfig, generate_records, iso_utc
from simulator.parallel import SendJob, send_in_parallel
from simulator.producer import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    BrokerUnavailableError,
    DeliveryError,
    ProducerSettings,
    StopFlag,
    choose_pacer,
    close_producer,
    create_producer,
    send,
)
from simulator.summary import DEFAULT_WINDOW_SECONDS, TrafficSummary

PROG = "python -m simulator"
EXIT_DELIVERY_FAILED = 1
EXIT_BROKER_UNAVAILABLE = 2


def _probability(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text!r}")
    return value


def parse_start(text: str) -> int:
    """Epoch seconds of an ISO-8601 time such as 2026-11-28T03:00:00Z; without an offset it is UTC
    (docs/contract.md §4)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 time like 2026-11-28T03:00:00Z: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.microsecond:
        raise argparse.ArgumentTypeError(f"event times are whole seconds, got {text!r}")
    return int(moment.timestamp())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Send simulated mobile-network usage to Kafka: every tick, each device reports once "
            "(JSON: bytes, timestamp, app, id, antenna_id) from a random antenna."
        ),
        epilog=(
            "Examples: `%(prog)s` runs forever at one tick a minute; "
            "`%(prog)s --start 2026-11-28T03:00:00Z --duration 3600 --rate 0 --summary-out "
            "hour.json` sends that past hour in seconds and writes its exact totals."
        ),
    )
    what = parser.add_argument_group("what to generate")
    what.add_argument(
        "--antennas",
        type=positive_int,
        default=5,
        metavar="N",
        help="number of antennas (default: 5)",
    )
    what.add_argument(
        "--devices",
        type=non_negative_int,
        default=KNOWN_USER_COUNT,
        metavar="N",
        help=(
            f"devices 00000000-0000-0000-0000-000000000001 ... (default: {KNOWN_USER_COUNT}, the "
            "users of user_metadata)"
        ),
    )
    what.add_argument(
        "--unknown-devices",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="extra devices ffffffff-0000-0000-0000-00000000000k that are no user (default: 0)",
    )
    what.add_argument(
        "--tick-seconds",
        type=positive_int,
        default=60,
        metavar="S",
        help="event time between ticks (default: 60)",
    )
    what.add_argument(
        "--start",
        type=parse_start,
        default=None,
        metavar="TIME",
        help="event time of the first tick, ISO-8601 UTC like 2026-11-28T03:00:00Z (default: now)",
    )
    what.add_argument(
        "--seed",
        type=integer,
        default=None,
        help=(
            "random seed; the same options and seed send the same records (default: random, "
            "printed at the end)"
        ),
    )
    what.add_argument(
        "--malformed-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="probability that a report is replaced by a malformed record (default: 0)",
    )

    until = parser.add_argument_group("when to stop (the first reached; none: run until Ctrl-C)")
    until.add_argument("--ticks", type=positive_int, metavar="N", help="after N ticks")
    until.add_argument(
        "--duration",
        type=positive_int,
        metavar="SECONDS",
        help="after SECONDS of event time: the ticks in [start, start + SECONDS)",
    )
    until.add_argument(
        "--events",
        type=positive_int,
        metavar="N",
        help="after N records in total, valid and malformed",
    )

    how = parser.add_argument_group("how to send")
    how.add_argument(
        "--rate",
        type=non_negative_float,
        default=None,
        metavar="EVENTS_PER_SECOND",
        help=(
            "send at most this many records a second; 0 sends as fast as possible (default: one "
            "tick per --tick-seconds of real time)"
        ),
    )
    how.add_argument(
        "--bootstrap-servers",
        default=kafka_bootstrap_servers(),
        metavar="HOST:PORT",
        help="Kafka servers (default: $KAFKA_BOOTSTRAP_SERVERS or %(default)s)",
    )
    how.add_argument(
        "--topic", default=kafka_topic(), help="Kafka topic (default: $KAFKA_TOPIC or %(default)s)"
    )
    how.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=DEFAULT_CONNECT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="give up when no broker answers within this time (default: %(default)s)",
    )
    how.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help=(
            "processes sending at once, each with its own producer and a share of the devices, "
            "for rates one process can't reach, over about 100,000 records/s (default: 1)"
        ),
    )
    how.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is none anyway when stderr is not a terminal)",
    )

    report = parser.add_argument_group("summary")
    report.add_argument(
        "--summary-out",
        metavar="FILE",
        help=(
            "after every record is acknowledged, write the exact byte totals sent per antenna, "
            "user and app, per window and per UTC hour, as JSON"
        ),
    )
    report.add_argument(
        "--window-seconds",
        type=positive_int,
        default=DEFAULT_WINDOW_SECONDS,
        metavar="S",
        help=(
            "window length of the summary's windowed totals (default: %(default)s, as the speed "
            "layer)"
        ),
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.start is None:
        args.start = int(time.time())
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    try:
        args.config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        start=args.start,
        antennas=args.antennas,
        devices=args.devices,
        unknown_devices=args.unknown_devices,
        tick_seconds=args.tick_seconds,
        ticks=args.ticks,
        duration_seconds=args.duration,
        max_records=args.events,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
    )


@contextmanager
def _stop_on_signals(stop: StopFlag) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM ends the run cleanly; handlers are restored afterwards, so a
    second one aborts."""
    previous = {
        signum: signal.signal(signum, _stop_once(stop, signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_once(stop: StopFlag, signum: int) -> Callable[[int, FrameType | None], None]:
    def handler(received: int, frame: FrameType | None) -> None:
        stop.request()
        signal.signal(
            signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler
        )

    return handler


def _error(message: str) -> None:
    one_line = " ".join(message.split())  # broker errors may span lines; scripts read one
    print(f"{PROG}: error: {one_line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = StopFlag()
    started = time.monotonic()
    try:
        with _stop_on_signals(stop), _progress_bar(args) as progress:
            summary = _send(args, stop, progress)
    except BrokerUnavailableError:
        _error(
            f"no Kafka broker answered at {args.bootstrap_servers} within "
            f"{args.connect_timeout:g} s "
            "(set KAFKA_BOOTSTRAP_SERVERS or --bootstrap-servers; `make up` starts the local one)"
        )
        return EXIT_BROKER_UNAVAILABLE
    except DeliveryError as error:
        _error(str(error))
        return EXIT_DELIVERY_FAILED
    elapsed = time.monotonic() - started

    if args.summary_out:
        summary.write(args.summary_out)
    _report(summary, args, elapsed)
    return 0


@contextmanager
def _progress_bar(args: argparse.Namespace) -> Iterator[tqdm]:
    progress = tqdm(
        total=args.config.record_limit(),
        unit=" records",
        unit_scale=True,
        file=sys.stderr,
        disable=args.no_progress or not sys.stderr.isatty(),
    )
    try:
        yield progress
    finally:
        progress.close()


def _send(args: argparse.Namespace, stop: StopFlag, progress: tqdm) -> TrafficSummary:
    """Send the whole run, in this process or in worker processes; raises like `send()`."""
    settings = ProducerSettings(
        bootstrap_servers=args.bootstrap_servers, connect_timeout_seconds=args.connect_timeout
    )
    workers = min(args.workers, args.config.devices_per_tick)  # a worker without devices would idle
    if workers > 1:
        job = SendJob(args.config, settings, args.topic, args.rate, args.window_seconds)
        return send_in_parallel(
            job, workers, stop, on_progress=None if progress.disable else progress.update
        )

    producer = create_producer(settings)
    try:
        return send(
            generate_records(args.config),
            producer,
            args.topic,
            pacer=choose_pacer(args.rate, args.config.tick_seconds, stop),
            summary=TrafficSummary(args.window_seconds),
            stop=stop,
            on_sent=None if progress.disable else (lambda record: progress.update()),
        )
    finally:
        close_producer(producer)


def _report(summary: TrafficSummary, args: argparse.Namespace, elapsed_seconds: float) -> None:
    records = summary.events + summary.malformed_total
    rate = records / elapsed_seconds if elapsed_seconds > 0 else 0.0
    first = iso_utc(summary.first_timestamp) if summary.first_timestamp is not None else "-"
    last = iso_utc(summary.last_timestamp) if summary.last_timestamp is not None else "-"
    print(
        f"{PROG}: sent {summary.events} events ({summary.total_bytes} bytes) and "
        f"{summary.malformed_total} malformed "
        f"records to {args.topic!r} at {args.bootstrap_servers} in {elapsed_seconds:.1f} s "
        f"({rate:,.0f} records/s); event time {first} .. {last}; seed {args.seed}",
        file=sys.stderr,
    )
