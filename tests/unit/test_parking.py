"""Parking (DESIGN, 5): the ``Parking`` collaborator over the real profile store, and the
in-memory lot of keyless records (park, keep the first reason, expire, bound)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from consumer.domain.deadletter import (
    H_REPLAYED,
    H_REPLAYED_PARKED,
    H_REPLAYED_PARKS_ORDER,
    H_REPLAYED_REASON,
    H_REPLAYED_STAGE,
    Stage,
)
from consumer.domain.events import CommerceData, CommerceEvent, EventType, ProductAction
from consumer.domain.mapping import MappingConfig
from consumer.domain.profile_codec import decode_profile
from consumer.domain.profile_epoch import epoch_of
from consumer.engine.parking import KEY_PARKED, Parking, ParkingLot
from consumer.engine.processor import ProfileProcessor
from consumer.engine.profiles import ChangelogWrite, ProfileStore
from consumer.ports import Record

DAY = 24 * 3600.0


class FakeClock:
    """Wall time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_unparked_order_is_not_parked() -> None:
    """An order with no dead letter is not parked."""
    parked = ParkingLot(clock=FakeClock())
    assert parked.get("o-1") is None
    assert "o-1" not in parked


def test_a_parked_order_carries_its_reason() -> None:
    """After a dead letter the order is parked with its reason; other orders are not."""
    parked = ParkingLot(clock=FakeClock())
    assert parked.park("o-1", "http_400") is True
    entry = parked.get("o-1")
    assert entry is not None
    assert entry.reason == "http_400"
    assert parked.get("o-2") is None


def test_parking_twice_keeps_the_first_reason() -> None:
    """The reason of the first dead letter is the one the operator needs."""
    parked = ParkingLot(clock=FakeClock())
    parked.park("o-1", "http_400")
    assert parked.park("o-1", "parked") is False
    entry = parked.get("o-1")
    assert entry is not None
    assert entry.reason == "http_400"


def test_release_unparks() -> None:
    """A replayed first dead letter releases the order: its next events go to Button again."""
    parked = ParkingLot(clock=FakeClock())
    parked.park("o-1", "http_400")
    assert parked.release("o-1") is True
    assert parked.release("o-1") is False
    assert parked.get("o-1") is None


def test_entries_expire_after_ttl_since_last_park() -> None:
    """An order not parked again for ttl is forgotten; parking it again refreshes it."""
    clock = FakeClock()
    parked = ParkingLot(clock=clock, ttl=10 * DAY)
    parked.park("o-1", "http_400")
    parked.park("o-2", "http_400")
    clock.now += 6 * DAY
    parked.park("o-2", "parked")
    clock.now += 5 * DAY
    assert ("o-1" in parked, "o-2" in parked) == (False, True)


def test_size_is_bounded_and_evictions_counted() -> None:
    """Beyond max_orders, the least recently parked order is evicted."""
    parked = ParkingLot(clock=FakeClock(), max_orders=2)
    parked.park("a", "x")
    parked.park("b", "x")
    parked.park("a", "x")
    parked.park("c", "x")
    assert ("a" in parked, "b" in parked, "c" in parked) == (True, False, True)
    assert (len(parked), parked.evicted) == (2, 1)


def test_invalid_bounds_are_refused() -> None:
    """A zero ttl would park nothing."""
    with pytest.raises(ValueError, match="ttl"):
        ParkingLot(clock=FakeClock(), ttl=0)


# --- the Parking collaborator: parked orders in the profile, keyless ones in the lot ------------

T_BUY = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
NOW = T_BUY + timedelta(minutes=1)
KEY = b"user-1"
PARTITION = 3


def purchase(order_id: str = "ORD-1") -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-buy",
        event_type=EventType.PURCHASE,
        event_time=T_BUY,
        user_key="user-1",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order_id,
            currency_code="USD",
            total_amount=Decimal("25.00"),
        ),
    )


def refund(order_id: str = "ORD-1") -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-refund",
        event_type=EventType.REFUND,
        event_time=T_BUY + timedelta(minutes=10),
        user_key="user-1",
        commerce=CommerceData(action=ProductAction.REFUND, transaction_id=order_id),
    )


def record(
    key: bytes | None = KEY, *, replayed: bool = False, parked: bool = False, stage: str = ""
) -> Record:
    headers = [(H_REPLAYED, b"dlq:0:7"), (H_REPLAYED_PARKED, b"true" if parked else b"false")]
    if stage:
        headers.append((H_REPLAYED_STAGE, stage.encode()))
    return Record("events", PARTITION, 7, key, b"", None, headers if replayed else [])


