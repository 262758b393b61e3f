"""Property, through ``button-consumer map``: whatever the arrival order of a user's events, Button
ends where the events' meaning puts it, after every event.

A user's events are generated (opens with tokens, purchases, revised purchases, partial refunds
by product or amount, full refunds, which are the cancels), their arrival order is drawn, and
they go through the ``map`` command (``tests/mapdriver.py``: JSON lines in, Button's requests
out, the interface every version of the service has). Each request is answered by the sandbox's
``OrderBook`` in process, the way Button would; a create answered 409 and a cancel answered 404
change nothing there, as at Button. (``map`` does not print the update the service sends after a
409; Button holds no state here that the events did not give it, so that update would repeat
the state already sent.) After each event, the orders Button holds are compared with an
independent oracle, ``meaning`` of the events arrived so far, computed from the events alone (not
by running the service in event-time order, which would share the service's faults):

- an order with a full refund (no products, no amount) is cancelled, whatever the event times;
- otherwise it holds its latest purchase by event time (total, lines, ``purchase_date``) with
  every partial refund applied in event-time order: an amount comes off the total; refunded
  units come off the lines, and the total becomes the remaining lines' value (scaled by the
  total's ratio to the lines when an amount refund made them differ);
- an order published once carries the token of the latest open dated no later than its
  purchase (the token in force at purchase time); an order published more than once is not
  judged on ``btn_ref`` (which publication's time counts is the service's documented choice).

Orders, content and tokens are asserted apart, so Hypothesis reports each kind of divergence
with its own shrunk example. Refunds never take away every unit nor more than the smallest
publication holds (those are refused in some arrival orders and applied in others).

Against an older checkout: ``MAP_CHECKOUT=/path/to/checkout .venv/bin/pytest
tests/unit/test_arrival_order_map.py`` (``tests/README.md``). Before the order ledger and the
token history, the row tests fail with issue 9's rows 1, 3 and 4.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from consumer.sandbox.state import OrderBook
from tests.mapdriver import CheckoutMap, InProcessMap, MapDriver

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
NOW = T0 + timedelta(days=3)  # the processing time (``map --now``): every event is in the past
PRODUCTS = ("A", "B")
PRICES = {"A": 10, "B": 5}  # USD, whole dollars
ATTRIBUTION_WINDOW = timedelta(days=30)  # the default MAPPING_ATTRIBUTION_WINDOW_DAYS


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One generated event; ``repr`` is one readable line (Hypothesis prints it)."""

    event_id: str
    kind: str  # OPEN, PURCHASE or REFUND
    minutes: int  # event time: T0 plus this many minutes
    order_id: str = ""
    token: str = ""
    quantities: tuple[int, int] = (0, 0)  # a purchase's units of A and B
    refunded: tuple[tuple[str, int], ...] = ()  # a refund's units
    amount: int | None = None  # a refund's amount in dollars

    @property
    def full(self) -> bool:
        """A refund of the whole order (no products, no amount): a cancel."""
        return self.kind == "REFUND" and not self.refunded and self.amount is None

    @property
    def time(self) -> str:
        return _iso(T0 + timedelta(minutes=self.minutes))

    def value(self) -> int:
        return sum(PRICES[p] * q for p, q in zip(PRODUCTS, self.quantities, strict=True))

    def __repr__(self) -> str:
        at = f"{self.event_id} @T0+{self.minutes}m"
        if self.kind == "OPEN":
            return f"OPEN {at} btn_ref={self.token}"
        if self.kind == "PURCHASE":
            qa, qb = self.quantities
            return f"PURCHASE {at} {self.order_id}: A x{qa}, B x{qb} = {self.value()}.00"
        if self.full:
            return f"REFUND {at} {self.order_id}: whole order"
        if self.amount is not None:
            return f"REFUND {at} {self.order_id}: {self.amount}.00"
        units = ", ".join(f"{p} x{q}" for p, q in self.refunded)
        return f"REFUND {at} {self.order_id}: {units}"

    def to_json(self) -> dict[str, Any]:
        """The event in ``map``'s input form."""
        event: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": "APP_OPEN" if self.kind == "OPEN" else self.kind,
            "event_time": self.time,
            "user_key": "u",
        }
        if self.kind == "OPEN":
            event["btn_ref"] = self.token
        elif self.kind == "PURCHASE":
            event["commerce"] = {
                "action": "PURCHASE",
                "transaction_id": self.order_id,
                "currency_code": "USD",
                "total_amount": f"{self.value()}.00",
                "products": [
                    {"id": p, "price": str(PRICES[p]), "quantity": q}
                    for p, q in zip(PRODUCTS, self.quantities, strict=True)
                ],
            }
        else:
            commerce: dict[str, Any] = {"action": "REFUND", "transaction_id": self.order_id}
            if self.refunded:
                commerce["products"] = [{"id": p, "quantity": q} for p, q in self.refunded]
            if self.amount is not None:
                commerce["total_amount"] = f"{self.amount}.00"
            event["commerce"] = commerce
        return event


