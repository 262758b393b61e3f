"""Profile expiry: batched tombstones that never erase a profile written since the scan."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from consumer.domain.button import Read
from consumer.domain.event_forms import event_from_json
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.profile import Profile, Retention, Stamped
from consumer.engine.profiles import ProfileExpiry, ProfileStore
from tests.fakes import RecordingTelemetry

DAY = 86_400_000
RETENTION = Retention(btn_ref_ms=7 * DAY, device_id_ms=30 * DAY, order_ms=60 * DAY)
OLD = Profile(idfas=(Stamped("OLD-IDFA", 1_000_000_000_000),))
NEW = Profile(idfas=(Stamped("NEW-IDFA", 4_000_000_000_000),))
LATER = datetime(2100, 1, 1, tzinfo=UTC)


class HeldChangelog:
    """Records every write when it is queued (in call order, as the producer keeps it per
    partition); the first tombstone waits until the test releases it."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes, bytes | None]] = []
        self.epochs: list[int] = []
        self.first_held = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, partition: int, key: bytes, value: bytes | None, *, epoch: int) -> None:
        self.writes.append((partition, key, value))
        self.epochs.append(epoch)
        if len(self.writes) == 1:
            self.first_held.set()
            await self.release.wait()

    def last(self, key: bytes) -> bytes | None:
        return [value for _, k, value in self.writes if k == key][-1]


@pytest.mark.parametrize("batch", [1, 100])
def test_a_profile_written_during_expiry_is_never_followed_by_its_stale_tombstone(
    batch: int,
) -> None:
    """A user who comes back while expiry writes tombstones keeps the new profile, in memory
    and as the changelog's last value for the key."""

    async def scenario() -> None:
        store = ProfileStore(RETENTION)
        store.put(0, b"a", OLD)
        store.put(0, b"b", OLD)
        changelog = HeldChangelog()
        expiry = ProfileExpiry(store, changelog, clock=lambda: LATER, batch=batch)
        task = asyncio.create_task(expiry.run())
        await asyncio.wait_for(changelog.first_held.wait(), 5)
        # The user of b comes back: the lane stores and writes the new profile.
        value = store.put(0, b"b", NEW)
        await changelog.write(0, b"b", value, epoch=0)
        changelog.release.set()
        await asyncio.wait_for(task, 5)
        expected: object = (None, value, NEW, None)
        actual: object = (
            changelog.last(b"a"),
            changelog.last(b"b"),
            store.get(0, b"b"),
            store.get(0, b"a"),
        )
        assert expected == actual

    asyncio.run(scenario())


def test_expiry_writes_in_batches_and_yields_to_the_loop_between_them() -> None:
    """10 expired profiles in 2 partitions, batch 4: the event loop runs between batches."""

    async def scenario() -> None:
        store = ProfileStore(RETENTION)
        for i in range(10):
            store.put(i % 2, f"k{i}".encode(), OLD)
        writes: list[bytes] = []
        ticks: list[int] = []

        class Changelog:
            async def write(
                self, partition: int, key: bytes, value: bytes | None, *, epoch: int
            ) -> None:
                writes.append(key)

        async def ticker() -> None:
            while True:
                ticks.append(len(writes))
                await asyncio.sleep(0)

        tick = asyncio.create_task(ticker())
        written = await ProfileExpiry(store, Changelog(), clock=lambda: LATER, batch=4).run()
        tick.cancel()
        assert (written, len(store)) == (10, 0)
        assert {4, 5, 9} <= set(ticks), ticks

    asyncio.run(scenario())


def test_a_partition_revoked_during_expiry_gets_no_tombstone_from_this_member() -> None:
    """Once its partition is dropped, a pending tombstone is not written (another member
    owns the partition now)."""

    async def scenario() -> None:
        store = ProfileStore(RETENTION)
        store.put(0, b"a", OLD)
        store.put(0, b"b", OLD)
        changelog = HeldChangelog()
        task = asyncio.create_task(
            ProfileExpiry(store, changelog, clock=lambda: LATER, batch=1).run()
        )
        await asyncio.wait_for(changelog.first_held.wait(), 5)
        store.drop_partition(0)
        changelog.release.set()
        await asyncio.wait_for(task, 5)
        assert len(changelog.writes) == 1

    asyncio.run(scenario())


def _holding_a_refund() -> Profile:
    """A profile whose only part is an order holding a refund for its purchase."""
    config = MappingConfig()
    refund = event_from_json(
        {
            "event_id": "evt-held",
            "event_type": "REFUND",
            "event_time": "2024-05-01T14:00:00Z",
            "user_key": "u",
            "commerce": {"action": "REFUND", "transaction_id": "ORD-H", "total_amount": "2.50"},
        }
    )
    held, profile = process(refund, None, config, datetime(2024, 5, 1, 15, tzinfo=UTC))
    assert isinstance(held, Read)
    assert profile is not None
    return profile


def test_a_refund_held_in_a_profile_that_expires_is_reported_with_its_tombstone() -> None:
    """The break trial: the whole profile expired (its order holding a refund was its last
    part) and its tombstone erased the refund uncounted. Expiry reports each held refund it
    erases: ``held_refund_discarded`` (warning, its order and event ids) and
    ``held_refund_discarded(order_expired)`` on the telemetry."""
    store = ProfileStore(RETENTION)
    store.put(0, b"held", _holding_a_refund())
    store.put(0, b"old", OLD)
    changelog = HeldChangelog()
    changelog.release.set()
    telemetry = RecordingTelemetry()

    with capture_logs() as logs:
        written = asyncio.run(
            ProfileExpiry(store, changelog, clock=lambda: LATER, batch=4, telemetry=telemetry).run()
        )

    assert written == 2
    assert sorted(key for _, key, value in changelog.writes if value is None) == [b"held", b"old"]
    assert telemetry.named("held_refund_discarded") == [("order_expired",)]
    assert [
        (e["log_level"], e["order_id"], e["refund_event_id"], e["reason"])
        for e in logs
        if e["event"] == "held_refund_discarded"
    ] == [("warning", "ORD-H", "evt-held", "order_expired")]
