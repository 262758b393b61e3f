"""Parking survives a restart (DESIGN, 5 and 7): the parked set lives in the user's profile.

Against the real broker and the Button sandbox over HTTP: the create of X is refused (400) and
dead-lettered, which parks X in the user's profile and its changelog; the service stops cleanly
and a new one (same group) restores the profile; the full refund of X that arrives then follows
the create to the DLQ, marked parked, and never reaches Button. Once the cause is fixed, a DLQ
replay sends the create, then the delete: X ends deleted, the refund is not lost. And a key
parked behind bytes that never decode is released by a replay that gives them up
(``--release-keys``): the order parked behind them reaches Button.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from consumer.commands import produce_events
from consumer.domain.deadletter import (
    H_KEY_RELEASED,
    H_ORDER_ID,
    H_PARKED,
    H_PARKS_ORDER,
    H_REASON,
    H_STATUS,
)
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    ProductAction,
)
from consumer.domain.profile import Profile
from consumer.domain.profile_codec import decode_profile
from consumer.replay import ReplayFilter, replay
from tests.e2e.harness import (
    headers_of,
    produce_raw,
    read_all,
    replay_whole_dlq,
    stop_when_done,
    wait_until,
)

pytestmark = pytest.mark.broker

USER, X = "durable-parking-user", "ORD-DURABLE-PARK-X"


def _purchase(
    user: str = USER, order: str = X, event_id: str = "evt-x-buy", total: str = "42.50"
) -> CommerceEvent:
    return CommerceEvent(
        event_id=event_id,
        event_type=EventType.PURCHASE,
        event_time=datetime.now(UTC) - timedelta(minutes=5),
        user_key=user,
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order,
            currency_code="USD",
            total_amount=Decimal(total),
        ),
    )


def _full_refund() -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-x-refund",
        event_type=EventType.REFUND,
        event_time=datetime.now(UTC) - timedelta(minutes=1),
        user_key=USER,
        platform=Platform.SERVER,
        commerce=CommerceData(action=ProductAction.REFUND, transaction_id=X),
    )


def _stored_profile(bootstrap: str, changelog_topic: str) -> Profile | None:
    """The user's latest profile in the changelog topic (None: none, or a tombstone)."""
    values = [m.value() for m in read_all(bootstrap, changelog_topic) if m.key() == USER.encode()]
    return decode_profile(values[-1]) if values and values[-1] is not None else None


def _finish_and_stop(runner, settings, partitions: int = 2) -> None:
    """Wait until the group committed every record (each finished), then stop cleanly."""
    kafka = settings.kafka
    stop_when_done(runner, kafka.bootstrap_servers, kafka.group_id, kafka.topic, partitions)


