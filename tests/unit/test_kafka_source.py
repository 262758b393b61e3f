"""The Kafka source's poll (what it does with the errors librdkafka reports as messages) and
its resume (how it wakes librdkafka's fetcher), over a stand-in for the librdkafka handle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from structlog.testing import capture_logs

from consumer.adapters.kafka import KafkaSource
from consumer.errors import BrokerError


class ErrorMessage:
    def __init__(self, code: int, *, partition: int = 0, offset: int = -1) -> None:
        self._error = KafkaError(code)
        self._partition = partition
        self._offset = offset

    def error(self) -> KafkaError:
        return self._error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    def __init__(self, *messages: Any) -> None:
        self.messages = list(messages)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return self.messages


def source_with(*messages: Any) -> KafkaSource:
    source = KafkaSource({}, "events")
    source._consumer = FakeConsumer(*messages)  # type: ignore[assignment]
    return source


@pytest.mark.parametrize(
    "code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED]
)
def test_an_authorization_error_stops_the_service(code: int) -> None:
    """Not fatal to librdkafka, but nothing is consumed until an operator fixes the ACLs: the
    service must not look healthy while it reads nothing."""
    with pytest.raises(BrokerError, match="AUTHORIZATION"):
        source_with(ErrorMessage(code))._poll(10, 0.01)


def test_other_consumer_errors_are_logged_not_swallowed() -> None:
    """A transient error is retried by librdkafka, and logged with its code."""
    with capture_logs() as logs:
        polled = source_with(ErrorMessage(KafkaError._TRANSPORT))._poll(10, 0.01)
    assert polled == ([], {}, set())
    assert [e["code"] for e in logs if e["event"] == "kafka_consumer_error"] == ["_TRANSPORT"]


def test_partition_ends_are_not_errors_but_the_offsets_reached() -> None:
    """librdkafka's partition EOF carries the fetch position, past transaction markers: the
    poll keeps it for ``ends_reached`` (taken once) and logs nothing."""
    source = source_with(
        ErrorMessage(KafkaError._PARTITION_EOF, partition=2, offset=48),
        ErrorMessage(KafkaError._PARTITION_EOF, partition=0, offset=7),
    )
    with capture_logs() as logs:
        records = asyncio.run(source.poll(10, 0.01))
    assert (records, logs) == ([], [])
    assert source.ends_reached() == {2: 48, 0: 7}
    assert source.ends_reached() == {}


class RecordingLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[Any, ...]] = []

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self.lines.append((level, fmt, *args))


@pytest.mark.parametrize(
    ("message", "partition", "offset", "reset_to"),
    [
        (  # librdkafka 2.x
            "[thrd:main]: events [3]: offset reset (at offset 17 (leader epoch -1), broker 1) to "
            "offset BEGINNING (leader epoch -1): fetch failed due to requested offset not "
            "available on the broker: Broker: Offset out of range",
            3,
            17,
            "earliest",
        ),
        (  # librdkafka 1.x
            "[thrd:main]: events [0]: offset reset (at offset 5, broker 2) to END: "
            "fetch failed due to requested offset not available on the broker: "
            "Broker: Offset out of range",
            0,
            5,
            "latest",
        ),
    ],
)
def test_an_offset_reset_is_logged_and_reported(
    message: str, partition: int, offset: int, reset_to: str
) -> None:
    inner = RecordingLogger()
    resets: list[tuple[int, str]] = []
    source = KafkaSource({"logger": inner}, "events", on_offset_reset=lambda *a: resets.append(a))
    watch = source._config["logger"]
    with capture_logs() as logs:
        watch.log(4, "%s [%s] %s", "OFFSET", "rdkafka#consumer-1", message)
        watch.log(4, "%s [%s] %s", "OFFSET", "rdkafka#consumer-1", message.replace("events", "x"))
        watch.log(7, "%s [%s] %s", "FETCH", "rdkafka#consumer-1", "events [1]: fetch")
    assert resets == [(partition, reset_to)]
    assert [(e["event"], e["topic"], e["partition"], e["offset"], e["reset_to"]) for e in logs] == [
        ("kafka_offset_reset", "events", partition, offset, reset_to)
    ]
    assert len(inner.lines) == 3  # every line still reaches the configured logger


RESET_LINE = (
    "[thrd:main]: events [{}]: offset reset (at offset 31 (leader epoch 0), broker 1) to offset "
    "BEGINNING (leader epoch -1): fetch failed due to requested offset not available on the "
    "broker: Broker: Offset out of range"
)


class LoggingConsumer(FakeConsumer):
    """Serves librdkafka's offset-reset line for ``resets`` inside ``consume``, as librdkafka
    serves its log queue; records stores and commits."""

    def __init__(self, source: KafkaSource, resets: list[int]) -> None:
        super().__init__()
        self._watch = source._config["logger"]
        self._resets = resets
        self.calls: list[tuple[str, dict[int, int]]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        for partition in self._resets:
            self._watch.log(4, "%s [%s] %s", "OFFSET", "c", RESET_LINE.format(partition))
        self._resets = []
        return []

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.calls.append(("store", {tp.partition: tp.offset for tp in offsets}))

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous
        self.calls.append(("commit", {tp.partition: tp.offset for tp in offsets}))


def test_a_reset_is_reported_by_the_poll_and_a_rewound_store_is_committed_explicitly() -> None:
    """A reset partition is reported once (``offsets_reset``). librdkafka commits a stored
    offset only above the one it last committed, so the first store after a reset, and a store
    below the previous one (the positions restarted lower), are committed with their offsets;
    the stores after them are left to the periodic commit."""
    source = KafkaSource({}, "events", on_offset_reset=lambda *a: None)
    consumer = LoggingConsumer(source, [1])
    source._consumer = consumer  # type: ignore[assignment]
    source.store_now({0: 31, 1: 18})
    with capture_logs():
        asyncio.run(source.poll(10, 0.01))
    assert (source.offsets_reset(), source.offsets_reset()) == ({1}, set())
    source.store_now({1: 18})  # a store of the earlier offsets, after the reset
    source.store_now({0: 3, 1: 3})  # the positions restarted
    source.store_now({0: 4, 1: 5})
    assert consumer.calls == [
        ("store", {0: 31, 1: 18}),
        ("store", {1: 18}),
        ("commit", {1: 18}),
        ("store", {0: 3, 1: 3}),
        ("commit", {0: 3, 1: 3}),
        ("store", {0: 4, 1: 5}),
    ]


class ResumingConsumer:
    """Records resume and watermark calls; the watermark request fails for ``failing``."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._failing = failing

    def resume(self, parts: list[Any]) -> None:
        self.calls.append(("resume", [tp.partition for tp in parts]))

    def get_watermark_offsets(
        self, tp: Any, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        self.calls.append(("watermarks", (tp.partition, cached)))
        if tp.partition in self._failing:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return 0, 10


def resumed(consumer: ResumingConsumer, partitions: list[int]) -> list[tuple[str, Any]]:
    source = KafkaSource({}, "events")
    source._consumer = consumer  # type: ignore[assignment]
    try:
        asyncio.run(source.resume(partitions))
    finally:
        source._executor.shutdown()
    return consumer.calls


def test_resume_wakes_the_fetcher_with_a_request_to_each_partitions_leader() -> None:
    """librdkafka's fetcher with every partition paused notices a resume only within a second;
    a request to the partition's leader (an uncached high watermark) wakes it at once."""
    calls = resumed(ResumingConsumer(), [0, 2])
    assert calls == [("resume", [0, 2]), ("watermarks", (0, False)), ("watermarks", (2, False))]


def test_a_failed_wake_up_is_not_retried_for_the_other_partitions() -> None:
    """With the leader away, the loop must not wait once per partition: one try per resume."""
    calls = resumed(ResumingConsumer(failing=frozenset({0})), [0, 1])
    assert calls == [("resume", [0, 1]), ("watermarks", (0, False))]


class DataMessage:
    """A fetched record of ``partition`` at ``offset``."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "events"

    def key(self) -> bytes:
        return b"user-1"

    def value(self) -> bytes:
        return b"\x00"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class ScriptedConsumer:
    """Each ``consume`` call returns the next scripted batch after running its hook (a
    rebalance callback, as librdkafka serves them inside ``consume``)."""

    def __init__(self, *calls: tuple[Any, list[Any]]) -> None:
        self.calls = list(calls)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        hook, batch = self.calls.pop(0) if self.calls else (None, [])
        if hook is not None:
            hook()
        return list(batch)


class RecordingListener:
    def __init__(self) -> None:
        self.events: list[tuple[str, list[int]]] = []

    def on_assign(self, partitions: list[int]) -> None:
        self.events.append(("assign", partitions))

    def on_revoke(self, partitions: list[int]) -> None:
        self.events.append(("revoke", partitions))

    def on_lost(self, partitions: list[int]) -> None:
        self.events.append(("lost", partitions))


@pytest.mark.parametrize("how", ["revoke", "lost"])
def test_records_of_a_partition_revoked_later_in_the_same_poll_are_not_handed_out(
    how: str,
) -> None:
    """A poll takes what is ready, else waits for a first record and tops the batch up with a
    second ``consume``. A rebalance served in that second call revokes (or loses) partition 0:
    librdkafka purges the revoked partition's records of that call, not those the first call
    already returned. Handed out, they would be processed by a member that no longer owns the
    partition, on a tracker made after its revocation (the new owner, or this member on a
    later assignment, reads them again from the committed offset). Partition 1 stays."""
    listener = RecordingListener()
    source = KafkaSource({}, "events")
    lose = how == "lost"

    def rebalance() -> None:
        parts = [TopicPartition("events", 0)]
        if lose:
            source._lost_callback(listener, parts)
        else:
            source._revoke_callback(listener, parts)

    source._consumer = ScriptedConsumer(  # type: ignore[assignment]
        (None, []),
        (None, [DataMessage(0, 5), DataMessage(1, 9)]),
        (rebalance, [DataMessage(1, 10)]),
    )

    records, _ends, _resets = source._poll(500, 0.01)

    assert [(r.partition, r.offset) for r in records] == [(1, 9), (1, 10)]
    assert listener.events == [(how, [0])]
