"""The event model: conversions from decoded Avro and from JSON, and the invariants it enforces."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from consumer.domain.event_forms import (
    event_from_json,
    event_from_record,
    event_to_json,
    event_to_record,
)
from consumer.domain.events import (
    BUTTON_MODULE_ID,
    BUTTON_SOURCE_TOKEN_KEY,
    MAX_KEY_BYTES,
    AttAuthorizationStatus,
    CommerceData,
    CommerceEvent,
    DeviceInfo,
    Environment,
    EventReason,
    EventType,
    Platform,
    Product,
    ProductAction,
    UserIdentities,
)
from consumer.errors import DecodeError, InvalidEventError

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def purchase_json(**overrides: Any) -> dict[str, Any]:
    """A valid purchase in the JSON form, with top-level fields replaced by ``overrides``."""
    obj: dict[str, Any] = {
        "event_id": "e-1",
        "event_type": "PURCHASE",
        "event_time": "2026-01-05T09:00:00Z",
        "user_key": "u-1",
        "platform": "SERVER",
        "user_identities": {"customer_id": "c-1", "email": "Ada@Example.com"},
        "commerce": {
            "action": "PURCHASE",
            "transaction_id": "ORD-1",
            "currency_code": "USD",
            "total_amount": "59.98",
            "products": [{"id": "SKU-1", "price": "29.99", "quantity": 2}],
        },
    }
    obj.update(overrides)
    return obj


def commerce_json(**overrides: Any) -> dict[str, Any]:
    """A valid purchase whose commerce object has ``overrides`` applied."""
    obj = purchase_json()
    obj["commerce"].update(overrides)
    return obj


def test_full_record_becomes_the_model() -> None:
    """Every field of a fastavro-decoded record lands in the model with its type."""
    record = {
        "event_id": "e-1",
        "event_type": "APP_OPEN",
        "event_time": datetime(2026, 1, 5, 9, 0, 0, 123000, tzinfo=UTC),
        "platform": "IOS",
        "environment": "DEVELOPMENT",
        "user_key": "u-1",
        "event_name": "launch",
        "user_identities": {"customer_id": "c-1", "email": "a@b.c", "other": {"other_id_2": "x"}},
        "device_info": {
            "ios_advertising_id": "IDFA",
            "android_advertising_id": None,
            "ios_idfv": "IDFV",
            "limit_ad_tracking": False,
            "att_authorization_status": "AUTHORIZED",
        },
        "integration_attributes": {"1022": {"com.usebutton.source_token": "srctok-1"}},
        "btn_ref": "srctok-2",
        "launch_referral_url": "https://brand.example/p/1?btn_ref=srctok-3",
        "page_url": None,
        "commerce": None,
        "custom_attributes": {"k": "v"},
    }
    expected = CommerceEvent(
        event_id="e-1",
        event_type=EventType.APP_OPEN,
        event_time=datetime(2026, 1, 5, 9, 0, 0, 123000, tzinfo=UTC),
        user_key="u-1",
        platform=Platform.IOS,
        environment=Environment.DEVELOPMENT,
        event_name="launch",
        user_identities=UserIdentities("c-1", "a@b.c", {"other_id_2": "x"}),
        device_info=DeviceInfo(
            ios_advertising_id="IDFA",
            ios_idfv="IDFV",
            limit_ad_tracking=False,
            att_authorization_status=AttAuthorizationStatus.AUTHORIZED,
        ),
        integration_attributes={"1022": {"com.usebutton.source_token": "srctok-1"}},
        btn_ref="srctok-2",
        launch_referral_url="https://brand.example/p/1?btn_ref=srctok-3",
        custom_attributes={"k": "v"},
    )
    assert expected == event_from_record(record)


def test_record_round_trip_keeps_every_field() -> None:
    """``event_from_record(event_to_record(e)) == e`` for an event using every field."""
    event = event_from_json(purchase_json(device_info={"ios_idfv": "V"}, btn_ref="srctok-1"))
    assert event == event_from_record(event_to_record(event))


def test_source_token_reads_integration_attribute_1022() -> None:
    """The Button token under module 1022 is exposed as ``source_token``."""
    attrs = {BUTTON_MODULE_ID: {BUTTON_SOURCE_TOKEN_KEY: "srctok-abc"}}
    event = event_from_json(purchase_json(integration_attributes=attrs))
    assert event.source_token == "srctok-abc"
    assert event_from_json(purchase_json()).source_token is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-01-05T09:00:00Z", T0),
        ("2026-01-05T10:00:00+01:00", T0),
        ("2026-01-05T09:00:00.123456Z", T0 + timedelta(milliseconds=123)),
        (1767603600000, T0),
        (1767603600123, T0 + timedelta(milliseconds=123)),
        ("1767603600000", T0),  # epoch milliseconds written as a string
        (" 1767603600123 ", T0 + timedelta(milliseconds=123)),
    ],
)
def test_json_event_time_forms(given: object, expected: datetime) -> None:
    """ISO-8601 with an offset or Z, or epoch millis, become UTC truncated to milliseconds."""
    event = event_from_json(purchase_json(event_time=given))
    assert expected == event.event_time
    assert event.event_time.tzinfo is UTC


@pytest.mark.parametrize("given", ["2026-01-05T09:00:00", "yesterday", 1.5e12, True, None])
def test_json_event_time_rejects_naive_or_odd_values(given: object) -> None:
    """A time without an offset, or not a time at all, is refused with a named reason."""
    with pytest.raises(DecodeError) as info:
        event_from_json(purchase_json(event_time=given))
    assert info.value.reason in {EventReason.INVALID_TIMESTAMP, EventReason.MISSING_FIELD}


def test_model_stores_event_time_in_utc_milliseconds() -> None:
    """A zoned datetime with microseconds is kept as the same instant, in UTC, to the ms."""
    plus_two = timezone(timedelta(hours=2))
    event = CommerceEvent(
        "e", EventType.SESSION_START, datetime(2026, 1, 5, 11, 0, 0, 999999, plus_two), "u"
    )
    assert datetime(2026, 1, 5, 9, 0, 0, 999000, UTC) == event.event_time


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("12.34", Decimal("12.34")),
        (" 12.340000 ", Decimal("12.34")),
        (12, Decimal(12)),
        (12.34, Decimal("12.34")),
        (0.1, Decimal("0.1")),
        (Decimal("1.234"), Decimal("1.234")),
        (Decimal("1E+3"), Decimal(1000)),
        (1e-05, Decimal("0.00001")),  # a float by its repr, "1e-05": not text to refuse
        ("+12.50", Decimal("12.5")),
        ("-0.00", Decimal(0)),
        (".5", Decimal("0.5")),
        ("12.", Decimal(12)),
        ("\t12.50\n", Decimal("12.5")),
    ],
)
def test_json_amount_forms(given: object, expected: Decimal) -> None:
    """Amounts may be decimal strings, integers, floats (by shortest repr) or Decimals.

    A string is plain decimal notation (surrounding whitespace ignored); a number already
    parsed (an int, a float, a Decimal from ``parse_float=Decimal``) is taken by its value,
    whatever notation the JSON text used for it.
    """
    event = event_from_json(commerce_json(total_amount=given))
    assert event.commerce is not None
    assert expected == event.commerce.total_amount


@pytest.mark.parametrize(
    "given",
    [
        "12_50",  # Decimal() reads 1250: underscores between digits
        "1_000.00",
        "\u0661\u0662",  # Arabic-Indic digits: Decimal() reads 12
        "\uff11\uff12.50",  # full-width digits
        "12.5e1",  # exponent notation: Decimal() reads 125
        "1E+2",
        "1e-2",
        "1,299.00",
        "12 .50",
        "1.2.3",
        "--1",
        "+",
        ".",
        "",
        "  ",
        "0x10",
        "NaN",
        "-Infinity",
        "sNaN",
    ],
)
@pytest.mark.parametrize("key", ["total_amount", "tax_amount", "shipping_amount"])
def test_an_amount_string_not_in_plain_decimal_notation_is_refused(key: str, given: str) -> None:
    """Only ASCII digits, an optional sign and one point: no separators, exponents, other
    scripts' digits or special values, each refused ``invalid_amount`` naming field and value."""
    with pytest.raises(DecodeError) as info:
        event_from_json(commerce_json(**{key: given}))

    assert (info.value.reason, str(info.value)) == (
        EventReason.INVALID_AMOUNT,
        f"commerce.{key} {given!r} is not a plain decimal like '12.34'",
    )


