"""A record whose key alone is over the dead-letter topic's record limit, end to end.

DESIGN, 4 and the README promise that a record too large for the dead-letter topic is
dead-lettered as a reference (``too_large``: no value, no source headers) and that the service
never stops for it. A reference whose key alone is over the DLQ's limit is written without the
key (``button.original.key.size``); the service stopped on it before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.adapters.avro_codec import build_encoder
from consumer.commands import produce_events
from consumer.domain.deadletter import H_EXC_MESSAGE, H_ORIGINAL_KEY_SIZE, H_REASON
from consumer.domain.events import MAX_KEY_BYTES
from tests.e2e.harness import (
    ServiceRunner,
    committed_offsets,
    end_offsets,
    expected_orders,
    headers_of,
    past_events,
    read_all,
    wait_until,
)

pytestmark = pytest.mark.broker

KEY_BYTES = 1_100_000
"""Over KAFKA_MAX_MESSAGE_BYTES (1,048,588 by default), under the input topic's limit here."""


def test_a_record_with_a_key_too_large_for_the_dlq_is_dead_lettered_and_the_rest_delivered(
    kafka_bootstrap, make_topic, service_settings, sandbox
):
    """One input partition (its topic takes records up to 3 MB): purchases, then a record
    with a 1.1 MB key and a value that is not Avro (a poison pill from a misbehaving
    producer), then more purchases. The dead letter of the pill does not fit the DLQ whole,
    nor does its ``too_large`` reference, which keeps the key.

    Expected: the pill is dead-lettered ``key_too_large`` (its key is over ``MAX_KEY_BYTES``)
    as a reference without its key, every purchase before and after it reaches the sandbox,
    and the group commits to the partition's end. (Before: the reference kept the key, its
    write was refused too, MSG_SIZE_TOO_LARGE, and the service stopped with the pill's offset
    uncommitted, at every start.)
    """
    topic = make_topic(partitions=1, prefix="bigkey", config={"max.message.bytes": "3000000"})
    settings = service_settings(topic)
    before, after = past_events(4, seed=61), past_events(4, seed=62)
    produce_events(settings, before, partitions=1)
    big = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 3_000_000})
    big.produce(topic, key=b"k" * KEY_BYTES, value=b"\x07not avro", partition=0)
    assert big.flush(30) == 0
    produce_events(settings, after, partitions=1)
    ends = end_offsets(kafka_bootstrap, topic, 1)
    expected = expected_orders(before + after, settings)
    assert expected, "the sample purchases send orders"

    runner = ServiceRunner(settings).start()
    group = settings.kafka.group_id
    try:
        # Bounded: the group reaches the end, or the service stops (the defect) first.
        wait_until(
            lambda: (
                committed_offsets(kafka_bootstrap, group, topic, 1) == ends
                or not runner._thread.is_alive()
            ),
            timeout=90,
            interval=0.5,
            message="neither committed to the end nor stopped",
        )
        assert runner._thread.is_alive(), f"the service stopped: {runner._error!r}"
    finally:
        runner.stop()

    letters = read_all(kafka_bootstrap, settings.kafka.dlq_topic)
    assert [
        (m.key(), headers_of(m)[H_REASON], headers_of(m).get(H_ORIGINAL_KEY_SIZE)) for m in letters
    ] == [(None, "too_large", str(KEY_BYTES))]
    assert "key_too_large" in headers_of(letters[0])[H_EXC_MESSAGE]
    held = {o["order_id"] for o in sandbox.orders()}
    assert held == set(expected)


def test_every_record_of_a_key_over_the_key_limit_is_dead_lettered_with_its_key(
    kafka_bootstrap, make_topic, service_settings, sandbox
):
    """One user's whole journey (views, a purchase...) under a key of ``MAX_KEY_BYTES`` + 1
    bytes, between other users' journeys. A profile cannot be kept under such a key (the
    changelog record holds it beside a profile of up to MAPPING_MAX_PROFILE_BYTES), so each of
    its records is dead-lettered ``key_too_large``, with the key (it fits the DLQ), and parks
    nothing; the changelog never gets a record under it; every other user's order reaches the
    sandbox and the group commits to the partition's end."""
    topic = make_topic(partitions=1, prefix="longkey")
    settings = service_settings(topic)
    long_key = b"u" * (MAX_KEY_BYTES + 1)
    others = past_events(3, seed=63)
    journey = past_events(1, seed=64)
    assert expected_orders(journey, settings), "the journey has an order"
    produce_events(settings, others[:5], partitions=1)
    # The journey's values as any producer writes them, under the long key (an event's own
    # user_key that long is invalid: the model refuses it, so the key is set on the record).
    encoder = build_encoder(
        Path(settings.schema.dir),
        settings.schema.registry_url,
        settings.schema.registry_config(),
        topic=topic,
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for event in journey:
        producer.produce(topic, key=long_key, value=encoder.encode_event(event), partition=0)
    assert producer.flush(30) == 0
    produce_events(settings, others[5:], partitions=1)
    ends = end_offsets(kafka_bootstrap, topic, 1)
    expected = expected_orders(others, settings)

    runner = ServiceRunner(settings).start()
    try:
        wait_until(
            lambda: committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 1) == ends,
            timeout=90,
            interval=0.5,
            message="the group did not commit to the end",
        )
    finally:
        runner.stop()

    letters = read_all(kafka_bootstrap, settings.kafka.dlq_topic)
    assert [(m.key(), headers_of(m)[H_REASON]) for m in letters] == [
        (long_key, "key_too_large")
    ] * len(journey)
    changelog_keys = {m.key() for m in read_all(kafka_bootstrap, settings.kafka.profile_topic)}
    assert long_key not in changelog_keys
    assert {o["order_id"] for o in sandbox.orders()} == set(expected)
