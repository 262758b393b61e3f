"""Profiles held compressed in memory (``consumer.engine.profile_memory``).

A held value is either the changelog value itself or its header in a compact form (first byte
``HELD_ZSTD | stamped | version``) then a zstd frame compressed with the process's dictionary,
trained once from the first values held. Whatever the
form, reading it back gives the changelog bytes exactly, and its epoch and expiry are read from
the header alone.
"""

from __future__ import annotations

import os
import random
import struct
import threading
import tracemalloc
import uuid
from datetime import UTC, datetime

import pytest

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import (
    OrderStatus,
    Profile,
    Retention,
    Stamped,
    StoredCustomer,
    StoredLine,
    StoredOrder,
    epoch_ms,
)
from consumer.domain.profile_codec import (
    ProfileDecodeError,
    decode_profile,
    encode_profile,
    read_expires_at,
    restored_epoch,
)
from consumer.domain.profile_epoch import STAMP_MARKER, Tombstone, epoch_of, stamp, unstamp
from consumer.engine.profile_memory import HELD_ZSTD, TRAIN_AFTER, ProfileMemory, is_compressed
from consumer.engine.profiles import ProfileStore

DAY = 86_400_000
SAMPLES = 512


def user_profile(i: int) -> Profile:
    """The ``i``-th user's profile after an attributed purchase: identifiers of their own
    (token, IDFA, order id, customer, times), drawn from a generator seeded with ``i``."""
    draw = random.Random(i)
    at = 1_714_500_000_000 + draw.randrange(3 * DAY)
    token = f"srctok-{draw.getrandbits(64):016x}"
    quantity = 1 + draw.randrange(3)
    line = StoredLine("SKU-RED-M", quantity, "29.99", "SKU-RED-M", "Red shirt, M", ("Apparel",))
    customer = StoredCustomer(
        f"cust-{draw.randrange(10**7):07d}", f"{draw.getrandbits(256):064x}", "idfa"
    )
    order = StoredOrder(
        f"ORD-{100_000 + i}",
        "USD",
        at,
        2999 * quantity,
        (line,),
        OrderStatus.OPEN,
        f"evt-{draw.getrandbits(64):016x}",
        (),
        token,
        at,
        customer=customer,
    )
    idfa = str(uuid.UUID(int=draw.getrandbits(128), version=4)).upper()
    return Profile(
        tokens=(ResolvedToken(token, TokenSource.URL, at - 60_000),),
        idfas=(Stamped(idfa, at),),
        orders=(order,),
    )


def value(i: int, epoch: int = 0) -> bytes:
    """The ``i``-th user's changelog value (stamped with ``epoch`` unless 0)."""
    return stamp(encode_profile(user_profile(i), 1_720_000_000_000 + i), epoch)


def trained(samples: int = SAMPLES) -> ProfileMemory:
    memory = ProfileMemory(train_after=samples)
    for i in range(samples):
        memory.hold(value(i))
    assert memory.compressed
    return memory


def test_a_held_value_reads_back_byte_for_byte_raw_or_compressed() -> None:
    """Once trained, values (stamped or not) are held compressed, smaller by a third or more,
    and read back as the exact changelog bytes; their epoch and expiry come from the header."""
    memory = trained()
    epochs = (0, 1, 127, 128, 70_000, 2**32 - 1)
    values = [value(i, epoch=epochs[i % 6]) for i in range(SAMPLES, 2 * SAMPLES)]
    held = [memory.hold(v) for v in values]

    assert all(is_compressed(h) for h in held)
    assert [memory.raw(h) for h in held] == values
    assert sum(map(len, held)) < 0.7 * sum(map(len, values))
    assert [memory.epoch_of(h) for h in held] == [epoch_of(v) for v in values]
    assert [memory.expires_at(h) for h in held] == [read_expires_at(v) for v in values]
    assert decode_profile(memory.raw(held[0])) == user_profile(SAMPLES)


@pytest.mark.parametrize("size", [10, 500])
def test_a_batch_held_at_once_is_held_as_each_value_alone(size: int) -> None:
    """``hold_all`` (a restore's batch: single calls below ``_BATCH_CALL``, one call above)
    gives what ``hold`` gives each value, raw ones included, in order."""
    memory = trained()
    short = value(0)[:9] + b"\xa0"
    values = [value(i, epoch=i % 2) for i in range(SAMPLES, SAMPLES + size)] + [short]

    held = memory.hold_all(values)

    assert held == [memory.hold(v) for v in values]
    assert [memory.raw(h) for h in held] == values
    assert held[-1] is short


