"""The changelog fence (DESIGN, 7) for tombstones: every tombstone the service writes carries
its writer's epoch (``ChangelogWrite.epoch``, the ``button.epoch`` header), and a restore judges
a stamped tombstone like a value, while a tombstone without an epoch (an earlier release's) is
applied as before."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from structlog.testing import capture_logs

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import Profile
from consumer.domain.profile_epoch import (
    FENCE_KEY,
    RestoredValue,
    Tombstone,
    epoch_header,
    epoch_of,
    fence_value,
    read_epoch_header,
)
from consumer.engine.fence import LateWriteRepair
from consumer.engine.profiles import ChangelogWrite, ProfileExpiry, ProfileStore
from tests.fakes import RETENTION, RecordingTelemetry, restored

NOW_MS = int(datetime.now(UTC).timestamp() * 1000)
KEY = b"user-1"


def _with_token(token: str, seen_ms: int = NOW_MS - 3_600_000) -> Profile:
    return Profile(tokens=(ResolvedToken(token, TokenSource.EXPLICIT, seen_ms),))


def _owner(changelog: list[tuple[bytes, RestoredValue]]) -> ProfileStore:
    """A member that restored ``changelog`` and claimed partition 0 (its fence appended)."""
    store = ProfileStore(RETENTION)
    for key, value in changelog:
        store.restore(0, key, value)
    changelog.append((FENCE_KEY, fence_value(store.claim_epoch(0))))
    return store


def test_the_epoch_header_is_four_bytes_big_endian_and_a_bad_one_reads_as_none() -> None:
    """``button.epoch``: 4 bytes, unsigned, big-endian; absent or of another length: epoch 0."""
    assert epoch_header(0x01020304) == b"\x01\x02\x03\x04"
    assert read_epoch_header(epoch_header(2**32 - 1)) == 2**32 - 1
    assert [read_epoch_header(v) for v in (None, b"", b"\x00\x01", bytes(8))] == [0, 0, 0, 0]


def test_a_tombstone_of_an_owner_carries_its_epoch_and_reads_back_stamped() -> None:
    """An emptied profile's tombstone has the owner's epoch (none before it claimed one) and a
    restore reads it back as a ``Tombstone`` of that epoch (``None`` without an epoch)."""
    store = ProfileStore(RETENTION)
    store.put(0, KEY, _with_token("srctok-1"))
    unclaimed = store.write(0, KEY, Profile())
    store.put(0, KEY, _with_token("srctok-1"))
    store.claim_epoch(0)
    claimed = store.write(0, KEY, Profile())

    assert (unclaimed.value, unclaimed.epoch, unclaimed.read_back) == (None, 0, None)
    assert (claimed.value, claimed.epoch, claimed.read_back) == (None, 1, Tombstone(1))


def test_a_late_value_after_the_new_owners_stamped_tombstone_is_fenced() -> None:
    """B (epoch 2) deletes the user's profile (a stamped tombstone); A's late value (epoch 1)
    lands after it: the restore keeps the profile deleted and counts the late write fenced,
    off the store and in place alike."""
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-old"))))
    late = a.put(0, KEY, _with_token("srctok-old"))
    b = _owner(changelog)
    deleted = b.write(0, KEY, Profile())
    changelog += [(KEY, deleted.read_back), (KEY, late)]

    store = restored(changelog)
    in_place = ProfileStore(RETENTION)
    for key, value in changelog:
        in_place.restore(0, key, value)

    assert (store.get(0, KEY), store.fenced) == (None, 1)
    assert (in_place.get(0, KEY), in_place.fenced) == (None, 1)


def test_a_stamped_tombstone_at_or_above_the_held_epoch_deletes_and_a_newer_value_follows() -> None:
    """The owner's own tombstone (its epoch, or a later owner's) removes the profile; a value
    of the same or a later epoch after it is the user coming back, and is kept."""
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-1"))))
    changelog.append((KEY, a.write(0, KEY, Profile()).read_back))
    gone = restored(changelog)
    back = _with_token("srctok-2")
    changelog.append((KEY, a.put(0, KEY, back)))

    assert (gone.get(0, KEY), gone.fenced) == (None, 0)
    assert (restored(changelog).get(0, KEY), restored(changelog).fenced) == (back, 0)


def test_a_tombstone_without_an_epoch_is_applied_as_before() -> None:
    """A tombstone an earlier release wrote (no ``button.epoch`` header: ``None``) removes the
    profile whatever its epoch, as before tombstones carried one."""
    changelog: list[tuple[bytes, RestoredValue]] = []
    _owner(changelog)
    b = _owner(changelog)
    changelog += [(KEY, b.put(0, KEY, _with_token("srctok-new"))), (KEY, None)]

    store = restored(changelog)

    assert (store.get(0, KEY), store.fenced, store.claim_epoch(0)) == (None, 0, 3)


def test_expiry_tombstones_carry_the_owners_epoch() -> None:
    """``ProfileExpiry`` writes each expired profile's tombstone with the owner's epoch of its
    partition."""
    store = ProfileStore(RETENTION)
    store.restore(3, FENCE_KEY, fence_value(6))
    store.claim_epoch(3)
    store.put(3, KEY, _with_token("srctok-1", seen_ms=1_000))
    store.put(4, b"other", _with_token("srctok-2", seen_ms=1_000))
    writes: list[tuple[int, bytes, bytes | None, int]] = []

    class Changelog:
        async def write(
            self, partition: int, key: bytes, value: bytes | None, *, epoch: int
        ) -> None:
            writes.append((partition, key, value, epoch))

    later = datetime(2100, 1, 1, tzinfo=UTC)
    asyncio.run(ProfileExpiry(store, Changelog(), clock=lambda: later).run())

    assert sorted(writes) == [(3, KEY, None, 7), (4, b"other", None, 0)]


def _compacted(changelog: list[tuple[bytes, RestoredValue]]) -> list[tuple[bytes, RestoredValue]]:
    """What log compaction leaves: the last record of each key, in offset order (tombstones
    kept: within ``delete.retention.ms``)."""
    last = {key: offset for offset, (key, _value) in enumerate(changelog)}
    return [record for offset, record in enumerate(changelog) if last[record[0]] == offset]


def _claimed_with_repairs(
    changelog: list[tuple[bytes, RestoredValue]],
) -> tuple[ProfileStore, list[ChangelogWrite]]:
    """A new owner: restores ``changelog`` off the store, installs it, claims the partition
    and appends its fence, then the repairs of the keys the restore fenced."""
    store = restored(changelog)
    epoch = store.claim_epoch(0)
    changelog.append((FENCE_KEY, fence_value(epoch)))
    repairs = store.repairs(0)
    changelog.extend((w.key, w.read_back) for w in repairs)
    return store, repairs


def test_the_new_owner_repairs_a_fenced_key_so_its_rightful_value_survives_compaction() -> None:
    """A (epoch 1) wrote the user's profile, B (epoch 2) a newer one, and A's late value landed
    after B's. The next owner C restores (A's value is fenced), fences with epoch 3 and writes
    the key again right after its fence: the profile it holds (B's), stamped with epoch 3, now
    the key's latest record. Compaction keeps it, and a restore of the compacted changelog
    holds B's profile; keys the restore did not fence are not written again."""
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-old"))))
    changelog.append((b"quiet", a.put(0, b"quiet", _with_token("srctok-q"))))
    late = a.put(0, KEY, _with_token("srctok-old"))
    b = _owner(changelog)
    newer = _with_token("srctok-new", seen_ms=NOW_MS - 60_000)
    changelog += [(KEY, b.put(0, KEY, newer)), (KEY, late)]

    c, repairs = _claimed_with_repairs(changelog)

    assert [(w.key, w.epoch, epoch_of(w.value or b"")) for w in repairs] == [(KEY, 3, 3)]
    assert (c.get(0, KEY), c.fenced, c.repairs(0)) == (newer, 1, [])
    assert c.get_encoded(0, KEY) == repairs[0].value  # held as written
    compacted = restored(_compacted(changelog))
    assert (compacted.get(0, KEY), compacted.fenced) == (newer, 0)


def test_the_new_owner_repairs_a_fenced_key_it_holds_no_profile_of_with_a_stamped_tombstone() -> (
    None
):
    """B (epoch 2) deleted the profile; A's late value (epoch 1) landed after B's tombstone.
    The next owner holds no profile of the key and repairs it with a tombstone stamped with
    its epoch: compaction keeps that tombstone, and the key stays deleted."""
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-old"))))
    late = a.put(0, KEY, _with_token("srctok-old"))
    b = _owner(changelog)
    changelog += [(KEY, b.write(0, KEY, Profile()).read_back), (KEY, late)]

    c, repairs = _claimed_with_repairs(changelog)

    assert repairs == [ChangelogWrite(0, KEY, None, epoch=3)]
    assert (c.get(0, KEY), len(c)) == (None, 0)
    assert restored(_compacted(changelog)).get(0, KEY) is None


def test_a_restore_in_place_collects_its_fenced_keys_for_the_repair_too() -> None:
    """``ProfileStore.restore`` (in place) follows the same rules: a fenced key is repaired
    once the partition is claimed; a dropped partition forgets its due repairs."""
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-old"))))
    late = a.put(0, KEY, _with_token("srctok-old"))
    b = _owner(changelog)
    newer = _with_token("srctok-new")
    changelog += [(KEY, b.put(0, KEY, newer)), (KEY, late)]

    store = ProfileStore(RETENTION)
    for key, value in changelog:
        store.restore(0, key, value)
        store.restore(1, key, value)
    store.claim_epoch(0)
    store.drop_partition(1)

    assert [(w.key, w.epoch) for w in store.repairs(0)] == [(KEY, 3)]
    assert store.repairs(1) == []


class _QueuedChangelog:
    """Keeps each write in the order it was queued (as the producer writes one partition)."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes, bytes | None, int]] = []
        self.written = asyncio.Event()

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> asyncio.Future[None]:
        self.writes.append((partition, key, value, epoch))
        self.written.set()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _owner_b() -> ProfileStore:
    """Owner B of partition 0: restored A's fence (epoch 1), claimed epoch 2."""
    store = ProfileStore(RETENTION)
    store.restore(0, FENCE_KEY, fence_value(1))
    assert store.claim_epoch(0) == 2
    return store


def _nothing(_changelog: _QueuedChangelog) -> None:
    return None


def _found_from_another_thread(
    store: ProfileStore,
    late: list[tuple[int, bytes, int]],
    before: Callable[[_QueuedChangelog], None] = _nothing,
) -> tuple[_QueuedChangelog, RecordingTelemetry]:
    """On the loop, ``before`` runs; then the watch's thread reports ``late`` (partition, key,
    epoch of the late record) and the loop repairs. Returns once the loop ran every
    hand-over."""
    changelog = _QueuedChangelog()
    telemetry = RecordingTelemetry()
    repair = LateWriteRepair(store, changelog, telemetry)

    async def scenario() -> None:
        repair.attach(asyncio.get_running_loop())
        before(changelog)

        def report() -> None:
            for partition, key, epoch in late:
                repair.found(partition, key, epoch)

        watch = threading.Thread(target=report)
        watch.start()
        await asyncio.to_thread(watch.join, 5)
        for _ in range(10):  # the hand-overs were queued before the join returned
            await asyncio.sleep(0)

    asyncio.run(scenario())
    return changelog, telemetry


def test_a_late_write_the_watch_finds_is_repaired_on_the_loop_with_the_held_value() -> None:
    """A former owner's record (epoch 1) lands while B (epoch 2) owns the partition: the watch
    reports it from its thread, and the loop writes B's held profile of the key again, stamped
    with epoch 2 (its bytes), counted (``watch``)."""
    store = _owner_b()
    store.put(0, KEY, _with_token("srctok-new"))
    held = store.get_encoded(0, KEY)

    changelog, telemetry = _found_from_another_thread(store, [(0, KEY, 1)])

    assert changelog.writes == [(0, KEY, held, 2)]
    assert telemetry.named("changelog_repaired") == [("watch", 1)]


def test_a_late_write_of_a_key_the_owner_holds_no_profile_of_is_repaired_with_a_tombstone() -> None:
    """B holds no profile of the key (deleted, or never seen): the repair is a tombstone
    stamped with B's epoch."""
    changelog, _telemetry = _found_from_another_thread(_owner_b(), [(0, KEY, 0)])

    assert changelog.writes == [(0, KEY, None, 2)]


def test_no_repair_for_an_own_or_newer_epoch_nor_for_a_partition_given_up() -> None:
    """A record of B's own epoch (or of a newer owner's: B is the former owner then) is no late
    write; a partition dropped (revoked, lost) before the hand-over reached the loop is not
    this member's to write any more."""
    store = _owner_b()
    store.put(0, KEY, _with_token("srctok-new"))
    store.restore(5, FENCE_KEY, fence_value(1))
    store.claim_epoch(5)

    changelog, telemetry = _found_from_another_thread(
        store, [(0, KEY, 2), (0, KEY, 3), (5, KEY, 1)], before=lambda _c: store.drop_partition(5)
    )

    assert (changelog.writes, telemetry.named("changelog_repaired")) == ([], [])


def test_the_repair_follows_a_lane_write_of_the_key_queued_before_it() -> None:
    """The repair is queued on the loop, after whatever a lane queued for the key before it,
    and writes the profile held now (the lane's): the key's latest record is this owner's
    current state, never an older one."""
    store = _owner_b()
    store.put(0, KEY, _with_token("srctok-new"))
    current = _with_token("srctok-newest")

    def lane(changelog: _QueuedChangelog) -> None:
        write = store.write(0, KEY, current)
        changelog.write(0, KEY, write.value, epoch=write.epoch)

    changelog, _telemetry = _found_from_another_thread(store, [(0, KEY, 1)], before=lane)

    written = store.get_encoded(0, KEY)
    assert changelog.writes == [(0, KEY, written, 2), (0, KEY, written, 2)]
    assert store.get(0, KEY) == current


class _RefusingChangelog(_QueuedChangelog):
    """A changelog whose broker refuses every write (the acknowledgement fails)."""

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> asyncio.Future[None]:
        self.writes.append((partition, key, value, epoch))
        refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        refused.set_exception(RuntimeError("broker refused the write"))
        return refused


def test_a_repair_the_broker_refuses_is_logged_and_not_counted() -> None:
    """``changelog_repairs_total`` counts repairs the changelog acknowledged: a refused one is
    logged ``changelog_repair_failed`` (the next restore fences the late record and repairs the
    key again) and not counted as a repair, nor logged as one."""
    store = _owner_b()
    store.put(0, KEY, _with_token("srctok-new"))
    changelog = _RefusingChangelog()
    telemetry = RecordingTelemetry()
    repair = LateWriteRepair(store, changelog, telemetry)

    async def scenario() -> None:
        repair.attach(asyncio.get_running_loop())
        repair.found(0, KEY, 1)
        for _ in range(10):  # the hand-over, the write and its acknowledgement's callback
            await asyncio.sleep(0)

    with capture_logs() as logs:
        asyncio.run(scenario())

    assert len(changelog.writes) == 1
    assert telemetry.named("changelog_repaired") == []
    assert [e["event"] for e in logs if e["event"].startswith("changelog_")] == [
        "changelog_repair_failed"
    ]
