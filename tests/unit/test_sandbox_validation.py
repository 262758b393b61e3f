"""The sandbox's request rules: what Button documents as valid passes, everything else is named.

The last section checks the other document the sandbox validates: the faults JSON, and the
deterministic parts of the fault injector (rules, outage, seeds) with injected clocks.
"""

from __future__ import annotations

import copy
import hashlib
import re
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.sandbox.faults import FaultConfig, FaultConfigError, FaultInjector
from consumer.sandbox.validation import (
    INT32_MAX,
    ISO4217_CODES,
    is_valid_create,
    is_valid_update,
    parse_iso8601,
    problem_fields,
    validate_btn_ref,
    validate_create,
    validate_order_id,
    validate_update,
)
from tests.reference import example_create

URL_SAFE = string.ascii_letters + string.digits + "-._~"
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))


# --- strategies --------------------------------------------------------------------------------

order_ids = st.text(alphabet=PRINTABLE_ASCII, min_size=1, max_size=255)
btn_refs = st.text(alphabet=URL_SAFE, min_size=1, max_size=255)
totals = st.integers(min_value=0, max_value=INT32_MAX)
currencies = st.sampled_from(sorted(ISO4217_CODES))
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
dates = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=zones
).map(lambda moment: moment.isoformat(timespec="seconds").replace("+00:00", "Z"))
short_text = st.text(min_size=1, max_size=40)
line_items = st.fixed_dictionaries(
    {"identifier": short_text, "total": st.integers(-(2**31), INT32_MAX)},
    optional={
        "amount": st.integers(-(2**31), INT32_MAX),
        "quantity": st.integers(0, 1000),
        "sku": st.text(max_size=20),
        "upc": st.text(max_size=20),
        "description": st.text(max_size=40),
        "category": st.lists(st.text(max_size=10), max_size=3),
        "attributes": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    },
)
customers = st.fixed_dictionaries(
    {},
    optional={
        "id": short_text,
        "email_sha256": st.binary().map(lambda raw: hashlib.sha256(raw).hexdigest()),
        "device_id": short_text,
        "is_new": st.booleans(),
    },
)
create_bodies = st.fixed_dictionaries(
    {"order_id": order_ids, "total": totals, "currency": currencies, "purchase_date": dates},
    optional={
        "btn_ref": btn_refs,
        "customer_order_id": short_text,
        "customer": customers,
        "line_items": st.lists(line_items, max_size=4),
        "finalization_date": dates,
        "partner_order_channel": st.sampled_from(["app", "webview"]),
        "total_as_decimal": st.just(False),
    },
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


# --- valid documents ---------------------------------------------------------------------------


def test_the_documented_create_example_is_valid() -> None:
    """The section 11 create example passes."""
    assert validate_create(example_create()) == []


def test_the_documented_update_example_is_valid() -> None:
    """The section 11 partial-refund update (no btn_ref) passes."""
    body = {
        "total": 2999,
        "currency": "USD",
        "line_items": [{"identifier": "SKU-RED-M", "quantity": 1, "amount": 2999, "total": 2999}],
    }
    assert validate_update(body, "ORD-100045") == []


@given(create_bodies)
def test_every_documented_create_shape_is_valid(body: dict[str, Any]) -> None:
    """Any combination of documented fields with documented values passes."""
    assert validate_create(body) == []
    assert is_valid_create(body)


@given(create_bodies)
def test_a_create_body_minus_order_id_and_purchase_date_is_a_valid_update(
    body: dict[str, Any],
) -> None:
    """An update carries the same state; order_id, purchase_date and btn_ref are optional there."""
    order_id = body.pop("order_id")
    body.pop("purchase_date")
    body.pop("btn_ref", None)
    assert validate_update(body, order_id) == []
    assert is_valid_update(body, order_id)


# --- one bad field is named --------------------------------------------------------------------


BAD_FIELDS: list[tuple[str, Any, str]] = [
    ("total", 59.98, "total"),
    ("total", "5998", "total"),
    ("total", True, "total"),
    ("total", -1, "total"),
    ("total", 2**31, "total"),
    ("currency", "usd", "currency"),
    ("currency", "XYZ", "currency"),
    ("currency", 840, "currency"),
    ("order_id", "", "order_id"),
    ("order_id", "ORD-é", "order_id"),
    ("order_id", "A" * 256, "order_id"),
    ("order_id", "ORD\n1", "order_id"),
    ("order_id", 100045, "order_id"),
    ("purchase_date", "2024-05-01", "purchase_date"),
    ("purchase_date", "2024-05-01T14:03:22", "purchase_date"),
    ("purchase_date", "2024-02-30T14:03:22Z", "purchase_date"),
    ("purchase_date", "1714572202", "purchase_date"),
    ("purchase_date", "May 1 2024", "purchase_date"),
    ("btn_ref", "srctok 01", "btn_ref"),
    ("btn_ref", "srctok/01", "btn_ref"),
    ("btn_ref", "x" * 256, "btn_ref"),
    ("btn_ref", "", "btn_ref"),
    ("btn_ref", None, "btn_ref"),
    ("customer_order_id", "x" * 256, "customer_order_id"),
    ("customer", "cust-789", "customer"),
    ("line_items", {"identifier": "x"}, "line_items"),
    ("partner_order_channel", "web", "partner_order_channel"),
    ("total_as_decimal", True, "total_as_decimal"),
    ("finalization_date", "tomorrow", "finalization_date"),
    ("tax", 100, "tax"),
]


@pytest.mark.parametrize(("name", "value", "field"), BAD_FIELDS)
def test_one_bad_top_level_field_is_named(name: str, value: Any, field: str) -> None:
    """Replacing one field of a valid body with a bad value yields exactly that field's problem."""
    body = example_create()
    body[name] = value
    assert problem_fields(validate_create(body)) == [field]


@pytest.mark.parametrize("name", ["order_id", "total", "currency", "purchase_date"])
def test_every_required_create_field_is_required(name: str) -> None:
    """A create without a required field is refused, naming the field."""
    body = example_create()
    del body[name]
    assert validate_create(body) == [f"{name}: is required"]


@pytest.mark.parametrize("name", ["total", "currency"])
def test_an_update_needs_total_and_currency(name: str) -> None:
    """An update is full state: total and currency are required."""
    body = {"total": 2999, "currency": "USD"}
    del body[name]
    assert validate_update(body) == [f"{name}: is required"]


def test_an_update_must_not_name_another_order() -> None:
    """An order_id in the update body must equal the path's."""
    body = {"order_id": "ORD-2", "total": 1, "currency": "USD"}
    assert problem_fields(validate_update(body, "ORD-1")) == ["order_id"]


NESTED_BAD: list[tuple[str, Any, str]] = [
    ("email_sha256", "A" * 64, "customer.email_sha256"),
    ("email_sha256", "a" * 63, "customer.email_sha256"),
    ("email_sha256", "someone@example.com", "customer.email_sha256"),
    ("is_new", "yes", "customer.is_new"),
    ("is_new_user", True, "customer.is_new_user"),
    ("id", "", "customer.id"),
    ("device_id", None, "customer.device_id"),
]


@pytest.mark.parametrize(("name", "value", "field"), NESTED_BAD)
def test_a_bad_customer_field_is_named_with_its_path(name: str, value: Any, field: str) -> None:
    """Customer problems name ``customer.<field>``."""
    body = example_create()
    body["customer"][name] = value
    assert problem_fields(validate_create(body)) == [field]


LINE_ITEM_BAD: list[tuple[str, Any, str]] = [
    ("total", 29.99, "line_items[0].total"),
    ("amount", "2999", "line_items[0].amount"),
    ("quantity", -1, "line_items[0].quantity"),
    ("quantity", 1.5, "line_items[0].quantity"),
    ("category", "Apparel", "line_items[0].category"),
    ("category", ["Apparel", 3], "line_items[0].category[1]"),
    ("attributes", {"size": 1}, "line_items[0].attributes.size"),
    ("attributes", ["M"], "line_items[0].attributes"),
    ("identifier", "", "line_items[0].identifier"),
    ("price", 2999, "line_items[0].price"),
]


@pytest.mark.parametrize(("name", "value", "field"), LINE_ITEM_BAD)
def test_a_bad_line_item_field_is_named_with_its_path(name: str, value: Any, field: str) -> None:
    """Line-item problems name ``line_items[i].<field>``."""
    body = example_create()
    body["line_items"][0][name] = value
    assert problem_fields(validate_create(body)) == [field]


@pytest.mark.parametrize("name", ["identifier", "total"])
def test_line_items_need_identifier_and_total(name: str) -> None:
    """identifier and total are required in every line item."""
    body = example_create()
    del body["line_items"][0][name]
    assert validate_create(body) == [f"line_items[0].{name}: is required"]


def test_discount_and_zero_line_items_are_accepted() -> None:
    """Line-item totals may be zero or negative (discounts); the order total may not."""
    body = example_create()
    body["line_items"] += [
        {"identifier": "DISCOUNT", "total": -500},
        {"identifier": "GIFT", "total": 0, "quantity": 0},
    ]
    assert validate_create(body) == []


def test_every_problem_is_reported_at_once() -> None:
    """Several bad fields give several problems, in a stable order."""
    body = example_create()
    body.update(total=1.5, currency="usd")
    body["line_items"][0]["quantity"] = "2"
    assert problem_fields(validate_create(body)) == [
        "total",
        "currency",
        "line_items[0].quantity",
    ]


# --- properties over large input spaces --------------------------------------------------------


@given(json_values.filter(lambda value: not isinstance(value, dict)))
def test_a_body_that_is_not_an_object_is_refused(body: object) -> None:
    """Only a JSON object can be an order."""
    assert problem_fields(validate_create(body)) == ["body"]
    assert problem_fields(validate_update(body)) == ["body"]


@given(st.dictionaries(st.sampled_from([*example_create(), "x"]), json_values, max_size=8))
def test_validation_never_raises(body: dict[str, Any]) -> None:
    """Arbitrary JSON in known and unknown fields gives problems, never an exception."""
    problems = validate_create(body)
    assert all(isinstance(p, str) and ": " in p for p in problems)


@given(st.integers())
def test_total_is_valid_exactly_in_the_int32_non_negative_range(total: int) -> None:
    """0 <= total <= 2**31 - 1."""
    body = example_create() | {"total": total}
    assert is_valid_create(body) == (0 <= total <= INT32_MAX)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_total_is_never_valid(total: float) -> None:
    """Totals are integers in minor units, even when the float is whole."""
    assert problem_fields(validate_create(example_create() | {"total": total})) == ["total"]


@given(order_ids)
def test_printable_ascii_order_ids_up_to_255_are_valid(order_id: str) -> None:
    """Any printable ASCII order_id of 1-255 characters passes."""
    assert validate_order_id(order_id) == []


@given(st.text(min_size=1, max_size=255).filter(lambda text: not text.isascii()))
def test_non_ascii_order_ids_are_refused(order_id: str) -> None:
    """order_id is treated as ASCII."""
    assert problem_fields(validate_order_id(order_id)) == ["order_id"]


@given(btn_refs)
def test_url_safe_tokens_up_to_255_are_valid(btn_ref: str) -> None:
    """Any URL-safe btn_ref of 1-255 characters passes."""
    assert validate_btn_ref(btn_ref) == []


@given(st.text(min_size=1, max_size=50).filter(lambda text: set(text) - set(URL_SAFE)))
def test_tokens_with_other_characters_are_refused(btn_ref: str) -> None:
    """btn_ref must be URL-safe."""
    assert problem_fields(validate_btn_ref(btn_ref)) == ["btn_ref"]


@given(st.text(alphabet=string.ascii_uppercase, min_size=3, max_size=3))
def test_currency_is_valid_exactly_when_iso_4217_lists_it(code: str) -> None:
    """Three upper-case letters pass only when ISO 4217 lists them."""
    assert is_valid_create(example_create() | {"currency": code}) == (code in ISO4217_CODES)


@given(dates)
def test_iso8601_date_times_with_a_zone_parse(text: str) -> None:
    """Every zoned ISO-8601 date-time the strategy produces parses to an aware datetime."""
    parsed = parse_iso8601(text)
    assert parsed is not None
    assert parsed.tzinfo is not None


@given(st.datetimes(min_value=datetime(1970, 1, 2)))
def test_date_times_without_a_zone_are_refused(moment: datetime) -> None:
    """A local time is ambiguous: purchase_date needs Z or an offset."""
    text = moment.isoformat(timespec="seconds")
    assert problem_fields(validate_create(example_create() | {"purchase_date": text})) == [
        "purchase_date"
    ]


def test_fractional_seconds_beyond_microseconds_parse() -> None:
    """Nanosecond fractions (as some producers send) are accepted and truncated."""
    parsed = parse_iso8601("2024-05-01T14:03:22.123456789Z")
    assert parsed == datetime(2024, 5, 1, 14, 3, 22, 123456, tzinfo=UTC)


@given(st.binary())
def test_sha256_hex_digests_are_valid_email_hashes(raw: bytes) -> None:
    """hashlib's hex digest is exactly the accepted form."""
    body = example_create()
    body["customer"]["email_sha256"] = hashlib.sha256(raw).hexdigest()
    assert validate_create(body) == []


def test_validation_does_not_modify_the_body() -> None:
    """Validation is pure: the body is left as it was."""
    body = example_create() | {"total": "bad"}
    before = copy.deepcopy(body)
    validate_create(body)
    assert before == body


def test_null_optional_fields_are_refused() -> None:
    """Optional fields are omitted, never null."""
    body = example_create() | {"customer_order_id": None}
    assert validate_create(body) == [
        "customer_order_id: must not be null (omit optional fields instead)"
    ]


# --- the faults document (POST /__sandbox/faults) and its injector ------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"error_rates": {"503": 1.5}}, "error_rates.503"),
        ({"error_rates": {"418": 0.1}}, "error_rates.418"),
        ({"error_rates": {"500": 0.6, "503": 0.6}}, "faults"),
        ({"latency": {"fixed_ms": -1}}, "latency.fixed_ms"),
        ({"latency": {"p50_ms": 10}}, "latency"),
        ({"latency": {"p50_ms": 10, "p99_ms": 5}}, "latency"),
        ({"retry_after": {"seconds": 1, "format": "minutes"}}, "retry_after.format"),
        ({"hang": {"rate": 0.1, "secs": 5}}, "hang"),
        ({"outage": {"seconds": 5, "status": 200}}, "outage.status"),
        ({"rules": [{"fail_first": 1}]}, "rules[0].order_id"),
        ({"rules": [{"order_id": "X", "action": "explode"}]}, "rules[0].action"),
        ({"rules": [{"order_id": "X", "operation": "refund"}]}, "rules[0].operation"),
        ({"reset_rate": True}, "reset_rate"),
        ({"latency_ms": 5}, "faults"),
        ([], "faults"),
    ],
)
def test_a_bad_faults_document_is_refused_naming_the_key(doc: object, key: str) -> None:
    """Every rule of the faults JSON has a message that starts with the key at fault."""
    with pytest.raises(FaultConfigError, match=f"^{re.escape(key)}"):
        FaultConfig.from_json(doc)


