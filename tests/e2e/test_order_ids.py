"""Order and product ids as merchants' pipelines send them, end to end.

A purchase exported with ``B5`` and its refund typed in a form as ``" B5 "`` (naming the
refunded line as ``"SKU-2\\n"``) are one order: Button (the sandbox) holds ``B5`` with the
refund applied, and no second order, no read of ``" B5 "``, no held refund, no dead letter.
The records are written as the producer wrote them, padding included (an event built in code
is stripped by the model before it is encoded).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumer.adapters.avro_codec import build_encoder
from consumer.domain.event_forms import event_to_record
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    ProductAction,
)
from tests.e2e.harness import produce_raw, read_all, stop_when_done

pytestmark = pytest.mark.broker

USER = "padded-ids-user"


def _record(event_type: EventType, event_id: str, minutes_ago: int, **commerce: Any) -> Any:
    action = ProductAction.PURCHASE if event_type is EventType.PURCHASE else ProductAction.REFUND
    event = CommerceEvent(
        event_id=event_id,
        event_type=event_type,
        event_time=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        user_key=USER,
        platform=Platform.SERVER,
        commerce=CommerceData(action=action, transaction_id="B5", currency_code="USD"),
    )
    record = event_to_record(event)
    record["commerce"].update(commerce)  # as the producer wrote it: not through the model
    return record


def test_a_refund_with_a_padded_order_id_reduces_the_order_at_button(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=1, prefix="padded-ids")
    settings = service_settings(topic)
    line = {"sku": None, "name": None, "brand": None, "category": None, "variant": None}
    purchase = _record(
        EventType.PURCHASE,
        "evt-padded-purchase",
        10,
        transaction_id="B5",
        total_amount=Decimal("60.00"),
        products=[
            {**line, "id": "SKU-1", "price": Decimal("20.00"), "quantity": 1, "attributes": {}},
            {**line, "id": "SKU-2", "price": Decimal("40.00"), "quantity": 1, "attributes": {}},
        ],
    )
    refund = _record(
        EventType.REFUND,
        "evt-padded-refund",
        5,
        transaction_id=" B5 ",
        products=[{**line, "id": "SKU-2\n", "price": None, "quantity": 1, "attributes": {}}],
    )
    encoder = build_encoder(Path(settings.schema.dir), topic=topic)
    produce_raw(
        kafka_bootstrap, topic, [(USER.encode(), encoder.encode(r), 0) for r in (purchase, refund)]
    )

    runner = start_service(settings)
    stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 1)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert [o["order_id"] for o in sandbox.orders()] == ["B5"]
    order = sandbox.order("B5")
    assert order is not None
    held = order["object"]
    assert (order["status"], held["total"], held["line_items"]) == (
        "open",
        2000,
        [{"identifier": "SKU-1", "sku": "SKU-1", "quantity": 1, "amount": 2000, "total": 2000}],
    )
    assert [(r["method"], r["path"], r["status"]) for r in sandbox.requests_for("B5")] == [
        ("POST", "/v1/order", 200),
        ("POST", "/v1/order/B5", 200),
    ]
    assert sandbox.requests_for(" B5 ") == []