@pytest.mark.parametrize("given", ["12_50", "\u0661\u0662", "12.5e1", "1E+2"])
def test_a_price_string_not_in_plain_decimal_notation_is_refused(given: str) -> None:
    """A product's price follows the same rule as the commerce amounts."""
    with pytest.raises(DecodeError) as info:
        event_from_json(commerce_json(products=[{"id": "p", "price": given}]))

    assert (info.value.reason, str(info.value)) == (
        EventReason.INVALID_AMOUNT,
        f"commerce.products[0].price {given!r} is not a plain decimal like '12.34'",
    )


@pytest.mark.parametrize("given", ["2_0", "\u0662", "2e0", "1E+1"])
def test_a_quantity_string_not_in_plain_decimal_notation_is_refused(given: str) -> None:
    """A quantity written as text follows the amount rule: ``"2e0"`` is not read as 2."""
    with pytest.raises(DecodeError) as info:
        event_from_json(commerce_json(products=[{"id": "p", "quantity": given}]))

    assert (info.value.reason, str(info.value)) == (
        EventReason.INVALID_QUANTITY,
        f"commerce.products[0].quantity {given!r} is not a whole number",
    )


def test_json_numbers_parsed_as_decimal_stay_exact() -> None:
    """With ``parse_float=Decimal`` a JSON number keeps every digit."""
    text = json.dumps(commerce_json(total_amount="__AMOUNT__")).replace(
        '"__AMOUNT__"', "1234567890.123456"
    )
    event = event_from_json(json.loads(text, parse_float=Decimal))
    assert event.commerce is not None
    assert Decimal("1234567890.123456") == event.commerce.total_amount


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"total_amount": "twelve"}, EventReason.INVALID_AMOUNT),
        ({"total_amount": "NaN"}, EventReason.INVALID_AMOUNT),
        ({"total_amount": "Infinity"}, EventReason.INVALID_AMOUNT),
        ({"total_amount": "1.0000001"}, EventReason.INVALID_AMOUNT),
        ({"total_amount": "100000000000000"}, EventReason.INVALID_AMOUNT),
        ({"total_amount": True}, EventReason.INVALID_FIELD),
        ({"total_amount": "-1"}, EventReason.NEGATIVE_AMOUNT),
        ({"tax_amount": "-0.01"}, EventReason.NEGATIVE_AMOUNT),
        ({"shipping_amount": "-5"}, EventReason.NEGATIVE_AMOUNT),
        ({"currency_code": "US"}, EventReason.INVALID_CURRENCY),
        ({"currency_code": "U$D"}, EventReason.INVALID_CURRENCY),
        ({"currency_code": None}, EventReason.MISSING_CURRENCY),
        ({"transaction_id": None}, EventReason.MISSING_TRANSACTION_ID),
        ({"transaction_id": ""}, EventReason.MISSING_TRANSACTION_ID),
        ({"action": "REFUND"}, EventReason.ACTION_MISMATCH),
        ({"action": "something_new"}, EventReason.ACTION_MISMATCH),
        ({"products": [{"id": ""}]}, EventReason.EMPTY_FIELD),
        ({"products": [{"price": "1"}]}, EventReason.MISSING_FIELD),
        ({"products": [{"id": "p", "quantity": -1}]}, EventReason.INVALID_QUANTITY),
        ({"products": [{"id": "p", "quantity": 1.5}]}, EventReason.INVALID_QUANTITY),
        ({"products": [{"id": "p", "quantity": "two"}]}, EventReason.INVALID_QUANTITY),
        ({"products": [{"id": "p", "quantity": 2**31}]}, EventReason.INVALID_QUANTITY),
        ({"products": [{"id": "p", "price": "0.0000001"}]}, EventReason.INVALID_AMOUNT),
        ({"products": "SKU-1"}, EventReason.INVALID_FIELD),
    ],
)
def test_invalid_commerce_content_is_refused_with_its_reason(
    overrides: dict[str, Any], reason: EventReason
) -> None:
    """Each broken commerce invariant raises ``DecodeError`` with its own reason."""
    with pytest.raises(DecodeError) as info:
        event_from_json(commerce_json(**overrides))
    assert reason == info.value.reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_id": ""}, EventReason.EMPTY_FIELD),
        ({"event_id": None}, EventReason.MISSING_FIELD),
        ({"user_key": ""}, EventReason.EMPTY_FIELD),
        ({"user_key": 42}, EventReason.INVALID_FIELD),
        ({"user_key": "u" * (MAX_KEY_BYTES + 1)}, EventReason.KEY_TOO_LARGE),
        ({"user_key": "\u00e9" * (MAX_KEY_BYTES // 2 + 1)}, EventReason.KEY_TOO_LARGE),
        ({"event_type": None}, EventReason.MISSING_FIELD),
        ({"event_type": 3}, EventReason.INVALID_FIELD),
        ({"commerce": None}, EventReason.MISSING_COMMERCE),
        ({"commerce": "ORD-1"}, EventReason.INVALID_FIELD),
        ({"btn_ref": 7}, EventReason.INVALID_FIELD),
        ({"device_info": {"limit_ad_tracking": "yes"}}, EventReason.INVALID_FIELD),
        ({"custom_attributes": {"k": ["list"]}}, EventReason.INVALID_FIELD),
        ({"event_type": "ADD_TO_CART"}, EventReason.ACTION_MISMATCH),
    ],
)
def test_invalid_event_content_is_refused_with_its_reason(
    overrides: dict[str, Any], reason: EventReason
) -> None:
    """Each broken event invariant raises ``DecodeError`` with its own reason."""
    with pytest.raises(DecodeError) as info:
        event_from_json(purchase_json(**overrides))
    assert reason == info.value.reason


def test_a_user_key_of_max_key_bytes_is_valid() -> None:
    """The bound is in UTF-8 bytes and inclusive: 2,048 ASCII characters, or 1,024 of two
    bytes each, are a user key; one byte more is ``key_too_large`` (above)."""
    for key in ("u" * MAX_KEY_BYTES, "\u00e9" * (MAX_KEY_BYTES // 2)):
        assert event_from_json(purchase_json(user_key=key)).user_key == key


def test_refund_needs_only_the_transaction_id() -> None:
    """A refund without products, amount or currency is a valid full refund."""
    event = event_from_json(
        purchase_json(event_type="REFUND", commerce={"action": "REFUND", "transaction_id": "ORD-1"})
    )
    assert event.commerce == CommerceData(action=ProductAction.REFUND, transaction_id="ORD-1")


def test_unknown_event_type_may_carry_a_purchase_action() -> None:
    """An event type from a newer producer reads as UNKNOWN and is not refused for its action."""
    event = event_from_json(purchase_json(event_type="SUBSCRIPTION_RENEWAL"))
    assert event.event_type is EventType.UNKNOWN


def test_json_enums_are_case_insensitive_and_unknown_symbols_read_as_unknown() -> None:
    """``purchase`` is PURCHASE; an unknown platform is UNKNOWN, like an Avro enum default."""
    event = event_from_json(
        purchase_json(event_type="purchase", platform="smart_tv", environment="Development")
    )
    assert (event.event_type, event.platform, event.environment) == (
        EventType.PURCHASE,
        Platform.UNKNOWN,
        Environment.DEVELOPMENT,
    )


def test_json_currency_is_trimmed_and_upper_cased() -> None:
    """``" usd "`` is read as USD."""
    event = event_from_json(commerce_json(currency_code=" usd "))
    assert event.commerce is not None
    assert event.commerce.currency_code == "USD"


def test_json_defaults_for_missing_optional_fields() -> None:
    """Missing platform, environment and maps take the schema defaults."""
    event = event_from_json(
        {"event_id": "e", "event_type": "SESSION_START", "event_time": 0, "user_key": "u"}
    )
    expected = CommerceEvent(
        "e", EventType.SESSION_START, datetime(1970, 1, 1, tzinfo=UTC), "u", Platform.UNKNOWN
    )
    assert expected == event
    assert event.environment is Environment.PRODUCTION


def test_json_user_identities_array_form() -> None:
    """mParticle's outbound identity array is accepted as well as the record form."""
    identities = [
        {"identity_type": "customer_id", "identity": "c-9"},
        {"identity_type": "email", "identity": "a@b.c"},
        {"identity_type": "other_id_2", "identity": "x"},
    ]
    event = event_from_json(purchase_json(user_identities=identities))
    assert UserIdentities("c-9", "a@b.c", {"other_id_2": "x"}) == event.user_identities


def test_json_map_values_become_strings() -> None:
    """Numbers and booleans in attribute maps are stored as strings."""
    event = event_from_json(purchase_json(custom_attributes={"n": 3, "f": 1.5, "b": True}))
    assert event.custom_attributes == {"n": "3", "f": "1.5", "b": "true"}


def test_json_quantity_accepts_integral_numbers() -> None:
    """``2``, ``2.0`` and ``"2"`` are all two units."""
    for quantity in (2, 2.0, "2", Decimal("2.000")):
        event = event_from_json(commerce_json(products=[{"id": "p", "quantity": quantity}]))
        assert event.commerce is not None
        assert event.commerce.products[0].quantity == 2


def test_to_json_writes_decimal_strings_and_utc_times() -> None:
    """Amounts become plain decimal strings, time an ISO-8601 UTC string; nulls are omitted."""
    event = CommerceEvent(
        event_id="e",
        event_type=EventType.PURCHASE,
        event_time=T0,
        user_key="u",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id="o",
            currency_code="JPY",
            total_amount=Decimal("1500.000000"),
            products=(Product(id="p", price=Decimal("1E+3")),),
        ),
    )
    assert event_to_json(event) == {
        "event_id": "e",
        "event_type": "PURCHASE",
        "event_time": "2026-01-05T09:00:00.000Z",
        "platform": "UNKNOWN",
        "environment": "PRODUCTION",
        "user_key": "u",
        "commerce": {
            "action": "PURCHASE",
            "transaction_id": "o",
            "currency_code": "JPY",
            "total_amount": "1500",
            "products": [{"id": "p", "price": "1000", "quantity": 1}],
        },
    }


def test_to_json_keeps_an_empty_identities_record() -> None:
    """An empty identities record is not confused with null after a JSON round trip."""
    event = CommerceEvent("e", EventType.APP_OPEN, T0, "u", user_identities=UserIdentities())
    assert event == event_from_json(json.loads(json.dumps(event_to_json(event))))


def test_to_record_writes_amounts_at_the_schema_scale() -> None:
    """Amounts are quantized to 6 places so fastavro's decimal writer accepts them."""
    event = event_from_json(commerce_json(total_amount="1.5000000000"))
    record = event_to_record(event)
    assert record["commerce"]["total_amount"].as_tuple().exponent == -6
    assert Decimal("1.5") == record["commerce"]["total_amount"]


def test_line_amount_is_price_times_quantity() -> None:
    """``Product.line_amount`` multiplies exactly, and is None without a price."""
    assert Decimal("89.97") == Product("p", price=Decimal("29.99"), quantity=3).line_amount
    assert Product("p").line_amount is None


def test_a_map_key_named_like_a_field_survives_the_json_form() -> None:
    """A user's map key that happens to be a field name ("other", "products") with an empty
    value is the user's data, not an empty field: the JSON form keeps it (Hypothesis found
    ``integration_attributes={"other": {}}`` coming back as ``{}``)."""
    from consumer.domain.event_forms import event_from_json, event_to_json

    event = CommerceEvent(
        event_id="e-map",
        event_type=EventType.APP_OPEN,
        event_time=datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
        user_key="u",
        integration_attributes={"other": {}, "products": {}, "1022": {"k": "v"}},
    )

    assert event == event_from_json(json.loads(json.dumps(event_to_json(event))))


_PRODUCT_0 = "commerce.products[0]."


def test_an_invalid_decoded_record_names_its_event_order_and_value() -> None:
    """A record that decodes but breaks a rule is an ``InvalidEventError`` (a ``DecodeError``)
    carrying the record's event and order ids, and its message names the bad value."""
    record = event_to_record(event_from_json(purchase_json()))
    record["commerce"]["total_amount"] = Decimal("-10.00")

    with pytest.raises(InvalidEventError) as info:
        event_from_record(record)

    expected = ("negative_amount", "e-1", "ORD-1", "total_amount is negative: -10.00")
    error = info.value
    assert expected == (error.reason, error.event_id, error.order_id, str(error))


def test_an_invalid_record_without_ids_names_none() -> None:
    """Ids that are missing or not strings are left empty, not guessed."""
    obj = purchase_json(event_id=7)
    del obj["commerce"]["transaction_id"]

    with pytest.raises(InvalidEventError) as info:
        event_from_json(obj)

    assert (info.value.event_id, info.value.order_id) == ("", "")


@pytest.mark.parametrize(
    ("overrides", "reason", "message"),
    [
        (
            {"products": [{"id": "p"}, {"id": "q", "price": "1.0000001"}]},
            EventReason.INVALID_AMOUNT,
            "price of product 'q' has more than 6 decimal places: 1.0000001",
        ),
        (
            {"products": [{"id": "p"}, {"id": "q", "price": "abc"}]},
            EventReason.INVALID_AMOUNT,
            "commerce.products[1].price 'abc' is not a plain decimal like '12.34'",
        ),
        (
            {"products": [{"id": "p", "price": True}]},
            EventReason.INVALID_FIELD,
            f"{_PRODUCT_0}price must be a decimal string or number, not bool",
        ),
        (
            {"products": [{"id": "p", "quantity": "two"}]},
            EventReason.INVALID_QUANTITY,
            f"{_PRODUCT_0}quantity 'two' is not a whole number",
        ),
        (
            {"products": [{"id": "p", "quantity": 1.5}]},
            EventReason.INVALID_QUANTITY,
            f"{_PRODUCT_0}quantity 1.5 is not a whole number",
        ),
        (
            {"products": [{"id": "p", "attributes": {"size": "M", "tags": ["a"]}}]},
            EventReason.INVALID_FIELD,
            f"{_PRODUCT_0}attributes['tags'] must be a string, number or boolean, not list",
        ),
        (
            {"products": [{"id": "p", "sku": 5}]},
            EventReason.INVALID_FIELD,
            f"{_PRODUCT_0}sku must be a string, not int",
        ),
        ({"products": [{"sku": "x"}]}, EventReason.MISSING_FIELD, f"{_PRODUCT_0}id is missing"),
        (
            {"products": ["x"]},
            EventReason.INVALID_FIELD,
            "commerce.products[0] must be an object, not str",
        ),
        (
            {"total_amount": float("nan")},
            EventReason.INVALID_AMOUNT,
            "commerce.total_amount is not a finite number",
        ),
        (
            {"tax_amount": "x"},
            EventReason.INVALID_AMOUNT,
            "commerce.tax_amount 'x' is not a plain decimal like '12.34'",
        ),
        (
            {"shipping_amount": "-5"},
            EventReason.NEGATIVE_AMOUNT,
            "shipping_amount is negative: -5",
        ),
        (
            {"action": 5},
            EventReason.INVALID_FIELD,
            "commerce.action must be an enum symbol string, not int",
        ),
    ],
)
def test_a_bad_commerce_value_is_named_by_its_location(
    overrides: dict[str, Any], reason: EventReason, message: str
) -> None:
    """The message names where the bad value is, down to a product's field or map entry."""
    with pytest.raises(DecodeError) as info:
        event_from_json(commerce_json(**overrides))
    assert (reason, message) == (info.value.reason, str(info.value))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"custom_attributes": {"k": "v", "n": ["list"]}},
            "custom_attributes['n'] must be a string, number or boolean, not list",
        ),
        (
            {"integration_attributes": {"1022": {"a": []}}},
            "integration_attributes['1022']['a'] must be a string, number or boolean, not list",
        ),
        (
            {"user_identities": {"other": {"x": [1]}}},
            "user_identities.other['x'] must be a string, number or boolean, not list",
        ),
        (
            {"user_identities": [{"identity_type": "email", "identity": []}]},
            "user_identities[0].identity must be a string, number or boolean, not list",
        ),
        (
            {"device_info": {"att_authorization_status": 3}},
            "device_info.att_authorization_status must be an enum symbol string, not int",
        ),
    ],
)
def test_a_bad_json_map_entry_is_named_by_its_location(
    overrides: dict[str, Any], message: str
) -> None:
    """A bad value inside a map of the JSON form is named by its map and key."""
    with pytest.raises(DecodeError) as info:
        event_from_json(purchase_json(**overrides))
    assert (EventReason.INVALID_FIELD, message) == (info.value.reason, str(info.value))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("commerce", "products", 0, "price"),
            "9.00",
            f"{_PRODUCT_0}price must be a Decimal, not str",
        ),
        (
            ("commerce", "products", 0, "quantity"),
            2.0,
            f"{_PRODUCT_0}quantity must be an int, not float",
        ),
        (
            ("commerce", "products", 0, "attributes"),
            {"size": "M", "n": 3},
            f"{_PRODUCT_0}attributes['n'] must be a string, not int",
        ),
        (("commerce", "total_amount"), 18.0, "commerce.total_amount must be a Decimal, not float"),
        (("custom_attributes",), {"a": 1}, "custom_attributes['a'] must be a string, not int"),
        (
            ("integration_attributes",),
            {"1022": {"k": None}},
            "integration_attributes['1022']['k'] must be a string, not null",
        ),
        (
            ("user_identities", "other"),
            {"x": 1},
            "user_identities.other['x'] must be a string, not int",
        ),
    ],
)
def test_a_bad_record_value_is_named_by_its_location(
    path: tuple[str | int, ...], value: object, message: str
) -> None:
    """A decoded record with a value of the wrong type deep inside names where it is."""
    record = event_to_record(event_from_json(purchase_json()))
    parent: Any = record
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    with pytest.raises(DecodeError) as info:
        event_from_record(record)
    assert (EventReason.INVALID_FIELD, message) == (info.value.reason, str(info.value))


