"""A record whose key alone is over the dead-letter topic's record limit, end to end.

DESIGN, 4 and the README promise that a record too large for the dead-letter topic is
dead-lettered as a reference (``too_large``: no value, no source headers) and that the service
never stops for it. The reference keeps the source key, though. Marked ``xfail(strict=True)``:
it fails on the current code (see the test's docstring).
"""

from __future__ import annotations

import contextlib

import pytest
from confluent_kafka import Producer

from consumer.commands import produce_events
from consumer.domain.deadletter import H_REASON
from consumer.errors import DeadLetterError
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


@pytest.mark.xfail(
    strict=True,
    reason="defect: a key over the DLQ's record limit stops the service for good (the "
    "too_large reference keeps the key)",
)
def test_a_record_with_a_key_too_large_for_the_dlq_is_dead_lettered_and_the_rest_delivered(
    kafka_bootstrap, make_topic, service_settings, sandbox
):
    """One input partition (its topic takes records up to 3 MB): purchases, then a record
    with a 1.1 MB key and a value that is not Avro (a poison pill from a misbehaving
    producer), then more purchases. The dead letter of the pill does not fit the DLQ whole,
    nor does its ``too_large`` reference, which keeps the key.

    Expected: the pill is dead-lettered (a reference, its key dropped or cut), every purchase
    before and after it reaches the sandbox, and the group commits to the partition's end.
    Actual: the reference write is refused too (MSG_SIZE_TOO_LARGE), the dead-letter write
    counts as failed (``DeadLetterError``) and the service stops, the pill's offset
    uncommitted. (Not run here: a restart reads the same record first and stops the same way,
    so the partition never moves past it.)
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
        with contextlib.suppress(DeadLetterError):  # the defect's error, asserted above
            runner.stop()

    letters = read_all(kafka_bootstrap, settings.kafka.dlq_topic)
    assert [headers_of(m)[H_REASON] for m in letters] == ["too_large"]
    held = {o["order_id"] for o in sandbox.orders()}
    assert held == set(expected)