# Six random rates (four error statuses, resets, lost responses) must sum to at most 1, which
# the sandbox enforces: 6 x 1/6 keeps every generated document valid by construction.
rates = st.floats(min_value=0, max_value=1 / 6)
fault_docs = st.fixed_dictionaries(
    {},
    optional={
        "seed": st.integers(0, 2**32),
        "latency": st.one_of(
            st.builds(lambda ms: {"fixed_ms": ms}, st.floats(0, 100)),
            st.builds(lambda p50: {"p50_ms": p50, "p99_ms": p50 * 4}, st.floats(0.1, 50)),
        ),
        "error_rates": st.dictionaries(st.sampled_from(["429", "500", "502", "503"]), rates),
        "retry_after": st.builds(
            lambda s, f: {"seconds": s, "format": f},
            st.integers(0, 120),
            st.sampled_from(["seconds", "http-date"]),
        ),
        "reset_rate": rates,
        "lost_response_rate": rates,
        "accepted_rate": st.floats(0, 1),
        "outage": st.builds(lambda s: {"seconds": s, "status": 503}, st.floats(0, 60)),
        "rules": st.lists(
            st.builds(
                lambda oid, k: {"order_id": oid, "fail_first": k, "status": 500},
                order_ids,
                st.integers(0, 5),
            ),
            max_size=3,
        ),
    },
)


