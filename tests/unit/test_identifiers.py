"""Identifiers as users send them: surrounding whitespace is not part of an id.

Merchants' pipelines pad and trail ids (CSV exports, form fields): ``" B5 "``, ``"B5\\n"`` and
``"B5"`` name one order. The event model strips surrounding whitespace from the order id
(``transaction_id``), product ids and SKUs, the customer id and the currency code once, when the
event is built, so the profile, the mapping, parking and the dead letters all see one identity;
case is kept. The user key is not changed (it is the Kafka key's business: see the README).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from consumer.domain.button import Reject, Send
from consumer.domain.event_forms import event_from_record, event_to_record
from consumer.domain.events import (
    ID_WHITESPACE,
    CommerceData,
    CommerceEvent,
    EventType,
    Product,
    ProductAction,
    stripped_id,
)
from consumer.domain.mapping import process
from consumer.errors import InvalidEventError
from tests.unit.test_mapping import CONFIG, NOW, event

# The ways pipelines pad an id: spaces, a CSV line's end, a tab, a no-break space from a sheet.
PADDINGS = [" B5 ", "B5\n", "B5\r\n", "\tB5", "\u00a0B5\u3000", " \x0bB5\x0c "]


def _purchase(order_id: str = "B5", **commerce: Any) -> CommerceEvent:
    c: dict[str, Any] = {
        "action": "PURCHASE",
        "transaction_id": order_id,
        "currency_code": "USD",
        "total_amount": "60.00",
        "tax_amount": "0",
        "shipping_amount": "0",
        "products": [
            {"id": "SKU-1", "price": "20.00", "quantity": 1},
            {"id": "SKU-2", "price": "40.00", "quantity": 1},
        ],
    }
    c.update(commerce)
    return event(event_id="evt-purchase", commerce=c)


def _refund(order_id: str, **commerce: Any) -> CommerceEvent:
    c: dict[str, Any] = {"action": "REFUND", "transaction_id": order_id}
    c.update(commerce)
    return event(event_id="evt-refund", event_type="REFUND", commerce=c)


def _decoded(**commerce: Any) -> CommerceEvent:
    """The purchase through the service's own path: a decoded Avro record with ``commerce``
    fields replaced as given (the model's rules are not applied to what is written)."""
    record = event_to_record(_purchase())
    record["commerce"].update(commerce)
    return event_from_record(record)


def _send(result: object) -> Any:
    assert isinstance(result, Send), result
    return result.request


# --- the order id ---------------------------------------------------------------------------


@pytest.mark.parametrize("padded", PADDINGS)
def test_a_padded_transaction_id_is_the_order_it_names(padded: str) -> None:
    """Decoded or read as JSON, the event's order id is the id without its padding."""
    assert (_decoded(transaction_id=padded).order_id, _purchase(padded).order_id) == ("B5", "B5")


def test_an_order_ids_case_and_inner_spaces_are_kept() -> None:
    """Merchants' ids may be case-sensitive, and a space inside an id is part of it."""
    assert [_purchase(i).order_id for i in ("b5", " B 5 ", "ORD-b5")] == ["b5", "B 5", "ORD-b5"]


def test_a_refund_with_a_padded_transaction_id_reduces_its_order() -> None:
    """A purchase of ``B5`` and a refund of ``" B5 "`` are one order: the refund of the second
    line updates ``B5`` (not a read of another order, held for a purchase that never comes)."""
    _, profile = process(_purchase("B5"), None, CONFIG, NOW)

    result, after = process(_refund(" B5 ", products=[{"id": "SKU-2"}]), profile, CONFIG, NOW)

    request = _send(result)
    assert (request.method, request.path, request.body["total"]) == ("POST", "/v1/order/B5", 2000)
    assert after is not None
    assert [o.order_id for o in after.orders] == ["B5"]


def test_a_padded_purchase_is_created_under_its_stripped_id() -> None:
    """Button is sent ``B5``, never ``" B5 "`` (which it would hold as another order)."""
    result, profile = process(_purchase(" B5\n"), None, CONFIG, NOW)

    request = _send(result)
    assert (request.order_id, request.body["order_id"]) == ("B5", "B5")
    assert profile is not None
    assert [o.order_id for o in profile.orders] == ["B5"]


def test_a_whole_refund_with_a_trailing_newline_cancels_its_order() -> None:
    """A refund naming no products and no amount of ``"B5\\n"`` deletes ``B5``."""
    _, profile = process(_purchase("B5"), None, CONFIG, NOW)

    result, _ = process(_refund("B5\n"), profile, CONFIG, NOW)

    request = _send(result)
    assert (request.method, request.path) == ("DELETE", "/v1/order/B5")


@pytest.mark.parametrize("blank", ["   ", "\t\n", "\u00a0"])
def test_a_blank_transaction_id_is_the_missing_order_id_rejection(blank: str) -> None:
    """Nothing is left once the padding is gone: rejected ``missing_order_id``, as before."""
    result, profile = process(_purchase(blank), None, CONFIG, NOW)

    assert isinstance(result, Reject)
    assert (result.reason, profile) == ("missing_order_id", None)


def test_an_invalid_events_dead_letter_names_the_stripped_order() -> None:
    """The order id a refused record's dead letter carries is the one its valid events have, so
    ``replay-dlq --order-id B5`` finds it."""
    record = event_to_record(_purchase())
    record["commerce"]["transaction_id"] = " B5 "
    record["commerce"]["total_amount"] = Decimal("-1.00")

    with pytest.raises(InvalidEventError) as info:
        event_from_record(record)

    assert (info.value.reason, info.value.order_id) == ("negative_amount", "B5")


def test_an_event_built_directly_is_stripped_too() -> None:
    """The rule is the model's: an event built in code (``test-event``, samples) gets it."""
    built = CommerceEvent(
        event_id="e-1",
        event_type=EventType.PURCHASE,
        event_time=_purchase().event_time,
        user_key="u-1",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=" B5 ",
            currency_code=" usd ",
            total_amount=Decimal(1),
            products=(Product(id=" SKU-1 ", sku=" S-1 "),),
        ),
    )
    assert built.commerce is not None
    product = built.commerce.products[0]
    assert (built.order_id, built.commerce.currency_code, product.id, product.sku) == (
        "B5",
        "USD",
        "SKU-1",
        "S-1",
    )


