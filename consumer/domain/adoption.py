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
(``upc``, anything unknown), or a line no unit price of the service's reproduces, would be
dropped or changed by it. Such an order, or one missing a field the update needs (``total``,
``currency``, ``purchase_date``), is not adoptable: ``MappingError`` ``order_not_adoptable``,
its message starting with the field (``line_items[1].upc: ...``).

A line is stored as a unit price (``StoredLine.price``, major units) and sent as ``amount`` =
the price in minor units rounded, and ``total`` = price x quantity in minor units rounded
(``button_wire._line_item`` and ``line_total``; one rounding each, ``currency.ROUNDING``,
half-even). A price finer than the minor unit with a quantity above 1 makes a ``total`` that is
not ``amount`` x ``quantity`` (0.333 USD x 3: amount 33, total 100), so a line of Button's is
adoptable when *some* unit price gives both its ``amount`` and its ``total`` (``_unit_price``):
the price chosen is the shortest decimal that does, and re-sending it reproduces the line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, NoReturn

from consumer.domain.button_wire import line_total
from consumer.domain.currency import INT32_MAX, INT32_MIN, minor_unit_exponent, to_minor_units
from consumer.domain.identity import is_sha256_hex
from consumer.domain.profile import StoredCustomer, StoredLine, epoch_ms
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
    customer: StoredCustomer | None = None
    """Button's ``customer`` (``None`` when it holds none), kept with the adopted order so that
    its updates send it back."""

    @property
    def deleted(self) -> bool:
        return self.status == DELETED


def button_order(obj: Mapping[str, Any] | None, order_id: str) -> ButtonOrder:
    """Button's object of ``order_id`` (``GET /v1/order/{id}``), checked and converted.

    Any status but ``deleted`` is taken as is (``open``; a ``finalized`` order's update is
    answered as Button answers it). Its ``customer`` (``id``, ``email_sha256``, ``device_id``,
    each optional) is kept as Button returned it (``ButtonOrder.customer``), and every update of
    the adopted order sends it back, as it sends a created order's create customer: Button may
    read an update as the order's whole new state. Other fields beyond the service's order body
    (``button_order_id``, ``finalization_date``, ``customer_order_id``...) are not read, and the
    update does not send them back (the service sends no ``customer_order_id``); whether Button
    keeps them on an update is not documented (the project's sandbox keeps only ``btn_ref``,
    ``purchase_date`` and ``finalization_date``).

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
        customer=_customer(obj.get("customer")),
    )


_CUSTOMER_FIELDS = frozenset({"id", "email_sha256", "device_id"})
"""The ``customer`` fields the service sends, and so can send back."""


def _customer(value: Any) -> StoredCustomer | None:
    """Button's ``customer`` as the adopted order keeps it; ``None`` when absent or null.
    Refused (``order_not_adoptable``) when the service could not send it back as Button holds
    it: not an object, a field it does not carry (``is_new``: an update would drop it), an
    empty or non-string value, an ``email_sha256`` that is not 64 lower-case hex digits."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _fail("customer", f"must be an object, got {_kind(value)}")
    for name in value:
        if name not in _CUSTOMER_FIELDS:
            _fail(
                f"customer.{name}",
                "a customer field the service cannot carry (an update would drop it)",
            )
    found: dict[str, str] = {}
    for name in sorted(_CUSTOMER_FIELDS):
        field = value.get(name)
        if field is None:
            continue
        if not isinstance(field, str) or not field:
            _fail(f"customer.{name}", f"must be a non-empty string, got {_kind(field)}")
        found[name] = field
    email = found.get("email_sha256")
    if email is not None and not is_sha256_hex(email):
        _fail("customer.email_sha256", "must be 64 lower-case hex digits (a SHA-256 digest)")
    if not found:
        return None
    return StoredCustomer(id=found.get("id"), email_sha256=email, device_id=found.get("device_id"))


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
    if not isinstance(identifier, str) or not identifier:
        # Any length: Button documents no limit for it, and the service sends product ids as is.
        _fail(f"{field}.identifier", "must be a non-empty string")
    quantity = _int(item.get("quantity", 1), f"{field}.quantity", minimum=0)
    price = _price(item, field, quantity, exponent)
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
        price=price,
        sku=_optional_string(item, "sku", field),
        description=_optional_string(item, "description", field),
        category=tuple(category),
        attributes=tuple(sorted(attributes.items())),
    )


def _price(item: Mapping[str, Any], field: str, quantity: int, exponent: int) -> str | None:
    """The line's unit price in major units (``StoredLine.price``, decimal text) from which the
    service sends the line's ``total`` (minor units) exactly as Button holds it, and its
    ``amount`` when it has one; ``None`` for a line without ``amount`` with a quantity of 0 (a
    total of 0).

    A unit price that rounds to the ``amount`` and whose product with ``quantity`` rounds to the
    ``total`` (``_unit_price``). Without an ``amount``, any price whose product rounds to the
    ``total``: ``total`` / ``quantity`` when that is a whole number of minor units, else the
    shortest decimal that gives the total (3 units totalling 100: 33.3); the update then carries
    the price's ``amount`` (100 / 3: 33), as the service sends its own lines.
    """
    total = _int(item.get("total"), f"{field}.total", minimum=INT32_MIN)
    amount = item.get("amount")
    if amount is None:
        if quantity == 0:
            if total != 0:
                _fail(f"{field}.total", f"{total} for a quantity of 0")
            return None
        minor = _unit_price(_ANY_PRICE, _total_span(total, quantity))
        if minor is None:  # pragma: no cover - a quantity above 0 always has a price
            _fail(f"{field}.total", f"{total} is not the total of any unit price at {quantity}")
        return _checked(minor, None, total, quantity, exponent, field)
    unit = _int(amount, f"{field}.amount", minimum=INT32_MIN)
    minor = _unit_price(_Span.rounding_to(unit), _total_span(total, quantity))
    if minor is None:
        _fail(
            f"{field}.total",
            f"{total} is not the total of any unit price that rounds to amount {unit}, at"
            f" quantity {quantity} ({unit} x {quantity} = {unit * quantity}; the service"
            " sends round(price) and round(price x quantity), half-even, in minor units)",
        )
    return _checked(minor, unit, total, quantity, exponent, field)


