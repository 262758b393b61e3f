"""confluent-kafka at the edge: the consumer-group source, an acknowledging producer, and a
reader of partitions to their end.

The consumer is used from one dedicated thread (librdkafka's poll, rebalance callbacks, offset
store and commit all run there), so the asyncio loop never blocks on Kafka. The producer's
delivery reports resolve futures: a DLQ or changelog write is *acknowledged* only when its
future completes, and only then may the source offset be stored.

Every class here takes a finished librdkafka configuration and adds nothing to it: the
configurations, with the properties the guarantees rest on (offset store off, idempotent
``acks=all`` producer), are assembled in one place, ``consumer.settings.KafkaSettings``.

About 820 lines: the clients share the message conversion, the daemon-thread deadlines and the
handling of librdkafka's error codes, which would otherwise be imported back and forth.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from consumer.domain.topics import TopicState
from consumer.errors import BrokerError, RecordTooLargeError
from consumer.ports import Headers, RebalanceListener, Record

log = structlog.get_logger("consumer.kafka")

_UNAUTHORIZED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


class ProduceError(BrokerError):
    """A record could not be written (delivery report with an error, or a timeout)."""


# The producer's own check (message.max.bytes) and the broker's (the topic's max.message.bytes)
# report a record too large with these codes: certain for that record, not an outage.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
WAKE_TIMEOUT = 0.5
"""Seconds the request that wakes the fetcher after a resume may take (``KafkaSource``)."""


def _record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(name) + len(data or b"") for name, data in headers or [])
    )


def message_headers(message: Message) -> Headers:
    """A message's headers as (name, bytes) pairs, in order."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [
        (str(name), value.encode() if isinstance(value, str) else (value or b""))
        for name, value in pairs
    ]


def _to_record(message: Message) -> Record:
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


