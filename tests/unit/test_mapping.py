"""The pure mapping: event + profile -> Button request + new profile."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from consumer.domain.attribution import TokenSource
from consumer.domain.button import Action, MapResult, Read, Reject, Send, Skip
from consumer.domain.button_wire import body_digest, order_path, purchase_date
from consumer.domain.event_forms import event_from_json
from consumer.domain.events import CommerceEvent
from consumer.domain.mapping import MAX_REFUNDS_PER_ORDER, MappingConfig, process
from consumer.domain.profile import OrderStatus, Profile, Stamped
from consumer.domain.profile_codec import decode_profile, encode_profile
from consumer.errors import DecodeError
from consumer.sandbox.validation import validate_create, validate_order_id, validate_update

NOW = datetime(2024, 5, 2, tzinfo=UTC)
T0 = "2024-05-01T14:03:22Z"
TOKEN = "srctok-0123456789abcdef"
CONFIG = MappingConfig()


def event(**fields: Any) -> CommerceEvent:
    base: dict[str, Any] = {
        "event_id": "evt-1",
        "event_type": "PURCHASE",
        "event_time": T0,
        "user_key": "user-1",
    }
    base.update(fields)
    return event_from_json(base)


def purchase(**fields: Any) -> CommerceEvent:
    commerce = {
        "action": "PURCHASE",
        "transaction_id": "ORD-100045",
        "currency_code": "USD",
        "total_amount": "65.98",
        "tax_amount": "5.00",
        "shipping_amount": "1.00",
        "products": [
            {
                "id": "SKU-RED-M",
                "name": "Red shirt, M",
                "category": "Apparel",
                "price": "29.99",
                "quantity": 2,
                "attributes": {"size": "M"},
            }
        ],
    }
    commerce.update(fields.pop("commerce", {}))
    return event(commerce=commerce, **fields)


def refund(event_id: str, products: list[dict[str, Any]] | None = None, **c: Any) -> CommerceEvent:
    commerce: dict[str, Any] = {"action": "REFUND", "transaction_id": "ORD-100045"}
    if products is not None:
        commerce["products"] = products
    commerce.update(c)
    return event(event_id=event_id, event_type="REFUND", commerce=commerce)


def send(result: object) -> Any:
    assert isinstance(result, Send), result
    return result.request


def test_purchase_becomes_create_with_documented_fields() -> None:
    """Button's documented example order, field by field."""
    result, profile = process(
        purchase(
            btn_ref=TOKEN,
            user_identities={"customer_id": "cust-789", "email": " Jane@Example.com "},
            device_info={"ios_advertising_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
            platform="IOS",
        ),
        None,
        CONFIG,
        NOW,
    )
    request = send(result)
    assert (
        request.action,
        request.method,
        request.path,
        request.order_id,
    ) == (Action.CREATE, "POST", "/v1/order", "ORD-100045")
    expected = {
        "order_id": "ORD-100045",
        "total": 5998,
        "currency": "USD",
        "purchase_date": "2024-05-01T14:03:22Z",
        "btn_ref": TOKEN,
        "customer": {
            "id": "cust-789",
            "email_sha256": hashlib.sha256(b"jane@example.com").hexdigest(),
            "device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        },
        "line_items": [
            {
                "identifier": "SKU-RED-M",
                "sku": "SKU-RED-M",
                "description": "Red shirt, M",
                "category": ["Apparel"],
                "quantity": 2,
                "amount": 2999,
                "total": 5998,
                "attributes": {"size": "M"},
            }
        ],
    }
    assert expected == request.body
    assert validate_create(request.body) == []
    assert profile is not None
    assert profile.order("ORD-100045") is not None


def test_plaintext_email_is_never_emitted_or_stored() -> None:
    """Only the hash leaves the mapper; the profile has no email."""
    result, profile = process(
        purchase(user_identities={"email": "jane@example.com"}), None, CONFIG, NOW
    )
    assert "jane@example.com" not in repr(send(result).body)
    assert profile is not None
    assert b"jane" not in encode_profile(profile, 0)


@pytest.mark.parametrize(
    ("currency", "total", "tax", "expected"),
    [("JPY", "1234", "0", 1234), ("KWD", "1.234", "0.100", 1134), ("USD", "0.1", None, 10)],
)
def test_minor_units_per_currency(
    currency: str, total: str, tax: str | None, expected: int
) -> None:
    """Totals use the currency's ISO 4217 exponent, net of tax and shipping."""
    c: dict[str, Any] = {"currency_code": currency, "total_amount": total, "products": []}
    c["tax_amount"] = tax
    c["shipping_amount"] = None
    result, _ = process(purchase(commerce=c), None, CONFIG, NOW)
    assert expected == send(result).body["total"]


def test_revenue_used_as_is_when_configured() -> None:
    """revenue_includes_tax_and_shipping=False sends total_amount unchanged."""
    config = MappingConfig(revenue_includes_tax_and_shipping=False)
    result, _ = process(purchase(), None, config, NOW)
    assert send(result).body["total"] == 6598


def test_total_from_lines_when_event_has_none() -> None:
    """Without total_amount, the lines' value is the total (it excludes tax and shipping)."""
    result, _ = process(purchase(commerce={"total_amount": None}), None, CONFIG, NOW)
    assert send(result).body["total"] == 5998


def test_fractional_unit_price_line_total_rounded_once() -> None:
    """3 x 3.333333 USD: line total 1000 (exact value rounded once), unit amount 333."""
    c: dict[str, Any] = {
        "products": [{"id": "P", "price": "3.333333", "quantity": 3}],
        "total_amount": "10",
        "tax_amount": None,
        "shipping_amount": None,
    }
    result, _ = process(purchase(commerce=c), None, CONFIG, NOW)
    (item,) = send(result).body["line_items"]
    assert (item["amount"], item["total"]) == (333, 1000)


@pytest.mark.parametrize(
    ("order_id", "reason", "detail"),
    [
        ("   ", "missing_order_id", "the transaction_id is blank: '   '"),
        (
            "ORDRE-é",
            "order_id_not_ascii",
            "transaction_id 'ORDRE-é' has 'é' (U+00E9); Button takes printable ASCII (0x20-0x7e)",
        ),
        (
            "A\tB",
            "order_id_not_ascii",
            "transaction_id 'A\\tB' has '\\t' (U+0009); Button takes printable ASCII (0x20-0x7e)",
        ),
    ],
)
def test_a_bad_order_id_is_named_in_the_rejection(order_id: str, reason: str, detail: str) -> None:
    """The rejection says what the transaction_id was and which character Button refuses."""
    result, _ = process(purchase(commerce={"transaction_id": order_id}), None, CONFIG, NOW)
    assert Reject(reason, detail) == result


@pytest.mark.parametrize(
    ("commerce", "reason"),
    [
        ({"transaction_id": "ORDRE-é"}, "order_id_not_ascii"),
        ({"transaction_id": "A\tB"}, "order_id_not_ascii"),
        ({"transaction_id": "x" * 256}, "order_id_too_long"),
        ({"transaction_id": "   "}, "missing_order_id"),
        ({"currency_code": "ABC"}, "unknown_currency"),
        ({"currency_code": "XAU"}, "currency_without_minor_unit"),
        ({"total_amount": "1.00", "tax_amount": "5.00"}, "negative_total"),
        ({"total_amount": "99999999999.00", "tax_amount": "0"}, "total_out_of_range"),
        ({"total_amount": None, "products": [{"id": "P"}]}, "missing_total"),
        (
            {"products": [{"id": "P", "price": "99999999999", "quantity": 1}]},
            "line_item_out_of_range",
        ),
    ],
)
def test_invalid_purchases_are_rejected_with_a_named_reason(
    commerce: dict[str, Any], reason: str
) -> None:
    """Every invalid purchase becomes a Reject naming the problem."""
    result, _ = process(purchase(commerce=commerce), None, CONFIG, NOW)
    assert isinstance(result, Reject)
    assert reason == result.reason


def test_btn_ref_sources_in_order() -> None:
    """Explicit, then integration attribute 1022, then URLs, then the profile."""
    attrs = {"1022": {"com.usebutton.source_token": "srctok-attr"}}
    url = "https://brand.example/p?btn_ref=srctok-url"
    cases = [
        (purchase(btn_ref=TOKEN, integration_attributes=attrs, page_url=url), TOKEN),
        (purchase(btn_ref="org-123", integration_attributes=attrs, page_url=url), "srctok-attr"),
        (purchase(page_url=url), "srctok-url"),
        (purchase(page_url="https://r.bttn.io?btn_ref=org-abc"), None),
    ]
    for evt, expected in cases:
        result, _ = process(evt, None, CONFIG, NOW)
        assert expected == send(result).body.get("btn_ref")


def test_install_feeds_the_profile_and_a_later_purchase_uses_it() -> None:
    """A deep-link install is skipped but remembered; the purchase carries its token."""
    install = event(
        event_id="evt-0",
        event_type="APP_INSTALL",
        event_time="2024-04-28T10:00:00Z",
        launch_referral_url=f"https://brand.bttn.io/p/1?btn_ref={TOKEN}",
        device_info={"android_advertising_id": "38400000-8cf0-11bd-b23e-10b96e40000d"},
    )
    result, profile = process(install, None, CONFIG, NOW)
    assert Skip("profile_only") == result
    assert profile is not None
    assert profile.btn_ref is not None
    assert (profile.btn_ref.value, profile.btn_ref.source) == (TOKEN, TokenSource.URL)
    result, after = process(purchase(platform="ANDROID"), profile, CONFIG, NOW)
    assert after is not None
    assert after.order("ORD-100045").btn_ref_source is TokenSource.PROFILE  # type: ignore[union-attr]
    body = send(result).body
    assert body["btn_ref"] == TOKEN
    assert body["customer"]["device_id"] == "38400000-8cf0-11bd-b23e-10b96e40000d"


def test_profile_token_outside_attribution_window_is_not_used() -> None:
    """A token older than the window is not attached."""
    install = event(
        event_id="evt-0",
        event_type="APP_OPEN",
        event_time="2024-03-01T00:00:00Z",
        launch_referral_url=f"myapp://p?btn_ref={TOKEN}",
    )
    _, profile = process(install, None, CONFIG, datetime(2024, 3, 2, tzinfo=UTC))
    result, _ = process(purchase(), profile, CONFIG, NOW)
    assert "btn_ref" not in send(result).body


def test_a_late_purchase_takes_the_token_of_its_time_when_it_was_seen_again_since() -> None:
    """An install with ``?btn_ref=srctok-B`` 5 days ago, an app open with the same token 1 day
    ago, then a purchase dated 3 days ago arrives: it carries srctok-B (seen at the install)."""
    install = event(
        event_id="evt-install",
        event_type="APP_INSTALL",
        event_time="2024-04-27T00:00:00Z",
        launch_referral_url="https://brand.bttn.io/p/1?btn_ref=srctok-B",
    )
    reopen = event(
        event_id="evt-open",
        event_type="APP_OPEN",
        event_time="2024-05-01T00:00:00Z",
        launch_referral_url="myapp://p/1?btn_ref=srctok-B",
    )
    _, profile = process(install, None, CONFIG, NOW)
    _, profile = process(reopen, profile, CONFIG, NOW)
    late = purchase(event_time="2024-04-29T00:00:00Z")
    result, after = process(late, profile, CONFIG, NOW)
    assert send(result).body.get("btn_ref") == "srctok-B"
    assert after is not None
    assert after.order("ORD-100045").btn_ref_source is TokenSource.PROFILE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "junk",
    [
        {"btn_ref": "undefined"},
        {"integration_attributes": {"1022": {"com.usebutton.source_token": "null"}}},
        {"page_url": "https://brand.example/checkout?btn_ref=undefined"},
        {"btn_ref": "   "},
        {"btn_ref": "NaN"},
        {"btn_ref": "srctok-"},
        {"page_url": "https://brand.example/checkout?btn_ref=srctok-"},
    ],
    ids=["explicit", "attribute-1022", "url", "blank", "nan", "prefix-only", "prefix-only-url"],
)
def test_a_placeholder_token_never_reaches_button_nor_replaces_the_remembered_one(
    junk: dict[str, Any],
) -> None:
    """The user trial: a landing page view with a real token, a purchase carrying a placeholder,
    then a purchase with no token: both orders carry the real token, and the profile's newest
    token is still the real one."""
    view = event(
        event_id="evt-view",
        event_type="PAGE_VIEW",
        event_time="2024-05-01T10:00:00Z",
        page_url="https://brand.example/landing?btn_ref=srctok-realtoken1",
    )
    _, profile = process(view, None, CONFIG, NOW)
    first, profile = process(purchase(event_id="evt-1", **junk), profile, CONFIG, NOW)
    second_order = {"transaction_id": "ORD-2"}
    second, profile = process(
        purchase(event_id="evt-2", commerce=second_order, event_time="2024-05-01T15:00:00Z"),
        profile,
        CONFIG,
        NOW,
    )
    tokens = [send(r).body.get("btn_ref") for r in (first, second)]
    assert tokens == ["srctok-realtoken1", "srctok-realtoken1"]
    assert profile is not None
    assert [t.value for t in profile.tokens] == ["srctok-realtoken1"]


def test_zeroed_and_refused_advertising_ids_are_dropped() -> None:
    """All-zero ids, limit-ad-tracking and ATT denied never reach Button."""
    zero = {"ios_advertising_id": "00000000-0000-0000-0000-000000000000"}
    lat = {"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001", "limit_ad_tracking": True}
    att = {
        "ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001",
        "att_authorization_status": "DENIED",
    }
    for info in (zero, lat, att):
        result, _ = process(purchase(device_info=info), None, CONFIG, NOW)
        assert "customer" not in send(result).body


def test_refusal_forgets_remembered_ids() -> None:
    """An event with tracking refused removes the profile's ids, and the order has none."""
    opened = event(
        event_id="evt-0",
        event_type="APP_OPEN",
        device_info={"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001"},
    )
    _, profile = process(opened, None, CONFIG, NOW)
    assert profile is not None
    assert profile.idfa is not None
    result, after = process(purchase(device_info={"limit_ad_tracking": True}), profile, CONFIG, NOW)
    assert "customer" not in send(result).body
    assert after is not None
    assert after.idfa is None


def test_a_junk_advertising_id_an_earlier_release_learned_is_not_sent_from_the_profile() -> None:
    """Releases before the UUID rule learned any reported id (``opt-out``, a truncated UUID)
    into the profile. Read back from such a profile, it is not sent: the order takes the next
    usable id (here the GAID the profile also holds), else none."""
    seen = int(datetime(2024, 4, 30, tzinfo=UTC).timestamp() * 1000)
    junk = (Stamped("opt-out", seen), Stamped("6D92078A-8246-4BA4-AE5B", seen + 1))
    gaid = Stamped("38400000-8cf0-11bd-b23e-10b96e40000d", seen + 2)
    for idfas, gaids, expected in (
        (junk, (), None),
        (junk, (gaid,), gaid.value),
    ):
        profile = Profile(idfas=idfas, gaids=gaids)
        result, _ = process(purchase(platform="IOS"), profile, CONFIG, NOW)
        assert expected == send(result).body.get("customer", {}).get("device_id")


IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
ATT_DENIED = {"att_authorization_status": "DENIED"}
LIMITED = {"limit_ad_tracking": True}


def app_open(event_id: str, time: str, **device: Any) -> CommerceEvent:
    return event(event_id=event_id, event_type="APP_OPEN", event_time=time, device_info=device)


def mapped(events: list[CommerceEvent]) -> tuple[list[MapResult], Profile | None]:
    """The results of ``events`` processed in this arrival order, and the profile after."""
    profile: Profile | None = None
    results: list[MapResult] = []
    for evt in events:
        result, after = process(evt, profile, CONFIG, NOW)
        results.append(result)
        profile = after if after is not None else profile
    return results, profile


@pytest.mark.parametrize(
    ("platform", "refusal", "own"),
    [
        ("IOS", ATT_DENIED, {"ios_advertising_id": IDFA}),
        ("ANDROID", LIMITED, {"android_advertising_id": GAID, "limit_ad_tracking": False}),
        (
            "IOS",
            {"ios_advertising_id": "00000000-0000-0000-0000-000000000000"},
            {"ios_advertising_id": IDFA},
        ),
    ],
    ids=["att_denied", "limit_ad_tracking", "idfa_withheld"],
)
def test_an_order_dated_before_a_known_refusal_does_not_send_its_own_id(
    platform: str, refusal: dict[str, Any], own: dict[str, Any]
) -> None:
    """The user refused tracking on May 1 at noon; a purchase of that morning, carrying the id
    the device reported then, arrives after the refusal: the refusal is the user's latest word,
    so the order goes without the id."""
    results, _ = mapped(
        [
            app_open("evt-0", "2024-05-01T12:00:00Z", platform=platform, **refusal),
            purchase(event_time="2024-05-01T09:00:00Z", platform=platform, device_info=own),
        ]
    )
    assert "device_id" not in send(results[-1]).body.get("customer", {})


def test_a_grant_after_a_refusal_lifts_it() -> None:
    """An id reported with tracking allowed after the refusal (in event time) is sent again,
    whatever the arrival order, and an id from before the refusal stays forgotten."""
    refusal = app_open("evt-0", "2024-05-01T08:00:00Z", **ATT_DENIED)
    before = app_open("evt-1", "2024-04-30T08:00:00Z", ios_advertising_id="ABCD-OLD")
    grant = app_open("evt-2", "2024-05-01T09:00:00Z", ios_advertising_id=IDFA)
    order = purchase(event_time="2024-05-01T10:00:00Z")
    for arrival in ([refusal, before, grant], [grant, before, refusal], [before, grant, refusal]):
        results, profile = mapped([*arrival, order])
        assert send(results[-1]).body["customer"]["device_id"] == IDFA, arrival
        assert profile is not None
        assert [d.value for d in profile.idfas] == [IDFA]


_DEVICE_EVENTS = st.sampled_from(
    [
        ("grant", {"ios_advertising_id": IDFA}),
        ("grant", {"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001"}),
        ("grant", {"android_advertising_id": GAID}),
        (
            "grant",
            {
                "android_advertising_id": "00000000-0000-4000-8000-0000000000a2",
                "limit_ad_tracking": False,
            },
        ),
        ("refuse_both", ATT_DENIED),
        ("refuse_both", {"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001", **LIMITED}),
        ("withhold_idfa", {"ios_advertising_id": "00000000-0000-0000-0000-000000000000"}),
        ("withhold_gaid", {"android_advertising_id": "00000000000000000000000000000000"}),
    ]
)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(_DEVICE_EVENTS, st.integers(0, 240)), min_size=1, max_size=6).flatmap(
        lambda evts: st.tuples(st.just(evts), st.permutations(range(len(evts))))
    ),
    st.sampled_from(["IOS", "ANDROID"]),
    st.integers(0, 300),
)
def test_no_id_seen_before_a_later_refusal_is_ever_sent(
    drawn: tuple[list[tuple[tuple[str, dict[str, Any]], int]], list[int]],
    platform: str,
    order_minutes: int,
) -> None:
    """Whatever the arrival order of a user's app events, a purchase (after them all) sends an
    advertising id only if one of its kind was reported after the latest refusal of that kind
    (ATT denied or limit-ad-tracking refuse both kinds, an all-zero id withholds its own kind),
    and then one of those; with none such, no id. The purchase's own time does not matter."""
    device_events, arrival = drawn
    base = datetime(2024, 5, 1, tzinfo=UTC)
    events = []
    for i, ((_, device), minutes) in enumerate(device_events):
        time = (base + timedelta(minutes=minutes, seconds=i)).isoformat()
        events.append(app_open(f"evt-{i}", time.replace("+00:00", "Z"), **device))
    last_refusal = {"idfa": -1, "gaid": -1}
    for i, ((kind, _), minutes) in enumerate(device_events):
        at = minutes * 60 + i
        for k in ("idfa", "gaid"):
            if kind in ("refuse_both", f"withhold_{k}"):
                last_refusal[k] = max(last_refusal[k], at)
    allowed = set()
    for i, ((kind, device), minutes) in enumerate(device_events):
        if kind != "grant":
            continue
        for k, field_name in (("idfa", "ios_advertising_id"), ("gaid", "android_advertising_id")):
            if field_name in device and minutes * 60 + i > last_refusal[k]:
                allowed.add(device[field_name])
    order_time = (base + timedelta(minutes=order_minutes, seconds=30)).isoformat()
    order = purchase(event_time=order_time.replace("+00:00", "Z"), platform=platform)

    results, _ = mapped([*(events[i] for i in arrival), order])

    sent = send(results[-1]).body.get("customer", {}).get("device_id")
    assert sent in allowed if allowed else sent is None, (sent, allowed)