def test_a_batch_before_the_dictionary_trains_it_midway() -> None:
    """Before the dictionary exists, a batch's values are sampled one by one: those before the
    ``train_after``-th stay raw, the later ones are compressed."""
    memory = ProfileMemory(train_after=SAMPLES)
    values = [value(i) for i in range(SAMPLES + 100)]

    held = memory.hold_all(values)

    assert all(h is v for h, v in zip(held[: SAMPLES - 1], values, strict=False))
    assert all(is_compressed(h) for h in held[SAMPLES - 1 :])
    assert [memory.raw(h) for h in held] == values


def test_the_marker_starts_no_changelog_value() -> None:
    """A compressed value's first byte (``HELD_ZSTD`` high nibble) is neither a profile format
    version nor the epoch envelope's marker, so a changelog value is never taken for a
    compressed one: any other first byte reads back as is."""
    starts = {*range(1, 8), STAMP_MARKER}
    assert not any(is_compressed(bytes([first])) for first in starts)
    for first in range(HELD_ZSTD, 256):
        with pytest.raises(ProfileDecodeError, match=f"unsupported profile format version {first}"):
            restored_epoch(bytes([first]) + bytes(40))
    memory = trained()
    for first in range(HELD_ZSTD):
        raw = bytes([first]) + os.urandom(40)
        assert memory.raw(raw) is raw


def test_values_held_before_the_dictionary_stay_raw_and_read_back() -> None:
    """Until the ``train_after``-th value the values are held as they are; they stay readable
    (raw) after the dictionary exists, and the same value held again is compressed."""
    memory = ProfileMemory(train_after=SAMPLES)
    before = [value(i) for i in range(SAMPLES - 1)]
    assert all(memory.hold(v) is v for v in before)
    assert not memory.compressed

    memory.hold(value(SAMPLES - 1))

    assert memory.compressed
    assert all(memory.raw(v) is v for v in before)
    assert is_compressed(memory.hold(before[0]))


def test_a_memory_that_never_reaches_its_samples_never_trains() -> None:
    """A process holding fewer than ``TRAIN_AFTER`` profiles (a small merchant) never trains a
    dictionary: every value is held as it is."""
    memory = ProfileMemory()
    values = [value(i) for i in range(TRAIN_AFTER - 1)]

    assert all(memory.hold(v) is v for v in values)
    assert not memory.compressed


def test_a_dictionary_zstd_refuses_to_train_leaves_every_value_raw() -> None:
    """One sample is too few for zstd's trainer: the memory gives up and holds values raw."""
    memory = ProfileMemory(train_after=1)
    values = [value(i) for i in range(3)]

    assert all(memory.hold(v) is v for v in values)
    assert not memory.compressed


def test_values_that_would_not_shrink_or_whose_header_has_no_compact_form_stay_raw() -> None:
    """A body shorter than a frame's overhead, one that does not compress (random bytes), a
    later format version or an expiry outside 0 to 2**48 ms: held as it is."""
    memory = trained()
    body = value(0)[9:]
    short = value(0)[:9] + b"\xa0"
    noise = value(0)[:9] + os.urandom(200)
    later = bytes([8]) + value(0)[1:]
    for kept in (short, noise, later):
        assert memory.hold(kept) is kept
    for expires_at in (-1, 2**48):
        odd = struct.pack(">Bq", 6, expires_at) + body
        assert memory.hold(odd) is odd
    assert is_compressed(memory.hold(struct.pack(">Bq", 6, 2**48 - 1) + body))


