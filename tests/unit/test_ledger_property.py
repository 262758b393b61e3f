"""Property: whatever the arrival order of a user's events, Button ends as in event-time order.

A user's events are generated (opens with tokens, purchases, revised purchases, partial and full
refunds), their arrival order is shuffled, and each one runs through the service's mapping
(``mapping.process``, the profile carried across events) against an independent, in-process
model of Button: the sandbox's ``OrderBook`` state machine (a 409 on create and a 404 on cancel
count as done, as the failure policy says). The live orders Button ends with must equal those of
the same events processed in event-time order.

Three properties:

- Tokens first: token events arrive before the order events, in any order among themselves, and
  ``btn_ref`` is compared too, for orders published once (a revised purchase arriving first is
  created with the token in force at its own time).
- Tokens anywhere: token events are interleaved with the order events. The orders' state (live
  or not, total, lines) converges; ``btn_ref`` cannot: a token that reaches the service after
  the order's create is never attached, because Button takes ``btn_ref`` only on the create (the
  update carries none, and Button keeps the create's), so the token in force at purchase time
  may still be unknown when the create leaves. What holds instead: an attached token is one of
  the user's, dated no later than a publication of the order.
- Button already holds a stale state: the order book is seeded with every order in another
  state before the events arrive (a profile lost or expired, a create sent by an earlier
  deployment). Each create is then answered 409, and the update it carries
  (``Send.follow_up``, sent as the failure policy says) brings Button to the event-time state.
  ``btn_ref`` is not compared: Button keeps the seeded create's.

Refunds never take away every unit, and never more than the smallest publication holds: those
would be rejected in one arrival order and applied in another. Each property runs 500 to 1,500
examples; the three take about ten seconds together.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.domain.button import Action, Reject, Send
from consumer.domain.event_forms import event_from_json
from consumer.domain.events import CommerceEvent
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.domain.policy import Verdict, classify
from consumer.domain.profile import Profile
from consumer.sandbox.state import OrderBook

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
CONFIG = MappingConfig()
PRODUCTS = ("A", "B")
PRICES = {"A": 10, "B": 5}


def _time(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _event(event_id: str, kind: str, minutes: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": kind,
        "event_time": _time(minutes),
        "user_key": "u",
        **fields,
    }


@st.composite
def user_histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """(token events, order events, ids of orders published once), distinct event times."""
    times = iter(draw(st.permutations(range(0, 600, 7))))
    opens = [
        _event(f"o{i}", "APP_OPEN", next(times), btn_ref=f"srctok-{i:04d}")
        for i in range(draw(st.integers(0, 3)))
    ]
    orders: list[dict[str, Any]] = []
    single: set[str] = set()
    for n in range(draw(st.integers(1, 2))):
        order_id = f"O{n}"
        versions = draw(
            st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3)
        )
        if len(versions) == 1:
            single.add(order_id)
        for v, (qa, qb) in enumerate(versions):
            products = [
                {"id": p, "price": str(PRICES[p]), "quantity": q}
                for p, q in zip(PRODUCTS, (qa, qb), strict=True)
            ]
            commerce = {
                "action": "PURCHASE",
                "transaction_id": order_id,
                "currency_code": "USD",
                "total_amount": str(10 * qa + 5 * qb),
                "products": products,
            }
            orders.append(_event(f"p{n}{v}", "PURCHASE", next(times), commerce=commerce))
        left = {"A": min(q for q, _ in versions), "B": min(q for _, q in versions)}
        left["A"] -= 1  # at least one unit of A stays: a partial refund never cancels
        for r in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["product", "amount", "full"]))
            refund_fields: dict[str, Any] = {"action": "REFUND", "transaction_id": order_id}
            if kind == "product":
                product = draw(st.sampled_from(PRODUCTS))
                if left[product] == 0:
                    continue
                left[product] -= 1
                refund_fields["products"] = [{"id": product, "quantity": 1}]
            elif kind == "amount":
                refund_fields["total_amount"] = "1.00"
            orders.append(_event(f"r{n}{r}", "REFUND", next(times), commerce=refund_fields))
    return opens, orders, single


class Button:
    """The sandbox's order book, in process, answering the mapping's requests."""

    def __init__(self) -> None:
        self.book = OrderBook(clock=NOW.timestamp, seed=1)

    def seed(self, order_ids: set[str]) -> None:
        """Button already holds each order, in a state no event of the history gives it."""
        for order_id in sorted(order_ids):
            stale = {"identifier": "A", "sku": "A", "quantity": 9, "amount": 1000, "total": 9000}
            status, _ = self.book.create(
                {
                    "order_id": order_id,
                    "total": 9000,
                    "currency": "USD",
                    "purchase_date": "2026-01-01T00:00:00Z",
                    "line_items": [stale],
                }
            )
            assert status == 200

    def apply(self, result: object) -> None:
        if isinstance(result, Reject):
            raise AssertionError(f"unexpected reject: {result}")
        if not isinstance(result, Send):
            return
        request = result.request
        if request.action is Action.CREATE:
            status, _ = self.book.create(dict(request.body or {}))
            assert status in (200, 409), (status, request)
            conflict = ButtonOutcome(OutcomeKind.CONFLICT, 409, from_button=True)
            verdict = classify(request.action, conflict, follow_up=result.follow_up is not None)
            if status == 409 and verdict.verdict is Verdict.FOLLOW_UP:
                assert result.follow_up is not None
                self.apply(Send(result.follow_up))  # as the pipeline does: the policy says so
        elif request.action is Action.UPDATE:
            status, _ = self.book.update(request.order_id, dict(request.body or {}))
            assert status == 200, (status, request)
        else:
            status, _ = self.book.cancel(request.order_id)
            assert status in (200, 404), (status, request)

    def live(self, with_token: set[str]) -> dict[str, Any]:
        now = NOW.timestamp()
        return {
            order_id: (
                order.state["total"],
                sorted((i["identifier"], i["quantity"]) for i in order.state.get("line_items", [])),
                order.state.get("btn_ref") if order_id in with_token else None,
            )
            for order_id, order in self.book.orders.items()
            if order.status(now) != "deleted"
        }


def run(
    events: list[CommerceEvent], single: set[str], *, seeded: set[str] | None = None
) -> dict[str, Any]:
    button, profile = Button(), None
    button.seed(seeded or set())
    for event in events:
        result, changed = process(event, profile, CONFIG, NOW)
        button.apply(result)
        profile = changed if changed is not None else profile
    assert profile is None or isinstance(profile, Profile)
    return button.live(single)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_histories(), st.randoms(use_true_random=False))
def test_any_arrival_order_converges_to_the_event_time_result(
    history: tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]], rng: Any
) -> None:
    """Shuffled arrival, same Button state as event-time order (issue 9 rows 1, 3 and 4)."""
    opens, orders, single = history
    by_time = sorted(opens + orders, key=lambda e: e["event_time"])
    expected = run([event_from_json(e) for e in by_time], single)
    arrival_opens, arrival_orders = list(opens), list(orders)
    rng.shuffle(arrival_opens)
    rng.shuffle(arrival_orders)
    arrived = run([event_from_json(e) for e in arrival_opens + arrival_orders], single)
    assert expected == arrived


def _order_ids(orders: list[dict[str, Any]]) -> set[str]:
    return {e["commerce"]["transaction_id"] for e in orders}


def _without_btn_ref(live: dict[str, Any]) -> dict[str, Any]:
    return {order_id: (total, lines) for order_id, (total, lines, _) in live.items()}


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_histories(), st.randoms(use_true_random=False))
def test_tokens_arriving_after_the_orders_leave_the_order_state_converged(
    history: tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]], rng: Any
) -> None:
    """Opens interleaved anywhere with the order events: the orders' state converges, and a
    ``btn_ref`` Button holds is a token of the user's dated no later than a publication of its
    order (never a later one; which one depends on what had arrived when the create left)."""
    opens, orders, _ = history
    by_time = sorted(opens + orders, key=lambda e: e["event_time"])
    everyone = _order_ids(orders)
    expected = run([event_from_json(e) for e in by_time], everyone)
    arrival = opens + orders
    rng.shuffle(arrival)
    arrived = run([event_from_json(e) for e in arrival], everyone)
    assert _without_btn_ref(expected) == _without_btn_ref(arrived)
    token_times = {e["btn_ref"]: e["event_time"] for e in opens}
    for order_id, (_, _, btn_ref) in arrived.items():
        latest = max(e["event_time"] for e in orders if e["commerce"]["transaction_id"] == order_id)
        assert btn_ref is None or token_times[btn_ref] <= latest, (order_id, btn_ref)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_histories(), st.randoms(use_true_random=False))
def test_a_create_answered_409_is_followed_by_the_update_that_converges(
    history: tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]], rng: Any
) -> None:
    """Button already holds every order in a stale state: each create is answered 409, its
    follow-up update is sent, and Button ends in the event-time state (issue 9, item 1)."""
    opens, orders, _ = history
    by_time = sorted(opens + orders, key=lambda e: e["event_time"])
    expected = run([event_from_json(e) for e in by_time], set())
    arrival_orders = list(orders)
    rng.shuffle(arrival_orders)
    arrived = run(
        [event_from_json(e) for e in opens + arrival_orders], set(), seeded=_order_ids(orders)
    )
    assert expected == arrived