class AckingProducer:
    """A producer whose ``send`` returns when the broker acknowledged the record.

    Constructing it connects nothing: ``start()`` creates the librdkafka producer and the thread
    that serves its delivery reports; ``close()`` flushes and stops both.

    Args:
        config: librdkafka producer properties, ``KafkaSettings.producer_config()`` (idempotent,
            ``acks=all``): used as given.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._client: Producer | None = None
        # Records of send_nowait: not yet reported, and reported as not written; by tag, those
        # queued with one (not yet reported, and failed with their error).
        self._acks = threading.Condition()
        self._outstanding = 0
        self._failed = 0
        self._unreported: set[Hashable] = set()
        self._errors: dict[Hashable, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        # Delivery reports of ``send``, handed to their event loops a batch at a time: one
        # wake-up of a loop per poll, not one per record.
        self._reports: collections.deque[_Report] = collections.deque()

    def start(self) -> None:
        """Create the producer (idempotent: a second call does nothing)."""
        if self._client is None:
            self._client = Producer(self._config)
            self._thread.start()

    @property
    def _producer(self) -> Producer:
        if self._client is None:
            raise BrokerError("the Kafka producer is not started")
        return self._client

    def _serve(self) -> None:
        producer = self._producer
        while not self._stop.is_set():
            producer.poll(0.1)
            self._hand_over()

    def _hand_over(self) -> None:
        """Settle the reported ``send`` futures on their loops, one call per loop and batch."""
        reports = self._reports
        batches: dict[asyncio.AbstractEventLoop, list[_Report]] = {}
        while reports:
            report = reports.popleft()
            batches.setdefault(report[0], []).append(report)
        for loop, batch in batches.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle_all, batch)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Write one record; return its (partition, offset) once acknowledged."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def report(err: KafkaError | None, msg: Message) -> None:
            self._reports.append((loop, future, err, msg))

        kwargs = _produce_kwargs(report, key, value, headers, partition, timestamp_ms)
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                # The local queue is full: let delivery reports drain it, then try again.
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                raise _produce_error(topic, exc, key, value, headers) from exc
        try:
            return await future
        except _DeliveryTooLargeError as exc:
            raise RecordTooLargeError(_record_size(key, value, headers), str(exc)) from None

    def send_nowait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        tag: Hashable | None = None,
    ) -> None:
        """Queue one record from synchronous code (``replay-dlq``, the sample producer).

        Records queued one after another are written in that order; this blocks while the local
        queue is full. ``settle`` says whether every queued record was acknowledged, and
        ``undelivered`` which of the records queued with a ``tag`` (unique) were not.

        Raises:
            RecordTooLargeError: the record is over the producer's size limit.
            ProduceError: the record cannot be queued (unknown partition...).
        """

        def report(err: KafkaError | None, _msg: Message) -> None:
            self._acknowledged(tag, err)

        kwargs = _produce_kwargs(report, key, value, headers, partition, None)
        while True:
            try:
                with self._acks:
                    self._producer.produce(topic, **kwargs)
                    self._outstanding += 1
                    if tag is not None:
                        self._unreported.add(tag)
                return
            except BufferError:
                # The local queue is full: the serving thread's polls drain it.
                time.sleep(0.05)
            except KafkaException as exc:
                raise _produce_error(topic, exc, key, value, headers) from exc

    def _acknowledged(self, tag: Hashable | None, err: KafkaError | None) -> None:
        with self._acks:
            self._outstanding -= 1
            if tag is not None:
                self._unreported.discard(tag)
            if err is not None:
                self._failed += 1
                if tag is not None:
                    self._errors[tag] = err.str()
            self._acks.notify_all()

    def settle(self, timeout: float) -> int:
        """Wait until every record queued by ``send_nowait`` has its delivery report.

        Returns:
            how many of them were not acknowledged: failed, or still unreported at ``timeout``
            seconds; 0 when all of them are safely written.
        """
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        with self._acks:
            while self._outstanding > 0 and (left := deadline - time.monotonic()) > 0:
                self._acks.wait(left)
            return self._outstanding + self._failed

    def undelivered(self) -> dict[Hashable, str]:
        """The tagged records not acknowledged (so far): tag -> the broker's error, or
        ``"no delivery report"`` for one still unreported. Call it after ``settle``."""
        with self._acks:
            missing = dict.fromkeys(self._unreported, "no delivery report")
            return {**missing, **self._errors}

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; return how many are still outstanding."""
        left = int(self._producer.flush(timeout))
        self._hand_over()
        return left

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` seconds for outstanding deliveries, then stop."""
        if self._client is None:
            return
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2.0)
        client, self._client = self._client, None
        client.close()


def _produce_error(
    topic: str, exc: KafkaException, key: bytes | None, value: bytes | None, headers: Headers | None
) -> BrokerError:
    """What a refused ``produce()`` means: too large for the producer's limit (certain, not an
    outage: ``RecordTooLargeError``), or the topic cannot be written (``ProduceError``)."""
    if _code(exc) in _TOO_LARGE:
        return RecordTooLargeError(_record_size(key, value, headers), f"produce to {topic}: {exc}")
    return ProduceError(f"produce to {topic} failed: {exc}")


def _produce_kwargs(
    report: Callable[[KafkaError | None, Message], None],
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    partition: int | None,
    timestamp_ms: int | None,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
    if headers:
        kwargs["headers"] = headers
    if partition is not None:
        kwargs["partition"] = partition
    if timestamp_ms is not None:
        kwargs["timestamp"] = timestamp_ms
    return kwargs


class _DeliveryTooLargeError(ProduceError):
    """The broker refused a record for its size (translated by ``send``, which knows it)."""


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


_Report = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[tuple[int, int]]", KafkaError | None, Message
]
"""A delivery report of ``AckingProducer.send``: the loop and future waiting for it."""


def _settle_all(batch: list[_Report]) -> None:
    for _loop, future, err, msg in batch:
        _settle(future, err, msg)


def _settle(future: asyncio.Future[tuple[int, int]], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        error = _DeliveryTooLargeError if err.code() in _TOO_LARGE else ProduceError
        future.set_exception(error(f"delivery to {msg.topic()} failed: {err.str()}"))
    else:
        future.set_result((msg.partition() or 0, msg.offset() or 0))


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
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
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
        self._work.put(None)


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
"""``(partition, reset_to)``: ``reset_to`` is ``earliest``, ``latest`` or ``offset``."""


class _OffsetResetWatch:
    """confluent-kafka's ``logger`` for the consumer: passes every line on to the configured
    logger, and turns librdkafka's offset-reset line for ``topic`` into a ``kafka_offset_reset``
    warning and a call of ``on_reset`` (on the Kafka thread, inside ``consume``).

    librdkafka reports an offset reset by ``auto.offset.reset`` (the committed offset fell out of
    retention, or lies past the end) only as a log line: the records skipped are never read.
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
    offset it was at, ``reset_to``) and reported to ``on_offset_reset(partition, reset_to)``.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        on_offset_reset: OffsetResetCallback | None = None,
    ) -> None:
        self._config = dict(config)
        self._config["logger"] = _OffsetResetWatch(
            self._config.get("logger"), topic, on_offset_reset or (lambda _p, _to: None)
        )
        self.topic = topic
        self._executor = _KafkaThread("kafka")
        self._consumer: Consumer | None = None
        self.commit_timeout = 15.0
        self.assign_timeout = 10.0
        """Seconds the assignment callback may wait for the committed offsets."""
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
            on_lost=lambda _c, parts: listener.on_lost(_partitions(parts)),
        )

    def _assign_callback(
        self, consumer: Consumer, listener: RebalanceListener, parts: list[TopicPartition]
    ) -> None:
        # Apply the assignment first (confluent-kafka then does not apply it again), so that
        # the listener can pause the new partitions before they are ever fetched: librdkafka
        # does not carry a pause to a partition this member did not own.
        if self._config.get("group.protocol", "classic") == "consumer":
            parts = self._with_starts(consumer, parts)
        if self._incremental:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)
        self._in_rebalance_callback = True
        try:
            listener.on_assign(_partitions(parts))
        finally:
            self._in_rebalance_callback = False

    def _with_starts(self, consumer: Consumer, parts: list[TopicPartition]) -> list[TopicPartition]:
        """``parts`` with the start of each partition the group has no committed offset for made
        explicit: ``auto.offset.reset``'s logical offset (``OFFSET_BEGINNING`` or
        ``OFFSET_END``) instead of none. The others stay unset (librdkafka reads their committed
        offsets, as without this).

        A partition assigned without a start has librdkafka look up auto.offset.reset's offset
        asynchronously. A resume that lands during that lookup (the listener pauses the
        partition here and resumes it once restored, at once for an empty changelog) starts a
        second lookup; the first one's late answer then re-arms librdkafka's offset-query timer,
        which fires about half a second later and resets the fetch position to the start again:
        after the next pause and resume, the records from the start are fetched a second time.
        Given a logical start, a resume never starts a second lookup. Used with KIP-848's
        protocol only: with the classic protocol, the lookup inside the rebalance callback made
        a member that left during a rebalance overrun its close budget (the worker drops a
        rewound record with either protocol). If the committed offsets cannot be read in
        ``assign_timeout`` seconds, ``parts`` are returned unchanged (librdkafka reads them).
        """
        try:
            committed = consumer.committed(parts, timeout=self.assign_timeout)
        except KafkaException as exc:
            log.warning("assignment_starts_unknown", error=str(exc))
            return parts
        reset = str(self._config.get("auto.offset.reset", "latest"))
        logical = OFFSET_END if reset in {"latest", "end", "largest"} else OFFSET_BEGINNING
        # A committed start stays unset: librdkafka reads it again itself, as it always did.
        return [
            TopicPartition(self.topic, tp.partition, logical)
            if tp.error is None and tp.offset < 0
            else TopicPartition(self.topic, tp.partition)
            for tp in committed
        ]

    def _revoke_callback(self, listener: RebalanceListener, parts: list[TopicPartition]) -> None:
        self._in_rebalance_callback = True
        try:
            listener.on_revoke(_partitions(parts))
        finally:
            self._in_rebalance_callback = False

    async def close(self) -> None:
        """Leave the group (revoking, hence committing, what is assigned) and close.

        Bounded by ``close_timeout``: with the cluster unreachable, librdkafka's close can wait
        indefinitely; the process then exits anyway (what is not committed is replayed).
        """
        try:
            await asyncio.wait_for(self._call(self._close), self.close_timeout)
        except TimeoutError:
            raise BrokerError(f"closing the consumer took over {self.close_timeout:.0f}s") from None
        finally:
            self._executor.shutdown()

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    @property
    def _c(self) -> Consumer:
        if self._consumer is None:
            raise BrokerError("the Kafka consumer is not started")
        return self._consumer

    # -- the poll loop ------------------------------------------------------------------------

    async def poll(self, max_records: int, wait: float) -> list[Record]:
        """Fetch up to ``max_records``, waiting at most ``wait`` seconds for the first one."""
        return list(await self._call(self._poll, max_records, wait))

    def _poll(self, max_records: int, timeout: float) -> list[Record]:
        records: list[Record] = []
        for message in self._c.consume(num_messages=max_records, timeout=timeout):
            err = message.error()
            if err is None:
                records.append(_to_record(message))
            elif err.fatal():
                raise BrokerError(f"fatal Kafka error: {err.str()}")
            elif err.code() in _UNAUTHORIZED:
                # Not fatal to librdkafka, but nothing is read until the ACLs change: stop with
                # a clear error instead of looking healthy while consuming nothing.
                raise BrokerError(f"Kafka refused access: {err.name()}: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                # Retried by librdkafka; logged so that it is seen.
                log.warning("kafka_consumer_error", code=err.name(), error=err.str())
        return records

    async def store(self, offsets: dict[int, int]) -> None:
        """Store the next offsets to commit; the auto-committer and ``commit_now`` send them."""
        if offsets:
            await self._call(self.store_now, offsets)

    def store_now(self, offsets: dict[int, int]) -> None:
        """Store offsets (Kafka thread or rebalance callbacks only)."""
        if not offsets:
            return
        parts = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self._c.store_offsets(offsets=parts)
        except KafkaException as exc:
            # Storing for a partition that was just revoked fails harmlessly.
            if exc.args[0].code() != KafkaError._STATE:
                raise

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
                raise

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
        # with a broker away, the loop must not wait for it once per partition.
        for tp in parts:
            try:
                consumer.get_watermark_offsets(tp, timeout=WAKE_TIMEOUT, cached=False)
            except KafkaException as exc:
                log.debug("resume_wake_failed", partition=tp.partition, error=str(exc))
                return

    async def lag(self, partitions: Sequence[int]) -> dict[int, int]:
        """High watermark minus the committed offset, per partition (cached watermarks)."""
        return dict(await self._call(self._lag, list(partitions)))

    def _lag(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:
            return {}
        try:
            committed = self._c.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=5.0
            )
        except KafkaException as exc:
            # E.g. NOT_COORDINATOR or a timeout while a broker restarts: no lag this time.
            raise BrokerError(f"reading committed offsets failed: {exc}") from exc
        lag: dict[int, int] = {}
        for tp in committed:
            _low, high = self._c.get_watermark_offsets(tp, cached=True)
            if high is None or high < 0:
                continue
            position = tp.offset if tp.offset != OFFSET_INVALID and tp.offset >= 0 else 0
            lag[tp.partition] = max(high - position, 0)
        return lag

    async def backlog(self, partitions: Sequence[int]) -> dict[int, int]:
        """Records not handed out yet: the known high watermark minus the position."""
        return dict(await self._call(self._backlog, list(partitions)))

    def _backlog(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:
            return {}
        consumer = self._c
        try:
            tps = consumer.position([TopicPartition(self.topic, p) for p in partitions])
            unknown = [tp for tp in tps if tp.offset < 0]
            if unknown:
                # Nothing consumed from these since the assignment: start at the committed one.
                committed = {tp.partition: tp for tp in consumer.committed(unknown, timeout=5.0)}
                tps = [committed.get(tp.partition, tp) for tp in tps]
            backlog: dict[int, int] = {}
            for tp in tps:
                low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high is None or high < 0:
                    low, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
                if tp.offset >= 0:
                    position = tp.offset
                elif self._config.get("auto.offset.reset") == "latest":
                    position = high  # a new group starting at the end: nothing waits
                else:
                    position = max(low, 0)
                backlog[tp.partition] = max(high - position, 0)
        except KafkaException as exc:
            raise BrokerError(f"reading positions or watermarks failed: {exc}") from exc
        return backlog


def _partitions(parts: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in parts)


def describe_topics(
    config: Mapping[str, Any], names: Sequence[str], timeout: float = 30.0
) -> dict[str, TopicState]:
    """Partition count, replica count and effective configuration of each topic.

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()``.
        names: the topics; one that does not exist is described with 0 partitions.

    Raises:
        BrokerError: the cluster's metadata or a topic's configuration could not be read.
    """
    admin = AdminClient(dict(config))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the cluster's topics: {exc}") from exc
    states: dict[str, TopicState] = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            states[name] = TopicState(name)
            continue
        first = topic.partitions[min(topic.partitions)]
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            entries = admin.describe_configs([resource])[resource].result(timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the configuration of {name}: {exc}") from exc
        settings = {key: str(entry.value) for key, entry in entries.items()}
        states[name] = TopicState(name, len(topic.partitions), len(first.replicas), settings)
    return states


def ensure_topics(
    config: Mapping[str, Any],
    topics: dict[str, dict[str, str]],
    partitions: int | None = None,
    timeout: float = 30.0,
    replication: int = -1,
) -> None:
    """Create the topics that do not exist yet (the profile changelog is compacted).

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()``.
        topics: name -> topic configuration of each topic wanted.
        partitions: partition count of created topics; defaults to the partition count of the
            first existing topic of ``topics``, else 1.
        replication: replica count of created topics (-1: the broker's default).

    Raises:
        BrokerError: a topic could not be created.
        KafkaException: the cluster's metadata could not be read.
    """
    admin = AdminClient(dict(config))
    metadata = admin.list_topics(timeout=timeout)
    existing = metadata.topics
    count = partitions
    if count is None:
        for name in topics:
            if name in existing and existing[name].error is None:
                count = len(existing[name].partitions)
                break
    count = count or 1
    missing = [
        NewTopic(name, num_partitions=count, replication_factor=replication, config=cfg)
        for name, cfg in topics.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, fut in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc


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
        time.sleep(0.1)


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

    def partitions(self, timeout: float = 30.0) -> list[int]:
        """The topic's partition numbers, ascending.

        Raises:
            BrokerError: the topic does not exist (or its metadata has an error).
        """
        info = self._consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        if info is None or info.error is not None:
            raise BrokerError(f"topic {self.topic} not found")
        return sorted(info.partitions)

    def watermarks(self, partitions: Iterable[int], deadline: float) -> dict[int, tuple[int, int]]:
        """Per partition, (first offset, offset after the last record) now.

        Raises:
            KafkaException: not readable, or still without a leader at ``deadline`` (monotonic).
        """
        return {
            p: watermark_offsets(self._consumer, TopicPartition(self.topic, p), deadline)
            for p in partitions
        }

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
            for message in self._consumer.consume(num_messages=500, timeout=0.5):
                err = message.error()
                partition = message.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                    elif err.fatal():
                        raise BrokerError(f"reading {self.topic}: {err.str()}")
                    continue
                offset = message.offset() or 0
                if offset < ends[partition]:
                    yield _to_record(message)
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)

    def read_batches(
        self,
        ranges: Mapping[int, tuple[int, int]],
        stall: float,
        skip: Callable[[int], bool] = lambda _partition: False,
        batch: int = 10_000,
    ) -> Iterator[tuple[int, list[tuple[bytes | None, bytes | None]], int]]:
        """The (key, value) pairs of each partition ``p`` from ``ranges[p][0]`` up to (excluding)
        ``ranges[p][1]``, a consumed batch at a time: ``(partition, pairs, next offset)``, in
        offset order per partition. The fast path of the profile restore: no ``Record`` per
        message.

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
            messages = self._consumer.consume(num_messages=batch, timeout=0.5)
            if not messages:
                if time.monotonic() - progress > stall:
                    raise BrokerError(
                        f"reading {self.topic} partitions {sorted(pending)}: no progress for "
                        f"{stall:.0f}s"
                    )
                continue
            progress = time.monotonic()
            yield from self._group(messages, ends, pending)

    def _group(
        self, messages: list[Message], ends: Mapping[int, int], pending: set[int]
    ) -> Iterator[tuple[int, list[tuple[bytes | None, bytes | None]], int]]:
        """A consumed batch per partition (see ``read_batches``); ends reached leave
        ``pending``."""
        by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        last: dict[int, int] = {}
        for message in messages:
            err = message.error()
            partition = message.partition() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                elif err.fatal():
                    raise BrokerError(f"reading {self.topic}: {err.str()}")
                continue
            if partition not in pending:
                continue
            offset = message.offset() or 0
            if offset < ends[partition]:
                pairs = by_partition.get(partition)
                if pairs is None:
                    pairs = by_partition[partition] = []
                pairs.append((message.key(), message.value()))
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
