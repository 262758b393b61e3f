"""A filtered replay releases no order without the records parked behind it (DESIGN, 5).

Against the real broker and the Button sandbox over HTTP: Button refuses the creates of X and Y
(400), so both are dead-lettered and park their orders; the partial refund of X and the full
refund of Y follow them to the DLQ, parked (reason ``parked``). Once the cause is fixed, the
troubleshooting table's ``replay-dlq --reason http_400`` replays the two creates and, after each,
the refund parked behind it: every order at the sandbox ends as the events say (X open at its
refunded total, Y deleted), and nothing is dead-lettered again.

And a replay written while the service lags: the refund of V, produced while the service is
stopped, is read before the replayed create and parked again; ``replay-dlq`` says the group had
not consumed it, and the whole-DLQ replay it asks for once the lag is 0 applies the refund.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from consumer.commands import produce_events
from consumer.domain.deadletter import H_ORDER_ID, H_PARKED, H_REASON
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from consumer.replay import ReplayFilter, replay, summary_lines
from tests.e2e.harness import (
    assert_sandbox_matches,
    expected_orders,
    headers_of,
    read_all,
    replay_whole_dlq,
    stop_when_done,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

X, Y, Z = "ORD-FILTERED-X", "ORD-FILTERED-Y", "ORD-FILTERED-Z"
SHIRT = Product(id="shirt", price=Decimal("30.00"))
SOCKS = Product(id="socks", price=Decimal("12.50"))


def _event(user: str, order: str, kind: EventType, minutes: int, *items: Product) -> CommerceEvent:
    purchase = kind is EventType.PURCHASE
    return CommerceEvent(
        event_id=f"evt-{order}-{kind.value}",
        event_type=kind,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key=user,
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef" if purchase else None,
        commerce=CommerceData(
            action=ProductAction.PURCHASE if purchase else ProductAction.REFUND,
            transaction_id=order,
            currency_code="USD",
            total_amount=sum((p.price or Decimal(0) for p in items), Decimal(0)) or None,
            products=items,
        ),
    )


def test_a_reason_filtered_replay_brings_the_parked_refunds_along(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=2, prefix="filtered-replay")
    settings = service_settings(topic)
    dlq = settings.kafka.dlq_topic
    events = [
        _event("filtered-u1", X, EventType.PURCHASE, 1, SHIRT, SOCKS),
        _event("filtered-u2", Y, EventType.PURCHASE, 2, SHIRT),
        _event("filtered-u3", Z, EventType.PURCHASE, 3, SOCKS),
        _event("filtered-u1", X, EventType.REFUND, 4, SOCKS),  # partial: X keeps the shirt
        _event("filtered-u2", Y, EventType.REFUND, 5),  # full: Y is cancelled
    ]
    expected = expected_orders(events, settings)
    assert [a.value for a in expected[Y].actions][-1] == "cancel"
    assert expected[X].total == 3000
    sandbox.set_faults(
        {
            "rules": [
                {"order_id": order, "operation": "create", "fail_first": 1000, "status": 400}
                for order in (X, Y)
            ]
        }
    )

    # 1. The creates of X and Y are refused and dead-lettered; their refunds follow, parked.
    produce_events(settings, events, partitions=2)
    service = start_service(settings)

    def four_dead_letters() -> list[dict[str, str]]:
        found = [headers_of(m) for m in read_all(kafka_bootstrap, dlq)]
        return found if len(found) >= 4 else []

    letters = wait_until(
        four_dead_letters,
        timeout=30,
        message="the refused creates and their refunds were not dead-lettered",
    )
    assert sorted((h[H_ORDER_ID], h[H_REASON], h[H_PARKED]) for h in letters) == [
        (X, "http_400", "false"),
        (X, "parked", "true"),
        (Y, "http_400", "false"),
        (Y, "parked", "true"),
    ]

    # 2. The cause is fixed; the troubleshooting table's command replays the refused creates.
    sandbox.clear_faults()
    report = replay(
        settings,
        ReplayFilter(reasons=frozenset({"http_400"})),
        group_id=f"{settings.kafka.group_id}-replay",
        rate=1000,
        dry_run=False,
        out=io.StringIO(),
        progress=False,
        remember=False,
    )
    sandbox.wait_for(
        lambda: (
            (sandbox.order(Y) or {}).get("status") == "deleted"
            and ((sandbox.order(X) or {}).get("object") or {}).get("total") == 3000
        ),
        timeout=30,
        message="after the replay, X is not at its refunded total or Y is not deleted",
    )
    stop_when_done(service, kafka_bootstrap, settings.kafka.group_id, topic, 2)
    assert_sandbox_matches(sandbox, expected)
    assert (report.read, report.replayed, report.followers, report.held) == (4, 4, 2, 0)
    assert len(read_all(kafka_bootstrap, dlq)) == 4, "the replay dead-lettered again"


def test_a_replay_while_the_service_lags_warns_and_a_second_one_applies_what_it_parked(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=1, prefix="lagging-replay")
    settings = service_settings(topic)
    kafka = settings.kafka
    dlq, group, replay_group = kafka.dlq_topic, kafka.group_id, f"{kafka.group_id}-replay"
    v = "ORD-LAGGING-V"
    purchase = _event("lagging-u1", v, EventType.PURCHASE, 1, SHIRT, SOCKS)
    refund = _event("lagging-u1", v, EventType.REFUND, 2, SOCKS)

    # 1. The create of V is refused and dead-lettered; the service stops; the cause is fixed
    # and the refund of V is produced while the service is down.
    sandbox.set_faults(
        {"rules": [{"order_id": v, "operation": "create", "fail_first": 1000, "status": 400}]}
    )
    produce_events(settings, [purchase], partitions=1)
    first = start_service(settings)
    wait_until(
        lambda: read_all(kafka_bootstrap, dlq), timeout=30, message="the create was not refused"
    )
    stop_when_done(first, kafka_bootstrap, group, topic, 1)
    sandbox.clear_faults()
    produce_events(settings, [refund], partitions=1)

    # 2. The whole-DLQ replay writes the create after the refund: it says the group lags there.
    report = replay_whole_dlq(settings, replay_group)
    assert (report.replayed, report.lagging, report.lag_group) == (1, {0: 1}, group)
    assert (
        "run replay-dlq without filters again"
        in summary_lines(report, ReplayFilter(), dry_run=False)[-1]
    )

    # 3. The service reads the refund first (V still parked: dead-lettered again, parked), then
    # the create (V released and sent at its full total).
    second = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, 1)
    letters = [headers_of(m) for m in read_all(kafka_bootstrap, dlq)]
    assert [(h[H_ORDER_ID], h[H_REASON]) for h in letters] == [(v, "http_400"), (v, "parked")]
    assert ((sandbox.order(v) or {}).get("object") or {}).get("total") == 4250

    # 4. Once the lag is 0, the whole-DLQ replay the warning asks for replays only the parked
    # refund, without a warning, and V ends at its refunded total.
    again = replay_whole_dlq(settings, replay_group)
    assert (again.read, again.replayed, again.lagging, again.lag_error) == (1, 1, {}, None)
    sandbox.wait_for(
        lambda: ((sandbox.order(v) or {}).get("object") or {}).get("total") == 3000,
        timeout=30,
        message="the refund parked again was not applied by the second replay",
    )
    stop_when_done(second, kafka_bootstrap, group, topic, 1)
