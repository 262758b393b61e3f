"""``button_consumer_profiles`` while the service runs: the profiles it holds in memory.

The README's metrics table reads the gauge as "user profiles held in memory". It was set only
when an assignment's restore ended, at each expiry sweep (every
``MAPPING_EXPIRE_INTERVAL_SECONDS``, 300 s by default) and when partitions were dropped, so a
service that started over an empty changelog and then learnt its users reported 0 profiles for
up to five minutes while it held one per user (seen in the Quickstart: 200 users read, every
order at the sandbox, the gauge at 0). It is now read from the store at each scrape.
"""

from __future__ import annotations

import pytest

from consumer.commands import produce_events
from consumer.domain.events import EventType
from tests.e2e.harness import IN_FLIGHT, past_events, wait_for_committed, wait_until

pytestmark = pytest.mark.broker

PROFILES = "button_consumer_profiles"


def test_profiles_gauge_counts_the_users_learnt_since_the_start(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Every sample purchase reaches Button, so each purchasing user's profile holds an
    order; once every record is committed the gauge counts at least those users."""
    partitions = 3
    topic = make_topic(partitions=partitions, prefix="profiles-gauge")
    settings = service_settings(topic)
    events = past_events(30, seed=23)
    purchases = {
        e.commerce.transaction_id: e.user_key
        for e in events
        if e.event_type is EventType.PURCHASE and e.commerce is not None
    }
    buyers = set(purchases.values())
    assert buyers, "the sample set has purchases"
    produce_events(settings, events, partitions=partitions)

    runner = start_service(settings)
    sandbox.wait_for(
        lambda: set(purchases) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="not every purchase reached Button",
    )
    wait_for_committed(kafka_bootstrap, settings.kafka.group_id, topic, partitions, timeout=60)
    wait_until(lambda: runner.metric(IN_FLIGHT) == 0, 30, message="records still in flight")

    assert runner.metric(PROFILES) >= len(buyers), (
        f"{len(buyers)} users' orders are at Button (each remembered in its profile), "
        f"but {PROFILES} reads {runner.metric(PROFILES)}"
    )
