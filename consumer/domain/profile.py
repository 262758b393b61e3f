"""The per-user profile: what earlier events taught us that a later order needs.

A purchase often arrives without its Button token (the token came with an install or a deep-link
open days earlier), without its advertising id, and a partial refund arrives without the order it
reduces. The profile remembers, per Kafka record key (the user): the latest ``btn_ref`` with its
time and source, the advertising ids with their times, and the recent orders (line items, total,
status, refund events already applied) for as long as Button may still change them.

The profile also holds the user's *parked* orders (DESIGN, 5): an order one of whose events was
dead-lettered, so that its later events follow it to the DLQ instead of reaching Button. Kept
here, parking survives restarts and rebalances with the rest of the profile (DESIGN, 7).

The model is immutable and pure; its changelog bytes are ``profile_codec``'s job and the
profiles of the owned partitions are held by ``consumer.engine.profiles.ProfileStore``. The
plaintext email is never part of a profile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from consumer.domain.attribution import ResolvedToken, TokenSource

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware ``datetime``.

    Raises:
        ValueError: ``moment`` is naive (a naive time would silently mean the host's zone).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class OrderStatus(StrEnum):
    """What the service last told Button about an order."""

    OPEN = "open"  # created, no refund applied
    UPDATED = "updated"  # partially refunded: Button has the reduced state
    CANCELLED = "cancelled"  # fully refunded: deleted at Button


@dataclass(frozen=True, slots=True)
class Stamped:
    """A value with the event time (epoch ms) it was last seen at."""

    value: str
    seen_at_ms: int


@dataclass(frozen=True, slots=True)
class StoredLine:
    """One line item of a stored order, enough to send its remaining state after a refund.

    ``price`` is the exact unit price in major units as a decimal string (``"3.333333"``), or
    ``None`` when the event gave none; minor units are derived from it when a request is built,
    so a partial refund recomputes the line total exactly instead of from a rounded value.
    """

    identifier: str
    quantity: int
    price: str | None
    sku: str | None = None
    description: str | None = None
    category: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """The state of an order at Button, as far as this service made it.

    ``created_by`` is the purchase event id, ``refunds`` the refund event ids already applied (so
    a replayed refund never reduces the order twice), ``btn_ref`` the token the create carried
    (so a replayed purchase sends the same one) and ``btn_ref_source`` where it was found,
    ``touched_ms`` the processing time of the last change (retention counts from it).
    """

    order_id: str
    currency: str
    purchase_ms: int
    total: int
    lines: tuple[StoredLine, ...]
    status: OrderStatus
    created_by: str
    refunds: tuple[str, ...]
    btn_ref: str | None
    touched_ms: int
    btn_ref_source: TokenSource | None = None


@dataclass(frozen=True, slots=True)
class ParkedOrder:
    """An order parked behind a dead letter (DESIGN, 5).

    ``reason`` is the first dead letter's reason (``http_400``, ``retries_exhausted``...);
    ``touched_ms`` the processing time of the last dead letter of the order (the first, or one
    parked behind it): retention counts from it, like an order's. The order may be absent from
    ``Profile.orders`` (an event rejected by the mapping never stored its order).
    """

    order_id: str
    reason: str
    touched_ms: int


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything remembered about one user. Immutable: changes make a new ``Profile``."""

    btn_ref: ResolvedToken | None = None
    idfa: Stamped | None = None
    gaid: Stamped | None = None
    orders: tuple[StoredOrder, ...] = ()
    parked: tuple[ParkedOrder, ...] = ()

    @property
    def is_empty(self) -> bool:
        return (
            self.btn_ref is None
            and self.idfa is None
            and self.gaid is None
            and not self.orders
            and not self.parked
        )

    def order(self, order_id: str) -> StoredOrder | None:
        for stored in self.orders:
            if stored.order_id == order_id:
                return stored
        return None

    def with_order(self, order: StoredOrder) -> Profile:
        """This profile with ``order`` added, or replacing the order of the same id."""
        others = tuple(o for o in self.orders if o.order_id != order.order_id)
        return replace(self, orders=(*others, order))

    def parked_order(self, order_id: str) -> ParkedOrder | None:
        """The parking entry of ``order_id``, ``None`` if the order is not parked."""
        for entry in self.parked:
            if entry.order_id == order_id:
                return entry
        return None

    def with_parked(self, order_id: str, reason: str, now_ms: int, limit: int) -> Profile:
        """This profile with ``order_id`` parked at ``now_ms``.

        An order already parked keeps its first reason and has its time refreshed. ``parked``
        stays in the order entries were touched, so beyond ``limit`` entries the least recently
        touched are forgotten from the front (a user with that many orders dead-lettered at once
        is not a shopper).
        """
        known = self.parked_order(order_id)
        entry = ParkedOrder(order_id, known.reason if known else reason, now_ms)
        others = tuple(p for p in self.parked if p.order_id != order_id)
        return replace(self, parked=(*others[max(len(others) + 1 - limit, 0) :], entry))

    def without_parked(self, order_id: str) -> Profile:
        """This profile with ``order_id`` no longer parked (the same object if it was not)."""
        if self.parked_order(order_id) is None:
            return self
        return replace(self, parked=tuple(p for p in self.parked if p.order_id != order_id))


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each part of a profile stays useful (milliseconds).

    ``btn_ref_ms`` is the attribution window (counted from the token's event time),
    ``device_id_ms`` counts from the id's event time, ``order_ms`` from the last change of the
    order and should be Button's finalization window plus a safety margin.
    """

    btn_ref_ms: int
    device_id_ms: int
    order_ms: int


def expires_at_ms(profile: Profile, retention: Retention) -> int:
    """When every part of ``profile`` has expired (epoch ms); ``-2**63`` for an empty profile."""
    candidates = [o.touched_ms + retention.order_ms for o in profile.orders]
    candidates.extend(p.touched_ms + retention.order_ms for p in profile.parked)
    if profile.btn_ref is not None:
        candidates.append(profile.btn_ref.seen_at_ms + retention.btn_ref_ms)
    for device in (profile.idfa, profile.gaid):
        if device is not None:
            candidates.append(device.seen_at_ms + retention.device_id_ms)
    return max(candidates, default=-(2**63))


def prune(profile: Profile, now_ms: int, retention: Retention) -> Profile:
    """``profile`` without its expired parts (the same object if nothing expired)."""
    btn_ref = profile.btn_ref
    if btn_ref is not None and btn_ref.seen_at_ms + retention.btn_ref_ms < now_ms:
        btn_ref = None
    idfa, gaid = (
        d if d is not None and d.seen_at_ms + retention.device_id_ms >= now_ms else None
        for d in (profile.idfa, profile.gaid)
    )
    orders = tuple(o for o in profile.orders if o.touched_ms + retention.order_ms >= now_ms)
    parked = tuple(p for p in profile.parked if p.touched_ms + retention.order_ms >= now_ms)
    if (
        btn_ref is profile.btn_ref
        and idfa is profile.idfa
        and gaid is profile.gaid
        and len(orders) == len(profile.orders)
        and len(parked) == len(profile.parked)
    ):
        return profile
    return Profile(btn_ref, idfa, gaid, orders, parked)
