"""The forms a commerce event takes outside the model: the decoded Avro record and plain JSON.

Decoders hand over dictionaries and the offline tools read and write JSON lines; this module is
the one place that turns those forms into a validated ``CommerceEvent`` (see ``events``) and
back, so that every entry point refuses a bad event with the same ``DecodeError`` reason.

Four conversions live here, all pure:

* ``event_from_record``: the dict fastavro decodes (``Decimal``, aware ``datetime``) -> model.
* ``event_from_json``: the same record written as plain JSON (the offline ``map`` command's input
  and the sample JSON-lines files) -> model. Rules, exactly:

  - field names and nesting are those of the Avro record; a missing optional field or ``null``
    takes the schema default; unions are NOT wrapped (``"btn_ref": "srctok-1"``, not
    ``{"string": ...}``);
  - ``event_time`` is either an integer of epoch milliseconds or an ISO-8601 string WITH an
    offset or ``Z`` (``"2026-01-05T09:00:00Z"``, ``"2026-01-05T10:00:00+01:00"``); naive times
    are refused; sub-millisecond digits are truncated, as Avro's ``timestamp-millis`` does;
  - amounts (``total_amount``, ``tax_amount``, ``shipping_amount``, ``price``) are decimal
    strings in major units (``"12.34"``, recommended), integers, or JSON numbers; a JSON number
    parsed as a float is taken by its shortest repr (``12.34`` -> ``Decimal("12.34")``), so pass
    ``parse_float=decimal.Decimal`` to ``json.loads`` when exactness matters; a string is plain
    decimal notation only (``amount_from_text``): ``"12_50"``, ``"1E+2"`` or other scripts'
    digits, which ``Decimal()`` would read, are refused ``invalid_amount``;
  - enum symbols are matched case-insensitively (``"purchase"`` == ``"PURCHASE"``); a symbol
    the model does not know becomes ``UNKNOWN``, like an Avro reader with the enum default;
  - ``quantity`` is an integer, or an integral number or string (``2``, ``2.0``, ``"2"``; a
    string in the amounts' plain notation);
  - ``user_identities`` is the record form (``{"customer_id": ..., "email": ..., "other":
    {...}}``) or mParticle's outbound array form (``[{"identity_type": "customer_id",
    "identity": "c-1"}, ...]``);
  - map values (custom and product attributes, integration attributes, other identities) are
    strings; numbers and booleans are accepted and turned into strings (``true``/``false``);
  - ``null`` means absent wherever a value is optional: an optional field, a map entry's value
    (the entry is left out), an identity of the array form (``{"identity_type": "email",
    "identity": null}`` is skipped); ``null`` where a value is required (``event_id``,
    ``event_type``, ``event_time``, ``user_key``, ``commerce.action``, a product's ``id``, an
    identity's ``identity_type``) is refused ``missing_field``, naming the field and saying it
    is null.

* ``event_to_record`` (for fastavro writers) and ``event_to_json`` (the JSON form above, with
  decimal strings and ISO-8601 UTC times, ``null`` and empty fields omitted).

``amount_from_text`` is the one reading of an amount written as text, shared with the command
line (``test-event --total``).

Just over 500 lines: one walker reads both input forms, so their rules cannot drift apart.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeGuard, TypeVar, cast

from consumer.domain.events import (
    AMOUNT_SCALE,
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
    stripped_id,
)
from consumer.errors import DecodeError, InvalidEventError

__all__ = [
    "amount_from_text",
    "event_from_json",
    "event_from_record",
    "event_to_json",
    "event_to_record",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)


def _invalid(reason: EventReason, message: str) -> InvalidEventError:
    return InvalidEventError(str(reason), message)


# --- parsing: one walker, two leaf dialects (decoded Avro, plain JSON) -----------------------

_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class _Dialect:
    """How leaves are read: decoded Avro values are typed; JSON values need interpreting.

    ``amount`` and ``quantity`` take the value's location as ``where`` and ``key``: a message
    names it as ``where + key``, built only when one is needed. ``string_value`` takes it whole:
    a map entry calls it only for a value that is not a string already.
    """

    time: Callable[[object], datetime]
    amount: Callable[[object, str, str], Decimal]
    quantity: Callable[[object, str, str], int]
    string_value: Callable[[object, str], str]
    json: bool


def _type_error(where: str, expected: str, value: object) -> InvalidEventError:
    given = "null" if value is None else type(value).__name__
    return _invalid(EventReason.INVALID_FIELD, f"{where} must be {expected}, not {given}")


def _is_mapping(value: object) -> TypeGuard[Mapping[Any, Any]]:
    # Decoders and json give dicts: checked first, as an ABC's isinstance is ten times dearer.
    return type(value) is dict or isinstance(value, Mapping)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not _is_mapping(value):
        raise _type_error(where, "an object", value)
    return value


def _required(obj: Mapping[str, Any], key: str, where: str) -> object:
    value = obj.get(key)
    if value is None:
        said = "is null, but it is required" if key in obj else "is missing"
        raise _invalid(EventReason.MISSING_FIELD, f"{where}{key} {said}")
    return value


def _req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _required(obj, key, where)
    if not isinstance(value, str):
        raise _type_error(where + key, "a string", value)
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _type_error(where + key, "a string", value)


@functools.cache
def _members(enum: type[StrEnum]) -> dict[str, StrEnum]:
    """The enum's members by symbol: a dict lookup costs a tenth of ``enum(symbol)``."""
    return {member.value: member for member in enum}


