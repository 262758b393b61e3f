"""Button's documented Order API request rules as pure functions, so the sandbox can be strict.

The sandbox answers 400 with these messages; other tests use the same functions to assert that
whatever the service sends would be accepted. The rules come from Button's Order API
documentation (order fields, update and cancel) and are written here independently of the
service's own mapper, so a mapping bug cannot be mirrored in the checker.

Public API (each function returns a list of problems; an empty list means valid)::

    validate_create(body)                  # POST /v1/order
    validate_update(body, order_id=None)   # POST /v1/order/{order_id}: full new state
    validate_order_id(value)               # an order_id, in a body or a path
    validate_btn_ref(value)                # an attribution token, in a body or a path
    is_valid_create(body) / is_valid_update(body)   # the same as booleans

Every problem is one string ``"<field>: <what is wrong>"``, where ``<field>`` is a path such as
``total``, ``customer.email_sha256`` or ``line_items[1].quantity``; ``body`` itself names the
whole document. ``problem_fields(problems)`` extracts the field paths.

Rules (strict on purpose; where Button is silent the stricter reading is taken, and noted):

- ``body`` must be a JSON object. Optional fields are omitted, never ``null``.
- Unknown fields are rejected (Button's handling is undocumented; rejecting catches typos such as
  ``is_new_user`` that the real API might silently drop, losing data).
- ``order_id``: string, 1-255 characters, printable ASCII (``0x20``-``0x7e``).
- ``total``: JSON integer (not a float, not a boolean), ``0 <= total <= 2**31 - 1``.
- ``currency``: an ISO 4217 alphabetic code from the ``iso4217`` table, upper case.
- ``purchase_date`` / ``finalization_date``: ISO-8601 extended date-time with seconds and a zone,
  ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)``, a real calendar date.
- ``btn_ref``: 1-255 URL-safe characters (RFC 3986 unreserved: ``A-Z a-z 0-9 - . _ ~``).
- ``customer_order_id``: string, 1-255 characters (UTF-8 allowed).
- ``customer``: object with optional ``id`` (non-empty string), ``email_sha256`` (64 lower-case
  hex digits, as ``hashlib.sha256(...).hexdigest()`` gives), ``device_id`` (non-empty string),
  ``is_new`` (boolean).
- ``line_items``: array of objects; each needs ``identifier`` (non-empty string) and ``total``
  (int32, may be zero or negative: discounts); optional ``amount`` (int32), ``quantity``
  (integer >= 0), ``sku``/``upc``/``description`` (strings), ``category`` (array of strings),
  ``attributes`` (object of string to string).
- ``partner_order_channel`` (``"app"`` or ``"webview"``) is accepted; ``total_as_decimal`` is
  accepted only as ``false`` (the sandbox does not implement major-unit totals).
- Create requires ``order_id``, ``total``, ``currency``, ``purchase_date``. Update requires
  ``total`` and ``currency``; ``btn_ref`` and ``purchase_date`` are optional there, and an
  ``order_id`` in an update body must equal the one in the path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from iso4217 import Currency

__all__ = [
    "CREATE_REQUIRED",
    "INT32_MAX",
    "INT32_MIN",
    "ISO4217_CODES",
    "MAX_ID_LENGTH",
    "UPDATE_REQUIRED",
    "is_valid_create",
    "is_valid_update",
    "parse_iso8601",
    "problem_fields",
    "validate_btn_ref",
    "validate_create",
    "validate_order_id",
    "validate_update",
]

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
MAX_ID_LENGTH: Final = 255
ISO4217_CODES: Final[frozenset[str]] = frozenset(c.code for c in Currency)
CREATE_REQUIRED: Final = ("order_id", "total", "currency", "purchase_date")
UPDATE_REQUIRED: Final = ("total", "currency")

_ISO8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})", re.ASCII
)
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+", re.ASCII)
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+", re.ASCII)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_CHANNELS: Final = frozenset({"app", "webview"})

_Problems = list[str]
_Check = Callable[[Any, str, _Problems], object]


def validate_create(body: object) -> list[str]:
    """Check the body of ``POST /v1/order``.

    Args:
        body: the decoded JSON body (any JSON value).

    Returns:
        Every problem found, as ``"<field>: <problem>"``; empty when Button would accept it.

    >>> validate_create({"order_id": "A1", "total": 100, "currency": "USD",
    ...                  "purchase_date": "2024-05-01T14:03:22Z"})
    []
    >>> validate_create({"order_id": "A1", "total": 1.5, "currency": "USD",
    ...                  "purchase_date": "2024-05-01T14:03:22Z"})
    ['total: must be an integer in minor units, got a float']
    """
    return _validate_order(body, CREATE_REQUIRED)


def validate_update(body: object, order_id: str | None = None) -> list[str]:
    """Check the body of ``POST /v1/order/{order_id}``, which carries the order's full new state.

    Args:
        body: the decoded JSON body.
        order_id: the ``{order_id}`` of the path; when given, an ``order_id`` in the body must
            equal it.

    Returns:
        Every problem found; empty when Button would accept it.
    """
    problems = _validate_order(body, UPDATE_REQUIRED)
    if (
        order_id is not None
        and isinstance(body, Mapping)
        and "order_id" in body
        and isinstance(body["order_id"], str)
        and body["order_id"] != order_id
    ):
        problems.append("order_id: must equal the order_id of the path when present")
    return problems


def validate_order_id(value: object, field: str = "order_id") -> list[str]:
    """Check a merchant order ID: a string of 1-255 printable ASCII characters."""
    problems: _Problems = []
    _check_order_id(value, field, problems)
    return problems


def validate_btn_ref(value: object, field: str = "btn_ref") -> list[str]:
    """Check an attribution token: 1-255 URL-safe characters."""
    problems: _Problems = []
    _check_btn_ref(value, field, problems)
    return problems


def is_valid_create(body: object) -> bool:
    """``validate_create(body) == []``."""
    return not validate_create(body)


def is_valid_update(body: object, order_id: str | None = None) -> bool:
    """``validate_update(body, order_id) == []``."""
    return not validate_update(body, order_id)


def problem_fields(problems: Iterable[str]) -> list[str]:
    """The field paths named by ``problems`` (the part before ``": "``), in order."""
    return [p.split(": ", 1)[0] for p in problems]


def parse_iso8601(value: str) -> datetime | None:
    """The aware datetime ``value`` denotes if it is a valid date-time for Button, else None."""
    if not _ISO8601.fullmatch(value):
        return None
    text = value
    # datetime.fromisoformat keeps at most microseconds: trim longer fractions before parsing.
    if "." in text:
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# --- the order document -------------------------------------------------------------------------


def _validate_order(body: object, required: tuple[str, ...]) -> _Problems:
    problems: _Problems = []
    if not isinstance(body, Mapping):
        problems.append(f"body: must be a JSON object, got {_json_type(body)}")
        return problems
    for name in required:
        if name not in body:
            problems.append(f"{name}: is required")
    for name, value in body.items():
        check = _ORDER_FIELDS.get(name)
        if check is None:
            problems.append(f"{_field_name(name)}: unknown field")
        elif value is None:
            problems.append(f"{name}: must not be null (omit optional fields instead)")
        else:
            check(value, name, problems)
    return problems


def _check_order_id(value: Any, field: str, problems: _Problems) -> None:
    if _check_text(value, field, problems) and not _PRINTABLE_ASCII.fullmatch(value):
        problems.append(f"{field}: must be printable ASCII")


def _check_total(value: Any, field: str, problems: _Problems) -> None:
    if _check_int32(value, field, problems) and value < 0:
        problems.append(f"{field}: must not be negative, got {value}")


def _check_int32(value: Any, field: str, problems: _Problems) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{field}: must be an integer in minor units, got {_json_type(value)}")
        return False
    if not INT32_MIN <= value <= INT32_MAX:
        problems.append(f"{field}: must fit in a signed 32-bit integer, got {value}")
        return False
    return True


def _check_currency(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, str):
        problems.append(f"{field}: must be a string, got {_json_type(value)}")
    elif value not in ISO4217_CODES:
        problems.append(f"{field}: must be an ISO 4217 currency code, got {value[:16]!r}")


def _check_date(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, str):
        problems.append(f"{field}: must be a string, got {_json_type(value)}")
    elif parse_iso8601(value) is None:
        problems.append(
            f"{field}: must be an ISO-8601 date-time with a zone "
            f"(e.g. 2024-05-01T14:03:22Z), got {value[:40]!r}"
        )


def _check_btn_ref(value: Any, field: str, problems: _Problems) -> None:
    if _check_text(value, field, problems) and not _URL_SAFE.fullmatch(value):
        problems.append(f"{field}: must be URL-safe (A-Z a-z 0-9 - . _ ~)")


def _check_text(value: Any, field: str, problems: _Problems) -> bool:
    """A non-empty string of at most 255 characters; returns whether it is one."""
    if not isinstance(value, str):
        problems.append(f"{field}: must be a string, got {_json_type(value)}")
    elif not value:
        problems.append(f"{field}: must not be empty")
    elif len(value) > MAX_ID_LENGTH:
        problems.append(f"{field}: must be at most 255 characters, got {len(value)}")
    else:
        return True
    return False


def _check_string(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, str):
        problems.append(f"{field}: must be a string, got {_json_type(value)}")


def _check_bool(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, bool):
        problems.append(f"{field}: must be a boolean, got {_json_type(value)}")


def _check_channel(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, str) or value not in _CHANNELS:
        problems.append(f'{field}: must be "app" or "webview"')


def _check_total_as_decimal(value: Any, field: str, problems: _Problems) -> None:
    if value is not False:
        problems.append(f"{field}: only false is supported (send totals in minor units)")


def _check_email_sha256(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, str):
        problems.append(f"{field}: must be a string, got {_json_type(value)}")
    elif not _SHA256_HEX.fullmatch(value):
        problems.append(f"{field}: must be 64 lower-case hex digits (a SHA-256 hex digest)")


def _check_customer(value: Any, field: str, problems: _Problems) -> None:
    _check_object(value, field, problems, _CUSTOMER_FIELDS, required=())


def _check_line_items(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, list):
        problems.append(f"{field}: must be an array, got {_json_type(value)}")
        return
    for index, item in enumerate(value):
        _check_object(
            item, f"{field}[{index}]", problems, _LINE_ITEM_FIELDS, ("identifier", "total")
        )


def _check_quantity(value: Any, field: str, problems: _Problems) -> None:
    if _check_int32(value, field, problems) and value < 0:
        problems.append(f"{field}: must not be negative, got {value}")


def _check_category(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, list):
        problems.append(f"{field}: must be an array of strings, got {_json_type(value)}")
        return
    for index, item in enumerate(value):
        _check_string(item, f"{field}[{index}]", problems)


def _check_attributes(value: Any, field: str, problems: _Problems) -> None:
    if not isinstance(value, Mapping):
        problems.append(f"{field}: must be an object of strings, got {_json_type(value)}")
        return
    for key, item in value.items():
        _check_string(item, f"{field}.{_field_name(key)}", problems)


def _check_object(
    value: Any,
    field: str,
    problems: _Problems,
    fields: Mapping[str, _Check],
    required: tuple[str, ...],
) -> None:
    if not isinstance(value, Mapping):
        problems.append(f"{field}: must be an object, got {_json_type(value)}")
        return
    for name in required:
        if name not in value:
            problems.append(f"{field}.{name}: is required")
    for name, item in value.items():
        check = fields.get(name)
        path = f"{field}.{_field_name(name)}"
        if check is None:
            problems.append(f"{path}: unknown field")
        elif item is None:
            problems.append(f"{path}: must not be null (omit optional fields instead)")
        else:
            check(item, path, problems)


def _field_name(name: object) -> str:
    text = str(name)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: object) -> str:
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


# bool before int: a JSON boolean decodes to a Python bool, which is also an int.
_JSON_TYPES: Final[tuple[tuple[type | tuple[type, ...], str], ...]] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (Mapping, "an object"),
)


_ORDER_FIELDS: Final[Mapping[str, _Check]] = {
    "order_id": _check_order_id,
    "total": _check_total,
    "currency": _check_currency,
    "purchase_date": _check_date,
    "finalization_date": _check_date,
    "btn_ref": _check_btn_ref,
    "customer_order_id": _check_text,
    "customer": _check_customer,
    "line_items": _check_line_items,
    "partner_order_channel": _check_channel,
    "total_as_decimal": _check_total_as_decimal,
}
_CUSTOMER_FIELDS: Final[Mapping[str, _Check]] = {
    "id": _check_text,
    "email_sha256": _check_email_sha256,
    "device_id": _check_text,
    "is_new": _check_bool,
}
_LINE_ITEM_FIELDS: Final[Mapping[str, _Check]] = {
    "identifier": _check_text,
    "total": _check_int32,
    "amount": _check_int32,
    "quantity": _check_quantity,
    "sku": _check_string,
    "upc": _check_string,
    "description": _check_string,
    "category": _check_category,
    "attributes": _check_attributes,
}