@dataclass(frozen=True, slots=True)
class _Span:
    """The unit prices ``lo``..``hi`` (minor units, exact), each end in the span or not."""

    lo: Fraction
    hi: Fraction
    lo_in: bool
    hi_in: bool

    @classmethod
    def rounding_to(cls, minor: int, times: int = 1) -> _Span:
        """The unit prices ``p`` whose ``p x times`` the service rounds to ``minor``.

        Round-to-nearest: ``minor - 1/2 .. minor + 1/2`` over ``times``; an end (a tie) is in
        the span when the service's own rounding (``currency.to_minor_units``, half-even: an
        even ``minor``) takes it to ``minor``.
        """
        half = Decimal("0.5")
        return cls(
            lo=(minor - Fraction(1, 2)) / times,
            hi=(minor + Fraction(1, 2)) / times,
            lo_in=to_minor_units(minor - half, 0) == minor,
            hi_in=to_minor_units(minor + half, 0) == minor,
        )

    def meet(self, other: _Span) -> _Span:
        """The prices in both spans (empty when ``lo > hi``, or ``lo == hi`` with an end out)."""
        lo = max(self.lo, other.lo)
        hi = min(self.hi, other.hi)
        return _Span(
            lo=lo,
            hi=hi,
            lo_in=(self.lo_in or self.lo < lo) and (other.lo_in or other.lo < lo),
            hi_in=(self.hi_in or self.hi > hi) and (other.hi_in or other.hi > hi),
        )


_ANY_PRICE = _Span(Fraction(-(2**64)), Fraction(2**64), lo_in=True, hi_in=True)
"""Every price (far beyond int32 minor units): the total of a quantity of 0 is 0 whatever it is."""
_MAX_PLACES = 40
"""Decimal places tried for a price inside a span (``_unit_price``); a span of Button's int32
amounts is at least 1 / (2 x 2**31) wide, so about 11 places always suffice."""


def _total_span(total: int, quantity: int) -> _Span | None:
    """The unit prices (minor units) whose product with ``quantity`` the service rounds to
    ``total``; ``None`` when there is none (a quantity of 0 with a total other than 0)."""
    if quantity == 0:
        return _ANY_PRICE if total == 0 else None
    return _Span.rounding_to(total, quantity)


def _unit_price(amount: _Span, total: _Span | None) -> Fraction | None:
    """A unit price (minor units, exact) in both spans, or ``None`` when none is.

    Strictly inside both when they overlap by more than a point (so neither rounding meets a
    tie): the decimal with the fewest places there, nearest the middle (for ``amount`` x
    ``quantity`` == ``total`` that is the ``amount`` itself). When the spans only touch, the
    point itself if both roundings take it (a tie each: JPY 99.5 x 3 is amount 100, total 298).
    """
    if total is None:
        return None
    both = amount.meet(total)
    if both.lo == both.hi:
        return both.lo if both.lo_in and both.hi_in else None
    if both.lo > both.hi:
        return None
    middle = (both.lo + both.hi) / 2
    for places in range(_MAX_PLACES + 1):
        scale = 10**places
        first = math.floor(both.lo * scale) + 1  # the first multiple of 1/scale above lo
        last = math.ceil(both.hi * scale) - 1  # and the last below hi
        if first <= last:
            return Fraction(min(max(round(middle * scale), first), last), scale)
    return None  # pragma: no cover - a span of int32 amounts is never this narrow


def _checked(
    minor: Fraction, amount: int | None, total: int, quantity: int, exponent: int, field: str
) -> str:
    """``minor`` (a unit price in minor units) as the major-unit text ``StoredLine.price``
    holds, once the service's own encoding (``to_minor_units``, ``line_total``) is seen to
    send ``amount`` and ``total`` from it unchanged."""
    price = format(_decimal(minor).scaleb(-exponent), "f")
    sent_amount = to_minor_units(Decimal(price), exponent)
    sent_total = line_total(StoredLine("", quantity, price), exponent)
    if (amount is not None and sent_amount != amount) or sent_total != total:
        _fail(  # pragma: no cover - _unit_price's spans are the encoding's own rounding
            f"{field}.total",
            f"unit price {price} would be sent as amount {sent_amount}, total {sent_total}",
        )
    return price


def _decimal(value: Fraction) -> Decimal:
    """``value`` exactly, for a fraction whose denominator divides a power of 10."""
    for places in range(_MAX_PLACES + 1):
        scaled = value * 10**places
        if scaled.denominator == 1:
            return Decimal(scaled.numerator).scaleb(-places)
    raise ValueError(f"{value} has no short decimal form")  # pragma: no cover


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