def test_full_refund_without_products_cancels() -> None:
    """A refund naming no products cancels the order (DELETE)."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    result, after = process(refund("evt-r1"), profile, CONFIG, NOW)
    request = send(result)
    assert (
        request.action,
        request.method,
        request.path,
        request.body,
    ) == (Action.CANCEL, "DELETE", "/v1/order/ORD-100045", None)
    assert after is not None
    assert after.order("ORD-100045").status == OrderStatus.CANCELLED  # type: ignore[union-attr]


def test_refund_of_unknown_order() -> None:
    """Unknown order: a whole-order refund cancels; a partial one reads the order from Button
    first (``test_adoption``), the profile holding it for the purchase meanwhile."""
    result, _ = process(refund("evt-r1"), None, CONFIG, NOW)
    assert send(result).action == Action.CANCEL
    result, held = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), None, CONFIG, NOW)
    assert isinstance(result, Read)
    assert Skip("refund_held") == result.held
    assert held is not None
    assert held.order("ORD-100045").status is OrderStatus.PENDING  # type: ignore[union-attr]


def test_partial_refund_updates_remaining_state() -> None:
    """Refunding one of two shirts sends the remaining line and total."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    result, after = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), profile, CONFIG, NOW)
    request = send(result)
    assert (
        request.action,
        request.method,
        request.path,
    ) == (Action.UPDATE, "POST", "/v1/order/ORD-100045")
    assert request.body["total"] == 2999
    assert [i["quantity"] for i in request.body["line_items"]] == [1]
    assert [i["total"] for i in request.body["line_items"]] == [2999]
    assert validate_update(request.body, "ORD-100045") == []
    assert after is not None


