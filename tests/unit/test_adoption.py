"""A partial refund of an order the profile does not know: read from Button, then adopted.

The mapping stays pure: without Button's answer it asks for the read (``Read``); given the
answer (``Lookup``) it adopts Button's order as the base the refund applies to, holds the refund
when Button does not know the order, remembers an order Button holds deleted as cancelled, and
rejects (``order_not_adoptable``, naming the field) an object it cannot take as its base.
"""

from __future__ import annotations

from dataclasses import replace as dataclass_replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from consumer.domain.adoption import ButtonOrder, Lookup, button_order
from consumer.domain.button import Action, DiscardedRefund, Read, Reject, Send, Skip
from consumer.domain.button_wire import line_total, order_body, order_path
from consumer.domain.event_forms import event_from_json
from consumer.domain.events import CommerceEvent
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.profile import OrderStatus, Profile, StoredLine, StoredOrder
from consumer.domain.profile_codec import decode_profile, encode_profile
from consumer.sandbox.state import OrderBook
from consumer.sandbox.validation import validate_update

NOW = datetime(2024, 5, 2, tzinfo=UTC)
ORDER = "ORD-MIGRATED-1"
TOKEN = "srctok-0123456789abcdef"
CONFIG = MappingConfig()


def event(**fields: Any) -> CommerceEvent:
    base: dict[str, Any] = {
        "event_id": "evt-1",
        "event_type": "PURCHASE",
        "event_time": "2024-05-01T14:03:22Z",
        "user_key": "user-1",
    }
    base.update(fields)
    return event_from_json(base)


def refund(event_id: str = "evt-r1", products: list[dict[str, Any]] | None = None, **c: Any) -> Any:
    commerce: dict[str, Any] = {"action": "REFUND", "transaction_id": ORDER}
    if products is not None:
        commerce["products"] = products
    commerce.update(c)
    return event(event_id=event_id, event_type="REFUND", commerce=commerce)


def purchase(event_id: str = "evt-p1", total: str = "80.00") -> CommerceEvent:
    commerce = {
        "action": "PURCHASE",
        "transaction_id": ORDER,
        "currency_code": "USD",
        "total_amount": total,
    }
    return event(event_id=event_id, event_time="2024-05-01T15:00:00Z", commerce=commerce)


def at_button(**changes: Any) -> dict[str, Any]:
    """The order as a previous integration left it at Button (``GET /v1/order/{id}``)."""
    obj: dict[str, Any] = {
        "button_order_id": "btnorder-1a2b3c4d5e6f7a8b",
        "order_id": ORDER,
        "total": 8000,
        "currency": "USD",
        "btn_ref": TOKEN,
        "status": "open",
        "purchase_date": "2024-04-28T10:00:00Z",
        "finalization_date": "2024-05-28T10:00:00Z",
        "line_items": [
            {
                "identifier": "SKU-A",
                "sku": "SKU-A",
                "description": "Shirt",
                "category": ["Apparel"],
                "quantity": 2,
                "amount": 2500,
                "total": 5000,
                "attributes": {"size": "M"},
            },
            {"identifier": "SKU-B", "quantity": 1, "amount": 3000, "total": 3000},
        ],
    }
    obj.update(changes)
    return obj


def found(obj: dict[str, Any] | None = None) -> Lookup:
    return Lookup(ORDER, found=True, order=at_button() if obj is None else obj)


NOT_AT_BUTTON = Lookup(ORDER, found=False)


def request_of(result: object) -> Any:
    assert isinstance(result, Send), result
    return result.request


# --- without Button's answer: read first -------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [refund(products=[{"id": "SKU-A"}]), refund(total_amount="10.00")],
    ids=["products", "amount"],
)
def test_a_partial_refund_of_an_unknown_order_asks_for_the_order_to_be_read(partial) -> None:
    """With products or an amount, the refund cannot be applied without the order: the
    mapping asks for ``GET /v1/order/{id}``; the profile it returns holds the refund (what a
    run that cannot read keeps)."""
    result, held = process(partial, None, CONFIG, NOW)

    assert isinstance(result, Read)
    assert (result.request.action, result.request.method, result.request.path) == (
        Action.READ,
        "GET",
        order_path(ORDER),
    )
    assert result.held == Skip("refund_held")
    assert held is not None
    order = held.order(ORDER)
    assert order is not None
    assert (order.status, [r.event_id for r in order.refunds]) == (OrderStatus.PENDING, ["evt-r1"])


def test_a_whole_order_refund_of_an_unknown_order_still_cancels_without_a_read() -> None:
    """No products and no amount: a cancel needs nothing of the order, as before."""
    result, _ = process(refund(), None, CONFIG, NOW)

    assert request_of(result).action is Action.CANCEL


def test_a_refund_of_a_known_order_reads_nothing() -> None:
    """The profile knows the purchase: the refund is applied to it, no read."""
    _, profile = process(purchase(), None, CONFIG, NOW)

    result, _ = process(refund(total_amount="10.00"), profile, CONFIG, NOW)

    assert request_of(result).action is Action.UPDATE


# --- Button does not know the order: held as before ----------------------------------------------


def test_a_refund_of_an_order_button_does_not_know_is_held_for_its_purchase() -> None:
    """Button answers 404: the refund is held (``refund_held``) and applied when the purchase
    arrives, out of order."""
    result, held = process(refund(total_amount="10.00"), None, CONFIG, NOW, lookup=NOT_AT_BUTTON)
    assert result == Skip("refund_held")

    created, _ = process(purchase(), held, CONFIG, NOW)

    assert (request_of(created).action, request_of(created).body["total"]) == (Action.CREATE, 7000)


def sixty(event_id: str = "evt-p1") -> CommerceEvent:
    """The purchase of 60.00: two SKU-A at 30.00, USD."""
    commerce = {
        "action": "PURCHASE",
        "transaction_id": ORDER,
        "currency_code": "USD",
        "total_amount": "60.00",
        "products": [{"id": "SKU-A", "price": "30.00", "quantity": 2}],
    }
    return event(event_id=event_id, event_time="2024-05-01T15:00:00Z", commerce=commerce)


