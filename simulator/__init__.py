"""Simulated mobile-network usage for the Kafka topic `devices` (SPEC sections 1 and 3).

`python -m simulator --help` for the command line. From Python (tests, benchmarks):

    config = SimulatorConfig(start=..., ticks=60, seed=7)
    records = list(generate_records(config))          # pure, seeded, no network
    summary = send(records, create_producer(ProducerSettings("localhost:9092")), "devices")
    summary.to_dict()                                 # exact byte totals that Kafka acknowledged
"""

from simulator.generator import (
    APPS,
    MALFORMED_KINDS,
    Event,
    Record,
    SimulatorConfig,
    antenna_id,
    device_id,
    encode_event,
    generate_events,
    generate_records,
    unknown_device_id,
)
from simulator.producer import (
    BrokerUnavailableError,
    DeliveryError,
    ProducerSettings,
    create_producer,
    send,
)
from simulator.summary import TrafficSummary

__all__ = [
    "APPS",
    "MALFORMED_KINDS",
    "BrokerUnavailableError",
    "DeliveryError",
    "Event",
    "ProducerSettings",
    "Record",
    "SimulatorConfig",
    "TrafficSummary",
    "antenna_id",
    "create_producer",
    "device_id",
    "encode_event",
    "generate_events",
    "generate_records",
    "send",
    "unknown_device_id",
]
