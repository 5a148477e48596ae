"""Whether hour H may be published: has the speed layer committed everything Kafka held when H's
lateness allowance ended (docs/contract.md §7)?

Judged per partition from offsets, not from clocks: the target of a partition is the first offset
Kafka stamped at or after H + 1 h + lateness (its broker-side time index, `offsets_for_times`),
or its end offset when nothing that recent has arrived yet; the speed layer is caught up on it
once the end offset of the last micro-batch it applied (speed_partition_offsets, written with its
increments) has reached that target. Records that arrive after the deadline are late data: they
do not hold the hour back, and the republication of late hours takes them in.

Used by the sensor of batch_hourly (platform_airflow.sensors) and by the batch job itself, which
refuses an incomplete hour unless told otherwise (--allow-incomplete).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_LATENESS = timedelta(minutes=10)


class HourIncomplete(RuntimeError):
    """The speed layer has not committed every record the hour needs yet."""


class KafkaUnavailable(RuntimeError):
    """The broker could not be asked for the partitions' offsets."""


@dataclass(frozen=True, order=True)
class PartitionLag:
    topic: str
    partition: int
    target: int
    committed: int

    @property
    def behind(self) -> int:
        return max(self.target - self.committed, 0)


def deadline(hour: datetime, lateness: timedelta = DEFAULT_LATENESS) -> datetime:
    """When hour H's lateness allowance ends: H + 1 h + lateness. HourIncomplete when that is past
    the end of year 9999: such an hour can only be published by hand (--allow-incomplete)."""
    try:
        return hour + timedelta(hours=1) + lateness
    except OverflowError:
        raise HourIncomplete(
            f"the lateness allowance of hour {hour.isoformat()} ends after the year 9999"
        ) from None


def partition_lags(
    topic: str, targets: Mapping[int, int], committed: Mapping[int, int]
) -> list[PartitionLag]:
    """Per partition of the topic, its target and what the speed layer committed (0: nothing
    yet)."""
    return sorted(
        PartitionLag(topic, partition, target, committed.get(partition, 0))
        for partition, target in targets.items()
    )


def records_behind(lags: Iterable[PartitionLag]) -> int:
    return sum(lag.behind for lag in lags)


def describe_lag(lags: Iterable[PartitionLag]) -> str:
    """'speed layer is 12,345 records behind on devices-2 (and 10 on devices-0)', or that it is
    caught up."""
    behind = sorted(
        (lag for lag in lags if lag.behind), key=lambda lag: (-lag.behind, lag.partition)
    )
    if not behind:
        return "speed layer has committed every record of the hour"
    first, rest = behind[0], behind[1:]
    text = f"speed layer is {first.behind:,} records behind on {first.topic}-{first.partition}"
    if rest:
        text += (
            " (and "
            + ", ".join(f"{lag.behind:,} on {lag.topic}-{lag.partition}" for lag in rest)
            + ")"
        )
    return text


def kafka_offsets_at(bootstrap_servers: str, topic: str, moment: datetime) -> dict[int, int]:
    """Per partition, the offset Kafka held at `moment`: the first record stamped at or after it,
    or the end of the partition when no record that recent exists yet."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            enable_auto_commit=False,
            request_timeout_ms=30_000,
        )
    except KafkaError as error:
        raise KafkaUnavailable(
            f"no Kafka broker answers at {bootstrap_servers} ({error})"
        ) from error
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaUnavailable(f"topic {topic} does not exist at {bootstrap_servers}")
        wanted = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        moment_ms = int(moment.timestamp() * 1000)
        if moment_ms <= 0:
            # Before 1970 Kafka held nothing (and negative times name special offsets in its API).
            return {
                tp.partition: offset for tp, offset in consumer.beginning_offsets(wanted).items()
            }
        stamped = consumer.offsets_for_times(dict.fromkeys(wanted, moment_ms))
        ends = consumer.end_offsets(wanted)
        return {
            tp.partition: stamped[tp].offset if stamped.get(tp) is not None else ends[tp]
            for tp in wanted
        }
    except KafkaError as error:
        raise KafkaUnavailable(
            f"Kafka at {bootstrap_servers} did not give the offsets of {topic} ({error})"
        ) from error
    finally:
        consumer.close()


def committed_offsets(cursor, topic: str) -> dict[int, int]:
    """Per partition, the end offset of the last micro-batch the speed layer applied."""
    cursor.execute(
        "SELECT partition, next_offset FROM speed_partition_offsets WHERE topic = %s", (topic,)
    )
    return dict(cursor.fetchall())


def hour_lags(
    bootstrap_servers: str,
    topic: str,
    committed: Mapping[int, int],
    hour: datetime,
    lateness: timedelta = DEFAULT_LATENESS,
    now: datetime | None = None,
) -> list[PartitionLag]:
    """The lag of each partition for hour H; raises HourIncomplete before H's deadline."""
    end = deadline(hour, lateness)
    if (now or datetime.now(UTC)) < end:
        raise HourIncomplete(
            f"the lateness allowance of hour {hour.isoformat()} ends at {end.isoformat()}"
        )
    return partition_lags(topic, kafka_offsets_at(bootstrap_servers, topic, end), committed)
