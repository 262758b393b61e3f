"""The commerce event model: what a merchant's event means once its bytes are decoded.

The model mirrors ``schemas/commerce_event.avsc`` field for field (same names, same nesting), so
that a merchant who knows the schema, or mParticle's event model it follows, can read the code.
It exists so that the rest of the service works with typed, validated values (``Decimal``
amounts, UTC datetimes, enums) instead of decoder dictionaries, and so that an event which is
well-formed Avro but meaningless (a purchase without an order id, a negative total) is refused
once, here, with a named reason. Its conversions to and from the decoded Avro record and the
plain-JSON form are in ``consumer.domain.event_forms``.

Invariants enforced on every ``CommerceEvent`` (violations raise ``InvalidEventError``, a
``DecodeError``, with a reason from ``EventReason`` and a message naming the field and its value
where it has one):

* identifiers are taken without surrounding whitespace (``stripped_id``: the characters of
  ``ID_WHITESPACE``), case and inner characters kept, so that ``" B5 "``, ``"B5\n"`` and
  ``"B5"`` are one order everywhere after: the order id (``transaction_id``; one that is blank
  is kept as given, and the mapping rejects it ``missing_order_id``), product ids and SKUs (a
  refund names its lines by product id), the customer id and the currency code (also
  upper-cased); a blank SKU, customer id or currency code is none. ``event_id`` and
  ``user_key`` are kept as given: the user key is the Kafka key's, and the producer chose the
  partition from its bytes;
* ``event_id``, ``user_key`` and product ids are non-empty (a blank product id is empty);
  ``user_key`` is at most ``MAX_KEY_BYTES`` bytes in UTF-8;
* ``event_time`` is timezone-aware; it is stored in UTC, truncated to milliseconds;
* amounts have at most 6 decimal places and 14 integer digits (the schema's decimal(20, 6));
  order-level amounts are never negative (a product price may be: a discount line);
* quantities are whole numbers >= 0 that fit an Avro int;
* ``currency_code`` is three ASCII letters, stored upper-case;
* a PURCHASE or REFUND event carries commerce data with the same action and a transaction id; a
  PURCHASE also carries a currency; a commerce action PURCHASE or REFUND appears only on an event
  of that type (or on an UNKNOWN event type from a newer producer, which the mapper skips).

Amounts are decimals in major units (``Decimal("12.34")`` USD, ``Decimal("1234")`` JPY,
``Decimal("1.234")`` KWD); converting them to Button's minor units is the mapper's job, with the
ISO 4217 exponent of the currency.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from consumer.errors import InvalidEventError

__all__ = [
    "AMOUNT_INTEGER_DIGITS",
    "AMOUNT_PRECISION",
    "AMOUNT_SCALE",
    "BUTTON_MODULE_ID",
    "BUTTON_SOURCE_TOKEN_KEY",
    "ID_WHITESPACE",
    "AttAuthorizationStatus",
    "CommerceData",
    "CommerceEvent",
    "DeviceInfo",
    "Environment",
    "EventReason",
    "EventType",
    "Platform",
    "Product",
    "ProductAction",
    "UserIdentities",
    "stripped_id",
]

AMOUNT_PRECISION = 20
"""Total digits of every amount: the ``precision`` of the schema's decimal type."""
AMOUNT_SCALE = 6
"""Decimal places of every amount: the ``scale`` of the schema's decimal type.

ISO 4217 minor units go up to 4 digits (CLF, UYW); 6 covers every currency exactly and leaves two
digits for unit prices finer than the minor unit (a 3-for-10.00 unit price, fuel per litre).
"""
AMOUNT_INTEGER_DIGITS = AMOUNT_PRECISION - AMOUNT_SCALE
"""Digits left of the point: 14, i.e. below 10**14 major units (ample for IDR or VND totals)."""

BUTTON_MODULE_ID = "1022"
"""mParticle's integration module id for Button, the key in ``integration_attributes``."""
BUTTON_SOURCE_TOKEN_KEY = "com.usebutton.source_token"  # noqa: S105 -- a key name, not a secret
"""The attribute under module 1022 that holds the Button attribution token."""

