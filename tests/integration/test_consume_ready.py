"""``consume_ready`` against a real broker: what is ready is taken at once; only an empty
queue is waited on.

librdkafka's batch consume (``Consumer.consume(n, timeout)``) returns early only with ``n``
messages in hand: with fewer ready it waits out the whole timeout. The poll loop asks for up to
500 records with a 100 ms timeout, so at any rate below 5,000 records/s each record waited up
to 100 ms there, and pauses, resumes and stored offsets waited with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer.adapters.kafka import consume_ready

pytestmark = pytest.mark.broker

WAIT = 60.0
"""The timeout of each call: far beyond what a ready message needs, so a call that waits it out
is told apart from one that returns at once on any machine."""


def _consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    return consumer


def test_ready_messages_are_taken_without_waiting_out_the_timeout(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Ten messages, far fewer than the 500 asked for: every call returns what is ready at
    once, where ``consume(500, 60)`` would hold the first ten for its whole minute."""
    topic = make_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    for i in range(10):
        producer.produce(topic, str(i).encode(), partition=0)
    assert producer.flush(30) == 0
    consumer = _consumer(kafka_bootstrap, unique_name("group"), topic)
    try:
        started = time.monotonic()
        values: list[bytes | None] = []
        while len(values) < 10 and time.monotonic() - started < WAIT:
            values.extend(m.value() for m in consume_ready(consumer, 500, WAIT) if not m.error())
        took = time.monotonic() - started
    finally:
        consumer.close()

    assert values == [str(i).encode() for i in range(10)]
    assert took < WAIT / 2, f"the ready messages waited {took:.1f}s for a batch of 500"


def test_an_empty_queue_is_waited_on_for_its_first_message(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Nothing to read: the call waits (here a short timeout), then returns nothing; a message
    produced later is returned by the next call."""
    topic = make_topic(partitions=1)
    consumer = _consumer(kafka_bootstrap, unique_name("group"), topic)
    try:
        assert consume_ready(consumer, 500, 0.2) == []
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
        producer.produce(topic, b"late", partition=0)
        assert producer.flush(30) == 0
        got = [m.value() for m in consume_ready(consumer, 500, WAIT) if not m.error()]
    finally:
        consumer.close()

    assert got == [b"late"]
