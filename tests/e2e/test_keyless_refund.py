"""A partial refund without a record key, read before its purchase.

Against the real broker and the Button sandbox over HTTP. A record without a key has no
profile, so a partial refund of an order Button does not know yet has nowhere to be held; the
service answered it ``refund_held`` anyway, committed it, and the keyless purchase that followed
was created with its full total: Button kept 60.00 instead of 40.00 and nothing reached the
dead-letter topic. It is dead-lettered ``keyless_refund_before_purchase`` instead, replayable
once the purchase reached Button.
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
from tests.e2e.harness import headers_of, produce_raw, read_all, stop_when_done

pytestmark = pytest.mark.broker

ORDER = "ORD-KEYLESS-REFUND"


def _event(
    kind: EventType, action: ProductAction, minutes: int, **commerce: object
) -> CommerceEvent:
    return CommerceEvent(
        event_id=f"evt-{ORDER}-{kind.value.lower()}",
        event_type=kind,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key="user-keyless",
        platform=Platform.SERVER,
        commerce=CommerceData(action=action, transaction_id=ORDER, **commerce),  # type: ignore[arg-type]
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
