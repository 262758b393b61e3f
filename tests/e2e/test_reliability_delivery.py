"""Reliability end to end: outages, poison pills, a refused API key, parking and DLQ replay.

Each test runs the real service (in a thread) against the real broker and the Button sandbox over
HTTP, and asserts on what Button ends up holding (order state and request history), on the
dead-letter topic and on the committed offsets. The expected Button requests come from the pure
mapping run offline over the same events (``expected_orders``), so a lost, duplicated or
reordered request fails the test.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from consumer.adapters.avro_codec import build_decoder, build_encoder, encode_wire
from consumer.commands import produce_events
from consumer.domain.button import Action
from consumer.domain.deadletter import (
    H_CLASS,
    H_CONNECTOR,
    H_EXC_CLASS,
    H_EXC_MESSAGE,
    H_OFFSET,
    H_ORDER_ID,
    H_PARKED,
    H_PARTITION,
    H_REASON,
    H_STAGE,
    H_STATUS,
    H_TOPIC,
)
from consumer.domain.event_forms import event_to_record
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    ProductAction,
    UserIdentities,
)
from consumer.errors import DecodeError
from consumer.sandbox.testing import run_sandbox
from tests.e2e.harness import (
    assert_sandbox_matches,
    committed_offsets,
    end_offsets,
    expected_orders,
    headers_of,
    past_events,
    produce_raw,
    read_all,
    replay_whole_dlq,
    stop_when_done,
    wait_until,
)

pytestmark = pytest.mark.broker

PAUSED = "button_consumer_partitions_paused"
AUTH_PAUSED = "button_consumer_auth_paused"
LAG_SUM = "button_consumer_consumer_lag_sum_records"
IN_FLIGHT = "button_consumer_in_flight_records"
ASSIGNED = "button_consumer_partitions_assigned"
BREAKER_OPEN = "button_consumer_breaker_open"


def _purchase(
    order_id: str, user: str, event_id: str, *, currency: str = "USD", total: str = "42.50"
) -> CommerceEvent:
    return CommerceEvent(
        event_id=event_id,
        event_type=EventType.PURCHASE,
        event_time=datetime.now(UTC) - timedelta(minutes=5),
        user_key=user,
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef",
        user_identities=UserIdentities(customer_id=f"c-{user}"),
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order_id,
            currency_code=currency,
            total_amount=Decimal(total),
        ),
    )


def _full_refund(order_id: str, user: str, event_id: str) -> CommerceEvent:
    return CommerceEvent(
        event_id=event_id,
        event_type=EventType.REFUND,
        event_time=datetime.now(UTC) - timedelta(minutes=1),
        user_key=user,
        platform=Platform.SERVER,
        commerce=CommerceData(action=ProductAction.REFUND, transaction_id=order_id),
    )


def _finish_and_stop(runner, settings, partitions: int, timeout: float = 60.0) -> None:
    """Wait until the group committed every record (each finished), then stop cleanly."""
    kafka = settings.kafka
    stop_when_done(
        runner, kafka.bootstrap_servers, kafka.group_id, kafka.topic, partitions, timeout
    )


# The outage tests end their outage themselves, within the deadlines of the waits that observe
# it (well under 200 s together); the retry budget is far longer, so no record can exhaust it
# during the outage however slow the machine is. A larger budget changes nothing else: the
# outage is over when the test says so.
OUTAGE_RETRY_BUDGET_S = 900


# --- 1. Button outage -----------------------------------------------------------------------


def test_outage_shorter_than_the_retry_budget_pauses_then_delivers_everything(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """503 on every request for a while: retried with backoff, partitions paused (lanes full),
    nothing dead-lettered, every order delivered once in per-user order after recovery.

    The outage is long on the sandbox's clock and ended by the test (``clear_faults``) once
    the failing state has been observed, so a slow machine cannot let it end unobserved; the
    waits before that have deadlines that sum to far less than the retry budget."""
    topic = make_topic(partitions=3, prefix="outage")
    settings = service_settings(
        topic,
        DELIVERY_MAX_IN_FLIGHT_PER_PARTITION="4",
        DELIVERY_MAX_IN_FLIGHT="8",
        DELIVERY_RETRY_MAX_ATTEMPTS="100000",
        DELIVERY_RETRY_MAX_ELAPSED_SECONDS=str(OUTAGE_RETRY_BUDGET_S),
        DELIVERY_RETRY_BASE_DELAY_SECONDS="0.05",
        DELIVERY_RETRY_MAX_DELAY_SECONDS="0.5",
    )
    events = past_events(30, seed=21)
    expected = expected_orders(events, settings)
    assert len(expected) >= 20, "the sample set has orders"
    assert any(Action.CANCEL in o.actions for o in expected.values()), "and cancels"
    runner = start_service(settings)
    wait_until(lambda: runner.metric(ASSIGNED) == 3, timeout=30, message="no assignment")
    sandbox.set_faults({"outage": {"seconds": 3600, "status": 503}})
    started = time.monotonic()
    produce_events(settings, events, partitions=3)
    ends = end_offsets(kafka_bootstrap, topic, 3)

    # While Button fails: the failures in a row open the circuit breaker (or, before it, the
    # retries fill the lanes) and the partitions are paused.
    wait_until(
        lambda: (
            runner.metric(PAUSED) >= 1
            and (
                runner.metric(BREAKER_OPEN, {"reason": "button_unavailable"}) == 1
                or runner.metric("button_consumer_retries_total", {"outcome": "server_error"}) >= 20
            )
        ),
        timeout=60,
        message="no partition paused / no breaker or retries during the outage",
    )
    assert sandbox.orders() == [], "nothing is applied during the outage"
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 3)
    assert all(committed[p] < ends[p] for p in ends), "the lag stays while Button fails"
    # Implied by the deadlines above; it would fail only if one of them were broken.
    assert time.monotonic() - started < OUTAGE_RETRY_BUDGET_S / 2
    sandbox.clear_faults()  # Button is back

    # After recovery: everything arrives, and the service unpauses by itself.
    sandbox.wait_for(
        lambda: set(expected) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="not every order reached Button after the outage",
    )
    _finish_and_stop(runner, settings, 3)

    assert runner.metric(PAUSED) == 0
    assert sandbox.stats()["faults"].get("outage_503", 0) >= 10
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 3) == ends
    assert_sandbox_matches(sandbox, expected)


# --- 2. Poison pills ---------------------------------------------------------------------------


def test_poison_pills_are_dead_lettered_with_reasons_and_good_events_flow(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Undecodable bytes, an unknown schema id, a tombstone and events the mapper rejects each
    go to the DLQ with their reason and Connect headers, key and value untouched; the good
    events around them are all delivered and the offsets reach the end."""
    partitions = 2
    topic = make_topic(partitions=partitions, prefix="poison")
    settings = service_settings(topic)
    good = past_events(12, seed=5)
    expected = expected_orders(good, settings)
    encoder = build_encoder(Path(settings.schema.dir), topic=topic)
    valid = encoder.encode_event(_purchase("ORD-POISON-BASE", "poison-user", "evt-base"))

    # (key, value, expected reason, expected stage, expected exception class)
    pills: list[tuple[bytes, bytes | None, str, str, str]] = [
        (b"pill-random", bytes(range(7, 90)) * 3, "", "VALUE_CONVERTER", "DecodeError"),
        (b"pill-truncated", valid[: len(valid) // 2], "", "VALUE_CONVERTER", "DecodeError"),
        (
            b"pill-unknown-schema",
            encode_wire(
                event_to_record(_purchase("ORD-P-WIRE", "pw", "evt-w")), encoder.schema, 99
            ),
            "unknown_schema",
            "VALUE_CONVERTER",
            "UnknownSchemaError",
        ),
        (b"pill-tombstone", None, "null_value", "VALUE_CONVERTER", "DecodeError"),
        (
            b"pill-currency",
            encoder.encode_event(
                _purchase("ORD-P-ZZZ", "pill-currency", "evt-zzz", currency="ZZZ")
            ),
            "unknown_currency",
            "TRANSFORMATION",
            "MappingError",
        ),
        (
            b"pill-long-id",
            encoder.encode_event(_purchase("L" * 256, "pill-long-id", "evt-long")),
            "order_id_too_long",
            "TRANSFORMATION",
            "MappingError",
        ),
    ]
    # The decoder's own verdict on the two byte-level pills (which codec reason depends on
    # where the bytes break); each must be a decode failure, not a crash.
    decoder = build_decoder(Path(settings.schema.dir))
    for i, (key, value, reason, stage, cls) in enumerate(pills):
        if reason == "":
            assert value is not None
            with pytest.raises(DecodeError) as caught:
                decoder.decode_event(value)
            assert caught.value.reason in {"invalid_avro", "truncated", "trailing_bytes"}
            pills[i] = (key, value, str(caught.value.reason), stage, cls)

    # Interleave: good events, then the pills spread over both partitions, then more good ones.
    half = len(good) // 2
    produce_events(settings, good[:half], partitions=partitions)
    produce_raw(
        kafka_bootstrap, topic, [(k, v, i % partitions) for i, (k, v, *_) in enumerate(pills)]
    )
    produce_events(settings, good[half:], partitions=partitions)
    ends = end_offsets(kafka_bootstrap, topic, partitions)

    runner = start_service(settings)
    sandbox.wait_for(
        lambda: set(expected) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="good events did not all reach Button",
    )
    wait_until(
        lambda: len(read_all(kafka_bootstrap, settings.kafka.dlq_topic)) >= len(pills),
        timeout=30,
        message="not every poison pill was dead-lettered",
    )
    _finish_and_stop(runner, settings, partitions)

    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, partitions) == ends
    assert_sandbox_matches(sandbox, expected)
    for order_id in ("ORD-P-ZZZ", "L" * 256, "ORD-P-WIRE"):
        assert sandbox.requests_for(order_id) == [], "a poison pill reached Button"

    pill_keys = {key for key, *_ in pills}
    sources = {m.key(): m for m in read_all(kafka_bootstrap, topic) if m.key() in pill_keys}
    letters = read_all(kafka_bootstrap, settings.kafka.dlq_topic)
    assert len(letters) == len(pills), [headers_of(m).get(H_REASON) for m in letters]
    by_key = {m.key(): m for m in letters}
    for key, value, reason, stage, cls in pills:
        letter, source = by_key[key], sources[key]
        h = headers_of(letter)
        assert letter.value() == value == source.value(), key
        assert h[H_REASON] == reason, (key, h)
        assert h[H_STAGE] == stage, (key, h)
        assert h[H_EXC_CLASS] == cls, (key, h)
        assert h[H_TOPIC] == topic
        assert h[H_PARTITION] == str(source.partition())
        assert h[H_OFFSET] == str(source.offset())
        assert h[H_CONNECTOR] == "button-consumer"
        assert h[H_CLASS]
        assert h[H_EXC_MESSAGE]
        assert h[H_PARKED] == "false"
        assert H_STATUS not in h, "nothing was sent to Button"
    assert runner.metric("button_consumer_dead_letters_total", {"reason": "unknown_schema"}) == 1


# --- 3. Refused API key ----------------------------------------------------------------------


def test_refused_api_key_pauses_everything_until_the_key_works_again(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """401 on every request: nothing dead-lettered, not ready, all partitions paused, offsets
    held; once Button accepts the key again the service resumes by itself and delivers all."""
    partitions = 3
    topic = make_topic(partitions=partitions, prefix="authkey")
    settings = service_settings(topic, DELIVERY_AUTH_PROBE_INTERVAL_SECONDS="0.2")
    events = past_events(15, seed=8)
    expected = expected_orders(events, settings)
    produce_events(settings, events, partitions=partitions)
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    sandbox.set_api_keys([])

    runner = start_service(settings)
    health = runner.service.health
    wait_until(
        lambda: (
            runner.metric(AUTH_PAUSED) == 1
            and runner.metric(PAUSED) == partitions
            and sandbox.stats()["by_status"].get("401", 0) >= 3
        ),
        timeout=30,
        message="the service did not pause on the refused key",
    )
    assert not health.ready()
    # Held, not dropped: it keeps probing (still 401s), delivers nothing, dead-letters nothing.
    probes = sandbox.stats()["by_status"]["401"]
    sandbox.wait_for(
        lambda: sandbox.stats()["by_status"]["401"] >= probes + 3,
        timeout=30,
        interval=0.1,
        message="the service stopped probing the refused key",
    )
    assert runner.metric(AUTH_PAUSED) == 1
    assert not health.ready()
    assert sandbox.orders() == []
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, partitions)
    assert all(committed[p] < ends[p] for p in ends if ends[p]), committed

    # The lag gauge counts what waits, what arrives during the pause included: the paused
    # partitions are not fetched, so their end offsets are read from the broker.
    def waiting() -> int:
        group = settings.kafka.group_id
        done = committed_offsets(kafka_bootstrap, group, topic, partitions)
        return sum(end_offsets(kafka_bootstrap, topic, partitions).values()) - sum(done.values())

    wait_until(lambda: runner.metric(LAG_SUM) == waiting(), 30, message="lag before the arrivals")
    later = past_events(5, seed=81)
    produce_events(settings, later, partitions=partitions)
    expected = expected_orders([*events, *later], settings)
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    wait_until(
        lambda: runner.metric(LAG_SUM) == waiting(),
        timeout=30,
        message=f"the lag did not count the {len(later)} records produced during the pause",
    )

    sandbox.set_api_keys([sandbox.api_key])
    sandbox.wait_for(
        lambda: set(expected) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message="the service did not resume after the key was accepted again",
    )
    wait_until(
        lambda: health.ready() and runner.metric(AUTH_PAUSED) == 0,
        timeout=30,
        message="the service is not ready again after the key was accepted",
    )
    wait_until(
        lambda: runner.metric(PAUSED) == 0, timeout=30, message="partitions are still paused"
    )
    _finish_and_stop(runner, settings, partitions)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, partitions) == ends
    assert_sandbox_matches(sandbox, expected)


