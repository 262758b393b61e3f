"""The changelog watch: the owned changelog partitions read on, after their restore, for a
former owner's late writes (DESIGN, 7).

A member that lost a partition while stalled can deliver its queued profile writes at any time;
one that lands while the new owner runs is the latest record of its key, the one compaction
keeps. ``ChangelogWatch`` reads each owned changelog partition from the offset its restore
ended at, on a thread of its own (never the event loop's, never the poll loop's consumer), and
reports every record stamped with an epoch below the owner's epoch of the partition: a profile
value's envelope epoch, a tombstone's ``button.epoch`` header (0 without either). The caller
repairs the key (``consumer.engine.fence.LateWriteRepair``).

Memory is bounded: the watch holds nothing of what it read, its consumer prefetches at most
``WATCH_QUEUE_KBYTES`` per the librdkafka queue, and a batch reports each key once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer.adapters.kafka import consume_ready, message_headers
from consumer.domain.profile_epoch import EPOCH_HEADER, FENCE_KEY, epoch_of, read_epoch_header

log = structlog.get_logger("consumer.kafka")

WATCH_QUEUE_KBYTES = 2048
"""librdkafka's prefetch queue of the watch (KB); the restore's reader has 16 MB."""

LateWrite = Callable[[int, bytes, int], None]
"""Called on the watch's thread with (partition, key, epoch of the late record)."""


class ChangelogWatch:
    """Follows owned changelog partitions and reports records of former owners.

    No network I/O happens in the constructor; the thread and its consumer start with the first
    ``follow``. ``follow`` and ``stop`` may be called from any thread; ``close`` once, at the
    end.

    Args:
        config: reader properties, ``KafkaSettings.reader_config(RESTORE_GROUP_ID)`` (the
            watch commits nothing).
        topic: the changelog topic.
        on_late: told of each late record (``LateWrite``), on the watch's thread.
        batch: messages consumed at once.
        poll: seconds one consume waits for messages (and the longest ``close`` waits for the
            thread, plus the consumer's close).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        on_late: LateWrite,
        *,
        batch: int = 500,
        poll: float = 0.5,
    ) -> None:
        self._config = {**config, "queued.max.messages.kbytes": WATCH_QUEUE_KBYTES}
        self.topic = topic
        self._on_late = on_late
        self._batch = batch
        self._poll = poll
        self._lock = threading.Lock()
        self._owned: dict[int, int] = {}
        """Partition -> this owner's epoch, for the partitions followed now."""
        self._changes: list[tuple[bool, int, int]] = []
        """(follow?, partition, offset) for the thread to apply to its assignment, in order."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        """The error that ended the watch's thread (``None`` while it runs or after ``close``):
        the worker stops with it (``Worker(side_failure=...)``), so the pod restarts with a
        watch instead of running on unwatched."""

    def follow(self, partition: int, offset: int, epoch: int) -> None:
        """Read ``partition`` from ``offset`` (where its restore ended) on, reporting records
        stamped below ``epoch`` (this owner's, claimed after the restore)."""
        with self._lock:
            self._owned[partition] = epoch
            self._changes.append((True, partition, offset))
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="changelog-watch", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop(self, partitions: Iterable[int]) -> None:
        """Stop reading ``partitions`` (revoked, lost, or their restore cancelled): nothing
        more of them is reported from now on."""
        with self._lock:
            for partition in partitions:
                if self._owned.pop(partition, None) is not None:
                    self._changes.append((False, partition, 0))

    def close(self) -> None:
        """Stop the thread, which closes its consumer (it commits nothing); waits for it up to
        ``poll`` seconds, then leaves it to end on its own (a daemon thread: a close blocked on
        an absent broker never holds the process)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            self._owned.clear()
            thread = self._thread
        if thread is not None:
            thread.join(self._poll)
            if thread.is_alive():
                log.warning("changelog_watch_close_abandoned")

    @property
    def following(self) -> frozenset[int]:
        """The partitions followed now."""
        with self._lock:
            return frozenset(self._owned)

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = Consumer(self._config)  # in the try: a refused one is a failure too
            while not self._stopping.is_set():
                owned = self._apply_changes(consumer)
                if not owned:
                    self._wake.wait(self._poll)
                    self._wake.clear()
                    continue
                try:
                    messages = consume_ready(consumer, self._batch, self._poll)
                except KafkaException as exc:
                    log.warning("changelog_watch_failed", error=str(exc))
                    self._stopping.wait(self._poll)
                    continue
                self._check(messages, owned)
        except Exception as exc:  # noqa: BLE001 - kept for the worker, which stops with it
            log.error("changelog_watch_stopped", error=str(exc), exc_type=type(exc).__name__)
            self.failure = exc
        finally:
            if consumer is not None:
                consumer.close()

    def _apply_changes(self, consumer: Consumer) -> dict[int, int]:
        """Apply the queued follows and stops to the consumer's assignment; return the owner
        epochs as of the same instant (taken in one step with the changes: a stop and a
        follow landing after it are applied, with their epoch, at the next pass, never judged
        against records of the assignment before them)."""
        with self._lock:
            changes, self._changes = self._changes, []
            owned = dict(self._owned)
        for follow, partition, offset in changes:
            tp = TopicPartition(self.topic, partition, offset)
            try:
                if follow:
                    consumer.incremental_assign([tp])
                else:
                    consumer.incremental_unassign([TopicPartition(self.topic, partition)])
            except KafkaException as exc:
                # Assigned twice (followed again without a stop between) or not assigned.
                log.info("changelog_watch_assignment", partition=partition, error=str(exc))
                if follow:
                    consumer.incremental_unassign([TopicPartition(self.topic, partition)])
                    consumer.incremental_assign([tp])
        return owned

    def _check(self, messages: list[Message], owned: Mapping[int, int]) -> None:
        """Report each record of ``messages`` stamped below its partition's owner epoch, each
        key once per batch."""
        reported: set[tuple[int, bytes]] = set()
        for message in messages:
            err = message.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                    raise KafkaException(err)
                continue
            partition = message.partition() or 0
            owner = owned.get(partition)
            key = message.key()
            if owner is None or key is None or key == FENCE_KEY:
                continue
            value = message.value()
            epoch = epoch_of(value) if value is not None else _tombstone_epoch(message)
            if epoch < owner and (partition, key) not in reported:
                with self._lock:
                    still = self._owned.get(partition) == owner
                if still:
                    reported.add((partition, key))
                    self._on_late(partition, key, epoch)


def _tombstone_epoch(message: Message) -> int:
    epoch = 0
    for name, data in message_headers(message):
        if name == EPOCH_HEADER:
            epoch = read_epoch_header(data)
    return epoch
