"""Button's order as the base of a refund, when the profile does not know the order.

A partial refund needs its order's lines and total. The profile may not know the order: a
merchant migrating from another integration (mParticle's Button integration, a direct one)
refunds orders created before the switch; an order was dropped from a capped profile or expired
from it; a lost changelog was recreated. The mapping then asks for the order to be read
(``GET /v1/order/{id}``, ``button.Read``) and, given Button's answer (``Lookup``), adopts Button's
state as the order's content: the refund applies to what Button holds. This module checks
Button's object and turns it into the profile's terms (``button_order``); pure, like the rest
of the domain.

Button's object is taken only when the service can send it back unchanged but for the refund:
an update carries the order's whole state, so a line item field the service cannot carry
(``upc``, anything unknown), or a line whose ``total`` is not its ``amount`` times its
``quantity``, would be dropped or changed by it. Such an order, or one missing a field the
update needs (``total``, ``currency``, ``purchase_date``), is not adoptable: ``MappingError``
``order_not_adoptable``, its message starting with the field (``line_items[1].upc: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

from consumer.domain.button_wire import MAX_ID_LENGTH
from consumer.domain.currency import INT32_MAX, INT32_MIN, minor_unit_exponent
from consumer.domain.profile import StoredLine, epoch_ms
from consumer.errors import MappingError

__all__ = ["DELETED", "LINE_ITEM_FIELDS", "ButtonOrder", "Lookup", "button_order"]

DELETED = "deleted"
"""The status of an order Button removed for good (cancelled): nothing is left to refund."""

LINE_ITEM_FIELDS = frozenset(
    {"identifier", "sku", "description", "category", "quantity", "amount", "total", "attributes"}
)
"""The line item fields the service carries (``StoredLine``); an update sends only these."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Button's answer to the read of ``order_id`` (a ``Read``), for the mapping's second pass.

    ``found``: Button answered with the order (a 2xx), ``order`` being its object (``None``
    when the answer carried none); ``False``: Button answered 404 in its envelope, it does not
    know the order.
    """

    order_id: str
    found: bool
    order: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ButtonOrder:
    """The order as Button holds it, in the profile's terms. Only ``status`` for a deleted one."""

    status: str
    currency: str = ""
    exponent: int = 0
    total: int = 0
    purchase_ms: int = 0
    lines: tuple[StoredLine, ...] = ()
    btn_ref: str | None = None

    @property
    def deleted(self) -> bool:
        return self.status == DELETED


def button_order(obj: Mapping[str, Any] | None, order_id: str) -> ButtonOrder:
    """Button's object of ``order_id`` (``GET /v1/order/{id}``), checked and converted.

    Any status but ``deleted`` is taken as is (``open``; a ``finalized`` order's update is
    answered as Button answers it). Fields beyond the service's order body (``button_order_id``,
    ``finalization_date``, ``customer``, ``customer_order_id``...) are not read, and the update
    does not send them back, as no update the service sends does; whether Button keeps them on
    an update is not documented (the project's sandbox keeps only ``btn_ref``, ``purchase_date``
    and ``finalization_date``).

    Raises:
        MappingError: ``order_not_adoptable``, the message starting with the field.
    """
    if not isinstance(obj, Mapping):
        _fail("object", "Button's answer carries no order object")
    status = obj.get("status")
    if not isinstance(status, str) or not status:
        _fail("status", f"must be a non-empty string, got {_kind(status)}")
    if "order_id" in obj and obj["order_id"] != order_id:
        _fail("order_id", f"{obj['order_id']!r} is not the order read ({order_id!r})")
    if status == DELETED:
        return ButtonOrder(status)
    total = _int(obj.get("total"), "total", minimum=0)
    currency, exponent = _currency(obj.get("currency"))
    btn_ref = obj.get("btn_ref")
    if btn_ref is not None and (not isinstance(btn_ref, str) or not btn_ref):
        _fail("btn_ref", f"must be a non-empty string or null, got {_kind(btn_ref)}")
    items = obj.get("line_items")
    if items is not None and not isinstance(items, list):
        _fail("line_items", f"must be an array, got {_kind(items)}")
    lines = tuple(_line(item, f"line_items[{i}]", exponent) for i, item in enumerate(items or ()))
    return ButtonOrder(
        status=status,
        currency=currency,
        exponent=exponent,
        total=total,
        purchase_ms=_purchase_ms(obj.get("purchase_date")),
        lines=lines,
        btn_ref=btn_ref,
    )


