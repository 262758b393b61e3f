"""The per-user profile: codec round-trip, versioning, retention, and the partitioned store."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import (
    FORMAT_VERSION,
    ChangelogWrite,
    OrderStatus,
    Profile,
    ProfileDecodeError,
    ProfileStore,
    Retention,
    Stamped,
    StoredLine,
    StoredOrder,
    decode_profile,
    encode_profile,
    epoch_ms,
    expires_at_ms,
    prune,
    read_expires_at,
)

DAY = 86_400_000
RETENTION = Retention(btn_ref_ms=7 * DAY, device_id_ms=30 * DAY, order_ms=60 * DAY)

texts = st.text(max_size=12)
ints = st.integers(min_value=-(2**40), max_value=2**40)
lines = st.builds(
    StoredLine,
    identifier=texts,
    quantity=st.integers(min_value=0, max_value=1000),
    price=st.none() | st.decimals(places=6, allow_nan=False, allow_infinity=False).map(str),
    sku=st.none() | texts,
    description=st.none() | texts,
    category=st.lists(texts, max_size=3).map(tuple),
    attributes=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
)
orders = st.builds(
    StoredOrder,
    order_id=texts,
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
    purchase_ms=ints,
    total=ints,
    lines=st.lists(lines, max_size=3).map(tuple),
    status=st.sampled_from(OrderStatus),
    created_by=texts,
    refunds=st.lists(texts, max_size=3).map(tuple),
    btn_ref=st.none() | texts,
    touched_ms=ints,
    btn_ref_source=st.none() | st.sampled_from(TokenSource),
)
stamped = st.none() | st.builds(Stamped, texts, ints)
profiles = st.builds(
    Profile,
    btn_ref=st.none() | st.builds(ResolvedToken, texts, st.sampled_from(TokenSource), ints),
    idfa=stamped,
    gaid=stamped,
    orders=st.lists(orders, max_size=3).map(tuple),
)


def typical_profile() -> Profile:
    line = StoredLine("SKU-RED-M", 2, "29.99", "SKU-RED-M", "Red shirt, M", ("Apparel",))
    order = StoredOrder(
        "ORD-100045",
        "USD",
        1_714_572_202_000,
        5998,
        (line,),
        OrderStatus.OPEN,
        "evt-1",
        (),
        "srctok-0123456789abcdef",
        1_714_572_202_000,
    )
    return Profile(
        btn_ref=ResolvedToken("srctok-0123456789abcdef", TokenSource.URL, 1_714_500_000_000),
        idfa=Stamped("6D92078A-8246-4BA4-AE5B-76104861E7DC", 1_714_500_000_000),
        orders=(order,),
    )


@given(profiles, ints)
def test_encode_decode_round_trip(profile: Profile, expires: int) -> None:
    """decode(encode(p)) == p, and the header carries the expiry."""
    value = encode_profile(profile, expires)
    assert profile == decode_profile(value)
    assert expires == read_expires_at(value)


def test_format_is_versioned() -> None:
    """Byte 0 is the format version; unknown versions are refused, not guessed."""
    value = encode_profile(typical_profile(), 0)
    assert value[0] == FORMAT_VERSION
    with pytest.raises(ProfileDecodeError):
        decode_profile(bytes([FORMAT_VERSION + 1]) + value[1:])


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x01",
        struct.pack(">Bq", 1, 0) + b"not json",
        struct.pack(">Bq", 1, 0) + b"[1,2]",
        struct.pack(">Bq", 1, 0) + b'[null,null,null,[["o","USD",1,1,9,"e",[],null,1,[],null]]]',
        struct.pack(">Bq", 1, 0) + b"\xff\xfe",
    ],
)
def test_corrupt_values_raise_decode_error(value: bytes) -> None:
    """Corrupt changelog bytes raise ProfileDecodeError (never a random exception)."""
    with pytest.raises(ProfileDecodeError):
        decode_profile(value)


def test_typical_profile_is_compact() -> None:
    """A typical profile (token, IDFA, one order with one line) encodes in well under 400 B."""
    assert len(encode_profile(typical_profile(), 0)) < 400


def test_no_plaintext_email_can_be_stored() -> None:
    """The profile has no field for an email at all."""
    assert not any("email" in name for name in Profile.__slots__)


def test_expiry_is_the_latest_useful_part() -> None:
    """A profile lives until its last part (token, device id or order) expires."""
    p = typical_profile()
    assert p.orders[0].touched_ms + RETENTION.order_ms == expires_at_ms(p, RETENTION)


def test_prune_drops_only_expired_parts() -> None:
    """After the attribution window the token goes; the order stays while Button may change it."""
    p = typical_profile()
    now = p.btn_ref.seen_at_ms + RETENTION.btn_ref_ms + 1  # type: ignore[union-attr]
    pruned = prune(p, now, RETENTION)
    assert pruned.btn_ref is None
    assert p.idfa == pruned.idfa
    assert p.orders == pruned.orders
    assert p is prune(p, p.orders[0].touched_ms, RETENTION)


def test_epoch_ms_requires_aware_datetimes() -> None:
    """Naive datetimes are refused; aware ones convert exactly."""
    assert epoch_ms(datetime(2024, 5, 1, 14, 3, 22, 123_999, tzinfo=UTC)) == 1_714_572_202_123
    assert epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1
    with pytest.raises(ValueError, match="timezone-aware"):
        epoch_ms(datetime(2024, 5, 1))


def test_store_put_get_and_partitions() -> None:
    """Profiles are grouped by partition; put returns the changelog value."""
    store = ProfileStore(RETENTION)
    p = typical_profile()
    value = store.put(3, b"user-1", p)
    assert value is not None
    assert p == decode_profile(value)
    assert p == store.get(3, b"user-1")
    assert store.get(4, b"user-1") is None
    assert len(store) == 1
    store.drop_partition(3)
    assert store.get(3, b"user-1") is None
    assert len(store) == 0


def test_putting_an_empty_profile_deletes_it() -> None:
    """An empty profile becomes a tombstone (None)."""
    store = ProfileStore(RETENTION)
    store.put(0, b"k", typical_profile())
    assert store.put(0, b"k", Profile()) is None
    assert store.get(0, b"k") is None


def test_restore_applies_values_and_tombstones() -> None:
    """Restoring replays the changelog: the last value wins, None deletes."""
    store = ProfileStore(RETENTION)
    value = encode_profile(typical_profile(), 0)
    store.restore(1, b"k", value)
    assert typical_profile() == store.get(1, b"k")
    store.restore(1, b"k", None)
    assert store.get(1, b"k") is None
    with pytest.raises(ProfileDecodeError):
        store.restore(1, b"k", b"\x09" + value[1:])


def test_expire_returns_tombstones() -> None:
    """Profiles whose every part expired are removed and reported as tombstones."""
    store = ProfileStore(RETENTION)
    p = typical_profile()
    store.put(0, b"old", p)
    fresh = Profile(idfa=Stamped("ABC", 1_900_000_000_000))
    store.put(1, b"new", fresh)
    now = datetime.fromtimestamp((expires_at_ms(p, RETENTION) + 1) / 1000, tz=UTC)
    assert [ChangelogWrite(0, b"old", None)] == store.expire(now)
    assert store.get(0, b"old") is None
    assert fresh == store.get(1, b"new")
    assert store.expire(now) == []


def test_expire_can_be_limited_to_partitions() -> None:
    """Expiry can scan one partition at a time."""
    store = ProfileStore(RETENTION)
    store.put(0, b"a", typical_profile())
    store.put(1, b"b", typical_profile())
    later = datetime(2100, 1, 1, tzinfo=UTC)
    assert store.expire(later, [1]) == [ChangelogWrite(1, b"b", None)]
    assert store.count(0) == 1
