"""What the service asks of Button: the request a commerce event becomes, or why it becomes none.

The mapper (pure) returns a ``MapResult``; the dispatcher sends a ``ButtonRequest`` through the
Button client and gets back a ``ButtonOutcome`` (see ``outcomes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    """What the mapper decided for one event."""

    CREATE = "create"
    UPDATE = "update"
    CANCEL = "cancel"
    READ = "read"
    SKIP = "skip"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class ButtonRequest:
    """One call to Button's Order API (``POST /v1/order``, ``POST|DELETE /v1/order/{id}``; a
    ``Read``'s ``GET /v1/order/{id}``)."""

    action: Action
    method: str
    path: str
    order_id: str
    body: Mapping[str, Any] | None = None


REFUND_HELD = "refund_held"
"""The skip of a partial refund held in the profile for its purchase (``Read.held``)."""

KEYLESS_REFUND_BEFORE_PURCHASE = "keyless_refund_before_purchase"
"""The reject of a refund of an order Button does not know (or that was not read) whose record
has no key: such a record has no profile, so a partial refund that would be held for its
purchase (``REFUND_HELD``) has nowhere to be held, and a whole-order refund nothing to remember
the order cancelled in (its cancel, answered 404, would be taken as done and the purchase
arriving later created live). Its dead letter is replayable once the purchase has reached
Button (the replay's read finds the order: the refund is applied, or the order cancelled)."""

ORDER_EXPIRED = "order_expired"
"""A ``DiscardedRefund``'s reason: the refund was held for its purchase and its order expired
from the profile first (the order retention after its last event)."""
ORDER_EVICTED = "order_evicted"
"""A ``DiscardedRefund``'s reason: the refund was held for its purchase and its order was
forgotten first, the profile keeping only the orders touched last (its order cap)."""
PROFILE_CAPPED = "profile_capped"
"""A ``DiscardedRefund``'s reason: the refund was held for its purchase and its order was
forgotten first, the encoded profile being over its cap in bytes."""


@dataclass(frozen=True, slots=True)
class DiscardedRefund:
    """A refund the order's ledger holds that the event being mapped made it stop applying:
    held for its purchase (or recorded earlier) and unable to apply to the order's content as
    it now stands (a product the order does not have, another currency, more than the total).
    ``reason`` and ``detail`` are what the refund would be rejected with, arriving now. Or a
    refund held for its purchase that left the profile with its order before the purchase
    arrived: ``reason`` ``ORDER_EXPIRED``, ``ORDER_EVICTED`` or ``PROFILE_CAPPED``."""

    event_id: str
    reason: str
    detail: str = ""
    order_id: str | None = None
    """The order the refund was held for, when it is not the mapped event's own (a held refund
    of another order of the user, gone with it)."""


@dataclass(frozen=True, slots=True)
class DroppedInput:
    """Something an event carried that the mapping does not send to Button nor remember, for
    the service to count and log (``input_dropped``), so that a merchant sees what the app or
    feed sends. ``field`` names what was left out (``line_items``: an order sent without its
    line items), ``problem`` why (``product_without_price``); ``value`` is what may be logged
    of it (a product id), or ``None``."""

    field: str
    problem: str
    value: str | None = None


DROPPED_INPUT_KINDS = (
    ("line_items", "product_without_price"),
    ("ios_advertising_id", "not_uuid"),
    ("android_advertising_id", "not_uuid"),
)
"""Every ``(field, problem)`` a ``DroppedInput`` of the mapping has (``mapping.dropped_inputs``):
a purchase's product without a price (its order goes without line items), an advertising id
that is not a UUID. Their counters exist from the start (at 0)."""


@dataclass(frozen=True, slots=True)
class Send:
    """The event becomes this request.

    ``follow_up``: for a create, the update of the same order with the same full state, sent
    only when the create is answered 409: Button already holds the order, perhaps in another
    state (the failure policy decides, ``policy.classify``). Idempotent: it sends the whole state.
    """

    request: ButtonRequest
    follow_up: ButtonRequest | None = None
    discarded: tuple[DiscardedRefund, ...] = ()
    """Refunds this event made the order stop applying (``DiscardedRefund``)."""


@dataclass(frozen=True, slots=True)
class Skip:
    """The event is not for Button (it may still have updated the profile). Finished on purpose."""

    reason: str
    discarded: tuple[DiscardedRefund, ...] = ()
    """Refunds this event made the order stop applying (``DiscardedRefund``)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """The event is invalid for Button; it goes to the dead-letter topic with this reason."""

    reason: str
    detail: str = ""
    discarded: tuple[DiscardedRefund, ...] = ()
    """Held refunds that left the profile with their order as the event was mapped (the
    profile it pruned is written even though the event is rejected)."""


@dataclass(frozen=True, slots=True)
class Read:
    """The event cannot be mapped without the order as Button holds it: read it (``request``,
    ``GET /v1/order/{id}``), then map the event again with Button's answer
    (``consumer.domain.adoption.Lookup``).

    A partial refund of an order the profile does not know (a previous integration created it,
    or the profile forgot it), or a whole-order refund of a record without a key (no profile
    would remember the order cancelled). ``held`` is the decision when the order is not read (a
    dry run, the ``map`` command): the profile returned with a ``Read`` is that decision's. A
    skip (``REFUND_HELD``), or, for a record without a key (no profile to hold the refund in or
    remember the cancellation in), the reject ``KEYLESS_REFUND_BEFORE_PURCHASE``.
    """

    request: ButtonRequest
    held: Skip | Reject


MapResult = Send | Skip | Reject | Read


def discarded_by(result: MapResult) -> tuple[DiscardedRefund, ...]:
    """The refunds ``result`` reports discarded (a ``Read``'s: those of its ``held`` skip)."""
    if isinstance(result, Read):
        return result.held.discarded
    return result.discarded
