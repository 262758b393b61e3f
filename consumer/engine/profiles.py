"""The profiles of the partitions this process owns, held in memory as their changelog bytes.

Memory is the constraint: a pod must hold about a million profiles. So the ``ProfileStore``
keeps each profile as the same compact bytes it writes to the compacted changelog topic
(format version 4: about 75 bytes for a token and a device id, about 250 with one two-line
order, several times less than the same profile as Python objects), compressed in memory with a
zstd dictionary trained on the process's own profiles once it holds enough of them
(``consumer.engine.profile_memory``: about 40 % smaller), and decodes one on ``get`` (tens of
microseconds); restoring a partition stores the changelog values without decoding them. Every
reader of the store sees the changelog bytes: the compression never reaches the changelog.

A partition is restored off the store (``PartitionRestore``, on the restore's own thread,
beside the poll loop) and installed whole when its changelog has been read, so a revoke during
the restore leaves nothing half-restored behind and ``len(store)`` counts installed profiles
only. The count is kept under a lock: the loop thread (lanes), the Kafka thread (revoke) and a
restore thread change it.

It is engine state, not domain: mutable, owned by one process, filled and emptied as partitions
are assigned and revoked. The model and its byte format are in ``consumer.domain.profile`` and
``consumer.domain.profile_codec``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import structlog

from consumer.domain.button import ORDER_EXPIRED, PROFILE_CAPPED, DiscardedRefund
from consumer.domain.mapping import held_refunds_gone
from consumer.domain.profile import Profile, Retention, epoch_ms, expires_at_ms
from consumer.domain.profile_codec import (
    ProfileDecodeError,
    decode_profile,
    encode_profile,
    restored_epoch,
)
from consumer.domain.profile_epoch import (
    FENCE_KEY,
    RestoredValue,
    Tombstone,
    read_fence,
    stamp,
    tombstone_read_back,
    unstamp,
)
from consumer.engine.profile_memory import ProfileMemory
from consumer.ports import Changelog, Telemetry

log = structlog.get_logger("consumer.profiles")


@dataclass(frozen=True, slots=True)
class ChangelogWrite:
    """A record the caller must write to the changelog topic (``value`` None = tombstone).

    ``discarded``: refunds held for their purchase that the write erases with their order (a
    profile expired whole, or orders forgotten to its cap in bytes), for the caller to report
    (``report_discarded``) once the write is queued.

    ``epoch``: the writer's epoch of the partition (0: none claimed). A value carries it in its
    envelope already; a tombstone carries it only if the caller passes it on
    (``Changelog.write(..., epoch=)``, the ``button.epoch`` header).
    """

    partition: int
    key: bytes
    value: bytes | None
    discarded: tuple[DiscardedRefund, ...] = ()
    epoch: int = 0

    @property
    def read_back(self) -> RestoredValue:
        """What a restore reads back of this record once written (``PartitionRestore.apply``)."""
        return self.value if self.value is not None else tombstone_read_back(self.epoch)


def report_discarded(telemetry: Telemetry | None, write: ChangelogWrite | None) -> None:
    """Count and log (warning ``held_refund_discarded``) each held refund ``write`` erases:
    the order at Button never carries it, and no dead letter exists for it."""
    if write is None:
        return
    for refund in write.discarded:
        if telemetry is not None:
            telemetry.held_refund_discarded(refund.reason)
        log.warning(
            "held_refund_discarded",
            order_id=refund.order_id,
            refund_event_id=refund.event_id,
            reason=refund.reason,
            detail=refund.detail,
        )


class ProfileStore:
    """All profiles of the partitions this process owns, in their encoded (compact) form.

    Grouped by partition so a revoked partition is dropped at once and a newly assigned one is
    restored from the same partition of the changelog. An encoded profile never exceeds
    ``max_bytes``: the orders touched longest ago are forgotten first (logged, counted). Pure:
    the caller does the Kafka I/O with the bytes ``put`` returns and the writes ``expire``
    returns.
    """

    __slots__ = (
        "_count",
        "_epochs",
        "_lock",
        "_max_bytes",
        "_memory",
        "_partitions",
        "_repairs",
        "_retention",
        "_tombstones",
        "capped",
        "fenced",
    )

    def __init__(
        self,
        retention: Retention,
        *,
        max_bytes: int = 512 * 1024,
        memory: ProfileMemory | None = None,
    ) -> None:
        self._retention = retention
        self._max_bytes = max_bytes
        self._memory = ProfileMemory() if memory is None else memory
        self._partitions: dict[int, dict[bytes, bytes]] = {}
        """Per partition, each key's value in its held form (``ProfileMemory``)."""
        self.capped = 0
        """Profiles that lost orders to ``max_bytes``."""
        self._epochs: dict[int, int] = {}
        self._tombstones: dict[int, dict[bytes, int]] = {}
        """Per partition restored in place (``restore``), the epochs of stamped tombstones."""
        self._repairs: dict[int, set[bytes]] = {}
        """Per restored partition, the keys whose records the restore fenced (``repairs``)."""
        self._count = 0
        self._lock = threading.Lock()
        self.fenced = 0
        """Changelog records ignored on restore: late writes of a former owner."""

    @property
    def retention(self) -> Retention:
        return self._retention

    @property
    def memory(self) -> ProfileMemory:
        """How values are held (raw, or compressed once its dictionary is trained)."""
        return self._memory

    def get(self, partition: int, key: bytes) -> Profile | None:
        """The user's profile, or ``None`` if none is stored.

        Raises:
            ProfileDecodeError: the stored bytes are corrupt.
        """
        held = self._partitions.get(partition, {}).get(key)
        return None if held is None else decode_profile(self._memory.raw(held))

    def get_encoded(self, partition: int, key: bytes) -> bytes | None:
        """The user's profile as its changelog value (the bytes last written or restored), or
        ``None`` if none is stored.

        Raises:
            ProfileDecodeError: a held value that does not decompress.
        """
        held = self._partitions.get(partition, {}).get(key)
        return None if held is None else self._memory.raw(held)

    def put(self, partition: int, key: bytes, profile: Profile) -> bytes | None:
        """Store ``profile``; return the changelog value to write (None = write a tombstone).

        An empty profile is deleted rather than stored.
        """
        return self.write(partition, key, profile).value

    def write(self, partition: int, key: bytes, profile: Profile) -> ChangelogWrite:
        """Store ``profile``; return the changelog record to write (``value`` None: a
        tombstone), with the held refunds it erases when orders were forgotten to
        ``max_bytes`` (``ChangelogWrite.discarded``, ``PROFILE_CAPPED``) and this owner's
        epoch of the partition (``ChangelogWrite.epoch``)."""
        epoch = self._epochs.get(partition, 0)
        if profile.is_empty:
            if self._partitions.get(partition, {}).pop(key, None) is not None:
                self._add_count(-1)
            return ChangelogWrite(partition, key, None, epoch=epoch)
        encoded, kept = self._encode_capped(profile)
        value = stamp(encoded, epoch)
        profiles = self._partitions.setdefault(partition, {})
        if key not in profiles:
            self._add_count(1)
        profiles[key] = self._memory.hold(value)
        gone = () if kept is profile else held_refunds_gone(profile, kept, PROFILE_CAPPED)
        return ChangelogWrite(partition, key, value, gone, epoch)

    def _add_count(self, delta: int) -> None:
        with self._lock:
            self._count += delta

    def _encode_capped(self, profile: Profile) -> tuple[bytes, Profile]:
        """Encode; over ``max_bytes`` (the changelog's record limit), forget the orders touched
        longest ago until it fits: a heavy user's profile must never become unwritable.
        Returns the bytes and the profile they hold (``profile`` itself when it fitted)."""
        value = encode_profile(profile, expires_at_ms(profile, self._retention))
        if len(value) <= self._max_bytes or not profile.orders:
            return value, profile
        oldest_first = sorted(profile.orders, key=lambda o: o.touched_ms)
        while len(value) > self._max_bytes and oldest_first:
            forgotten = oldest_first.pop(0)
            profile = replace(
                profile, orders=tuple(o for o in profile.orders if o is not forgotten)
            )
            value = encode_profile(profile, expires_at_ms(profile, self._retention))
        self.capped += 1
        log.warning("profile_capped", bytes=len(value), orders_kept=len(profile.orders))
        return value, profile

    def restore(self, partition: int, key: bytes, value: RestoredValue) -> None:
        """Apply one changelog record to a held partition (``value``: a profile value, a
        stamped ``Tombstone``, or None for a tombstone without an epoch).

        The same rules as ``PartitionRestore.apply``, applied in place; a whole partition is
        restored with ``restoring`` and ``install``.

        Raises:
            ProfileDecodeError: unknown format version or truncated header.
        """
        restore = PartitionRestore(partition, self._memory)
        restore.profiles = self._partitions.setdefault(partition, {})
        restore.tombstones = self._tombstones.setdefault(partition, {})
        restore.fenced_keys = self._repairs.setdefault(partition, set())
        restore.epoch = self._epochs.get(partition, 0)
        before = len(restore.profiles)
        restore.apply(((key, value),))
        self._epochs[partition] = restore.epoch
        self.fenced += restore.fenced
        self._add_count(len(restore.profiles) - before)

    def restoring(self, partition: int) -> PartitionRestore:
        """An empty restore of ``partition``, filled off the store; ``install`` it when read."""
        return PartitionRestore(partition, self._memory)

    def install(self, restore: PartitionRestore, *, claim: bool = False) -> int:
        """Make a restored partition's profiles and epoch the held ones (replacing any); return
        the partition's epoch.

        ``claim``: claim this owner's epoch in the same step (``claim_epoch``), so that no
        write of the partition (an expiry's tombstone on the event loop, say) is ever stamped
        with a former owner's epoch after the partition is held.
        """
        with self._lock:
            replaced = self._partitions.get(restore.partition, {})
            self._partitions[restore.partition] = restore.profiles
            self._tombstones.pop(restore.partition, None)
            self._repairs[restore.partition] = restore.fenced_keys
            self._count += len(restore.profiles) - len(replaced)
            epoch = max(self._epochs.get(restore.partition, 0), restore.epoch) + int(claim)
            self._epochs[restore.partition] = epoch
            self.fenced += restore.fenced
            return epoch

    def claim_epoch(self, partition: int) -> int:
        """After the restore of ``partition``: this owner's epoch, one above every epoch seen
        there. Write ``FENCE_KEY`` with ``fence_value(epoch)`` to the partition before
        processing its records, then the ``repairs``; every record ``write`` returns from now
        on carries it."""
        epoch = self._epochs.get(partition, 0) + 1
        self._epochs[partition] = epoch
        return epoch

    def epoch(self, partition: int) -> int:
        """This owner's epoch of ``partition`` (0: none claimed, or not held)."""
        return self._epochs.get(partition, 0)

    def repairs(self, partition: int) -> list[ChangelogWrite]:
        """After ``claim_epoch``: the records to write right after the fence, once, for the
        keys whose records the restore ignored as a former owner's late writes (``fenced``).

        Each is the key's held value stamped with this owner's epoch (the held bytes become
        those), or a stamped tombstone when no profile of the key is held, so the rightful
        record is again the latest of its key and the one compaction keeps (DESIGN, 7).
        """
        keys = self._repairs.pop(partition, set())
        return [w for key in sorted(keys) if (w := self.repair(partition, key)) is not None]

    def repair(self, partition: int, key: bytes) -> ChangelogWrite | None:
        """The record that makes this owner's state of ``key`` the latest of its key again:
        its held value stamped with the partition's epoch (held from now on), or a stamped
        tombstone when none is held; ``None`` when ``partition`` is not held (dropped)."""
        profiles = self._partitions.get(partition)
        if profiles is None:
            return None
        epoch = self._epochs.get(partition, 0)
        held = profiles.get(key)
        if held is None:
            return ChangelogWrite(partition, key, None, epoch=epoch)
        value = stamp(unstamp(self._memory.raw(held)), epoch)
        profiles[key] = self._memory.hold(value)
        return ChangelogWrite(partition, key, value, epoch=epoch)

    def drop_partition(self, partition: int) -> None:
        """Forget every profile of a revoked partition."""
        with self._lock:
            self._count -= len(self._partitions.pop(partition, {}))
            self._epochs.pop(partition, None)
            self._tombstones.pop(partition, None)
            self._repairs.pop(partition, None)

    def expire(
        self, now: datetime, partitions: Iterable[int] | None = None
    ) -> list[ChangelogWrite]:
        """Remove profiles whose every part has expired; return the tombstones to write (each
        with this owner's epoch of its partition, ``ChangelogWrite.epoch``).

        Reads only each value's header (its compact form when held compressed, about 20 %
        slower to read; about 0.8 s per million profiles on one core);
        pass ``partitions`` to spread the scan over several calls. An expired profile is
        decoded only when its value is removed, for the refunds held for their purchase that
        its tombstone erases (``ChangelogWrite.discarded``, ``ORDER_EXPIRED``); one that no
        longer decodes erases none that can be named.
        """
        now_ms = epoch_ms(now)
        chosen = tuple(self._partitions) if partitions is None else tuple(partitions)
        tombstones: list[ChangelogWrite] = []
        for partition in chosen:
            profiles = self._partitions.get(partition, {})
            epoch = self._epochs.get(partition, 0)
            expires_at = self._memory.expires_at
            expired = [k for k, v in profiles.items() if expires_at(v) < now_ms]
            for key in expired:
                gone = _held_in(self._memory, profiles.pop(key))
                tombstones.append(ChangelogWrite(partition, key, None, gone, epoch))
            self._add_count(-len(expired))
        return tombstones

    def partitions(self) -> Iterator[int]:
        return iter(tuple(self._partitions))

    def absent(self, partition: int, key: bytes) -> bool:
        """Whether ``partition`` is held and has no profile for ``key`` (a tombstone is due)."""
        profiles = self._partitions.get(partition)
        return profiles is not None and key not in profiles

    def __len__(self) -> int:
        # A running count: O(1), and safe to read from the Kafka thread (rebalance callbacks
        # report it) while lanes on the loop thread add profiles, where iterating the dicts
        # could raise "dictionary changed size during iteration".
        return self._count

    def count(self, partition: int) -> int:
        return len(self._partitions.get(partition, {}))


