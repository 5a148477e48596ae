"""Unit tests of the simulator: generation, summary, sending and the command line, without a broker.

Expected totals are recomputed here from the generated events with plain loops, never
taken from the summary code they check.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from simulator import cli
from simulator.generator import (
    APPS,
    MALFORMED_KINDS,
    SimulatorConfig,
    antenna_id,
    device_id,
    generate_events,
    generate_records,
    malformed_value,
)
from simulator.parallel import SendJob, send_in_parallel, worker_rate, worker_records
from simulator.producer import (
    _RECORDS_PER_POLL,
    BrokerUnavailableError,
    DeliveryError,
    EventRatePacer,
    ProducerSettings,
    StopFlag,
    TickPacer,
    close_producer,
    send,
)
from simulator.summary import TrafficSummary

HOUR_START = int(datetime(2026, 11, 28, 3, tzinfo=UTC).timestamp())
SPEC_ANTENNAS = {
    "00000000-0000-0000-0000-000000000000",
    "11111111-1111-1111-1111-111111111111",
    "22222222-2222-2222-2222-222222222222",
    "33333333-3333-3333-3333-333333333333",
    "44444444-4444-4444-4444-444444444444",
}
SPEC_USERS = {f"00000000-0000-0000-0000-0000000000{n:02d}" for n in range(1, 21)}


def config(**overrides) -> SimulatorConfig:
    options = {"start": HOUR_START, "ticks": 5, "seed": 7}
    options.update(overrides)
    return SimulatorConfig(**options)


def spec_violation(value: bytes) -> str | None:
    """Why a record value is malformed under docs/contract.md §1, or None for a valid event."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return "not json"
    if not isinstance(parsed, dict):
        return "not an object"
    for field, expected_type in (
        ("bytes", int),
        ("timestamp", int),
        ("app", str),
        ("id", str),
        ("antenna_id", str),
    ):
        if field not in parsed:
            return f"missing {field}"
        if parsed[field] is None:
            return f"null {field}"
        if type(parsed[field]) is not expected_type:
            return f"{field} is a {type(parsed[field]).__name__}"
    if parsed["bytes"] < 0:
        return "negative bytes"
    return None


class FakeProducer:
    """Keeps what it was given, and behaves as confluent_kafka.Producer does where `send()` relies
    on it: the deliveries whose number is in `failing` fail, reported (with a real KafkaError)
    only by the next poll() or flush(); with `queue_limit`, produce() raises BufferError once that
    many records wait unacknowledged, until poll() makes room."""

    def __init__(
        self,
        failing: frozenset[int] = frozenset(),
        queue_limit: int | None = None,
        unsettled_after_flush: int = 0,
        fatal_error: KafkaError | None = None,
    ) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.failing = failing
        self.queue_limit = queue_limit
        self.unsettled_after_flush = unsettled_after_flush
        self.fatal_error = fatal_error
        self.full_queue_refusals = 0
        self.flushed = False
        self.closed = False
        self._queued = 0
        self._unreported_failures: list = []

    def produce(self, topic, value=None, key=None, *, on_delivery=None) -> None:
        if self.queue_limit is not None and self._queued >= self.queue_limit:
            self.full_queue_refusals += 1
            raise BufferError("Local: Queue full")
        if len(self.sent) in self.failing:
            self._unreported_failures.append(on_delivery)
        self.sent.append((topic, key, value))
        self._queued += 1

    def poll(self, timeout: float = -1) -> int:
        if self.fatal_error is not None:
            raise KafkaException(self.fatal_error)
        reports = self._unreported_failures
        self._unreported_failures = []
        for on_delivery in reports:
            on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT, "broker said no"), None)
        self._queued = 0
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        self.poll()
        self.flushed = True
        return self.unsettled_after_flush

    def purge(self) -> None:
        self._queued = 0

    def close(self) -> None:
        self.closed = True


# --- generation ---------------------------------------------------------------------------


def test_same_seed_gives_the_same_records():
    assert list(generate_records(config(seed=42))) == list(generate_records(config(seed=42)))