@dataclass(frozen=True)
class Case:
    """A user's events in their arrival order (the order ``map`` reads them)."""

    arrival: tuple[Event, ...]

    def __repr__(self) -> str:
        lines = "".join(f"\n    {n}. {e!r}" for n, e in enumerate(self.arrival, start=1))
        return f"arrival order:{lines}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis prints a falsifying case: the events, one line each."""
        printer.text(repr(self))


# --- the oracle: what Button should hold, from the events' meaning ----------------------------


@dataclass(frozen=True)
class Held:
    """One live order as Button holds it: total in cents, (product, units), purchase date."""

    total: int
    lines: tuple[tuple[str, int], ...]
    purchase_date: str


def meaning(events: tuple[Event, ...]) -> tuple[dict[str, Held], dict[str, str | None]]:
    """(live orders, ``btn_ref`` of each order published once) the events call for."""
    orders = sorted({e.order_id for e in events if e.kind != "OPEN"})
    opens = sorted((e for e in events if e.kind == "OPEN"), key=lambda e: e.minutes)
    live: dict[str, Held] = {}
    tokens: dict[str, str | None] = {}
    for order_id in orders:
        mine = [e for e in events if e.order_id == order_id]
        purchases = sorted(
            (e for e in mine if e.kind == "PURCHASE"), key=lambda e: (e.minutes, e.event_id)
        )
        refunds = sorted(
            (e for e in mine if e.kind == "REFUND"), key=lambda e: (e.minutes, e.event_id)
        )
        if len(purchases) == 1:
            at = purchases[0].minutes
            in_force = [
                e.token
                for e in opens
                if e.minutes <= at and timedelta(minutes=at - e.minutes) <= ATTRIBUTION_WINDOW
            ]
            tokens[order_id] = in_force[-1] if in_force else None
        if not purchases or any(r.full for r in refunds):
            continue
        latest = purchases[-1]
        units = dict(zip(PRODUCTS, latest.quantities, strict=True))
        total = 100 * latest.value()
        for refund in refunds:
            if refund.amount is not None:
                total -= 100 * refund.amount
                continue
            before = 100 * sum(PRICES[p] * q for p, q in units.items())
            for product, quantity in refund.refunded:
                units[product] -= quantity
            after = 100 * sum(PRICES[p] * q for p, q in units.items())
            if before == total:
                total = after
            else:  # an amount refund made the total differ from the lines: keep the ratio
                scaled = Decimal(total) * Decimal(after) / Decimal(before)
                total = int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        lines = tuple(sorted((p, q) for p, q in units.items() if q > 0))
        live[order_id] = Held(total, lines, latest.time)
    return live, tokens


# --- Button: the sandbox's order book answering map's requests ----------------------------------


