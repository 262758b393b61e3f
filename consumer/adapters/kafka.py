"""confluent-kafka at the edge: the consumer-group source (``KafkaSource``) and what the other
Kafka adapters share with it (message conversion, the one-thread executor, deadlines).

The consumer is used from one dedicated thread (librdkafka's poll, rebalance callbacks, offset
store and commit all run there), so the asyncio loop never blocks on Kafka. The offset reads of
``lag`` and ``backlog`` wait on the group coordinator and the partitions' leaders: they go
through clients of their own, on a thread of their own, so that a broker that does not answer
holds no poll. The producer is in
``kafka_producer``, the reader of partitions to their end in ``kafka_reader``, topic
administration in ``kafka_admin``.

Every class here takes a finished librdkafka configuration and adds nothing to it: the
configurations, with the properties the guarantees rest on (offset store off, idempotent
``acks=all`` producer), are assembled in one place, ``consumer.settings.KafkaSettings``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import structlog
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec

from consumer.errors import BrokerError
from consumer.ports import Headers, PartitionLag, RebalanceListener, Record

log = structlog.get_logger("consumer.kafka")

_UNAUTHORIZED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


WAKE_TIMEOUT = 0.5
"""Seconds the request that wakes the fetcher after a resume may take (``KafkaSource``)."""

READ_TIMEOUT = 5.0
"""Seconds an offset read of ``lag`` or ``backlog`` may wait for a broker (``KafkaSource``)."""

_LATEST: Final[OffsetSpec] = OffsetSpec.latest()  # type: ignore[no-untyped-call]

_NO_LEADER_CACHED: Final = frozenset(
    {
        KafkaError._NOENT,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.LEADER_NOT_AVAILABLE,
    }
)
"""What a client answers, without asking any broker, for a partition its cached metadata names
no leader for: the leader was away when it last asked (every replica's broker down), or the
partition was added since. Per partition ``LEADER_NOT_AVAILABLE`` (an admin request some of
whose partitions have a leader) or ``_UNKNOWN_PARTITION``; ``_NOENT`` ("No leaders found") for a
whole admin request none of whose partitions has one. librdkafka takes a leader missing from its
cache for a lasting state and asks again only at its own refresh
(``topic.metadata.refresh.interval.ms``, 5 minutes by default). Measured with librdkafka 2.16:
an admin client that learnt the partition while its broker was down answered ``_NOENT`` for
271 s after the cluster had the leader back, a reads' consumer ``_UNKNOWN_PARTITION`` until its
``list_topics``; a partition added to the topic, ``_UNKNOWN_PARTITION`` from both."""

_STALE_LEADER: Final = (
    frozenset(
        {
            KafkaError.FENCED_LEADER_EPOCH,
            KafkaError.UNKNOWN_LEADER_EPOCH,
            KafkaError.NOT_LEADER_FOR_PARTITION,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.REPLICA_NOT_AVAILABLE,
            KafkaError.OFFSET_NOT_AVAILABLE,
            KafkaError.KAFKA_STORAGE_ERROR,
        }
    )
    | _NO_LEADER_CACHED
)
"""ListOffsets errors that mean the admin client's cached metadata no longer matches the
partitions' leadership: a broker answered from a leadership it no longer matches (Kafka's own
client refreshes its metadata on these, KAFKA-9535), or the cache names no leader at all
(``_NO_LEADER_CACHED``, answered without a request). librdkafka's admin client does not refresh
it: it asks again with the same leader epochs, or answers from the same cache, and every read
fails until its periodic refresh, or for good (measured with librdkafka 2.16:
FENCED_LEADER_EPOCH for as long as the process ran, after a single broker stalled 20 s past
its KRaft session and was fenced and unfenced; ``_NOENT`` for 65 s after a three-broker
cluster's rolling restart, and for 271 s in a measurement, once the leader was back). The lag read
replaces the client on any of them (``kafka_admin_client_renewed``)."""


def kafka_error_text(exc: BaseException) -> str:
    """librdkafka's own text of a ``KafkaException`` ("Local: Broker transport failure"...);
    the type and message of any other exception."""
    if exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return f"{type(exc).__name__}: {exc}"


def message_headers(message: Message) -> Headers:
    """A message's headers as (name, bytes) pairs, in order."""
    raw = message.headers()
    if not raw:
        return []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [
        (str(name), value.encode() if isinstance(value, str) else (value or b""))
        for name, value in pairs
    ]


def to_record(message: Message) -> Record:
    ts: int = message.timestamp()[1]
    headers = message_headers(message)
    return Record(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=message.key(),
        value=message.value(),
        timestamp_ms=ts if ts and ts > 0 else None,
        headers=headers,
    )


class _KafkaThread:
    """A one-thread executor whose thread is a daemon.

    librdkafka calls can block for as long as the cluster is unreachable (a synchronous commit,
    ``close``). The service bounds them with deadlines; a daemon thread guarantees a call that
    never returns cannot keep the process alive after the deadline has passed.
    """

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ]
        self._work = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """``fn(*args)``, run on the thread; once it is stopped, a ``BrokerError`` at once."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._stopped:
            future.set_exception(BrokerError("the Kafka consumer is closed"))
        else:
            self._work.put((future, lambda: fn(*args)))
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def shutdown(self) -> None:
        self._stopped = True
        self._work.put(None)

    def stop(self, error: BaseException, timeout: float) -> bool:
        """Fail the calls not started yet with ``error``, let the one running end, and stop.

        Returns:
            Whether the thread ended within ``timeout`` seconds (a call that is still running
            may still use what it was given).
        """
        self._stopped = True
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[0].set_running_or_notify_cancel():
                item[0].set_exception(error)
        self._work.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


def consume_ready(
    consumer: Consumer,
    max_messages: int,
    timeout: float,
    revoked: Callable[[], set[int]] = set,
) -> list[Message]:
    """Up to ``max_messages`` messages (and events), waiting at most ``timeout`` seconds only
    while none is ready.

    ``revoked()``: the partitions revoked or lost (by the rebalance callbacks, which
    librdkafka serves inside ``consume``) since it was last called. librdkafka purges a
    revoked partition's messages from the ``consume`` call that served the revocation (its
    barrier op), not from an earlier call: those are dropped here, as if never fetched (the
    partition's next owner, or this member on its next assignment, reads them again from the
    committed offset).

    ``Consumer.consume(n, timeout)`` returns early only once it holds ``n`` messages: with
    fewer ready it waits out the whole ``timeout`` (librdkafka's
    ``rd_kafka_consume_batch_queue`` serves the queue until the batch is full or the timeout
    expires; measured with librdkafka 2.16: 1, 10 or 100 ready messages took the full second of
    ``consume(500, 1.0)``). So what is ready is taken at once, and only an empty queue is
    waited on, for its first message, then topped up with what came with it.
    """
    messages = consumer.consume(num_messages=max_messages, timeout=0)
    if messages:
        return messages
    messages = consumer.consume(num_messages=1, timeout=timeout)
    if messages and max_messages > 1:
        revoked()  # a revocation served in the call above purged that call's own messages
        more = consumer.consume(num_messages=max_messages - 1, timeout=0)
        gone = revoked()
        if gone:
            messages = [m for m in messages if m.partition() not in gone]
        messages.extend(more)
    return messages


def call_with_deadline(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run ``fn`` on a daemon thread; raise ``BrokerError`` if it does not return in time."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error.append(exc)

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BrokerError(f"{what} did not complete within {timeout:.0f}s")
    if error:
        raise error[0]
    return result[0] if result else None


# librdkafka's line when auto.offset.reset moves a partition whose offset is out of range, e.g.
# "orders [0]: offset reset (at offset 3 (leader epoch -1), broker 1) to offset BEGINNING
# (leader epoch -1): fetch failed due to requested offset not available on the broker: ...".
_OFFSET_RESET = re.compile(
    r"(?P<topic>[^\s\[\]]+) \[(?P<partition>\d+)\]: offset reset "
    r"\(at (?:offset )?(?P<offset>-?\d+|[A-Z]+)[^:]*? to (?:offset )?(?P<to>-?\d+|[A-Z]+)"
)
_RESET_TO = {"BEGINNING": "earliest", "END": "latest"}

OffsetResetCallback = Callable[[int, str], None]
"""``(partition, reset_to)``: ``reset_to`` is ``earliest``, ``latest``, ``offset`` (a numeric
offset) or ``other``."""


class _OffsetResetWatch:
    """confluent-kafka's ``logger`` for the consumer: passes every line on to the configured
    logger, and turns librdkafka's offset-reset line for ``topic`` into a ``kafka_offset_reset``
    warning and a call of ``on_reset`` (on the Kafka thread, inside ``consume``).

    librdkafka reports an offset reset by ``auto.offset.reset`` (the committed offset or the
    fetch position is out of range: it fell out of retention, or lies past the end, e.g. once
    the topic was deleted and created again) only as a log line, at warning level (a partition
    without a committed offset is looked up at debug level, never seen here): the records
    skipped are never read, and after a reset to a lower position the records handed out are
    new at offsets handed out before. Measured with librdkafka 2.16: the lines are served
    inside ``consume``, on the thread that polls, in the order of its queue.
    """

    def __init__(self, inner: Any, topic: str, on_reset: OffsetResetCallback) -> None:
        self._inner = inner
        self._topic = topic
        self._on_reset = on_reset

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if self._inner is not None:
            self._inner.log(level, fmt, *args)
        try:
            facility, message = str(args[0]), str(args[-1])
        except IndexError:
            return
        match = _OFFSET_RESET.search(message) if facility == "OFFSET" else None
        if match is None or match["topic"] != self._topic:
            return
        offset, to = match["offset"], match["to"]
        reset_to = _RESET_TO.get(to, "offset" if to.lstrip("-").isdigit() else "other")
        partition = int(match["partition"])
        log.warning(
            "kafka_offset_reset",
            topic=self._topic,
            partition=partition,
            offset=int(offset) if offset.lstrip("-").isdigit() else offset,
            reset_to=reset_to,
            detail=message,
        )
        self._on_reset(partition, reset_to)


class KafkaSource:
    """The input topic, read by a consumer group, from one dedicated thread (``ports.Source``).

    The listener given to ``start`` receives partition numbers on the Kafka thread, inside
    ``poll``: it may block (to drain and commit) but not call this object's async methods.
    ``commit_now`` is safe to call from it.

    ``config`` is ``KafkaSettings.consumer_config()``, used as given: offsets are stored only by
    ``store`` because it turns librdkafka's automatic offset store off. Only its ``logger`` is
    wrapped: an offset reset by ``auto.offset.reset`` (records skipped, e.g. because the committed
    offset fell out of retention) is logged as ``kafka_offset_reset`` (topic, partition, the
    offset it was at, ``reset_to``), reported to ``on_offset_reset(partition, reset_to)`` and
    kept for ``offsets_reset``; a store after it, or below the offset stored before, is also
    committed with its offset (``store_now``).

    ``lag`` and ``backlog`` read offsets on a thread of their own (``kafka-reads``), through
    clients of their own: a coordinator or leader that does not answer makes a read wait out
    its timeout (``READ_TIMEOUT``), and the poll loop's consumer must not wait with it
    (confluent-kafka 2.16 lets one thread at a time into a ``Consumer``: a pause waited behind
    another thread's ``committed``). The committed offsets and the partitions' start offsets
    are read by a second consumer, of the same group id but never a member of the group (it
    does not subscribe; group membership properties are left out of its configuration).
    ``admin_config`` (``KafkaSettings.admin_config()``) gives the reads an admin client, which
    asks for every partition's end offset in one request per leader; without it, the second
    consumer asks partition by partition. The admin client does not read committed offsets: its
    coordinator-bound requests (ListConsumerGroupOffsets) abort the process when one times out
    while the coordinator does not answer and it then comes back (librdkafka #4605, unfixed in
    2.16).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        on_offset_reset: OffsetResetCallback | None = None,
        *,
        admin_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._config = dict(config)
        self._admin_config = None if admin_config is None else dict(admin_config)
        self._admin: AdminClient | None = None
        # The end the consumer reads to: the last stable offset under read_committed
        # (librdkafka's default), the high watermark under read_uncommitted.
        self._isolation = (
            IsolationLevel.READ_UNCOMMITTED
            if self._config.get("isolation.level") == "read_uncommitted"
            else IsolationLevel.READ_COMMITTED
        )
        reported = on_offset_reset or (lambda _p, _to: None)

        def reset(partition: int, reset_to: str) -> None:  # Kafka thread, inside consume
            self._resets.add(partition)
            self._reset_since_store.add(partition)
            reported(partition, reset_to)

        self._config["logger"] = _OffsetResetWatch(self._config.get("logger"), topic, reset)
        self.topic = topic
        self._executor = _KafkaThread("kafka")
        self._consumer: Consumer | None = None
        # Partition ends met by polls and not yet taken (``ends_reached``; event loop only).
        self._ends: dict[int, int] = {}
        # Partitions whose fetch position auto.offset.reset moved: met by the polls (Kafka
        # thread), then kept until taken (``offsets_reset``; event loop only).
        self._resets: set[int] = set()
        self._resets_met: set[int] = set()
        # Kafka thread only (``store_now``): the offset last stored per assigned partition, and
        # the partitions reset since their last store. Either makes a store commit explicitly.
        self._stored: dict[int, int] = {}
        # The first offset handed out per partition since its assignment (set by ``poll`` on
        # the event loop, dropped by the revocation callbacks): where a group that has
        # committed nothing there started reading (``lag``).
        self._first_handed_out: dict[int, int] = {}
        self._reset_since_store: set[int] = set()
        # Partitions revoked or lost by rebalance callbacks, not yet seen by a poll (Kafka
        # thread only: ``consume_ready`` drops records fetched before their revocation).
        self._revoked: set[int] = set()
        # The reads' consumer: the group's offsets without being a member of the group.
        self._reader_config = {
            k: v for k, v in config.items() if not k.startswith(("group.", "partition."))
        }
        self._reader_config.update(
            {
                "group.id": self._config.get("group.id", ""),
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            }
        )
        self._reads = _KafkaThread("kafka-reads")
        self._reader: Consumer | None = None
        self.commit_timeout = 15.0
        self.close_timeout = 30.0
        self._in_rebalance_callback = False
        # KIP-848's protocol and cooperative-sticky assignment hand out increments; an eager
        # (classic, range or round-robin) assignment replaces the whole assignment.
        self._incremental = self._config.get("group.protocol", "classic") == "consumer" or (
            "cooperative" in str(self._config.get("partition.assignment.strategy", ""))
        )

    # -- lifecycle (all on the Kafka thread) -------------------------------------------------

    async def start(self, listener: RebalanceListener) -> None:
        """Create the consumer and subscribe; ``listener`` gets every rebalance."""
        await self._call(self._start, listener)

    def _start(self, listener: RebalanceListener) -> None:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(
            [self.topic],
            on_assign=lambda c, parts: self._assign_callback(c, listener, parts),
            on_revoke=lambda _c, parts: self._revoke_callback(listener, parts),
            on_lost=lambda _c, parts: self._lost_callback(listener, parts),
        )

    def _assign_callback(
        self, consumer: Consumer, listener: RebalanceListener, parts: list[TopicPartition]
    ) -> None:
        # Apply the assignment first (confluent-kafka then does not apply it again), so that
        # the listener can pause the new partitions before they are ever fetched: librdkafka
        # does not carry a pause to a partition this member did not own.
        if self._incremental:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)
        self._in_rebalance_callback = True
        try:
            listener.on_assign(_partitions(parts))
        finally:
            self._in_rebalance_callback = False

    def _revoke_callback(self, listener: RebalanceListener, parts: list[TopicPartition]) -> None:
        self._revoked.update(tp.partition for tp in parts)
        self._in_rebalance_callback = True
        try:
            listener.on_revoke(_partitions(parts))
        finally:
            self._in_rebalance_callback = False
            self._forget_stored(parts)

    def _lost_callback(self, listener: RebalanceListener, parts: list[TopicPartition]) -> None:
        self._revoked.update(tp.partition for tp in parts)
        try:
            listener.on_lost(_partitions(parts))
        finally:
            self._forget_stored(parts)

    def _forget_stored(self, parts: list[TopicPartition]) -> None:
        """A revoked partition's next assignment starts from what the group committed (its
        stores in this one must not make a store of the next one look rewound)."""
        for tp in parts:
            self._stored.pop(tp.partition, None)
            self._first_handed_out.pop(tp.partition, None)

    def _revoked_since(self) -> set[int]:
        """Partitions revoked or lost since the last call (Kafka thread: ``consume_ready``)."""
        revoked, self._revoked = self._revoked, set()
        return revoked

    async def close(self) -> None:
        """Leave the group (revoking, hence committing, what is assigned) and close.

        Offset reads not started yet fail with ``BrokerError``; their consumer is closed once
        the one running has ended (bounded by ``READ_TIMEOUT``): librdkafka must not destroy a
        client another thread is inside of.

        Bounded by ``close_timeout``: with the cluster unreachable, librdkafka's close can wait
        indefinitely; the process then exits anyway (what is not committed is replayed).

        Raises:
            BrokerError: the close took longer than ``close_timeout``, or a read did not end
                within its timeout (the consumer is then left open).
        """
        try:
            await asyncio.wait_for(self._call(self._close), self.close_timeout)
        except TimeoutError:
            raise BrokerError(f"closing the consumer took over {self.close_timeout:.0f}s") from None
        finally:
            self._executor.shutdown()

    def _close(self) -> None:
        if not self._reads.stop(BrokerError("the Kafka consumer is closing"), READ_TIMEOUT + 1.0):
            raise BrokerError("a Kafka offset read did not end within its timeout")
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the reads thread (``fn`` uses ``_offsets_reader``, not ``_c``)."""
        return await asyncio.wrap_future(self._reads.submit(fn, *args))

    def _offsets_reader(self) -> Consumer:
        """The reads' consumer, created on first use (on the reads thread)."""
        if self._reader is None:
            self._reader = Consumer(self._reader_config)
        return self._reader

    @property
    def _c(self) -> Consumer:
        if self._consumer is None:
            raise BrokerError("the Kafka consumer is not started")
        return self._consumer

    # -- the poll loop ------------------------------------------------------------------------

    async def poll(self, max_records: int, wait: float) -> list[Record]:
        """Up to ``max_records`` records: those ready at once, else the first within ``wait``
        seconds and what came with it (``consume_ready``). The partition ends it met are kept
        for ``ends_reached``."""
        records: list[Record]
        ends: dict[int, int]
        resets: set[int]
        records, ends, resets = await self._call(self._poll, max_records, wait)
        if ends:
            self._ends.update(ends)
        self._resets_met |= resets
        for record in records:
            self._first_handed_out.setdefault(record.partition, record.offset)
        return records

    def ends_reached(self) -> dict[int, int]:
        """See ``consumer.ports.Source.ends_reached``: librdkafka's partition-EOF events
        (``enable.partition.eof``), whose offset is the fetch position there, past control
        records."""
        ends, self._ends = self._ends, {}
        return ends

    def offsets_reset(self) -> set[int]:
        """See ``consumer.ports.Source.offsets_reset``: the partitions of librdkafka's
        offset-reset lines (``kafka_offset_reset``) met by the polls since the last call."""
        resets, self._resets_met = self._resets_met, set()
        return resets

    def _poll(
        self, max_records: int, timeout: float
    ) -> tuple[list[Record], dict[int, int], set[int]]:
        records: list[Record] = []
        ends: dict[int, int] = {}
        for message in consume_ready(self._c, max_records, timeout, self._revoked_since):
            err = message.error()
            if err is None:
                records.append(to_record(message))
            elif err.code() == KafkaError._PARTITION_EOF:
                partition, offset = message.partition(), message.offset()
                if partition is not None and offset is not None and offset >= 0:
                    ends[partition] = offset
            elif err.fatal():
                raise BrokerError(f"fatal Kafka error: {err.str()}")
            elif err.code() in _UNAUTHORIZED:
                # Not fatal to librdkafka, but nothing is read until the ACLs change: stop with
                # a clear error instead of looking healthy while consuming nothing.
                raise BrokerError(f"Kafka refused access: {err.name()}: {err.str()}")
            else:
                # Retried by librdkafka; logged so that it is seen.
                log.warning("kafka_consumer_error", code=err.name(), error=err.str())
        # The log lines are served by the same consume calls, in their queue's order.
        resets, self._resets = self._resets, set()
        return records, ends, resets

    async def store(self, offsets: dict[int, int], *, commit: bool = False) -> None:
        """Store the next offsets to commit; the auto-committer and ``commit_now`` send them.

        ``commit``: also commit every stored offset now, those stored before included
        (``offsets`` may be empty), asynchronously (librdkafka's ``commit(asynchronous=True)``:
        the Kafka thread does not wait for the broker; an error is logged, and the next periodic
        commit sends the same offsets again).
        """
        if commit:
            await self._call(self._store_and_commit, offsets)
        elif offsets:
            await self._call(self.store_now, offsets)

    def _store_and_commit(self, offsets: dict[int, int]) -> None:
        self.store_now(offsets)
        try:
            self._c.commit(asynchronous=True)
        except KafkaException as exc:
            # _NO_OFFSET: nothing stored (a partition revoked meanwhile); any other error: the
            # periodic commit tries again within a second.
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset_commit_failed", error=str(exc))

    def store_now(self, offsets: dict[int, int]) -> None:
        """Store offsets (Kafka thread or rebalance callbacks only).

        An offset below the one stored before for its partition (the worker restarted the
        partition's positions after an offset reset: ``Dispatcher.restart``), or the first one
        stored after an offset reset, is also committed at once, asynchronously, with its
        offset given: librdkafka (2.16) commits a stored offset, periodically or by
        ``commit()``, only when it lies above the offset it last committed or read as the
        group's (measured: "stored offset 3, committed offset 5: not including in commit"), so
        after a reset to a lower position the group's offset would stay where the old one was
        until the new position passed it.
        """
        if not offsets:
            return
        parts = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self._c.store_offsets(offsets=parts)
        except KafkaException as exc:
            # Storing for a partition that was just revoked fails harmlessly.
            if exc.args[0].code() != KafkaError._STATE:
                raise
            return
        rewound = [
            tp
            for tp in parts
            if tp.partition in self._reset_since_store
            or tp.offset < self._stored.get(tp.partition, -1)
        ]
        for tp in parts:
            self._stored[tp.partition] = tp.offset
            self._reset_since_store.discard(tp.partition)
        if rewound:
            try:
                self._c.commit(offsets=rewound, asynchronous=True)
            except KafkaException as exc:
                log.warning(
                    "offset_commit_failed",
                    error=str(exc),
                    offsets={tp.partition: tp.offset for tp in rewound},
                )

    def pause_now(self, partitions: Sequence[int]) -> None:
        """Pause partitions (Kafka thread or rebalance callbacks only)."""
        parts = [TopicPartition(self.topic, p) for p in partitions]
        if parts:
            self._c.pause(parts)

    def commit_now(self, offsets: dict[int, int]) -> None:
        """Synchronously commit these offsets (Kafka thread or rebalance callbacks only)."""
        if not offsets:
            return
        parts = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        consumer = self._c
        try:
            if self._in_rebalance_callback:
                # Inside a rebalance callback only this thread can complete a synchronous
                # commit: from a helper thread it waits until the callback returns, i.e. it
                # always hits the deadline and the revoked partitions' offsets are lost.
                consumer.commit(offsets=parts, asynchronous=False)
                return
            call_with_deadline(
                lambda: consumer.commit(offsets=parts, asynchronous=False),
                self.commit_timeout,
                "offset commit",
            )
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise BrokerError(f"offset commit failed: {kafka_error_text(exc)}") from exc

    async def commit(self, offsets: dict[int, int]) -> None:
        await self._call(self.commit_now, offsets)

    async def pause(self, partitions: Iterable[int]) -> None:
        parts = [TopicPartition(self.topic, p) for p in partitions]
        if parts:
            await self._call(self._c.pause, parts)

    async def resume(self, partitions: Iterable[int]) -> None:
        """Resume fetching ``partitions``, and wake the fetcher so that it does so at once."""
        parts = [TopicPartition(self.topic, p) for p in partitions]
        if parts:
            await self._call(self._resume, parts)

    def _resume(self, parts: list[TopicPartition]) -> None:
        consumer = self._c
        consumer.resume(parts)
        # librdkafka's fetcher for a broker none of whose partitions is fetchable sleeps in
        # steps of a second, and a resume does not wake it: the records of a resume came up to
        # a second later (bench/README.md, "What limits the forward path"). Any request to the
        # partition's leader wakes it; a fresh high watermark is a cheap one. One try per call:
        # with a broker away, the loop must not wait for it once per partition. (It cannot be
        # sent from another thread: confluent-kafka lets one thread at a time into a Consumer.)
        for tp in parts:
            try:
                consumer.get_watermark_offsets(tp, timeout=WAKE_TIMEOUT, cached=False)
            except KafkaException as exc:
                log.debug("resume_wake_failed", partition=tp.partition, error=str(exc))
                return

    async def lag(self, partitions: Sequence[int]) -> dict[int, PartitionLag]:
        """Per partition, the group's committed offset (0 when none) and the partition's end
        offset now (the last stable offset under read_committed): their difference is the lag.
        Before the group's first commit on a partition, the lag counts from where it starts
        reading (``PartitionLag.start``): the first offset handed out since the assignment,
        else the log start offset (``auto.offset.reset=earliest``) or the end (``latest``).

        The end offset is asked of the brokers (ListOffsets), not taken from librdkafka's cached
        high watermark: that one comes with fetch responses, and a paused partition is not
        fetched, so it stays where the pause left it (measured with librdkafka 2.16: 10 while
        the log end was 110). An auth pause or an open circuit breaker pauses every partition,
        and back-pressure one that a retrying key holds up: their lag must grow meanwhile.

        Under read_committed the end is the last stable offset: records behind another
        producer's open transaction are no lag (the group cannot read them), and a transaction
        left open (up to its ``transaction.timeout.ms``; for good, a hanging one) stalled the
        partition at lag 0. So the read asks for the high watermark too
        (``PartitionLag.high_watermark``, one more ListOffsets, read_uncommitted, after the
        end's); under read_uncommitted it is the end. Without an admin configuration it is not
        read (``None``): the reads' consumer asks under the consumer's isolation only.

        Raises:
            BrokerError: the committed offsets or the end offsets could not be read (a
                coordinator or broker away, a timeout).
        """
        parts = list(partitions)
        if not parts:
            return {}
        committed: dict[int, int | None] = await self._read(self._committed, parts)
        ends = await self._end_offsets(parts)
        highs: dict[int, int] = {}
        if self._isolation == IsolationLevel.READ_UNCOMMITTED:
            highs = ends
        elif self._admin_config is not None:
            # After the end: a high watermark read later is never below it.
            highs = await self._end_offsets(parts, IsolationLevel.READ_UNCOMMITTED)
        # Before the group's first commit on a partition (a new group; under latest, a quiet
        # partition never gets one), the lag counts from where the group starts reading, not
        # from 0: a new group under latest, or one whose log start retention moved, showed the
        # whole partition as a backlog to the lag alerts and to KEDA.
        starts: dict[int, int] = {}
        for p in (p for p in parts if committed.get(p) is None):
            if p in self._first_handed_out:
                starts[p] = self._first_handed_out[p]
            elif self._config.get("auto.offset.reset") == "latest":
                starts[p] = ends.get(p, 0)
        log_starts = [p for p in parts if committed.get(p) is None and p not in starts]
        if log_starts:
            starts.update(await self._read(self._log_starts, log_starts))
        return {
            p: PartitionLag(committed.get(p) or 0, end, starts.get(p), highs.get(p))
            for p, end in ends.items()
        }

    async def reach(self) -> None:
        """Ask the brokers what a member owning no partition still depends on (reads
        thread): the input topic's metadata, and the group's committed offsets of its
        partitions (an OffsetFetch to the group's coordinator).

        Raises:
            BrokerError: neither answered within ``READ_TIMEOUT`` (each), or the topic is
                unknown to them.
        """
        await self._read(self._reach)

    def _reach(self) -> None:
        try:
            metadata = self._offsets_reader().list_topics(self.topic, timeout=READ_TIMEOUT)
        except KafkaException as exc:
            raise BrokerError(f"reading the topic's metadata failed: {exc}") from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            error = "unknown" if topic is None else str(topic.error or "no partitions")
            raise BrokerError(f"reading the topic's metadata failed: {error}")
        self._committed(sorted(topic.partitions))

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            assert self._admin_config is not None
            self._admin = AdminClient(self._admin_config)
        return self._admin

    def _committed(self, partitions: list[int]) -> dict[int, int | None]:
        """The group's committed offset per partition, ``None`` where none (reads thread)."""
        try:
            committed = self._offsets_reader().committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=READ_TIMEOUT
            )
        except KafkaException as exc:
            # E.g. NOT_COORDINATOR or a timeout while a broker restarts: no lag this time.
            raise BrokerError(f"reading committed offsets failed: {exc}") from exc
        return {
            tp.partition: tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else None
            for tp in committed
        }

    async def _end_offsets(
        self, partitions: list[int], isolation: IsolationLevel | None = None
    ) -> dict[int, int]:
        """Each partition's end at the broker (ListOffsets): under ``isolation`` (default the
        consumer's own: the last stable offset under read_committed). Without an admin
        configuration, the reads' consumer asks, under the consumer's isolation."""
        if self._admin_config is None:
            return dict(await self._read(self._end_offsets_from_consumer, partitions))
        futures: dict[TopicPartition, concurrent.futures.Future[Any]] = {}
        try:
            futures = self._admin_client().list_offsets(
                {TopicPartition(self.topic, p): _LATEST for p in partitions},
                isolation_level=isolation or self._isolation,
                request_timeout=READ_TIMEOUT,
            )
            results = await asyncio.wait_for(
                asyncio.gather(*(asyncio.wrap_future(f) for f in futures.values())),
                READ_TIMEOUT + 1.0,
            )
        except (KafkaException, TimeoutError) as exc:
            # Every partition's error, not only the one raised first: a request-level error
            # (``_NOENT``) fails every future alike, a partition's own only its future.
            stale = _failure_codes(exc, futures.values()) & _STALE_LEADER
            if stale:
                # Its cached leadership is stale or missing and it never refreshes it: a new
                # admin client (fresh metadata) reads the next time.
                await self._discard_admin(stale)
            raise BrokerError(f"reading end offsets failed: {str(exc) or 'timed out'}") from exc
        return {tp.partition: result.offset for tp, result in zip(futures, results, strict=True)}

    async def _discard_admin(self, codes: Iterable[int]) -> None:
        """Forget the admin client (``codes``: the librdkafka errors that condemned it); it is
        destroyed on the reads thread, not the event loop's (librdkafka's destroy joins its
        threads)."""
        stale, self._admin = [self._admin], None
        log.info(
            "kafka_admin_client_renewed",
            reason="stale partition leadership",
            errors=sorted(KafkaError(code).name() for code in codes),
        )
        with contextlib.suppress(BrokerError):  # the reads are closing: dropped with them
            await self._read(stale.clear)

    def _end_offsets_from_consumer(self, partitions: list[int]) -> dict[int, int]:
        ends: dict[int, int] = {}
        try:
            for p in partitions:
                _low, high = self._watermarks(p)
                ends[p] = high
        except KafkaException as exc:
            raise BrokerError(f"reading end offsets failed: {exc}") from exc
        return ends

    async def backlog(self, partitions: Sequence[int]) -> dict[int, int]:
        """Records not handed out yet, per partition: the partition's high watermark at the
        broker (not librdkafka's cached one; records behind an open transaction count: they
        wait) minus the position
        (the committed offset before the first record; for a group without one, the start of
        the partition, or its end under ``auto.offset.reset=latest``).

        Raises:
            BrokerError: the positions, committed offsets or end offsets could not be read.
        """
        parts = list(partitions)
        if not parts:
            return {}
        positions = await self._call(self._positions, parts)
        unknown = [p for p, offset in positions.items() if offset is None]
        if unknown:
            positions.update(await self._read(self._starts, unknown))
        # To the high watermark, not the last stable offset: records behind another producer's
        # open transaction cannot be read yet, but they wait, and will be read (or aborted).
        ends = await self._end_offsets(parts, IsolationLevel.READ_UNCOMMITTED)
        backlog: dict[int, int] = {}
        for p, end in ends.items():
            start = positions[p]
            backlog[p] = 0 if start is None else max(end - start, 0)
        return backlog

    def _positions(self, partitions: list[int]) -> dict[int, int | None]:
        """The next offset handed out per partition (librdkafka's, a local read); ``None``
        where nothing was handed out since the assignment."""
        try:
            tps = self._c.position([TopicPartition(self.topic, p) for p in partitions])
        except KafkaException as exc:
            raise BrokerError(f"reading positions failed: {exc}") from exc
        return {tp.partition: tp.offset if tp.offset >= 0 else None for tp in tps}

    def _log_starts(self, partitions: list[int]) -> dict[int, int]:
        """Each partition's log start offset (its low watermark, asked of the broker; reads
        thread)."""
        starts: dict[int, int] = {}
        try:
            for p in partitions:
                low, _high = self._watermarks(p)
                starts[p] = max(low, 0)
        except KafkaException as exc:
            raise BrokerError(f"reading start offsets failed: {exc}") from exc
        return starts

    def _watermarks(self, partition: int) -> tuple[int, int]:
        """(low, high) of a partition, asked of its leader by the reads' consumer (reads
        thread). A partition its cached metadata names no leader for (``_NO_LEADER_CACHED``)
        makes it ask the brokers for the topic's metadata, then the leader once more: librdkafka
        answers such a read from its cache, without a request, until its own refresh (as
        ``kafka_reader.watermark_offsets`` does for the restore).

        Raises:
            KafkaException: the read failed (again), or the metadata could not be read.
        """
        reader = self._offsets_reader()
        tp = TopicPartition(self.topic, partition)
        try:
            low, high = reader.get_watermark_offsets(tp, timeout=READ_TIMEOUT, cached=False)
        except KafkaException as exc:
            if _code(exc) not in _NO_LEADER_CACHED:
                raise
            log.info(
                "kafka_metadata_refreshed",
                topic=self.topic,
                partition=partition,
                error=exc.args[0].name(),
            )
            reader.list_topics(self.topic, timeout=READ_TIMEOUT)
            low, high = reader.get_watermark_offsets(tp, timeout=READ_TIMEOUT, cached=False)
        return int(low), int(high)

    def _starts(self, partitions: list[int]) -> dict[int, int | None]:
        """Where the group starts in partitions it has consumed nothing of: the committed
        offset, else the start of the partition; ``None`` for a group that starts at the end
        (``auto.offset.reset=latest``, nothing committed): nothing waits there."""
        starts = self._committed(partitions)
        if self._config.get("auto.offset.reset") != "latest":
            starts.update(self._log_starts([p for p, o in starts.items() if o is None]))
        return starts


def _code(exc: KafkaException) -> int | None:
    """The librdkafka error code a ``KafkaException`` carries (``None`` without one)."""
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _failure_codes(
    exc: BaseException, futures: Iterable[concurrent.futures.Future[Any]]
) -> set[int]:
    """The librdkafka error codes of ``exc`` and of every future that failed (one not done yet,
    after a timeout, has none)."""
    failures: list[BaseException | None] = [exc]
    failures += [f.exception() for f in futures if f.done() and not f.cancelled()]
    return {
        code
        for failure in failures
        if isinstance(failure, KafkaException) and (code := _code(failure)) is not None
    }


def _partitions(parts: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in parts)