UNFIT = {
    "refund_item_not_in_order": (
        refund(products=[{"id": "SKU-Z"}], total_amount="5.00"),
        "refunded product 'SKU-Z' is not in the order",
    ),
    "refund_currency_mismatch": (
        refund(total_amount="5.00", currency_code="EUR"),
        "refund in EUR, order in USD",
    ),
    "refund_exceeds_total": (
        refund(products=[{"id": "SKU-A", "quantity": 1}], total_amount="100.00"),
        "refund of 10000 exceeds the order's remaining total 6000",
    ),
}


def held(*refunds: CommerceEvent) -> Profile | None:
    """The profile once each refund was held (Button answered its read 404)."""
    profile = None
    for each in refunds:
        result, changed = process(each, profile, CONFIG, NOW, lookup=NOT_AT_BUTTON)
        assert result == Skip("refund_held")
        profile = changed if changed is not None else profile
    return profile


@pytest.mark.parametrize("reason", sorted(UNFIT))
def test_a_held_refund_the_purchase_cannot_take_is_reported_discarded_with_its_reason(
    reason: str,
) -> None:
    """A refund held for its purchase that does not fit it (a product the order lacks, another
    currency, more than the total) cannot apply: the order is created at its full total, and
    the result says which held refund was discarded and why, the reason and message the same
    refund gets as a dead letter when it arrives after the purchase."""
    unfit, detail = UNFIT[reason]

    created, _ = process(sixty(), held(unfit), CONFIG, NOW)

    assert (request_of(created).action, request_of(created).body["total"]) == (Action.CREATE, 6000)
    assert isinstance(created, Send)
    assert created.discarded == (DiscardedRefund("evt-r1", reason, detail),)
    after, _ = process(unfit, process(sixty(), None, CONFIG, NOW)[1], CONFIG, NOW)
    assert after == Reject(reason, detail)


def test_every_held_refund_that_does_not_fit_is_reported_and_those_that_fit_are_applied() -> None:
    """Three unfit held refunds and one that fits: the create carries the one (60.00 - 10.00),
    and the result names the three, in the event-time order they were tried."""
    unfit = [replace_id(UNFIT[reason][0], f"evt-r{n}") for n, reason in enumerate(sorted(UNFIT), 1)]
    fits = refund("evt-r9", total_amount="10.00")

    created, _ = process(sixty(), held(*unfit, fits), CONFIG, NOW)

    assert isinstance(created, Send)
    assert request_of(created).body["total"] == 5000
    assert [(d.event_id, d.reason) for d in created.discarded] == [
        ("evt-r1", "refund_currency_mismatch"),
        ("evt-r2", "refund_exceeds_total"),
        ("evt-r3", "refund_item_not_in_order"),
    ]


def test_held_refunds_that_fit_the_purchase_report_nothing() -> None:
    """Held refunds the purchase takes (10.00, then one of the two SKU-A: half of what is left)
    are applied: nothing is reported discarded."""
    fit = (refund(total_amount="10.00"), refund("evt-r2", products=[{"id": "SKU-A"}]))

    created, _ = process(sixty(), held(*fit), CONFIG, NOW)

    assert isinstance(created, Send)
    assert (request_of(created).body["total"], created.discarded) == (2500, ())


def test_a_discarded_refund_is_reported_once_not_again_by_a_replayed_purchase() -> None:
    """The purchase replayed (or any later event of the order) discards nothing new: the report
    is made by the event that discarded the refund, once."""
    unfit, _ = UNFIT["refund_currency_mismatch"]
    _, created = process(sixty(), held(unfit), CONFIG, NOW)

    again, _ = process(sixty(), created, CONFIG, NOW)
    later, _ = process(refund("evt-r2", total_amount="1.00"), created, CONFIG, NOW)

    assert isinstance(again, Send)
    assert isinstance(later, Send)
    assert (again.discarded, later.discarded) == ((), ())


def test_a_held_refund_of_an_order_a_held_refund_cancels_is_not_reported() -> None:
    """A held refund that cancels the order leaves nothing at Button for an unfit one to
    reduce: the purchase is skipped (``order_already_cancelled``) and nothing is reported."""
    unfit, _ = UNFIT["refund_currency_mismatch"]
    everything = refund("evt-r2", total_amount="60.00")

    result, _ = process(sixty(), held(unfit, everything), CONFIG, NOW)

    assert result == Skip("order_already_cancelled")


def test_a_held_refund_buttons_order_cannot_take_is_reported_when_a_refund_adopts_it() -> None:
    """Held while Button did not know the order; a later refund's read finds it (another
    integration created it): the update applies what fits Button's order and reports the held
    refund that does not (EUR against Button's USD)."""
    unfit = refund(total_amount="5.00", currency_code="EUR")

    result, _ = process(
        refund("evt-r2", total_amount="10.00"), held(unfit), CONFIG, NOW, lookup=found()
    )

    assert isinstance(result, Send)
    assert request_of(result).body["total"] == 8000 - 1000
    assert result.discarded == (
        DiscardedRefund("evt-r1", "refund_currency_mismatch", "refund in EUR, order in USD"),
    )


def test_a_held_refund_sent_again_reads_the_order_again_and_applies_once_button_holds_it() -> None:
    """The operator's remedy for a refund held while its order was created at Button by another
    path (the purchase never comes through this consumer): the refund's event sent again (same
    event id) is not a new refund, yet it reads the order again, and once Button holds it the
    held refund is applied to Button's state (once: its event id is recorded): replayed, it
    re-sends that state (the create, answered 409, then the same update)."""
    five = refund(total_amount="5.00")
    profile = held(five)

    again, _ = process(five, profile, CONFIG, NOW)
    assert isinstance(again, Read)

    result, adopted = process(five, profile, CONFIG, NOW, lookup=found())

    assert request_of(result).body["total"] == 8000 - 500
    replayed, unchanged = process(five, adopted, CONFIG, NOW)
    assert (request_of(replayed).action, unchanged) == (Action.CREATE, None)
    assert isinstance(replayed, Send)
    assert replayed.follow_up == request_of(result)


