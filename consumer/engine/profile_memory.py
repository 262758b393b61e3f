"""The in-memory form of profile values: their changelog bytes, or those bytes compressed with a
zstd dictionary trained on the process's own profiles.

A profile's changelog value is a few hundred bytes (``consumer.domain.profile_codec``); values
that small do not compress on their own, but most of their bytes (tags, field layout, currencies,
product and order id prefixes) repeat from one user to the next, which a dictionary captures:
measured on an attributed app purchase's profile (266 B), 144 B held with a 16 KiB dictionary
trained on 4,096 of them (a minimal one, 156 B: 69 B), at about 1.3 us per compression (zstd
level 2; 0.9 us in a batch) and under 1 us per decompression. The changelog itself is untouched:
what is written to and read from Kafka stays the same bytes; only what the ``ProfileStore`` holds
between the two is compressed.

Held form, one of:

- the raw changelog value, as written: it starts with a profile format version (1 to 7) or the
  owner-epoch envelope's ``STAMP_MARKER`` (``consumer.domain.profile_epoch``);
- compressed: the raw value's header in a compact form, then the rest of the value as a zstd
  frame (magicless, with its content size, no checksum or dictionary id) compressed with the
  process's dictionary::

      byte 0      0xF0 | 0x08 if stamped | format version (1 to 7): 0xF1-0xF7, 0xF9-0xFF,
                  never the first byte of a changelog value
      [stamped]   the owner epoch, an unsigned LEB128 varint (1 byte below 128)
      6 bytes     expires_at, epoch ms, unsigned big-endian
      rest        the zstd frame of the value after its header

  A value whose header does not fit that form (a later format version, an expiry outside 0 to
  2**48 ms) is held raw. The compact header saves 3 to 7 bytes a value against the raw one,
  which matters at these sizes: Python's allocator rounds each ``bytes`` to 16.

The header stays readable, so the expiry sweep and the restore's epoch checks read a held value
without decompressing it (``expires_at``, ``epoch_of``).

One dictionary per process, trained once from the bodies of the first ``train_after`` values
held (a restore's or writes', whichever come first) and never replaced: every value compressed
with it must stay readable. Values held before it exists stay raw until they are written again;
a process that never holds ``train_after`` values never trains (a small merchant pays nothing).
Training takes about 0.1 s on the thread that holds the ``train_after``-th value (the restore's,
or the event loop's when profiles come from writes); values held meanwhile on other threads stay
raw. If training fails (zstd refuses the samples), every value stays raw.

Thread-safe: the restore's thread and the event loop's hold and read values at once; each thread
has its own compression contexts (zstd's are not safe to share), over the one dictionary.
"""

from __future__ import annotations

import struct
import threading
import time

import structlog
import zstandard

from consumer.domain.profile_codec import ProfileDecodeError, read_expires_at
from consumer.domain.profile_epoch import STAMP_MARKER, epoch_of

log = structlog.get_logger("consumer.profiles")

HELD_ZSTD = 0xF0
"""The high nibble of the first byte of a held, compressed value (its low bits: stamped and
the format version). Neither a profile format version (1 to 7, and any later one is a small
integer) nor ``STAMP_MARKER`` starts with it. It never reaches the changelog."""

TRAIN_AFTER = 4096
"""Values whose bodies train the dictionary (measured: 1,024 to 8,192 samples give the same
size within 2 B on attributed purchases; training time grows with them, about 0.1 s at 4,096)."""

DICTIONARY_BYTES = 16 * 1024
"""The dictionary's size (4 to 32 KiB measured the same within 2 B; 16 KiB leaves room for
merchants whose profiles vary more than the bench's)."""

LEVEL = 2
"""zstd's compression level: 2 compresses a value in 0.9 us against 3's 1.3 (an attributed
purchase's profile; a minimal one: 0.61 against 0.66) and holds it in 1 B more (the allocator's
rounding included); 1 is barely faster (0.86 us) and holds attributed profiles in 9 B more; 6
to 19 are no smaller, and several times slower."""

