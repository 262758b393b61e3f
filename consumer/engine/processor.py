"""Joins the pure mapping with the in-memory profile store for one record.

The mapping (``consumer.domain.mapping.process``) is pure: event + profile in, decision + new
profile out. This adapter looks the profile up by (partition, record key) and, when the
pipeline applies the change (``apply``), stores the new one and hands back the changelog record
to write before the record's offset may be stored.
Parking is not its business: ``consumer.engine.parking.Parking`` reads the stored profile.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from consumer.domain import mapping
from consumer.domain.adoption import Lookup
from consumer.domain.button import discarded_by
from consumer.domain.events import CommerceEvent
from consumer.domain.profile import Profile
from consumer.domain.profile_codec import ProfileDecodeError
from consumer.engine.pipeline import Processed
from consumer.engine.profiles import ChangelogWrite, ProfileStore

log = structlog.get_logger("consumer.processor")


class ProfileProcessor:
    """Enrichment, profile state and mapping for the partitions this process owns."""

    def __init__(self, store: ProfileStore, config: mapping.MappingConfig) -> None:
        self._store = store
        self._config = config

    @property
    def store(self) -> ProfileStore:
        return self._store

    def process(
        self,
        partition: int,
        key: bytes | None,
        event: CommerceEvent,
        now: datetime,
        lookup: Lookup | None = None,
    ) -> Processed:
        """Map ``event`` against the user's stored profile; store nothing (see ``apply``).
        ``lookup``: Button's answer to the read a first pass asked for (``Read``)."""
        profile = self._profile(partition, key)
        result, updated = mapping.process(
            event, profile, self._config, now, lookup=lookup, keyless=key is None
        )
        return Processed(
            result=result,
            event_id=event.event_id,
            event_time_ms=int(event.event_time.timestamp() * 1000),
            order_id=event.order_id,
            profile_changed=updated is not None and key is not None,
            updated=updated,
            dropped_tokens=mapping.event_dropped_tokens(event),
            discarded_refunds=discarded_by(result),
            dropped_inputs=mapping.dropped_inputs(event),
        )

    def apply(self, partition: int, key: bytes, processed: Processed) -> ChangelogWrite | None:
        """Store the profile change ``process`` computed; the changelog record to write
        (a tombstone when the profile became empty), ``None`` when nothing changed. The record
        names the held refunds it erases with orders forgotten to the profile's cap in bytes
        (``ChangelogWrite.discarded``): the caller reports them."""
        updated = processed.updated
        if not processed.profile_changed or not isinstance(updated, Profile):
            return None
        return self._store.write(partition, key, updated)

    def _profile(self, partition: int, key: bytes | None) -> Profile | None:
        if key is None:
            # Without a key the record has no partition affinity: no profile can be joined.
            return None
        try:
            return self._store.get(partition, key)
        except ProfileDecodeError as exc:
            log.error("profile_unreadable", error=str(exc))
            return None