ID_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""The characters ``stripped_id`` removes around an identifier: Python's whitespace
(``str.isspace``), the same set the service already trims around a ``btn_ref``, an email and an
advertising id. ASCII's tab, line feed, vertical tab, form feed, carriage return, the file,
group, record and unit separators (U+001C-U+001F) and space; U+0085 (next line), U+00A0
(no-break space), U+1680, U+2000-U+200A (the typographic spaces), U+2028, U+2029 (line and
paragraph separators), U+202F, U+205F and U+3000 (ideographic space). Zero-width characters
(U+200B, U+FEFF) are not whitespace: an id that carries them is not printable ASCII, and the
mapping refuses it."""

_INT_MAX = 2**31 - 1
_CURRENCY = re.compile(r"[A-Z]{3}")
_MAX_AMOUNT = Decimal(10) ** AMOUNT_INTEGER_DIGITS
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)


MAX_KEY_BYTES = 2_048
"""The longest user key, in bytes (UTF-8), a profile is kept under: the record's key (a user or
customer id) is the changelog record's key beside a profile of up to
``MAPPING_MAX_PROFILE_BYTES``, inside the record margin the settings check
(``consumer.settings.RECORD_MARGIN``). A record with a longer key is dead-lettered
``key_too_large`` before it is decoded, and parks nothing; an event whose ``user_key`` is longer
is invalid with that reason (``map``, ``test-event``)."""

NO_KEY = "no_key"
"""A record without a key (null or empty): its event's profile is the keyless one."""
KEY_NOT_USER_KEY = "key_not_user_key"
"""A record whose key is not its event's ``user_key`` in UTF-8 (a producer keying by the order
id, say): the event is held in the profile of that key, which never sees the user's other
events."""
KEY_PROBLEMS = (NO_KEY, KEY_NOT_USER_KEY)
"""How a record can break the producer contract (README: every event keyed by its
``user_key``): the ``problem`` label of ``button_consumer_record_key_problems_total``."""


def key_problem(key: bytes | None, user_key: str) -> str | None:
    """How the record's ``key`` breaks the contract for an event of ``user_key``, or ``None``.

    One UTF-8 encoding and one bytes comparison: cheap enough for every record.
    """
    if not key:
        return NO_KEY
    if key != user_key.encode():
        return KEY_NOT_USER_KEY
    return None


class EventReason(StrEnum):
    """Machine reasons of the ``DecodeError`` raised for semantically invalid events."""

    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    EMPTY_FIELD = "empty_field"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_AMOUNT = "invalid_amount"
    NEGATIVE_AMOUNT = "negative_amount"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_CURRENCY = "invalid_currency"
    MISSING_COMMERCE = "missing_commerce"
    ACTION_MISMATCH = "action_mismatch"
    MISSING_TRANSACTION_ID = "missing_transaction_id"
    MISSING_CURRENCY = "missing_currency"
    KEY_TOO_LARGE = "key_too_large"


class EventType(StrEnum):
    """What happened; values are the Avro enum symbols."""

    UNKNOWN = "UNKNOWN"
    PURCHASE = "PURCHASE"
    REFUND = "REFUND"
    ADD_TO_CART = "ADD_TO_CART"
    REMOVE_FROM_CART = "REMOVE_FROM_CART"
    CHECKOUT = "CHECKOUT"
    PRODUCT_VIEW = "PRODUCT_VIEW"
    APP_INSTALL = "APP_INSTALL"
    APP_OPEN = "APP_OPEN"
    PAGE_VIEW = "PAGE_VIEW"
    SCREEN_VIEW = "SCREEN_VIEW"
    SESSION_START = "SESSION_START"
    CUSTOM = "CUSTOM"


class Platform(StrEnum):
    """Where the event was captured."""

    UNKNOWN = "UNKNOWN"
    IOS = "IOS"
    ANDROID = "ANDROID"
    WEB = "WEB"
    SERVER = "SERVER"


class Environment(StrEnum):
    """mParticle's data environment."""

    UNKNOWN = "UNKNOWN"
    PRODUCTION = "PRODUCTION"
    DEVELOPMENT = "DEVELOPMENT"


class AttAuthorizationStatus(StrEnum):
    """iOS App Tracking Transparency status."""

    UNKNOWN = "UNKNOWN"
    NOT_DETERMINED = "NOT_DETERMINED"
    RESTRICTED = "RESTRICTED"
    DENIED = "DENIED"
    AUTHORIZED = "AUTHORIZED"


class ProductAction(StrEnum):
    """mParticle's product action of a commerce event."""

    UNKNOWN = "UNKNOWN"
    ADD_TO_CART = "ADD_TO_CART"
    REMOVE_FROM_CART = "REMOVE_FROM_CART"
    CHECKOUT = "CHECKOUT"
    CHECKOUT_OPTION = "CHECKOUT_OPTION"
    CLICK = "CLICK"
    VIEW_DETAIL = "VIEW_DETAIL"
    PURCHASE = "PURCHASE"
    REFUND = "REFUND"
    ADD_TO_WISHLIST = "ADD_TO_WISHLIST"
    REMOVE_FROM_WISHLIST = "REMOVE_FROM_WISHLIST"