@given(fault_docs)
def test_a_faults_document_round_trips(doc: dict[str, Any]) -> None:
    """What GET /__sandbox/faults shows can be posted back unchanged."""
    config = FaultConfig.from_json(doc)
    assert FaultConfig.from_json(config.to_json()) == config


def test_an_empty_document_injects_nothing() -> None:
    """``{}`` clears the faults: every decision is to serve normally."""
    injector = FaultInjector(FaultConfig.from_json({}))
    assert {injector.decide("create", "A").kind for _ in range(100)} == {"none"}


def test_rules_count_attempts_per_order_and_operation() -> None:
    """A rule fails the first k matching attempts only, then lets requests through."""
    doc = {"rules": [{"order_id": "A", "operation": "update", "fail_first": 2, "status": 429}]}
    injector = FaultInjector(FaultConfig.from_json(doc))
    kinds = [
        injector.decide(operation, order_id).status
        for operation, order_id in [
            ("create", "A"),
            ("update", "B"),
            ("update", "A"),
            ("update", "A"),
            ("update", "A"),
        ]
    ]
    assert kinds == [0, 0, 429, 429, 0]
    assert injector.state()["rule_attempts"] == [2]


def test_an_outage_lasts_its_seconds_from_when_it_was_set() -> None:
    """outage.seconds counts from configure(); the clock is injected."""
    clock = FakeClock()
    injector = FaultInjector(
        FaultConfig.from_json({"outage": {"seconds": 5, "status": 502}}), monotonic=clock
    )
    assert injector.decide("get", None).status == 502
    clock.now += 4.9
    assert injector.decide("get", None).status == 502
    clock.now += 0.2
    assert injector.decide("get", None).kind == "none"


def test_retry_after_as_an_http_date_is_relative_to_the_wall_clock() -> None:
    """An HTTP-date Retry-After names the moment ``seconds`` ahead."""
    doc = {"error_rates": {"429": 1.0}, "retry_after": {"seconds": 60, "format": "http-date"}}
    injector = FaultInjector(FaultConfig.from_json(doc), wall=lambda: 1_700_000_000.0)
    assert injector.decide("create", "A").retry_after == "Tue, 14 Nov 2023 22:14:20 GMT"


@given(st.integers(0, 2**32), st.floats(0.01, 0.99))
def test_random_faults_are_reproducible_from_the_seed(seed: int, rate: float) -> None:
    """Two injectors with the same seed make the same decisions in the same order."""
    doc = {"seed": seed, "error_rates": {"503": rate}, "latency": {"p50_ms": 1, "p99_ms": 9}}
    first = FaultInjector(FaultConfig.from_json(doc))
    second = FaultInjector(FaultConfig.from_json(doc))
    assert [first.decide("get", None) for _ in range(20)] == [
        second.decide("get", None) for _ in range(20)
    ]