def replace_id(refund_event: CommerceEvent, event_id: str) -> CommerceEvent:
    return dataclass_replace(refund_event, event_id=event_id)


# --- Button holds it open: adopted, the refund applied to Button's state -------------------------


def test_a_product_refund_updates_buttons_order_without_the_refunded_units() -> None:
    """One of two SKU-A refunded: the update carries Button's lines, SKU-A down to one unit,
    and Button's total less its value; the other line exactly as Button holds it."""
    result, adopted = process(
        refund(products=[{"id": "SKU-A", "quantity": 1}]), None, CONFIG, NOW, lookup=found()
    )

    request = request_of(result)
    assert (request.action, request.method, request.path) == (
        Action.UPDATE,
        "POST",
        order_path(ORDER),
    )
    assert request.body == {
        "order_id": ORDER,
        "total": 5500,
        "currency": "USD",
        "purchase_date": "2024-04-28T10:00:00Z",
        "line_items": [
            {
                "identifier": "SKU-A",
                "sku": "SKU-A",
                "description": "Shirt",
                "category": ["Apparel"],
                "quantity": 1,
                "amount": 2500,
                "total": 2500,
                "attributes": {"size": "M"},
            },
            {"identifier": "SKU-B", "quantity": 1, "amount": 3000, "total": 3000},
        ],
    }
    assert validate_update(request.body, ORDER) == []
    assert adopted is not None
    order = adopted.order(ORDER)
    assert order is not None
    assert (order.status, order.btn_ref, order.currency) == (OrderStatus.UPDATED, TOKEN, "USD")


def test_an_amount_refund_reduces_buttons_total_and_keeps_its_lines() -> None:
    """An amount refund takes the amount off Button's total; the lines stay as Button holds them
    (the total then differs from the lines, as after any amount refund)."""
    result, _ = process(refund(total_amount="12.34"), None, CONFIG, NOW, lookup=found())

    body = request_of(result).body
    assert (body["total"], [i["quantity"] for i in body["line_items"]]) == (8000 - 1234, [2, 1])


def test_a_refund_of_what_is_left_of_buttons_order_cancels_it() -> None:
    """Every unit Button holds refunded (or an amount of at least its total): the cancel."""
    every_unit = refund(products=[{"id": "SKU-A", "quantity": 2}, {"id": "SKU-B"}])
    for partial in (every_unit, refund(total_amount="80.00")):
        result, adopted = process(partial, None, CONFIG, NOW, lookup=found())

        assert request_of(result).action is Action.CANCEL
        assert adopted is not None
        assert adopted.order(ORDER).status is OrderStatus.CANCELLED  # type: ignore[union-attr]


def test_a_refund_of_every_unit_of_buttons_order_but_its_discount_line_cancels_it() -> None:
    """Button holds 10.00 with a discount line (DISC at -5.00, Y at 15.00): refunding Y leaves
    only the discount, nothing with a positive amount: the cancel (not ``negative_total``)."""
    discounted = at_button(
        total=1000,
        line_items=[
            {"identifier": "DISC", "quantity": 1, "amount": -500, "total": -500},
            {"identifier": "Y", "quantity": 1, "amount": 1500, "total": 1500},
        ],
    )
    result, adopted = process(
        refund(products=[{"id": "Y"}]), None, CONFIG, NOW, lookup=found(discounted)
    )

    assert request_of(result).action is Action.CANCEL
    assert adopted is not None
    assert adopted.order(ORDER).status is OrderStatus.CANCELLED  # type: ignore[union-attr]


def test_an_adopted_order_is_recorded_so_a_replay_reads_nothing_and_sends_the_same_state() -> None:
    """The profile records the adopted order: the refund replayed against it maps without a
    read to the same state, re-sent as a replay re-sends it (the create, whose 409 is followed
    by the same update)."""
    partial = refund(products=[{"id": "SKU-B"}])
    first, adopted = process(partial, None, CONFIG, NOW, lookup=found())

    again, unchanged = process(partial, adopted, CONFIG, NOW)

    assert (request_of(again).action, unchanged) == (Action.CREATE, None)
    assert isinstance(again, Send)
    assert again.follow_up == request_of(first)


def test_a_later_refund_of_an_adopted_order_applies_to_the_adopted_state() -> None:
    """A second partial refund of the adopted order needs no read: it reduces what is left."""
    _, adopted = process(refund(products=[{"id": "SKU-B"}]), None, CONFIG, NOW, lookup=found())

    result, _ = process(refund("evt-r2", total_amount="5.00"), adopted, CONFIG, NOW)

    assert request_of(result).body["total"] == 5000 - 500


def test_refunds_held_before_are_applied_with_the_one_that_read_the_order() -> None:
    """A refund held while Button did not know the order, then one after it learnt it: both
    apply to Button's state."""
    _, held = process(refund(total_amount="10.00"), None, CONFIG, NOW, lookup=NOT_AT_BUTTON)

    result, _ = process(refund("evt-r2", total_amount="30.00"), held, CONFIG, NOW, lookup=found())

    assert request_of(result).body["total"] == 8000 - 1000 - 3000


def test_a_refund_button_cannot_apply_to_its_order_is_rejected_and_kept_not_applying() -> None:
    """A refunded product Button's order does not have: rejected as for a known order, and kept
    in the adopted order's ledger as a refund that does not apply (nothing sent): a duplicate
    of it, while it does not apply, is dead-lettered again with the same reason and detail."""
    event = refund(products=[{"id": "SKU-Z"}])
    result, profile = process(event, None, CONFIG, NOW, lookup=found())

    assert result == Reject(
        "refund_item_not_in_order", "refunded product 'SKU-Z' is not in the order"
    )
    assert profile is not None
    order = profile.order(ORDER)
    assert order is not None
    assert (order.total, order.refund("evt-r1") is not None) == (8000, True)
    again, unchanged = process(event, profile, CONFIG, NOW)
    assert unchanged is None
    assert again == result


