"""``DELIVERY_STOP_WHEN_IDLE_SECONDS`` with more members than partitions: a batch run of N
members on a topic of fewer partitions. Every member exits once the topic is drained, and no
record is left undelivered when they all have. Real broker, the sandbox, the services in this
process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from consumer.commands import produce_events
from consumer.sandbox.testing import SandboxHandle
from consumer.settings import Settings
from tests.e2e.harness import ServiceRunner, committed_offsets, end_offsets, wait_until
from tests.e2e.test_reliability_process import _server_purchase

pytestmark = pytest.mark.broker

IDLE = 2.0
ORDERS = 20


def test_a_member_without_partitions_exits_once_the_topic_is_drained(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    service_settings: Callable[..., Settings],
    sandbox: SandboxHandle,
) -> None:
    """Two members, one partition: the second member joins after the first owns the
    partition, so it has nothing assigned. Both exit on their own (neither is stopped), and
    when both have, every purchase reached Button and the group committed the partition's
    end."""
    topic = make_topic(partitions=1, prefix="idle-members")
    settings = service_settings(topic, DELIVERY_STOP_WHEN_IDLE_SECONDS=str(IDLE))
    when = datetime.now(UTC) - timedelta(minutes=5)
    run = uuid.uuid4().hex[:8]
    orders = {f"idle-{run}-{i}-order": f"idle-{run}-{i}" for i in range(ORDERS)}
    produce_events(
        settings,
        [_server_purchase(user, order, when) for order, user in orders.items()],
        partitions=1,
    )

    first = ServiceRunner(settings).start()
    second: ServiceRunner | None = None
    try:
        wait_until(
            lambda: first.metric("button_consumer_partitions_assigned") == 1,
            60,
            message="the first member was never assigned the partition",
        )
        second = ServiceRunner(settings).start()
        wait_until(
            lambda: first.exited() and second is not None and second.exited(),
            120,
            message=(
                f"first exited {first.exited()}, second exited "
                f"{second is not None and second.exited()}"
            ),
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()

    # The second member stopped only after the partition came to it with the first one's
    # leave: a member without partitions does not stop on its own idle clock.
    assert second.metric("button_consumer_profile_restore_seconds_count") == 1
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 1) == end_offsets(
        kafka_bootstrap, topic, 1
    )
    missing = [order for order in orders if sandbox.order(order) is None]
    assert missing == []