# --- 4. Parking and replay ---------------------------------------------------------------------


def test_parked_order_is_replayed_in_order_once_the_cause_is_fixed(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Create of X answered 400 -> dead letter; the cancel of X -> parked behind it, never sent.
    A replay once the cause is fixed sends create then delete; a second replay is harmless."""
    topic = make_topic(partitions=2, prefix="parking")
    settings = service_settings(topic)
    user, x, y = "parked-user", "ORD-PARK-X", "ORD-PARK-Y"
    events = [
        _purchase(x, user, "evt-x-buy"),
        _full_refund(x, user, "evt-x-refund"),
        _purchase(y, user, "evt-y-buy", total="10.00"),  # same user, another order: not parked
    ]
    sandbox.set_faults(
        {"rules": [{"order_id": x, "operation": "create", "fail_first": 1000, "status": 400}]}
    )
    produce_events(settings, events, partitions=2)
    runner = start_service(settings)

    sandbox.wait_for(lambda: sandbox.order(y), timeout=30, message="order Y was not delivered")
    dlq = settings.kafka.dlq_topic
    wait_until(
        lambda: len(read_all(kafka_bootstrap, dlq)) >= 2,
        timeout=30,
        message="the create and the cancel of X were not both dead-lettered",
    )
    letters = read_all(kafka_bootstrap, dlq)
    assert [headers_of(m)[H_ORDER_ID] for m in letters] == [x, x]
    first, second = (headers_of(m) for m in letters)
    assert (first[H_REASON], first[H_PARKED], first[H_STATUS]) == ("http_400", "false", "400")
    assert (second[H_REASON], second[H_PARKED]) == ("parked", "true")
    assert H_STATUS not in second, "the parked cancel was never sent"
    assert int(first[H_OFFSET]) < int(second[H_OFFSET])
    assert [(r["method"], r["status"]) for r in sandbox.requests_for(x)] == [("POST", 400)]
    assert sandbox.order(x) is None

    # The cause is fixed; replay the DLQ while the service runs.
    sandbox.clear_faults()
    replay_group = f"{settings.kafka.group_id}-replay"
    report = replay_whole_dlq(settings, replay_group)
    assert (report.read, report.replayed) == (2, 2)
    sandbox.wait_for(
        lambda: (sandbox.order(x) or {}).get("status") == "deleted",
        timeout=30,
        message="order X did not end deleted after the replay",
    )
    wait_until(lambda: runner.metric(IN_FLIGHT) == 0, timeout=30, message="X still in flight")
    order_x = sandbox.order(x)
    assert order_x is not None
    # The refused create, then the replay: create, then delete, in that order.
    assert [(r["method"], r["status"]) for r in order_x["history"]] == [
        ("POST", 400),
        ("POST", 200),
        ("DELETE", 200),
    ]
    assert len(read_all(kafka_bootstrap, dlq)) == 2, "the replay dead-lettered again"

    # The same replay group again: nothing new to replay.
    again = replay_whole_dlq(settings, replay_group)
    assert again.replayed == 0
    # The whole DLQ again (a fresh group): duplicates Button absorbs (409 create, 404 delete).
    twice = replay_whole_dlq(settings, f"{replay_group}-2")
    assert twice.replayed == 2
    sandbox.wait_for(
        lambda: len((sandbox.order(x) or {}).get("history", [])) >= 5,
        timeout=30,
        message="the second replay did not reach Button",
    )
    _finish_and_stop(runner, settings, 2)
    order_x = sandbox.order(x)
    assert order_x is not None
    assert order_x["status"] == "deleted"
    assert [(r["method"], r["status"]) for r in order_x["history"]] == [
        ("POST", 400),
        ("POST", 200),
        ("DELETE", 200),
        ("POST", 409),
        ("DELETE", 404),
    ]
    assert len(read_all(kafka_bootstrap, dlq)) == 2, "a harmless replay dead-lettered again"
    order_y = sandbox.order(y)
    assert order_y is not None
    assert order_y["status"] == "open"
    assert [(r["method"], r["status"]) for r in order_y["history"]] == [("POST", 200)]


# --- 4b. An order Button deleted before the profile knew ----------------------------------------


def test_order_deleted_at_button_before_its_replay_is_not_dead_lettered(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """The situation a kill -9 leaves when a cancel reached Button but its changelog write did
    not: Button holds the order deleted, the profile knows nothing, and the purchase, a partial
    refund and the cancel are read again. The create is answered 409 and its update 404, the
    refund's update 404: each reads the order, finds it deleted and is done (``order_deleted``);
    the cancel is answered 404 (``order_gone``). Nothing is dead-lettered or parked."""
    topic = make_topic(partitions=1, prefix="deleted")
    settings = service_settings(topic)
    user, x = "deleted-user", "ORD-DELETED-X"
    purchase = _purchase(x, user, "evt-x-buy")
    partial = CommerceEvent(
        event_id="evt-x-partial",
        event_type=EventType.REFUND,
        event_time=datetime.now(UTC) - timedelta(minutes=3),
        user_key=user,
        platform=Platform.SERVER,
        commerce=CommerceData(
            action=ProductAction.REFUND, transaction_id=x, total_amount=Decimal("10.00")
        ),
    )
    events = [purchase, partial, _full_refund(x, user, "evt-x-refund")]
    # Button already holds the order, deleted: created and cancelled by an earlier run.
    with httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_header) as button:
        created = button.post(
            "/v1/order",
            json={
                "order_id": x,
                "total": 4250,
                "currency": "USD",
                "purchase_date": "2026-01-01T00:00:00Z",
            },
        )
        assert created.status_code == 200, created.text
        assert button.delete(f"/v1/order/{x}").status_code == 200
    produce_events(settings, events, partitions=1)
    runner = start_service(settings)

    _finish_and_stop(runner, settings, 1)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    order_x = sandbox.order(x)
    assert order_x is not None
    assert order_x["status"] == "deleted"
    assert [(r["method"], r["status"]) for r in sandbox.requests_for(x)] == [
        ("POST", 200),
        ("DELETE", 200),
        ("POST", 409),  # the purchase's create
        ("POST", 404),  # its follow-up update
        ("GET", 200),  # the order, read: deleted
        ("POST", 404),  # the partial refund's update
        ("GET", 200),
        ("DELETE", 404),  # the cancel
    ]


# --- 5. Volume: the outage with 20,000 events -----------------------------------------------


def test_outage_at_volume_loses_nothing_and_duplicates_nothing(
    kafka_bootstrap, make_topic, service_settings, start_service
):
    """20,000 events; Button answers 503 to everything while the backlog builds: once it
    recovers, every order holds exactly the requests the mapping implies, in order, and the
    group commits to the end; nothing is dead-lettered. (The test ends the outage once it has
    seen the partitions paused; the waits before have deadlines far inside the retry budget.)"""
    partitions = 4
    topic = make_topic(partitions=partitions, prefix="outage-volume")
    # The sandbox in its own process: the service in this one is CPU-bound at this volume.
    with run_sandbox(api_keys=("sk-volume",), mode="process") as sandbox:
        settings = service_settings(
            topic,
            BUTTON_API_KEY=sandbox.api_key,
            BUTTON_BASE_URL=sandbox.base_url,
            DELIVERY_RETRY_MAX_ATTEMPTS="100000",
            DELIVERY_RETRY_MAX_ELAPSED_SECONDS=str(OUTAGE_RETRY_BUDGET_S),
            DELIVERY_RETRY_MAX_DELAY_SECONDS="1",
        )
        events = past_events(3100, seed=20_000)[:20_000]
        assert len(events) == 20_000
        expected = expected_orders(events, settings)
        runner = start_service(settings)
        wait_until(
            lambda: runner.metric(ASSIGNED) == partitions, timeout=60, message="no assignment"
        )
        sandbox.set_faults({"outage": {"seconds": 3600, "status": 503}})
        started = time.monotonic()
        produce_events(settings, events, partitions=partitions)
        ends = end_offsets(kafka_bootstrap, topic, partitions)
        assert sum(ends.values()) == 20_000

        wait_until(
            lambda: runner.metric(PAUSED) >= 1,
            timeout=120,
            message="no partition was paused while Button failed",
        )
        assert sandbox.orders() == []
        # Implied by the deadlines above; it would fail only if one of them were broken.
        assert time.monotonic() - started < OUTAGE_RETRY_BUDGET_S / 2
        sandbox.clear_faults()  # Button is back
        sandbox.wait_for(
            lambda: (
                sandbox.stats()["orders"]["open"] + sandbox.stats()["orders"]["deleted"]
                >= len(expected)
            ),
            timeout=300,
            interval=0.5,
            message="not every order reached Button after the outage",
        )
        _finish_and_stop(runner, settings, partitions, timeout=300)

        assert runner.metric(PAUSED) == 0
        assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
        assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, partitions) == (
            ends
        )
        assert_sandbox_matches(sandbox, expected)