def test_an_order_button_holds_without_line_items_takes_an_amount_refund() -> None:
    """Button's order without lines (a total only): an amount refund reduces the total."""
    result, _ = process(
        refund(total_amount="20.00"), None, CONFIG, NOW, lookup=found(at_button(line_items=[]))
    )

    assert request_of(result).body == {
        "order_id": ORDER,
        "total": 6000,
        "currency": "USD",
        "purchase_date": "2024-04-28T10:00:00Z",
    }


def test_a_line_without_amount_takes_its_unit_price_from_its_total() -> None:
    """A previous integration's line without ``amount``: the unit price is total / quantity."""
    lines = [{"identifier": "SKU-A", "quantity": 4, "total": 8000}]
    result, _ = process(
        refund(products=[{"id": "SKU-A"}]),
        None,
        CONFIG,
        NOW,
        lookup=found(at_button(line_items=lines)),
    )

    body = request_of(result).body
    assert (body["total"], body["line_items"][0]["quantity"]) == (6000, 3)


def test_a_line_without_amount_whose_total_is_no_whole_unit_price_takes_one_that_gives_it() -> None:
    """3 units totalling 100 (no ``amount``): stored at 33.3 minor units, the shortest price
    whose triple rounds to 100; the update keeps the line's total and, refunding one unit,
    sends 66.6 rounded (67) with the amount 33, as the service sends a 0.333 x 3 line."""
    lines = [{"identifier": "SKU-A", "quantity": 3, "total": 100}]
    obj = at_button(total=100, line_items=lines)

    result, adopted = process(
        refund(products=[{"id": "SKU-A"}]), None, CONFIG, NOW, lookup=found(obj)
    )

    body = request_of(result).body
    assert (body["total"], body["line_items"]) == (
        67,
        [{"identifier": "SKU-A", "quantity": 2, "amount": 33, "total": 67}],
    )
    assert adopted is not None
    assert adopted.order(ORDER).lines[0].price == "0.333"  # type: ignore[union-attr]


# --- Button holds it deleted -------------------------------------------------------------------


def test_a_refund_of_an_order_button_holds_deleted_is_skipped_and_remembered_cancelled() -> None:
    """Nothing is left to change: skipped as an order already cancelled; a purchase of it
    arriving later is not created, and is dead-lettered ``order_deleted_at_button``: with the
    refund it leaves an order live that Button cannot hold again."""
    deleted = found({"order_id": ORDER, "status": "deleted"})
    result, profile = process(refund(total_amount="10.00"), None, CONFIG, NOW, lookup=deleted)

    assert result == Skip("order_already_cancelled")
    assert profile is not None
    assert profile.order(ORDER).status is OrderStatus.CANCELLED  # type: ignore[union-attr]
    later, unchanged = process(purchase(), profile, CONFIG, NOW)
    assert isinstance(later, Reject)
    assert (later.reason, unchanged) == ("order_deleted_at_button", None)


# --- a record without a key: no profile remembers what Button does not hold yet ----------------

KEYLESS_BEFORE_PURCHASE = "keyless_refund_before_purchase"
WHOLE_ORDER = pytest.mark.parametrize(
    "whole",
    [refund(), refund(total_amount="0")],
    ids=["nothing-named", "total-amount-0"],
)


@WHOLE_ORDER
def test_a_keyless_whole_order_refund_of_an_unknown_order_reads_it_before_cancelling(
    whole: CommerceEvent,
) -> None:
    """Without a key no profile remembers the order cancelled, so a cancel sent blind, answered
    404 before the purchase (``order_gone``), would let the purchase after it be created live.
    The order is read first; not read (a dry run), it is the dead letter."""
    result, _ = process(whole, None, CONFIG, NOW, keyless=True)

    assert isinstance(result, Read), result
    assert (result.request.action, result.request.method, result.request.path) == (
        Action.READ,
        "GET",
        order_path(ORDER),
    )
    assert isinstance(result.held, Reject)
    assert result.held.reason == KEYLESS_BEFORE_PURCHASE


@WHOLE_ORDER
def test_a_keyless_whole_order_refund_button_does_not_know_is_rejected_not_cancelled(
    whole: CommerceEvent,
) -> None:
    """Button answers the read 404: its purchase has not reached Button. The refund is
    rejected (dead-lettered, to be replayed once the purchase is there), its message saying
    why, never a cancel whose 404 would finish it as ``order_gone``."""
    result, _ = process(whole, None, CONFIG, NOW, lookup=NOT_AT_BUTTON, keyless=True)

    assert isinstance(result, Reject), result
    assert result.reason == KEYLESS_BEFORE_PURCHASE
    assert "whole-order refund" in result.detail
    assert "no key" in result.detail
    assert "replay it once the purchase has reached Button" in result.detail


def test_a_keyless_whole_order_refund_of_an_order_button_holds_cancels_it() -> None:
    """The replay after the purchase reached Button: the read finds the order, the cancel is
    sent."""
    result, _ = process(refund(), None, CONFIG, NOW, lookup=found(), keyless=True)

    assert request_of(result).action is Action.CANCEL
    assert request_of(result).path == order_path(ORDER)


def test_a_keyless_whole_order_refund_of_an_order_button_holds_deleted_is_skipped() -> None:
    """Cancelled already (a replay after its cancel reached Button): nothing is sent."""
    deleted = found({"order_id": ORDER, "status": "deleted"})

    result, _ = process(refund(), None, CONFIG, NOW, lookup=deleted, keyless=True)

    assert result == Skip("order_already_cancelled")


