"""The Kafka adapter's synchronous pieces against a real broker: ``AckingProducer.send_nowait``
with ``settle``, and ``PartitionReader`` (what the profile restore and ``replay-dlq`` use)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.kafka_reader import PartitionReader
from consumer.adapters.topics import KafkaChangelog, restore_partitions
from consumer.domain.profile_epoch import EPOCH_HEADER, RestoredValue, Tombstone
from consumer.errors import BrokerError
from consumer.settings import Settings

pytestmark = pytest.mark.broker


def settings_for(bootstrap: str) -> Settings:
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}, require_api_key=False)


def produce(settings: Settings, topic: str, records: list[tuple[int, bytes]]) -> int:
    """Write (partition, value) records in order; how many were not acknowledged."""
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    try:
        for partition, value in records:
            producer.send_nowait(topic, b"k", value, [("h", b"1")], partition=partition)
        return producer.settle(30.0)
    finally:
        producer.close()


def test_send_nowait_writes_in_order_and_the_reader_reads_to_the_end(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Every queued record is acknowledged; the reader returns each partition's records in
    offset order, with key and headers, and stops at the end it saw."""
    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=2)
    written = [(i % 2, f"v{i}".encode()) for i in range(10)]

    assert produce(settings, topic, written) == 0
    with PartitionReader(settings.kafka.reader_config(unique_name("reader")), topic) as reader:
        marks = reader.watermarks(reader.partitions(), time.monotonic() + 30)
        records = list(reader.read(marks, time.monotonic() + 30))

    expected = {p: [v for q, v in written if q == p] for p in (0, 1)}
    actual = {p: [r.value for r in records if r.partition == p] for p in (0, 1)}
    assert expected == actual
    assert {(r.key, tuple(r.headers)) for r in records} == {(b"k", (("h", b"1"),))}


def test_the_reader_starts_where_its_group_committed(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A commit by the reader's group is what ``committed`` returns next time (None before)."""
    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=1)
    group = unique_name("reader")
    assert produce(settings, topic, [(0, b"a"), (0, b"b"), (0, b"c")]) == 0

    with PartitionReader(settings.kafka.reader_config(group), topic) as reader:
        before = reader.committed([0])
        reader.commit({0: 2})
    with PartitionReader(settings.kafka.reader_config(group), topic) as reader:
        after = reader.committed([0])
        rest = [r.value for r in reader.read({0: (2, 3)}, time.monotonic() + 30)]

    assert (before, after, rest) == ({0: None}, {0: 2}, [b"c"])


def test_a_missing_topic_is_a_broker_error_naming_it(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """``partitions`` of a topic that does not exist raises instead of reading nothing."""
    settings = settings_for(kafka_bootstrap)
    topic = unique_name("missing")

    with (
        PartitionReader(settings.kafka.reader_config(unique_name("reader")), topic) as reader,
        pytest.raises(BrokerError, match=topic),
    ):
        reader.partitions()


def test_send_nowait_names_a_record_too_large_for_the_producer(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """A record over KAFKA_MAX_MESSAGE_BYTES is refused as RecordTooLargeError (certain, not
    an outage), the same answer ``send`` gives, with the record's size."""
    from consumer.errors import RecordTooLargeError

    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_MAX_MESSAGE_BYTES": "100000",
            "MAPPING_MAX_PROFILE_BYTES": "50000",
        },
        require_api_key=False,
    )
    topic = make_topic(partitions=1)
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    try:
        with pytest.raises(RecordTooLargeError):
            producer.send_nowait(topic, b"k", b"\x07" * 200_000, partition=0)
    finally:
        producer.close()


def test_the_restore_reads_batches_to_the_end_reports_progress_and_skips_cancelled(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``restore_partitions`` hands each partition's (key, value) pairs in offset order, says
    after each batch how many records are left, and stops reading a partition once it is
    cancelled (here: before the first batch)."""
    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=3)
    written = [(i % 3, f"v{i}".encode()) for i in range(3_000)]
    assert produce(settings, topic, written) == 0
    applied: dict[int, list[RestoredValue]] = {}
    left: dict[int, list[int]] = {}

    def apply(partition: int, pairs: list[tuple[bytes, RestoredValue]]) -> None:
        applied.setdefault(partition, []).extend(v for _k, v in pairs)

    def progress(partition: int, _records: int, remaining: int) -> None:
        left.setdefault(partition, []).append(remaining)

    read = restore_partitions(
        settings.kafka.reader_config(unique_name("restore")),
        topic,
        [0, 1, 2],
        apply,
        cancelled=lambda partition: partition == 2,
        progress=progress,
    )

    expected = {p: [v for q, v in written if q == p] for p in (0, 1)}
    assert (applied, read) == (expected, 2_000)
    assert {p: remaining[-1] for p, remaining in left.items()} == {0: 0, 1: 0}


def test_queue_hands_records_over_before_returning_and_in_order_when_the_local_queue_is_full(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``queue`` hands a record to librdkafka before it returns (a flush without awaiting
    anything writes it), and records that find the local queue full (two records here) wait
    and are written after it drains, in the order they were queued, each future acknowledged."""
    import asyncio

    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=1)
    config = {**settings.kafka.producer_config(), "queue.buffering.max.messages": 2}

    async def scenario() -> tuple[int, list[tuple[int, int]]]:
        producer = AckingProducer(config)
        producer.start()
        try:
            first = producer.queue(topic, b"k", b"v0", partition=0)
            left = producer.flush(30.0)  # nothing awaited: v0 was already handed over
            futures = [first] + [
                producer.queue(topic, b"k", f"v{i}".encode(), partition=0) for i in range(1, 40)
            ]
            return left, list(await asyncio.gather(*futures))
        finally:
            producer.close()

    left, acknowledged = asyncio.run(scenario())
    with PartitionReader(settings.kafka.reader_config(unique_name("reader")), topic) as reader:
        marks = reader.watermarks([0], time.monotonic() + 30)
        values = [r.value for r in reader.read(marks, time.monotonic() + 30)]

    assert left == 0
    assert values == [f"v{i}".encode() for i in range(40)]
    assert [offset for _partition, offset in acknowledged] == list(range(40))