# --- null in the JSON form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("with_null", "without"),
    [
        (
            {"custom_attributes": {"campaign": "spring", "coupon": None}},
            {"custom_attributes": {"campaign": "spring"}},
        ),
        (
            {"user_identities": {"customer_id": "c-1", "email": None, "other": {"x": None}}},
            {"user_identities": {"customer_id": "c-1"}},
        ),
        (
            {
                "user_identities": [
                    {"identity_type": "customer_id", "identity": "c-1"},
                    {"identity_type": "email", "identity": None},
                    {"identity_type": "other", "identity": None},
                ]
            },
            {"user_identities": [{"identity_type": "customer_id", "identity": "c-1"}]},
        ),
        (
            {"integration_attributes": {"1022": {"a": "b", "c": None}}},
            {"integration_attributes": {"1022": {"a": "b"}}},
        ),
        (
            {
                "device_info": {
                    "ios_advertising_id": None,
                    "android_advertising_id": None,
                    "ios_idfv": None,
                    "limit_ad_tracking": None,
                    "att_authorization_status": None,
                }
            },
            {"device_info": {}},
        ),
        (
            {
                "platform": None,
                "environment": None,
                "event_name": None,
                "btn_ref": None,
                "launch_referral_url": None,
                "page_url": None,
                "device_info": None,
                "integration_attributes": None,
                "custom_attributes": None,
            },
            {},
        ),
    ],
    ids=[
        "custom-attribute",
        "identity-record",
        "identity-array",
        "integration-attribute",
        "device-info",
        "top-level",
    ],
)
def test_a_null_optional_json_value_is_absent(
    with_null: dict[str, Any], without: dict[str, Any]
) -> None:
    """JSON producers write ``null`` for "absent": wherever a value is optional (an optional
    field, a map entry's value, an identity of the array form), ``null`` reads as if it were
    left out, never as an error."""
    base = purchase_json()
    for key in with_null:
        base.pop(key, None)

    assert event_from_json({**base, **with_null}) == event_from_json({**base, **without})