def test_different_seeds_give_different_events():
    assert list(generate_events(config(seed=1))) != list(generate_events(config(seed=2)))


def test_default_ids_are_the_spec_antennas_and_users():
    events = list(generate_events(config(ticks=20)))
    assert {event["antenna_id"] for event in events} == SPEC_ANTENNAS
    assert {event["id"] for event in events} == SPEC_USERS


def test_all_five_apps_are_drawn_within_a_few_ticks():
    apps = {event["app"] for event in generate_events(config(ticks=3))}
    assert apps == {"SKYPE", "TELEGRAM", "FACETIME", "FACEBOOK", "WHATSAPP"}
    assert set(APPS) == apps


def test_antennas_beyond_sixteen_are_distinct_uuids():
    ids = [antenna_id(index) for index in range(40)]
    assert len(set(ids)) == 40
    assert all(str(uuid.UUID(value)) == value for value in ids)
    assert antenna_id(15) == "ffffffff-ffff-ffff-ffff-ffffffffffff"


def test_every_device_reports_once_per_tick_at_the_tick_time():
    events = list(generate_events(config(ticks=4, tick_seconds=30, unknown_devices=3)))
    by_timestamp = defaultdict(list)
    for event in events:
        by_timestamp[event["timestamp"]].append(event["id"])
    assert sorted(by_timestamp) == [HOUR_START, HOUR_START + 30, HOUR_START + 60, HOUR_START + 90]
    expected_devices = sorted(SPEC_USERS | {f"ffffffff-0000-0000-0000-{k:012d}" for k in (1, 2, 3)})
    assert all(sorted(devices) == expected_devices for devices in by_timestamp.values())


def test_unknown_devices_are_not_users():
    devices = {event["id"] for event in generate_events(config(devices=20, unknown_devices=4))}
    unknown = devices - SPEC_USERS
    assert len(unknown) == 4
    assert all(str(uuid.UUID(value)) == value for value in unknown)


def test_duration_of_an_hour_gives_exactly_the_ticks_inside_that_hour():
    events = list(generate_events(config(ticks=None, duration_seconds=3600)))
    assert len(events) == 60 * 20
    assert all(HOUR_START <= event["timestamp"] < HOUR_START + 3600 for event in events)
    assert len({event["timestamp"] for event in events}) == 60


def test_first_stop_condition_reached_wins():
    assert len(list(generate_records(config(ticks=10, max_records=33)))) == 33
    assert len(list(generate_records(config(ticks=2, max_records=1000)))) == 40
    assert len(list(generate_records(config(ticks=None, duration_seconds=90)))) == 2 * 20


def test_without_a_stop_condition_generation_goes_on():
    endless = generate_records(config(ticks=None))
    assert sum(1 for _ in zip(range(5000), endless, strict=False)) == 5000


def test_event_fields_have_the_spec_types_and_ranges():
    for event in generate_events(config(ticks=50)):
        assert type(event["bytes"]) is int and 0 <= event["bytes"] < 10_000
        assert type(event["timestamp"]) is int
        assert event["app"] in APPS


def test_bytes_cover_the_whole_range():
    used = [event["bytes"] for event in generate_events(config(ticks=500))]
    assert min(used) < 100 and max(used) > 9_900


def test_record_is_compact_json_of_the_event_keyed_by_device():
    for record in generate_records(config(ticks=2)):
        assert record.value == json.dumps(record.event, separators=(",", ":")).encode()
        assert json.loads(record.value) == record.event
        assert record.key == record.event["id"].encode()
        assert spec_violation(record.value) is None


def test_device_ids_follow_the_user_metadata_scheme():
    assert device_id(1) == "00000000-0000-0000-0000-000000000001"
    assert device_id(20) == "00000000-0000-0000-0000-000000000020"


# --- malformed records ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_malformed_kind_is_malformed_per_spec(kind):
    valid = next(generate_events(config()))
    for attempt in range(20):  # kinds that pick a field at random: try several picks
        value = malformed_value(kind, valid, random.Random(attempt))
        assert spec_violation(value) is not None, (kind, value)