def test_refund_of_every_unit_cancels() -> None:
    """Refunding all units is a cancellation, not an update to zero."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    result, _ = process(
        refund("evt-r1", [{"id": "SKU-RED-M", "quantity": 2}]), profile, CONFIG, NOW
    )
    assert send(result).action == Action.CANCEL


def test_refund_amount_wins_over_line_values() -> None:
    """A refund carrying its amount reduces the total by that amount, net of tax."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    evt = refund("evt-r1", [{"id": "SKU-RED-M"}], total_amount="27.50", tax_amount="2.50")
    result, _ = process(evt, profile, CONFIG, NOW)
    assert send(result).body["total"] == 5998 - 2500


def test_amount_only_refund_of_known_order_is_an_update() -> None:
    """A goodwill refund smaller than the order reduces the total; lines are unchanged."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    result, _ = process(refund("evt-r1", total_amount="10.00"), profile, CONFIG, NOW)
    request = send(result)
    assert (request.action, request.body["total"]) == (Action.UPDATE, 4998)


@pytest.mark.parametrize(
    ("currency", "total", "refunded"),
    [
        ("USD", "59.98", {"total_amount": "2.50", "tax_amount": "2.50"}),  # the tax alone
        ("USD", "59.98", {"total_amount": "4.00", "shipping_amount": "4.00"}),  # the shipping
        ("USD", "59.98", {"total_amount": "6.50", "tax_amount": "2.50", "shipping_amount": "4"}),
        ("USD", "59.98", {"total_amount": "0.004"}),  # below one cent
        ("JPY", "5998", {"total_amount": "0.4"}),  # below one yen (no minor unit)
        ("KWD", "5.998", {"total_amount": "0.0005"}),  # below one fils (three digits)
    ],
)
def test_a_refund_of_nothing_button_counts_changes_nothing(
    currency: str, total: str, refunded: dict[str, str]
) -> None:
    """A refund whose amount, net of tax and shipping, is nothing in the currency's minor unit
    (only the tax or the shipping refunded, or less than one cent) leaves Button's total as it
    is: Button's ``total`` excludes tax and shipping, and an order is cancelled only when every
    line item is (Button's order API best practices). It used to cancel the whole order. Nothing
    is new for Button: the state is re-sent as a replay re-sends it (the create, whose 409 is
    followed by the update of the same state)."""
    bought = {
        "currency_code": currency,
        "total_amount": total,
        "tax_amount": None,
        "shipping_amount": None,
    }
    _, profile = process(purchase(commerce=bought), None, CONFIG, NOW)
    fields: dict[str, Any] = {
        "tax_amount": None,
        "shipping_amount": None,
        "currency_code": currency,
    }
    fields |= refunded
    result, after = process(refund("evt-r1", **fields), profile, CONFIG, NOW)
    request = send(result)
    assert (request.action, request.body["total"]) == (Action.CREATE, 5998)
    assert isinstance(result, Send)
    assert result.follow_up is not None
    assert (result.follow_up.action, dict(result.follow_up.body or {})["total"]) == (
        Action.UPDATE,
        5998,
    )
    assert after is not None
    assert after.order("ORD-100045").status is not OrderStatus.CANCELLED  # type: ignore[union-attr]


def test_a_refund_of_the_whole_remaining_amount_cancels() -> None:
    """An amount-only refund of at least what remains is the whole order: a cancel."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    whole = refund("evt-r1", total_amount="59.98", tax_amount=None)
    result, _ = process(whole, profile, CONFIG, NOW)
    assert send(result).action == Action.CANCEL


def test_order_level_discount_is_kept_proportionally() -> None:
    """With a coupon (total < lines), the remaining total keeps the ratio."""
    c = {
        "total_amount": "50.00",
        "tax_amount": None,
        "shipping_amount": None,
        "products": [{"id": "A", "price": "40", "quantity": 1}, {"id": "B", "price": "20"}],
    }
    _, profile = process(purchase(commerce=c), None, CONFIG, NOW)
    result, _ = process(refund("evt-r1", [{"id": "B"}]), profile, CONFIG, NOW)
    assert send(result).body["total"] == 3333  # 5000 * 4000 / 6000, half-even


def test_refund_replay_changes_nothing() -> None:
    """The same refund event again: the same state re-sent (the create, in case that never
    reached Button; answered 409, it is followed by the first request, the update), profile
    unchanged."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    first, after = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), profile, CONFIG, NOW)
    again, unchanged = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), after, CONFIG, NOW)
    assert isinstance(again, Send)
    assert (again.request.action, again.follow_up) == (Action.CREATE, send(first))
    assert unchanged is None


@pytest.mark.parametrize(
    ("products", "reason"),
    [
        ([{"id": "NOPE"}], "refund_item_not_in_order"),
        ([{"id": "SKU-RED-M", "quantity": 3}], "refund_exceeds_quantity"),
    ],
)
def test_invalid_partial_refunds_are_rejected(products: list[dict[str, Any]], reason: str) -> None:
    """Refunds that do not fit the stored order are rejected, not guessed; kept in the ledger
    as not applying, each replay of one is rejected again, with the same reason and detail."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    result, kept = process(refund("evt-r1", products), profile, CONFIG, NOW)
    assert isinstance(result, Reject)
    assert reason == result.reason
    replayed, unchanged = process(refund("evt-r1", products), kept, CONFIG, NOW)
    assert (replayed, unchanged) == (result, None)


# --- the refund cap (MAX_REFUNDS_PER_ORDER) never blocks a refund that ends in a cancel ---------

E15 = "E15-F1"
"""The sandbox order of the fault: 1000.00 (A x100 at 10.00), then 64 refunds of 0.10."""


def _e15_after_64_refunds() -> Profile:
    """E15-F1 bought, then refunded 0.10 at a time 64 times: Button holds 99360 (the cap)."""
    bought = {
        "transaction_id": E15,
        "total_amount": "1000.00",
        "tax_amount": None,
        "shipping_amount": None,
        "products": [{"id": "A", "price": "10.00", "quantity": 100}],
    }
    result, profile = process(purchase(commerce=bought), None, CONFIG, NOW)
    assert send(result).body["total"] == 100000
    for n in range(1, MAX_REFUNDS_PER_ORDER + 1):
        partial = refund(f"evt-r{n:02d}", transaction_id=E15, total_amount="0.10")
        result, profile = process(partial, profile, CONFIG, NOW)
        assert send(result).action == Action.UPDATE
    assert send(result).body["total"] == 99360
    assert profile is not None
    assert len(profile.order(E15).refunds) == 64  # type: ignore[union-attr]
    return profile


@pytest.mark.parametrize(
    "whole",
    [
        {},  # no products and no amount: the whole order
        {"total_amount": "0"},  # revenue 0: a refund that names only its transaction
        {"products": [{"id": "A", "quantity": 100}]},  # every remaining unit
        {"total_amount": "993.60"},  # an amount of the remaining total
        {"total_amount": "1000.00"},  # an amount above it
    ],
    ids=["whole-order", "revenue-0", "every-unit", "remaining-amount", "above-remaining"],
)
def test_a_refund_beyond_the_cap_that_cancels_is_a_cancel(whole: dict[str, Any]) -> None:
    """Fault A, seen at the sandbox: after 64 partial refunds the whole-order refund (and one of
    all 100 remaining units) was dead-lettered ``too_many_refunds``, Button stayed at 99360, and
    a replay was rejected again. The cap bounds the refunds a live order remembers; a cancel ends
    the order (no later refund is recorded), so it is never blocked by it."""
    profile = _e15_after_64_refunds()
    result, after = process(refund("evt-r65", transaction_id=E15, **whole), profile, CONFIG, NOW)
    request = send(result)
    assert (request.action, request.method, request.path) == (
        Action.CANCEL,
        "DELETE",
        "/v1/order/E15-F1",
    )
    assert after is not None
    order = after.order(E15)
    assert order is not None
    assert order.status is OrderStatus.CANCELLED
    assert len(order.refunds) == MAX_REFUNDS_PER_ORDER + 1  # the cancel's own, and no more

    # A replay of the cancel (a crash before its offset was stored) sends it again.
    again, unchanged = process(refund("evt-r65", transaction_id=E15, **whole), after, CONFIG, NOW)
    assert again == result
    assert unchanged is None
    # A later refund of the cancelled order is the cancel again and records nothing.
    later, unchanged = process(refund("evt-r66", transaction_id=E15), after, CONFIG, NOW)
    assert send(later).action == Action.CANCEL
    assert unchanged is None


@pytest.mark.parametrize(
    "partial",
    [
        {"total_amount": "0.10"},
        {"products": [{"id": "A", "quantity": 1}]},
        {"products": [{"id": "A", "quantity": 99}]},  # one unit stays
    ],
    ids=["amount", "one-unit", "all-but-one-unit"],
)
def test_a_partial_refund_beyond_the_cap_is_still_rejected(partial: dict[str, Any]) -> None:
    """A 65th refund that leaves the order open would be one more refund remembered: it is
    dead-lettered ``too_many_refunds`` (nothing recorded, Button keeps 99360)."""
    profile = _e15_after_64_refunds()
    result, after = process(refund("evt-r65", transaction_id=E15, **partial), profile, CONFIG, NOW)
    assert isinstance(result, Reject)
    assert (result.reason, result.detail) == (
        "too_many_refunds",
        "order 'E15-F1' has 64 refunds already",
    )
    assert after is None


def _64_held_refunds_discarded() -> tuple[Profile, Send]:
    """64 refunds in EUR held before the order's purchase in USD arrives: none fits it, each is
    discarded (``refund_currency_mismatch``) and the order is created at its full 59.98."""
    profile: Profile | None = None
    for n in range(1, MAX_REFUNDS_PER_ORDER + 1):
        eur = refund(f"evt-h{n:02d}", currency_code="EUR", total_amount="0.10")
        held, profile = process(eur, profile, CONFIG, NOW)
        assert isinstance(held, Read)
    created, profile = process(purchase(), profile, CONFIG, NOW)
    assert isinstance(created, Send)
    assert send(created).body["total"] == 5998
    assert len(created.discarded) == MAX_REFUNDS_PER_ORDER
    assert profile is not None
    return profile, created


def test_discarded_held_refunds_do_not_count_toward_the_refund_cap() -> None:
    """The break trial: refunds held for their purchase and discarded because they did not fit
    it still took slots of the cap, so the order's first real refund was rejected
    ``too_many_refunds``. Only refunds that apply count: it is applied."""
    profile, _ = _64_held_refunds_discarded()
    result, after = process(refund("evt-r1", total_amount="1.00"), profile, CONFIG, NOW)
    request = send(result)
    assert (request.action, request.body["total"]) == (Action.UPDATE, 5898)
    assert after is not None


def test_refunds_that_apply_are_still_capped_beside_discarded_ones() -> None:
    """Beside the 64 discarded, 64 refunds apply; a 65th that applies and leaves the order live
    is rejected ``too_many_refunds``, naming the refunds that apply."""
    profile, _ = _64_held_refunds_discarded()
    for n in range(1, MAX_REFUNDS_PER_ORDER + 1):
        result, changed = process(
            refund(f"evt-r{n:02d}", total_amount="0.01"), profile, CONFIG, NOW
        )
        assert send(result).action == Action.UPDATE
        assert changed is not None
        profile = changed
    result, after = process(refund("evt-r65", total_amount="0.01"), profile, CONFIG, NOW)
    assert result == Reject("too_many_refunds", "order 'ORD-100045' has 64 refunds already")
    assert after is None


TWO_LINES = {
    "total_amount": "25.00",
    "tax_amount": None,
    "shipping_amount": None,
    "products": [{"id": "A", "price": "10.00", "quantity": 2}, {"id": "B", "price": "5.00"}],
}
"""ORD-100045 as A x2 at 10.00 and B at 5.00."""


def _64_refunds_that_do_not_apply() -> Profile:
    """ORD-100045 (``TWO_LINES``) bought, then 64 refunds of a product it does not have: each
    dead-lettered ``refund_item_not_in_order`` and kept in the ledger as not applying."""
    _, profile = process(purchase(commerce=TWO_LINES), None, CONFIG, NOW)
    for n in range(1, MAX_REFUNDS_PER_ORDER + 1):
        result, profile = process(refund(f"evt-x{n:02d}", [{"id": "NOPE"}]), profile, CONFIG, NOW)
        assert isinstance(result, Reject)
        assert result.reason == "refund_item_not_in_order"
    assert profile is not None
    assert len(profile.order("ORD-100045").refunds) == MAX_REFUNDS_PER_ORDER  # type: ignore[union-attr]
    return profile


def test_a_refund_that_does_not_apply_beyond_64_kept_is_rejected_and_not_kept() -> None:
    """The break trial: refunds kept as not applying took no slot, so a producer sending bad
    refunds grew the profile without bound. The 65th is dead-lettered ``too_many_refunds``,
    naming why, and not kept (a corrected purchase will not apply it); its replay is rejected
    the same way. A refund that applies is still taken."""
    profile = _64_refunds_that_do_not_apply()
    nope = refund("evt-x65", [{"id": "NOPE"}])
    result, after = process(nope, profile, CONFIG, NOW)
    assert result == Reject(
        "too_many_refunds",
        "order 'ORD-100045' keeps 64 refunds that do not apply already; this one does not apply"
        " either (refund_item_not_in_order: refunded product 'NOPE' is not in the order): it is"
        " not kept",
    )
    assert after is None
    assert process(nope, profile, CONFIG, NOW) == (result, None)

    applies, changed = process(refund("evt-r1", [{"id": "B"}]), profile, CONFIG, NOW)
    assert (send(applies).action, send(applies).body["total"]) == (Action.UPDATE, 2000)
    assert changed is not None


def test_a_refund_that_does_not_apply_beside_64_discarded_held_ones_is_not_kept() -> None:
    """Held refunds the purchase discarded are kept as not applying too: beside 64 of them, a
    refund in another currency is dead-lettered ``too_many_refunds`` and not kept."""
    profile, _ = _64_held_refunds_discarded()
    eur = refund("evt-x65", currency_code="EUR", total_amount="0.10")
    result, after = process(eur, profile, CONFIG, NOW)
    assert isinstance(result, Reject)
    assert result.reason == "too_many_refunds"
    assert "refund_currency_mismatch" in result.detail
    assert after is None


def test_a_refund_that_would_make_a_65th_stop_applying_is_rejected_and_not_kept() -> None:
    """Beside 64 refunds that do not apply, R1 (A x1) applies; R0 (A x2), dated before it,
    would leave R1 no unit of A: a 65th refund that does not apply. R0 is dead-lettered
    ``too_many_refunds`` and not kept: Button keeps the state R1 left."""
    profile = _64_refunds_that_do_not_apply()
    one, profile_r1 = process(refund("evt-r1", [{"id": "A"}]), profile, CONFIG, NOW)
    assert send(one).body["total"] == 1500
    assert profile_r1 is not None
    earlier = event(
        event_id="evt-r0",
        event_type="REFUND",
        event_time="2024-05-01T14:00:00Z",
        commerce={
            "action": "REFUND",
            "transaction_id": "ORD-100045",
            "products": [{"id": "A", "quantity": 2}],
        },
    )
    result, after = process(earlier, profile_r1, CONFIG, NOW)
    assert result == Reject(
        "too_many_refunds",
        "order 'ORD-100045' keeps 64 refunds that do not apply already; with this one 65 would"
        " not apply: it is not kept",
    )
    assert after is None


def _emptied_before_anything_was_sent(held: int) -> Profile:
    """``held`` refunds of 0.10 held before their purchase (1.00, no lines): they leave nothing
    of it, so nothing is sent (skip ``order_already_cancelled``) and the order stays pending,
    its purchase known, with ``held`` refunds."""
    profile: Profile | None = None
    for n in range(1, held + 1):
        tenth = refund(f"evt-h{n:02d}", currency_code="USD", total_amount="0.10")
        result, profile = process(tenth, profile, CONFIG, NOW)
        assert isinstance(result, Read)
    bought = {"total_amount": "1.00", "tax_amount": None, "shipping_amount": None}
    result, profile = process(purchase(commerce=bought), profile, CONFIG, NOW)
    assert result == Skip("order_already_cancelled")
    assert profile is not None
    order = profile.order("ORD-100045")
    assert order is not None
    assert (order.status, len(order.refunds)) == (OrderStatus.PENDING, held)
    return profile


@pytest.mark.parametrize("whole", [{}, {"total_amount": "0"}], ids=["whole-order", "revenue-0"])
def test_a_whole_order_refund_beyond_the_cap_of_a_pending_order_is_recorded(
    whole: dict[str, Any],
) -> None:
    """The break trial: a 65th refund of a pending order (its purchase known, its 64 held
    refunds leave nothing, nothing sent) was rejected ``too_many_refunds`` although it names
    the whole order: the order ends cancelled whatever comes, so it is recorded (nothing is
    sent: nothing ever was), and its replay is the same skip, never a dead letter."""
    profile = _emptied_before_anything_was_sent(MAX_REFUNDS_PER_ORDER)
    result, after = process(refund("evt-w", **whole), profile, CONFIG, NOW)
    assert result == Skip("order_already_cancelled")
    assert after is not None
    order = after.order("ORD-100045")
    assert order is not None
    assert len(order.refunds) == MAX_REFUNDS_PER_ORDER + 1
    assert order.refund("evt-w") is not None
    assert process(refund("evt-w", **whole), after, CONFIG, NOW) == (result, None)


def test_any_refund_of_a_pending_order_holding_a_whole_order_refund_is_never_capped() -> None:
    """A pending order whose ledger holds a whole-order refund is cancelled for good: a 65th
    refund of it (partial) is not rejected ``too_many_refunds`` but recorded; beyond 65 refunds
    in all nothing more is recorded (nothing is left to refund), and nothing is rejected."""
    profile = _emptied_before_anything_was_sent(MAX_REFUNDS_PER_ORDER - 1)
    result, profile_w = process(refund("evt-w"), profile, CONFIG, NOW)
    assert result == Skip("order_already_cancelled")
    assert profile_w is not None
    partial = refund("evt-r65", currency_code="USD", total_amount="0.10")
    result, after = process(partial, profile_w, CONFIG, NOW)
    assert result == Skip("order_already_cancelled")
    assert after is not None
    order = after.order("ORD-100045")
    assert order is not None
    assert len(order.refunds) == MAX_REFUNDS_PER_ORDER + 1
    beyond = refund("evt-r66", currency_code="USD", total_amount="0.10")
    assert process(beyond, after, CONFIG, NOW) == (Skip("order_already_cancelled"), None)


def test_a_whole_order_refund_beyond_the_held_cap_cancels_and_its_replay_cancels_again() -> None:
    """An order whose purchase is not known, 64 partial refunds held: a whole-order refund needs
    no read (it cancels whatever Button holds), is never capped, and is sent as the ``DELETE``;
    its replay sends it again."""
    profile: Profile | None = None
    for n in range(1, MAX_REFUNDS_PER_ORDER + 1):
        tenth = refund(f"evt-h{n:02d}", currency_code="USD", total_amount="0.10")
        _, profile = process(tenth, profile, CONFIG, NOW)
    result, after = process(refund("evt-w"), profile, CONFIG, NOW)
    assert send(result).action == Action.CANCEL
    assert process(refund("evt-w"), after, CONFIG, NOW) == (result, None)


# --- a refund that leaves nothing is a whole-order refund: a cancel -----------------------------

DISCOUNTED = {
    "total_amount": "10.00",
    "tax_amount": None,
    "shipping_amount": None,
    "products": [
        {"id": "DISC", "price": "-5.00", "quantity": 1},
        {"id": "Y", "price": "15.00", "quantity": 1},
    ],
}
"""The sandbox order of fault B: 10.00, a discount line DISC at -5.00 and Y at 15.00."""


def _bought(commerce: dict[str, Any], total: int) -> Profile:
    result, profile = process(purchase(commerce=commerce), None, CONFIG, NOW)
    assert send(result).body["total"] == total
    assert profile is not None
    return profile


def _with(products: list[dict[str, Any]], total: str) -> dict[str, Any]:
    return {
        "total_amount": total,
        "tax_amount": None,
        "shipping_amount": None,
        "products": products,
    }


@pytest.mark.parametrize(
    ("commerce", "total", "refunded"),
    [
        # Fault B: every unit bought is returned, only the discount line is left.
        (DISCOUNTED, 1000, {"products": [{"id": "Y"}]}),
        # ... and a free line beside it: no line with a positive amount is left.
        (
            _with(
                [
                    {"id": "DISC", "price": "-5.00", "quantity": 1},
                    {"id": "GIFT", "price": "0", "quantity": 1},
                    {"id": "Y", "price": "15.00", "quantity": 1},
                ],
                "10.00",
            ),
            1000,
            {"products": [{"id": "Y"}]},
        ),
        # The same refund carrying its amount: the whole total, or less of it.
        (DISCOUNTED, 1000, {"products": [{"id": "Y"}], "total_amount": "10.00"}),
        (DISCOUNTED, 1000, {"products": [{"id": "Y"}], "total_amount": "8.00"}),
        # A line with a positive amount is left, worth less than the discount: the lines'
        # remaining value is -2.00.
        (
            _with(
                [
                    {"id": "DISC", "price": "-5.00", "quantity": 1},
                    {"id": "Y", "price": "15.00", "quantity": 1},
                    {"id": "Z", "price": "3.00", "quantity": 1},
                ],
                "13.00",
            ),
            1300,
            {"products": [{"id": "Y"}]},
        ),
        # ... with an order-level coupon besides (the total scaled to the lines left: below 0).
        (
            _with(
                [
                    {"id": "DISC", "price": "-5.00", "quantity": 1},
                    {"id": "Y", "price": "15.00", "quantity": 1},
                    {"id": "Z", "price": "3.00", "quantity": 1},
                ],
                "9.00",
            ),
            900,
            {"products": [{"id": "Y"}]},
        ),
        # Products refunded with an amount of exactly the remaining total, a unit left.
        (
            _with([{"id": "SKU-RED-M", "price": "29.99", "quantity": 2}], "59.98"),
            5998,
            {"products": [{"id": "SKU-RED-M"}], "total_amount": "59.98"},
        ),
        # An order-level coupon: the total scaled to the line left rounds to 0.
        (
            _with(
                [{"id": "A", "price": "10.00", "quantity": 1}, {"id": "B", "price": "40.00"}],
                "0.01",
            ),
            1,
            {"products": [{"id": "B"}]},
        ),
    ],
    ids=[
        "only-a-discount-left",
        "only-a-discount-and-a-free-line-left",
        "only-a-discount-left-amount-of-the-total",
        "only-a-discount-left-amount-below-the-total",
        "lines-left-worth-below-zero",
        "lines-left-worth-below-zero-with-a-coupon",
        "amount-of-the-remaining-total-a-unit-left",
        "coupon-total-scaled-to-zero",
    ],
)
def test_a_refund_that_leaves_nothing_cancels(
    commerce: dict[str, Any], total: int, refunded: dict[str, Any]
) -> None:
    """Fault B, seen at the sandbox: refunding Y, the only product of an order with a discount
    line, was dead-lettered ``negative_total`` ("order total is negative: -500 minor units") and
    Button stayed at 1000. A refund after which no line with a positive amount is left, or
    whose remaining total (from its amount, or the lines left) is 0 or below, leaves nothing:
    like a refund of every remaining unit, it cancels the order."""
    profile = _bought(commerce, total)
    fields: dict[str, Any] = {"tax_amount": None, "shipping_amount": None, **refunded}
    result, after = process(refund("evt-r1", **fields), profile, CONFIG, NOW)
    request = send(result)
    assert (request.action, request.method, request.path) == (
        Action.CANCEL,
        "DELETE",
        "/v1/order/ORD-100045",
    )
    assert after is not None
    assert after.order("ORD-100045").status is OrderStatus.CANCELLED  # type: ignore[union-attr]


def test_a_refund_that_leaves_nothing_arriving_first_never_creates_the_order() -> None:
    """The refund of Y held before its purchase (Button does not know the order): once the
    purchase arrives the order is cancelled, never created, as for every unit refunded. Nothing
    was sent, so the order stays pending (not deleted at Button): a corrected purchase is
    judged again."""
    held, profile = process(refund("evt-r1", [{"id": "Y"}]), None, CONFIG, NOW)
    assert isinstance(held, Read)
    result, after = process(purchase(commerce=DISCOUNTED), profile, CONFIG, NOW)
    assert result == Skip("order_already_cancelled")
    assert after is not None
    assert after.order("ORD-100045").status is OrderStatus.PENDING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("commerce", "total", "refunded", "left"),
    [
        # A free order (a 100 % coupon): the refund takes nothing from Button's total (0), a
        # unit with a positive amount stays: an update, as before.
        (
            _with(
                [{"id": "A", "price": "40.00", "quantity": 1}, {"id": "B", "price": "20.00"}],
                "0",
            ),
            0,
            {"products": [{"id": "B"}]},
            (0, [("A", 1)]),
        ),
        # Lines without value (prices of 0): leaving them is not "nothing left"; the amount
        # decides, as before.
        (
            _with([{"id": "A", "price": "0", "quantity": 2}], "50.00"),
            5000,
            {"products": [{"id": "A"}], "total_amount": "20.00"},
            (3000, [("A", 1)]),
        ),
        # The amount-only rules are unchanged: less than the total is an update.
        (DISCOUNTED, 1000, {"total_amount": "9.99"}, (1, [("DISC", 1), ("Y", 1)])),
    ],
    ids=["free-order", "lines-without-value", "amount-below-the-total"],
)
def test_a_refund_that_leaves_something_is_still_an_update(
    commerce: dict[str, Any], total: int, refunded: dict[str, Any], left: tuple[int, Any]
) -> None:
    """What the cancel rule does not reach: the remaining total and lines are sent."""
    profile = _bought(commerce, total)
    fields: dict[str, Any] = {"tax_amount": None, "shipping_amount": None, **refunded}
    result, _ = process(refund("evt-r1", **fields), profile, CONFIG, NOW)
    request = send(result)
    assert request.action == Action.UPDATE
    items = [(i["identifier"], i["quantity"]) for i in request.body["line_items"]]
    assert (request.body["total"], items) == left