def test_threads_hold_and_read_at_once() -> None:
    """The restore's thread and the event loop hold and read values at the same time: each
    thread compresses with its own contexts, and every value reads back exactly."""
    memory = trained()
    start = threading.Barrier(2)
    failures: list[int] = []

    def work(offset: int) -> None:
        values = [value(i) for i in range(offset, offset + 1000)]
        start.wait(timeout=30)
        for i, v in enumerate(values):
            if memory.raw(memory.hold(v)) != v:
                failures.append(offset + i)

    threads = [threading.Thread(target=work, args=(o,)) for o in (10_000, 20_000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not any(t.is_alive() for t in threads)
    assert failures == []


def test_a_held_value_that_does_not_decompress_is_a_decode_error() -> None:
    memory = trained()
    held = memory.hold(value(SAMPLES))

    with pytest.raises(ProfileDecodeError, match="does not decompress"):
        memory.raw(held[:-4])


# --- the store, through its public API ------------------------------------------------------

RETENTION = Retention(btn_ref_ms=7 * DAY, device_id_ms=30 * DAY, order_ms=60 * DAY)


def key(i: int) -> bytes:
    return str(uuid.UUID(int=i)).encode()


def test_the_store_writes_the_same_changelog_bytes_and_reads_them_back_once_trained() -> None:
    """The changelog is untouched: a store holding compressed values returns the records a
    store holding raw ones does, and reads back each value's exact bytes and profile. A store
    that never reaches ``TRAIN_AFTER`` profiles never compresses."""
    compressing = ProfileStore(RETENTION, memory=ProfileMemory(train_after=SAMPLES))
    plain = ProfileStore(RETENTION)
    writes = []
    for i in range(2 * SAMPLES):
        written = compressing.write(0, key(i), user_profile(i))
        assert written == plain.write(0, key(i), user_profile(i))
        writes.append(written)

    assert (compressing.memory.compressed, plain.memory.compressed) == (True, False)
    assert [compressing.get_encoded(0, key(i)) for i in range(2 * SAMPLES)] == [
        w.value for w in writes
    ]
    assert all(compressing.get(0, key(i)) == plain.get(0, key(i)) for i in range(2 * SAMPLES))


def _restored_bytes(store: ProfileStore, partition: int, first: int, count: int) -> int:
    """Bytes allocated by restoring ``count`` fresh values into ``partition`` (tracemalloc)."""
    values = [value(i) for i in range(first, first + count)]
    restore = store.restoring(partition)
    tracemalloc.start()
    try:
        # Copies, as a restore's values are fresh objects from Kafka, not the test's.
        restore.apply((key(i), bytes(v)) for i, v in enumerate(values, first))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    store.install(restore)
    return held


def test_a_restored_partition_is_held_in_less_memory_once_trained() -> None:
    """The memory a restore holds (values, keys, the table) once the dictionary is trained:
    under 80 % of what the same profiles take held raw."""
    compressing = ProfileStore(RETENTION, memory=ProfileMemory(train_after=SAMPLES))
    plain = ProfileStore(RETENTION)
    for store in (compressing, plain):
        _restored_bytes(store, 0, 0, SAMPLES)

    held = _restored_bytes(compressing, 1, SAMPLES, 2000)
    raw = _restored_bytes(plain, 1, SAMPLES, 2000)

    assert compressing.memory.compressed
    assert held < 0.8 * raw, (held, raw)


def test_a_restore_fences_by_the_epoch_of_a_compressed_held_value() -> None:
    """A former owner's late value or tombstone (a lower epoch) after a compressed held value
    is ignored, and the repair after the claim writes the held profile stamped anew."""
    store = ProfileStore(RETENTION, memory=ProfileMemory(train_after=SAMPLES))
    for i in range(SAMPLES):
        store.restore(0, key(i), value(i))
    rightful = value(SAMPLES, epoch=5)

    restore = store.restoring(1)
    restore.apply([(key(1), rightful), (key(1), value(SAMPLES + 1, epoch=3))])
    restore.apply([(key(1), Tombstone(4))])
    store.install(restore)

    assert (store.fenced, store.get_encoded(1, key(1))) == (2, rightful)
    assert store.claim_epoch(1) == 6
    (repair,) = store.repairs(1)
    assert repair.value == stamp(unstamp(rightful), 6)
    assert store.get_encoded(1, key(1)) == repair.value


def test_expiry_reads_the_expiry_of_compressed_held_values() -> None:
    """The sweep finds the expired profiles among compressed values from their headers alone:
    it removes exactly those and keeps the rest readable."""
    store = ProfileStore(RETENTION, memory=ProfileMemory(train_after=SAMPLES))
    now = datetime(2026, 12, 3, tzinfo=UTC)
    past, future = epoch_ms(now) - DAY, epoch_ms(now) + DAY
    values = {
        key(i): encode_profile(user_profile(i), past if i % 2 else future)
        for i in range(2 * SAMPLES)
    }
    for k, v in values.items():
        store.restore(0, k, v)

    tombstones = store.expire(now)

    assert store.memory.compressed
    assert sorted(t.key for t in tombstones) == sorted(key(i) for i in range(1, 2 * SAMPLES, 2))
    assert all(store.get_encoded(0, key(i)) == values[key(i)] for i in range(0, 2 * SAMPLES, 2))
