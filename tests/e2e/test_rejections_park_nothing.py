"""A dead letter that comes from the event's own data parks nothing (DESIGN, 5).

Against the real broker and the Button sandbox over HTTP. A refund the mapping rejects (more
units than the order has) changed nothing in the profile or at Button: the valid refund and the
full refund after it reach Button, and the order ends deleted. A purchase rejected for its
currency is followed by the merchant's correction (a new event id), which is created. A refund
whose Avro decodes but whose amount is negative fails validation at decode: its dead letter
names its order, its event and the value, and the user's next, unrelated order is delivered
instead of waiting behind the user's key.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumer.adapters.avro_codec import build_encoder
from consumer.commands import produce_events
from consumer.domain.deadletter import (
    H_EVENT_ID,
    H_EXC_MESSAGE,
    H_ORDER_ID,
    H_PARKED,
    H_PARKS_ORDER,
    H_REASON,
)
from consumer.domain.event_forms import event_to_record
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from consumer.settings import Settings
from tests.e2e.harness import headers_of, produce_raw, read_all, stop_when_done, wait_until

pytestmark = pytest.mark.broker

RP_P, RP_C, RP_W1, RP_W2 = "ORD-RP-P", "ORD-RP-C", "ORD-RP-W1", "ORD-RP-W2"


def _event(
    user: str,
    order: str,
    kind: EventType,
    minutes: int,
    *products: Product,
    currency: str = "USD",
    event_id: str = "",
) -> CommerceEvent:
    purchase = kind is EventType.PURCHASE
    total = sum(((p.price or Decimal(0)) * p.quantity for p in products), Decimal(0))
    return CommerceEvent(
        event_id=event_id or f"evt-{order}-{kind.value}-{minutes}",
        event_type=kind,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key=user,
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef" if purchase else None,
        commerce=CommerceData(
            action=ProductAction.PURCHASE if purchase else ProductAction.REFUND,
            transaction_id=order,
            currency_code=currency if purchase else None,
            total_amount=total if purchase else None,
            products=products,
        ),
    )


def _statuses(sandbox, order: str) -> list[tuple[str, int]]:
    found = sandbox.order(order) or {}
    return [(r["method"], r["status"]) for r in found.get("history", [])]


def _wait_for_dead_letters(bootstrap: str, settings: Settings, count: int) -> None:
    wait_until(
        lambda: len(read_all(bootstrap, settings.kafka.dlq_topic)) >= count,
        timeout=30,
        message=f"fewer than {count} dead letters",
    )


def test_events_after_a_rejected_one_of_their_order_reach_button(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=2, prefix="rejections-park-nothing")
    settings = service_settings(topic)
    three_a = Product(id="A", price=Decimal("10.00"), quantity=3)
    events = [
        # A refund of 9 units of 3 is rejected; the refund of 1 and the full refund go on.
        _event("rp-user-p", RP_P, EventType.PURCHASE, 1, three_a),
        _event("rp-user-p", RP_P, EventType.REFUND, 2, Product(id="A", quantity=9)),
        _event("rp-user-p", RP_P, EventType.REFUND, 3, Product(id="A", quantity=1)),
        _event("rp-user-p", RP_P, EventType.REFUND, 4),
        # A purchase in an unknown currency is rejected; the merchant's correction goes on.
        _event("rp-user-c", RP_C, EventType.PURCHASE, 1, three_a, currency="XYZ"),
        _event("rp-user-c", RP_C, EventType.PURCHASE, 2, three_a, event_id="evt-rp-c-fixed"),
    ]
    produce_events(settings, events, partitions=2)
    service = start_service(settings)
    _wait_for_dead_letters(kafka_bootstrap, settings, 2)
    stop_when_done(service, kafka_bootstrap, settings.kafka.group_id, topic, 2)

    assert (sandbox.order(RP_P) or {}).get("status") == "deleted"
    assert _statuses(sandbox, RP_P) == [("POST", 200), ("POST", 200), ("DELETE", 200)]
    corrected = sandbox.order(RP_C) or {}
    assert (corrected.get("object") or {}).get("currency") == "USD"
    assert _statuses(sandbox, RP_C) == [("POST", 200)]
    letters = [headers_of(m) for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)]
    assert sorted((h[H_ORDER_ID], h[H_REASON], h[H_PARKED], h[H_PARKS_ORDER]) for h in letters) == [
        (RP_C, "unknown_currency", "false", "false"),
        (RP_P, "refund_exceeds_quantity", "false", "false"),
    ]


def _produce_records(settings: Settings, bootstrap: str, records: list[dict[str, Any]]) -> None:
    """Produce decoded-form records as they are (one may break the event model's rules), keyed
    by their user, to partition 0, in order."""
    encoder = build_encoder(Path(settings.schema.dir), topic=settings.kafka.topic)
    produce_raw(
        bootstrap,
        settings.kafka.topic,
        [(r["user_key"].encode(), encoder.encode(r), 0) for r in records],
    )


def test_an_event_invalid_at_decode_does_not_hold_back_the_users_other_orders(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=1, prefix="invalid-parks-nothing")
    settings = service_settings(topic)
    user = "rp-user-w"
    shirt = Product(id="shirt", price=Decimal("30.00"))
    bad_refund = event_to_record(_event(user, RP_W1, EventType.REFUND, 2, shirt))
    bad_refund["commerce"]["total_amount"] = Decimal("-10.00")
    _produce_records(
        settings,
        kafka_bootstrap,
        [
            event_to_record(_event(user, RP_W1, EventType.PURCHASE, 1, shirt)),
            bad_refund,
            event_to_record(_event(user, RP_W2, EventType.PURCHASE, 3, shirt)),
        ],
    )
    service = start_service(settings)
    _wait_for_dead_letters(kafka_bootstrap, settings, 1)
    stop_when_done(service, kafka_bootstrap, settings.kafka.group_id, topic, 1)

    assert _statuses(sandbox, RP_W1) == [("POST", 200)]
    assert _statuses(sandbox, RP_W2) == [("POST", 200)], "the unrelated order was held back"
    letters = [headers_of(m) for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)]
    assert [
        (h[H_REASON], h[H_PARKED], h.get(H_ORDER_ID), h.get(H_EVENT_ID), h.get(H_PARKS_ORDER))
        for h in letters
    ] == [("negative_amount", "false", RP_W1, bad_refund["event_id"], "false")]
    assert "-10.00" in letters[0][H_EXC_MESSAGE]
