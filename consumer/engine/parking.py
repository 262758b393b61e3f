"""Parking (DESIGN, 5), owned by one collaborator: ``Parking``.

If the create of order X went to the DLQ, a later update or cancel of X must not reach Button
first: Button would refuse it (404) or, worse, apply it to nothing, and a replay of the DLQ would
then run the events out of order. So once Button could not be given an event of an order (a
delivery failure), the order is *parked*: each later event of it goes to the DLQ too, in order,
with the parked flag and reason ``parked``, and nothing of it is sent until the DLQ is redriven
(the "sequenced dead letter queue" idea of Axon Framework, applied per order). Replaying the
order's *first* dead letter releases it; the records parked behind it follow it in order. What
each dead letter parks (its order, its key, or nothing: a rejection changed nothing, so nothing
waits for it) is the policy's ``Decision.parks``; the pipeline asks this module to park it.

``Parking`` answers the three questions the pipeline asks: is this record's order parked
(releasing it first when the record is the replay of its first dead letter), and park this
order now that its dead letter is acknowledged. Everything else about parking is data: the
parked orders of a keyed record live in the user's profile (``consumer.domain.profile``), which
is written to the compacted changelog and restored with its partition, so parking survives
restarts and rebalances; the changelog writes are returned to the caller, which acknowledges
them before the record counts as finished.

A record without a key has no profile: its orders are parked in memory, in a ``ParkingLot``, for
the life of the process. That is all a keyless record can have: keyless records are not ordered
among themselves (DESIGN, 3), so their parking is best effort. Bounds of the lot: an entry
expires ``ttl`` seconds after it was last parked (default 45 days); at most ``max_orders``
entries (default 100,000), beyond which the least recently parked is evicted and counted in
``evicted``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from consumer.domain.deadletter import (
    is_replay,
    releases_parked_key,
    replayed_parks_order,
    replayed_reason,
    replays_parking_letter,
)
from consumer.domain.policy import PARKED_REASON
from consumer.domain.profile import Profile, epoch_ms, prune
from consumer.domain.profile_codec import ProfileDecodeError
from consumer.engine.profiles import ChangelogWrite, ProfileStore
from consumer.ports import Record

log = structlog.get_logger("consumer.parking")

KEY_PARKED = ""
"""The parked "order id" of a whole key: a record of the key was dead-lettered before its order
was known (it could not be decoded), so every later order record of the key is parked behind it
until that record is replayed. No real order id is empty."""

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


@dataclass(frozen=True, slots=True)
class ParkingCheck:
    """Whether a record's order is parked, and the changelog write a release needs.

    Attributes:
        reason: the first dead letter's reason if the order is parked behind it, else ``None``.
        write: the changelog record to write before the record is finished (a release of a
            keyed record's order), else ``None``.
        behind_key_only: parked only because its key is (behind an undecodable record), its
            order not parked of its own: this record's dead letter is the one that parks the
            order (``DeadLetter.parks_order``).
    """

    reason: str | None = None
    write: ChangelogWrite | None = None
    behind_key_only: bool = False


class Parking:
    """The one owner of parking decisions, for the partitions this process owns.

    Args:
        store: the profiles of the owned partitions (parked orders of keyed records live there).
        max_orders_per_profile: how many parked orders one profile keeps (oldest forgotten).
        keyless: the in-memory lot of records without a key.
    """

    def __init__(
        self, store: ProfileStore, *, max_orders_per_profile: int, keyless: ParkingLot
    ) -> None:
        self._store = store
        self._limit = max_orders_per_profile
        self._keyless = keyless

    def check(self, record: Record, order_id: str, now: datetime) -> ParkingCheck:
        """Is ``record``'s order parked? Releases it first if ``record`` replays its first DLQ.

        Call after the record's profile change is stored (the profile is read from the store);
        an order parked longer ago than the order retention is no longer parked at ``now``.
        """
        if replays_parking_letter(record.headers):
            # The record whose dead letter parked its order (or, undecodable then, its key) is
            # back: release it so it and the records parked behind it (replayed after it, in
            # order) are sent. Another order's first dead letter leaves the key parked. A dead
            # letter that parked nothing (a rejection) releases nothing: it is checked below
            # like any record, and waits if its order (or key) was parked since.
            # Only a parking with its dead letter's reason is its own: an older version wrote a
            # rejection of an order already parked behind a refused create as a first dead
            # letter, and its replay must leave the order parked behind the create.
            key_too = releases_parked_key(record.headers)
            reason = replayed_reason(record.headers)
            write = self._release(
                record.partition, record.key, order_id, key_too=key_too, reason=reason
            )
            still = self._own_parking(record.partition, record.key, order_id, now)
            return ParkingCheck(still, write)
        if not order_id:
            return ParkingCheck()
        if (
            is_replay(record.headers)
            and replayed_parks_order(record.headers) is not False
            and self._parked_behind_key_only(record.partition, record.key, order_id, now)
        ):
            # Its order was parked only because its key was, and its dead letter is the one
            # that parked the order (or, from an older version, did not say): the key is free
            # now, so its replay releases the order, as a first dead letter's does. A later
            # record of the order replayed first stays parked behind it.
            return ParkingCheck(None, self._release(record.partition, record.key, order_id))
        return self._parked(record.partition, record.key, order_id, now)

    def park(
        self, partition: int, key: bytes | None, order_id: str, reason: str, now: datetime
    ) -> ChangelogWrite | None:
        """Park ``order_id`` after one of its records was dead-lettered and acknowledged.

        The first reason is kept and the time refreshed if it is parked already. Returns the
        changelog record to write before the record counts as finished (``None`` for a record
        without a key, whose parking is not durable).
        """
        if key is None:
            self._keyless.park(order_id, reason)
            return None
        now_ms = epoch_ms(now)
        before = prune(self._profile(partition, key) or Profile(), now_ms, self._store.retention)
        after = before.with_parked(order_id, reason, now_ms, limit=self._limit)
        if before.parked_order(order_id) is None and len(after.parked) <= len(before.parked):
            log.warning("parked_order_forgotten", limit=self._limit)
        return self._write(partition, key, after)

    def key_parked(self, partition: int, key: bytes, now: datetime) -> bool:
        """Whether ``key`` is parked behind an undecodable record (``KEY_PARKED``) as of
        ``now``."""
        pruned = self._pruned(partition, key, now)
        return pruned is not None and pruned.parked_order(KEY_PARKED) is not None

    def release_key(
        self, partition: int, key: bytes, *, reason: str | None = None
    ) -> ChangelogWrite | None:
        """Release ``key``'s parking behind an undecodable record (``KEY_PARKED``), for good:
        the operator gave that record up (``releases_key_if_undecodable``), or the replay of
        the record that parked it no longer does. ``reason``: only a parking with that reason
        (the replayed dead letter's: the one it made; ``None``: any). The changelog record to
        write before the record counts as finished, if the key was released."""
        return self._release(partition, key, KEY_PARKED, reason=reason)

    def _release(
        self,
        partition: int,
        key: bytes | None,
        order_id: str,
        *,
        key_too: bool = False,
        reason: str | None = None,
    ) -> ChangelogWrite | None:
        """Release ``order_id`` (and, ``key_too``, the key's parking behind an undecodable
        record), each only if parked with ``reason`` (``None``: whatever the reason); the
        changelog record to write, if anything changed."""
        if key is None:
            entry = self._keyless.get(order_id)
            if entry is not None and (reason is None or entry.reason == reason):
                self._keyless.release(order_id)
            return None
        before = self._profile(partition, key)
        if before is None:
            return None
        after = before
        for parked_id in {order_id, KEY_PARKED} if key_too else {order_id}:
            parked = after.parked_order(parked_id)
            if parked is not None and (reason is None or parked.reason == reason):
                after = after.without_parked(parked_id)
        if after is before:
            return None
        return self._write(partition, key, after)

    def _write(self, partition: int, key: bytes, profile: Profile) -> ChangelogWrite:
        """Store ``profile``; the changelog record to write, with the owner's epoch (a
        tombstone carries it in a header) and the held refunds the profile's cap in bytes
        erased with their orders (``ChangelogWrite.discarded``: the caller reports them)."""
        return self._store.write(partition, key, profile)

    def _parked_behind_key_only(
        self, partition: int, key: bytes | None, order_id: str, now: datetime
    ) -> bool:
        """``order_id`` is parked with the reason ``parked`` (its first dead letter was parked
        behind another: its key's, as one behind its own order would have found it parked
        with that one's reason) and its key is not parked (any more)."""
        pruned = None if key is None else self._pruned(partition, key, now)
        if pruned is None:
            return False
        entry = pruned.parked_order(order_id)
        return (
            entry is not None
            and entry.reason == PARKED_REASON
            and pruned.parked_order(KEY_PARKED) is None
        )

    def _own_parking(
        self, partition: int, key: bytes | None, order_id: str, now: datetime
    ) -> str | None:
        """The reason ``order_id`` itself is parked for (not its key), if it is."""
        if not order_id:
            return None
        parked = self._parked(partition, key, order_id, now)
        return None if parked.behind_key_only else parked.reason

    def _parked(
        self, partition: int, key: bytes | None, order_id: str, now: datetime
    ) -> ParkingCheck:
        if key is None:
            entry = self._keyless.get(order_id)
            return ParkingCheck(None if entry is None else entry.reason)
        pruned = self._pruned(partition, key, now)
        if pruned is None:
            return ParkingCheck()
        own = pruned.parked_order(order_id)
        if own is not None:
            return ParkingCheck(own.reason)
        behind = pruned.parked_order(KEY_PARKED)
        return ParkingCheck() if behind is None else ParkingCheck(behind.reason, None, True)

    def _pruned(self, partition: int, key: bytes, now: datetime) -> Profile | None:
        """The key's profile as of ``now`` (parkings older than the retention gone), if any."""
        profile = self._profile(partition, key)
        return None if profile is None else prune(profile, epoch_ms(now), self._store.retention)

    def _profile(self, partition: int, key: bytes) -> Profile | None:
        try:
            return self._store.get(partition, key)
        except ProfileDecodeError as exc:
            log.error("profile_unreadable", error=str(exc))
            return None
