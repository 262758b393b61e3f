"""The thin path end to end: topic, consumer group, Avro, Button sandbox, committed offsets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.commands import produce_events
from consumer.domain.events import EventType
from consumer.samples import generate_events, past_start
from tests.e2e.harness import committed_offsets, read_all, stop_when_done

pytestmark = pytest.mark.broker


def test_every_purchase_reaches_button_and_offsets_reach_the_end(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Every sample purchase becomes an order in the sandbox; the group commits to the end."""
    topic = make_topic(partitions=3, prefix="skeleton")
    settings = service_settings(topic)
    events = list(generate_events(40, seed=11, start=past_start(datetime.now(UTC))))
    purchases = {
        e.commerce.transaction_id
        for e in events
        if e.event_type is EventType.PURCHASE and e.commerce is not None
    }
    assert purchases, "the sample set has purchases"
    produce_events(settings, events, partitions=3)

    runner = start_service(settings)
    sandbox.wait_for(
        lambda: purchases <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="not every purchase reached Button",
    )
    # Finished records are stored as they finish; wait until all of them are committed (not
    # only none in flight: a record not fetched yet is not in flight) before stopping.
    ends = stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 3)

    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 3) == ends
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    created = [
        r
        for o in sandbox.orders()
        for r in o["history"]
        if r["method"] == "POST" and r["path"] == "/v1/order"
    ]
    assert {r["status"] for r in created} <= {200, 201}