# --- product ids and SKUs -------------------------------------------------------------------


def test_a_refund_naming_a_padded_product_id_reduces_that_line() -> None:
    """A refund names lines by product id: ``" SKU-2 "`` is the purchase's ``SKU-2`` (not
    ``refund_item_not_in_order``)."""
    _, profile = process(_purchase(), None, CONFIG, NOW)

    result, _ = process(_refund("B5", products=[{"id": " SKU-2\n"}]), profile, CONFIG, NOW)

    body = _send(result).body
    assert (body["total"], [i["identifier"] for i in body["line_items"]]) == (2000, ["SKU-1"])


def test_a_padded_product_id_and_sku_reach_button_stripped() -> None:
    """``identifier`` and ``sku`` are sent without padding; a blank SKU is none (the id)."""
    products = [
        {"id": " SKU-1 ", "sku": " S-1\t", "price": "20.00"},
        {"id": "SKU-2\n", "sku": "  ", "price": "40.00"},
    ]
    result, _ = process(_purchase(products=products), None, CONFIG, NOW)

    items = _send(result).body["line_items"]
    assert [(i["identifier"], i["sku"]) for i in items] == [("SKU-1", "S-1"), ("SKU-2", "SKU-2")]


def test_a_blank_product_id_is_refused_empty_field() -> None:
    """A product id of whitespace only names no line: refused like an empty one."""
    with pytest.raises(InvalidEventError) as info:
        _decoded(products=[{**event_to_record(_purchase())["commerce"]["products"][0], "id": " "}])

    assert info.value.reason == "empty_field"


# --- customer id, currency, btn_ref, user key ------------------------------------------------


@pytest.mark.parametrize(
    "identities",
    [
        {"customer_id": " cust-9\n"},
        [{"identity_type": "customer_id", "identity": "\tcust-9 "}],
    ],
)
def test_a_padded_customer_id_is_sent_stripped(identities: object) -> None:
    """``customer.id`` is the merchant's customer id without padding, case kept."""
    evt = event(event_id="evt-purchase", user_identities=identities, commerce=_commerce())
    result, _ = process(evt, None, CONFIG, NOW)

    assert _send(result).body["customer"]["id"] == "cust-9"


def test_a_blank_customer_id_is_none() -> None:
    """A customer id of whitespace only is absent: the event carries none."""
    evt = event(
        user_identities={"customer_id": " \n"},
        event_type="CHECKOUT",
        commerce={"action": "CHECKOUT"},
    )

    assert evt.user_identities is not None
    assert evt.user_identities.customer_id is None


@pytest.mark.parametrize("given", [" usd ", "usd\n", "\tUsd"])
def test_a_padded_currency_code_is_its_code(given: str) -> None:
    """Decoded or read as JSON, ``" usd "`` is USD (letter case does not matter for ISO 4217)."""
    decoded, read = _decoded(currency_code=given).commerce, _purchase(currency_code=given).commerce
    assert decoded is not None
    assert read is not None
    assert (decoded.currency_code, read.currency_code) == ("USD", "USD")


def test_a_blank_currency_code_is_none() -> None:
    """A currency of whitespace only is no currency: a purchase without one is refused
    ``missing_currency``; a refund needs none and applies."""
    with pytest.raises(InvalidEventError) as info:
        _decoded(currency_code="  ")
    assert info.value.reason == "missing_currency"

    _, profile = process(_purchase(), None, CONFIG, NOW)
    result, _ = process(
        _refund("B5", currency_code=" ", total_amount="10.00"), profile, CONFIG, NOW
    )
    assert _send(result).body["total"] == 5000


def test_a_padded_btn_ref_is_sent_stripped() -> None:
    """The token was already taken without its padding (``attribution.clean_btn_ref``)."""
    token = "srctok-0123456789abcdef"
    result, _ = process(event(btn_ref=f" {token}\n", commerce=_commerce()), None, CONFIG, NOW)

    assert _send(result).body["btn_ref"] == token


def test_the_user_key_is_kept_as_given() -> None:
    """The user key is not stripped: the profile is the Kafka key's, chosen by the producer."""
    assert (
        event(user_key=" u-1 ", event_type="CHECKOUT", commerce={"action": "CHECKOUT"}).user_key
        == " u-1 "
    )


def _commerce() -> dict[str, Any]:
    return dict(event_to_record(_purchase())["commerce"])


# --- the rule itself ------------------------------------------------------------


def test_the_whitespace_stripped_is_pythons_unicode_whitespace() -> None:
    """The characters the README lists are exactly those ``str.strip()`` removes."""
    every = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert set(ID_WHITESPACE) == every
    assert stripped_id(f"{ID_WHITESPACE}B 5{ID_WHITESPACE}") == "B 5"