def test_malformed_kinds_cover_the_spec_cases():
    assert set(MALFORMED_KINDS) == {
        "not_json",
        "json_array",
        "missing_field",
        "null_field",
        "string_bytes",
        "fractional_bytes",
        "iso_timestamp",
        "negative_bytes",
    }


def test_malformed_records_replace_events_and_leave_the_others_unchanged():
    clean = list(generate_records(config(ticks=30)))
    mixed = list(generate_records(config(ticks=30, malformed_rate=0.2)))
    assert len(mixed) == len(clean)
    malformed = [record for record in mixed if record.event is None]
    assert {record.malformed_kind for record in malformed} == set(MALFORMED_KINDS)
    assert all(spec_violation(record.value) is not None for record in malformed)
    for clean_record, mixed_record in zip(clean, mixed, strict=True):
        if mixed_record.event is not None:
            assert mixed_record == clean_record


def test_malformed_records_are_counted_by_kind_and_not_in_totals():
    records = list(generate_records(config(ticks=30, malformed_rate=0.2)))
    summary = send(records, FakeProducer(), "devices")
    valid = [record.event for record in records if record.event is not None]
    kinds = defaultdict(int)
    for record in records:
        if record.event is None:
            kinds[record.malformed_kind] += 1
    result = summary.to_dict()
    assert result["events"] == len(valid)
    assert result["total_bytes"] == sum(event["bytes"] for event in valid)
    assert {kind: count for kind, count in result["malformed"].items() if count} == dict(kinds)


def test_every_record_malformed_leaves_no_totals():
    summary = send(generate_records(config(ticks=2, malformed_rate=1.0)), FakeProducer(), "devices")
    result = summary.to_dict()
    assert result["events"] == 0 and result["total_bytes"] == 0
    assert sum(result["malformed"].values()) == 40
    assert result["first_timestamp"] is None
    assert all(rows == [] for rows in result["windows"].values())


# --- summary --------------------------------------------------------------------------------