@dataclass
class Rig:
    """The real processor and parking over one profile store, as the service wires them."""

    store: ProfileStore = field(default_factory=lambda: ProfileStore(MappingConfig().retention))

    def __post_init__(self) -> None:
        config = MappingConfig()
        self.processor = ProfileProcessor(self.store, config)
        self.parking = Parking(
            self.store,
            max_orders_per_profile=config.max_orders_per_profile,
            keyless=ParkingLot(clock=FakeClock()),
        )

    def parked(
        self, event: CommerceEvent, key: bytes | None = KEY, now: datetime = NOW
    ) -> str | None:
        """Ask whether ``event``'s order is parked, then process it, applying its profile change
        unless parked (as the pipeline does)."""
        check = self.parking.check(record(key), event.order_id, now)
        processed = self.processor.process(PARTITION, key, event, now)
        if check.reason is None and key is not None:
            self.processor.apply(PARTITION, key, processed)
        return check.reason

    def release(self, order_id: str, key: bytes | None = KEY) -> ChangelogWrite | None:
        """What the replay of the order's first dead letter writes."""
        check = self.parking.check(record(key, replayed=True), order_id, NOW)
        assert check.reason is None
        return check.write

    def restarted(self, writes: list[ChangelogWrite]) -> Rig:
        """A new rig whose store is restored from the changelog records written so far."""
        fresh = Rig()
        for write in writes:
            fresh.store.restore(write.partition, write.key, write.read_back)
        return fresh


def test_an_order_is_not_parked_until_parked() -> None:
    """A record of an order nothing was dead-lettered for is not parked."""
    assert Rig().parked(purchase()) is None


def test_park_returns_the_changelog_record_and_later_records_see_the_reason() -> None:
    """park stores the order in the user's profile; the next record of it carries the reason."""
    rig = Rig()
    rig.parked(purchase())

    write = rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)

    assert write is not None
    assert (write.partition, write.key, write.value) == (
        PARTITION,
        KEY,
        rig.store.get_encoded(PARTITION, KEY),
    )
    assert write.value is not None
    assert decode_profile(write.value).parked_order("ORD-1") is not None
    assert rig.parked(refund()) == "http_400"


def test_parking_survives_a_restore_of_the_changelog() -> None:
    """The restart case: parking restored from the changelog still parks the refund."""
    rig = Rig()
    writes: list[ChangelogWrite] = []
    bought = rig.processor.apply(
        PARTITION, KEY, rig.processor.process(PARTITION, KEY, purchase(), NOW)
    )
    assert bought is not None
    writes.append(bought)
    parked = rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)
    assert parked is not None
    writes.append(parked)

    assert rig.restarted(writes).parked(refund()) == "http_400"


def test_an_order_rejected_by_the_mapping_of_a_new_user_is_parked_durably() -> None:
    """Parking needs no stored order and no other profile content: the profile holds only it."""
    write = Rig().parking.park(PARTITION, KEY, "ORD-NEW", "negative_total", NOW)

    assert write is not None
    assert write.value is not None
    stored = decode_profile(write.value)
    assert (stored.orders, [p.order_id for p in stored.parked]) == ((), ["ORD-NEW"])


def test_parking_is_per_user() -> None:
    """An order id parked for one key does not park the same id of another key."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)

    assert rig.parked(refund(), key=b"user-2") is None


def test_replaying_the_first_dead_letter_releases_and_returns_the_changelog_record() -> None:
    """The replay writes the profile without the order; a second replay writes nothing."""
    rig = Rig()
    rig.parked(purchase())
    rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)

    write = rig.release("ORD-1")

    assert write is not None
    assert write.value == rig.store.get_encoded(PARTITION, KEY)
    assert rig.parked(refund()) is None
    assert rig.release("ORD-1") is None


def test_a_replayed_record_parked_behind_another_does_not_release() -> None:
    """Only the first dead letter releases its order; records parked behind it stay parked."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)

    check = rig.parking.check(record(replayed=True, parked=True), "ORD-1", NOW)

    assert (check.reason, check.write) == ("http_400", None)


@pytest.mark.parametrize("stage", [Stage.MAP, Stage.DELIVER])
def test_the_replay_of_another_orders_first_dead_letter_leaves_the_key_parked(
    stage: Stage,
) -> None:
    """A key parked behind an undecodable record stays parked when the first dead letter of
    another order of the user (refused by the mapping or by Button, not undecodable) is
    replayed: that releases its own order only. Only the replay of a record that failed to
    decode (the one that parked the key) releases the key."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "E-Q", "total_out_of_range", NOW)
    rig.parking.park(PARTITION, KEY, KEY_PARKED, "truncated", NOW)

    check = rig.parking.check(record(replayed=True, stage=stage.value), "E-Q", NOW)

    assert check.reason is None
    assert rig.parked(purchase("E-S")) == "truncated"


def test_the_replay_of_a_dead_letter_that_parked_nothing_releases_nothing() -> None:
    """A rejection's dead letter parked nothing (``button.parks.order: false``): its replay
    leaves its order parked behind another dead letter, and the user's key behind an
    undecodable record, parked."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)
    rig.parking.park(PARTITION, KEY, KEY_PARKED, "truncated", NOW)
    replay = record(replayed=True, stage=Stage.DECODE.value)
    replay = replace(replay, headers=[*replay.headers, (H_REPLAYED_PARKS_ORDER, b"false")])

    check = rig.parking.check(replay, "ORD-1", NOW)

    assert (check.reason, check.write) == ("http_400", None)
    assert rig.parked(purchase("E-S")) == "truncated"