@pytest.mark.parametrize(
    "partial",
    [
        refund(products=[{"id": "SKU-A"}]),
        refund(total_amount="10.00"),
        refund(total_amount="80.00"),
        refund(products=[{"id": "SKU-A", "quantity": 2}, {"id": "SKU-B"}]),
    ],
    ids=["products", "amount", "amount-of-everything", "every-unit"],
)
def test_a_keyless_refund_naming_products_or_an_amount_button_does_not_know_is_rejected(
    partial: CommerceEvent,
) -> None:
    """A refund naming products or an amount, even all of the order (only the order tells),
    reads the order as before, and Button's 404 rejects it: none is held where nothing keeps
    it; found, the order takes it (a cancel when it leaves nothing)."""
    read, _ = process(partial, None, CONFIG, NOW, keyless=True)
    rejected, _ = process(partial, None, CONFIG, NOW, lookup=NOT_AT_BUTTON, keyless=True)
    applied, _ = process(partial, None, CONFIG, NOW, lookup=found(), keyless=True)

    assert isinstance(read, Read)
    assert isinstance(read.held, Reject)
    assert read.held.reason == KEYLESS_BEFORE_PURCHASE
    assert isinstance(rejected, Reject)
    assert rejected.reason == KEYLESS_BEFORE_PURCHASE
    assert request_of(applied).action in (Action.UPDATE, Action.CANCEL)


def test_a_keyed_whole_order_refund_still_cancels_unread_and_its_profile_remembers_it() -> None:
    """With a key nothing changes: the cancel is sent without a read, and the profile keeps
    the order cancelled, so its purchase arriving afterwards is not created."""
    result, profile = process(refund(), None, CONFIG, NOW)
    later, _ = process(purchase(), profile, CONFIG, NOW)

    assert request_of(result).action is Action.CANCEL
    assert later == Skip("order_already_cancelled")


# --- Button's object is not what the service can take as its base -------------------------------


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        (at_button(status=None), "status"),
        (at_button(total=None), "total"),
        (at_button(total="80.00"), "total"),
        (at_button(total=True), "total"),
        (at_button(total=-1), "total"),
        (at_button(currency="XAU"), "currency"),
        (at_button(currency=None), "currency"),
        (at_button(purchase_date=None), "purchase_date"),
        (at_button(purchase_date="yesterday"), "purchase_date"),
        (at_button(purchase_date="2024-04-28T10:00:00"), "purchase_date"),
        (at_button(order_id="ORD-OTHER"), "order_id"),
        (at_button(btn_ref=42), "btn_ref"),
        (at_button(line_items={"identifier": "SKU-A"}), "line_items"),
        (at_button(line_items=["SKU-A"]), "line_items[0]"),
        (at_button(line_items=[{"quantity": 1, "total": 100}]), "line_items[0].identifier"),
        (at_button(line_items=[{"identifier": "SKU-A", "quantity": 1}]), "line_items[0].total"),
        (
            at_button(line_items=[{"identifier": "A", "quantity": -1, "total": 0}]),
            "line_items[0].quantity",
        ),
        (
            at_button(line_items=[{"identifier": "A", "quantity": 2, "amount": 10, "total": 25}]),
            "line_items[0].total",
        ),
        (
            at_button(line_items=[{"identifier": "A", "total": 100, "upc": "0123"}]),
            "line_items[0].upc",
        ),
        (
            at_button(line_items=[{"identifier": "A", "total": 100, "category": "shirts"}]),
            "line_items[0].category",
        ),
        (
            at_button(line_items=[{"identifier": "A", "total": 100, "attributes": {"n": 1}}]),
            "line_items[0].attributes.n",
        ),
        (at_button(line_items=[{"identifier": "", "total": 1}]), "line_items[0].identifier"),
    ],
)
def test_an_order_that_cannot_be_adopted_is_rejected_naming_the_field(obj, field: str) -> None:
    """Button's object may not have the shape the service sends (a previous integration's line
    items, a missing field): the refund is rejected (``order_not_adoptable``), the message
    starting with the field, and nothing is recorded."""
    result, profile = process(refund(total_amount="10.00"), None, CONFIG, NOW, lookup=found(obj))

    assert isinstance(result, Reject)
    assert (result.reason, result.detail.split(":")[0], profile) == (
        "order_not_adoptable",
        field,
        None,
    )


def test_a_found_lookup_without_an_object_is_not_adoptable() -> None:
    """A 2xx read that carries no order object is no base either."""
    lookup = Lookup(ORDER, found=True, order=None)
    result, _ = process(refund(total_amount="10.00"), Profile(), CONFIG, NOW, lookup=lookup)

    assert isinstance(result, Reject)
    assert result.reason == "order_not_adoptable"


# --- a purchase of an order Button already holds ------------------------------------------------
#
# Button's state is the base once Button holds the order: a purchase processed again after the
# profile forgot its order (a duplicate record, a filtered replay of its old dead letter) or the
# original purchase arriving after a refund adopted the order must not put the purchase's full
# state back over refunds Button already applied (a break trial saw 7000 become 10000).


def original_purchase(event_id: str, event_time: str) -> CommerceEvent:
    """The purchase the previous integration reported: 100.00, before its own refund of SKU-C."""
    commerce = {
        "action": "PURCHASE",
        "transaction_id": ORDER,
        "currency_code": "USD",
        "total_amount": "100.00",
        "products": [
            {"id": "SKU-A", "price": "25.00", "quantity": 2},
            {"id": "SKU-B", "price": "30.00"},
            {"id": "SKU-C", "price": "20.00"},
        ],
    }
    return event(event_id=event_id, event_time=event_time, commerce=commerce)


@pytest.mark.parametrize(
    ("event_id", "event_time"),
    [
        ("a9b", "2024-04-28T10:00:00Z"),  # Button's purchase date, an id sorting first
        ("z9c", "2024-04-28T10:00:00Z"),  # ... an id sorting last
        ("evt-p1", "2024-04-28T10:00:00.400Z"),  # milliseconds Button's date does not carry
        ("evt-p1", "2024-04-29T08:00:00Z"),  # published again a day later
    ],
)
def test_a_purchase_of_an_adopted_order_leaves_buttons_state(event_id, event_time) -> None:
    """The refund adopted Button's order (80.00, SKU-C already refunded by the previous
    integration) and took SKU-B off: 50.00. The original purchase arriving afterwards changes
    nothing: whatever it sends carries 50.00, and the profile keeps the adopted order."""
    _, adopted = process(refund(products=[{"id": "SKU-B"}]), None, CONFIG, NOW, lookup=found())

    result, profile = process(original_purchase(event_id, event_time), adopted, CONFIG, NOW)

    assert profile is None  # nothing changed
    assert isinstance(result, Send), result
    for request in (result.request, result.follow_up):
        assert request is not None
        assert request.body is not None
        assert request.body["total"] == 5000
        assert [line["identifier"] for line in request.body["line_items"]] == ["SKU-A"]