_RAW = struct.Struct(">Bq")  # the raw header: format version, expires_at
_STAMPED = struct.Struct(">BIBq")  # the envelope's marker and epoch, then the raw header
_STAMPED_BIT = 0x08
_MAX_VERSION = 7
_BYTE = tuple(bytes((b,)) for b in range(256))
_MIN_BODY = 16  # shorter bodies are held raw: the frame's own header would outweigh any gain
_BATCH_CALL = 100
"""Values from which ``hold_all`` compresses in one call: a call costs about 28 us more than
single compressions, as much as a hundred values' GIL hand-overs save."""
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS


def is_compressed(held: bytes) -> bool:
    """Whether a held value is in the compressed form (else it is the changelog value)."""
    return bool(held) and held[0] & 0xF0 == HELD_ZSTD


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _split(value: bytes) -> tuple[bytes, int] | None:
    """(the compact header, where the body starts) of a changelog value, or None when its
    header has no compact form. Slices rather than unpacks: a restore splits a million."""
    first = value[0]
    if first == STAMP_MARKER:
        version = value[5]
        # expires_at's two high bytes zero: 0 <= expires_at < 2**48.
        if not 1 <= version <= _MAX_VERSION or value[6] or value[7]:
            return None
        epoch = int.from_bytes(value[1:5])
        varint = _BYTE[epoch] if epoch < 0x80 else _varint(epoch)
        return _BYTE[HELD_ZSTD | _STAMPED_BIT | version] + varint + value[8:14], _STAMPED.size
    if not 1 <= first <= _MAX_VERSION or value[1] or value[2]:
        return None
    return _BYTE[HELD_ZSTD | first] + value[3:9], _RAW.size


def _joined(head: bytes, frame: bytes, value: bytes) -> bytes:
    """The compressed held form, or ``value`` itself when that is not smaller."""
    held = head + frame
    return held if len(held) < len(value) else value


def _compact_header(held: bytes) -> tuple[int, int | None, int, int]:
    """(format version, epoch or None when unstamped, expires_at, where the frame starts) of a
    compressed held value."""
    first = held[0]
    pos = 1
    epoch = None
    if first & _STAMPED_BIT:
        epoch = shift = 0
        while True:
            byte = held[pos]
            pos += 1
            epoch |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
    return first & 0x07, epoch, int.from_bytes(held[pos : pos + 6]), pos + 6


