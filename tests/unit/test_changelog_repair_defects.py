"""The changelog fence's repair and watch (DESIGN, 7) at the ports: an expiry right after a
restore's install, a watch whose consumer cannot be created, a quick revoke and re-assignment
seen by the watch (each failed before its fix)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from consumer.adapters.changelog_watch import ChangelogWatch
from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import Profile
from consumer.domain.profile_epoch import FENCE_KEY, RestoredValue, fence_value
from consumer.engine.profiles import ChangelogWrite, ProfileExpiry, ProfileStore
from tests.fakes import RETENTION, restored

DAY = 86_400_000
NOW = datetime.now(UTC)
NOW_MS = int(NOW.timestamp() * 1000)
KEY = b"user-1"


def _with_token(token: str, seen_ms: int) -> Profile:
    return Profile(tokens=(ResolvedToken(token, TokenSource.EXPLICIT, seen_ms),))


class _Changelog:
    """Keeps each write in the order it was queued, as the changelog partition holds them."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes, bytes | None, int]] = []

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> asyncio.Future[None]:
        self.writes.append((partition, key, value, epoch))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_an_expiry_between_install_and_claim_stamps_the_new_owners_tombstone() -> None:
    """Scenario: owner A (epoch 5) held the user's profile, last seen more than the
    attribution window ago. B is assigned the partition; its restore thread installs what it
    read (``ProfileStore.install``: the partition is in ``store.partitions()`` from now on,
    with A's epoch 5 as the held one) and only then claims epoch 6 (``claim_epoch``, a separate
    step of the restore thread, in ``bootstrap._restorer``). Housekeeping
    (``ProfileExpiry.run``) runs on the event loop, unsynchronised with that thread, and gets
    in between: the user's profile has expired, and its tombstone is written. A's write of the
    key queued before it lost the partition (A's watch repair, say, which no input record
    follows) lands after B's fence.

    Expected: B's tombstone carries B's epoch (6), as every record the owner writes
    (DESIGN, 7), and a restore ignores A's late value (epoch 5) below it: no profile.
    Before: the tombstone carries A's epoch 5 (and may land before B's fence); A's late
    value of epoch 5 is not below it, and a restore takes it: the expired profile of the
    former owner is back. (With an empty changelog, epoch 0: the tombstone has no
    ``button.epoch`` header at all.)
    """
    a = ProfileStore(RETENTION)
    a.restore(0, FENCE_KEY, fence_value(4))
    a_epoch = a.claim_epoch(0)
    stale = a.write(0, KEY, _with_token("srctok-old", NOW_MS - 30 * DAY))
    late = a.repair(0, KEY)  # A's watch repair of the key, queued, lands late
    assert late is not None
    changelog: list[tuple[bytes, RestoredValue]] = [
        (FENCE_KEY, fence_value(a_epoch)),
        (KEY, stale.read_back),
    ]

    b = ProfileStore(RETENTION)
    restore = b.restoring(0)
    restore.apply(changelog)
    b_epoch = b.install(restore, claim=True)  # the restore thread: one step
    tombstones = _Changelog()  # the event loop's housekeeping, right after it
    asyncio.run(ProfileExpiry(b, tombstones, clock=lambda: NOW).run())
    changelog += [
        (k, ChangelogWrite(p, k, v, epoch=e).read_back) for p, k, v, e in tombstones.writes
    ]
    changelog += [(FENCE_KEY, fence_value(b_epoch)), (KEY, late.read_back)]

    stamped = [(k, e) for _p, k, _v, e in tombstones.writes]
    assert (stamped, restored(changelog).get(0, KEY)) == ([(KEY, b_epoch)], None)


def test_a_watch_whose_consumer_cannot_be_created_keeps_the_error() -> None:
    """Scenario: the watch's thread starts with the first ``follow`` and creates its own
    consumer, outside the ``try`` that keeps an unexpected error in ``failure``
    (``ChangelogWatch._run``). Here librdkafka refuses the configuration (any error of
    ``Consumer(...)`` does: a property this client does not know, resources exhausted).

    Expected: the thread is gone and ``failure`` holds the error, so the worker stops with it
    (``Worker(side_failure=...)``), as the design promises: "a member never runs on
    unwatched".
    Before: the thread died with the error (only ``threading.excepthook`` printed it),
    ``failure`` is ``None``, and ``following`` still names the partition: the worker runs on
    with no watch, and each later ``follow``/``stop`` grows a change list nobody reads.
    """
    watch = ChangelogWatch(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "watch", "no.such.property": "1"},
        "changelog",
        lambda _partition, _key, _epoch: None,
    )
    try:
        watch.follow(0, 0, 2)
        thread = watch._thread  # the thread the watch started
        assert thread is not None
        thread.join(10)
        assert not thread.is_alive()
    finally:
        watch.close()

    assert "no.such.property" in str(watch.failure)


class _Message:
    """A changelog record as the watch's consumer hands it out."""

    def __init__(self, partition: int, key: bytes, value: bytes) -> None:
        self._partition, self._key, self._value = partition, key, value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


def test_a_quick_revoke_and_reassign_does_not_report_the_owners_earlier_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scenario: the member owns partition 0 with epoch 2 and the watch follows it from offset
    10. Right after the watch's thread took its pending changes (``_apply_changes``), the
    partition is revoked and assigned to this member again (``stop``, then the new restore's
    ``follow(0, 20, 3)``): both land before the thread's snapshot of the owned epochs. The
    consumer still holds the old assignment's next record: the member's own write of
    epoch 2 at offset 10, which the new restore (up to offset 20) already read and judged.

    Expected: a record of the assignment being replaced is judged against the epoch it was
    followed with (2), or dropped; nothing is reported.
    Before: the snapshot already holds epoch 3, the record (epoch 2) is below it and the
    partition is "still" owned with 3, so the owner's own record is reported as a former
    owner's late write: a spurious repair, a ``changelog_fenced_write_repaired`` warning and
    a count in ``changelog_repairs_total{when="watch"}``, which are the operator's signal of
    real late writes.
    """
    from consumer.adapters import changelog_watch
    from consumer.domain.profile_epoch import stamp

    watch: ChangelogWatch | None = None
    consumed = threading.Event()
    calls = 0

    class Consumer:
        def __init__(self, _config: object) -> None:
            self.rebalanced = False

        def incremental_assign(self, _partitions: object) -> None:
            if not self.rebalanced and watch is not None:
                self.rebalanced = True  # the revoke and the new assignment land now
                watch.stop([0])
                watch.follow(0, 20, 3)

        def incremental_unassign(self, _partitions: object) -> None:
            return None

        def close(self) -> None:
            return None

    own = _Message(0, b"own", stamp(b"\x04" + bytes(8), 2))

    def consume_ready(_consumer: object, _batch: int, timeout: float) -> list[_Message]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return [own]  # fetched for the old assignment (from offset 10)
        consumed.set()
        if watch is not None:
            watch._stopping.wait(timeout)  # a consume that finds nothing waits its timeout
        return []

    monkeypatch.setattr(changelog_watch, "Consumer", Consumer)
    monkeypatch.setattr(changelog_watch, "consume_ready", consume_ready)
    reported: list[tuple[int, bytes, int]] = []
    watch = ChangelogWatch({}, "changelog", lambda p, k, e: reported.append((p, k, e)))
    try:
        watch.follow(0, 10, 2)
        assert consumed.wait(10)
    finally:
        watch.close()

    assert reported == []
