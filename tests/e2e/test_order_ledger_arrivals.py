"""One order's events produced out of event-time order, end to end.

Real broker, the service in process, the sandbox over HTTP. Each scenario is one user and one
order, its events produced in the arrival order given (same key, one partition); prices A 10.00,
B 5.00, USD; times in minutes. What Button should hold is the ledger's event-time state (the
README's order ledger); the control scenario produces the same events in event-time order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from consumer.commands import produce_events
from consumer.domain.deadletter import H_REASON
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from tests.e2e.harness import headers_of, read_all, replay_whole_dlq, stop_when_done

pytestmark = pytest.mark.broker
BASE = datetime.now(UTC) - timedelta(hours=2)
PRICES = {"A": Decimal("10.00"), "B": Decimal("5.00")}
RUN = uuid4().hex[:8]  # order ids of this run (the sandbox may outlive one test)


def _purchase(user: str, order: str, eid: str, minutes: int, units: dict[str, int]) -> Any:
    return CommerceEvent(
        event_id=eid,
        event_type=EventType.PURCHASE,
        event_time=BASE + timedelta(minutes=minutes),
        user_key=user,
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order,
            currency_code="USD",
            total_amount=sum((PRICES[p] * q for p, q in units.items()), Decimal(0)),
            products=tuple(Product(id=p, price=PRICES[p], quantity=q) for p, q in units.items()),
        ),
    )


def _refund(
    user: str,
    order: str,
    eid: str,
    minutes: int,
    units: dict[str, int],
    amount: Decimal | None = None,
) -> Any:
    return CommerceEvent(
        event_id=eid,
        event_type=EventType.REFUND,
        event_time=BASE + timedelta(minutes=minutes),
        user_key=user,
        platform=Platform.SERVER,
        commerce=CommerceData(
            action=ProductAction.REFUND,
            transaction_id=order,
            currency_code=None if amount is None else "USD",
            total_amount=amount,
            products=tuple(Product(id=p, quantity=q) for p, q in units.items()),
        ),
    )


EVENTS = [
    # A correction (A x2 @20) arriving after a refund of A x1 @30 that emptied A x1 @10: the
    # DELETE was sent, Button cannot hold the order again: the correction is dead-lettered.
    _purchase("u1", f"T-DELETED-{RUN}", "del-p1", 10, {"A": 1}),
    _refund("u1", f"T-DELETED-{RUN}", "del-r", 30, {"A": 1}),
    _purchase("u1", f"T-DELETED-{RUN}", "del-p2", 20, {"A": 2}),
    # The same refund arriving first (held): nothing was sent when A x1 met it, so the
    # correction is created with the refund applied.
    _refund("u2", f"T-HELD-{RUN}", "held-r", 30, {"A": 1}),
    _purchase("u2", f"T-HELD-{RUN}", "held-p1", 10, {"A": 1}),
    _purchase("u2", f"T-HELD-{RUN}", "held-p2", 20, {"A": 2}),
    # A refund of B @30 before the correction that adds B @20: dead-lettered, kept, applied by
    # the correction.
    _purchase("u3", f"T-KEPT-{RUN}", "kept-p1", 10, {"A": 1}),
    _refund("u3", f"T-KEPT-{RUN}", "kept-r", 30, {"B": 1}),
    _purchase("u3", f"T-KEPT-{RUN}", "kept-p2", 20, {"A": 1, "B": 1}),
    # The same refund without a correction: dead-lettered and kept, it never applies.
    _purchase("u5", f"T-NOFIT-{RUN}", "nofit-p1", 10, {"A": 1}),
    _refund("u5", f"T-NOFIT-{RUN}", "nofit-r", 30, {"B": 1}),
    # Control: the first scenario's events in event-time order.
    _purchase("u4", f"T-CONTROL-{RUN}", "ctl-p1", 10, {"A": 1}),
    _purchase("u4", f"T-CONTROL-{RUN}", "ctl-p2", 20, {"A": 2}),
    _refund("u4", f"T-CONTROL-{RUN}", "ctl-r", 30, {"A": 1}),
]


def test_button_holds_the_ledger_state_or_the_dead_letter_says_why(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    service_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    sandbox: Any,
    unique_name: Callable[[str], str],
) -> None:
    """Out-of-order events end as event-time order at Button, or, where Button already deleted
    the order, in a dead letter naming it; replaying the dead letters changes nothing."""
    topic = make_topic(partitions=1, prefix="ledger-order")
    settings = service_settings(topic)
    produce_events(settings, EVENTS, partitions=1)
    stop_when_done(start_service(settings), kafka_bootstrap, settings.kafka.group_id, topic, 1)

    def at_button(order: str) -> tuple[Any, ...]:
        found = sandbox.order(order)
        if found is None:
            return (None,)
        obj = found.get("object") or {}
        lines = [(i["identifier"], i["quantity"]) for i in obj.get("line_items", [])]
        return (found["status"], obj.get("total"), lines)

    def letters() -> list[tuple[str | None, str]]:
        return [
            (headers_of(m).get("button.event.id"), headers_of(m)[H_REASON])
            for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)
        ]

    live_a1 = ("open", 1000, [("A", 1)])
    expected_letters = [
        ("del-p2", "order_deleted_at_button"),
        ("kept-r", "refund_item_not_in_order"),
        ("nofit-r", "refund_item_not_in_order"),
    ]
    assert at_button(f"T-CONTROL-{RUN}") == live_a1
    assert at_button(f"T-HELD-{RUN}") == live_a1
    assert at_button(f"T-KEPT-{RUN}") == live_a1
    assert at_button(f"T-NOFIT-{RUN}") == live_a1
    assert at_button(f"T-DELETED-{RUN}")[0] == "deleted"
    assert sorted(letters()) == expected_letters

    # The README's replay advice: the kept refund, applied since by the correction, replays as
    # a duplicate (not dead-lettered again, Button unchanged); the refund that still does not
    # apply is dead-lettered again with its reason, and the deleted order's correction is
    # rejected again.
    report = replay_whole_dlq(settings, unique_name("replay"))
    assert report.replayed == len(expected_letters)
    stop_when_done(start_service(settings), kafka_bootstrap, settings.kafka.group_id, topic, 1)
    assert at_button(f"T-KEPT-{RUN}") == live_a1
    assert at_button(f"T-NOFIT-{RUN}") == live_a1
    assert at_button(f"T-DELETED-{RUN}")[0] == "deleted"
    again = [("del-p2", "order_deleted_at_button"), ("nofit-r", "refund_item_not_in_order")]
    assert sorted(letters()) == sorted([*expected_letters, *again])


def test_a_create_carried_by_a_refund_and_dead_lettered_is_created_by_its_replay(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    service_settings: Callable[..., Any],
    start_service: Callable[..., Any],
    sandbox: Any,
    unique_name: Callable[[str], str],
) -> None:
    """A refund that carries its order's create: r2 (B x1 and 15.00) is held, the purchase
    (A, B: 15.00) meets it and leaves nothing, so nothing is sent; r1 (5.00, earlier in event
    time) leaves r2 more than what is left, and the order is live: r1 sends the create. Button
    answers it 500 until the retries run out: dead-lettered. Once Button is back, the replay of
    r1 brings nothing new to the ledger and re-sends the create: the order reaches Button
    (before, it sent an update, answered 404, and the order never reached Button)."""
    order = f"T-CARRIED-{RUN}"
    topic = make_topic(partitions=1, prefix="ledger-carried")
    settings = service_settings(topic, DELIVERY_RETRY_MAX_ATTEMPTS="2")
    sandbox.set_faults(
        {"rules": [{"order_id": order, "operation": "create", "fail_first": 1000, "status": 500}]}
    )
    events = [
        _refund("u5", order, "car-r2", 30, {"B": 1}, amount=Decimal("15.00")),
        _purchase("u5", order, "car-p1", 10, {"A": 1, "B": 1}),
        _refund("u5", order, "car-r1", 20, {}, amount=Decimal("5.00")),
    ]
    produce_events(settings, events, partitions=1)
    stop_when_done(start_service(settings), kafka_bootstrap, settings.kafka.group_id, topic, 1)

    def letters() -> list[tuple[str | None, str]]:
        return [
            (headers_of(m).get("button.event.id"), headers_of(m)[H_REASON])
            for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)
        ]

    assert letters() == [("car-r1", "retries_exhausted")]
    assert sandbox.order(order) is None
    refused = [(r["method"], r["path"], r["status"]) for r in sandbox.requests_for(order)]
    assert refused[-1] == ("POST", "/v1/order", 500), refused

    sandbox.clear_faults()
    report = replay_whole_dlq(settings, unique_name("replay"))
    assert report.replayed == 1
    stop_when_done(start_service(settings), kafka_bootstrap, settings.kafka.group_id, topic, 1)
    found = sandbox.order(order)
    assert found is not None, sandbox.requests_for(order)
    lines = [(i["identifier"], i["quantity"]) for i in found["object"]["line_items"]]
    assert (found["status"], found["object"]["total"], lines) == (
        "open",
        1000,
        [("A", 1), ("B", 1)],
    )
    assert letters() == [("car-r1", "retries_exhausted")]
