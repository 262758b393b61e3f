"""The bench's records: purchases (one order each, distinct users) and browsing events.

Every record is the project's own Avro encoding of a ``CommerceEvent`` (plain Avro, no registry),
keyed by its ``user_key`` as producers must key. Orders are in USD with one line, so every peer can
build Button's body from the decoded record alone. ``button_bodies`` are the bodies the service
sends (its own mapping), which the HTTP ceiling posts.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.kafka_admin import ensure_topics
from consumer.adapters.kafka_producer import AckingProducer
from consumer.domain.button import Send
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
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.profile import expires_at_ms
from consumer.domain.profile_codec import encode_profile

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True, slots=True)
class Loaded:
    """A topic the bench produced: its name, partition count, records and order ids."""

    topic: str
    partitions: int
    records: int
    order_ids: tuple[str, ...]


def purchase(tag: str, i: int, at: datetime) -> CommerceEvent:
    """A purchase of user ``u-<tag>-<i>``: order ``ORD-<tag>-<i>``, USD 18.00, one line."""
    user = f"u-{tag}-{i}"
    return CommerceEvent(
        event_id=str(uuid.uuid4()),
        event_type=EventType.PURCHASE,
        event_time=at,
        user_key=user,
        platform=Platform.WEB,
        user_identities=UserIdentities(customer_id=f"cust-{tag}-{i}"),
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=f"ORD-{tag}-{i}",
            currency_code="USD",
            total_amount=Decimal("18.00"),
            tax_amount=Decimal("0.00"),
            shipping_amount=Decimal("0.00"),
            products=(
                Product(
                    id="SKU-TOTE",
                    sku="SKU-TOTE",
                    name="Canvas tote",
                    category="Accessories",
                    price=Decimal("9.00"),
                    quantity=2,
                ),
            ),
        ),
    )


def browse(tag: str, i: int, at: datetime) -> CommerceEvent:
    """A page view or an app open (alternating) of user ``u-<tag>-<i>``: nothing for Button."""
    kind = EventType.PAGE_VIEW if i % 2 else EventType.APP_OPEN
    return CommerceEvent(
        event_id=str(uuid.uuid4()),
        event_type=kind,
        event_time=at,
        user_key=f"u-{tag}-{i}",
        platform=Platform.WEB if kind is EventType.PAGE_VIEW else Platform.IOS,
        page_url="https://shop.example.com/p/tote" if kind is EventType.PAGE_VIEW else None,
    )


def forward_events(tag: str, count: int, at: datetime) -> Iterator[CommerceEvent]:
    for i in range(count):
        yield purchase(tag, i, at)


def filter_events(tag: str, count: int, at: datetime) -> Iterator[CommerceEvent]:
    """``count`` events, 90 % views/opens and every tenth a purchase."""
    for i in range(count):
        yield purchase(tag, i, at) if i % 10 == 9 else browse(tag, i, at)


def button_body(event: CommerceEvent, now: datetime) -> dict[str, Any]:
    """The create body the service sends for ``event`` (a purchase of a new user)."""
    result, _profile = process(event, None, MappingConfig(), now)
    assert isinstance(result, Send), result
    assert result.request.body is not None
    return dict(result.request.body)


def encoder(topic: str) -> Any:
    """The project's plain-Avro encoder (``encode_event``)."""
    return build_encoder(SCHEMA_DIR, None, None, topic=topic)


def producer(bootstrap: str) -> AckingProducer:
    """A started producer that sends at once (``linger.ms`` 0)."""
    client = AckingProducer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    client.start()
    return client


