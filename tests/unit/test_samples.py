"""Sample events: deterministic, valid, and covering every path the consumer must handle."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import pytest

from consumer.adapters.avro_codec import Encoder, build_decoder, load_schema
from consumer.domain.event_forms import event_to_record
from consumer.domain.events import CommerceEvent, EventType, Platform
from consumer.errors import DecodeError
from consumer.samples import CURRENCIES, generate, generate_events, read_jsonl, write_jsonl

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
EVENTS = [event for _, event in generate(60, seed=1)]
EXPONENT = {c.code: c.exponent for c in CURRENCIES}


def by_user(events: list[CommerceEvent]) -> dict[str, list[CommerceEvent]]:
    users: dict[str, list[CommerceEvent]] = defaultdict(list)
    for event in events:
        users[event.user_key].append(event)
    return users


def test_same_seed_same_events() -> None:
    """Generation is deterministic for a seed, and differs across seeds."""
    assert list(generate(20, seed=1)) == list(generate(20, seed=1))
    assert list(generate(20, seed=1)) != list(generate(20, seed=2))


def test_keys_are_the_utf8_user_key() -> None:
    """Every Kafka key is the event's user key, as producers must key."""
    assert all(key == event.user_key.encode() for key, event in generate(10, seed=3))


def test_events_are_in_time_order_and_ids_unique() -> None:
    """The stream is time-ordered overall (so per user too) and event ids never repeat."""
    times = [event.event_time for event in EVENTS]
    assert times == sorted(times)
    assert len({event.event_id for event in EVENTS}) == len(EVENTS)


def test_each_user_arrives_before_buying_and_buys_before_refunding() -> None:
    """Per user: an arrival event first, purchases later, a refund after its purchase."""
    arrivals = {EventType.APP_INSTALL, EventType.APP_OPEN, EventType.PAGE_VIEW}
    arrivals.add(EventType.SESSION_START)
    for events in by_user(EVENTS).values():
        assert events[0].event_type in arrivals
        bought: set[str | None] = set()
        for event in events:
            assert event.commerce is not None or event.event_type not in (
                EventType.PURCHASE,
                EventType.REFUND,
            )
            if event.event_type is EventType.PURCHASE:
                assert event.commerce is not None
                bought.add(event.commerce.transaction_id)
            if event.event_type is EventType.REFUND:
                assert event.commerce is not None
                assert event.commerce.transaction_id in bought


def test_purchases_come_from_the_server_without_attribution() -> None:
    """Orders carry identities but no btn_ref or device ids: the profile must supply them."""
    purchases = [e for e in EVENTS if e.event_type is EventType.PURCHASE]
    assert purchases
    for event in purchases:
        assert event.platform is Platform.SERVER
        assert (event.btn_ref, event.device_info, event.source_token) == (None, None, None)
        assert event.user_identities is not None
        assert event.user_identities.customer_id
        assert event.user_identities.email


def test_every_attribution_channel_appears() -> None:
    """Tokens arrive via launch referral, attribute 1022, explicit btn_ref and landing URL."""
    installs = [e for e in EVENTS if e.event_type is EventType.APP_INSTALL]
    assert any("btn_ref=srctok-" in (e.launch_referral_url or "") for e in installs)
    assert any((e.source_token or "").startswith("srctok-") for e in EVENTS)
    assert any((e.btn_ref or "").startswith("srctok-") for e in EVENTS)
    pages = [e for e in EVENTS if e.event_type is EventType.PAGE_VIEW]
    assert any("btn_ref=srctok-" in (e.page_url or "") for e in pages)
    assert any("btn_ref=org-" in (e.launch_referral_url or "") for e in EVENTS)


def test_partial_and_full_refunds_appear() -> None:
    """Some refunds list products (partial), some none (the whole order)."""
    refunds = [e.commerce for e in EVENTS if e.event_type is EventType.REFUND]
    assert any(c is not None and c.products for c in refunds)
    assert any(c is not None and not c.products for c in refunds)


