"""Reading partitions to their end outside the consumer group: ``PartitionReader`` (what the
profile restore and ``replay-dlq`` use) and ``watermark_offsets`` (a partition's low and high
watermarks, waiting for the leader of a topic created a moment ago)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer.adapters.kafka import consume_ready, message_headers, to_record
from consumer.domain.wording import counted
from consumer.errors import BrokerError
from consumer.ports import Headers, Record

KeyedValue = tuple[bytes | None, bytes | None, Headers | None]
"""A record as ``read_batches`` hands it out: key, value (None: a tombstone) and, for a
tombstone only, its headers (a value's are not read: the restore's fast path)."""

log = structlog.get_logger("consumer.kafka")

# A topic created a moment ago (first start) may not have a leader yet: wait for it.
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
    """(low, high) of a partition, waiting out a just-created topic's missing leader.

    A partition unknown to the reader's cached metadata (a partition added to the topic since
    the reader learnt it: librdkafka refreshes a known topic's metadata only every
    ``topic.metadata.refresh.interval.ms``, 5 minutes by default) makes the reader ask the
    brokers for the topic's metadata again before the next attempt, so a partition that exists
    is found at once instead of failing at ``deadline``.

    Raises:
        KafkaException: another error, or still no leader at ``deadline`` (monotonic time).
    """
    while True:
        try:
            low, high = reader.get_watermark_offsets(partition, timeout=30.0)
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            if code in _UNKNOWN_HERE:
                _refresh_metadata(reader, partition.topic, deadline)
        time.sleep(0.1)


# What the reader's cached metadata answers for a partition or topic it does not know: a
# metadata request of its own refreshes that cache.
_UNKNOWN_HERE = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC})


def _refresh_metadata(reader: Consumer, topic: str, deadline: float) -> None:
    """Ask the brokers for ``topic``'s metadata (librdkafka updates its cache with the answer);
    a failure is left to the next attempt of the caller."""
    try:
        reader.list_topics(topic, timeout=max(0.1, min(10.0, deadline - time.monotonic())))
    except KafkaException as exc:
        log.debug("metadata_refresh_failed", topic=topic, error=str(exc))


# Answers of a group coordinator that is moving or still loading (a fresh or restarting
# cluster): asking again shortly succeeds.
_COORDINATOR_MOVING: Final = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


class PartitionReader:
    """Reads partitions of one topic from chosen offsets to where they end (blocking).

    A consumer that assigns partitions itself: it joins no group and sees no rebalance. For what
    must be read completely before going on: the profile changelog on assignment, the dead
    letters present when ``replay-dlq`` starts. No network I/O happens in the constructor.

    Args:
        config: reader properties, ``KafkaSettings.reader_config(group_id)`` (no automatic
            commit, partition ends reported).
        topic: the topic to read.
    """

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(dict(config))
        self._closed = False

    def __enter__(self) -> PartitionReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def partitions(self, timeout: float = 30.0, topic: str | None = None) -> list[int]:
        """The partition numbers of the topic (or of ``topic``), ascending, as the brokers
        answer now (the reader's cached metadata is refreshed with the answer).

        Raises:
            BrokerError: the topic does not exist (or its metadata has an error), or the
                brokers did not answer within ``timeout`` seconds.
        """
        name = self.topic if topic is None else topic
        try:
            info = self._consumer.list_topics(name, timeout=timeout).topics.get(name)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the metadata of topic {name}: {exc}") from exc
        if info is None or info.error is not None:
            raise BrokerError(f"topic {name} not found")
        return sorted(info.partitions)

    def watermarks(self, partitions: Iterable[int], deadline: float) -> dict[int, tuple[int, int]]:
        """Per partition, (first offset, offset after the last record) now; a partition added
        since the reader last read the topic's metadata is found (``watermark_offsets``).

        Raises:
            BrokerError: a partition not readable, or still unknown or without a leader at
                ``deadline`` (monotonic); the message names the topic and the partition, and
                for a partition the topic does not have, the topic's partition count.
        """
        marks = {}
        for p in partitions:
            try:
                marks[p] = watermark_offsets(
                    self._consumer, TopicPartition(self.topic, p), deadline
                )
            except KafkaException as exc:
                raise BrokerError(self._watermark_failure(p, exc)) from exc
        return marks

    def _watermark_failure(self, partition: int, exc: KafkaException) -> str:
        """What ``watermarks`` says of a partition whose ends could not be read."""
        error = exc.args[0] if exc.args else None
        text = error.str() if isinstance(error, KafkaError) else str(exc)
        where = f"{self.topic} partition {partition}"
        if isinstance(error, KafkaError) and error.code() in _UNKNOWN_HERE:
            try:
                count = len(self.partitions(timeout=5.0))
            except (BrokerError, KafkaException):
                return f"cannot read the ends of {where}: {text}"
            return (
                f"cannot read the ends of {where}: {self.topic} has "
                f"{counted(count, 'partition')} ({text})"
            )
        return f"cannot read the ends of {where}: {text}"

    def committed(self, partitions: Iterable[int], timeout: float = 30.0) -> dict[int, int | None]:
        """Per partition, the offset committed by the reader's group (None: nothing committed).

        A retriable error (the group's coordinator moving or still loading, as on a fresh
        cluster) is retried until ``timeout``.
        """
        parts = [TopicPartition(self.topic, p) for p in partitions]
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self._consumer.committed(
                    parts, timeout=max(0.1, deadline - time.monotonic())
                )
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and (
                    error.retriable() or error.code() in _COORDINATOR_MOVING
                )
                if not retriable or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in answer}

    def read(
        self, ranges: Mapping[int, tuple[int, int]], deadline: float | None = None
    ) -> Iterator[Record]:
        """The records of each partition ``p`` from ``ranges[p][0]`` up to (excluding)
        ``ranges[p][1]``, in offset order per partition; partitions interleave.

        Raises:
            BrokerError: a fatal Kafka error, or not done by ``deadline`` (monotonic time).
        """
        ends = {p: end for p, (start, end) in ranges.items() if end > start}
        if not ends:
            return
        self._consumer.assign([TopicPartition(self.topic, p, ranges[p][0]) for p in ends])
        pending = set(ends)
        while pending:
            if deadline is not None and time.monotonic() > deadline:
                raise BrokerError(f"reading {self.topic} partitions {sorted(pending)} timed out")
            for message in consume_ready(self._consumer, 500, 0.5):
                if self._is_event(message, pending):
                    continue
                partition = message.partition() or 0
                offset = message.offset() or 0
                if offset < ends[partition]:
                    yield to_record(message)
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)

    def read_batches(
        self,
        ranges: Mapping[int, tuple[int, int]],
        stall: float,
        skip: Callable[[int], bool] = lambda _partition: False,
        batch: int = 10_000,
    ) -> Iterator[tuple[int, list[KeyedValue], int]]:
        """The records (``KeyedValue``: key, value, a tombstone's headers) of each partition
        ``p`` from ``ranges[p][0]`` up to (excluding) ``ranges[p][1]``, a consumed batch at a
        time: ``(partition, records, next offset)``, in offset order per partition. The fast
        path of the profile restore: no ``Record`` per message, no headers but a tombstone's.

        Args:
            stall: seconds without a record or a partition end before giving up (a long read
                that makes progress is never cut short).
            skip: asked per partition between batches; a partition it names is no longer read.
            batch: messages consumed at once.

        Raises:
            BrokerError: a fatal Kafka error, or no progress for ``stall`` seconds.
        """
        ends = {p: end for p, (start, end) in ranges.items() if end > start}
        if not ends:
            return
        self._consumer.assign([TopicPartition(self.topic, p, ranges[p][0]) for p in ends])
        pending = set(ends)
        progress = time.monotonic()
        while pending:
            skipped = {p for p in pending if skip(p)}
            if skipped:
                pending -= skipped
                self._consumer.incremental_unassign(
                    [TopicPartition(self.topic, p) for p in skipped]
                )
                if not pending:
                    return
            messages = consume_ready(self._consumer, batch, 0.5)
            if not messages:
                if time.monotonic() - progress > stall:
                    raise BrokerError(
                        f"reading {self.topic} partitions {sorted(pending)}: no progress for "
                        f"{stall:.0f}s"
                    )
                continue
            progress = time.monotonic()
            yield from self._group(messages, ends, pending)

    def _is_event(self, message: Message, pending: set[int]) -> bool:
        """Whether ``message`` is an event, not a record: a partition's end (it leaves
        ``pending``) or a non-fatal error are passed over; a fatal error, or a fetch the brokers'
        authorizer refused, raises ``BrokerError``.

        A refused fetch (no ``Read`` ACL on the topic: TOPIC_AUTHORIZATION_FAILED) is not fatal
        to librdkafka, which reports it again at every fetch: passed over, it counted as
        progress, and the read ended only at its stall timeout (the restore's: 2 minutes),
        saying nothing of the ACL. A refused group (GROUP_AUTHORIZATION_FAILED: librdkafka looks
        for the coordinator of the reader's group id) is passed over: the reader joins no group,
        and only a commit needs one (``commit`` raises it)."""
        err = message.error()
        if err is None:
            return False
        if err.code() == KafkaError._PARTITION_EOF:
            pending.discard(message.partition() or 0)
        elif err.fatal():
            raise BrokerError(f"reading {self.topic}: {err.str()}")
        elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise BrokerError(
                f"reading {self.topic}: TOPIC_AUTHORIZATION_FAILED: this principal may not Read "
                f'topic {self.topic} (an ACL is missing, README "Kafka ACLs"): {err.str()}'
            )
        return True

    def _group(
        self, messages: list[Message], ends: Mapping[int, int], pending: set[int]
    ) -> Iterator[tuple[int, list[KeyedValue], int]]:
        """A consumed batch per partition (see ``read_batches``); ends reached leave
        ``pending``."""
        by_partition: dict[int, list[KeyedValue]] = {}
        last: dict[int, int] = {}
        for message in messages:
            if self._is_event(message, pending):
                continue
            partition = message.partition() or 0
            if partition not in pending:
                continue
            offset = message.offset() or 0
            if offset < ends[partition]:
                pairs = by_partition.get(partition)
                if pairs is None:
                    pairs = by_partition[partition] = []
                value = message.value()
                headers = None if value is not None else message_headers(message)
                pairs.append((message.key(), value, headers))
                last[partition] = offset
            if offset + 1 >= ends[partition]:
                pending.discard(partition)
        for partition, pairs in by_partition.items():
            yield partition, pairs, last[partition] + 1

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit ``offsets`` (partition -> next offset to read) for the reader's group, now.

        Raises:
            KafkaException: the commit failed.
        """
        if offsets:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in offsets.items()],
                asynchronous=False,
            )

    def close(self) -> None:
        """Close the consumer (it commits nothing). Idempotent."""
        if not self._closed:
            self._closed = True
            self._consumer.close()


def committed_partitions(
    config: Mapping[str, Any], topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, int]:
    """The partitions of ``topic`` on which the group of ``config`` (a reader's configuration:
    ``KafkaSettings.reader_config(group)``) has committed an offset, with it; empty for a group
    that never committed there (or does not exist).

    Asked with the consumer's own OffsetFetch, which joins no group and commits nothing, not
    the admin API's ListConsumerGroupOffsets: that one can abort the process when it times out
    and the coordinator answers later (librdkafka #4605).

    Raises:
        BrokerError: the group's offsets could not be read (not authorized, no coordinator).
    """
    try:
        with PartitionReader(config, topic) as reader:
            committed = reader.committed(range(partitions), timeout)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot read the committed offsets of group {config.get('group.id')} "
            f"(KAFKA_GROUP_ID): {exc}"
        ) from exc
    return {p: offset for p, offset in committed.items() if offset is not None}
