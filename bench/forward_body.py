"""Button's create body from a decoded Avro record: what a peer writes for itself.

Standalone (the standard library only), so the quixstreams peer in its own virtualenv uses the
same code as the naive loop. Enough for the bench's orders (one currency with two decimals, no
attribution, no profile); the service's own mapping does far more.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

_CENTS = Decimal(100)


def _cents(value: Decimal | None) -> int:
    return int((value or Decimal(0)) * _CENTS)


def body_from_record(record: dict[str, Any]) -> dict[str, Any] | None:
    """The create body of a purchase record, or None for any other event."""
    commerce = record.get("commerce")
    if record.get("event_type") != "PURCHASE" or not commerce:
        return None
    total = (
        _cents(commerce["total_amount"])
        - _cents(commerce["tax_amount"])
        - _cents(commerce["shipping_amount"])
    )
    lines = [
        {
            "identifier": product["id"],
            "sku": product["sku"],
            "description": product["name"],
            "category": [product["category"]],
            "quantity": product["quantity"],
            "amount": _cents(product["price"]),
            "total": _cents(product["price"]) * product["quantity"],
        }
        for product in commerce["products"]
    ]
    body: dict[str, Any] = {
        "order_id": commerce["transaction_id"],
        "total": total,
        "currency": commerce["currency_code"],
        "purchase_date": record["event_time"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "line_items": lines,
    }
    customer = (record.get("user_identities") or {}).get("customer_id")
    if customer:
        body["customer"] = {"id": customer}
    return body
