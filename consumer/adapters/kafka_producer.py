"""An acknowledging producer: ``queue`` hands a record to librdkafka at once and returns a
future that its delivery report settles; a DLQ or changelog write is *acknowledged* only when
that future completes, and only then may the source offset be stored (DESIGN, 1).

Every wait is for given records only, never a flush of the whole producer (librdkafka's flush
returns only once no record at all is outstanding, which under steady traffic need never
happen): a restore waits for its own fence and repairs (``Writes``), a revoke for the writes of
its partitions' records (``settle_partitions``).

The configuration is ``consumer.settings.KafkaSettings.producer_config()`` (idempotent,
``acks=all``), used as given.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any

import structlog
from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
    Producer,
)

from consumer.adapters.kafka import message_headers
from consumer.errors import BrokerError, RecordTooLargeError
from consumer.ports import Headers

log = structlog.get_logger("consumer.kafka")


class ProduceError(BrokerError):
    """A record could not be written (delivery report with an error, or a timeout)."""


CLOSE_TIMEOUT = 2.0
"""Seconds ``AckingProducer.close`` may take after its flush: the join of the service's
shutdown (README, "Grace period")."""

# The producer's own check (message.max.bytes) and the broker's (the topic's max.message.bytes)
# report a record too large with these codes: certain for that record, not an outage.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


def _record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(name) + len(data or b"") for name, data in headers or [])
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
        # Records of ``queue`` queued for an input partition (``source``) and not reported yet,
        # by that partition: what a revoke waits for (``settle_partitions``).
        self._acks = threading.Condition()
        self._pending: collections.Counter[int] = collections.Counter()
        # Records of ``send_nowait``, since the producer started (the commands' single run).
        self._writes = Writes(self)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer", daemon=True)
        # Delivery reports of ``send``, handed to their event loops a batch at a time: one
        # wake-up of a loop per poll, not one per record.
        self._reports: collections.deque[_Report] = collections.deque()
        # Records of ``queue`` that found librdkafka's local queue full, oldest first, and the
        # task that hands them over as it drains.
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._waiting_task: asyncio.Task[None] | None = None

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

    def queue(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        source: int | None = None,
    ) -> asyncio.Future[tuple[int, int]]:
        """Queue one record before returning (on the running event loop's thread); the future
        is its (partition, offset) once the broker acknowledged it.

        ``source`` is the input partition whose record this write belongs to (a changelog
        write, a dead letter): ``settle_partitions`` waits for it until its delivery report.

        Records queued one after another are written in that order (the idempotent producer
        keeps it per partition). While librdkafka's local queue is full, records wait here, in
        order, and are handed over as it drains.

        The future raises ``RecordTooLargeError`` (over the producer's or the topic's size
        limit: certain for that record) or ``ProduceError`` (the topic cannot be written).
        Raises ``ProduceError``/``RecordTooLargeError`` at once when librdkafka refuses the
        record outright (unknown partition, over ``message.max.bytes``).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int]] = loop.create_future()

        def report(err: KafkaError | None, msg: Message) -> None:
            self._reports.append((loop, future, err, msg))
            self._reported(source)

        kwargs = _produce_kwargs(report, key, value, headers, partition, timestamp_ms)
        self._track(source)
        try:
            if self._waiting or not self._produce(topic, kwargs, key, value, headers):
                self._waiting.append((topic, kwargs, future, key, value, headers, source))
                if self._waiting_task is None:
                    self._waiting_task = loop.create_task(self._hand_over_waiting())
        except BrokerError:
            self._reported(source)  # refused outright: there will be no delivery report
            raise
        return future

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        source: int | None = None,
    ) -> tuple[int, int]:
        """Write one record; return its (partition, offset) once acknowledged (``queue``)."""
        return await self.queue(topic, key, value, headers, partition, timestamp_ms, source)

    def _track(self, source: int | None) -> None:
        if source is not None:
            with self._acks:
                self._pending[source] += 1

    def _reported(self, source: int | None) -> None:
        if source is not None:
            with self._acks:
                self._pending[source] -= 1
                if self._pending[source] <= 0:
                    del self._pending[source]
                self._acks.notify_all()

    def settle_partitions(self, partitions: Collection[int], timeout: float) -> int:
        """Wait up to ``timeout`` seconds until every record ``queue`` wrote for the records of
        the input ``partitions`` (its ``source``) has its delivery report; the producer's other
        writes are not waited for.

        Called from any thread but the serving one, whose polls deliver the reports.

        Returns:
            how many of them have no delivery report yet (0: none left unanswered; a failed one
            fails its future, and so its record).
        """
        deadline = time.monotonic() + timeout
        wanted = set(partitions)
        with self._acks:
            while (left := sum(self._pending[p] for p in wanted if p in self._pending)) and (
                wait := deadline - time.monotonic()
            ) > 0:
                self._acks.wait(wait)
            return left

    def _produce(
        self,
        topic: str,
        kwargs: dict[str, Any],
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> bool:
        """Hand one record to librdkafka; ``False`` while its local queue is full."""
        try:
            self._producer.produce(topic, **kwargs)
        except BufferError:
            return False
        except KafkaException as exc:
            raise _produce_error(topic, exc, key, value, headers) from exc
        return True

    async def _hand_over_waiting(self) -> None:
        """Hand the records that found the local queue full to librdkafka, in order, as the
        serving thread's polls drain it."""
        try:
            while self._waiting:
                topic, kwargs, future, key, value, headers, source = self._waiting[0]
                try:
                    produced = self._produce(topic, kwargs, key, value, headers)
                except BrokerError as exc:
                    self._waiting.popleft()
                    self._reported(source)
                    if not future.done():
                        future.set_exception(exc)
                    continue
                if produced:
                    self._waiting.popleft()
                else:
                    await asyncio.sleep(0.05)
        finally:
            self._waiting_task = None

    def writes(self) -> Writes:
        """A new group of records to write from synchronous code and wait for together (a
        restore's fence and repairs): its ``settle`` waits for these records only."""
        return Writes(self)

    def send_nowait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        tag: Hashable | None = None,
    ) -> None:
        """Queue one record from synchronous code (``replay-dlq``, the sample producer): one
        group (``Writes.send_nowait``) for the producer's lifetime."""
        self._writes.send_nowait(topic, key, value, headers, partition, tag)

    def settle(self, timeout: float) -> int:
        """Wait for the records of ``send_nowait`` (``Writes.settle``): those of the producer's
        lifetime, not its other writes."""
        return self._writes.settle(timeout)

    def undelivered(self) -> dict[Hashable, str]:
        """The tagged records of ``send_nowait`` not acknowledged (``Writes.undelivered``)."""
        return self._writes.undelivered()

    def flush(self, timeout: float) -> int:
        """Wait for every outstanding delivery of the producer (the shutdown's last phase,
        ``close``); return how many are still outstanding."""
        left = int(self._producer.flush(timeout))
        self._hand_over()
        return left

    def close(self, timeout: float = 10.0, stop_timeout: float = CLOSE_TIMEOUT) -> None:
        """Wait up to ``timeout`` seconds for outstanding deliveries, then stop, within
        ``stop_timeout`` seconds more.

        What is still outstanding then is purged, unacknowledged (its record is not finished,
        so its offset was not committed: the record is processed again). librdkafka's close
        flushes without a bound (``message.timeout.ms``): with the brokers away it held the
        process for minutes; it runs on a daemon thread, and is abandoned at ``stop_timeout``.
        """
        if self._client is None:
            return
        left = self.flush(timeout)
        deadline = time.monotonic() + stop_timeout
        self._stop.set()
        self._thread.join(timeout=stop_timeout)
        client, self._client = self._client, None
        if left:
            log.warning("producer_purged", outstanding=left)
            client.purge(in_queue=True, in_flight=True)
            client.poll(0)  # the purged records' reports: failed, never acknowledged

        def close() -> None:
            client.close()

        closer = threading.Thread(target=close, name="kafka-producer-close", daemon=True)
        closer.start()
        closer.join(max(deadline - time.monotonic(), 0.0))
        if closer.is_alive():
            log.warning("producer_close_abandoned", seconds=stop_timeout)