def _held_in(memory: ProfileMemory, held: bytes) -> tuple[DiscardedRefund, ...]:
    """The refunds held for their purchase in an expired profile's ``held`` value."""
    try:
        profile = decode_profile(memory.raw(held))
    except ProfileDecodeError:
        return ()
    return held_refunds_gone(profile, Profile(), ORDER_EXPIRED)


class PartitionRestore:
    """One partition's profiles as read back from its changelog, not yet held by the store.

    Filled by one thread (the restore's) with ``apply``; ``ProfileStore.install`` then makes it
    the partition's state. Fencing (``consumer.domain.profile_epoch``): the fence record raises
    the partition's epoch; a value or a stamped tombstone whose epoch is below the one held for
    its key (the held value's, or the epoch of the stamped tombstone that removed it) is a
    former owner's late write: it is ignored and counted in ``fenced``. A tombstone without an
    epoch (an earlier release's) is applied as it always was.

    ``tombstones`` (key -> epoch of the stamped tombstone that removed the key) lives only as
    long as the restore: ``install`` keeps the profiles, the epoch and ``fenced_keys`` (the keys
    of the fenced records, for ``ProfileStore.repairs``).

    ``profiles`` holds each value in its held form (``memory``, the store's): ``apply`` holds a
    batch raw while it applies the rules, then compresses it in one call on the restore's
    thread (``ProfileMemory.hold_all``).
    """

    __slots__ = (
        "_memory",
        "epoch",
        "fenced",
        "fenced_keys",
        "partition",
        "profiles",
        "tombstones",
    )

    def __init__(self, partition: int, memory: ProfileMemory) -> None:
        self.partition = partition
        self._memory = memory
        self.profiles: dict[bytes, bytes] = {}
        self.tombstones: dict[bytes, int] = {}
        self.fenced_keys: set[bytes] = set()
        self.epoch = 0
        self.fenced = 0

    def apply(self, records: Iterable[tuple[bytes, RestoredValue]]) -> None:
        """Apply changelog records in offset order: (key, value), the value a profile value
        (stamped or not), a stamped ``Tombstone`` or None (a tombstone without an epoch).

        Only each value's header is checked (a restore of a million profiles must be fast); a
        value of an unknown format version fails the restore loudly.

        Raises:
            ProfileDecodeError: unknown format version or truncated header.
        """
        profiles = self.profiles
        tombstones = self.tombstones
        epoch = self.epoch
        epoch_of = self._memory.epoch_of
        applied: dict[bytes, bytes] = {}
        for key, value in records:
            if key == FENCE_KEY:
                epoch = max(epoch, read_fence(value if isinstance(value, bytes) else None))
                continue
            if value is None:
                profiles.pop(key, None)
                tombstones.pop(key, None)
                continue
            if isinstance(value, Tombstone):
                written = value.epoch
                if written < self._held_epoch(key):
                    self.fenced += 1  # a former owner's late tombstone: ignore it
                    self.fenced_keys.add(key)
                    continue
                epoch = max(epoch, written)
                profiles.pop(key, None)
                tombstones[key] = written
                continue
            written = restored_epoch(value)
            held = profiles.get(key)
            if held is not None:
                if written < epoch_of(held):
                    # A former owner's late write, after the new owner's value: ignore it.
                    self.fenced += 1
                    self.fenced_keys.add(key)
                    continue
            elif tombstones and written < tombstones.get(key, 0):
                self.fenced += 1  # a late value after the new owner's stamped tombstone
                self.fenced_keys.add(key)
                continue
            else:
                tombstones.pop(key, None)
            epoch = max(epoch, written)
            profiles[key] = applied[key] = value
        self.epoch = epoch
        # Held raw until here, then compressed together (``ProfileMemory.hold_all``); a key
        # removed since (a later tombstone of the batch) stays removed.
        compressed = self._memory.hold_all(list(applied.values()))
        for (key, value), kept in zip(applied.items(), compressed, strict=True):
            if kept is not value and profiles.get(key) is value:
                profiles[key] = kept

    def _held_epoch(self, key: bytes) -> int:
        """The epoch of what the restore holds for ``key``: its value's, or that of the stamped
        tombstone that removed it (0: nothing)."""
        held = self.profiles.get(key)
        return self._memory.epoch_of(held) if held is not None else self.tombstones.get(key, 0)


