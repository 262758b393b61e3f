"""An update keeps the order's customer at Button.

Against the real broker and the Button sandbox over HTTP. The sandbox reads an update as the
order's full new state (Button's contract read strictly: it keeps only ``order_id``,
``btn_ref``, ``purchase_date`` and ``finalization_date`` from before), so an update without
``customer`` leaves the order with none. Two orders: one created, then refunded in part by a
back-office refund carrying only the user key; one the sandbox already holds, so its create is
answered 409 and the update of the same state follows. Both end holding the customer the
create carried.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from consumer.commands import produce_events
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    DeviceInfo,
    EventType,
    Platform,
    Product,
    ProductAction,
    UserIdentities,
)
from tests.e2e.harness import read_all, stop_when_done

pytestmark = pytest.mark.broker

REFUNDED, EXISTING = "ORD-KC-REFUNDED", "ORD-KC-EXISTING"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
SHIRT = Product(id="SKU-SHIRT", price=Decimal("20.00"), quantity=2)
CUSTOMER = {
    "id": "cust-789",
    "email_sha256": hashlib.sha256(b"jane@example.com").hexdigest(),
    "device_id": IDFA,
}


def _purchase(order: str, minutes: int) -> CommerceEvent:
    return CommerceEvent(
        event_id=f"evt-{order}-purchase",
        event_type=EventType.PURCHASE,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key=f"user-{order}",
        platform=Platform.IOS,
        btn_ref="srctok-0123456789abcdef",
        user_identities=UserIdentities(customer_id="cust-789", email="Jane@Example.com"),
        device_info=DeviceInfo(ios_advertising_id=IDFA),
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order,
            currency_code="USD",
            total_amount=Decimal("40.00"),
            products=(SHIRT,),
        ),
    )


def _back_office_refund(order: str, minutes: int) -> CommerceEvent:
    """One shirt refunded by the merchant's back office: the user key, no identities."""
    return CommerceEvent(
        event_id=f"evt-{order}-refund",
        event_type=EventType.REFUND,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key=f"user-{order}",
        platform=Platform.SERVER,
        commerce=CommerceData(
            action=ProductAction.REFUND,
            transaction_id=order,
            products=(Product(id="SKU-SHIRT", quantity=1),),
        ),
    )


def _create_at_the_sandbox(sandbox, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        sandbox.url("/v1/order"),
        data=json.dumps(body).encode(),
        headers={**sandbox.auth_header, "Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as reply:
        assert reply.status in (200, 201)


def test_updates_keep_the_customer_the_create_carried(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=2, prefix="update-keeps-customer")
    settings = service_settings(topic)
    # Another state of EXISTING, created before the service's create (a profile lost): 409.
    _create_at_the_sandbox(
        sandbox,
        {
            "order_id": EXISTING,
            "total": 1000,
            "currency": "USD",
            "purchase_date": "2024-05-01T14:03:22Z",
        },
    )
    produce_events(
        settings,
        [_purchase(REFUNDED, 1), _back_office_refund(REFUNDED, 2), _purchase(EXISTING, 1)],
        partitions=2,
    )
    service = start_service(settings)
    # Every record committed: each was answered by Button or its dead letter acknowledged.
    stop_when_done(service, kafka_bootstrap, settings.kafka.group_id, topic, 2)
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []

    refunded = sandbox.order(REFUNDED) or {}
    assert [(r["method"], r["status"]) for r in refunded.get("history", [])] == [
        ("POST", 200),
        ("POST", 200),
    ]
    assert (refunded.get("object") or {}).get("total") == 2000
    assert (refunded.get("object") or {}).get("customer") == CUSTOMER

    existing = sandbox.order(EXISTING) or {}
    assert [(r["method"], r["status"]) for r in existing.get("history", [])] == [
        ("POST", 200),
        ("POST", 409),
        ("POST", 200),
    ]
    assert (existing.get("object") or {}).get("total") == 4000
    assert (existing.get("object") or {}).get("customer") == CUSTOMER