class Writes:
    """Records written together from synchronous code (``AckingProducer.writes``), and their
    delivery reports: ``settle`` waits for these records only, never for the producer's other
    writes, and reports only their failures.

    Args:
        producer: the started producer that writes them (its thread serves the reports).
    """

    def __init__(self, producer: AckingProducer) -> None:
        self._producer = producer
        # Not yet reported, and reported as not written; by tag, those queued with one (not yet
        # reported, and failed with their error).
        self._acks = threading.Condition()
        self._outstanding = 0
        self._failed = 0
        self._unreported: set[Hashable] = set()
        self._errors: dict[Hashable, str] = {}

    def send_nowait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        tag: Hashable | None = None,
    ) -> None:
        """Queue one record of this group.

        Records queued one after another are written in that order; this blocks while the local
        queue is full. ``settle`` says whether every record of the group was acknowledged, and
        ``undelivered`` which of those queued with a ``tag`` (unique) were not.

        Raises:
            RecordTooLargeError: the record is over the producer's size limit.
            ProduceError: the record cannot be queued (unknown partition...).
        """

        def report(err: KafkaError | None, _msg: Message) -> None:
            self._acknowledged(tag, err)

        kwargs = _produce_kwargs(report, key, value, headers, partition, None)
        client = self._producer._producer
        while True:
            try:
                with self._acks:
                    client.produce(topic, **kwargs)
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
        """Wait up to ``timeout`` seconds until every record of the group has its delivery
        report (served by the producer's thread: nothing is flushed).

        Returns:
            how many of them were not acknowledged: failed, or still unreported at ``timeout``
            seconds; 0 when all of them are safely written.
        """
        deadline = time.monotonic() + timeout
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


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


_Report = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[tuple[int, int]]", KafkaError | None, Message
]
"""A delivery report of ``AckingProducer.queue``: the loop and future waiting for it."""

_Waiting = tuple[
    str,
    dict[str, Any],
    "asyncio.Future[tuple[int, int]]",
    bytes | None,
    bytes | None,
    Headers | None,
    int | None,
]
"""A record of ``AckingProducer.queue`` waiting for room: topic, produce arguments, its future,
the key, value and headers (to name a refused record), and its input partition (``source``)."""


def _settle_all(batch: list[_Report]) -> None:
    for _loop, future, err, msg in batch:
        _settle(future, err, msg)


def _settle(future: asyncio.Future[tuple[int, int]], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is None:
        future.set_result((msg.partition() or 0, msg.offset() or 0))
    elif err.code() in _TOO_LARGE:
        size = _record_size(msg.key(), msg.value(), message_headers(msg))
        future.set_exception(RecordTooLargeError(size, f"delivery to {msg.topic()}: {err.str()}"))
    else:
        future.set_exception(ProduceError(f"delivery to {msg.topic()} failed: {err.str()}"))
