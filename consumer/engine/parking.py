"""Orders parked behind a dead letter, so their later events cannot overtake it (DESIGN, 5).

If the create of order X went to the DLQ, a later update or cancel of X must not reach Button
first: Button would refuse it (404) or, worse, apply it to nothing, and a replay of the DLQ would
then run the events out of order. So once any event of an order is dead-lettered, the order is
*parked*: each later event of it goes to the DLQ too, in order, with the parked flag and reason
``parked``, and nothing of it is sent until the DLQ is redriven. This is the "sequenced dead
letter queue" idea (Axon Framework) applied per order.

Where the check runs matters: the check and the park both happen *inside* the record's job, in its
key lane, so the dispatcher's per-key ordering guarantees that an earlier event's dead letter is
recorded before a later event of the same order is looked at (orders belong to one user, and
lanes are per user key).

Bounds: entries expire ``ttl`` seconds after the order was last touched (parked, or an event was
parked behind it), default 45 days, about the longest an order stays open at Button before it
finalizes, after which Button refuses changes anyway. At most ``max_orders`` entries
(default 100,000, a few tens of MB); beyond that the least recently touched entry is evicted and
counted in ``evicted``. Forgetting is the lesser harm here: the worst case is that a later
update reaches Button, which answers 404 for an unknown order, and the update is dead-lettered on
its own.

Durability: this class is in memory. ``on_change`` reports every park and release, and
``restore`` loads entries at start or on assignment. The plan is to keep a user's parked order
ids in that user's profile, which lives in the co-partitioned compacted changelog (DESIGN, 7):
it is restored with the profile before the partition's records are processed and written before
the offset is stored, so parking survives restarts and rebalances with no extra storage. Until
then, ``restore`` can be fed from a scan of the DLQ topic's records flagged as dead letters and
not yet redriven.

Redrive: a replayed record of a parked order is sent (it is the head of the queue, not a
follower); when Button accepts it, call ``release``; if it is dead-lettered again, the order stays
parked.

The clock is wall time in seconds (``time.time`` in production) because restored entries carry
record timestamps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ParkedOrder:
    """One parked order.

    Attributes:
        order_id: the merchant's order id (as sent to Button).
        reason: why its first event was dead-lettered (``http_400``, ``retries_exhausted``...).
        parked_at: when it was parked (wall-clock seconds).
        touched_at: when it was last parked or had an event parked behind it.
        followers: events parked behind the first dead letter so far.
    """

    order_id: str
    reason: str
    parked_at: float
    touched_at: float
    followers: int = 0


ChangeHook = Callable[[str, ParkedOrder | None], None]
"""Called with (order_id, entry) on park and on each follower, (order_id, None) on release."""


class ParkingLot:
    """A bounded, expiring set of parked order ids (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Clock,
        ttl: float = 45 * 24 * 3600.0,
        max_orders: int = 100_000,
        on_change: ChangeHook | None = None,
    ) -> None:
        if ttl <= 0 or max_orders < 1:
            raise ValueError("parking needs ttl > 0 and max_orders >= 1")
        self._clock = clock
        self._ttl = ttl
        self._max = max_orders
        self._on_change = on_change
        # Least recently touched first, so expiry and eviction pop from the front.
        self._orders: OrderedDict[str, ParkedOrder] = OrderedDict()
        self.evicted = 0
        """Entries dropped because ``max_orders`` was reached (export it as a metric)."""

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return isinstance(order_id, str) and self.get(order_id) is not None

    def get(self, order_id: str) -> ParkedOrder | None:
        """The entry of a parked order, ``None`` if not parked (or expired)."""
        entry = self._orders.get(order_id)
        if entry is None:
            return None
        if self._expired(entry, self._clock()):
            del self._orders[order_id]
            return None
        return entry

    def park(self, order_id: str, reason: str) -> bool:
        """Park ``order_id`` after one of its events was dead-lettered.

        Returns ``True`` when newly parked; an order already parked keeps its first reason.
        """
        now = self._clock()
        if self.get(order_id) is not None:
            self._touch(order_id, now)
            return False
        self._put(ParkedOrder(order_id, reason, parked_at=now, touched_at=now))
        return True

    def follow(self, order_id: str) -> ParkedOrder | None:
        """Check an event's order before sending: the entry if the event must be parked.

        A hit counts the event as a follower and refreshes the entry's expiry.
        """
        if self.get(order_id) is None:
            return None
        return self._touch(order_id, self._clock(), follower=True)

    def reason(self, order_id: str) -> str | None:
        """Like ``follow``, returning only the first dead letter's reason (``None``: send it)."""
        entry = self.follow(order_id)
        return None if entry is None else entry.reason

    def release(self, order_id: str) -> bool:
        """Unpark after a successful redrive. Returns ``True`` if the order was parked."""
        if self._orders.pop(order_id, None) is None:
            return False
        if self._on_change is not None:
            self._on_change(order_id, None)
        return True

    def restore(self, entries: Iterable[ParkedOrder]) -> int:
        """Load entries saved elsewhere (changelog, DLQ scan); expired ones are skipped.

        Does not call ``on_change`` (the entries come from the durable copy). Returns how many
        entries were loaded.
        """
        now = self._clock()
        loaded = 0
        for entry in sorted(entries, key=lambda e: e.touched_at):
            if self._expired(entry, now):
                continue
            self._orders.pop(entry.order_id, None)
            self._insert(entry)
            loaded += 1
        return loaded

    def expire(self) -> int:
        """Drop expired entries now (lookups also expire lazily). Returns how many were dropped."""
        now = self._clock()
        dropped = 0
        while self._orders:
            order_id, entry = next(iter(self._orders.items()))
            if not self._expired(entry, now):
                break
            del self._orders[order_id]
            dropped += 1
        return dropped

    def _expired(self, entry: ParkedOrder, now: float) -> bool:
        return now - entry.touched_at >= self._ttl

    def _touch(self, order_id: str, now: float, *, follower: bool = False) -> ParkedOrder:
        entry = self._orders[order_id]
        entry = replace(entry, touched_at=now, followers=entry.followers + int(follower))
        self._orders[order_id] = entry
        self._orders.move_to_end(order_id)
        if self._on_change is not None:
            self._on_change(order_id, entry)
        return entry

    def _put(self, entry: ParkedOrder) -> None:
        self._insert(entry)
        if self._on_change is not None:
            self._on_change(entry.order_id, entry)

    def _insert(self, entry: ParkedOrder) -> None:
        self._orders[entry.order_id] = entry
        while len(self._orders) > self._max:
            self._orders.popitem(last=False)
            self.evicted += 1