def replay_of(reason: str, stage: Stage) -> Record:
    """The replay of a first dead letter written by the previous version (no
    ``button.parks.order``), with its reason (``button.replayed.reason``)."""
    replay = record(replayed=True, stage=stage.value)
    return replace(replay, headers=[*replay.headers, (H_REPLAYED_REASON, reason.encode())])


def test_the_replay_of_an_older_rejection_leaves_its_order_parked_behind_another_reason() -> None:
    """The previous version dead-lettered a rejection of an order already parked behind a
    refused create as a first dead letter of its own. Replayed (``--reason``, a time window),
    it must not release the order: the create has not been replayed, and the refunds behind it
    would reach Button before it. It is parked again; only a dead letter with the order's
    parking reason releases it (a user trial: the refund was sent, Button answered 404)."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "ON", "http_400", NOW)

    check = rig.parking.check(replay_of("refund_exceeds_quantity", Stage.MAP), "ON", NOW)

    assert (check.reason, check.write) == ("http_400", None)
    released = rig.parking.check(replay_of("http_400", Stage.DELIVER), "ON", NOW)
    assert (released.reason, released.write is not None) == (None, True)


def test_the_replay_of_an_older_invalid_event_leaves_a_key_parked_behind_another_reason() -> None:
    """A key parked behind an undecodable record (``unknown_schema``) stays parked when the
    previous version's invalid-event dead letter of that key (``negative_amount``) is replayed:
    that record did not park the key (a user trial: the key was released with the
    undecodable record never replayed)."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, KEY_PARKED, "unknown_schema", NOW)

    assert rig.parking.release_key(PARTITION, KEY, reason="negative_amount") is None
    assert rig.parked(purchase("E-S")) == "unknown_schema"
    assert rig.parking.release_key(PARTITION, KEY, reason="unknown_schema") is not None
    assert rig.parked(purchase("E-T")) is None


def test_the_replay_of_the_record_that_parked_the_key_releases_it() -> None:
    """Decoded on replay (its stage was the decode stage), it releases its order and the key."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, KEY_PARKED, "unknown_schema", NOW)

    check = rig.parking.check(record(replayed=True, stage=Stage.DECODE.value), "ORD-1", NOW)

    assert (check.reason, rig.parked(purchase("E-S"))) == (None, None)


def test_releasing_the_only_content_of_a_profile_writes_a_tombstone() -> None:
    """A profile that held only the parked order is deleted: the write is a tombstone."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "ORD-NEW", "negative_total", NOW)

    assert rig.release("ORD-NEW") == ChangelogWrite(PARTITION, KEY, None)
    assert len(rig.store) == 0


def test_an_owners_parking_writes_carry_its_epoch_the_tombstone_too() -> None:
    """Once the partition's owner claimed an epoch, the parking's writes carry it: the value
    in its envelope, the tombstone of a release that empties the profile in
    ``ChangelogWrite.epoch`` (the ``button.epoch`` header), so a former owner's late profile
    after it stays fenced."""
    rig = Rig()
    rig.store.claim_epoch(PARTITION)

    parked = rig.parking.park(PARTITION, KEY, "ORD-NEW", "negative_total", NOW)
    released = rig.release("ORD-NEW")

    assert parked is not None
    assert parked.value is not None
    assert (parked.epoch, epoch_of(parked.value)) == (1, 1)
    assert released == ChangelogWrite(PARTITION, KEY, None, epoch=1)


def test_a_parked_order_expires_with_the_order_retention() -> None:
    """After the order retention, the order is no longer parked."""
    rig = Rig()
    rig.parking.park(PARTITION, KEY, "ORD-1", "http_400", NOW)
    later = NOW + MappingConfig().order_retention + timedelta(seconds=1)

    assert rig.parked(refund(), now=later) is None


def test_a_record_without_key_is_parked_in_memory_only() -> None:
    """No key, no profile: park and release work in memory and return nothing to write."""
    rig = Rig()

    assert rig.parking.park(PARTITION, None, "ORD-1", "http_400", NOW) is None
    assert rig.parked(refund(), key=None) == "http_400"
    assert rig.release("ORD-1", key=None) is None
    assert rig.parked(refund(), key=None) is None
    assert len(rig.store) == 0