def _invalid(reason: EventReason, message: str) -> InvalidEventError:
    return InvalidEventError(str(reason), message)


def _check_amount(value: Decimal | None, where: str, *, signed: bool = False) -> None:
    if value is None:
        return
    if not value.is_finite():
        raise _invalid(EventReason.INVALID_AMOUNT, f"{where} is not a finite number")
    if abs(value) >= _MAX_AMOUNT:
        raise _invalid(
            EventReason.INVALID_AMOUNT,
            f"{where} has more than {AMOUNT_INTEGER_DIGITS} digits: {value}",
        )
    # Trailing zeros beyond the scale are harmless (Decimal("1.5000000") is 1.5); digits are not.
    if value != value.quantize(_QUANTUM):
        raise _invalid(
            EventReason.INVALID_AMOUNT,
            f"{where} has more than {AMOUNT_SCALE} decimal places: {value}",
        )
    if value < 0 and not signed:
        raise _invalid(EventReason.NEGATIVE_AMOUNT, f"{where} is negative: {value}")


def _check_non_empty(value: str, where: str) -> None:
    if not value:
        raise _invalid(EventReason.EMPTY_FIELD, f"{where} is empty")


def stripped_id(value: str) -> str:
    """``value`` without the whitespace around it (``ID_WHITESPACE``); its case and the
    characters inside it are kept: ``stripped_id(" B 5\n") == "B 5"``."""
    return value.strip()


def _optional_id(value: str | None) -> str | None:
    """``stripped_id(value)``, or ``None`` when nothing is left (blank means none)."""
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


