"""The two topics the service writes: the dead-letter topic and the profile changelog.

Both writes are acknowledged (idempotent producer, ``acks=all``) before the source offset that
caused them may be stored. The changelog is co-partitioned with the input: the profile of a user
read from input partition *p* lives in changelog partition *p*, so it is written to partition *p*
explicitly (never through the producer's partitioner, which need not match the input producer's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.kafka_reader import PartitionReader
from consumer.domain.deadletter import DeadLetter, dead_letter_headers
from consumer.domain.profile_epoch import (
    EPOCH_HEADER,
    RestoredValue,
    epoch_header,
    read_epoch_header,
    tombstone_read_back,
)
from consumer.domain.topics import copartition_problem
from consumer.errors import TopicError
from consumer.ports import Headers, Record

__all__ = [
    "RESTORE_GROUP_ID",
    "KafkaChangelog",
    "KafkaDeadLetters",
    "restore_partitions",
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
            source=record.partition,
        )


class KafkaChangelog:
    """Writes changed profiles (``None`` = tombstone) to the compacted changelog topic."""

    def __init__(self, producer: AckingProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> asyncio.Future[Any]:
        """Queue the write now; the future is its acknowledgement (``ports.Changelog``). A
        tombstone of an owner with an epoch (above 0) carries it in the ``button.epoch``
        header. The write belongs to the input partition of the same number (a revoke waits for
        it: ``AckingProducer.settle_partitions``)."""
        headers = changelog_headers(value, epoch)
        return self._producer.queue(
            self.topic, key, value, headers, partition=partition, source=partition
        )


def changelog_headers(value: bytes | None, epoch: int) -> Headers | None:
    """The headers of a changelog record: a tombstone's epoch (``EPOCH_HEADER``), else none."""
    if value is None and epoch > 0:
        return [(EPOCH_HEADER, epoch_header(epoch))]
    return None


def restored_value(value: bytes | None, headers: Headers | None) -> RestoredValue:
    """A changelog record's value as the restore applies it: a tombstone with an
    ``EPOCH_HEADER`` is a stamped ``Tombstone`` (the last such header counts)."""
    if value is not None:
        return value
    epoch = 0
    for name, data in headers or ():
        if name == EPOCH_HEADER:
            epoch = read_epoch_header(data)
    return tombstone_read_back(epoch)


# The group id of the changelog reader: librdkafka requires one; the reader never commits.
RESTORE_GROUP_ID = "button-consumer-restore"


RestoreProgress = Callable[[int, int, int], None]
"""Called per batch with (partition, records read in the batch, records left to its end)."""


def restore_partitions(
    config: Mapping[str, Any],
    topic: str,
    partitions: list[int],
    apply: Callable[[int, list[tuple[bytes, RestoredValue]]], None],
    *,
    cancelled: Callable[[int], bool] = lambda _partition: False,
    progress: RestoreProgress | None = None,
    timeout: float = 120.0,
    ends: dict[int, int] | None = None,
    source: str | None = None,
) -> int:
    """Read changelog partitions from the beginning to their end, a batch at a time.

    Blocking: the worker runs it on a thread of its own, beside the poll loop, while the
    partitions stay paused; their records are processed only after it returned.

    Args:
        config: reader properties, ``KafkaSettings.reader_config(RESTORE_GROUP_ID)``.
        topic: the changelog topic.
        partitions: the partitions to restore.
        apply: called with (partition, [(key, value), ...]) per batch of keyed records, in
            offset order; the value as ``restored_value`` reads it (a tombstone with its
            writer's epoch is a ``Tombstone``, one without is None).
        cancelled: asked between batches; a partition it names is read no further.
        progress: told after each batch how far a partition got (``RestoreProgress``).
        timeout: seconds for finding the partitions' ends, and seconds without progress
            before the read gives up (a long restore that progresses is never cut short).
        ends: filled with each partition's end offset, the one the restore read up to (where
            a ``ChangelogWatch`` of it starts).
        source: the input topic the changelog is co-partitioned with; when given, both
            topics' partition counts are asked of the brokers first, and a mismatch (the input
            was given partitions while the service ran, so a member is assigned an input
            partition whose changelog partition does not exist) stops the restore at once.

    Returns:
        the number of records applied.

    Raises:
        TopicError: ``source`` and the changelog have different partition counts
            (``copartition_problem``: the message ``run`` and ``check`` give at start).
        BrokerError: reading failed or stalled, or a partition's end could not be read (the
            message names the topic and the partition).
    """
    if not partitions:
        return 0
    with PartitionReader(config, topic) as reader:
        if source is not None:
            _refuse_a_partition_mismatch(reader, source, timeout)
        marks = reader.watermarks(partitions, time.monotonic() + timeout)
        if ends is not None:
            ends.update({p: end for p, (_start, end) in marks.items()})
        read = 0
        for partition, pairs, next_offset in reader.read_batches(marks, timeout, cancelled):
            keyed = [
                (k, v if v is not None else restored_value(v, h))
                for k, v, h in pairs
                if k is not None
            ]
            apply(partition, keyed)
            read += len(keyed)
            if progress is not None:
                progress(partition, len(pairs), max(marks[partition][1] - next_offset, 0))
        return read


def _refuse_a_partition_mismatch(reader: PartitionReader, source: str, timeout: float) -> None:
    """Raise ``TopicError`` when the changelog ``reader`` reads and the input ``source`` do not
    have the same partition count now (asked of the brokers, not of a cache).

    Raises:
        TopicError: the counts differ (``copartition_problem``).
        BrokerError: the topics' metadata could not be read.
    """
    changelog = len(reader.partitions(timeout))
    inputs = len(reader.partitions(timeout, topic=source))
    problem = copartition_problem(reader.topic, changelog, source, inputs)
    if problem is not None:
        raise TopicError(f"topics unfit for the service: {problem}")
