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

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from consumer.adapters.kafka import AckingProducer, Record
from consumer.domain.deadletter import DeadLetter, dead_letter_headers
from consumer.errors import BrokerError


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
    records are processed only after its profiles are back. Returns the records read.
    ``config`` is ``KafkaSettings.reader_config(RESTORE_GROUP_ID)``, used as given.
    """
    if not partitions:
        return 0
    reader = Consumer(dict(config))
    deadline = time.monotonic() + timeout
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = watermark_offsets(reader, TopicPartition(topic, p), deadline)
            if high > low:
                ends[p] = high
        if not ends:
            return 0
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        return _read_to_end(reader, topic, ends, apply, time.monotonic() + timeout)
    finally:
        reader.close()


# A changelog created a moment ago (first start) may not have a leader yet: wait for it.
_NO_LEADER_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    }
)


def watermark_offsets(
    reader: Consumer, partition: TopicPartition, deadline: float
) -> tuple[int, int]:
    """(low, high) of a partition, waiting out a just-created topic's missing leader."""
    while True:
        try:
            low, high = reader.get_watermark_offsets(partition, timeout=30.0)
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _read_to_end(
    reader: Consumer,
    topic: str,
    ends: dict[int, int],
    apply: Callable[[int, bytes, bytes | None], None],
    deadline: float,
) -> int:
    pending = set(ends)
    read = 0
    while pending:
        if time.monotonic() > deadline:
            raise BrokerError(f"restoring {topic} partitions {sorted(pending)} timed out")
        for message in reader.consume(num_messages=1000, timeout=0.5):
            err = message.error()
            p = message.partition() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(p)
                elif err.fatal():
                    raise BrokerError(f"restoring {topic}: {err.str()}")
                continue
            key = message.key()
            if key is not None:
                apply(p, key, message.value())
                read += 1
            if (message.offset() or 0) + 1 >= ends[p]:
                pending.discard(p)
    return read
