"""A partial refund of an order this service never created, end to end.

A merchant migrating from another integration (mParticle's Button integration, a direct one)
refunds orders created before the switch: the profile does not know them. The service reads the
order from Button (the sandbox), adopts it as the base the refund applies to and sends the
update; an order Button does not know yet (its purchase comes later, out of order) is held and
applied when the purchase arrives.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from consumer.commands import produce_events
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from tests.e2e.harness import read_all, stop_when_done, wait_for_committed

pytestmark = pytest.mark.broker

USER = "migrated-user"
PURCHASED = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=400_000)
"""When the previous integration took the late-arriving order (days back, in whole seconds
and 400 ms: the purchase event carries the milliseconds Button's purchase_date drops)."""


def _refund(order_id: str, event_id: str, *products: Product, amount: str | None = None) -> Any:
    return CommerceEvent(
        event_id=event_id,
        event_type=EventType.REFUND,
        event_time=datetime.now(UTC) - timedelta(minutes=1),
        user_key=USER,
        platform=Platform.SERVER,
        commerce=CommerceData(
            action=ProductAction.REFUND,
            transaction_id=order_id,
            currency_code="USD",
            total_amount=None if amount is None else Decimal(amount),
            products=tuple(products),
        ),
    )


def test_a_partial_refund_of_an_order_a_previous_integration_created_updates_it(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """The order was created at Button directly (the previous integration), never through this
    service; one of its two shirts is refunded through the topic. Button ends holding the
    refunded state: one shirt, the other line as it was, the total less one shirt."""
    topic = make_topic(partitions=1, prefix="adopt")
    settings = service_settings(topic)
    order_id = "ORD-MIGRATED-1"
    with httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_header) as button:
        created = button.post(
            "/v1/order",
            json={
                "order_id": order_id,
                "total": 8000,
                "currency": "USD",
                "purchase_date": "2026-01-02T10:00:00Z",
                "btn_ref": "srctok-0123456789abcdef",
                "line_items": [
                    {"identifier": "SKU-A", "quantity": 2, "amount": 2500, "total": 5000},
                    {"identifier": "SKU-B", "description": "Hat", "quantity": 1, "total": 3000},
                ],
            },
        )
        assert created.status_code == 200, created.text
    produce_events(settings, [_refund(order_id, "evt-refund-1", Product(id="SKU-A"))], partitions=1)

    runner = start_service(settings)
    stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 1)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    order = sandbox.order(order_id)
    assert order is not None
    held = order["object"]
    assert (order["status"], held["total"], held["btn_ref"]) == (
        "open",
        5500,
        "srctok-0123456789abcdef",
    )
    assert held["line_items"] == [
        {"identifier": "SKU-A", "quantity": 1, "amount": 2500, "total": 2500},
        {"identifier": "SKU-B", "description": "Hat", "quantity": 1, "amount": 3000, "total": 3000},
    ]
    assert [(r["method"], r["status"]) for r in sandbox.requests_for(order_id)] == [
        ("POST", 200),  # the previous integration's create
        ("GET", 200),  # read by the refund: adopted
        ("POST", 200),  # the refund's update
    ]


def test_a_refund_before_its_purchase_stays_held_and_is_applied_when_the_purchase_arrives(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Button does not know the order yet (404): the refund is held, nothing is created; the
    purchase produced afterwards is created with the refund applied."""
    topic = make_topic(partitions=1, prefix="held")
    settings = service_settings(topic)
    order_id = "ORD-LATE-1"
    group = settings.kafka.group_id
    produce_events(settings, [_refund(order_id, "evt-refund-late", amount="15.00")], partitions=1)

    runner = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, 1, timeout=60)

    assert sandbox.order(order_id) is None
    assert [(r["method"], r["status"]) for r in sandbox.requests_for(order_id)] == [("GET", 404)]
    purchase = CommerceEvent(
        event_id="evt-purchase-late",
        event_type=EventType.PURCHASE,
        event_time=datetime.now(UTC) - timedelta(minutes=5),
        user_key=USER,
        platform=Platform.SERVER,
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order_id,
            currency_code="USD",
            total_amount=Decimal("40.00"),
        ),
    )
    produce_events(settings, [purchase], partitions=1)
    stop_when_done(runner, kafka_bootstrap, group, topic, 1)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    order = sandbox.order(order_id)
    assert order is not None
    assert (order["status"], order["object"]["total"]) == ("open", 2500)
    assert [(r["method"], r["status"]) for r in sandbox.requests_for(order_id)] == [
        ("GET", 404),
        ("POST", 200),
    ]


def test_the_original_purchase_arriving_after_an_adoption_leaves_buttons_state(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """The previous integration created the order (100.00) and refunded one shirt (70.00). A
    refund of the hat through the topic adopts Button's 70.00 and sends 30.00; the original
    purchase, arriving after it (published late, or again), must not put 100.00 less the hat
    (60.00) back: Button already applied the shirt's refund. (A break trial saw 60.00.)"""
    topic = make_topic(partitions=1, prefix="adopt-late")
    settings = service_settings(topic)
    order_id = "ORD-MIGRATED-2"
    shirt = {"identifier": "SKU-A", "quantity": 2, "amount": 3000, "total": 6000}
    hat = {"identifier": "SKU-B", "quantity": 1, "amount": 4000, "total": 4000}
    with httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_header) as button:
        # Dated days back, not on a fixed day: the consumer rejects an order dated beyond
        # MAPPING_MAX_EVENT_AGE_DAYS before the time it processes it.
        common = {"currency": "USD", "purchase_date": PURCHASED.strftime("%Y-%m-%dT%H:%M:%SZ")}
        created = button.post(
            "/v1/order",
            json={"order_id": order_id, "total": 10000, "line_items": [shirt, hat], **common},
        )
        assert created.status_code == 200, created.text
        refunded = button.post(
            f"/v1/order/{order_id}",
            json={
                "total": 7000,
                "line_items": [{**shirt, "quantity": 1, "total": 3000}, hat],
                **common,
            },
        )
        assert refunded.status_code == 200, refunded.text
    original = CommerceEvent(
        event_id="evt-original-purchase",
        event_type=EventType.PURCHASE,
        event_time=PURCHASED,
        user_key=USER,
        platform=Platform.SERVER,
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order_id,
            currency_code="USD",
            total_amount=Decimal("100.00"),
            products=(
                Product(id="SKU-A", price=Decimal("30.00"), quantity=2),
                Product(id="SKU-B", price=Decimal("40.00")),
            ),
        ),
    )
    produce_events(
        settings, [_refund(order_id, "evt-refund-hat", Product(id="SKU-B")), original], partitions=1
    )

    runner = start_service(settings)
    stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 1)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    order = sandbox.order(order_id)
    assert order is not None
    held = order["object"]
    assert (order["status"], held["total"]) == ("open", 3000)
    assert held["line_items"] == [{**shirt, "quantity": 1, "total": 3000}]
