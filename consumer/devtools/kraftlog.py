"""What a KRaft controller decided about its brokers, read from its metadata log on disk.

A test that stops a broker needs to know, before it lets the broker go on, whether the
controller fenced it: that decision is a record the controller appends to its metadata log
(the ``__cluster_metadata-0`` partition), and the log's format is Kafka's record batch
(magic 2), the same on disk as on the wire. This module reads the fencing changes out of it,
without a JVM and without asking the controller over the network.

Only what the local broker needs is decoded: uncompressed record batches (the controller's
default), control batches skipped, and of the metadata records only
``BrokerRegistrationChangeRecord`` (api key 17) with its ``Fenced`` tagged field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

METADATA_PARTITION = "__cluster_metadata-0"
"""The metadata log's directory name under the controller's ``metadata.log.dir``."""

BROKER_REGISTRATION_CHANGE = 17
"""The api key of ``BrokerRegistrationChangeRecord`` (Kafka's ``common/metadata`` schemas)."""

_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
"""baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordsCount."""
_LOG_OVERHEAD = 12  # baseOffset and batchLength: batchLength counts the bytes after them
_COMPRESSION_MASK = 0x07
_CONTROL_FLAG = 0x20
_FENCED_TAG = 0
_FENCE = 1
_UNFENCE = -1


class MetadataLogError(ValueError):
    """The metadata log holds something this reader does not decode (a compressed batch, a
    magic other than 2, a record cut short inside a complete batch)."""


@dataclass(frozen=True)
class FencingChange:
    """A broker fenced or unfenced by the controller: one ``BrokerRegistrationChangeRecord``.

    Attributes:
        offset: the record's offset in the metadata log.
        broker_id: the broker's ``node.id``.
        broker_epoch: the epoch of the broker's registration the change applies to.
        fenced: True when the controller fenced the broker, False when it unfenced it.
    """

    offset: int
    broker_id: int
    broker_epoch: int
    fenced: bool


def fencing_changes(partition_dir: Path) -> list[FencingChange]:
    """Every fencing change in the metadata log ``partition_dir``, in offset order.

    Args:
        partition_dir: a ``__cluster_metadata-0`` directory (its ``*.log`` segments are read).

    Returns:
        The changes appended so far; empty when the directory does not exist yet. A batch the
        controller is still writing (its bytes not all on disk) is left for the next call.

    Raises:
        MetadataLogError: a batch this reader cannot decode (see the class).
    """
    changes: list[FencingChange] = []
    for segment in sorted(partition_dir.glob("*.log")):
        changes.extend(_segment_changes(segment.read_bytes()))
    return changes


def _segment_changes(data: bytes) -> list[FencingChange]:
    changes: list[FencingChange] = []
    position = 0
    while position + _BATCH_HEADER.size <= len(data):
        (base_offset, batch_length, _, magic, _, attributes, *_, records_count) = (
            _BATCH_HEADER.unpack_from(data, position)
        )
        end = position + _LOG_OVERHEAD + batch_length
        if batch_length <= 0 or end > len(data):
            break  # the tail of the segment: a batch not (yet) written in full
        if magic != 2:
            raise MetadataLogError(f"record batch at offset {base_offset}: magic {magic}, not 2")
        if attributes & _COMPRESSION_MASK:
            raise MetadataLogError(f"record batch at offset {base_offset} is compressed")
        if not attributes & _CONTROL_FLAG:
            reader = _Reader(data[position + _BATCH_HEADER.size : end])
            for _ in range(records_count):
                change = _record_change(reader, base_offset)
                if change is not None:
                    changes.append(change)
        position = end
    return changes


def _record_change(reader: _Reader, base_offset: int) -> FencingChange | None:
    """Decode one record (Kafka's record format v2) and its value, a metadata record."""
    length = reader.varint()
    end = reader.position + length
    reader.skip(1)  # attributes
    reader.varint()  # timestampDelta
    offset = base_offset + reader.varint()
    key_length = reader.varint()
    reader.skip(max(key_length, 0))
    value_length = reader.varint()
    value = _Reader(reader.take(max(value_length, 0)))
    reader.position = end  # headers: none in the metadata log, and none read
    if value_length <= 0:
        return None
    value.unsigned_varint()  # the frame version of the metadata record serde
    api_key = value.unsigned_varint()
    value.unsigned_varint()  # the record's version: versions 0+ share what is read below
    if api_key != BROKER_REGISTRATION_CHANGE:
        return None
    broker_id, broker_epoch = struct.unpack(">iq", value.take(12))
    fenced = 0
    for _ in range(value.unsigned_varint()):  # tagged fields
        tag = value.unsigned_varint()
        field = value.take(value.unsigned_varint())
        if tag == _FENCED_TAG:
            fenced = struct.unpack(">b", field)[0]
    if fenced not in (_FENCE, _UNFENCE):
        return None  # a change of something else (controlled shutdown, log directories)
    return FencingChange(offset, broker_id, broker_epoch, fenced == _FENCE)


class _Reader:
    """A cursor over bytes, with Kafka's varints (zig-zag signed, and unsigned)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        if self.position + size > len(self.data):
            raise MetadataLogError("a record runs past the end of its batch")
        chunk = self.data[self.position : self.position + size]
        self.position += size
        return chunk

    def skip(self, size: int) -> None:
        self.take(size)

    def unsigned_varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def varint(self) -> int:
        raw = self.unsigned_varint()
        return (raw >> 1) ^ -(raw & 1)
