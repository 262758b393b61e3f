"""A refund never raises what Button counts as commissionable.

Against the real broker and the Button sandbox over HTTP. An order of 10.00 (Y at 15.00 and a
discount line DISC at -5.00) refunded by an event that lists only the discount line would be
worth 15.00 without it: the refund is dead-lettered ``refund_raises_total`` and Button keeps
10.00. An order of 13.00 (X at 3.00, DISC, Y) refunded X with the larger discount is refused the
same way, while Y refunded with the discount that came with it reaches Button as the update to
3.00.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from consumer.commands import produce_events
from consumer.domain.deadletter import (
    H_EVENT_ID,
    H_EXC_MESSAGE,
    H_ORDER_ID,
    H_PARKS_ORDER,
    H_REASON,
)
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from tests.e2e.harness import headers_of, read_all, stop_when_done

pytestmark = pytest.mark.broker

ONLY_DISC, WITH_X = "ORD-RN-DISC", "ORD-RN-X"
DISC = Product(id="DISC", price=Decimal("-5.00"))
X, Y = Product(id="X", price=Decimal("3.00")), Product(id="Y", price=Decimal("15.00"))


def _event(order: str, kind: EventType, minutes: int, *products: Product) -> CommerceEvent:
    purchase = kind is EventType.PURCHASE
    total = sum(((p.price or Decimal(0)) * p.quantity for p in products), Decimal(0))
    return CommerceEvent(
        event_id=f"evt-{order}-{kind.value}-{minutes}",
        event_type=kind,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key=f"user-{order}",
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef" if purchase else None,
        commerce=CommerceData(
            action=ProductAction.PURCHASE if purchase else ProductAction.REFUND,
            transaction_id=order,
            currency_code="USD" if purchase else None,
            total_amount=total if purchase else None,
            products=products,
        ),
    )


def test_a_refund_that_would_raise_the_total_never_reaches_button(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=2, prefix="refunds-never-raise")
    settings = service_settings(topic)
    refused_disc = _event(ONLY_DISC, EventType.REFUND, 2, DISC)
    refused_x = _event(WITH_X, EventType.REFUND, 2, X, DISC)
    produce_events(
        settings,
        [
            _event(ONLY_DISC, EventType.PURCHASE, 1, DISC, Y),
            refused_disc,
            _event(WITH_X, EventType.PURCHASE, 1, X, DISC, Y),
            refused_x,
            _event(WITH_X, EventType.REFUND, 3, Y, DISC),
        ],
        partitions=2,
    )
    service = start_service(settings)
    # Every record committed: each was answered by Button or its dead letter acknowledged.
    stop_when_done(service, kafka_bootstrap, settings.kafka.group_id, topic, 2)

    only_disc = sandbox.order(ONLY_DISC) or {}
    assert (only_disc.get("object") or {}).get("total") == 1000
    assert [(r["method"], r["status"]) for r in only_disc.get("history", [])] == [("POST", 200)]
    with_x = sandbox.order(WITH_X) or {}
    assert [(r["method"], r["status"]) for r in with_x.get("history", [])] == [
        ("POST", 200),
        ("POST", 200),
    ]
    updated = with_x.get("object") or {}
    assert (updated.get("total"), [i["identifier"] for i in updated["line_items"]]) == (300, ["X"])
    letters = [headers_of(m) for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)]
    assert sorted(
        (h[H_ORDER_ID], h[H_EVENT_ID], h[H_REASON], h[H_PARKS_ORDER]) for h in letters
    ) == [
        (ONLY_DISC, refused_disc.event_id, "refund_raises_total", "false"),
        (WITH_X, refused_x.event_id, "refund_raises_total", "false"),
    ]
    assert all("'DISC' x1" in h[H_EXC_MESSAGE] for h in letters)