def test_products_refunded_with_an_amount_above_the_remaining_total_are_rejected() -> None:
    """Unchanged: a refund naming products with an amount above what remains is not guessed
    into a cancel (``refund_exceeds_total``); an amount-only one is the whole order."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    fields = {"tax_amount": None, "shipping_amount": None, "total_amount": "60.00"}
    result, after = process(refund("evt-r1", [{"id": "SKU-RED-M"}], **fields), profile, CONFIG, NOW)
    assert isinstance(result, Reject)
    assert result.reason == "refund_exceeds_total"
    _kept_not_applying(profile, after, "evt-r1")


# --- a refund returns money: it never raises what Button counts ---------------------------------

WITH_X = _with(
    [
        {"id": "X", "price": "3.00", "quantity": 1},
        {"id": "DISC", "price": "-5.00", "quantity": 1},
        {"id": "Y", "price": "15.00", "quantity": 1},
    ],
    "13.00",
)
"""13.00: X at 3.00, a discount line DISC at -5.00, Y at 15.00."""


@pytest.mark.parametrize(
    ("commerce", "total", "refunded", "detail"),
    [
        # The break trial's order: only the discount line refunded, Button went to 15.00.
        (
            DISCOUNTED,
            1000,
            {"products": [{"id": "DISC"}]},
            "refunded lines 'DISC' x1 are worth -500 minor units together: the refund would"
            " raise the order's total from 1000 to 1500",
        ),
        # A product with a larger discount: -2.00 together, 13.00 would become 15.00.
        (
            WITH_X,
            1300,
            {"products": [{"id": "X"}, {"id": "DISC"}]},
            "refunded lines 'X' x1, 'DISC' x1 are worth -200 minor units together: the refund"
            " would raise the order's total from 1300 to 1500",
        ),
        # An order-level coupon besides (9.00 for lines of 13.00): the total scaled to the lines
        # left would rise too.
        (
            _with(WITH_X["products"], "9.00"),
            900,
            {"products": [{"id": "DISC"}]},
            "refunded lines 'DISC' x1 are worth -500 minor units together: the refund would"
            " raise the order's total from 900 to 1246",
        ),
        # One unit of a discount line of two: the line's total would rise from -5.00 to -2.50.
        (
            _with(
                [
                    {"id": "A", "price": "10.00", "quantity": 1},
                    {"id": "DISC", "price": "-2.50", "quantity": 2},
                ],
                "5.00",
            ),
            500,
            {"products": [{"id": "DISC", "quantity": 1}]},
            "refunded lines 'DISC' x1 are worth -250 minor units together: the refund would"
            " raise the order's total from 500 to 750",
        ),
        # With an amount the total falls, but the line items sent would be worth more: the
        # discount is taken back from the lines Button rates.
        (
            DISCOUNTED,
            1000,
            {"products": [{"id": "DISC"}], "total_amount": "1.00"},
            "refunded lines 'DISC' x1 are worth -500 minor units together: the refund would"
            " raise the order's line items from 1000 to 1500",
        ),
    ],
    ids=[
        "only-the-discount",
        "a-product-and-a-larger-discount",
        "the-discount-with-a-coupon",
        "a-unit-of-a-discount-line",
        "the-discount-with-an-amount",
    ],
)
def test_a_refund_that_would_raise_the_order_is_rejected_naming_its_lines(
    commerce: dict[str, Any], total: int, refunded: dict[str, Any], detail: str
) -> None:
    """A refund returns money to the customer: one whose lines are worth less than nothing
    together (a discount taken back) would raise what Button counts as commissionable. The break
    trial's refund of the discount line alone updated Button from 10.00 to 15.00; it is
    rejected ``refund_raises_total`` (dead-lettered, kept in the ledger as a refund that does
    not apply), naming the lines."""
    profile = _bought(commerce, total)
    fields: dict[str, Any] = {"tax_amount": None, "shipping_amount": None, **refunded}
    result, after = process(refund("evt-r1", **fields), profile, CONFIG, NOW)
    assert result == Reject("refund_raises_total", detail)
    _kept_not_applying(profile, after, "evt-r1")


def _kept_not_applying(before: Profile | None, after: Profile | None, event_id: str) -> None:
    """``after`` is ``before`` with the rejected refund ``event_id`` recorded in its order's
    ledger, and nothing else of the order changed (nothing was sent)."""
    assert before is not None
    assert after is not None
    old, new = before.order("ORD-100045"), after.order("ORD-100045")
    assert old is not None
    assert new is not None
    assert new.refund(event_id) is not None
    assert replace(new, refunds=old.refunds, touched_ms=old.touched_ms) == old


def test_a_product_refunded_with_its_smaller_discount_is_an_update() -> None:
    """Y (15.00) refunded with the discount that came with it (-5.00): 10.00 returned, an
    update from 13.00 to 3.00, as before."""
    profile = _bought(WITH_X, 1300)
    fields = {"tax_amount": None, "shipping_amount": None}
    result, _ = process(
        refund("evt-r1", [{"id": "Y"}, {"id": "DISC"}], **fields), profile, CONFIG, NOW
    )
    request = send(result)
    items = [(i["identifier"], i["quantity"]) for i in request.body["line_items"]]
    assert (request.action, request.body["total"], items) == (Action.UPDATE, 300, [("X", 1)])


def test_a_held_refund_that_would_raise_the_order_is_discarded_by_its_purchase() -> None:
    """The refund of the discount line alone held before its purchase: the order is created at
    10.00 without it, and the purchase reports it discarded (``refund_raises_total``)."""
    held, profile = process(refund("evt-r1", [{"id": "DISC"}]), None, CONFIG, NOW)
    assert isinstance(held, Read)
    result, _ = process(purchase(commerce=DISCOUNTED), profile, CONFIG, NOW)
    assert send(result).body["total"] == 1000
    assert isinstance(result, Send)
    assert [(d.event_id, d.reason) for d in result.discarded] == [("evt-r1", "refund_raises_total")]


def test_purchase_replay_resends_stored_create() -> None:
    """A replayed purchase re-sends its create; after a partial refund, the refunded state."""
    _, profile = process(purchase(btn_ref=TOKEN), None, CONFIG, NOW)
    _, after = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), profile, CONFIG, NOW)
    result, unchanged = process(purchase(), after, CONFIG, NOW)
    body = send(result).body
    assert (send(result).action, body["total"], body["btn_ref"]) == (Action.CREATE, 2999, TOKEN)
    assert unchanged is None


def test_purchase_replay_after_a_cancel_resends_the_create() -> None:
    """Redriving a dead-lettered create must reach Button before the cancel replayed after it."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    _, after = process(refund("evt-r1"), profile, CONFIG, NOW)
    result, unchanged = process(purchase(), after, CONFIG, NOW)
    assert (send(result).action, unchanged) == (Action.CREATE, None)


