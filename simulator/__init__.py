"""Simulated mobile-network usage for the Kafka topic `devices` (docs/contract.md §1, §3).

`python -m simulator --help` for the command line. From Python (tests, benchmarks):

    config = SimulatorConfig(start=..., ticks=60, seed=7)
    records = list(generate_records(config))          # pure, seeded, no network
    summary = send(records, create_producer(ProducerSettings("localhost:9092")), "devices")
    summary.to_dict()                                 # exact byte totals that Kafka acknowledged

`send_in_parallel(SendJob(...), workers, StopFlag())` spreads the devices over worker processes
for higher rates; it starts them with multiprocessing's spawn, so a calling script needs the
usual `if __name__ == "__main__":` guard.
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
from simulator.parallel import SendJob, send_in_parallel
from simulator.producer import (
    BrokerUnavailableError,
    DeliveryError,
    ProducerSettings,
    StopFlag,
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
    "SendJob",
    "SimulatorConfig",
    "StopFlag",
    "TrafficSummary",
    "antenna_id",
    "create_producer",
    "device_id",
    "encode_event",
    "generate_events",
    "generate_records",
    "send",
    "send_in_parallel",
    "unknown_device_id",
]