# --- the service's own lines: a unit price finer than the minor unit ----------------------------
#
# The service stores a line's unit price (``StoredLine.price``) and sends ``amount`` = the price
# rounded to minor units and ``total`` = price x quantity rounded (half-even, ``currency``): a
# price finer than the minor unit with a quantity above 1 gives a ``total`` that is not
# ``amount`` x ``quantity`` (0.333 x 3 USD: amount 33, total 100). Adoption must take every line
# the service sends, and send it back unchanged but for the refund.

EVICTING = MappingConfig(max_orders_per_profile=1)


def priced_purchase(
    order_id: str, products: list[dict[str, Any]], currency: str = "USD", event_id: str = "evt-p1"
) -> CommerceEvent:
    commerce = {
        "action": "PURCHASE",
        "transaction_id": order_id,
        "currency_code": currency,
        "products": products,
    }
    return event(event_id=event_id, event_time="2024-05-01T10:00:00Z", commerce=commerce)


def _button() -> OrderBook:
    return OrderBook(clock=NOW.timestamp, seed=1)


def _forgotten(
    products: list[dict[str, Any]], currency: str, book: OrderBook
) -> tuple[Profile, Profile]:
    """The order created at ``book`` (the sandbox's Button), then evicted from the profile by a
    second purchase (one order per profile): the profile that remembers it, and the one that
    forgot it."""
    created, remembers = process(priced_purchase(ORDER, products, currency), None, EVICTING, NOW)
    assert book.create(request_of(created).body)[0] == 200
    other = priced_purchase("ORD-OTHER", [{"id": "X", "price": "1", "quantity": 1}], currency)
    _, forgot = process(other, remembers, EVICTING, NOW + timedelta(minutes=1))
    assert remembers is not None
    assert forgot is not None
    assert (remembers.order(ORDER) is not None, forgot.order(ORDER)) == (True, None)
    return remembers, forgot


def test_an_order_the_service_created_at_a_sub_minor_unit_price_is_refunded_once_forgotten() -> (
    None
):
    """The sandbox fault: 0.333 x 3 USD is created as amount 33, total 100; evicted from the
    profile, a refund of one unit reads Button's order and must update it to two units (66.6
    rounds to 67), not dead-letter it ``order_not_adoptable`` and leave Button at 1.00."""
    book = _button()
    _, forgot = _forgotten([{"id": "SKU-A", "price": "0.333", "quantity": 3}], "USD", book)
    one_unit = refund(products=[{"id": "SKU-A", "quantity": 1}])

    read, _ = process(one_unit, forgot, EVICTING, NOW + timedelta(minutes=2))
    assert isinstance(read, Read)
    status, answer = book.get(ORDER)
    assert status == 200
    assert answer["object"]["line_items"][0] == {
        "identifier": "SKU-A",
        "sku": "SKU-A",
        "quantity": 3,
        "amount": 33,
        "total": 100,
    }
    result, adopted = process(
        one_unit, forgot, EVICTING, NOW + timedelta(minutes=2), lookup=found(answer["object"])
    )

    request = request_of(result)
    assert request.action is Action.UPDATE
    assert book.update(ORDER, request.body)[0] == 200
    held = book.get(ORDER)[1]["object"]
    assert (held["total"], held["line_items"][0]["quantity"], held["line_items"][0]["total"]) == (
        67,
        2,
        67,
    )
    assert adopted is not None
    assert adopted.order(ORDER).lines[0].price == "0.333"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("currency", "price", "quantity", "refunded"),
    [
        ("USD", "0.333", 3, 1),  # amount 33, total 100: 66.6 -> 67 either way
        ("USD", "0.3333", 3, 1),  # amount 33, total 100: adopted at 0.333, 66.66 / 66.6 -> 67
        ("JPY", "99.5", 3, 1),  # amount 100, total 298: only 99.5 gives both (a tie each)
        ("JPY", "99.5", 3, 2),
        ("USD", "0.005", 3, 1),  # amount 0, total 2: only 0.005 gives both
        ("KWD", "1.2345", 7, 3),  # amount 1234, total 8642: only 1.2345 gives both
        ("KWD", "0.0004", 5, 2),  # amount 0, total 2
        # A discount line (amount -12, total -38), refunded with SKU-C (1.00): alone it would
        # raise the order (``refund_raises_total``, the same from either profile).
        ("USD", "-0.125", 3, 1),
        ("USD", "2.50", 4, 1),  # the exact case: amount x quantity == total
    ],
)
def test_a_refund_of_a_forgotten_order_sends_what_the_remembered_order_would(
    currency: str, price: str, quantity: int, refunded: int
) -> None:
    """The same partial refund, mapped with the profile that remembers the order and with the
    one that forgot it (Button's order read and adopted): the same update, so the refunded
    line's total is round(p x q') for the units left in both."""
    book = _button()
    products = [
        {"id": "SKU-A", "price": price, "quantity": quantity},
        {"id": "SKU-B", "price": "7", "quantity": 1},
    ]
    discount = [{"id": "SKU-C"}] if price.startswith("-") else []
    products += [{**line, "price": "1", "quantity": 1} for line in discount]
    remembers, forgot = _forgotten(products, currency, book)
    partial = refund(products=[{"id": "SKU-A", "quantity": refunded}, *discount])
    later = NOW + timedelta(minutes=2)

    expected, _ = process(partial, remembers, EVICTING, later)
    adopted, _ = process(
        partial, forgot, EVICTING, later, lookup=found(book.get(ORDER)[1]["object"])
    )

    assert request_of(adopted).body == request_of(expected).body
    assert request_of(expected).body["line_items"][0]["quantity"] == quantity - refunded