@dataclass
class Button:
    """The sandbox's ``OrderBook`` in process, and what it answered (for the failure notes)."""

    book: OrderBook = field(default_factory=lambda: OrderBook(clock=NOW.timestamp, seed=1))
    answers: list[str] = field(default_factory=list)

    def send(self, request: dict[str, Any]) -> None:
        method, path, body = request["method"], request["path"], request.get("body")
        order_id = unquote(path.removeprefix("/v1/order").removeprefix("/"))
        if method == "POST" and not order_id:
            status, _ = self.book.create(body)
        elif method == "POST":
            status, _ = self.book.update(order_id, body)
        elif method == "DELETE":
            status, _ = self.book.cancel(order_id)
        elif method == "GET":  # a refund's read of its order (``map`` holds the refund)
            status, _ = self.book.get(order_id)
        else:
            raise AssertionError(f"not an Order API request: {method} {path}")
        summary = f" total={body.get('total')}" if isinstance(body, dict) else ""
        self.answers.append(f"{method} {path}{summary} -> {status}")

    def live(self) -> tuple[dict[str, Held], dict[str, str | None]]:
        now = NOW.timestamp()
        held: dict[str, Held] = {}
        tokens: dict[str, str | None] = {}
        for order_id, order in self.book.orders.items():
            tokens[order_id] = order.state.get("btn_ref")
            if order.status(now) == "deleted":
                continue
            lines = sorted((i["identifier"], i["quantity"]) for i in order.state["line_items"])
            held[order_id] = Held(order.state["total"], tuple(lines), order.state["purchase_date"])
        return held, tokens


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MapDriver]:
    """``map`` of this checkout, or of the checkout ``MAP_CHECKOUT`` names."""
    other = os.environ.get("MAP_CHECKOUT")
    if not other:
        yield InProcessMap(tmp_path_factory.mktemp("map"))
        return
    driver = CheckoutMap(Path(other))
    try:
        yield driver
    finally:
        driver.close()


def button_steps(
    service: MapDriver, case: Case
) -> list[tuple[dict[str, Held], dict[str, str | None]]]:
    """What Button holds after each of ``map``'s answers to the case's events, in arrival order."""
    results = service.run([json.dumps(e.to_json()) for e in case.arrival], _iso(NOW))
    assert len(results) == len(case.arrival), results
    button = Button()
    steps = []
    for result in results:
        if result.get("request"):
            button.send(result["request"])
        steps.append(button.live())
    note(f"map of {service.consumer_path}")
    note(
        "map: "
        + "; ".join(
            f"{r['event_id']} {r['action']} {r.get('reason') or ''}".rstrip() for r in results
        )
    )
    note("Button: " + "; ".join(button.answers))
    return steps


def check(service: MapDriver, case: Case, *, judge_btn_ref: bool) -> None:
    """After each event, Button's live orders, their content and (if judged) tokens are the
    meaning of the events arrived so far."""
    for n, (held, tokens) in enumerate(button_steps(service, case), start=1):
        arrived = case.arrival[:n]
        expected, expected_tokens = meaning(arrived)
        # Three assertions, three kinds of divergence (Hypothesis shrinks each on its own):
        assert sorted(held) == sorted(expected), (
            f"after event {n}: live orders {sorted(held)} != {sorted(expected)}"
        )
        assert held == expected, f"after event {n}: content {held} != {expected}"
        if judge_btn_ref:
            wanted = {o: t for o, t in expected_tokens.items() if o in expected}
            actual = {order_id: tokens.get(order_id) for order_id in wanted}
            assert actual == wanted, f"after event {n}: btn_ref {actual} != {wanted}"
            continue
        # A token attached at all is one that arrived, dated no later than a publication.
        dated = {e.token: e.minutes for e in arrived if e.kind == "OPEN"}
        for order_id, token in tokens.items():
            published = [
                e.minutes for e in arrived if e.order_id == order_id and e.kind == "PURCHASE"
            ]
            latest = max(published, default=-1)
            assert token is None or dated.get(token, latest + 1) <= latest, (order_id, token)


# --- strategies ---------------------------------------------------------------------------------


_SLOTS = range(0, 240, 10)  # event times, minutes after T0: more than any case uses


