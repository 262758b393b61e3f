"""Joins the pure mapping with the in-memory profile store for one record.

The mapping (``consumer.domain.mapping.process``) is pure: event + profile in, decision + new
profile out. This adapter looks the profile up by (partition, record key), stores the new one,
and hands the pipeline the changelog value to write before the record's offset may be stored.

It also keeps parking (DESIGN, 5) in the profile: ``park`` and ``release`` change the user's
parked orders and return the changelog record to write, and ``process`` says whether the
record's order is parked. The profile is restored with its partition, so an order parked before
a restart or a rebalance is still parked after it. A record without a key has no profile: its
orders are parked in memory only (``ParkingLot``), which is all a keyless record can have, since
keyless records are not ordered among themselves anyway.
"""

from __future__ import annotations

import time
from datetime import datetime

import structlog

from consumer.domain import mapping
from consumer.domain.events import CommerceEvent
from consumer.domain.profile import Profile, epoch_ms, prune
from consumer.domain.profile_codec import ProfileDecodeError
from consumer.engine.parking import ParkingLot
from consumer.engine.pipeline import Processed
from consumer.engine.profiles import ChangelogWrite, ProfileStore

log = structlog.get_logger("consumer.processor")


class ProfileProcessor:
    """Enrichment, profile state, mapping and parking for the partitions this process owns."""

    def __init__(
        self,
        store: ProfileStore,
        config: mapping.MappingConfig,
        keyless_parking: ParkingLot | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._keyless = keyless_parking or ParkingLot(clock=time.time)

    @property
    def store(self) -> ProfileStore:
        return self._store

    def process(
        self, partition: int, key: bytes | None, event: CommerceEvent, now: datetime
    ) -> Processed:
        profile = self._profile(partition, key)
        result, updated = mapping.process(event, profile, self._config, now)
        changed = updated is not None and key is not None
        value: bytes | None = None
        if changed and key is not None and updated is not None:
            value = self._store.put(partition, key, updated)
        commerce = event.commerce
        order_id = (commerce.transaction_id or "") if commerce is not None else ""
        current = updated if updated is not None else profile
        return Processed(
            result=result,
            event_id=event.event_id,
            event_time_ms=int(event.event_time.timestamp() * 1000),
            order_id=order_id,
            profile_changed=changed,
            profile_value=value,
            parked=self._parked_reason(key, current, order_id),
        )

    def park(
        self, partition: int, key: bytes | None, order_id: str, reason: str, now: datetime
    ) -> ChangelogWrite | None:
        """Park ``order_id`` after one of its records was dead-lettered (see ``Processor``)."""
        if key is None:
            self._keyless.park(order_id, reason)
            return None
        now_ms = epoch_ms(now)
        before = prune(self._profile(partition, key) or Profile(), now_ms, self._store.retention)
        after = before.with_parked(
            order_id, reason, now_ms, limit=self._config.max_orders_per_profile
        )
        if before.parked_order(order_id) is None and len(after.parked) <= len(before.parked):
            log.warning("parked_order_forgotten", limit=self._config.max_orders_per_profile)
        return ChangelogWrite(partition, key, self._store.put(partition, key, after))

    def release(self, partition: int, key: bytes | None, order_id: str) -> ChangelogWrite | None:
        """Unpark ``order_id`` (its first dead letter is replayed); ``None``: nothing to write."""
        if key is None:
            self._keyless.release(order_id)
            return None
        before = self._profile(partition, key)
        if before is None or before.parked_order(order_id) is None:
            return None
        return ChangelogWrite(
            partition, key, self._store.put(partition, key, before.without_parked(order_id))
        )

    def _parked_reason(
        self, key: bytes | None, profile: Profile | None, order_id: str
    ) -> str | None:
        if not order_id:
            return None
        if key is None:
            entry = self._keyless.get(order_id)
            return None if entry is None else entry.reason
        parked = None if profile is None else profile.parked_order(order_id)
        return None if parked is None else parked.reason

    def _profile(self, partition: int, key: bytes | None) -> Profile | None:
        if key is None:
            # Without a key the record has no partition affinity: no profile can be joined.
            return None
        try:
            return self._store.get(partition, key)
        except ProfileDecodeError as exc:
            log.error("profile_unreadable", error=str(exc))
            return None
