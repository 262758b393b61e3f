"""Owner epochs of changelog values: how a former owner's late writes are told apart (DESIGN, 7).

A member that lost a partition (stopped past its session timeout, say) may still have profile
writes queued; they can land in the changelog after the new owner's newer values and, being the
latest of their key, win compaction and every later restore. So each owner of a changelog
partition claims an *epoch* at assignment, one above every epoch in the partition, writes it as a
*fence* record, and stamps it into each profile value it writes. On restore a value whose epoch
is below the one already held for its key is a former owner's late write and is ignored.

The stamp is an envelope around the profile value, independent of the profile's own format
version (``consumer.domain.profile_codec``)::

    byte 0      0xE5, the envelope marker (never a profile format version)
    bytes 1-4   epoch, unsigned, big-endian
    bytes 5-    the profile value, unchanged (its own version byte first)

A value without the envelope has epoch 0 (written before epochs existed, or by a store that has
not claimed one). The fence record has the reserved key ``FENCE_KEY`` and the epoch as its value
(8 bytes, big-endian); it is never a profile. Tombstones carry no epoch.
"""

from __future__ import annotations

import struct

STAMP_MARKER = 0xE5
FENCE_KEY = b"\x00button-consumer.fence"
"""Key of the fence record in each changelog partition (no user key starts with a NUL byte)."""

_STAMP = struct.Struct(">BI")
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
