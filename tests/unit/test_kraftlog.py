"""The metadata-log reader: record batches built here byte by byte, as Kafka lays them out."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from consumer.devtools.kraftlog import FencingChange, MetadataLogError, fencing_changes

SEGMENT = "00000000000000000000.log"


def _unsigned_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(value: int) -> bytes:
    return _unsigned_varint((value << 1) ^ (value >> 63))


def _registration_change(broker_id: int, epoch: int, tags: dict[int, bytes]) -> bytes:
    """A ``BrokerRegistrationChangeRecord`` (api key 17, version 2) as the metadata serde frames
    it: frame version, api key, version, the fields, the tagged fields."""
    tagged = _unsigned_varint(len(tags)) + b"".join(
        _unsigned_varint(tag) + _unsigned_varint(len(data)) + data
        for tag, data in sorted(tags.items())
    )
    return b"\x01" + _unsigned_varint(17) + b"\x02" + struct.pack(">iq", broker_id, epoch) + tagged


def _fenced(value: int) -> dict[int, bytes]:
    return {0: struct.pack(">b", value)}


def _other_record() -> bytes:
    """A ``NoOpRecord`` (api key 20, version 0): no fields, no tagged fields."""
    return b"\x01" + _unsigned_varint(20) + b"\x00" + b"\x00"


def _batch(base_offset: int, values: list[bytes], attributes: int = 0) -> bytes:
    """A record batch (magic 2) holding ``values`` at consecutive offsets (CRC not computed:
    the reader does not check it)."""
    records = b""
    for delta, value in enumerate(values):
        body = (
            b"\x00"  # attributes
            + _varint(0)  # timestampDelta
            + _varint(delta)  # offsetDelta
            + _varint(-1)  # no key
            + _varint(len(value))
            + value
            + _varint(0)  # no headers
        )
        records += _varint(len(body)) + body
    after_length = struct.pack(
        ">ibIhiqqqhii",
        0,  # partitionLeaderEpoch
        2,  # magic
        0,  # crc
        attributes,
        len(values) - 1,
        0,
        0,
        -1,
        -1,
        -1,
        len(values),
    )
    body = after_length + records
    return struct.pack(">qi", base_offset, len(body)) + body


def _log(tmp_path: Path, *batches: bytes) -> Path:
    partition = tmp_path / "__cluster_metadata-0"
    partition.mkdir()
    (partition / SEGMENT).write_bytes(b"".join(batches))
    return partition


def test_fencing_and_unfencing_are_read_with_their_offsets(tmp_path: Path) -> None:
    """A fence (Fenced = 1) and an unfence (Fenced = -1) come out in offset order; the records
    around them (another kind, a registration change of something else) are left out."""
    partition = _log(
        tmp_path,
        _batch(0, [_other_record(), _registration_change(2, 12, _fenced(-1))]),
        _batch(2, [_registration_change(2, 12, {1: b"\x01"}), _other_record()]),
        _batch(
            4, [_registration_change(2, 12, _fenced(1)), _registration_change(2, 12, _fenced(0))]
        ),
        _batch(6, [_registration_change(3, 40, _fenced(-1))]),
    )

    assert fencing_changes(partition) == [
        FencingChange(offset=1, broker_id=2, broker_epoch=12, fenced=False),
        FencingChange(offset=4, broker_id=2, broker_epoch=12, fenced=True),
        FencingChange(offset=6, broker_id=3, broker_epoch=40, fenced=False),
    ]


def test_a_batch_not_yet_written_in_full_is_left_for_the_next_read(tmp_path: Path) -> None:
    """The controller appends while the log is read: a batch whose bytes are not all there
    yet is not read (nor an error); once it is complete, it is."""
    complete = _batch(0, [_registration_change(2, 12, _fenced(1))])
    appending = _batch(1, [_registration_change(2, 12, _fenced(-1))])
    partition = _log(tmp_path, complete, appending[:-3])
    fenced = FencingChange(offset=0, broker_id=2, broker_epoch=12, fenced=True)

    assert fencing_changes(partition) == [fenced]

    (partition / SEGMENT).write_bytes(complete + appending)
    assert fencing_changes(partition) == [
        fenced,
        FencingChange(offset=1, broker_id=2, broker_epoch=12, fenced=False),
    ]


def test_control_batches_are_skipped(tmp_path: Path) -> None:
    """Control batches (leader changes, snapshot markers) hold no metadata records."""
    control = _batch(0, [b"\x00\x00\x00\x00"], attributes=0x20)
    partition = _log(tmp_path, control, _batch(1, [_registration_change(2, 7, _fenced(1))]))

    assert fencing_changes(partition) == [FencingChange(1, 2, 7, fenced=True)]


def test_segments_are_read_in_offset_order(tmp_path: Path) -> None:
    """A rolled log has several segments, each named by its base offset."""
    partition = _log(tmp_path, _batch(0, [_registration_change(2, 1, _fenced(1))]))
    (partition / "00000000000000000001.log").write_bytes(
        _batch(1, [_registration_change(2, 1, _fenced(-1))])
    )

    assert [c.offset for c in fencing_changes(partition)] == [0, 1]


def test_no_log_yet_means_no_changes(tmp_path: Path) -> None:
    """Before the controller has created its metadata log there is nothing to read."""
    assert fencing_changes(tmp_path / "__cluster_metadata-0") == []


def test_a_compressed_batch_is_refused_rather_than_misread(tmp_path: Path) -> None:
    """Compressed records (``metadata.log`` compression is off by default) are not decoded: an
    error, not a silently empty answer."""
    partition = _log(tmp_path, _batch(0, [_other_record()], attributes=0x01))

    with pytest.raises(MetadataLogError, match="compressed"):
        fencing_changes(partition)