def test_where_several_prices_fit_buttons_line_a_later_refund_is_within_one_minor_unit() -> None:
    """Button's object cannot tell 0.332 from 0.333 x 3 USD (both amount 33, total 100): the
    adopted price is the shortest that fits, nearest the middle (0.333), and two units of it
    round to 67 where 0.332 would give 66. The difference is bounded by one minor unit: every
    price that fits lies within 1/quantity of another."""
    book = _button()
    remembers, forgot = _forgotten([{"id": "SKU-A", "price": "0.332", "quantity": 3}], "USD", book)
    partial = refund(products=[{"id": "SKU-A", "quantity": 1}])
    later = NOW + timedelta(minutes=2)

    expected, _ = process(partial, remembers, EVICTING, later)
    adopted, _ = process(
        partial, forgot, EVICTING, later, lookup=found(book.get(ORDER)[1]["object"])
    )

    assert request_of(expected).body["line_items"][0]["total"] == 66
    assert request_of(adopted).body["line_items"][0]["total"] == 67


_CURRENCIES = st.sampled_from([("JPY", 0), ("USD", 2), ("BHD", 3), ("KWD", 3)])
_QUANTITIES = st.one_of(st.integers(0, 12), st.integers(13, 10_000), st.integers(10**6, 2**31 - 1))


@st.composite
def _prices(draw: st.DrawFn) -> Decimal:
    """A unit price as the event schema allows it: up to 6 decimal places (``events``)."""
    places = draw(st.integers(0, 6))
    digits = draw(st.one_of(st.integers(-(10**6), 10**6), st.integers(-(10**9), 10**9)))
    return Decimal(digits).scaleb(-places)


@settings(max_examples=600)
@given(currency=_CURRENCIES, price=_prices(), quantity=_QUANTITIES, other=_prices())
def test_every_line_the_service_sends_is_adoptable_and_sent_back_unchanged(
    currency: tuple[str, int], price: Decimal, quantity: int, other: Decimal
) -> None:
    """Property: a purchase line the service sends (its create body, from the event's unit price
    and quantity, in a 0-, 2- or 3-decimal currency) is adoptable, and the adopted order's body
    is the body sent, line for line."""
    code, exponent = currency
    products = [
        {"id": "A", "price": format(price, "f"), "quantity": quantity},
        {"id": "B", "price": format(other, "f"), "quantity": 2},
    ]
    commerce = {
        "action": "PURCHASE",
        "transaction_id": ORDER,
        "currency_code": code,
        "total_amount": "1",
        "products": products,
    }
    created, _ = process(event(commerce=commerce), None, CONFIG, NOW)
    assume(isinstance(created, Send))  # a line beyond int32 is rejected, not sent
    sent = {k: v for k, v in request_of(created).body.items() if k != "btn_ref"}

    at_button_now = button_order({**sent, "status": "open"}, ORDER)

    assert at_button_now.exponent == exponent
    again = order_body(_order_of(at_button_now))
    assert again == sent


@settings(max_examples=400)
@given(currency=_CURRENCIES, price=_prices(), quantity=st.integers(2, 10_000), data=st.data())
def test_a_later_refund_of_an_adopted_line_is_within_one_minor_unit_of_the_remembered(
    currency: tuple[str, int], price: Decimal, quantity: int, data: st.DataObject
) -> None:
    """Property: what is left of an adopted line after a refund of some units (q' < q) totals
    round(p x q') for the adopted price p, within one minor unit of round(P x q') for the price
    P the purchase gave (equal when Button's amount and total fix it: any two prices that fit
    the line lie within 1/q minor units of each other)."""
    _, exponent = currency
    line = StoredLine("A", quantity, format(price, "f"))
    amount = round(price.scaleb(exponent))  # half-even, as ``currency.to_minor_units``
    total = line_total(line, exponent)
    assume(abs(amount) < 2**31 and abs(total) < 2**31)
    item = {"identifier": "A", "quantity": quantity, "amount": amount, "total": total}
    obj = {
        "status": "open",
        "total": 0,
        "currency": currency[0],
        "purchase_date": "2024-05-01T10:00:00Z",
    }
    (adopted,) = button_order({**obj, "line_items": [item]}, ORDER).lines
    left = data.draw(st.integers(0, quantity - 1))

    remembered = line_total(StoredLine("A", left, line.price), exponent)
    assert abs(line_total(StoredLine("A", left, adopted.price), exponent) - remembered) <= 1


@settings(max_examples=300)
@given(
    currency=_CURRENCIES,
    total=st.integers(-(2**31), 2**31 - 1),
    quantity=st.one_of(st.integers(1, 12), st.integers(13, 2**31 - 1)),
)
def test_every_line_without_amount_is_adoptable_at_a_price_that_gives_its_total(
    currency: tuple[str, int], total: int, quantity: int
) -> None:
    """Property: a line without ``amount`` (a previous integration's) is stored at a unit price
    whose product with its quantity the service rounds to its ``total``, which the update then
    sends unchanged (with that price's ``amount``)."""
    code, exponent = currency
    item = {"identifier": "A", "quantity": quantity, "total": total}
    obj = {"status": "open", "total": 0, "currency": code, "purchase_date": "2024-05-01T10:00:00Z"}

    (adopted,) = button_order({**obj, "line_items": [item]}, ORDER).lines

    assert adopted.price is not None
    assert line_total(adopted, exponent) == total
    if total % quantity == 0:
        assert Decimal(adopted.price).scaleb(exponent) == total // quantity


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"identifier": "A", "quantity": 2, "amount": 10, "total": 25},
            "line_items[0].total: 25",
        ),
        (
            {"identifier": "A", "quantity": 3, "amount": 33, "total": 101},
            "line_items[0].total: 101",
        ),
        (
            {"identifier": "A", "quantity": 0, "amount": 33, "total": 1},
            "line_items[0].total: 1",
        ),
    ],
)
def test_a_line_no_unit_price_reproduces_is_not_adoptable_and_the_message_names_its_values(
    item: dict[str, Any], message: str
) -> None:
    """No unit price rounds to both the amount and, times the quantity, to the total (10 x 2
    cannot total 25; 33 x 3 totals 98.5 to 101.5 exclusive...): rejected, the message naming
    the field and the values."""
    result, _ = process(
        refund(total_amount="0.10"), None, CONFIG, NOW, lookup=found(at_button(line_items=[item]))
    )

    assert isinstance(result, Reject)
    assert result.reason == "order_not_adoptable"
    assert result.detail.startswith(message)
    for value in (item["amount"], item["quantity"]):
        assert str(value) in result.detail