def test_purchase_of_cancelled_order_is_skipped() -> None:
    """A cancelled order is never resurrected by a duplicate purchase."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    _, after = process(refund("evt-r1"), profile, CONFIG, NOW)
    result, _ = process(purchase(event_id="evt-9"), after, CONFIG, NOW)
    assert Skip("order_already_cancelled") == result


@pytest.mark.parametrize(
    ("event_type", "reason"),
    [
        ("APP_OPEN", "profile_only"),
        ("PAGE_VIEW", "profile_only"),
        ("SESSION_START", "profile_only"),
        ("CUSTOM", "not_an_order"),
        ("SOMETHING_NEW", "unknown_event_type"),
    ],
)
def test_other_events_are_skipped_with_a_reason(event_type: str, reason: str) -> None:
    """Only purchases and refunds reach Button."""
    result, _ = process(event(event_type=event_type), None, CONFIG, NOW)
    assert Skip(reason) == result


def test_development_events_are_skipped_entirely() -> None:
    """Button has no test mode: DEVELOPMENT events are skipped and teach the profile nothing."""
    result, profile = process(purchase(environment="DEVELOPMENT", btn_ref=TOKEN), None, CONFIG, NOW)
    assert (Skip("development_event"), None) == (result, profile)


def test_unchanged_profile_is_reported_as_none() -> None:
    """An event that teaches nothing returns None for the profile."""
    result, profile = process(event(event_type="CUSTOM"), None, CONFIG, NOW)
    assert (Skip("not_an_order"), None) == (result, profile)


def test_path_segments_are_quoted() -> None:
    """Order ids with reserved characters stay one path segment."""
    assert order_path("A/B?# %") == "/v1/order/A%2FB%3F%23%20%25"
    assert order_path("..") == "/v1/order/%2E%2E"


def test_purchase_date_is_utc_with_z() -> None:
    """purchase_date is ISO-8601 UTC with Z."""
    assert purchase_date(1_714_572_202_999) == "2024-05-01T14:03:22Z"


def test_application_ids_are_validated() -> None:
    """Only app-... ids for known platforms are accepted."""
    config = MappingConfig(application_ids={"ios": "app-1234567890abcdef"})
    assert config.application_id("IOS") == "app-1234567890abcdef"
    with pytest.raises(ValueError, match="application id"):
        MappingConfig(application_ids={"ios": "sk-secret"})
    with pytest.raises(ValueError, match="platform"):
        MappingConfig(application_ids={"tv": "app-1"})


# --- properties --------------------------------------------------------------------------------

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
SHORT_IDS = st.text(PRINTABLE, min_size=1, max_size=20)
ORDER_IDS = st.one_of(
    SHORT_IDS,
    SHORT_IDS,
    SHORT_IDS,
    st.text(PRINTABLE, min_size=250, max_size=260),
    st.text(min_size=1, max_size=10),
)
AMOUNTS = st.decimals(min_value=0, max_value=10**12, places=6, allow_nan=False).map(str)
PRICES = st.decimals(min_value=-(10**5), max_value=10**6, places=6, allow_nan=False).map(str)
CURRENCIES = st.sampled_from(["USD", "JPY", "KWD", "CLF", "EUR", "XAU", "ABC", "BHD"])
PRODUCTS = st.lists(
    st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=8), "quantity": st.integers(0, 5)},
        optional={
            "price": PRICES,
            "name": st.text(max_size=10),
            "category": st.text(max_size=10),
            "sku": st.text(max_size=10),
            "attributes": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        },
    ),
    max_size=4,
)
TIMES = st.integers(min_value=0, max_value=4_102_444_800_000)


@st.composite
def purchase_events(draw: st.DrawFn) -> CommerceEvent:
    commerce = {
        "action": "PURCHASE",
        "transaction_id": draw(ORDER_IDS),
        "currency_code": draw(CURRENCIES),
        "total_amount": draw(st.none() | AMOUNTS | AMOUNTS),
        "tax_amount": draw(st.none() | st.just("0") | AMOUNTS),
        "shipping_amount": draw(st.none() | st.just("0") | AMOUNTS),
        "products": draw(PRODUCTS),
    }
    try:
        return event_from_json(raw_purchase(draw, commerce))
    except DecodeError:  # the event model refuses it before the mapper sees it
        reject()


def raw_purchase(draw: st.DrawFn, commerce: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": draw(st.text(min_size=1, max_size=5)),
        "event_type": "PURCHASE",
        "event_time": draw(TIMES),
        "user_key": "u",
        "btn_ref": draw(st.none() | st.text(max_size=20) | st.just(TOKEN)),
        "page_url": draw(st.none() | st.text(max_size=40)),
        "user_identities": {
            "customer_id": draw(st.none() | st.text(max_size=300)),
            "email": draw(st.none() | st.emails() | st.text(max_size=20)),
        },
        "device_info": {
            "ios_advertising_id": draw(st.none() | st.text(max_size=40)),
            "android_advertising_id": draw(st.none() | st.text(max_size=40)),
            "limit_ad_tracking": draw(st.none() | st.booleans()),
        },
        "commerce": commerce,
    }


def assert_valid(result: object) -> None:
    if not isinstance(result, Send):
        return
    request = result.request
    assert validate_order_id(request.order_id) == []
    if request.action is Action.CREATE:
        assert validate_create(request.body) == [], request.body
    elif request.action is Action.UPDATE:
        assert validate_update(request.body, request.order_id) == [], request.body
    else:
        assert request.body is None
    if request.action is not Action.CREATE:
        assert request.path == order_path(request.order_id)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(purchase_events())
def test_every_create_passes_the_sandbox_validation(evt: CommerceEvent) -> None:
    """Whatever the purchase, the mapper emits a valid create or a named Reject."""
    result, _ = process(evt, None, CONFIG, NOW)
    assert isinstance(result, Send | Reject)
    assert_valid(result)


REFUND_PRODUCTS = st.lists(
    st.fixed_dictionaries({"id": st.sampled_from(["A", "B", "C"]), "quantity": st.integers(0, 3)}),
    max_size=3,
)


@st.composite
def order_histories(draw: st.DrawFn) -> tuple[CommerceEvent, list[CommerceEvent]]:
    products = [
        {"id": pid, "price": draw(PRICES.filter(lambda p: Decimal(p) >= 0)), "quantity": q}
        for pid, q in (("A", draw(st.integers(1, 3))), ("B", draw(st.integers(1, 3))))
    ]
    total = draw(st.none() | st.decimals(min_value=0, max_value=10**6, places=2).map(str))
    buy = purchase(
        commerce={
            "total_amount": total,
            "products": products,
            "tax_amount": None,
            "shipping_amount": None,
        }
    )
    refunds = []
    for i in range(draw(st.integers(1, 4))):
        amount = draw(st.none() | st.decimals(min_value=0, max_value=10**4, places=2).map(str))
        commerce: dict[str, Any] = {
            "action": "REFUND",
            "transaction_id": "ORD-100045",
            "products": draw(REFUND_PRODUCTS),
            "total_amount": amount,
        }
        refunds.append(event(event_id=f"r{i}", event_type="REFUND", commerce=commerce))
    return buy, refunds


class FakeButton:
    """Button's documented order semantics, just enough to compare final states."""

    def __init__(self) -> None:
        self.orders: dict[str, Any] = {}

    def apply(self, result: object) -> None:
        if not isinstance(result, Send):
            return
        request = result.request
        if request.action is Action.CREATE:
            self.orders.setdefault(request.order_id, request.body)  # a duplicate is a 409
        elif request.action is Action.UPDATE:
            if request.order_id in self.orders and self.orders[request.order_id] != "deleted":
                self.orders[request.order_id] = request.body
        else:
            self.orders[request.order_id] = "deleted"


