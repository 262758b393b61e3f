"""Refunds without a record key, read before their purchase.

Against the real broker and the Button sandbox over HTTP. A record without a key has no
profile, so a partial refund of an order Button does not know yet has nowhere to be held; the
service answered it ``refund_held`` anyway, committed it, and the keyless purchase that followed
was created with its full total: Button kept 60.00 instead of 40.00 and nothing reached the
dead-letter topic. It is dead-lettered ``keyless_refund_before_purchase`` instead, replayable
once the purchase reached Button.

A whole-order refund without a key, read before its purchase, sent Button its cancel, answered
404 and delivered as ``order_gone``; nothing remembered the order cancelled, so the keyless
purchase after it was created live at Button, and stayed so (the merchant paid commission on a
cancelled order), with nothing dead-lettered. It is dead-lettered
``keyless_refund_before_purchase`` too, and its replay cancels the order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from consumer.adapters.avro_codec import build_encoder
from consumer.domain.deadletter import H_ORDER_ID, H_REASON
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from tests.e2e.harness import (
    headers_of,
    produce_raw,
    read_all,
    replay_whole_dlq,
    stop_when_done,
)

pytestmark = pytest.mark.broker

ORDER = "ORD-KEYLESS-REFUND"
CANCELLED = "ORD-KEYLESS-CANCEL"


def _event(
    kind: EventType, action: ProductAction, minutes: int, order: str = ORDER, **commerce: object
) -> CommerceEvent:
    return CommerceEvent(
        event_id=f"evt-{order}-{kind.value.lower()}",
        event_type=kind,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key="user-keyless",
        platform=Platform.SERVER,
        commerce=CommerceData(action=action, transaction_id=order, **commerce),  # type: ignore[arg-type]
    )


def test_a_keyless_refund_before_its_purchase_is_applied_or_dead_lettered(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=1, prefix="keyless-refund")
    settings = service_settings(topic)
    encoder = build_encoder(Path("schemas"), topic=topic)
    refund = _event(
        EventType.REFUND,
        ProductAction.REFUND,
        2,
        products=(Product(id="SKU-SHIRT", quantity=1),),
    )
    purchase = _event(
        EventType.PURCHASE,
        ProductAction.PURCHASE,
        1,
        currency_code="USD",
        total_amount=Decimal("60.00"),
        products=(Product(id="SKU-SHIRT", price=Decimal("20.00"), quantity=3),),
    )
    # The refund first in the partition, then its purchase, both without a key.
    produce_raw(
        kafka_bootstrap,
        topic,
        [(None, encoder.encode_event(refund), 0), (None, encoder.encode_event(purchase), 0)],
    )
    service = start_service(settings)
    stop_when_done(service, kafka_bootstrap, settings.kafka.group_id, topic, 1)

    dead_letters = [headers_of(m) for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)]
    total = ((sandbox.order(ORDER) or {}).get("object") or {}).get("total")
    # Either the refund reached Button (40.00 left) or the operator was told (a dead letter).
    assert total == 4000 or dead_letters, f"Button holds {total}, nothing dead-lettered"
    # Told: the refund's dead letter says why, to be replayed now that the purchase is there.
    assert [(h[H_ORDER_ID], h[H_REASON]) for h in dead_letters] == [
        (ORDER, "keyless_refund_before_purchase")
    ]


def test_a_keyless_whole_order_refund_before_its_purchase_is_dead_lettered_and_its_replay_cancels(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox, unique_name
):
    """No key, so no profile remembers the order cancelled: the refund's cancel, answered 404
    before the purchase, must not be taken as done. Dead-lettered; replayed once the purchase
    reached Button, it cancels the order."""
    topic = make_topic(partitions=1, prefix="keyless-cancel")
    settings = service_settings(topic)
    encoder = build_encoder(Path("schemas"), topic=topic)
    refund = _event(EventType.REFUND, ProductAction.REFUND, 2, CANCELLED)
    purchase = _event(
        EventType.PURCHASE,
        ProductAction.PURCHASE,
        1,
        CANCELLED,
        currency_code="USD",
        total_amount=Decimal("60.00"),
        products=(Product(id="SKU-SHIRT", price=Decimal("20.00"), quantity=3),),
    )
    # The whole-order refund first in the partition, then its purchase, both without a key.
    produce_raw(
        kafka_bootstrap,
        topic,
        [(None, encoder.encode_event(refund), 0), (None, encoder.encode_event(purchase), 0)],
    )
    stop_when_done(start_service(settings), kafka_bootstrap, settings.kafka.group_id, topic, 1)

    def status() -> str | None:
        return (sandbox.order(CANCELLED) or {}).get("status")

    dead_letters = [headers_of(m) for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)]
    # The operator is told: the refund's dead letter, not a cancel taken as done.
    assert [(h[H_ORDER_ID], h[H_REASON]) for h in dead_letters] == [
        (CANCELLED, "keyless_refund_before_purchase")
    ], f"Button holds the order {status()}"
    assert status() == "open"  # the purchase reached Button after the refund

    # The replay, now that the purchase is there, reads the order and cancels it.
    report = replay_whole_dlq(settings, unique_name("replay"))
    assert report.replayed == 1
    stop_when_done(start_service(settings), kafka_bootstrap, settings.kafka.group_id, topic, 1)
    assert status() == "deleted"
    assert len(read_all(kafka_bootstrap, settings.kafka.dlq_topic)) == 1  # not dead-lettered again
