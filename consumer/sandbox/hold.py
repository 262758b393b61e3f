"""Holding Button's answers: requests park in the sandbox until the test releases them.

A test that must observe the consumer *while* work is outstanding (a rebalance with records in
flight, a crash before every order arrived) cannot rely on the consumer being slow enough. A hold
makes the outstanding work a fact: a held request gets no answer, so its record cannot finish and
its offset cannot be committed, however fast the machine is, until the test releases it.

A ``Hold`` is parsed from JSON (``POST /__sandbox/hold``) and replaces the previous one as a
whole; ``{}`` holds nothing and so releases every parked request::

    {"order_ids": ["ORD-1", "ORD-2"]}   # park every Button request naming one of these orders
    {"all": true}                       # park every Button request

A request names an order by the ``order_id`` of a create's body or the ``{order_id}`` of the
path (merchant order id or ``button_order_id``), the same way fault rules match. The hold is
checked first, before faults, authentication and validation; a released request then goes
through those steps as if it had just arrived. A parked request whose client goes away (it
timed out, was cancelled, or its process died) is never applied: within a few tens of
milliseconds it is recorded with status ``null`` and fault ``hold_abandoned``, and no longer
parked. ``POST /__sandbox/reset`` and server shutdown drop parked requests (connection reset,
nothing applied, nothing recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Hold", "HoldConfigError"]

_KEYS = frozenset({"all", "order_ids"})


class HoldConfigError(ValueError):
    """The hold JSON is not valid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Which Button requests park. ``Hold()`` parks none."""

    all: bool = False
    order_ids: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return self.all or bool(self.order_ids)

    def covers(self, order_id: str | None) -> bool:
        """Whether a request naming ``order_id`` (None: no order) parks."""
        return self.all or (order_id is not None and order_id in self.order_ids)

    @classmethod
    def from_json(cls, data: object) -> Hold:
        """Parse the hold JSON documented in this module.

        Raises:
            HoldConfigError: with a message naming the key that is wrong.
        """
        if not isinstance(data, dict):
            raise HoldConfigError("hold: must be a JSON object")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise HoldConfigError(f"hold: unknown key {unknown[0]!r}")
        hold_all = data.get("all", False)
        if not isinstance(hold_all, bool):
            raise HoldConfigError("all: must be true or false")
        order_ids = data.get("order_ids", [])
        if not isinstance(order_ids, list) or not all(
            isinstance(item, str) and item for item in order_ids
        ):
            raise HoldConfigError("order_ids: must be an array of non-empty strings")
        return cls(all=hold_all, order_ids=frozenset(order_ids))

    def to_json(self) -> dict[str, Any]:
        """The hold in the JSON form ``from_json`` reads."""
        return {"all": self.all, "order_ids": sorted(self.order_ids)}