def run(events: list[CommerceEvent]) -> tuple[FakeButton, Profile | None]:
    profile: Profile | None = None
    button = FakeButton()
    for evt in events:
        result, new = process(evt, profile, CONFIG, NOW)
        assert_valid(result)
        button.apply(result)
        if new is not None:
            profile = new
    return button, profile


def totals(button: FakeButton) -> object:
    state = button.orders.get("ORD-100045")
    if not isinstance(state, dict):
        return state
    return (state["total"], [(i["identifier"], i["quantity"]) for i in state.get("line_items", [])])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(order_histories(), st.lists(st.tuples(st.integers(0, 3), st.integers(0, 8)), max_size=6))
def test_replaying_refunds_gives_the_same_order(
    history: tuple[CommerceEvent, list[CommerceEvent]], replays: list[tuple[int, int]]
) -> None:
    """However often and wherever refunds are replayed, the order ends in the same state."""
    buy, refunds = history
    once_button, once = run([buy, *refunds])
    replayed: list[CommerceEvent] = [buy, *refunds]
    for which, where in replays:
        evt = refunds[which % len(refunds)]
        first = replayed.index(evt)
        replayed.insert(min(len(replayed), first + 1 + where), evt)
    button, profile = run(replayed)
    assert once is not None
    assert profile is not None
    assert once.order("ORD-100045") == profile.order("ORD-100045")
    assert totals(once_button) == totals(button)


