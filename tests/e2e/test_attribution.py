"""Attribution end to end, as the user trial ran it: real broker, Avro, the service, the sandbox.

Placeholder tokens (``"undefined"``, attribute 1022 ``"null"``, ``?btn_ref=undefined``) never
reach Button nor replace the user's real token; a purchase arriving late takes the token in force
at its own event time although the same token was seen again after it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from consumer.commands import produce_events
from consumer.domain.events import CommerceData, CommerceEvent, EventType, ProductAction
from tests.e2e.harness import read_all, stop_when_done

pytestmark = pytest.mark.broker

NOW = datetime.now(UTC)
REAL = "srctok-realtoken1"


def _event(
    event_id: str, user: str, kind: EventType, ago: timedelta, **fields: Any
) -> CommerceEvent:
    return CommerceEvent(
        event_id=event_id, event_type=kind, event_time=NOW - ago, user_key=user, **fields
    )


def _purchase(order_id: str, user: str, ago: timedelta, **fields: Any) -> CommerceEvent:
    commerce = CommerceData(
        action=ProductAction.PURCHASE,
        transaction_id=order_id,
        currency_code="USD",
        total_amount=Decimal("20.00"),
    )
    return _event(f"evt-{order_id}", user, EventType.PURCHASE, ago, commerce=commerce, **fields)


def _placeholder_user(user: str, junk: dict[str, Any]) -> list[CommerceEvent]:
    """A landing with the real token, a purchase carrying ``junk``, a purchase with no token."""
    landing = f"https://brand.example/landing?btn_ref={REAL}"
    return [
        _event(f"evt-view-{user}", user, EventType.PAGE_VIEW, timedelta(hours=3), page_url=landing),
        _purchase(f"{user}-1", user, timedelta(hours=2), **junk),
        _purchase(f"{user}-2", user, timedelta(hours=1)),
    ]


def test_placeholders_are_dropped_and_a_late_order_takes_the_token_of_its_time(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Both purchases of each placeholder user carry the real token; the late purchase of the
    repeated-token user carries srctok-B."""
    topic = make_topic(partitions=1, prefix="attribution")
    settings = service_settings(topic)
    day = timedelta(days=1)
    install_url = "https://play.google.com/store/apps/details?id=b&referrer=btn_ref%3Dsrctok-B"
    events = [
        *_placeholder_user("u-explicit", {"btn_ref": "undefined"}),
        *_placeholder_user(
            "u-attribute",
            {"integration_attributes": {"1022": {"com.usebutton.source_token": "null"}}},
        ),
        *_placeholder_user("u-url", {"page_url": "https://brand.example/c?btn_ref=undefined"}),
        _event(
            "evt-install", "u-late", EventType.APP_INSTALL, 5 * day, launch_referral_url=install_url
        ),
        _event(
            "evt-open",
            "u-late",
            EventType.APP_OPEN,
            1 * day,
            launch_referral_url="myapp://p/1?btn_ref=srctok-B",
        ),
        _purchase("u-late-1", "u-late", 3 * day),
    ]
    expected = {
        **{f"{u}-{n}": REAL for u in ("u-explicit", "u-attribute", "u-url") for n in (1, 2)},
        "u-late-1": "srctok-B",
    }
    produce_events(settings, events, partitions=1)

    runner = start_service(settings)
    sandbox.wait_for(
        lambda: set(expected) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="not every purchase reached Button",
    )
    stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 1)

    actual = {o["order_id"]: o["object"].get("btn_ref") for o in sandbox.orders()}
    assert expected == actual
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