@dataclass(frozen=True, slots=True)
class UserIdentities:
    """Known identities of the user. ``email`` is clear text: never forward it unhashed.

    ``customer_id`` is stored without surrounding whitespace (``stripped_id``), ``None`` when
    blank; ``email`` is the identity module's to canonicalise.
    """

    customer_id: str | None = None
    email: str | None = None
    other: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        customer_id = self.customer_id
        if customer_id is not None and customer_id != (stripped := _optional_id(customer_id)):
            object.__setattr__(self, "customer_id", stripped)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Device identifiers as captured; zeroed ids and limited tracking are kept, not cleaned."""

    ios_advertising_id: str | None = None
    android_advertising_id: str | None = None
    ios_idfv: str | None = None
    limit_ad_tracking: bool | None = None
    att_authorization_status: AttAuthorizationStatus | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """One product line; ``price`` is the unit price in major units of the event's currency.

    ``id`` and ``sku`` are stored without surrounding whitespace (``stripped_id``): a refund
    names the lines it refunds by ``id``. A blank ``id`` is refused as empty; a blank ``sku``
    is none.
    """

    id: str
    sku: str | None = None
    name: str | None = None
    brand: str | None = None
    category: str | None = None
    variant: str | None = None
    price: Decimal | None = None
    quantity: int = 1
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = self.id
        if given and (given[0].isspace() or given[-1].isspace()):
            object.__setattr__(self, "id", given.strip())
            if not self.id:
                raise _invalid(EventReason.EMPTY_FIELD, f"product id is blank: {given!r}")
        _check_non_empty(self.id, "product id")
        if self.sku is not None and self.sku != (sku := _optional_id(self.sku)):
            object.__setattr__(self, "sku", sku)
        _check_amount(self.price, f"price of product {self.id!r}", signed=True)
        if isinstance(self.quantity, bool) or not 0 <= self.quantity <= _INT_MAX:
            raise _invalid(
                EventReason.INVALID_QUANTITY,
                f"quantity of product {self.id!r} must be a whole number >= 0: {self.quantity!r}",
            )

    @property
    def line_amount(self) -> Decimal | None:
        """``price * quantity`` in major units, or None without a price."""
        return None if self.price is None else self.price * self.quantity


@dataclass(frozen=True, slots=True)
class CommerceData:
    """The product action of a commerce event; amounts in major units of ``currency_code``.

    ``total_amount`` includes ``tax_amount`` and ``shipping_amount`` (mParticle's revenue); for a
    REFUND it is the amount refunded and ``products`` lists the refunded lines (none: the order).
    ``transaction_id`` is stored without surrounding whitespace (``stripped_id``; a blank one as
    given: it names no order, and the mapping rejects it), ``currency_code`` stripped and
    upper-cased (``None`` when blank).
    """

    action: ProductAction
    transaction_id: str | None = None
    currency_code: str | None = None
    total_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    shipping_amount: Decimal | None = None
    coupon_code: str | None = None
    affiliation: str | None = None
    products: tuple[Product, ...] = ()

    def __post_init__(self) -> None:
        transaction_id = self.transaction_id
        if transaction_id and (transaction_id[0].isspace() or transaction_id[-1].isspace()):
            stripped = transaction_id.strip()
            if stripped:
                object.__setattr__(self, "transaction_id", stripped)
        currency = self.currency_code
        if currency is not None and not _CURRENCY.fullmatch(currency):
            object.__setattr__(self, "currency_code", _optional_id(currency.upper()))
        if self.currency_code is not None and not _CURRENCY.fullmatch(self.currency_code):
            raise _invalid(
                EventReason.INVALID_CURRENCY,
                f"currency_code {self.currency_code!r} is not three upper-case letters",
            )
        _check_amount(self.total_amount, "total_amount")
        _check_amount(self.tax_amount, "tax_amount")
        _check_amount(self.shipping_amount, "shipping_amount")


_ACTION_OF_TYPE = {
    EventType.PURCHASE: ProductAction.PURCHASE,
    EventType.REFUND: ProductAction.REFUND,
}


@dataclass(frozen=True, slots=True)
class CommerceEvent:
    """One decoded, validated commerce event. Field names are the Avro record's.

    Construction normalises ``event_time`` to UTC with millisecond precision and raises
    ``DecodeError`` when an invariant of the module docstring does not hold.
    """

    event_id: str
    event_type: EventType
    event_time: datetime
    user_key: str
    platform: Platform = Platform.UNKNOWN
    environment: Environment = Environment.PRODUCTION
    event_name: str | None = None
    user_identities: UserIdentities | None = None
    device_info: DeviceInfo | None = None
    integration_attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    btn_ref: str | None = None
    launch_referral_url: str | None = None
    page_url: str | None = None
    commerce: CommerceData | None = None
    custom_attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_non_empty(self.event_id, "event_id")
        _check_non_empty(self.user_key, "user_key")
        if len(self.user_key) > MAX_KEY_BYTES // 4 and len(self.user_key.encode()) > MAX_KEY_BYTES:
            raise _invalid(
                EventReason.KEY_TOO_LARGE,
                f"user_key is {len(self.user_key.encode())} bytes, over the {MAX_KEY_BYTES} a"
                " profile can be kept under",
            )
        if self.event_time.tzinfo is None or self.event_time.utcoffset() is None:
            raise _invalid(EventReason.INVALID_TIMESTAMP, "event_time has no time zone")
        try:
            utc = self.event_time.astimezone(UTC)
        except OverflowError as exc:  # 0001-01-01T00:30+01:00 is before year 1 in UTC
            raise _invalid(
                EventReason.INVALID_TIMESTAMP, "event_time is out of range in UTC"
            ) from exc
        # Avro's timestamp-millis keeps milliseconds; so does the model, so that encoding and
        # decoding an event gives back an equal event. (A decoded time has whole milliseconds
        # already, and ``replace`` is dear.)
        if utc.microsecond % 1000:
            utc = utc.replace(microsecond=utc.microsecond // 1000 * 1000)
        object.__setattr__(self, "event_time", utc)
        self._check_commerce()

    def _check_commerce(self) -> None:
        expected = _ACTION_OF_TYPE.get(self.event_type)
        commerce = self.commerce
        if expected is not None:
            if commerce is None:
                raise _invalid(
                    EventReason.MISSING_COMMERCE, f"a {self.event_type} event has no commerce data"
                )
            if commerce.action is not expected:
                raise _invalid(
                    EventReason.ACTION_MISMATCH,
                    f"a {self.event_type} event has product action {commerce.action}",
                )
            if not commerce.transaction_id:
                raise _invalid(
                    EventReason.MISSING_TRANSACTION_ID,
                    f"a {self.event_type} event has no transaction_id",
                )
            if self.event_type is EventType.PURCHASE and commerce.currency_code is None:
                raise _invalid(EventReason.MISSING_CURRENCY, "a PURCHASE event has no currency")
        elif (
            commerce is not None
            and commerce.action in (ProductAction.PURCHASE, ProductAction.REFUND)
            and self.event_type is not EventType.UNKNOWN
        ):
            raise _invalid(
                EventReason.ACTION_MISMATCH,
                f"product action {commerce.action} on a {self.event_type} event",
            )

    @property
    def order_id(self) -> str:
        """The order this event concerns (``commerce.transaction_id``), ``""`` if none."""
        commerce = self.commerce
        return (commerce.transaction_id or "") if commerce is not None else ""

    @property
    def source_token(self) -> str | None:
        """The token under integration attribute 1022 / ``com.usebutton.source_token``."""
        return self.integration_attributes.get(BUTTON_MODULE_ID, {}).get(BUTTON_SOURCE_TOKEN_KEY)
