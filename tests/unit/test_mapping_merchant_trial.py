"""Reproductions of mapping defects a merchant's engineer found trying the domain.

Each test drives the offline mapping (``consumer.mapcmd.run_map``: the service's own
``mapping.process`` with profiles carried across lines by ``user_key``) with JSON lines as a
merchant's producers send them, and reads the Button requests it prints. Each failed before its
fix.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

from consumer.domain.mapping import MappingConfig
from consumer.mapcmd import run_map

RECEIVED = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)


def _map(events: list[dict[str, Any]], config: MappingConfig | None = None) -> list[dict[str, Any]]:
    out = io.StringIO()
    run_map([json.dumps(e) for e in events], out, config or MappingConfig(), received=RECEIVED)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _purchase(
    event_id: str, order_id: str, products: list[dict[str, Any]], **fields: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "PURCHASE",
        "event_time": "2026-01-05T10:00:00Z",
        "user_key": "user-1",
        "commerce": {
            "action": "PURCHASE",
            "transaction_id": order_id,
            "currency_code": "USD",
            "total_amount": "100.00",
            "products": products,
        },
        **fields,
    }


def _refund(event_id: str, order_id: str, **commerce: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "REFUND",
        "event_time": "2026-01-05T12:00:00Z",
        "user_key": "user-1",
        "commerce": {"action": "REFUND", "transaction_id": order_id, **commerce},
    }


def _body(result: dict[str, Any]) -> dict[str, Any]:
    body = (result.get("request") or {}).get("body")
    assert body is not None, result
    return dict(body)


# --- 5. a product id over 255 characters -------------------------------------------------------


def test_a_product_id_over_255_characters_is_sent_as_is_and_the_order_keeps_its_attribution() -> (
    None
):
    """Button documents 255 characters for ``order_id``, ``btn_ref`` and ``customer_order_id``,
    not for a line's ``identifier``: a long product id (a URL, a bundle's composed id) is sent
    as given, the order is created with its token, and a refund naming that product applies."""
    long_id = "bundle/" + "x" * 300
    results = _map(
        [
            _purchase(
                "p1",
                "O1",
                [{"id": long_id, "price": "60", "quantity": 1}, {"id": "B", "price": "40"}],
                btn_ref="srctok-0123456789abcdef",
            ),
            _refund("r1", "O1", products=[{"id": long_id, "quantity": 1}]),
        ]
    )

    assert [r["action"] for r in results] == ["create", "update"]
    create = _body(results[0])
    assert create["btn_ref"] == "srctok-0123456789abcdef"
    assert [line["identifier"] for line in create["line_items"]] == [long_id, "B"]
    update = _body(results[1])
    assert update["total"] == 4000
    assert [line["identifier"] for line in update["line_items"]] == ["B"]


# --- 1. products without a price ---------------------------------------------------------------


def test_a_product_without_a_price_leaves_its_order_without_line_items() -> None:
    """A 0 line would tell Button the product cost nothing, and leaving only that line out
    would list an order of less than it was: the order is sent on its total alone, with no
    line items, and so is every update of it, whichever lines its refunds leave."""
    results = _map(
        [
            _purchase(
                "p1",
                "O1",
                [{"id": "A", "price": "10", "quantity": 2}, {"id": "B", "quantity": 1}],
            ),
            _refund("r1", "O1", products=[{"id": "A", "quantity": 1}], total_amount="10"),
            _refund("r2", "O1", products=[{"id": "B", "quantity": 1}], total_amount="80"),
        ]
    )

    assert [r["action"] for r in results] == ["create", "update", "update"]
    bodies = [_body(r) for r in results]
    assert [b["total"] for b in bodies] == [10000, 9000, 1000]
    assert [b.get("line_items") for b in bodies] == [None, None, None]


def test_a_free_gift_is_a_line_of_0() -> None:
    """A product with an explicit price of 0 is a real 0: it is sent as a line of 0."""
    results = _map(
        [_purchase("p1", "O1", [{"id": "A", "price": "100"}, {"id": "GIFT", "price": "0"}])]
    )

    lines = _body(results[0])["line_items"]
    assert [(li["identifier"], li["amount"], li["total"]) for li in lines] == [
        ("A", 10000, 10000),
        ("GIFT", 0, 0),
    ]


# --- 3. junk advertising ids -------------------------------------------------------------------


def test_an_advertising_id_that_is_not_a_uuid_is_neither_sent_nor_learned() -> None:
    """IDFA and GAID are UUIDs: ``opt-out``, a truncated UUID or free text is not sent as the
    order's ``device_id``, and is not learned either (a later purchase without an id of its
    own carries none from the profile)."""
    junk = ["opt-out", "6D92078A-8246-4BA4-AE5B", "my phone"]
    events: list[dict[str, Any]] = []
    for n, value in enumerate(junk):
        device = {"ios_advertising_id": value, "android_advertising_id": value}
        events.append(_purchase(f"p{n}", f"O{n}", [], device_info=device))
    events.append(_purchase("p-last", "O-last", []))

    results = _map(events)

    assert [_body(r).get("customer", {}).get("device_id") for r in results] == [None] * 4