def test_a_null_optional_commerce_or_product_value_is_absent() -> None:
    """The commerce object's and a product's optional fields and attribute values too."""
    nulls = {
        "transaction_id": "ORD-1",
        "currency_code": "USD",
        "total_amount": "59.98",
        "tax_amount": None,
        "shipping_amount": None,
        "coupon_code": None,
        "affiliation": None,
    }
    product: dict[str, Any] = {"id": "SKU-1", "attributes": {"size": "M", "colour": None}}
    product |= dict.fromkeys(("sku", "name", "brand", "category", "variant", "price", "quantity"))

    with_null = event_from_json(commerce_json(**nulls, products=[product]))
    without = event_from_json(
        commerce_json(products=[{"id": "SKU-1", "attributes": {"size": "M"}}])
    )

    assert with_null == without


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (purchase_json(event_id=None), "event_id is null, but it is required"),
        (purchase_json(event_type=None), "event_type is null, but it is required"),
        (purchase_json(event_time=None), "event_time is null, but it is required"),
        (purchase_json(user_key=None), "user_key is null, but it is required"),
        (commerce_json(action=None), "commerce.action is null, but it is required"),
        (
            commerce_json(products=[{"id": None}]),
            "commerce.products[0].id is null, but it is required",
        ),
        (
            purchase_json(user_identities=[{"identity_type": None, "identity": "c-1"}]),
            "user_identities[0].identity_type is null, but it is required",
        ),
        (
            commerce_json(products=[None]),
            "commerce.products[0] must be an object, not null",
        ),
    ],
)
def test_a_null_required_json_value_is_refused_naming_it(obj: dict[str, Any], message: str) -> None:
    """``null`` where a value is required is still refused, the message naming the field and
    saying it is null (not that it is missing, which the producer can see it is not)."""
    with pytest.raises(DecodeError) as info:
        event_from_json(obj)

    assert str(info.value) == message
