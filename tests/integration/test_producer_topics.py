"""The service's producers write only to topics that exist: they never have the broker create one.

A deleted changelog or dead-letter topic must fail the write (the service then stops with an
error), not be recreated by the broker's ``auto.create.topics.enable`` with its defaults (one
partition, ``cleanup.policy=delete``) and silently take the writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from consumer.settings import Settings

pytestmark = pytest.mark.broker


def _broker_auto_creates(admin: AdminClient) -> bool:
    broker = next(iter(admin.list_topics(timeout=30).brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker))
    entries = admin.describe_configs([resource])[resource].result(30)
    return str(entries["auto.create.topics.enable"].value) == "true"


def _wait_gone(admin: AdminClient, topic: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while topic in admin.list_topics(timeout=10).topics:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topic {topic} still listed {timeout} s after its deletion")
        time.sleep(0.1)


def test_a_deleted_topic_fails_the_write_instead_of_being_auto_created(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # The fault is only visible where the broker auto-creates topics (Kafka's default, and the
    # project's local broker's): without it this test would pass whatever the producer asks.
    assert _broker_auto_creates(admin), "the test broker must have auto.create.topics.enable"
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DELIVERY_DRY_RUN": "true"}
    )
    topic = make_topic(partitions=2, config={"cleanup.policy": "compact"}, prefix="changelog")
    producer = Producer(dict(settings.kafka.producer_config()))
    errors: list[KafkaError | None] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        errors.append(err)

    producer.produce(topic, key=b"user-1", value=b"before", partition=0, on_delivery=report)
    assert producer.flush(60) == 0
    assert errors == [None]

    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(timeout=30)
    _wait_gone(admin, topic)

    producer.produce(topic, key=b"user-1", value=b"after", partition=0, on_delivery=report)
    # Bounded by message.timeout.ms (120 s) at the latest; flush returns once it is reported.
    assert producer.flush(150) == 0
    assert len(errors) == 2
    assert errors[1] is not None, "the write after the deletion was acknowledged"
    assert topic not in admin.list_topics(timeout=10).topics, "the producer recreated the topic"