class ProfileMemory:
    """Turns changelog values into their held form (``hold``) and back (``raw``).

    Args:
        train_after: values held before the dictionary is trained from their bodies (at least
            1); the dictionary is trained once, from these.
        dictionary_bytes: the dictionary's size in bytes.
        level: zstd's compression level.
    """

    __slots__ = (
        "_dictionary",
        "_dictionary_bytes",
        "_level",
        "_local",
        "_lock",
        "_samples",
        "_train_after",
        "compressed",
    )

    def __init__(
        self,
        *,
        train_after: int = TRAIN_AFTER,
        dictionary_bytes: int = DICTIONARY_BYTES,
        level: int = LEVEL,
    ) -> None:
        if train_after < 1:
            raise ValueError("train_after must be at least 1")
        self._train_after = train_after
        self._dictionary_bytes = dictionary_bytes
        self._level = level
        self._lock = threading.Lock()
        self._samples: list[bytes | bytearray | memoryview] | None = []
        """Bodies collected for training; None once taken (training or trained)."""
        self._dictionary: zstandard.ZstdCompressionDict | None = None
        self._local = threading.local()
        self.compressed = False
        """Whether the dictionary exists (values held from now on are compressed)."""

    def hold(self, value: bytes) -> bytes:
        """The held form of a changelog value (a profile value, stamped or not, whose header a
        restore or the codec has checked): compressed once the dictionary exists and when that
        is smaller, else ``value`` itself."""
        if len(value) < _STAMPED.size + _MIN_BODY:
            return value
        dictionary = self._dictionary
        if dictionary is None:
            if self._samples is not None:
                self._sample(value)
            dictionary = self._dictionary
            if dictionary is None:
                return value
        split = _split(value)
        if split is None:
            return value
        head, start = split
        return _joined(head, self._contexts(dictionary)[0].compress(value[start:]), value)

    def hold_all(self, values: list[bytes]) -> list[bytes]:
        """``hold`` of each of ``values``, in order, compressing them in one call once the
        dictionary exists: a restore holds a million values, and zstd releases the GIL for
        each call, which costs a hand-over to any other thread waiting for it (measured: a
        million single calls beside an event loop waking every millisecond took 0.9 s more)."""
        dictionary = self._dictionary
        if dictionary is None:
            return [self.hold(v) for v in values]
        compressor = self._contexts(dictionary)[0]
        heads: list[bytes] = []
        bodies: list[bytes | bytearray | memoryview] = []
        chosen: list[int] = []
        held = list(values)
        for i, value in enumerate(values):
            split = _split(value) if len(value) >= _STAMPED.size + _MIN_BODY else None
            if split is not None:
                head, start = split
                heads.append(head)
                bodies.append(value[start:])
                chosen.append(i)
        if not bodies:
            return held
        if len(bodies) < _BATCH_CALL:
            frames = [compressor.compress(body) for body in bodies]
        else:
            collection = compressor.multi_compress_to_buffer(bodies, threads=1)
            frames = [collection[j].tobytes() for j in range(len(collection))]
        for j, i in enumerate(chosen):
            held[i] = _joined(heads[j], frames[j], values[i])
        return held

    def raw(self, held: bytes) -> bytes:
        """The changelog value a held value stands for, byte for byte.

        Raises:
            ProfileDecodeError: a compressed value that does not decompress.
        """
        if not is_compressed(held):
            return held
        dictionary = self._dictionary
        if dictionary is None:
            raise ProfileDecodeError("held profile compressed without a dictionary")
        try:
            version, epoch, expires_at, start = _compact_header(held)
            body = self._contexts(dictionary)[1].decompress(held[start:])
        except (IndexError, zstandard.ZstdError) as exc:
            raise ProfileDecodeError(f"held profile does not decompress: {exc}") from exc
        if epoch is None:
            return _RAW.pack(version, expires_at) + body
        return _STAMPED.pack(STAMP_MARKER, epoch, version, expires_at) + body

    def epoch_of(self, held: bytes) -> int:
        """The owner epoch a held value was written with (``profile_epoch.epoch_of``), from its
        header alone."""
        if not is_compressed(held):
            return epoch_of(held)
        return _compact_header(held)[1] or 0

    def expires_at(self, held: bytes) -> int:
        """The held value's ``expires_at`` (epoch ms), from its header alone.

        Raises:
            ProfileDecodeError: too short, or a format version this code does not know.
        """
        if not is_compressed(held):
            return read_expires_at(held)
        return _compact_header(held)[2]

    def _sample(self, value: bytes) -> None:
        with self._lock:
            samples = self._samples
            if samples is None:
                return  # taken: training on another thread, or trained
            start = _STAMPED.size if value[0] == STAMP_MARKER else _RAW.size
            samples.append(value[start:])
            if len(samples) < self._train_after:
                return
            self._samples = None
        self._train(samples)

    def _train(self, samples: list[bytes | bytearray | memoryview]) -> None:
        started = time.perf_counter()
        try:
            dictionary = zstandard.train_dictionary(self._dictionary_bytes, samples)
        except zstandard.ZstdError as exc:
            log.warning("profile_dictionary_untrained", samples=len(samples), error=str(exc))
            return
        self._dictionary = dictionary
        self.compressed = True
        log.info(
            "profile_dictionary_trained",
            samples=len(samples),
            dictionary_bytes=len(dictionary.as_bytes()),
            seconds=round(time.perf_counter() - started, 3),
        )

    def _contexts(
        self, dictionary: zstandard.ZstdCompressionDict
    ) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        """This thread's compressor and decompressor over ``dictionary`` (the only one)."""
        contexts: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(
            self._local, "contexts", None
        )
        if contexts is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                self._level,
                format=_FORMAT,
                write_content_size=1,
                write_checksum=0,
                write_dict_id=0,
            )
            contexts = (
                zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params),
                zstandard.ZstdDecompressor(dict_data=dictionary, format=_FORMAT),
            )
            self._local.contexts = contexts
        return contexts
