"""Properties of profiles held compressed (``consumer.engine.profile_memory``), drawn by
hypothesis: whatever the changelog value (format version 1 to 7, stamped or not, any epoch, any
expiry, any body), and whatever the dictionary was trained on, the held form reads back the same
bytes, and its epoch and expiry read from the header alone agree with the changelog value's.
"""

from __future__ import annotations

import random
import struct
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.domain.profile_codec import read_expires_at
from consumer.domain.profile_epoch import MAX_EPOCH, STAMP_MARKER, epoch_of
from consumer.engine.profile_memory import ProfileMemory, is_compressed

_HEADER = struct.Struct(">Bq")


def _realistic_body(draw: random.Random) -> bytes:
    """A body shaped like a packed profile: repeating tags and ids, some of them random."""
    parts = [
        b"\xa6\x91\xa3\x96srctok-",
        f"{draw.getrandbits(64):016x}".encode(),
        b"\xc4",
        draw.getrandbits(128).to_bytes(16),
        b"\x91\xab\x8aORD-",
        str(draw.randrange(10**6)).encode(),
        b"\x83USD\xc3",
        draw.randrange(2**40).to_bytes(6),
        b"\x89SKU-RED-M\x8cRed shirt, M",
    ]
    return b"".join(parts)


def _trained_on(seed: int, samples: int = 512) -> ProfileMemory:
    """A memory whose dictionary was trained on realistic version 4 values."""
    draw = random.Random(seed)
    memory = ProfileMemory(train_after=samples)
    for _ in range(samples):
        memory.hold(_HEADER.pack(4, 1_720_000_000_000) + _realistic_body(draw))
    assert memory.compressed
    return memory


TRAINED = _trained_on(1)

_EXPIRIES = st.one_of(
    st.sampled_from([0, -1, -(2**63), 2**48 - 1, 2**48, 2**48 + 1, 2**63 - 1, 1]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=0, max_value=2**48 - 1),
)
_EPOCHS = st.one_of(
    st.sampled_from(
        [0, 1, 127, 128, 2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**28 - 1, 2**28, MAX_EPOCH]
    ),
    st.integers(min_value=0, max_value=MAX_EPOCH),
)
_BODIES = st.one_of(
    st.binary(min_size=0, max_size=64),
    st.integers(min_value=0, max_value=2**32).map(lambda s: _realistic_body(random.Random(s))),
    st.tuples(st.integers(min_value=0, max_value=2**32), st.binary(max_size=40)).map(
        lambda t: _realistic_body(random.Random(t[0])) + t[1]
    ),
    st.integers(min_value=0, max_value=40).map(lambda n: b"\x00" * n),
)


@st.composite
def changelog_values(draw: st.DrawFn) -> bytes:
    """A changelog value the store may hold: a format version 1 to 7 header, in the epoch
    envelope or not (the envelope with epoch 0 included, which ``stamp`` never writes)."""
    version = draw(st.integers(min_value=1, max_value=7))
    value = _HEADER.pack(version, draw(_EXPIRIES)) + draw(_BODIES)
    if draw(st.booleans()):
        value = struct.pack(">BI", STAMP_MARKER, draw(_EPOCHS)) + value
    return value


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changelog_values())
def test_a_held_value_reads_back_with_its_epoch_and_expiry(value: bytes) -> None:
    held = TRAINED.hold(value)

    assert TRAINED.raw(held) == value
    assert TRAINED.epoch_of(held) == epoch_of(value)
    assert TRAINED.expires_at(held) == read_expires_at(value)
    assert len(held) <= len(value)
    if is_compressed(held):
        assert len(held) < len(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(changelog_values(), min_size=0, max_size=250))
def test_a_batch_is_held_as_each_value_alone(values: list[bytes]) -> None:
    """``hold_all`` (one call from 100 values) and ``hold`` give the same held forms."""
    held = TRAINED.hold_all(values)

    assert [TRAINED.raw(h) for h in held] == values
    assert held == [TRAINED.hold(v) for v in values]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(changelog_values(), min_size=8, max_size=40),
    st.lists(changelog_values(), min_size=1, max_size=40),
)
def test_a_dictionary_trained_on_other_values_still_reads_back(
    training: list[bytes], later: list[bytes]
) -> None:
    """A dictionary trained on whatever came first (noise, zeros, realistic bodies) holds
    every later value so that it reads back; values held before it stay raw and read back."""
    memory = ProfileMemory(train_after=len(training))
    early = [memory.hold(v) for v in training]
    assert [memory.raw(h) for h in early] == training
    for v in later:
        held = memory.hold(v)
        assert memory.raw(held) == v
        assert memory.expires_at(held) == read_expires_at(v)
        assert memory.epoch_of(held) == epoch_of(v)


def test_threads_hold_and_read_while_another_trains_the_dictionary() -> None:
    """The restore's thread trains the dictionary (the ``train_after``-th value is its) while
    two others, as the event loop, hold and read values: every value reads back, whether it
    was held before, during or after the training."""
    memory = ProfileMemory(train_after=4096)
    draw = random.Random(7)
    trainer_values = [
        _HEADER.pack(4, 1_720_000_000_000) + _realistic_body(draw) for _ in range(4096)
    ]
    others = [
        [
            struct.pack(">BIBq", STAMP_MARKER, 300 + t, 6, 2**48 - 1) + _realistic_body(draw)
            for _ in range(3000)
        ]
        for t in range(2)
    ]
    start = threading.Barrier(3)
    failures: list[bytes] = []
    kept: list[list[bytes]] = [[], []]

    def hold_and_read(t: int) -> None:
        start.wait(timeout=30)
        for v in others[t]:
            held = memory.hold(v)
            kept[t].append(held)
            if memory.raw(held) != v or memory.epoch_of(held) != 300 + t:
                failures.append(v)

    def restore() -> None:
        start.wait(timeout=30)
        memory.hold_all(trainer_values)

    threads = [threading.Thread(target=hold_and_read, args=(t,)) for t in (0, 1)]
    threads.append(threading.Thread(target=restore))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert memory.compressed
    for t in (0, 1):
        assert [memory.raw(h) for h in kept[t]] == others[t]
