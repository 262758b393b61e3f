"""The two topics the service writes: the dead-letter topic and the profile changelog.

Both writes are acknowledged (idempotent producer, ``acks=all``) before the source offset that
caused them may be stored. The changelog is co-partitioned with the input: the profile of a user
read from input partition *p* lives in changelog partition *p*, so it is written to partition *p*
explicitly (never through the producer's partitioner, which need not match the input producer's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from consumer.adapters.kafka import AckingProducer, PartitionReader, watermark_offsets
from consumer.domain.deadletter import DeadLetter, dead_letter_headers
from consumer.ports import Record

__all__ = [
    "RESTORE_GROUP_ID",
    "KafkaChangelog",
    "KafkaDeadLetters",
    "restore_partitions",
    "watermark_offsets",  # lives in adapters/kafka.py; still importable from here
]


class KafkaDeadLetters:
    """Writes dead letters: same key and value as the source, the reason in headers."""

    def __init__(self, producer: AckingProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def write(self, record: Record, letter: DeadLetter) -> None:
        await self._producer.send(
            self.topic,
            record.key,
            record.value,
            headers=dead_letter_headers(letter, record.headers),
            timestamp_ms=record.timestamp_ms,
        )


class KafkaChangelog:
    """Writes changed profiles (``None`` = tombstone) to the compacted changelog topic."""

    def __init__(self, producer: AckingProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        await self._producer.send(self.topic, key, value, partition=partition)


# The group id of the changelog reader: librdkafka requires one; the reader never commits.
RESTORE_GROUP_ID = "button-consumer-restore"


def restore_partitions(
    config: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    apply: Callable[[int, bytes, bytes | None], None],
    timeout: float = 120.0,
) -> int:
    """Read changelog partitions from the beginning to their end, calling ``apply`` per record.

    Blocking: it runs on the Kafka thread inside the assignment callback, so a partition's
    records are processed only after its profiles are back.

    Args:
        config: reader properties, ``KafkaSettings.reader_config(RESTORE_GROUP_ID)``.
        topic: the changelog topic.
        partitions: the partitions to restore.
        apply: called with (partition, key, value or None for a tombstone) per keyed record.
        timeout: seconds for finding the partitions' ends, and again for reading them.

    Returns:
        the number of records applied.

    Raises:
        BrokerError: reading failed or timed out.
        KafkaException: a partition's end could not be read.
    """
    if not partitions:
        return 0
    with PartitionReader(config, topic) as reader:
        marks = reader.watermarks(partitions, time.monotonic() + timeout)
        read = 0
        for record in reader.read(marks, time.monotonic() + timeout):
            if record.key is not None:
                apply(record.partition, record.key, record.value)
                read += 1
        return read