def test_a_changelog_tombstone_carries_its_writers_epoch_back_to_the_restore(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``KafkaChangelog`` writes a tombstone of an owner with an epoch with the
    ``button.epoch`` header (4 bytes, big-endian) and one without an epoch bare, a value without
    headers; the restore reads the first back as a ``Tombstone`` of that epoch, the second as
    ``None`` (as an earlier release's tombstone), the value as it is. A reader that ignores
    headers (an earlier release's restore) still sees a tombstone: the value is None."""
    import asyncio

    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=1)

    async def write() -> None:
        producer = AckingProducer(settings.kafka.producer_config())
        producer.start()
        try:
            changelog = KafkaChangelog(producer, topic)
            await changelog.write(0, b"a", None, epoch=70_000)
            await changelog.write(0, b"b", None, epoch=0)
            await changelog.write(0, b"c", b"\x04value", epoch=3)
        finally:
            producer.close()

    asyncio.run(write())
    applied: list[tuple[bytes, RestoredValue]] = []
    restore_partitions(
        settings.kafka.reader_config(unique_name("restore")),
        topic,
        [0],
        lambda _partition, records: applied.extend(records),
    )
    with PartitionReader(settings.kafka.reader_config(unique_name("reader")), topic) as reader:
        marks = reader.watermarks([0], time.monotonic() + 30)
        records = list(reader.read(marks, time.monotonic() + 30))

    assert applied == [(b"a", Tombstone(70_000)), (b"b", None), (b"c", b"\x04value")]
    assert [(r.key, r.value, r.headers) for r in records] == [
        (b"a", None, [(EPOCH_HEADER, (70_000).to_bytes(4, "big"))]),
        (b"b", None, []),
        (b"c", b"\x04value", []),
    ]


def test_the_changelog_watch_reports_records_stamped_below_the_owner_epoch(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``ChangelogWatch`` follows a partition from the offset given (what came before is not
    read) and reports, per record, a value stamped below the owner's epoch, a tombstone whose
    ``button.epoch`` header is below it and a tombstone without one (epoch 0); the owner's own
    records, a newer owner's and fences are not reported. ``stop`` and ``close`` end it."""
    import asyncio
    import threading

    from consumer.adapters.changelog_watch import ChangelogWatch
    from consumer.domain.profile_epoch import FENCE_KEY, fence_value, stamp

    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=1)
    value = b"\x04" + bytes(8)
    reported: list[tuple[int, bytes, int]] = []
    done = threading.Event()

    def on_late(partition: int, key: bytes, epoch: int) -> None:
        reported.append((partition, key, epoch))
        if key == b"last":
            done.set()

    async def write(records: list[tuple[bytes, bytes | None, int]]) -> None:
        producer = AckingProducer(settings.kafka.producer_config())
        producer.start()
        try:
            changelog = KafkaChangelog(producer, topic)
            for key, data, epoch in records:
                await changelog.write(0, key, data, epoch=epoch)
        finally:
            producer.close()

    asyncio.run(write([(b"before", stamp(value, 1), 1)]))
    watch = ChangelogWatch(settings.kafka.reader_config(unique_name("watch")), topic, on_late)
    try:
        watch.follow(0, 1, 5)
        asyncio.run(
            write(
                [
                    (FENCE_KEY, fence_value(5), 5),
                    (b"own", stamp(value, 5), 5),
                    (b"late", stamp(value, 3), 3),
                    (b"newer", stamp(value, 6), 6),
                    (b"late-tombstone", None, 2),
                    (b"own-tombstone", None, 5),
                    (b"bare-tombstone", None, 0),
                    (b"last", value, 0),
                ]
            )
        )
        assert done.wait(30), reported
        assert reported == [
            (0, b"late", 3),
            (0, b"late-tombstone", 2),
            (0, b"bare-tombstone", 0),
            (0, b"last", 0),
        ]
        watch.stop([0])
        assert watch.following == frozenset()
    finally:
        watch.close()


def test_a_changelog_watch_that_dies_keeps_its_error(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """An error the watch does not expect ends its thread; the error is kept in ``failure``
    (the worker stops with it) instead of only being logged while the owner runs on unwatched."""
    import asyncio

    from consumer.adapters.changelog_watch import ChangelogWatch
    from consumer.domain.profile_epoch import stamp

    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=1)

    def on_late(partition: int, key: bytes, epoch: int) -> None:
        raise RuntimeError(f"cannot repair {key!r}")

    async def write() -> None:
        producer = AckingProducer(settings.kafka.producer_config())
        producer.start()
        try:
            changelog = KafkaChangelog(producer, topic)
            await changelog.write(0, b"late", stamp(b"\x04" + bytes(8), 1), epoch=1)
        finally:
            producer.close()

    watch = ChangelogWatch(settings.kafka.reader_config(unique_name("watch")), topic, on_late)
    try:
        assert watch.failure is None
        watch.follow(0, 0, 5)
        asyncio.run(write())
        deadline = time.monotonic() + 30
        while watch.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(watch.failure, RuntimeError)
        assert "cannot repair b'late'" in str(watch.failure)
    finally:
        watch.close()
