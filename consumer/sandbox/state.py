"""Button's order semantics for the sandbox: orders, their status life cycle, and what was asked.

``OrderBook`` answers each Order API operation with Button's status code and response envelope
(``meta.status``, ``object``/``objects``, ``error.message``); the HTTP layer (``server``) adds
authentication, body parsing and faults around it. It also keeps, for observation, every request
that named an order and per-route counters. Everything runs on the server's event loop, so there
is no locking; the clock is injected so finalization can be tested without waiting.

Decisions where Button is silent (gaps in Button's public documentation):

- ``{order_id}`` in a path may be the merchant ``order_id`` or the ``button_order_id``.
- Creates answer 200 with the order; a duplicate ``order_id`` answers 409 (also after deletion:
  ``order_id`` stays unique).
- ``finalization_date`` is the time the create arrived plus the finalization window (sample data
  carry old purchase dates, which would otherwise finalize at once); a ``finalization_date`` in the
  body overrides it. An ``open`` order becomes ``finalized`` when that time passes.
- Update or cancel of a ``finalized`` order answers 403. A ``deleted`` order can still be read
  (``status: "deleted"``), but update and cancel answer 404: it is gone.
- An update replaces the order's state with the body (full new state); ``btn_ref``,
  ``purchase_date`` and ``finalization_date`` keep their values when the body omits them.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from consumer.sandbox.validation import (
    parse_iso8601,
    validate_btn_ref,
    validate_create,
    validate_order_id,
    validate_update,
)

__all__ = [
    "DEFAULT_FINALIZATION_WINDOW_S",
    "HistoryEntry",
    "Order",
    "OrderBook",
    "Reply",
    "error_envelope",
    "iso_time",
]

DEFAULT_FINALIZATION_WINDOW_S: Final = 7 * 24 * 3600.0
Status = Literal["open", "finalized", "deleted"]
Reply = tuple[int, dict[str, Any]]
_KEPT_ON_UPDATE: Final = ("order_id", "btn_ref", "purchase_date", "finalization_date")


def error_envelope(message: str, **extra: Any) -> dict[str, Any]:
    """Button's error body: ``{"meta": {"status": "error"}, "error": {"message": ...}}``."""
    return {"meta": {"status": "error"}, "error": {"message": message, **extra}}


def iso_time(epoch: float) -> str:
    """``epoch`` as ISO-8601 UTC with ``Z``; milliseconds only when there are any."""
    moment = datetime.fromtimestamp(epoch, UTC)
    if moment.microsecond // 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class HistoryEntry:
    """One request that named an order. ``status`` is None when no response was sent."""

    method: str
    path: str
    status: int | None
    time: float
    fault: str | None = None
    total: int | None = None
    """The request body's ``total`` (minor units) for a create or update, else None."""

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "time": iso_time(self.time),
            "fault": self.fault,
            "total": self.total,
        }


@dataclass(slots=True)
class Order:
    """One order as Button holds it."""

    order_id: str
    button_order_id: str
    state: dict[str, Any]
    finalization_at: float
    created_at: float
    updated_at: float
    deleted: bool = False
    version: int = 1
    history: list[HistoryEntry] = field(default_factory=list)

    def status(self, now: float) -> Status:
        if self.deleted:
            return "deleted"
        return "finalized" if now >= self.finalization_at else "open"

    def to_button(self, now: float) -> dict[str, Any]:
        """The order as Button's ``object``: the state sent plus Button's own fields."""
        obj: dict[str, Any] = {
            "button_order_id": self.button_order_id,
            "order_id": self.order_id,
            "btn_ref": None,
            "line_items": [],
        }
        obj.update(self.state)
        obj["status"] = self.status(now)
        obj.setdefault("finalization_date", iso_time(self.finalization_at))
        return obj


