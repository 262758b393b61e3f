"""Static membership (KAFKA_GROUP_INSTANCE_ID, the pod name on Kubernetes) on both protocols."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consumer.commands import produce_events
from consumer.domain.events import CommerceEvent, EventType
from consumer.samples import generate_events, past_start
from tests.e2e.harness import committed_offsets, end_offsets, stop_when_done

pytestmark = pytest.mark.broker


def _purchases(events: list[CommerceEvent]) -> set[str | None]:
    return {
        e.commerce.transaction_id
        for e in events
        if e.event_type is EventType.PURCHASE and e.commerce is not None
    }


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_a_restarted_static_member_resumes_where_it_stopped(
    protocol, kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """A member that comes back with its instance id gets its partitions and loses nothing."""
    topic = make_topic(partitions=2, prefix="static")
    settings = service_settings(
        topic, KAFKA_GROUP_INSTANCE_ID="pod-0", KAFKA_GROUP_PROTOCOL=protocol
    )
    start = past_start(datetime.now(UTC))
    first = list(generate_events(15, seed=21, start=start))
    second = list(generate_events(15, seed=22, start=start + timedelta(minutes=1)))
    produce_events(settings, first, partitions=2)

    group = settings.kafka.group_id
    runner = start_service(settings)
    sandbox.wait_for(
        lambda: _purchases(first) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="the first batch's orders did not all reach Button",
    )
    # Every record of the first batch committed, not just none in flight (a record not yet
    # fetched is not in flight): the member stops with nothing left of the first batch.
    stop_when_done(runner, kafka_bootstrap, group, topic, 2)

    produce_events(settings, second, partitions=2)
    again = start_service(settings)
    wanted = _purchases(first) | _purchases(second)
    sandbox.wait_for(
        lambda: wanted <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="the second batch's orders did not all reach Button",
    )
    stop_when_done(again, kafka_bootstrap, group, topic, 2)

    assert again.service.stats.received == len(second)
    ends = end_offsets(kafka_bootstrap, topic, 2)
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == ends
