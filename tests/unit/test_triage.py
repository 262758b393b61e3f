"""Triage: an event found inert (before the model is built) is one the mapping skips without
changing any profile; every field the mapping learns from keeps an event off the fast path."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.adapters.avro_codec import Encoder, build_decoder
from consumer.domain.button import Skip
from consumer.domain.event_forms import event_from_record, event_to_record
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    DeviceInfo,
    Environment,
    EventType,
    Platform,
    ProductAction,
)
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.profile import Profile
from consumer.domain.triage import InertEvent, inert_record
from tests.unit.test_avro_codec import SCHEMA, SCHEMA_DIR, events

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
TOKEN = "srctok-0123456789abcdef"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
CONFIG = MappingConfig()

VIEW = CommerceEvent(
    event_id="evt-view",
    event_type=EventType.PAGE_VIEW,
    event_time=NOW,
    user_key="user-1",
    platform=Platform.WEB,
    page_url="https://shop.example.com/p/tote?utm_source=news",
)


def rich_profile() -> Profile:
    """A profile with a token, an advertising id and an order, all stamped at ``NOW``."""
    opened = replace(
        VIEW,
        event_type=EventType.APP_OPEN,
        btn_ref=TOKEN,
        device_info=DeviceInfo(ios_advertising_id=IDFA),
    )
    _, profile = process(opened, None, CONFIG, NOW)
    bought = replace(
        VIEW,
        event_type=EventType.PURCHASE,
        event_id="evt-buy",
        page_url=None,
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id="ORD-1",
            currency_code="USD",
            total_amount=Decimal("10.00"),
        ),
    )
    _, profile = process(bought, profile, CONFIG, NOW)
    assert profile is not None
    assert (len(profile.tokens), len(profile.idfas), len(profile.orders)) == (1, 1, 1)
    return profile


PROFILES = (None, rich_profile())


def test_a_plain_page_view_is_inert() -> None:
    """A view with a URL that carries no token: skipped as the mapping would, no model."""
    assert inert_record(event_to_record(VIEW)) == InertEvent(
        "evt-view", EventType.PAGE_VIEW, NOW_MS, Skip("profile_only")
    )


def test_a_plain_add_to_cart_is_inert_as_not_an_order() -> None:
    cart = replace(VIEW, event_type=EventType.ADD_TO_CART, page_url=None)
    assert inert_record(event_to_record(cart)) == InertEvent(
        "evt-view", EventType.ADD_TO_CART, NOW_MS, Skip("not_an_order")
    )


def test_every_field_the_mapping_learns_from_keeps_an_event_off_the_fast_path() -> None:
    """A token anywhere, an advertising id or consent signal, an order, an event type the
    mapping acts on, a development event: the full path (model, profile) decides."""
    variants: dict[str, CommerceEvent] = {
        "btn_ref": replace(VIEW, btn_ref=TOKEN),
        "token in page_url": replace(VIEW, page_url=f"https://shop.example.com/p?btn_ref={TOKEN}"),
        "token in launch_referral_url": replace(
            VIEW, launch_referral_url=f"myapp://p?btn_ref={TOKEN}"
        ),
        "integration attribute 1022": replace(
            VIEW, integration_attributes={"1022": {"com.usebutton.source_token": TOKEN}}
        ),
        "idfa": replace(VIEW, device_info=DeviceInfo(ios_advertising_id=IDFA)),
        "gaid": replace(VIEW, device_info=DeviceInfo(android_advertising_id=IDFA)),
        "limit ad tracking": replace(VIEW, device_info=DeviceInfo(limit_ad_tracking=True)),
        "commerce": replace(
            VIEW,
            event_type=EventType.CHECKOUT,
            commerce=CommerceData(action=ProductAction.CHECKOUT, transaction_id="ORD-1"),
        ),
        "development": replace(VIEW, environment=Environment.DEVELOPMENT),
        "unknown type": replace(VIEW, event_type=EventType.UNKNOWN),
    }
    assert {
        name: inert_record(event_to_record(e)) for name, e in variants.items()
    } == dict.fromkeys(variants)


def test_a_view_carrying_only_a_junk_token_takes_the_full_path_to_be_counted() -> None:
    """A placeholder or a value that cannot be a token teaches nothing, but the full path
    counts and logs it (``btn_ref_dropped``); a publisher link's organisation id stays inert."""
    junk = {
        "placeholder in page_url": replace(
            VIEW, page_url="https://shop.example.com/p?btn_ref=null"
        ),
        "a token's prefix alone in page_url": replace(
            VIEW, page_url="https://shop.example.com/p?btn_ref=srctok-"
        ),
        "not URL-safe in launch_referral_url": replace(
            VIEW, launch_referral_url="myapp://p?btn_ref=srctok%20x"
        ),
        "placeholder in attribute 1022": replace(
            VIEW, integration_attributes={"1022": {"com.usebutton.source_token": "undefined"}}
        ),
    }
    assert {name: inert_record(event_to_record(e)) for name, e in junk.items()} == dict.fromkeys(
        junk
    )
    publisher = replace(VIEW, page_url="https://r.bttn.io?btn_ref=org-1234")
    assert inert_record(event_to_record(publisher)) is not None


def test_an_event_missing_a_required_field_takes_the_full_path() -> None:
    """The full path refuses it (dead letter); triage never skips what the model would refuse."""
    record = event_to_record(VIEW)
    assert [inert_record({**record, field: value}) for field, value in _BROKEN] == [None] * 3


_BROKEN: tuple[tuple[str, Any], ...] = (("event_id", ""), ("user_key", ""), ("event_time", None))


@st.composite
def mostly_inert(draw: st.DrawFn) -> CommerceEvent:
    """Any valid event, with the fields that keep it off the fast path mostly cleared."""
    event = draw(events())
    if draw(st.integers(0, 9)) < 8:
        order = event.event_type in (EventType.PURCHASE, EventType.REFUND)
        event = replace(
            event,
            event_type=EventType.PAGE_VIEW if order else event.event_type,
            commerce=None,
            btn_ref=None,
            environment=Environment.PRODUCTION,
        )
    if draw(st.booleans()) and event.device_info is not None:
        event = replace(event, device_info=DeviceInfo(ios_idfv=event.device_info.ios_idfv))
    return event


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event=mostly_inert(), shift=st.integers(-400, 400))
def test_an_inert_event_is_one_the_mapping_skips_without_changing_the_profile(
    event: CommerceEvent, shift: int
) -> None:
    """Whatever the stored profile: the same skip reason, and no profile change."""
    event = replace(event, event_time=NOW + timedelta(days=shift))
    inert = inert_record(event_to_record(event))
    if inert is None:
        return
    assert inert.event_id == event.event_id
    assert inert.event_time_ms == int(event.event_time.timestamp() * 1000)
    for profile in PROFILES:
        assert process(event, profile, CONFIG, NOW) == (inert.result, None)


def test_the_decoder_triages_a_view_and_decodes_an_order_in_full() -> None:
    decoder = build_decoder(SCHEMA_DIR)
    view, bought = (Encoder(SCHEMA).encode(event_to_record(e)) for e in (VIEW, _purchase()))
    assert decoder.decode_triaged(view) == inert_record(event_to_record(VIEW))
    assert decoder.decode_triaged(bought) == decoder.decode_event(bought) == _purchase()
    assert event_from_record(event_to_record(VIEW)) == decoder.decode_event(view) == VIEW


def _purchase() -> CommerceEvent:
    return replace(
        VIEW,
        event_type=EventType.PURCHASE,
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id="ORD-1",
            currency_code="USD",
            total_amount=Decimal("10.00"),
        ),
    )