class OrderBook:
    """Orders, request history and counters, with Button's answers to each operation."""

    def __init__(
        self,
        *,
        finalization_window_s: float = DEFAULT_FINALIZATION_WINDOW_S,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.finalization_window_s = finalization_window_s
        self._clock = clock
        self._seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - reproducible IDs, not secrets
        self.orders: dict[str, Order] = {}
        self._by_button_id: dict[str, str] = {}
        self._by_btn_ref: dict[str, list[str]] = {}
        self._orphans: dict[str, list[HistoryEntry]] = {}
        self._counts: Counter[tuple[str, str]] = Counter()
        self._started = clock()

    def clear(self) -> None:
        """Forget every order, request and counter."""
        self.orders.clear()
        self._by_button_id.clear()
        self._by_btn_ref.clear()
        self._orphans.clear()
        self._counts.clear()
        self._rng.seed(self._seed)
        self._started = self._clock()

    # --- Button operations --------------------------------------------------------------------

    def create(self, body: object) -> Reply:
        """``POST /v1/order``."""
        problems = validate_create(body)
        if problems or not isinstance(body, Mapping):
            return _invalid(problems)
        order_id: str = body["order_id"]
        if order_id in self.orders:
            return 409, error_envelope(f"Order already exists: {order_id}")
        now = self._clock()
        order = Order(
            order_id=order_id,
            button_order_id=self._new_button_id(),
            state=dict(body),
            finalization_at=self._finalization_at(body, now),
            created_at=now,
            updated_at=now,
            # Earlier failed attempts at this create belong to the order's history too.
            history=self._orphans.pop(order_id, []),
        )
        self.orders[order_id] = order
        self._by_button_id[order.button_order_id] = order_id
        if "btn_ref" in body:
            self._by_btn_ref.setdefault(body["btn_ref"], []).append(order_id)
        return 200, _ok(order.to_button(now))

    def update(self, path_id: str, body: object) -> Reply:
        """``POST /v1/order/{order_id}`` with the order's full new state."""
        order, reply = self._changeable(path_id)
        if order is None:
            return reply
        problems = validate_update(body, order.order_id)
        if problems or not isinstance(body, Mapping):
            return _invalid(problems)
        now = self._clock()
        old_ref = order.state.get("btn_ref")
        state = dict(body)
        for name in _KEPT_ON_UPDATE:
            if name not in state and name in order.state:
                state[name] = order.state[name]
        state["order_id"] = order.order_id
        order.state = state
        if "finalization_date" in body:
            order.finalization_at = self._finalization_at(body, order.created_at)
        if state.get("btn_ref") != old_ref:
            if old_ref is not None:
                self._by_btn_ref[old_ref].remove(order.order_id)
            self._by_btn_ref.setdefault(state["btn_ref"], []).append(order.order_id)
        order.updated_at = now
        order.version += 1
        return 200, _ok(order.to_button(now))

    def cancel(self, path_id: str) -> Reply:
        """``DELETE /v1/order/{order_id}``."""
        order, reply = self._changeable(path_id)
        if order is None:
            return reply
        order.deleted = True
        order.updated_at = self._clock()
        order.version += 1
        return 200, {"meta": {"status": "ok"}, "object": None}

    def get(self, path_id: str) -> Reply:
        """``GET /v1/order/{order_id}``."""
        problems = validate_order_id(path_id)
        if problems:
            return _invalid(problems)
        order = self.find(path_id)
        if order is None:
            return 404, _not_found(path_id)
        return 200, _ok(order.to_button(self._clock()))

    def list_by_btn_ref(self, btn_ref: str) -> Reply:
        """``GET /v1/order/btn-ref/{btn_ref}``: every order reported with that token."""
        problems = validate_btn_ref(btn_ref)
        if problems:
            return _invalid(problems)
        now = self._clock()
        objects = [self.orders[oid].to_button(now) for oid in self._by_btn_ref.get(btn_ref, [])]
        return 200, {"meta": {"status": "ok", "next": None, "previous": None}, "objects": objects}

    # --- observation and control --------------------------------------------------------------

    def find(self, path_id: str) -> Order | None:
        """The order a path names, by merchant ``order_id`` or ``button_order_id``."""
        order = self.orders.get(path_id)
        if order is None and path_id.startswith("btnorder-"):
            merchant_id = self._by_button_id.get(path_id)
            order = None if merchant_id is None else self.orders.get(merchant_id)
        return order

    def record(
        self,
        route: str,
        order_key: str | None,
        *,
        method: str,
        path: str,
        status: int | None,
        fault: str | None = None,
        total: int | None = None,
    ) -> None:
        """Count one Button API request and, if it named an order, add it to that history
        (with the body's ``total`` in minor units, for a create or update)."""
        # A response that was never delivered counts under its fault's name, not its status.
        label = str(status) if status is not None and fault != "lost_response" else str(fault)
        self._counts[(route, label)] += 1
        if fault is not None:
            self._counts[("fault", fault)] += 1
        if order_key is None:
            return
        entry = HistoryEntry(method, path, status, self._clock(), fault, total)
        order = self.find(order_key)
        if order is not None:
            order.history.append(entry)
        else:
            self._orphans.setdefault(order_key, []).append(entry)

    def finalize(self, path_id: str) -> Order | None:
        """Finalize an open order now (admin shortcut); None when there is no such open order."""
        order = self.find(path_id)
        now = self._clock()
        if order is None or order.status(now) != "open":
            return None
        order.finalization_at = now
        order.state.pop("finalization_date", None)
        return order

    def order_json(self, order: Order) -> dict[str, Any]:
        """An order for ``/__sandbox/orders``: Button's view plus version and history."""
        now = self._clock()
        return {
            "order_id": order.order_id,
            "button_order_id": order.button_order_id,
            "status": order.status(now),
            "version": order.version,
            "created_at": iso_time(order.created_at),
            "updated_at": iso_time(order.updated_at),
            "object": order.to_button(now),
            "history": [entry.to_json() for entry in order.history],
        }

    def orders_json(self) -> dict[str, Any]:
        """Every order, and the requests that named an order that does not exist."""
        return {
            "orders": [self.order_json(order) for order in self.orders.values()],
            "unknown_order_requests": {
                key: [entry.to_json() for entry in entries]
                for key, entries in self._orphans.items()
            },
        }

    def stats_json(self) -> dict[str, Any]:
        """Request counters by route and status, fault counters and order counts by status."""
        by_route: dict[str, dict[str, int]] = {}
        by_status: Counter[str] = Counter()
        faults: dict[str, int] = {}
        for (route, label), count in sorted(self._counts.items()):
            if route == "fault":
                faults[label] = count
                continue
            by_route.setdefault(route, {})[label] = count
            by_status[label] += count
        now = self._clock()
        statuses = Counter(order.status(now) for order in self.orders.values())
        return {
            "requests": sum(by_status.values()),
            "by_route": by_route,
            "by_status": dict(sorted(by_status.items())),
            "faults": faults,
            "orders": {name: statuses.get(name, 0) for name in ("open", "finalized", "deleted")},
            "since": iso_time(self._started),
        }

    # --- helpers ------------------------------------------------------------------------------

    def _changeable(self, path_id: str) -> tuple[Order | None, Reply]:
        problems = validate_order_id(path_id)
        if problems:
            return None, _invalid(problems)
        order = self.find(path_id)
        if order is None:
            return None, (404, _not_found(path_id))
        status = order.status(self._clock())
        if status == "deleted":
            return None, (404, error_envelope(f"Order is deleted: {order.order_id}"))
        if status == "finalized":
            return None, (
                403,
                error_envelope(f"Order is finalized and cannot be changed: {order.order_id}"),
            )
        return order, (200, {})

    def _finalization_at(self, body: Mapping[str, Any], received: float) -> float:
        given = body.get("finalization_date")
        if isinstance(given, str):
            moment = parse_iso8601(given)
            if moment is not None:
                return moment.timestamp()
        return received + self.finalization_window_s

    def _new_button_id(self) -> str:
        while True:
            candidate = f"btnorder-{self._rng.getrandbits(64):016x}"
            if candidate not in self._by_button_id:
                return candidate


def _ok(obj: dict[str, Any]) -> dict[str, Any]:
    return {"meta": {"status": "ok"}, "object": obj}


def _not_found(path_id: str) -> dict[str, Any]:
    return error_envelope(f"Order not found: {path_id[:255]}")


def _invalid(problems: list[str]) -> Reply:
    return 400, error_envelope(
        "; ".join(problems), type="validation", details={"problems": problems}
    )