def test_all_currencies_appear_at_their_precision() -> None:
    """USD, EUR, JPY and KWD all occur; amounts use no more digits than the currency has."""
    seen = set()
    for event in EVENTS:
        commerce = event.commerce
        if commerce is None or commerce.currency_code is None:
            continue
        seen.add(commerce.currency_code)
        places = EXPONENT[commerce.currency_code]
        amounts = [commerce.total_amount, commerce.tax_amount, commerce.shipping_amount]
        amounts += [p.price for p in commerce.products]
        for amount in amounts:
            if amount is not None:
                assert amount == amount.quantize(Decimal(1).scaleb(-places))
    assert seen == {"USD", "EUR", "JPY", "KWD"}


def test_purchase_total_is_lines_plus_tax_plus_shipping() -> None:
    """``total_amount`` includes tax and shipping, as the schema documents."""
    for event in EVENTS:
        if event.event_type is not EventType.PURCHASE or event.commerce is None:
            continue
        c = event.commerce
        lines = sum((p.line_amount or Decimal(0) for p in c.products), Decimal(0))
        extra = (c.tax_amount or Decimal(0)) + (c.shipping_amount or Decimal(0))
        assert c.total_amount == lines + extra


def test_samples_encode_and_decode_through_the_codec() -> None:
    """Every sample event survives the Avro codec unchanged."""
    encoder = Encoder(load_schema(SCHEMA_DIR / "commerce_event.avsc"), schema_id=1)
    decoder = build_decoder(SCHEMA_DIR)
    for event in EVENTS:
        assert decoder.decode_event(encoder.encode(event_to_record(event))) == event


def test_jsonl_round_trip() -> None:
    """``read_jsonl(write_jsonl(events)) == events``."""
    out = io.StringIO()
    assert write_jsonl(EVENTS, out) == len(EVENTS)
    assert list(read_jsonl(io.StringIO(out.getvalue()))) == EVENTS


def test_read_jsonl_skips_blank_lines_and_names_bad_lines() -> None:
    """Blank lines are ignored; a bad line raises with its line number."""
    out = io.StringIO()
    write_jsonl(generate_events(1, seed=5), out)
    first = out.getvalue().splitlines()[0]
    assert len(list(read_jsonl(["", first, "  "]))) == 1
    with pytest.raises(DecodeError, match=r"^line 2: ") as info:
        list(read_jsonl([first, "{not json"]))
    assert info.value.reason == "invalid_json"
    with pytest.raises(DecodeError, match=r"^line 1: ") as info:
        list(read_jsonl(['{"event_id": "e"}']))
    assert info.value.reason == "missing_field"


def test_sample_events_to_produce_all_lie_in_the_past() -> None:
    """produce-sample's journeys end before now: an event dated after the processing time plus
    MAPPING_MAX_FUTURE_SKEW_HOURS teaches nothing, so future-dated samples would be rejected."""
    from datetime import UTC, datetime

    from consumer.commands import _sample_events

    before = datetime.now(UTC)
    latest = max(e.event_time for e in _sample_events(200, 3, endless=False))

    assert latest < before


def test_the_batches_of_an_endless_run_are_not_another_seeds_users() -> None:
    """``produce-sample --duration`` keeps producing new users batch after batch. A batch must
    not be the users of a neighbouring ``--seed`` (``--seed 2`` repeating batch 1 of a
    ``--seed 1 --duration`` run would re-send the same orders, answered 409): the batches' users
    and orders are their own; the first batch is the seed's own, as without ``--duration``."""
    from itertools import islice

    from consumer.commands import _sample_events

    def users_of(events: Iterable[CommerceEvent]) -> set[str]:
        return {e.user_key for e in events}

    once = list(_sample_events(20, 1, endless=False))
    endless = list(islice(_sample_events(20, 1, endless=True), 3 * len(once) + 100))
    assert [e.event_id for e in endless[: len(once)]] == [e.event_id for e in once]
    later = users_of(endless[len(once) :])
    for neighbour in (0, 2, 3, 4):
        assert later.isdisjoint(users_of(_sample_events(20, neighbour, endless=False)))
