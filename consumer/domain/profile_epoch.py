"""Owner epochs of changelog records: how a former owner's late writes are told apart (DESIGN, 7).

A member that lost a partition (stopped past its session timeout, say) may still have profile
writes queued; they can land in the changelog after the new owner's newer records and, being the
latest of their key, win compaction and every later restore. So each owner of a changelog
partition claims an *epoch* at assignment, one above every epoch in the partition, writes it as a
*fence* record, and stamps it into each record it writes: a profile value in an envelope, a
tombstone in a header. On restore a record whose epoch is below the one held for its key (the
held value's, or the stamped tombstone's that removed it) is a former owner's late write and is
ignored. Ignoring is not enough once the broker compacts the changelog (it keeps the last
record of a key, the late one): right after its fence, the owner writes again each key whose
record its restore ignored (its held value stamped with its epoch, or a stamped tombstone), so
that the rightful record is the latest of its key again (``ProfileStore.repairs``); while it owns
the partition it reads it on and writes a key again as soon as a record with an older epoch lands
for it (``consumer.engine.fence``). Not closed here (only by fencing at the broker, a
transactional producer): a late write that lands while no owner runs and is compacted before any
restore reads it, and a former owner stalled between its restore and its fence, which claims the
same epoch as the next owner (DESIGN, 7).

The stamp is an envelope around the profile value, independent of the profile's own format
version (``consumer.domain.profile_codec``)::

    byte 0      0xE5, the envelope marker (never a profile format version)
    bytes 1-4   epoch, unsigned, big-endian
    bytes 5-    the profile value, unchanged (its own version byte first)

A value without the envelope has epoch 0 (written before epochs existed, or by a store that has
not claimed one). The fence record has the reserved key ``FENCE_KEY`` and the epoch as its value
(8 bytes, big-endian); it is never a profile.

A tombstone has no value to wrap: its writer's epoch is the record header ``EPOCH_HEADER``
(``button.epoch``, 4 bytes, unsigned, big-endian). A restore reads it back as a ``Tombstone``;
a tombstone without the header (an earlier release's, or one of a store without an epoch) reads
as ``None`` and is applied whatever the held epoch, as before epochs reached tombstones.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

STAMP_MARKER = 0xE5
FENCE_KEY = b"\x00button-consumer.fence"
"""Key of the fence record in each changelog partition (no user key starts with a NUL byte)."""

EPOCH_HEADER = "button.epoch"
"""Record header of a stamped tombstone: its writer's epoch (``epoch_header``)."""

_STAMP = struct.Struct(">BI")
_EPOCH = struct.Struct(">I")
_FENCE = struct.Struct(">q")
MAX_EPOCH = 2**32 - 1


def stamp(value: bytes, epoch: int) -> bytes:
    """``value`` in the epoch envelope (epoch 0: returned unchanged)."""
    if epoch == 0:
        return value
    if not 0 < epoch <= MAX_EPOCH:
        raise ValueError(f"epoch {epoch} out of range")
    return _STAMP.pack(STAMP_MARKER, epoch) + value


def epoch_of(value: bytes) -> int:
    """The epoch a value was written with (0 without the envelope)."""
    if len(value) >= _STAMP.size and value[0] == STAMP_MARKER:
        return int(_STAMP.unpack_from(value)[1])
    return 0


def unstamp(value: bytes) -> bytes:
    """The profile value inside the envelope (the value itself without one)."""
    if len(value) >= _STAMP.size and value[0] == STAMP_MARKER:
        return value[_STAMP.size :]
    return value


def fence_value(epoch: int) -> bytes:
    return _FENCE.pack(epoch)


def read_fence(value: bytes | None) -> int:
    """The epoch of a fence record (0 when empty or malformed)."""
    if value is None or len(value) != _FENCE.size:
        return 0
    return max(int(_FENCE.unpack(value)[0]), 0)


def epoch_header(epoch: int) -> bytes:
    """The ``EPOCH_HEADER`` value of a tombstone written with ``epoch`` (4 bytes, big-endian).

    Raises:
        ValueError: ``epoch`` is not in 1..``MAX_EPOCH``.
    """
    if not 0 < epoch <= MAX_EPOCH:
        raise ValueError(f"epoch {epoch} out of range")
    return _EPOCH.pack(epoch)


def read_epoch_header(value: bytes | None) -> int:
    """The epoch of an ``EPOCH_HEADER`` value (0 when absent or not 4 bytes)."""
    if value is None or len(value) != _EPOCH.size:
        return 0
    return int(_EPOCH.unpack(value)[0])


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A tombstone as a restore reads it back when it carries its writer's epoch
    (``EPOCH_HEADER``); a tombstone without one reads as ``None``."""

    epoch: int


def tombstone_read_back(epoch: int) -> Tombstone | None:
    """What a restore reads back of a tombstone written with ``epoch`` (0: ``None``, no header)."""
    return Tombstone(epoch) if epoch > 0 else None


RestoredValue = bytes | Tombstone | None
"""A changelog record's value as the restore applies it: a profile value (stamped or not), a
stamped ``Tombstone``, or ``None`` (a tombstone without an epoch)."""
