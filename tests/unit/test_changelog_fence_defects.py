"""Defects of the changelog fence (DESIGN, 7), proven at the profile store.

DESIGN, 7 promises that "a late write of a member that lost the partition never replaces a
newer value": each owner claims an epoch above every one in its changelog partition, stamps it
into each value it writes, and a restore ignores a value whose epoch is below the one held for
its key. The tests below give a restore the changelog a former owner's late writes leave behind
(a member stopped past its session timeout whose producer retries its queued writes for up to
``message.timeout.ms`` after it continues) and show the promise broken:

- a former owner's late tombstone (an expired profile, or one emptied) carried no epoch, so it
  erased the new owner's newer value (fixed: a tombstone carries its writer's epoch in the
  ``button.epoch`` header, and the restore judges it like a value);
- compaction keeps the last value of a key only, so once it ran, a former owner's late value
  is all that is left of the key, and the restore takes it. The owner now writes such a key
  again after a restore that fenced its late record, and at once when it lands while it owns
  the partition (``tests/unit/test_changelog_fence.py``), so compaction keeps the rightful
  record; what is left is the residual this test models: a late write that lands while no
  owner runs and is compacted before any restore reads it (DESIGN, 7).

A test still marked ``xfail(strict=True)`` fails on the current code, and a fix turns it into a
pass that strict mode reports, so the mark comes off with the fix.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import ParkedOrder, Profile, Retention
from consumer.domain.profile_epoch import FENCE_KEY, RestoredValue, epoch_of, fence_value
from consumer.engine.profiles import ProfileStore

DAY = 86_400_000
RETENTION = Retention(btn_ref_ms=7 * DAY, device_id_ms=30 * DAY, order_ms=60 * DAY)
NOW_MS = int(datetime.now(UTC).timestamp() * 1000)
KEY = b"user-1"


def _with_token(token: str, *, parked: str | None = None) -> Profile:
    """A profile holding ``token`` (seen an hour ago) and, when given, an order parked behind
    a dead letter (``http_400``)."""
    return Profile(
        tokens=(ResolvedToken(token, TokenSource.EXPLICIT, NOW_MS - 3_600_000),),
        parked=() if parked is None else (ParkedOrder(parked, "http_400", NOW_MS - 60_000),),
    )


def _owner(changelog: list[tuple[bytes, RestoredValue]], partition: int = 0) -> ProfileStore:
    """A member that restored ``changelog`` and claimed the partition (its fence appended)."""
    store = ProfileStore(RETENTION)
    for key, value in changelog:
        store.restore(partition, key, value)
    changelog.append((FENCE_KEY, fence_value(store.claim_epoch(partition))))
    return store


def _restored(changelog: list[tuple[bytes, RestoredValue]]) -> Profile | None:
    """The profile of ``KEY`` a restore of ``changelog`` holds."""
    store = ProfileStore(RETENTION)
    for key, value in changelog:
        store.restore(0, key, value)
    return store.get(0, KEY)


def _compacted(changelog: list[tuple[bytes, RestoredValue]]) -> list[tuple[bytes, RestoredValue]]:
    """What log compaction leaves of ``changelog``: the last record of each key, in offset
    order (tombstones kept: within ``delete.retention.ms``)."""
    last = {key: offset for offset, (key, _value) in enumerate(changelog)}
    return [record for offset, record in enumerate(changelog) if last[record[0]] == offset]


def test_a_former_owners_late_tombstone_does_not_erase_the_new_owners_profile() -> None:
    """Owner A holds the user's profile (a token, an order parked behind a dead letter) and
    expires or empties it: its tombstone is queued. A stalls past its session timeout; B takes
    the partition over, restores (the tombstone has not landed), fences with epoch 2 and
    writes the user's newer profile (a new token, the order still parked). A continues and its
    producer delivers the queued tombstone, after B's value.

    Expected: a restore holds B's profile (A's tombstone is a late write of a former owner).
    Before the fix: the profile was gone: the tombstone carried no epoch and was applied, so
    the user's token was forgotten (their next purchase went to Button without ``btn_ref``) and
    the parked order released (its later records reached Button ahead of the create they
    depend on). Now the tombstone carries A's epoch (``ChangelogWrite.epoch``, written as the
    ``button.epoch`` header), which is below B's value's.
    """
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-old", parked="ORD-1"))))
    late_tombstone = a.write(0, KEY, Profile())  # emptied (or expired): a tombstone, queued
    assert (late_tombstone.value, late_tombstone.epoch) == (None, 1)

    b = _owner(changelog)  # restored before the tombstone landed
    newer = _with_token("srctok-new", parked="ORD-1")
    changelog.append((KEY, b.put(0, KEY, newer)))
    changelog.append((KEY, late_tombstone.read_back))  # A's queued write lands last

    assert _restored(changelog) == newer


@pytest.mark.xfail(
    strict=True,
    reason=(
        "residual: a late write that lands while no owner runs and is compacted before any "
        "restore reads it is closed only by broker-side fencing (a transactional changelog "
        "producer, KIP-98/KIP-447); see docs/design.md, 7"
    ),
)
def test_a_former_owners_late_value_stays_fenced_after_compaction() -> None:
    """Owner A (epoch 1) writes the user's profile; B takes the partition over, fences with
    epoch 2 and writes a newer profile; A's late write (epoch 1, queued before it lost the
    partition) lands after B's. Without compaction a restore ignores it (the existing
    ``test_a_former_owners_late_write_after_the_new_owners_value_is_ignored_on_restore``).
    The changelog is compacted (DESIGN, 7), and compaction keeps the last record of a key:
    A's late value, while B's is removed.

    Expected: a restore of the compacted changelog still holds B's profile (or at least not
    A's late one, which the fence was written to shut out).
    Actual: only A's value is left of the key, no held value of a higher epoch is there to
    compare it with, and the restore takes it: B's newer token is lost and the order B had
    parked is held by A's older state.
    """
    changelog: list[tuple[bytes, RestoredValue]] = []
    a = _owner(changelog)
    changelog.append((KEY, a.put(0, KEY, _with_token("srctok-old"))))
    late = a.put(0, KEY, _with_token("srctok-old"))  # queued by A, delivered late

    b = _owner(changelog)
    newer = _with_token("srctok-new", parked="ORD-1")
    changelog.append((KEY, b.put(0, KEY, newer)))
    changelog.append((KEY, late))

    assert _restored(changelog) == newer  # the fence holds before compaction
    compacted = _compacted(changelog)
    assert [epoch_of(v) for k, v in compacted if k == KEY and isinstance(v, bytes)] == [1]

    assert _restored(compacted) == newer
