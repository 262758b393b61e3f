"""The restore's wait for its fence against the producer's other writes (DESIGN, 3 and 7), with
a real broker: when the restore of a newly assigned partition returns."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client import CollectorRegistry

from consumer.adapters.admin import DeliveryLog, Health
from consumer.adapters.changelog_watch import ChangelogWatch
from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.metrics import Metrics
from consumer.adapters.telemetry import ServiceTelemetry
from consumer.adapters.topics import RESTORE_GROUP_ID, restore_partitions
from consumer.bootstrap import _restorer
from consumer.domain.profile_epoch import FENCE_KEY, RestoredValue
from consumer.engine.profiles import ProfileStore
from consumer.engine.restore import RestoreCancel
from consumer.settings import Settings
from tests.fakes import RETENTION

pytestmark = pytest.mark.broker

RESTORE_BOUND = 60.0
"""Seconds the restore of an empty changelog partition is given: it reads nothing and writes
one fence, acknowledged in milliseconds; the write held below stays unacknowledged for longer
(librdkafka's ``message.timeout.ms``, 120 s) unless the restore waits for it."""


def test_a_restore_does_not_wait_for_the_producers_other_writes(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A member is assigned a partition while one write of the service's shared producer is
    unacknowledged: here a dead letter whose topic the cluster does not show yet (librdkafka
    holds it until the topic appears or ``message.timeout.ms`` passes), as one behind a leader
    that is away; under steady traffic, simply the other partitions' profile writes.
    The restore reads the empty changelog partition and writes its fence.

    Expected: the restore returns once its own fence is acknowledged; the dead letter is none
    of its business (its record stays unfinished, and its lane waits for it).
    Before: ``settle`` calls ``flush`` on the shared librdkafka producer, which waits until no
    message at all is outstanding; the restore returned only when the dead letter failed
    (``message.timeout.ms``) or ``settle``'s timeout (DELIVERY_SHUTDOWN_TIMEOUT_SECONDS, 50 s
    by default) passed, the partition paused all the while. Under steady traffic no moment
    without an outstanding write need come, and every scale-out restore waits the full timeout.
    """
    changelog = make_topic(partitions=1)
    dlq = unique_name("dlq")  # created only at the end: until then, its write is held
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_PROFILE_TOPIC": changelog,
            # The restore checks the changelog's co-partitioning with the input first.
            "KAFKA_TOPIC": make_topic(partitions=1),
            # settle's timeout: longer than the bound, so only a wait for the fence alone
            # returns within it.
            "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "600",
        },
        require_api_key=False,
    )
    telemetry = ServiceTelemetry(Metrics.create(CollectorRegistry()), Health(), DeliveryLog(10))
    producer = AckingProducer(
        # A write to a topic the cluster does not have waits for it, up to message.timeout.ms.
        {**settings.kafka.producer_config(), "topic.metadata.propagation.max.ms": 600_000}
    )
    producer.start()
    watch = ChangelogWatch(
        settings.kafka.reader_config(RESTORE_GROUP_ID), changelog, lambda _p, _k, _e: None
    )
    loop = asyncio.new_event_loop()
    lanes = threading.Thread(target=loop.run_forever, name="lanes", daemon=True)
    lanes.start()

    async def dead_letter() -> asyncio.Future[tuple[int, int]]:
        return producer.queue(dlq, b"user-1", b"dead letter")

    held = asyncio.run_coroutine_threadsafe(dead_letter(), loop).result(30)
    store = ProfileStore(RETENTION)
    restore = _restorer(settings, store, producer, telemetry, watch)
    done = threading.Event()

    def restore_partition() -> None:
        restore([0], RestoreCancel())
        done.set()

    restoring = threading.Thread(target=restore_partition, name="restore", daemon=True)
    try:
        restoring.start()
        returned = done.wait(RESTORE_BOUND)
        still_held = not asyncio.run_coroutine_threadsafe(_done(held), loop).result(30)
        assert still_held, "the dead letter was not held unacknowledged during the restore"
        assert returned, (
            f"the restore of an empty partition did not return within {RESTORE_BOUND:.0f}s "
            "while another write of the producer was unacknowledged"
        )
        assert store.epoch(0) == 1
    finally:
        # Let the dead letter through, so that nothing is left inside the producer.
        _create(kafka_bootstrap, dlq)
        restoring.join(180)
        watch.close()
        producer.close()
        loop.call_soon_threadsafe(loop.stop)
        lanes.join(10)
        loop.close()


def test_a_failed_earlier_write_does_not_fail_a_later_restore(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A write of the producer failed before (as the fence of a restore that was cancelled
    meanwhile, which nobody waited for); then a partition is assigned and restored.

    Expected: the restore returns, its fence in the changelog: it judges its own writes only.
    Before: the producer counted every failed write of its lifetime, and every later restore's
    ``settle`` reported that one: each raised ``BrokerError`` ("the changelog fence ... was not
    written") although its fence was written, and the worker stopped.
    """
    changelog = make_topic(partitions=1)
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_PROFILE_TOPIC": changelog,
            "KAFKA_TOPIC": make_topic(partitions=1),  # co-partitioned, as the restore checks
        },
        require_api_key=False,
    )
    telemetry = ServiceTelemetry(Metrics.create(CollectorRegistry()), Health(), DeliveryLog(10))
    producer = AckingProducer(
        # A write to a topic the cluster does not have fails as soon as its metadata says so.
        {**settings.kafka.producer_config(), "topic.metadata.propagation.max.ms": 1}
    )
    producer.start()
    watch = ChangelogWatch(
        settings.kafka.reader_config(RESTORE_GROUP_ID), changelog, lambda _p, _k, _e: None
    )
    try:
        producer.send_nowait(unique_name("absent"), FENCE_KEY, b"never written", partition=0)
        assert producer.settle(60.0) == 1, "the earlier write did not fail"
        store = ProfileStore(RETENTION)
        _restorer(settings, store, producer, telemetry, watch)([0], RestoreCancel())
        assert store.epoch(0) == 1
        fences = [value for key, value in _read(settings, changelog) if key == FENCE_KEY]
        assert len(fences) == 1
    finally:
        watch.close()
        producer.close()


def _read(settings: Settings, topic: str) -> list[tuple[bytes, RestoredValue]]:
    """Every keyed record of partition 0 of ``topic``, as a restore applies them."""
    records: list[tuple[bytes, RestoredValue]] = []
    restore_partitions(
        settings.kafka.reader_config(RESTORE_GROUP_ID),
        topic,
        [0],
        lambda _partition, batch: records.extend(batch),
    )
    return records


def _create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1)])[topic].result(60)
    admin.delete_topics([topic])


async def _done(future: asyncio.Future[tuple[int, int]]) -> bool:
    return future.done()