def _line(item: Any, field: str, exponent: int) -> StoredLine:
    if not isinstance(item, Mapping):
        _fail(field, f"must be an object, got {_kind(item)}")
    for name in item:
        if name not in LINE_ITEM_FIELDS:
            _fail(
                f"{field}.{name}",
                "a line item field the service cannot carry (an update would drop it)",
            )
    identifier = item.get("identifier")
    if not isinstance(identifier, str) or not identifier or len(identifier) > MAX_ID_LENGTH:
        _fail(f"{field}.identifier", f"must be a string of 1-{MAX_ID_LENGTH} characters")
    quantity = _int(item.get("quantity", 1), f"{field}.quantity", minimum=0)
    unit = _unit_amount(item, field, quantity)
    category = item.get("category", [])
    if not isinstance(category, list) or not all(isinstance(c, str) for c in category):
        _fail(f"{field}.category", f"must be an array of strings, got {_kind(category)}")
    attributes = item.get("attributes", {})
    if not isinstance(attributes, Mapping):
        _fail(f"{field}.attributes", f"must be an object of strings, got {_kind(attributes)}")
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, str):
            _fail(f"{field}.attributes.{key}", f"must be a string, got {_kind(value)}")
    return StoredLine(
        identifier=identifier,
        quantity=quantity,
        price=None if unit is None else format(Decimal(unit).scaleb(-exponent), "f"),
        sku=_optional_string(item, "sku", field),
        description=_optional_string(item, "description", field),
        category=tuple(category),
        attributes=tuple(sorted(attributes.items())),
    )


def _unit_amount(item: Mapping[str, Any], field: str, quantity: int) -> int | None:
    """The line's unit amount in minor units, such that it times ``quantity`` is its ``total``
    (the service derives a line's total from its unit price); ``None`` for an empty line
    without one."""
    total = _int(item.get("total"), f"{field}.total", minimum=INT32_MIN)
    amount = item.get("amount")
    if amount is not None:
        unit = _int(amount, f"{field}.amount", minimum=INT32_MIN)
        if unit * quantity != total:
            _fail(f"{field}.total", f"{total} is not amount x quantity ({unit} x {quantity})")
        return unit
    if quantity == 0:
        if total != 0:
            _fail(f"{field}.total", f"{total} for a quantity of 0")
        return None
    if total % quantity:
        _fail(
            f"{field}.total",
            f"{total} is not a whole number of minor units per unit ({quantity}) and the line"
            " has no amount",
        )
    return total // quantity


def _optional_string(item: Mapping[str, Any], name: str, field: str) -> str | None:
    value = item.get(name)
    if value is not None and not isinstance(value, str):
        _fail(f"{field}.{name}", f"must be a string, got {_kind(value)}")
    return value


def _int(value: Any, field: str, *, minimum: int) -> int:
    if value is None:
        _fail(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(field, f"must be an integer (minor units), got {_kind(value)}")
    if not minimum <= value <= INT32_MAX:
        _fail(field, f"{value} is outside {minimum}..{INT32_MAX}")
    return value


def _currency(value: Any) -> tuple[str, int]:
    if not isinstance(value, str) or not value:
        _fail("currency", f"must be an ISO 4217 code, got {_kind(value)}")
    code = value.strip().upper()
    try:
        return code, minor_unit_exponent(code)
    except MappingError as exc:
        _fail("currency", str(exc))


def _purchase_ms(value: Any) -> int:
    if not isinstance(value, str):
        _fail("purchase_date", f"must be an ISO-8601 date-time, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        _fail("purchase_date", f"{value!r} is not an ISO-8601 date-time")
    if moment.tzinfo is None or moment.utcoffset() is None:
        _fail("purchase_date", f"{value!r} has no time zone")
    return epoch_ms(moment)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _fail(field: str, message: str) -> NoReturn:
    raise MappingError("order_not_adoptable", f"{field}: {message}")
