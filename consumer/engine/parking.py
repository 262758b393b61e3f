"""In-memory parking, for records without a key only (DESIGN, 5).

If the create of order X went to the DLQ, a later update or cancel of X must not reach Button
first: Button would refuse it (404) or, worse, apply it to nothing, and a replay of the DLQ would
then run the events out of order. So once any event of an order is dead-lettered, the order is
*parked*: each later event of it goes to the DLQ too, in order, with the parked flag and reason
``parked``, and nothing of it is sent until the DLQ is redriven (the "sequenced dead letter
queue" idea of Axon Framework, applied per order).

Parking of a keyed record lives in the user's profile (``consumer.domain.profile``), which is
written to the compacted changelog and restored with its partition, so it survives restarts and
rebalances (``consumer.engine.processor``). A record without a key has no profile: its orders are
parked here, in memory, for the life of the process. That is all a keyless record can have:
keyless records are not ordered among themselves (DESIGN, 3), so their parking is best effort.

Bounds: an entry expires ``ttl`` seconds after it was last parked (default 45 days); at most
``max_orders`` entries (default 100,000), beyond which the least recently parked is evicted and
counted in ``evicted``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ParkingEntry:
    """Why an order is parked (the first dead letter's reason) and when it was last parked."""

    reason: str
    touched_at: float


class ParkingLot:
    """A bounded, expiring map of parked order id -> entry (see the module docstring)."""

    def __init__(
        self, *, clock: Clock, ttl: float = 45 * 24 * 3600.0, max_orders: int = 100_000
    ) -> None:
        if ttl <= 0 or max_orders < 1:
            raise ValueError("parking needs ttl > 0 and max_orders >= 1")
        self._clock = clock
        self._ttl = ttl
        self._max = max_orders
        # Least recently parked first, so eviction pops from the front.
        self._orders: OrderedDict[str, ParkingEntry] = OrderedDict()
        self.evicted = 0
        """Entries dropped because ``max_orders`` was reached."""

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return isinstance(order_id, str) and self.get(order_id) is not None

    def get(self, order_id: str) -> ParkingEntry | None:
        """The entry of a parked order, ``None`` if not parked (or expired)."""
        entry = self._orders.get(order_id)
        if entry is None:
            return None
        if self._clock() - entry.touched_at >= self._ttl:
            del self._orders[order_id]
            return None
        return entry

    def park(self, order_id: str, reason: str) -> bool:
        """Park ``order_id`` after one of its events was dead-lettered.

        Returns ``True`` when newly parked; an order already parked keeps its first reason and
        has its expiry refreshed.
        """
        known = self.get(order_id)
        self._orders.pop(order_id, None)
        self._orders[order_id] = ParkingEntry(known.reason if known else reason, self._clock())
        while len(self._orders) > self._max:
            self._orders.popitem(last=False)
            self.evicted += 1
        return known is None

    def release(self, order_id: str) -> bool:
        """Unpark after its first dead letter is replayed. ``True`` if the order was parked."""
        return self._orders.pop(order_id, None) is not None