def test_timestamps_in_the_future_or_far_past_still_format() -> None:
    """purchase_date pads years to four digits."""
    assert purchase_date(-62_135_596_800_000) == "0001-01-01T00:00:00Z"


def test_purchase_date_is_the_second_the_moment_falls_in() -> None:
    """Milliseconds are dropped, before the epoch too (the second that contains the moment)."""
    assert purchase_date(-1) == "1969-12-31T23:59:59Z"
    assert purchase_date(0) == "1970-01-01T00:00:00Z"
    assert purchase_date(253_402_300_799_999) == "9999-12-31T23:59:59Z"
    assert timedelta(0) < timedelta(1)


def test_zeroed_id_forgets_the_remembered_one() -> None:
    """A device now reporting an all-zero IDFA withholds it: the remembered IDFA is not used."""
    opened = event(
        event_id="evt-0",
        event_type="APP_OPEN",
        device_info={"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001"},
    )
    _, profile = process(opened, None, CONFIG, NOW)
    zero = {"ios_advertising_id": "00000000-0000-0000-0000-000000000000"}
    result, after = process(purchase(device_info=zero), profile, CONFIG, NOW)
    assert "customer" not in send(result).body
    assert after is not None
    assert after.idfa is None


def test_device_id_falls_back_to_the_profile() -> None:
    """A server-side purchase without device info uses the id remembered from the app."""
    opened = event(
        event_id="evt-0",
        event_type="APP_OPEN",
        device_info={"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001"},
    )
    _, profile = process(opened, None, CONFIG, NOW)
    result, _ = process(purchase(platform="SERVER"), profile, CONFIG, NOW)
    assert send(result).body["customer"] == {"device_id": "ABCD0001-0000-4000-8000-000000000001"}


# --- amounts that cannot be right (issue 9, row 8 and its kind) --------------------------------


def _withdrawn_currency_profile(exponent: int | None) -> Profile:
    from consumer.domain.profile import StoredLine, StoredOrder

    order = StoredOrder(
        order_id="ORD-100045",
        currency="ANG",  # withdrawn from ISO 4217 and from the iso4217 table
        purchase_ms=1_714_572_202_000,
        total=5998,
        lines=(StoredLine("SKU-RED-M", 2, "29.99"),),
        status=OrderStatus.OPEN,
        created_by="evt-1",
        refunds=(),
        btn_ref=TOKEN,
        touched_ms=1_714_572_202_000,
        exponent=exponent,
        sent_digest=1,
    )
    return Profile(orders=(order,))


def test_row_8_a_full_refund_of_an_order_whose_currency_left_the_table_cancels() -> None:
    """A cancel needs no amount: DELETE /v1/order/O, never unknown_currency."""
    result, _ = process(refund("evt-r1"), _withdrawn_currency_profile(None), CONFIG, NOW)
    assert send(result).method == "DELETE"
    assert send(result).path == order_path("ORD-100045")


def test_a_partial_refund_uses_the_exponent_fixed_at_the_purchase() -> None:
    """An order stored with its exponent is updated although its currency left the table."""
    after_refund = refund("evt-r1", [{"id": "SKU-RED-M", "quantity": 1}])
    result, _ = process(after_refund, _withdrawn_currency_profile(2), CONFIG, NOW)
    assert (send(result).action, send(result).body["total"]) == (Action.UPDATE, 2999)


def test_a_partial_refund_of_an_old_order_without_exponent_is_rejected_by_name() -> None:
    """Without a stored exponent the remaining total cannot be computed: unknown_currency."""
    after_refund = refund("evt-r1", [{"id": "SKU-RED-M", "quantity": 1}])
    result, _ = process(after_refund, _withdrawn_currency_profile(None), CONFIG, NOW)
    assert isinstance(result, Reject)
    assert result.reason == "unknown_currency"


def test_a_full_refund_in_an_unknown_currency_of_an_unknown_order_cancels() -> None:
    """The currency table is not consulted for an action that needs no amount."""
    result, _ = process(refund("evt-r1", currency_code="ZZZ"), None, CONFIG, NOW)
    assert send(result).action == Action.CANCEL


@pytest.mark.parametrize(
    ("currency", "total", "tax"),
    [("USD", "0.004", None), ("JPY", "0.4", None), ("KWD", "1.0004", "1")],
)
def test_a_non_zero_revenue_that_rounds_to_zero_is_rejected(
    currency: str, total: str, tax: str | None
) -> None:
    """Never send a total of 0 for an order that had revenue: total_below_minor_unit."""
    fields: dict[str, Any] = {"currency_code": currency, "total_amount": total, "products": []}
    fields["tax_amount"] = tax
    fields["shipping_amount"] = None
    result, profile = process(purchase(commerce=fields), None, CONFIG, NOW)
    assert isinstance(result, Reject)
    assert result.reason == "total_below_minor_unit"
    assert profile is None


def test_a_zero_revenue_order_is_still_a_zero_total() -> None:
    """A free order (revenue 0) is sent with total 0: nothing was lost in rounding."""
    fields: dict[str, Any] = {"total_amount": "0", "tax_amount": None, "shipping_amount": None}
    result, _ = process(purchase(commerce=fields), None, CONFIG, NOW)
    assert send(result).body["total"] == 0


def test_an_email_given_as_a_digest_reaches_button_once_hashed() -> None:
    """A SHA-256 digest in the email field is sent lower-cased, not dropped or hashed again."""
    digest = hashlib.sha256(b"jane@example.com").hexdigest()
    for given_as in (digest, digest.upper()):
        result, _ = process(purchase(user_identities={"email": given_as}), None, CONFIG, NOW)
        assert {"email_sha256": digest} == send(result).body["customer"]


def test_a_pasted_email_and_a_braced_idfa_reach_button_canonical() -> None:
    """The canonical forms are what the create body carries (item 4 of issue 9)."""
    result, _ = process(
        purchase(
            user_identities={"email": "\ufeffJane <mailto:Jane@Example.com>\u200b"},
            device_info={"ios_advertising_id": "{6d92078a-8246-4ba4-ae5b-76104861e7dc}"},
        ),
        None,
        CONFIG,
        NOW,
    )
    assert {
        "email_sha256": hashlib.sha256(b"jane@example.com").hexdigest(),
        "device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    } == send(result).body["customer"]


@pytest.mark.parametrize(
    ("customer_id", "sent"),
    [
        ("c" * 255, "c" * 255),  # Button's limit for its merchant strings, at the edge
        ("\u00e9" * 255, "\u00e9" * 255),  # counted in characters, not UTF-8 bytes
        ("c" * 256, None),  # over it: omitted, never truncated into another customer's id
        ("c" * 10_000, None),
        ("", None),
        ("   ", None),  # whitespace only is no id
        ("\u00a0\t", None),
        (" Cust-1\n", "Cust-1"),  # surrounding whitespace is not part of it; case is
        (" " + "c" * 255 + " ", "c" * 255),  # the limit counts the id, not its padding
    ],
)
def test_customer_id_rule(customer_id: str, sent: str | None) -> None:
    """customer.id: 1-255 characters once stripped, not blank; else omitted, order still sent."""
    result, _ = process(purchase(user_identities={"customer_id": customer_id}), None, CONFIG, NOW)
    body = send(result).body
    assert (None if sent is None else {"id": sent}) == body.get("customer")


def test_a_create_carries_the_update_that_converges_after_a_409() -> None:
    """Issue 9: a create answered 409 may find Button holding another state of the order (a
    profile lost or expired, a revised purchase created elsewhere first): the create carries the
    idempotent update of the same full state, its customer included (no ``btn_ref``), sent only
    when the create is answered 409."""
    result, _ = process(purchase(btn_ref=TOKEN), None, CONFIG, NOW)
    assert isinstance(result, Send)
    create, follow_up = result.request, result.follow_up
    assert follow_up is not None
    assert create.body is not None
    expected_body = {k: v for k, v in create.body.items() if k != "btn_ref"}
    assert (follow_up.action, follow_up.method, follow_up.path, follow_up.order_id) == (
        Action.UPDATE,
        "POST",
        order_path("ORD-100045"),
        "ORD-100045",
    )
    assert expected_body == follow_up.body
    assert validate_update(follow_up.body) == []


def test_a_replayed_create_carries_the_current_state_as_its_follow_up() -> None:
    """A replayed purchase after a partial refund: the create and its follow-up both carry the
    refunded state, so a 409 still brings Button to it."""
    _, profile = process(purchase(btn_ref=TOKEN), None, CONFIG, NOW)
    _, after = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), profile, CONFIG, NOW)
    result, _ = process(purchase(), after, CONFIG, NOW)
    assert isinstance(result, Send)
    follow_up = result.follow_up
    assert follow_up is not None
    assert (send(result).body["total"], dict(follow_up.body or {})["total"]) == (2999, 2999)