class ProfileExpiry:
    """Removes expired profiles and writes their tombstones, a batch at a time, beside polling.

    One ``run`` scans the held partitions one by one (only the 9-byte headers) and writes each
    partition's tombstones in batches of ``batch`` concurrent writes, yielding to the event loop
    between batches and partitions, so a storm of expired profiles never stops the poll loop.

    A tombstone is never written for a key whose profile was written since the scan (the user
    came back), nor for a partition dropped since (another member owns it): the check and the
    queuing of the write happen in one step of the event loop, without a suspension between
    them, and the changelog keeps writes of a partition in the order they were queued
    (``consumer.ports.Changelog``), so a later profile always follows the tombstone.

    A refund held for its purchase that a tombstone erases (the purchase never came before
    its order expired) is counted and logged ``held_refund_discarded`` (``order_expired``)
    once its tombstone is queued, never for a profile the user came back to.

    Args:
        store: the profiles of the owned partitions.
        changelog: where tombstones go.
        clock: the wall clock (expiry is in event time).
        batch: tombstones written concurrently before yielding.
        telemetry: where erased held refunds are counted (``None``: logged only).
    """

    def __init__(
        self,
        store: ProfileStore,
        changelog: Changelog,
        *,
        clock: Callable[[], datetime],
        batch: int = 500,
        telemetry: Telemetry | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._telemetry = telemetry
        self._store = store
        self._changelog = changelog
        self._clock = clock
        self._batch = batch

    async def run(self) -> int:
        """Expire every held partition once; return the tombstones written."""
        written = 0
        for partition in self._store.partitions():
            writes = self._store.expire(self._clock(), [partition])
            for start in range(0, len(writes), self._batch):
                chunk = writes[start : start + self._batch]
                results = await asyncio.gather(*(self._tombstone(w) for w in chunk))
                written += sum(results)
                await asyncio.sleep(0)
            await asyncio.sleep(0)
        return written

    async def _tombstone(self, write: ChangelogWrite) -> bool:
        # No await between the check and the write being queued (see the class docstring).
        if not self._store.absent(write.partition, write.key):
            return False
        report_discarded(self._telemetry, write)  # (no suspension: the check still holds)
        await self._changelog.write(write.partition, write.key, None, epoch=write.epoch)
        return True