def _enum(enum: type[_E], value: object, where: str, d: _Dialect) -> _E:
    if not isinstance(value, str):
        raise _type_error(where, "an enum symbol string", value)
    symbol = value.strip().upper() if d.json else value
    members = _members(enum)
    member = members.get(symbol)
    if member is None:
        # Same rule as an Avro reader whose enum has a default: unknown symbols read as UNKNOWN.
        member = members["UNKNOWN"]
    return cast("_E", member)


def _str_map(value: object, where: str, d: _Dialect, key: str = "") -> dict[str, str]:
    """The map ``value`` (``None``: empty) with string values; ``where + key`` names it.

    Both dialects take a string value as it is; any other value is the dialect's to convert or
    refuse, and only then is the entry's location built. In the JSON form an entry whose value
    is ``null`` is absent (left out); a decoded record's map has no null values to meet.
    """
    if value is None:
        return {}
    if not _is_mapping(value):
        raise _type_error(where + key, "an object", value)
    return {
        str(k): v if isinstance(v, str) else d.string_value(v, f"{where}{key}[{k!r}]")
        for k, v in value.items()
        if v is not None or not d.json
    }


def _opt_amount(obj: Mapping[str, Any], key: str, where: str, d: _Dialect) -> Decimal | None:
    value = obj.get(key)
    return None if value is None else d.amount(value, where, key)


def _record_time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    raise _type_error("event_time", "a datetime", value)