def _times(draw: st.DrawFn) -> Iterator[int]:
    """Distinct event times (minutes after T0)."""
    return iter(draw(st.permutations(_SLOTS)))


def _opens(times: Iterator[int], count: int) -> list[Event]:
    return [Event(f"o{i}", "OPEN", next(times), token=f"srctok-{i:04d}") for i in range(count)]


def _order(
    draw: st.DrawFn,
    times: Iterator[int],
    n: int,
    versions: list[tuple[int, int]],
    *,
    partial: int,
    full: int,
    one_b: bool = False,
) -> list[Event]:
    """An order's publications, up to ``partial`` partial refunds (with ``one_b``, first a refund
    of one B), and ``full`` whole refunds."""
    order_id = f"O{n}"
    events = [
        Event(f"p{n}{v}", "PURCHASE", next(times), order_id, quantities=q)
        for v, q in enumerate(versions)
    ]
    left = {"A": min(a for a, _ in versions) - 1, "B": min(b for _, b in versions)}
    if one_b:
        left["B"] -= 1
        events.append(Event(f"b{n}", "REFUND", next(times), order_id, refunded=(("B", 1),)))
    for r in range(draw(st.integers(0, partial))):
        kind = draw(st.sampled_from(["units", "amount"]))
        if kind == "amount":
            events.append(Event(f"r{n}{r}", "REFUND", next(times), order_id, amount=1))
            continue
        product = draw(st.sampled_from(PRODUCTS))
        if left[product] == 0:
            continue
        left[product] -= 1
        events.append(Event(f"r{n}{r}", "REFUND", next(times), order_id, refunded=((product, 1),)))
    for r in range(full):
        events.append(Event(f"c{n}{r}", "REFUND", next(times), order_id))
    return events


_QUANTITIES = st.tuples(st.integers(1, 3), st.integers(1, 3))


@st.composite
def _arrivals(draw: st.DrawFn, opens: list[Event], orders: list[Event], tokens_first: bool) -> Case:
    if tokens_first:
        arrival = draw(st.permutations(opens)) + draw(st.permutations(orders))
    else:
        arrival = draw(st.permutations(opens + orders))
    return Case(tuple(arrival))


@st.composite
def histories(draw: st.DrawFn, *, tokens_first: bool = True) -> Case:
    """Any mix: 0-3 opens, 1-2 orders of 1-3 publications, partial and whole refunds."""
    times = _times(draw)
    opens = _opens(times, draw(st.integers(0, 3)))
    orders: list[Event] = []
    for n in range(draw(st.integers(1, 2))):
        versions = draw(st.lists(_QUANTITIES, min_size=1, max_size=3))
        orders += _order(draw, times, n, versions, partial=3, full=draw(st.integers(0, 1)))
    return draw(_arrivals(opens, orders, tokens_first))


@st.composite
def late_purchases(draw: st.DrawFn) -> Case:
    """Row 1's kind: a purchase dated between the user's tokens (the later ones are newer)."""
    count = draw(st.integers(2, 3))
    moments = sorted(
        draw(
            st.lists(
                st.sampled_from(_SLOTS),
                min_size=count + 1,
                max_size=count + 1,
                unique=True,
            )
        )
    )
    at = draw(st.integers(1, count - 1))  # strictly between the first and the last token
    purchase_time = moments.pop(at)
    opens = _opens(iter(moments), count)
    times = iter([purchase_time])
    orders = _order(draw, times, 0, [draw(_QUANTITIES)], partial=0, full=0)
    return draw(_arrivals(opens, orders, True))