def load(
    bootstrap: str,
    topic: str,
    events: Iterator[CommerceEvent],
    partitions: int,
    bodies: Path | None = None,
) -> Loaded:
    """Produce ``events`` to a new ``topic``; optionally write the purchases' bodies as JSONL."""
    ensure_topics({"bootstrap.servers": bootstrap}, {topic: {}}, partitions=partitions)
    encoder = build_encoder(SCHEMA_DIR, None, None, topic=topic)
    producer = AckingProducer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    producer.start()
    orders: list[str] = []
    count = 0
    now = datetime.now(UTC)
    out = bodies.open("w") if bodies is not None else None
    try:
        for event in events:
            producer.send_nowait(topic, event.user_key.encode(), encoder.encode_event(event))
            count += 1
            if event.event_type is EventType.PURCHASE and event.commerce is not None:
                orders.append(event.commerce.transaction_id or "")
                if out is not None:
                    out.write(json.dumps(button_body(event, now)) + "\n")
        if producer.settle(120.0):
            raise RuntimeError(f"not every record of {topic} was acknowledged")
    finally:
        producer.close()
        if out is not None:
            out.close()
    return Loaded(topic, partitions, count, tuple(orders))


STATE_PROFILES = ("minimal", "attributed")
"""The state test's kinds of profile: ``minimal``, a user key of about 14 characters and one
order whose purchase carried a customer id only (about 155 bytes encoded); ``attributed``, a
UUID user key and one order whose purchase carried a ``btn_ref``, an IDFA, a customer id and an
email (its hash kept), as an attributed app purchase does (about 265 bytes)."""

STATE_POOL = 50_000
"""Distinct profiles the state test writes, cycled over its keys. Each user's identifiers (order
id, customer id, event id and time; ``btn_ref``, IDFA and email for ``attributed``) are their
own, as in a real changelog: memory held compressed (a dictionary trained on the process's own
values) depends on the content, and identical values would compress to a few bytes. A pool
rather than a million: building a profile takes about 0.1-0.3 ms."""


def state_profile(kind: str, now: datetime, i: int = 0) -> bytes:
    """The changelog value of the ``i``-th user's ``kind`` (``STATE_PROFILES``) of profile,
    after one purchase an hour to three days before ``now``; its identifiers are drawn from a
    generator seeded with ``i`` (the same ``i``, the same value).

    Raises:
        ValueError: an unknown ``kind``.
    """
    draw = random.Random(i)
    at = now - timedelta(seconds=draw.randrange(3600, 3 * 86400))
    event = replace(
        purchase("state", i, at), event_id=str(uuid.UUID(int=draw.getrandbits(128), version=4))
    )
    if kind == "attributed":
        event = replace(
            event,
            platform=Platform.IOS,
            btn_ref=f"srctok-{draw.getrandbits(64):016x}",
            user_identities=UserIdentities(
                customer_id=f"cust-{draw.randrange(10**7):07d}", email=f"user{i}@example.com"
            ),
            device_info=DeviceInfo(
                ios_advertising_id=str(uuid.UUID(int=draw.getrandbits(128), version=4)).upper()
            ),
        )
    elif kind != "minimal":
        raise ValueError(f"unknown state profile {kind!r}: one of {', '.join(STATE_PROFILES)}")
    config = MappingConfig()
    _result, profile = process(event, None, config, now)
    assert profile is not None
    return encode_profile(profile, expires_at_ms(profile, config.retention))


def state_key(kind: str, i: int) -> bytes:
    """The user key of the ``i``-th profile of the state test: ``u-state-<i>`` for ``minimal``,
    a UUID (36 characters) for ``attributed``."""
    if kind == "attributed":
        return str(uuid.UUID(int=i)).encode()
    return f"u-state-{i}".encode()


def load_profiles(
    bootstrap: str, topic: str, partitions: int, count: int, kind: str = "minimal"
) -> int:
    """Fill a changelog ``topic`` with ``count`` profiles of ``kind`` (``STATE_PROFILES``), each
    a user's after one purchase: ``STATE_POOL`` distinct values, cycled over the keys."""
    ensure_topics(
        {"bootstrap.servers": bootstrap},
        {topic: {"cleanup.policy": "compact"}},
        partitions=partitions,
    )
    now = datetime.now(UTC)
    pool = [state_profile(kind, now, i) for i in range(min(count, STATE_POOL))]
    producer = AckingProducer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000}
    )
    producer.start()
    try:
        for i in range(count):
            value = pool[i % len(pool)]
            producer.send_nowait(topic, state_key(kind, i), value, partition=i % partitions)
        if producer.settle(300.0):
            raise RuntimeError(f"not every profile of {topic} was acknowledged")
    finally:
        producer.close()
    return count
