"""Button's Order API on the wire: its paths, the bodies it takes and the limits it documents.

The mapping decides *what* Button must hold for an order; this module is the one place that
knows *how* Button wants to be told, so that the mapper and the HTTP client build the same
requests (the sandbox keeps its own, independent reading of the contract). Pure, like the rest
of the domain: no clock, I/O or logging.

Requests (DESIGN, 8)::

    POST   /v1/order              create: the order, its btn_ref and customer
    POST   /v1/order/{order_id}   update: the order's full new state with the create's customer
                                  (no btn_ref: Button links it to the order id)
    DELETE /v1/order/{order_id}   cancel: the whole order was cancelled or refunded
    GET    /v1/order/{order_id}   read: the order as Button holds it (``adoption``)

Totals and line amounts are in minor units of the ISO 4217 currency and must fit a signed 32-bit
integer; ``order_id`` is at most 255 characters (Button documents no limit for a line's
``identifier``); ``purchase_date`` is
ISO-8601 UTC with ``Z``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from consumer.domain.button import Action, ButtonRequest
from consumer.domain.currency import (
    INT32_MAX,
    INT32_MIN,
    checked_total,
    minor_unit_exponent,
    to_minor_units,
)
from consumer.domain.profile import StoredLine, StoredOrder
from consumer.errors import MappingError

__all__ = [
    "MAX_ID_LENGTH",
    "ORDER_PATH",
    "body_digest",
    "cancel_request",
    "checked_order_id",
    "create_body",
    "create_request",
    "line_total",
    "order_body",
    "order_path",
    "purchase_date",
    "read_request",
    "update_body",
    "update_request",
]

MAX_ID_LENGTH = 255
"""Longest ``order_id`` Button accepts (it documents the same for ``btn_ref`` and
``customer_order_id``, none for a line item's ``identifier``); the service also sends a
customer ``id`` only up to this length."""
ORDER_PATH = "/v1/order"
"""The collection path: creates are posted here; an order's own path is ``order_path``."""

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+", re.ASCII)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # UTC, naive so that isoformat writes no offset


def checked_order_id(value: str | None) -> str:
    """``value`` if it can be Button's ``order_id`` (1-255 printable ASCII characters).

    ``value`` is the event's ``transaction_id`` as the event model holds it: without
    surrounding whitespace (``events.stripped_id``), or blank as given when nothing else is.

    Raises:
        MappingError: ``missing_order_id``, ``order_id_not_ascii`` or ``order_id_too_long``.
    """
    if value is None:
        raise MappingError("missing_order_id", "the event has no transaction_id")
    if not value.strip():
        raise MappingError("missing_order_id", f"the transaction_id is blank: {value!r}")
    if not _PRINTABLE_ASCII.fullmatch(value):
        bad = next(c for c in value if not _PRINTABLE_ASCII.fullmatch(c))
        raise MappingError(
            "order_id_not_ascii",
            f"transaction_id {value[:80]!r} has {bad!r} (U+{ord(bad):04X}); Button takes printable"
            " ASCII (0x20-0x7e)",
        )
    if len(value) > MAX_ID_LENGTH:
        raise MappingError(
            "order_id_too_long",
            f"transaction_id is {len(value)} characters; Button allows {MAX_ID_LENGTH}",
        )
    return value


def order_path(order_id: str) -> str:
    """``/v1/order/{order_id}`` with the id percent-encoded as one path segment.

    ``/``, ``?``, ``#``, ``%`` and spaces are encoded; ``.`` and ``..`` are encoded too, so no
    HTTP client can normalise them away as dot-segments.
    """
    segment = quote(order_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"{ORDER_PATH}/{segment}"


def purchase_date(moment_ms: int) -> str:
    """ISO-8601 UTC with ``Z`` and whole seconds, e.g. ``2024-05-01T14:03:22Z``."""
    # The second the moment falls in, written without an offset (naive) and with a 4-digit year.
    return (_NAIVE_EPOCH + timedelta(seconds=moment_ms // 1000)).isoformat() + "Z"


# --- bodies ------------------------------------------------------------------------------------


def line_total(line: StoredLine, exponent: int) -> int:
    """The line's ``total`` in minor units (unit price times quantity); 0 without a price (the
    mapping never sends such a line of a quantity above 0: ``mapping._lines_known``)."""
    if line.price is None:
        return 0
    return to_minor_units(Decimal(line.price) * line.quantity, exponent)


def _line_item(line: StoredLine, exponent: int) -> dict[str, Any]:
    item: dict[str, Any] = {"identifier": line.identifier}
    if line.sku is not None:
        item["sku"] = line.sku
    if line.description is not None:
        item["description"] = line.description
    if line.category:
        item["category"] = list(line.category)
    item["quantity"] = line.quantity
    if line.price is not None:
        item["amount"] = _int32(to_minor_units(Decimal(line.price), exponent), line)
    item["total"] = _int32(line_total(line, exponent), line)
    if line.attributes:
        item["attributes"] = dict(line.attributes)
    return item


def _int32(value: int, line: StoredLine) -> int:
    if not INT32_MIN <= value <= INT32_MAX:
        raise MappingError(
            "line_item_out_of_range", f"line item {line.identifier!r}: {value} exceeds int32"
        )
    return value


def order_body(order: StoredOrder, *, line_items: bool = True) -> dict[str, Any]:
    """The order's state as Button takes it: id, total, currency, purchase date, line items
    (none when ``line_items`` is false: the order is sent on its total alone).

    Amounts use the order's stored minor-unit exponent (fixed at the purchase), so an order whose
    currency later left the ISO 4217 table can still be updated; the table is read only for
    orders stored without one (older profile formats).

    Raises:
        MappingError: a total or line amount Button cannot take (``negative_total``,
            ``total_out_of_range``, ``line_item_out_of_range``).
    """
    exponent = order.exponent if order.exponent is not None else minor_unit_exponent(order.currency)
    body: dict[str, Any] = {
        "order_id": order.order_id,
        "total": checked_total(order.total),
        "currency": order.currency,
        "purchase_date": purchase_date(order.purchase_ms),
    }
    if order.lines and line_items:
        body["line_items"] = [_line_item(line, exponent) for line in order.lines]
    return body


def create_body(
    order: StoredOrder, customer: Mapping[str, str], state: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The create body: ``order_body`` plus the order's ``btn_ref`` and the ``customer``.

    ``state``: ``order_body(order)`` when the caller has it already (a new dict is returned,
    ``state`` is not changed).
    """
    body = order_body(order) if state is None else dict(state)
    if order.btn_ref is not None:
        body["btn_ref"] = order.btn_ref
    if customer:
        body["customer"] = dict(customer)
    return body


def update_body(state: Mapping[str, Any], customer: Mapping[str, str]) -> dict[str, Any]:
    """The update body: ``state`` (``order_body``) plus the ``customer`` the create carried.

    Button may read an update as the order's whole new state (the sandbox does, DESIGN 8), so
    the customer is sent again: with it, the order keeps its customer under that reading, and
    nothing changes under one that merges (the same values). No ``btn_ref``: Button links it
    to the order id. ``state`` is not changed; a new dict is returned.
    """
    if not customer:
        return dict(state)
    return {**state, "customer": dict(customer)}


_DIGEST_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""The canonical JSON of a body for its digest; one encoder, not one per ``json.dumps`` call."""


def body_digest(body: Mapping[str, Any]) -> int:
    """A 63-bit digest of an order body (never 0, which means "unknown"): what Button was sent."""
    text = _DIGEST_JSON.encode(body)
    digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1
    return digest or 1


# --- requests ----------------------------------------------------------------------------------


def create_request(order_id: str, body: Mapping[str, Any]) -> ButtonRequest:
    """``POST /v1/order``: report a new order."""
    return ButtonRequest(Action.CREATE, "POST", ORDER_PATH, order_id, body)


def update_request(order_id: str, body: Mapping[str, Any]) -> ButtonRequest:
    """``POST /v1/order/{order_id}``: the new full state of the order (``update_body``)."""
    return ButtonRequest(Action.UPDATE, "POST", order_path(order_id), order_id, body)


def cancel_request(order_id: str) -> ButtonRequest:
    """``DELETE /v1/order/{order_id}``: the whole order was cancelled or refunded."""
    return ButtonRequest(Action.CANCEL, "DELETE", order_path(order_id), order_id, None)


def read_request(order_id: str) -> ButtonRequest:
    """``GET /v1/order/{order_id}``: the order as Button holds it (a ``Read``)."""
    return ButtonRequest(Action.READ, "GET", order_path(order_id), order_id, None)