@st.composite
def repeated_tokens(draw: st.DrawFn) -> Case:
    """The trial's kind: tokens seen more than once (an install, then opens with the same
    token), a purchase dated strictly between the first and the last sighting."""
    count = draw(st.integers(2, 4))
    moments = sorted(
        draw(st.lists(st.sampled_from(_SLOTS), min_size=count + 1, max_size=count + 1, unique=True))
    )
    purchase_time = moments.pop(draw(st.integers(1, count - 1)))
    names = draw(st.lists(st.sampled_from(["srctok-0000", "srctok-0001"]), min_size=count))
    opens = [
        Event(f"o{i}", "OPEN", minutes, token=name)
        for i, (minutes, name) in enumerate(zip(moments, names[:count], strict=True))
    ]
    orders = _order(draw, iter([purchase_time]), 0, [draw(_QUANTITIES)], partial=0, full=0)
    return draw(_arrivals(opens, orders, True))


@st.composite
def revised_purchases(draw: st.DrawFn) -> Case:
    """Row 3's kind: an order published again with other content, then refunded in part."""
    times = _times(draw)
    opens = _opens(times, draw(st.integers(0, 1)))
    versions = draw(st.lists(_QUANTITIES, min_size=2, max_size=3, unique=True))
    orders = _order(draw, times, 0, versions, partial=1, full=0, one_b=True)
    return draw(_arrivals(opens, orders, True))


@st.composite
def cancelled_orders(draw: st.DrawFn) -> Case:
    """Row 4's kind: an order refunded whole (a cancel), published once or twice."""
    times = _times(draw)
    opens = _opens(times, draw(st.integers(0, 1)))
    versions = draw(st.lists(_QUANTITIES, min_size=1, max_size=2))
    orders = _order(draw, times, 0, versions, partial=1, full=1)
    return draw(_arrivals(opens, orders, True))


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=150)
@given(histories())
def test_any_arrival_order_ends_where_the_events_put_it(service: MapDriver, case: Case) -> None:
    """Tokens arrive before the orders, in any order; the order events in any order."""
    check(service, case, judge_btn_ref=True)


@settings(max_examples=100)
@given(histories(tokens_first=False))
def test_tokens_arriving_anywhere_leave_the_orders_where_the_events_put_them(
    service: MapDriver, case: Case
) -> None:
    """Tokens interleaved with the orders: the orders converge; ``btn_ref`` cannot once the
    create left (Button takes it only on the create), but is never a token dated later than
    every publication of its order."""
    check(service, case, judge_btn_ref=False)


@settings(max_examples=50)
@given(late_purchases())
def test_row_1_kind_the_token_in_force_at_purchase_time(service: MapDriver, case: Case) -> None:
    """A purchase published after newer tokens arrived carries the token of its own time."""
    check(service, case, judge_btn_ref=True)


TRIAL_ROW = Case(
    (
        Event("o0", "OPEN", 0, token="srctok-0000"),
        Event("o1", "OPEN", 100, token="srctok-0000"),
        Event("p00", "PURCHASE", 50, "O0", quantities=(1, 1)),
    )
)


@settings(max_examples=1)
@given(st.just(TRIAL_ROW))
def test_the_trials_row_a_token_seen_again_after_the_late_purchases_time(
    service: MapDriver, case: Case
) -> None:
    """An install with srctok-0000 at T0, an open with it again at T0+100m, then a purchase
    dated T0+50m: the order carries srctok-0000 (the user trial got none)."""
    check(service, case, judge_btn_ref=True)


@settings(max_examples=50)
@given(repeated_tokens())
def test_repeated_tokens_kind_the_token_in_force_at_purchase_time(
    service: MapDriver, case: Case
) -> None:
    """Tokens seen again later (in any arrival order, before the purchase arrives): the order
    carries the token in force at its own time."""
    check(service, case, judge_btn_ref=True)


@settings(max_examples=50)
@given(revised_purchases())
def test_row_3_kind_a_revised_purchase_and_its_refunds(service: MapDriver, case: Case) -> None:
    """Button holds the latest publication by event time, less the refunds."""
    check(service, case, judge_btn_ref=True)


@settings(max_examples=50)
@given(cancelled_orders())
def test_row_4_kind_a_whole_refund_in_any_order(service: MapDriver, case: Case) -> None:
    """A cancelled order stays cancelled, whichever of its events arrives first."""
    check(service, case, judge_btn_ref=True)