@pytest.mark.parametrize(
    ("item", "currency", "price"),
    [
        ({"quantity": 3, "amount": 33, "total": 100}, "USD", "0.333"),
        ({"quantity": 3, "amount": 100, "total": 298}, "JPY", "99.5"),
        ({"quantity": 3, "amount": 0, "total": 2}, "USD", "0.005"),
        ({"quantity": 2, "amount": 2500, "total": 5000}, "USD", "25.00"),
        ({"quantity": 2**31 - 1, "amount": 0, "total": 1}, "USD", "0.000000000005"),
    ],
)
def test_the_adopted_price_survives_the_profile_changelog(
    item: dict[str, Any], currency: str, price: str
) -> None:
    """The chosen unit price is stored as its decimal text; the changelog encoding keeps it
    exactly (a string of any length), so a replay or a restore sends the same line."""
    obj = {
        "status": "open",
        "total": 0,
        "currency": currency,
        "purchase_date": "2024-05-01T10:00:00Z",
        "line_items": [{"identifier": "A", **item}],
    }
    result, profile = process(refund(total_amount="0.00001"), None, CONFIG, NOW, lookup=found(obj))
    assert profile is not None, result
    stored = profile.order(ORDER)
    assert stored is not None
    assert stored.lines[0].price == price

    assert decode_profile(encode_profile(profile, 0)) == profile


def _order_of(adopted: ButtonOrder) -> StoredOrder:
    """The adopted order as the mapping stores it: Button's content in a ``StoredOrder``."""
    return StoredOrder(
        order_id=ORDER,
        currency=adopted.currency,
        purchase_ms=adopted.purchase_ms,
        total=adopted.total,
        lines=adopted.lines,
        status=OrderStatus.OPEN,
        created_by="button:adopted",
        refunds=(),
        btn_ref=adopted.btn_ref,
        touched_ms=0,
        exponent=adopted.exponent,
    )


# --- Button's customer: kept with the adopted order, sent back with its updates ------------------

EMAIL_SHA256 = "a" * 64
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
AT_BUTTON_CUSTOMER = {"id": "cust-42", "email_sha256": EMAIL_SHA256, "device_id": IDFA}


def test_an_adopted_orders_update_sends_buttons_customer_back() -> None:
    """Button's order carries the ``customer`` a previous integration (or this service before
    its changelog was lost) created it with: the refund's update sends it back as Button
    returned it (id, email_sha256, device_id), so Button's order does not lose it."""
    result, adopted = process(
        refund(products=[{"id": "SKU-B"}]),
        None,
        CONFIG,
        NOW,
        lookup=found(at_button(customer=AT_BUTTON_CUSTOMER)),
    )

    body = request_of(result).body
    assert body["customer"] == AT_BUTTON_CUSTOMER
    assert validate_update(body, ORDER) == []
    assert adopted is not None
    kept = adopted.order(ORDER)
    assert kept is not None
    assert kept.customer is not None
    assert (kept.customer.id, kept.customer.email_sha256, kept.customer.device_id) == (
        "cust-42",
        EMAIL_SHA256,
        IDFA,
    )


def test_buttons_customer_wins_over_the_refunds_identities_and_survives_the_changelog() -> None:
    """Kept as a create's customer is: a later refund carrying other identities, mapped against
    the profile read back from the changelog, still sends Button's customer."""
    _, adopted = process(
        refund(products=[{"id": "SKU-B"}]),
        None,
        CONFIG,
        NOW,
        lookup=found(at_button(customer=AT_BUTTON_CUSTOMER)),
    )
    assert adopted is not None
    restored = decode_profile(encode_profile(adopted, 0))
    later = event(
        event_id="evt-r2",
        event_type="REFUND",
        user_identities={"customer_id": "someone-else"},
        commerce={"action": "REFUND", "transaction_id": ORDER, "total_amount": "5.00"},
    )

    result, _ = process(later, restored, CONFIG, NOW)

    assert restored == adopted
    assert request_of(result).body["customer"] == AT_BUTTON_CUSTOMER


def test_an_adopted_order_without_a_customer_still_sends_the_refunds_identities() -> None:
    """Button holds no ``customer``: as before, the update carries the refund's identities."""
    partial = event(
        event_id="evt-r1",
        event_type="REFUND",
        user_identities={"customer_id": "cust-7"},
        commerce={"action": "REFUND", "transaction_id": ORDER, "total_amount": "5.00"},
    )

    result, _ = process(partial, None, CONFIG, NOW, lookup=found())

    assert request_of(result).body["customer"] == {"id": "cust-7"}


@pytest.mark.parametrize(
    ("customer", "field"),
    [
        ("cust-42", "customer"),
        ({"id": ""}, "customer.id"),
        ({"id": 42}, "customer.id"),
        ({"email_sha256": "A" * 64}, "customer.email_sha256"),
        ({"email_sha256": "abc"}, "customer.email_sha256"),
        ({"device_id": ""}, "customer.device_id"),
        ({"id": "cust-42", "is_new": True}, "customer.is_new"),
    ],
)
def test_a_customer_that_cannot_be_sent_back_is_not_adoptable(customer: Any, field: str) -> None:
    """A ``customer`` the service could not send back as Button holds it (another type, an
    empty value, an email digest Button would refuse, a field it does not carry) is rejected
    ``order_not_adoptable`` naming the field, as a line item is."""
    result, profile = process(
        refund(total_amount="10.00"),
        None,
        CONFIG,
        NOW,
        lookup=found(at_button(customer=customer)),
    )

    assert isinstance(result, Reject)
    assert (result.reason, result.detail.split(":")[0], profile) == (
        "order_not_adoptable",
        field,
        None,
    )