def test_a_parked_order_stays_parked_across_a_restart_and_is_replayed_in_order(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    topic = make_topic(partitions=2, prefix="durable-parking")
    settings = service_settings(topic)
    dlq, changelog = settings.kafka.dlq_topic, settings.kafka.profile_topic
    sandbox.set_faults(
        {"rules": [{"order_id": X, "operation": "create", "fail_first": 1000, "status": 400}]}
    )

    # 1. The create of X is refused (400): dead-lettered, and X parked in the user's profile.
    produce_events(settings, [_purchase()], partitions=2)
    first = start_service(settings)
    wait_until(
        lambda: len(read_all(kafka_bootstrap, dlq)) >= 1,
        timeout=30,
        message="the refused create of X was not dead-lettered",
    )
    _finish_and_stop(first, settings)
    stored = _stored_profile(kafka_bootstrap, changelog)
    assert stored is not None
    parked = stored.parked_order(X)
    assert parked is not None, "the park of X was not written to the changelog"
    assert parked.reason == "http_400"

    # 2. A new service (same group) restores the profile; the full refund of X is parked.
    second = start_service(settings)
    produce_events(settings, [_full_refund()], partitions=2)
    wait_until(
        lambda: len(read_all(kafka_bootstrap, dlq)) >= 2,
        timeout=30,
        message="the refund of X was not dead-lettered behind the create",
    )
    letters = [headers_of(m) for m in read_all(kafka_bootstrap, dlq)]
    assert [h[H_ORDER_ID] for h in letters] == [X, X]
    assert (letters[0][H_REASON], letters[0][H_PARKED]) == ("http_400", "false")
    assert (letters[1][H_REASON], letters[1][H_PARKED]) == ("parked", "true")
    assert H_STATUS not in letters[1], "the parked refund was sent to Button"
    assert [(r["method"], r["status"]) for r in sandbox.requests_for(X)] == [("POST", 400)]

    # 3. The cause is fixed; a replay sends the create, then the delete.
    sandbox.clear_faults()
    report = replay_whole_dlq(settings, f"{settings.kafka.group_id}-replay")
    assert (report.read, report.replayed) == (2, 2)
    sandbox.wait_for(
        lambda: (sandbox.order(X) or {}).get("status") == "deleted",
        timeout=30,
        message="order X did not end deleted after the replay",
    )
    _finish_and_stop(second, settings)
    order_x = sandbox.order(X)
    assert order_x is not None
    assert [(r["method"], r["status"]) for r in order_x["history"]] == [
        ("POST", 400),
        ("POST", 200),
        ("DELETE", 200),
    ]
    assert len(read_all(kafka_bootstrap, dlq)) == 2, "the replay dead-lettered again"
    released = _stored_profile(kafka_bootstrap, changelog)
    assert released is None or released.parked_order(X) is None, "X is still parked"


def test_a_key_parked_behind_bytes_that_never_decode_is_released_by_a_replay_that_gives_up(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Truncated bytes of a user park the user's key, and the user's order Y behind them. A
    replay with ``--release-keys`` cannot decode them either: they go back to the DLQ with
    their reason, marked as given up, the key is released, and Y, replayed after them, reaches
    Button. A later replay without the flag does not park the user again."""
    user, order = "parked-key-user", "ORD-PARKED-KEY-Y"
    topic = make_topic(partitions=1, prefix="parked-key")
    settings = service_settings(topic)
    dlq = settings.kafka.dlq_topic
    purchase = _purchase(user, order, "evt-y-buy", "19.99")

    # 1. The bytes are dead-lettered and park the key; Y follows them to the DLQ, parked.
    produce_raw(kafka_bootstrap, topic, [(user.encode(), b"\x00\x00\x00\x00\x01\x02", 0)])
    produce_events(settings, [purchase], partitions=1)
    first = start_service(settings)
    wait_until(
        lambda: len(read_all(kafka_bootstrap, dlq)) >= 2,
        timeout=30,
        message="the bytes and Y were not dead-lettered",
    )
    _finish_and_stop(first, settings, 1)
    letters = [headers_of(m) for m in read_all(kafka_bootstrap, dlq)]
    reason = letters[0][H_REASON]
    assert reason != "parked"
    assert [(h[H_REASON], h[H_PARKED]) for h in letters[1:]] == [("parked", "true")]
    # Y was parked only because the key was: its dead letter is the one that parked Y.
    assert letters[1][H_PARKS_ORDER] == "true"
    assert sandbox.order(order) is None

    # 2. Replayed with --release-keys: the bytes fail again and release the key; Y is sent.
    second = start_service(settings)
    report = replay(
        settings,
        ReplayFilter(),
        group_id=f"{settings.kafka.group_id}-replay",
        rate=1000,
        dry_run=False,
        out=io.StringIO(),
        progress=False,
        release_keys=True,
    )
    assert (report.read, report.replayed) == (2, 2)
    sandbox.wait_for(
        lambda: sandbox.order(order) is not None,
        timeout=30,
        message="order Y did not reach Button after the replay",
    )
    again = [headers_of(m) for m in read_all(kafka_bootstrap, dlq)][2:]
    assert [(h[H_REASON], h[H_PARKED], h[H_KEY_RELEASED]) for h in again] == [
        (reason, "false", "true")
    ]

    # 3. A later replay without the flag (its group reads on from there: only the bytes'
    # new dead letter) gives them up again instead of parking the user: a new order is sent.
    later = replay_whole_dlq(settings, f"{settings.kafka.group_id}-replay")
    assert (later.read, later.replayed) == (1, 1)
    wait_until(
        lambda: len(read_all(kafka_bootstrap, dlq)) >= 4,
        timeout=30,
        message="the bytes were not dead-lettered again",
    )
    follow_up = _purchase(user, order + "-Z", "evt-z-buy", "5.00")
    produce_events(settings, [follow_up], partitions=1)
    sandbox.wait_for(
        lambda: sandbox.order(order + "-Z") is not None,
        timeout=30,
        message="the user's next order was parked again after a plain replay",
    )
    _finish_and_stop(second, settings, 1)
