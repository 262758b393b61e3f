"""The revoke's wait for its partitions' writes against the producer's other writes (DESIGN, 1
and 3), with a real broker: how long the service's revoke callback holds the Kafka thread, and
which writes it waits for."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from consumer.adapters.topics import KafkaDeadLetters
from consumer.bootstrap import Service, build
from consumer.domain.deadletter import DeadLetter, Stage
from consumer.ports import Record
from consumer.settings import Settings

pytestmark = pytest.mark.broker

REVOKE_WAIT = 10.0
"""Seconds a revoke waits for its partitions' writes (``WorkerOptions.settle_timeout``)."""


class _Lanes:
    """The service's event loop on a thread of its own, where its records write."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lanes", daemon=True)
        self._thread.start()

    def dead_letter(self, letters: KafkaDeadLetters, partition: int) -> None:
        """Queue a dead letter of a record of input ``partition``; it is not awaited."""
        record = Record("orders", partition, 7, b"user-1", b"value", None, [])
        letter = DeadLetter("orders", partition, 7, Stage.DELIVER, "r", "E", "m", 0)

        async def write() -> None:
            self.loop.create_task(letters.write(record, letter))

        asyncio.run_coroutine_threadsafe(write(), self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def service(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> Iterator[tuple[Service, KafkaDeadLetters]]:
    """The service as ``run`` builds it (dry run), its producer started, and a dead-letter
    writer whose topic the cluster shows only at the end: until then its writes are held
    (librdkafka waits for the topic up to ``message.timeout.ms``), as behind a leader that is
    away."""
    dlq = unique_name("dlq")
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": make_topic(partitions=2),
            "KAFKA_PROFILE_TOPIC": make_topic(partitions=2),
            "DELIVERY_DRY_RUN": "true",
            "KAFKA_CONFIG_TOPIC_METADATA_PROPAGATION_MAX_MS": "600000",
        },
        require_api_key=False,
    )
    service = build(settings, CollectorRegistry())
    service.producer.start()
    try:
        yield service, KafkaDeadLetters(service.producer, dlq)
    finally:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        admin.create_topics([NewTopic(dlq, num_partitions=1)])[dlq].result(60)
        service.producer.close()
        admin.delete_topics([dlq])


def _revoke(service: Service, partitions: list[int]) -> tuple[float, list[int]]:
    """Revoke ``partitions`` as the Kafka thread does: the seconds the callback took, and the
    ``outstanding`` of each ``revoke_flush_incomplete`` line it logged."""
    with capture_logs() as logs:
        started = time.monotonic()
        service.worker.on_revoke(partitions)
        seconds = time.monotonic() - started
    return seconds, [e["outstanding"] for e in logs if e["event"] == "revoke_flush_incomplete"]


def test_a_revoke_does_not_wait_for_other_partitions_writes(
    service: tuple[Service, KafkaDeadLetters],
) -> None:
    """A member gives up partition 0 while a dead letter of a record of partition 1, which it
    keeps, is unacknowledged (with cooperative rebalancing, the kept partitions' lanes go on
    writing all through the revoke).

    Expected: the revoke waits for nothing (partition 0 has no write outstanding) and logs no
    ``revoke_flush_incomplete``.
    Before: the callback flushed the whole shared producer: it held the Kafka thread the full
    10 s (no poll, no fetch of the kept partitions) and logged ``revoke_flush_incomplete``
    with ``outstanding=1``, the kept partition's write, a false signal.
    """
    svc, letters = service
    lanes = _Lanes()
    try:
        lanes.dead_letter(letters, partition=1)
        seconds, incomplete = _revoke(svc, [0])
        assert (incomplete, seconds < REVOKE_WAIT) == ([], True), seconds
    finally:
        lanes.close()


def test_a_revoke_waits_for_its_partitions_writes(
    service: tuple[Service, KafkaDeadLetters],
) -> None:
    """A dead letter of a record of partition 0 is unacknowledged when partition 0 is revoked
    (its record abandoned): the revoke waits for it, up to its bound, before it commits, and
    logs it as outstanding."""
    svc, letters = service
    lanes = _Lanes()
    try:
        lanes.dead_letter(letters, partition=0)
        seconds, incomplete = _revoke(svc, [0])
        assert (incomplete, seconds >= REVOKE_WAIT) == ([1], True), seconds
    finally:
        lanes.close()