def test_a_create_re_sent_before_a_cancel_carries_no_follow_up() -> None:
    """The create re-sent so a redriven cancel finds its order is not meant to converge to an
    open state: the cancel that follows it does."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    _, after = process(refund("evt-r1"), profile, CONFIG, NOW)
    result, _ = process(purchase(), after, CONFIG, NOW)
    assert isinstance(result, Send)
    assert (result.request.action, result.follow_up) == (Action.CREATE, None)


def test_updates_and_cancels_carry_no_follow_up() -> None:
    _, profile = process(purchase(), None, CONFIG, NOW)
    updated, after = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), profile, CONFIG, NOW)
    cancelled, _ = process(refund("evt-r2"), after, CONFIG, NOW)
    assert isinstance(updated, Send)
    assert isinstance(cancelled, Send)
    assert (updated.follow_up, cancelled.follow_up) == (None, None)


def test_the_body_digest_is_stable() -> None:
    """Profiles store the digest of the body Button was sent: the same body must keep its
    digest across releases (key order, separators and non-ASCII text included), or every stored
    order would be sent again as an update."""
    body = {
        "order_id": "ORD-1",
        "total": 1800,
        "currency": "USD",
        "purchase_date": "2026-01-05T09:00:00Z",
        "line_items": [
            {
                "identifier": "SKU-1",
                "quantity": 2,
                "amount": 900,
                "total": 1800,
                "description": "Tasse à café",
                "attributes": {"b": "2", "a": "1"},
            }
        ],
        "customer": {"id": "c-1"},
    }
    assert body_digest(body) == 7862342752312458214


# --- held refunds leaving the profile with their order are reported ------------------------------

HELD_ORDER = "ORD-HELD"


def _held(profile: Profile | None = None, order: str = HELD_ORDER) -> Profile:
    """A refund of 2.50 of ``order`` held for its purchase (the profile knows no purchase)."""
    held, after = process(
        refund("evt-held", transaction_id=order, total_amount="2.50"), profile, CONFIG, NOW
    )
    assert isinstance(held, Read)
    assert after is not None
    return after


def _other(
    order: str, at: datetime, config: MappingConfig = CONFIG, profile: Profile | None = None
) -> tuple[MapResult, Profile | None]:
    """The purchase of another ``order`` of the user, mapped at ``at``."""
    return process(
        purchase(event_id=f"evt-{order}", commerce={"transaction_id": order}),
        profile,
        config,
        at,
    )


def test_a_held_refund_whose_order_expires_is_reported_by_the_event_that_drops_it() -> None:
    """The break trial: the order holding a refund expired from the profile (the order
    retention after its last event) and the refund vanished uncounted. The event whose mapping
    drops the order (here the user's next purchase) reports it discarded, ``order_expired``."""
    later = NOW + CONFIG.order_retention + timedelta(days=1)
    result, after = _other("ORD-NEXT", later, profile=_held())
    assert isinstance(result, Send)
    assert [(d.event_id, d.reason) for d in result.discarded] == [("evt-held", "order_expired")]
    assert HELD_ORDER in result.discarded[0].detail
    assert after is not None
    assert after.order(HELD_ORDER) is None


def test_a_held_refund_whose_order_is_evicted_by_the_order_cap_is_reported() -> None:
    """Beyond ``max_orders_per_profile`` the order touched longest ago is forgotten: its held
    refund is reported discarded, ``order_evicted``, by the event that evicted it."""
    config = MappingConfig(max_orders_per_profile=2)
    _, profile = _other("ORD-B", NOW + timedelta(minutes=1), config, _held())
    result, after = _other("ORD-C", NOW + timedelta(minutes=2), config, profile)
    assert isinstance(result, Send)
    assert [(d.event_id, d.reason) for d in result.discarded] == [("evt-held", "order_evicted")]
    assert after is not None
    assert after.order(HELD_ORDER) is None


def test_a_rejected_event_that_drops_an_expired_held_refund_reports_it() -> None:
    """The profile it pruned is written even when the event is rejected: the rejection says
    which held refunds went with it."""
    later = NOW + CONFIG.order_retention + timedelta(days=1)
    bad = purchase(commerce={"transaction_id": "ORD-NEXT", "currency_code": "XYZ"})
    result, after = process(bad, _held(), CONFIG, later)
    assert isinstance(result, Reject)
    assert result.reason == "unknown_currency"
    assert [(d.event_id, d.reason) for d in result.discarded] == [("evt-held", "order_expired")]
    assert after is not None
    assert after.order(HELD_ORDER) is None


def test_the_purchase_of_an_expired_held_order_reports_the_refund_it_no_longer_finds() -> None:
    """The purchase arrives after its order (holding the refund) expired: it is created at its
    full total, and reports the held refund gone, ``order_expired``."""
    later = NOW + CONFIG.order_retention + timedelta(days=1)
    result, _ = _other(HELD_ORDER, later, profile=_held())
    assert send(result).body["total"] == 5998
    assert isinstance(result, Send)
    assert [(d.event_id, d.reason) for d in result.discarded] == [("evt-held", "order_expired")]


def test_an_expiring_order_whose_refunds_were_applied_reports_nothing() -> None:
    """Only refunds held for a purchase go unapplied: an order created and refunded at Button,
    then expired, has nothing to report."""
    _, profile = process(purchase(), None, CONFIG, NOW)
    _, profile = process(refund("evt-r1", total_amount="1.00"), profile, CONFIG, NOW)
    later = NOW + CONFIG.order_retention + timedelta(days=1)
    result, after = _other("ORD-NEXT", later, profile=profile)
    assert isinstance(result, Send)
    assert (result.discarded, after is not None and after.order("ORD-100045")) == ((), None)


# --- updates carry the create's customer --------------------------------------------------------

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
JANE = {"customer_id": "cust-789", "email": " Jane@Example.com "}
JANE_CUSTOMER = {
    "id": "cust-789",
    "email_sha256": hashlib.sha256(b"jane@example.com").hexdigest(),
    "device_id": IDFA,
}


def _created_for_jane() -> tuple[Any, Profile]:
    """An iOS purchase with a customer id, an email and its IDFA, as created."""
    result, profile = process(
        purchase(user_identities=JANE, device_info={"ios_advertising_id": IDFA}, platform="IOS"),
        None,
        CONFIG,
        NOW,
    )
    assert send(result).body["customer"] == JANE_CUSTOMER
    assert profile is not None
    return result, profile


def test_a_partial_refunds_update_carries_the_creates_customer() -> None:
    """A back-office refund carrying only the user key: its update (the order's full new state,
    DESIGN 8) carries the customer the create sent, so Button, taking an update as the whole
    order, keeps it. Before, the update carried no customer and Button's customer became null."""
    _, profile = _created_for_jane()
    back_office = refund("evt-r1", [{"id": "SKU-RED-M"}], event_time="2024-05-01T18:00:00Z")
    result, _ = process(back_office, profile, CONFIG, NOW)
    request = send(result)
    assert (request.action, request.body["total"]) == (Action.UPDATE, 2999)
    assert request.body.get("customer") == JANE_CUSTOMER
    assert "btn_ref" not in request.body
    assert validate_update(request.body) == []


def test_an_update_carries_the_creates_customer_not_the_refunds_identities() -> None:
    """A refund naming another email and customer id, from another device: the update still
    carries the create's customer (Button keeps the create's; the same values under a reading
    that merges)."""
    _, profile = _created_for_jane()
    other = event(
        event_id="evt-r1",
        event_type="REFUND",
        event_time="2024-05-01T18:00:00Z",
        platform="ANDROID",
        user_identities={"customer_id": "agent-7", "email": "desk@shop.example"},
        device_info={"android_advertising_id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        commerce={
            "action": "REFUND",
            "transaction_id": "ORD-100045",
            "products": [{"id": "SKU-RED-M"}],
        },
    )
    result, _ = process(other, profile, CONFIG, NOW)
    assert send(result).body.get("customer") == JANE_CUSTOMER


def test_an_update_sends_the_advertising_id_in_force_at_the_purchase() -> None:
    """The device id of an update is the profile's id in force at the order's purchase time
    (the create's), not one the user's device reported later."""
    _, profile = _created_for_jane()
    later = event(
        event_id="evt-open",
        event_type="APP_OPEN",
        event_time="2024-05-01T16:00:00Z",
        platform="IOS",
        device_info={"ios_advertising_id": "ABCD0001-0000-4000-8000-000000000001"},
    )
    _, opened = process(later, profile, CONFIG, NOW)
    assert opened is not None
    result, _ = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), opened, CONFIG, NOW)
    assert send(result).body.get("customer") == JANE_CUSTOMER


def test_an_update_after_a_tracking_refusal_carries_no_device_id() -> None:
    """Ids reported at or before the user's latest refusal are not sent (privacy rules): an
    update after one keeps the create's customer id and email, without the IDFA."""
    _, profile = _created_for_jane()
    refused = event(
        event_id="evt-att",
        event_type="APP_OPEN",
        event_time="2024-05-01T16:00:00Z",
        platform="IOS",
        device_info={"att_authorization_status": "DENIED"},
    )
    _, after = process(refused, profile, CONFIG, NOW)
    assert after is not None
    result, _ = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), after, CONFIG, NOW)
    expected = {k: v for k, v in JANE_CUSTOMER.items() if k != "device_id"}
    assert send(result).body.get("customer") == expected


def test_a_409_follow_up_carries_the_creates_customer() -> None:
    """The update sent when the create is answered 409 carries the create's customer: under a
    full-state reading, without it Button would drop the customer the order was created with."""
    result, _ = _created_for_jane()
    assert isinstance(result, Send)
    assert result.follow_up is not None
    assert result.follow_up.body is not None
    assert result.follow_up.body.get("customer") == JANE_CUSTOMER


def test_a_create_re_sent_by_a_replayed_refund_carries_the_creates_customer() -> None:
    """A refund replayed after its update was sent re-sends the order's state as the create
    (with its 409 follow-up): both carry the create's customer, not one made of the refund's
    identities."""
    _, profile = _created_for_jane()
    back_office = refund("evt-r1", [{"id": "SKU-RED-M"}])
    _, after = process(back_office, profile, CONFIG, NOW)
    replayed, _ = process(back_office, after, CONFIG, NOW)
    assert isinstance(replayed, Send)
    assert replayed.request.action is Action.CREATE
    assert send(replayed).body.get("customer") == JANE_CUSTOMER
    assert replayed.follow_up is not None
    assert replayed.follow_up.body is not None
    assert replayed.follow_up.body.get("customer") == JANE_CUSTOMER


def test_the_creates_customer_survives_the_changelog() -> None:
    """The create's customer id and email hash are kept in the order's ledger: an update
    decided on the profile as restored from the changelog still carries them."""
    _, profile = _created_for_jane()
    restored = decode_profile(encode_profile(profile, 0))
    result, _ = process(refund("evt-r1", [{"id": "SKU-RED-M"}]), restored, CONFIG, NOW)
    assert send(result).body.get("customer") == JANE_CUSTOMER