def _record_amount(value: object, where: str, key: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    raise _type_error(where + key, "a Decimal", value)


def _record_quantity(value: object, where: str, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _type_error(where + key, "an int", value)


def _record_string(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    raise _type_error(where, "a string", value)


_EPOCH_MS_TEXT = re.compile(r"-?[0-9]{1,19}", re.ASCII)
"""``event_time`` as epoch milliseconds in a string (``"1733140800000"``), as some senders write
every value."""


def _json_time(value: object) -> datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except OverflowError as exc:
            raise _invalid(
                EventReason.INVALID_TIMESTAMP, f"event_time {value} is out of range"
            ) from exc
    if isinstance(value, str) and _EPOCH_MS_TEXT.fullmatch(value.strip()):
        return _json_time(int(value.strip()))  # epoch milliseconds written as a string
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise _invalid(
                EventReason.INVALID_TIMESTAMP, f"event_time {value!r} is not ISO-8601"
            ) from exc
        if parsed.tzinfo is None:
            raise _invalid(
                EventReason.INVALID_TIMESTAMP, f"event_time {value!r} has no offset or Z"
            )
        return parsed
    raise _invalid(
        EventReason.INVALID_TIMESTAMP,
        f"event_time must be epoch milliseconds or an ISO-8601 string, not {type(value).__name__}",
    )


_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
"""Plain decimal notation: an optional sign, ASCII digits and at most one point with a digit on
at least one side of it."""


def amount_from_text(text: str) -> Decimal:
    """The amount ``text`` writes in plain decimal notation, in major units, exactly.

    Surrounding whitespace is ignored; what is left must be an optional sign, ASCII digits and at
    most one ``.`` with a digit on at least one side (``"12.34"``, ``"-5"``, ``"+0.5"``,
    ``".5"``, ``"12."``). Refused, although ``Decimal()`` reads each as a number: underscores
    between digits (``"12_50"`` is 1250 to it), digits of other scripts (``"١٢"`` is 12),
    exponent notation (``"1E+2"``, ``"12.5e1"``: a producer writing it for 100 or 125 has most
    likely turned a float into text, so the value is not guessed), and ``NaN``/``Infinity``.
    The range, scale and sign of the amount are the model's to check (``events``).

    Raises:
        ValueError: ``text`` is not in plain decimal notation (the message names the text).
    """
    stripped = text.strip()
    if _PLAIN_DECIMAL.fullmatch(stripped) is None:
        raise ValueError(f"not a plain decimal like '12.34': {text!r}")
    return Decimal(stripped)


def _json_amount(value: object, where: str, key: str) -> Decimal:
    where += key  # the JSON form is read by the offline tools: not worth deferring
    if isinstance(value, bool):
        raise _type_error(where, "a decimal string or number", value)
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(EventReason.INVALID_AMOUNT, f"{where} is not a finite number")
        amount = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            amount = amount_from_text(value)
        except ValueError as exc:
            raise _invalid(
                EventReason.INVALID_AMOUNT, f"{where} {value!r} is not a plain decimal like '12.34'"
            ) from exc
    else:
        raise _type_error(where, "a decimal string or number", value)
    if not amount.is_finite():
        raise _invalid(EventReason.INVALID_AMOUNT, f"{where} is not a finite number")
    return amount


def _json_quantity(value: object, where: str, key: str) -> int:
    try:
        amount = _json_amount(value, where, key)
    except DecodeError as exc:
        raise _invalid(
            EventReason.INVALID_QUANTITY, f"{where}{key} {value!r} is not a whole number"
        ) from exc
    if amount != amount.to_integral_value():
        raise _invalid(
            EventReason.INVALID_QUANTITY, f"{where}{key} {value!r} is not a whole number"
        )
    return int(amount)


def _json_string(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    raise _type_error(where, "a string, number or boolean", value)


_RECORD = _Dialect(_record_time, _record_amount, _record_quantity, _record_string, json=False)
_JSON = _Dialect(_json_time, _json_amount, _json_quantity, _json_string, json=True)


def _identities(value: object, d: _Dialect) -> UserIdentities | None:
    if value is None:
        return None
    if d.json and isinstance(value, Sequence) and not isinstance(value, str):
        return _identities_from_array(value, d)
    obj = _mapping(value, "user_identities")
    return UserIdentities(
        customer_id=_opt_str(obj, "customer_id", "user_identities."),
        email=_opt_str(obj, "email", "user_identities."),
        other=_str_map(obj.get("other"), "user_identities.other", d),
    )


def _identities_from_array(items: Sequence[object], d: _Dialect) -> UserIdentities:
    customer_id: str | None = None
    email: str | None = None
    other: dict[str, str] = {}
    for index, item in enumerate(items):
        where = f"user_identities[{index}]."
        entry = _mapping(item, where[:-1])
        if "identity" in entry and entry["identity"] is None:
            continue  # ``"identity": null``: this identity is absent
        kind = _req_str(entry, "identity_type", where).strip().lower()
        identity = d.string_value(_required(entry, "identity", where), where + "identity")
        if kind == "customer_id":
            customer_id = identity
        elif kind == "email":
            email = identity
        else:
            other[kind] = identity
    return UserIdentities(customer_id=customer_id, email=email, other=other)


def _device(value: object, d: _Dialect) -> DeviceInfo | None:
    if value is None:
        return None
    obj = _mapping(value, "device_info")
    where = "device_info."
    lat = obj.get("limit_ad_tracking")
    if lat is not None and not isinstance(lat, bool):
        raise _type_error(where + "limit_ad_tracking", "a boolean", lat)
    att = obj.get("att_authorization_status")
    return DeviceInfo(
        ios_advertising_id=_opt_str(obj, "ios_advertising_id", where),
        android_advertising_id=_opt_str(obj, "android_advertising_id", where),
        ios_idfv=_opt_str(obj, "ios_idfv", where),
        limit_ad_tracking=lat,
        att_authorization_status=(
            None
            if att is None
            else _enum(AttAuthorizationStatus, att, where + "att_authorization_status", d)
        ),
    )


def _product(value: object, index: int, d: _Dialect) -> Product:
    where = f"commerce.products[{index}]."
    obj = _mapping(value, where[:-1])
    quantity = obj.get("quantity")
    return Product(
        id=_req_str(obj, "id", where),
        sku=_opt_str(obj, "sku", where),
        name=_opt_str(obj, "name", where),
        brand=_opt_str(obj, "brand", where),
        category=_opt_str(obj, "category", where),
        variant=_opt_str(obj, "variant", where),
        price=_opt_amount(obj, "price", where, d),
        quantity=1 if quantity is None else d.quantity(quantity, where, "quantity"),
        attributes=_str_map(obj.get("attributes"), where, d, "attributes"),
    )


def _commerce(value: object, d: _Dialect) -> CommerceData | None:
    if value is None:
        return None
    where = "commerce."
    obj = _mapping(value, "commerce")
    products = obj.get("products")
    if products is None:
        products = ()
    elif type(products) is not list and (
        isinstance(products, str) or not isinstance(products, Sequence)
    ):
        raise _type_error(where + "products", "an array", products)
    return CommerceData(
        action=_enum(ProductAction, _required(obj, "action", where), where + "action", d),
        transaction_id=_opt_str(obj, "transaction_id", where),
        currency_code=_opt_str(obj, "currency_code", where),  # the model trims, upper-cases
        total_amount=_opt_amount(obj, "total_amount", where, d),
        tax_amount=_opt_amount(obj, "tax_amount", where, d),
        shipping_amount=_opt_amount(obj, "shipping_amount", where, d),
        coupon_code=_opt_str(obj, "coupon_code", where),
        affiliation=_opt_str(obj, "affiliation", where),
        products=tuple(_product(p, i, d) for i, p in enumerate(products)),
    )


def _integration_attributes(value: object, d: _Dialect) -> dict[str, Mapping[str, str]]:
    if value is None:
        return {}
    where = "integration_attributes"
    return {
        str(module): _str_map(attrs, f"{where}[{module!r}]", d)
        for module, attrs in _mapping(value, where).items()
    }


def _event(obj: Mapping[str, Any], d: _Dialect) -> CommerceEvent:
    """The validated model of ``obj``; an ``InvalidEventError`` names the event and order ids
    ``obj`` has (the order id stripped, as the model stores it), so that its dead letter says
    which order's event was refused."""
    try:
        return _validated(obj, d)
    except InvalidEventError as exc:
        commerce = obj.get("commerce")
        order_id = commerce.get("transaction_id") if _is_mapping(commerce) else None
        event_id = obj.get("event_id")
        raise InvalidEventError(
            exc.reason,
            str(exc),
            event_id=event_id if isinstance(event_id, str) else "",
            order_id=stripped_id(order_id) if isinstance(order_id, str) else "",
        ) from exc


def _validated(obj: Mapping[str, Any], d: _Dialect) -> CommerceEvent:
    platform = obj.get("platform")
    environment = obj.get("environment")
    return CommerceEvent(
        event_id=_req_str(obj, "event_id", ""),
        event_type=_enum(EventType, _required(obj, "event_type", ""), "event_type", d),
        event_time=d.time(_required(obj, "event_time", "")),
        user_key=_req_str(obj, "user_key", ""),
        platform=(
            Platform.UNKNOWN if platform is None else _enum(Platform, platform, "platform", d)
        ),
        environment=(
            Environment.PRODUCTION
            if environment is None
            else _enum(Environment, environment, "environment", d)
        ),
        event_name=_opt_str(obj, "event_name", ""),
        user_identities=_identities(obj.get("user_identities"), d),
        device_info=_device(obj.get("device_info"), d),
        integration_attributes=_integration_attributes(obj.get("integration_attributes"), d),
        btn_ref=_opt_str(obj, "btn_ref", ""),
        launch_referral_url=_opt_str(obj, "launch_referral_url", ""),
        page_url=_opt_str(obj, "page_url", ""),
        commerce=_commerce(obj.get("commerce"), d),
        custom_attributes=_str_map(obj.get("custom_attributes"), "custom_attributes", d),
    )


def event_from_record(record: Mapping[str, Any]) -> CommerceEvent:
    """Build the model from a record decoded by fastavro with the current reader schema.

    Raises:
        InvalidEventError: the record is not a valid commerce event (a ``DecodeError``,
            ``reason`` from ``EventReason``, with the record's event and order ids).
    """
    return _event(_mapping(record, "record"), _RECORD)


def event_from_json(obj: Mapping[str, Any]) -> CommerceEvent:
    """Build the model from the record's plain-JSON form (rules in the module docstring).

    Raises:
        InvalidEventError: the object is not a valid commerce event (as for
            ``event_from_record``).
    """
    return _event(_mapping(obj, "event"), _JSON)


# --- producing ---------------------------------------------------------------------------------


def _scaled(value: Decimal | None) -> Decimal | None:
    """The amount with exactly the schema's scale: fastavro refuses more decimal places."""
    return None if value is None else value.quantize(_QUANTUM)


def _product_record(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "sku": p.sku,
        "name": p.name,
        "brand": p.brand,
        "category": p.category,
        "variant": p.variant,
        "price": _scaled(p.price),
        "quantity": p.quantity,
        "attributes": dict(p.attributes),
    }


def _commerce_record(c: CommerceData) -> dict[str, Any]:
    return {
        "action": str(c.action),
        "transaction_id": c.transaction_id,
        "currency_code": c.currency_code,
        "total_amount": _scaled(c.total_amount),
        "tax_amount": _scaled(c.tax_amount),
        "shipping_amount": _scaled(c.shipping_amount),
        "coupon_code": c.coupon_code,
        "affiliation": c.affiliation,
        "products": [_product_record(p) for p in c.products],
    }


def event_to_record(event: CommerceEvent) -> dict[str, Any]:
    """The event as a record for a fastavro writer of ``schemas/commerce_event.avsc``.

    Amounts stay ``Decimal`` and ``event_time`` an aware ``datetime``: fastavro encodes both
    through the schema's logical types. Every field is present.
    """
    ids = event.user_identities
    dev = event.device_info
    return {
        "event_id": event.event_id,
        "event_type": str(event.event_type),
        "event_time": event.event_time,
        "platform": str(event.platform),
        "environment": str(event.environment),
        "user_key": event.user_key,
        "event_name": event.event_name,
        "user_identities": (
            None
            if ids is None
            else {"customer_id": ids.customer_id, "email": ids.email, "other": dict(ids.other)}
        ),
        "device_info": (
            None
            if dev is None
            else {
                "ios_advertising_id": dev.ios_advertising_id,
                "android_advertising_id": dev.android_advertising_id,
                "ios_idfv": dev.ios_idfv,
                "limit_ad_tracking": dev.limit_ad_tracking,
                "att_authorization_status": (
                    None
                    if dev.att_authorization_status is None
                    else str(dev.att_authorization_status)
                ),
            }
        ),
        "integration_attributes": {k: dict(v) for k, v in event.integration_attributes.items()},
        "btn_ref": event.btn_ref,
        "launch_referral_url": event.launch_referral_url,
        "page_url": event.page_url,
        "commerce": None if event.commerce is None else _commerce_record(event.commerce),
        "custom_attributes": dict(event.custom_attributes),
    }


def _json_decimal(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _json_time_text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Maps and arrays whose empty value means "none"; an empty record (no identities known) is kept,
# because null and an empty record are different values of the schema.
_COLLECTION_FIELDS = frozenset(
    {"other", "integration_attributes", "products", "attributes", "custom_attributes"}
)
_MAP_FIELDS = _COLLECTION_FIELDS - {"products"}
"""Fields whose value is a map with keys of the user's (``other``, ``attributes``...)."""


def _to_json_value(value: object, *, user_keys: bool = False) -> object:
    """``value`` in JSON's types. Empty collection fields of a record are left out; the keys of
    a map field (attributes, integration attributes) are the user's, so none of them is."""
    if isinstance(value, Decimal):
        return _json_decimal(value)
    if isinstance(value, datetime):
        return _json_time_text(value)
    if isinstance(value, Mapping):
        if user_keys:
            return {k: _to_json_value(v, user_keys=True) for k, v in value.items()}
        out = {k: _to_json_value(v, user_keys=k in _MAP_FIELDS) for k, v in value.items()}
        return {
            k: v
            for k, v in out.items()
            if v is not None and not (k in _COLLECTION_FIELDS and v in ({}, []))
        }
    if isinstance(value, list):
        return [_to_json_value(v) for v in value]
    return value


def event_to_json(event: CommerceEvent) -> dict[str, Any]:
    """The event in the plain-JSON form ``event_from_json`` reads.

    Decimals become strings in plain notation (``"12.34"``), ``event_time`` an ISO-8601 UTC
    string with milliseconds and ``Z``; ``null`` and empty fields are left out.
    """
    return cast("dict[str, Any]", _to_json_value(event_to_record(event)))
