"""confluent-kafka at the edge: the consumer-group source and an acknowledging producer.

The consumer is used from one dedicated thread (librdkafka's poll, rebalance callbacks, offset
store and commit all run there), so the asyncio loop never blocks on Kafka. The producer's
delivery reports resolve asyncio futures: a DLQ or changelog write is *acknowledged* only when
its future completes, and only then may the source offset be stored.

Every class here takes a finished librdkafka configuration and adds nothing to it: the
configurations, with the properties the guarantees rest on (offset store off, idempotent
``acks=all`` producer), are assembled in one place, ``consumer.settings.KafkaSettings``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.errors import BrokerError

Headers = list[tuple[str, bytes]]


class ProduceError(BrokerError):
    """A record could not be written (delivery report with an error, or a timeout)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record, detached from librdkafka's message object."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: Headers


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

    Args:
        config: librdkafka producer properties, ``KafkaSettings.producer_config()`` (idempotent,
            ``acks=all``): used as given.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._producer = Producer(dict(config))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

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
            loop.call_soon_threadsafe(_settle, future, err, msg)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                # The local queue is full: let delivery reports drain it, then try again.
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                raise ProduceError(f"produce to {topic} failed: {exc}") from exc
        return await future

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; return how many are still outstanding."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._producer.close()


def _settle(future: asyncio.Future[tuple[int, int]], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(ProduceError(f"delivery to {msg.topic()} failed: {err.str()}"))
    else:
        future.set_result((msg.partition() or 0, msg.offset() or 0))


RebalanceCallback = Callable[[list[int]], None]


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


class KafkaSource:
    """The input topic, read by a consumer group, from one dedicated thread.

    ``on_assign``, ``on_revoke`` and ``on_lost`` receive partition numbers and run on the Kafka
    thread, inside ``poll``: they may block (to drain and commit) but not call this object's
    async methods. ``commit_now`` is safe to call from them.

    ``config`` is ``KafkaSettings.consumer_config()``, used as given: offsets are stored only by
    ``store`` because it turns librdkafka's automatic offset store off.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
    ) -> None:
        self._config = dict(config)
        self.topic = topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._executor = _KafkaThread("kafka")
        self._consumer: Consumer | None = None
        self.commit_timeout = 15.0
        self.close_timeout = 30.0
        self._in_rebalance_callback = False

    # -- lifecycle (all on the Kafka thread) -------------------------------------------------

    async def start(self) -> None:
        await self._call(self._start)

    def _start(self) -> None:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(
            [self.topic],
            on_assign=lambda _c, parts: self._on_assign(_partitions(parts)),
            on_revoke=lambda _c, parts: self._revoke_callback(parts),
            on_lost=lambda _c, parts: self._on_lost(_partitions(parts)),
        )

    def _revoke_callback(self, parts: list[TopicPartition]) -> None:
        self._in_rebalance_callback = True
        try:
            self._on_revoke(_partitions(parts))
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
            # Other errors (partition EOF, transient broker errors) are retried by librdkafka.
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
        parts = [TopicPartition(self.topic, p) for p in partitions]
        if parts:
            await self._call(self._c.resume, parts)

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


def _partitions(parts: list[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in parts)


def ensure_topics(
    config: Mapping[str, Any],
    topics: dict[str, dict[str, str]],
    partitions: int | None = None,
    timeout: float = 30.0,
) -> None:
    """Create the topics that do not exist yet (the profile changelog is compacted).

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()``.
        topics: name -> topic configuration of each topic wanted.
        partitions: partition count of created topics; defaults to the partition count of the
            first existing topic of ``topics``, else 1.

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
        NewTopic(name, num_partitions=count, config=cfg)
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