def expected_rows(events, field, bucket_seconds):
    """(date, key) -> bytes, recomputed with plain arithmetic on datetimes."""
    totals = defaultdict(int)
    for event in events:
        moment = datetime.fromtimestamp(event["timestamp"], UTC)
        if bucket_seconds == 3600:
            bucket = moment.replace(minute=0, second=0)
        else:
            bucket = moment.replace(
                minute=moment.minute - moment.minute % (bucket_seconds // 60), second=0
            )
        totals[bucket.strftime("%Y-%m-%dT%H:%M:%SZ"), event[field]] += event["bytes"]
    return dict(totals)


def rows_as_dict(rows, field):
    return {(row["date"], row[field]): row["bytes"] for row in rows}


def summary_of(events_config: SimulatorConfig) -> tuple[list, dict]:
    events = list(generate_events(events_config))
    summary = TrafficSummary(window_seconds=300)
    for event in events:
        summary.add(event)
    return events, summary.to_dict()


def test_summary_totals_match_a_recomputation_from_the_events():
    # Starts mid-hour and spans two hours, with unknown devices, so buckets are cut everywhere.
    events, result = summary_of(
        config(start=HOUR_START + 1500, ticks=None, duration_seconds=7200, unknown_devices=2)
    )
    assert result["events"] == len(events) == 120 * 22
    assert result["total_bytes"] == sum(event["bytes"] for event in events)
    assert result["first_timestamp"] == HOUR_START + 1500
    assert result["last_timestamp"] == HOUR_START + 1500 + 7200 - 60
    assert result["window_seconds"] == 300
    for dimension, field in (("antenna", "antenna_id"), ("user", "id"), ("app", "app")):
        assert rows_as_dict(result["windows"][dimension], field) == expected_rows(
            events, field, 300
        )
        assert rows_as_dict(result["hours"][dimension], field) == expected_rows(events, field, 3600)


def test_summary_per_dimension_adds_up_to_the_total():
    _, result = summary_of(config(ticks=None, duration_seconds=3600))
    for scope in ("windows", "hours"):
        for rows in result[scope].values():
            assert sum(row["bytes"] for row in rows) == result["total_bytes"]


def test_summary_buckets_start_on_utc_boundaries():
    _, result = summary_of(
        config(start=HOUR_START + 17, ticks=None, duration_seconds=5400, tick_seconds=37)
    )
    for rows in result["windows"].values():
        for row in rows:
            moment = datetime.strptime(row["date"], "%Y-%m-%dT%H:%M:%SZ")
            assert moment.minute % 5 == 0 and moment.second == 0
    for rows in result["hours"].values():
        for row in rows:
            moment = datetime.strptime(row["date"], "%Y-%m-%dT%H:%M:%SZ")
            assert moment.minute == 0 and moment.second == 0
    assert {row["date"] for row in result["hours"]["app"]} == {
        "2026-11-28T03:00:00Z",
        "2026-11-28T04:00:00Z",
    }


def test_summary_rows_are_sorted_by_date_then_key():
    _, result = summary_of(config(ticks=None, duration_seconds=900, unknown_devices=3))
    for scope in ("windows", "hours"):
        for dimension, field in (("antenna", "antenna_id"), ("user", "id"), ("app", "app")):
            rows = result[scope][dimension]
            keys = [(row["date"], row[field]) for row in rows]
            assert keys == sorted(keys) and len(keys) == len(set(keys))


def test_summary_json_has_exactly_the_documented_shape(tmp_path):
    summary = send(generate_records(config(ticks=3)), FakeProducer(), "devices")
    path = tmp_path / "out" / "summary.json"
    summary.write(path)
    loaded = json.loads(path.read_text())
    assert list(loaded) == [
        "events",
        "malformed",
        "total_bytes",
        "first_timestamp",
        "last_timestamp",
        "window_seconds",
        "windows",
        "hours",
    ]
    assert set(loaded["malformed"]) == set(MALFORMED_KINDS)
    for scope in ("windows", "hours"):
        assert set(loaded[scope]) == {"antenna", "user", "app"}
    assert loaded["windows"]["antenna"][0].keys() == {"antenna_id", "date", "bytes"}
    assert loaded["windows"]["user"][0].keys() == {"id", "date", "bytes"}
    assert loaded["hours"]["app"][0].keys() == {"app", "date", "bytes"}
    assert [entry.name for entry in path.parent.iterdir()] == ["summary.json"]


# --- sending --------------------------------------------------------------------------------


def test_send_hands_every_record_to_the_producer_in_order_and_flushes():
    records = list(generate_records(config(ticks=3, malformed_rate=0.1)))
    producer = FakeProducer()
    send(records, producer, "devices")
    assert producer.sent == [("devices", record.key, record.value) for record in records]
    assert producer.flushed


def test_send_raises_when_a_delivery_fails():
    producer = FakeProducer(failing=frozenset({5}))
    with pytest.raises(DeliveryError, match="1 record.*broker said no"):
        send(generate_records(config(ticks=300)), producer, "devices")
    # An unpaced run hears of failures at its next poll, every _RECORDS_PER_POLL records, and
    # hands nothing over after that.
    assert len(producer.sent) == _RECORDS_PER_POLL
    assert producer.flushed


def test_a_paced_send_stops_at_the_first_record_after_a_failure_is_reported():
    producer = FakeProducer(failing=frozenset({5}))
    pacer = EventRatePacer(1000, sleep=lambda seconds: None)
    with pytest.raises(DeliveryError, match="broker said no"):
        send(generate_records(config(ticks=3)), producer, "devices", pacer=pacer)
    assert len(producer.sent) == 6


def test_a_full_queue_is_waited_out_and_every_record_goes_out_once_in_order():
    records = list(generate_records(config(ticks=10)))
    producer = FakeProducer(queue_limit=7)
    summary = send(records, producer, "devices")
    assert producer.full_queue_refusals > 0
    assert producer.sent == [("devices", record.key, record.value) for record in records]
    assert summary.events == len(records)


def test_records_unacknowledged_when_the_flush_times_out_fail_the_run():
    producer = FakeProducer(unsettled_after_flush=3)
    with pytest.raises(DeliveryError, match="^3 record.*unacknowledged after 1.5 s"):
        send(generate_records(config(ticks=1)), producer, "devices", flush_timeout_seconds=1.5)


def test_a_fatal_error_of_the_client_is_a_delivery_error_not_a_crash():
    producer = FakeProducer(fatal_error=KafkaError(KafkaError._FATAL, "producer fenced"))
    with pytest.raises(DeliveryError, match="producer fenced"):
        send(generate_records(config(ticks=1)), producer, "devices")
    assert producer.sent == []


def test_closing_after_a_fatal_error_raises_nothing_and_leaves_the_queue_unclosed():
    # close() would block on what is still queued: after the client's fatal error, leave it.
    producer = FakeProducer(fatal_error=KafkaError(KafkaError._FATAL, "producer fenced"))
    close_producer(producer)
    assert not producer.closed


def test_closing_an_empty_producer_closes_it():
    producer = FakeProducer()
    close_producer(producer)
    assert producer.closed


def test_the_producer_settings_are_valid_librdkafka_settings_for_exact_sending():
    settings = ProducerSettings("127.0.0.1:1, 127.0.0.1:2")
    config = settings.librdkafka_config()
    assert config["bootstrap.servers"] == "127.0.0.1:1,127.0.0.1:2"
    assert config["acks"] == "all" and config["enable.idempotence"] is True
    # librdkafka itself refuses unknown or ill-typed settings; it connects only in the background.
    producer = Producer(config)
    close_producer(producer)


def test_a_failure_while_the_queue_is_full_ends_the_wait():
    producer = FakeProducer(failing=frozenset({2}), queue_limit=4)
    with pytest.raises(DeliveryError, match="broker said no"):
        send(generate_records(config(ticks=3)), producer, "devices")
    assert len(producer.sent) == 4


def test_send_stops_when_asked():
    stop = StopFlag()
    records = generate_records(config(ticks=None))
    summary = send(
        records,
        FakeProducer(),
        "devices",
        stop=stop,
        on_sent=lambda record: record.tick == 2 and stop.request(),
    )
    assert summary.events == 2 * 20 + 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_rate_pacer_spaces_records_evenly():
    clock = FakeClock()
    pacer = EventRatePacer(100, clock.sleep, clock)
    for number, record in enumerate(generate_records(config(ticks=1))):
        pacer.wait_for(number, record)
    assert clock.now == pytest.approx(1000.0 + 19 / 100)


def test_tick_pacer_waits_once_per_tick():
    clock = FakeClock()
    pacer = TickPacer(60, clock.sleep, clock)
    for number, record in enumerate(generate_records(config(ticks=3))):
        pacer.wait_for(number, record)
    assert clock.sleeps == [60.0, 60.0]


# --- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--rate", "-1"],
        ["--rate", "fast"],
        ["--start", "yesterday"],
        ["--start", "2026-11-28T03:00:00.5Z"],
        ["--malformed-rate", "1.5"],
        ["--ticks", "0"],
        ["--duration", "-60"],
        ["--events", "0"],
        ["--antennas", "0"],
        ["--tick-seconds", "0"],
        ["--window-seconds", "0"],
        ["--devices", "0"],
        ["--connect-timeout", "0"],
    ],
)
def test_bad_flags_are_rejected(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(flags)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_start_is_read_as_utc():
    assert cli.parse_args(["--start", "2026-11-28T03:00:00Z"]).start == HOUR_START
    assert cli.parse_args(["--start", "2026-11-28T04:00:00+01:00"]).start == HOUR_START
    assert cli.parse_args(["--start", "2026-11-28T03:00:00"]).start == HOUR_START


def test_flags_become_the_config():
    args = cli.parse_args(
        [
            "--antennas",
            "7",
            "--devices",
            "3",
            "--unknown-devices",
            "2",
            "--tick-seconds",
            "30",
            "--start",
            "2026-11-28T03:00:00Z",
            "--duration",
            "3600",
            "--events",
            "99",
            "--seed",
            "5",
            "--malformed-rate",
            "0.25",
        ]
    )
    assert args.config == SimulatorConfig(
        start=HOUR_START,
        antennas=7,
        devices=3,
        unknown_devices=2,
        tick_seconds=30,
        duration_seconds=3600,
        max_records=99,
        seed=5,
        malformed_rate=0.25,
    )


def test_unreachable_broker_is_one_line_and_exit_2(capsys):
    status = cli.main(
        [
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--connect-timeout",
            "1",
            "--ticks",
            "1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err and "make up" in err


def test_main_writes_the_summary_after_a_successful_run(tmp_path, monkeypatch, capsys):
    producer = FakeProducer()
    monkeypatch.setattr(cli, "create_producer", lambda settings: producer)
    out = tmp_path / "summary.json"
    flags = [
        "--start",
        "2026-11-28T03:00:00Z",
        "--duration",
        "3600",
        "--rate",
        "0",
        "--seed",
        "3",
        "--no-progress",
    ]
    status = cli.main([*flags, "--topic", "t", "--summary-out", str(out)])
    assert status == 0
    sent_events = [json.loads(value) for _, _, value in producer.sent]
    summary = json.loads(out.read_text())
    assert summary["events"] == len(sent_events) == 1200
    assert summary["total_bytes"] == sum(event["bytes"] for event in sent_events)
    assert rows_as_dict(summary["hours"]["user"], "id") == expected_rows(sent_events, "id", 3600)
    assert producer.closed
    assert "seed 3" in capsys.readouterr().err


def test_main_writes_no_summary_when_delivery_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        cli, "create_producer", lambda settings: FakeProducer(failing=frozenset({0}))
    )
    out = tmp_path / "summary.json"
    status = cli.main(["--ticks", "1", "--rate", "0", "--no-progress", "--summary-out", str(out)])
    assert status == 1
    assert not out.exists()
    assert capsys.readouterr().err.count("\n") == 1


# --- parallel workers -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_workers_together_send_exactly_the_single_process_records(workers):
    run = config(ticks=4, unknown_devices=3, malformed_rate=0.1, max_records=70)
    single = list(generate_records(run))
    shares = [list(worker_records(run, index, workers)) for index in range(workers)]
    assert sorted(record for share in shares for record in share) == sorted(single)
    for share in shares:  # each device belongs to one worker, which keeps the run's order
        assert share == [record for record in single if record.key in {r.key for r in share}]
    assert len({record.key for share in shares for record in share}) == 23


def test_merged_worker_summaries_equal_the_single_process_summary():
    run = config(ticks=None, duration_seconds=3600, unknown_devices=2, malformed_rate=0.05)
    single = send(generate_records(run), FakeProducer(), "devices").to_dict()
    merged = TrafficSummary()
    for index in range(3):
        merged.merge(send(worker_records(run, index, 3), FakeProducer(), "devices"))
    assert merged.to_dict() == single


def test_workers_share_a_rate_in_proportion_to_their_devices():
    job = SendJob(
        config(devices=20, unknown_devices=1),
        ProducerSettings("unused:9092"),
        "devices",
        2100.0,
        300,
    )
    rates = [worker_rate(job, index, 2) for index in range(2)]
    assert rates == [pytest.approx(1100.0), pytest.approx(1000.0)]
    assert worker_rate(SendJob(job.config, job.settings, "devices", 0.0, 300), 0, 2) == 0.0


def test_parallel_run_against_an_unreachable_broker_raises_broker_unavailable():
    job = SendJob(
        config(ticks=1),
        ProducerSettings("127.0.0.1:1", connect_timeout_seconds=1),
        "devices",
        0.0,
        300,
    )
    with pytest.raises(BrokerUnavailableError):
        send_in_parallel(job, 2, StopFlag())
