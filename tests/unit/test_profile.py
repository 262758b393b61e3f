"""The per-user profile: codec round-trip, versioning, retention, and the partitioned store."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import fields, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import (
    OrderStatus,
    ParkedOrder,
    Profile,
    Retention,
    Stamped,
    StoredCustomer,
    StoredLine,
    StoredOrder,
    StoredRefund,
    epoch_ms,
    expires_at_ms,
    prune,
)
from consumer.domain.profile_codec import (
    FORMAT_VERSION,
    ProfileDecodeError,
    _pack,
    _to_json,
    _unpack,
    decode_profile,
    encode_profile,
    read_expires_at,
    restored_epoch,
)
from consumer.domain.profile_epoch import FENCE_KEY, epoch_of, fence_value, stamp
from consumer.engine.profiles import ChangelogWrite, ProfileStore

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
    refunds=st.lists(
        st.builds(
            StoredRefund,
            event_id=texts,
            event_ms=ints,
            products=st.lists(st.tuples(texts, ints), max_size=2).map(tuple),
            amount=st.none()
            | st.decimals(places=2, allow_nan=False, allow_infinity=False).map(str),
            currency=st.none() | st.sampled_from(["USD", "ANG"]),
            folded=st.booleans(),
        ),
        max_size=3,
    ).map(tuple),
    btn_ref=st.none() | texts,
    touched_ms=ints,
    btn_ref_source=st.none() | st.sampled_from(TokenSource),
    exponent=st.none() | st.integers(0, 4),
    sent_digest=st.integers(0, 2**63 - 1),
    customer=st.none()
    | st.builds(
        StoredCustomer,
        id=st.none() | texts,
        # a digest as the mapping keeps it (packed as 32 bytes), or any other text
        email_sha256=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex) | texts,
        device_kind=st.none() | st.sampled_from(["idfa", "gaid"]),
        device_id=st.none() | texts,
    ),
)
stamped = st.lists(st.builds(Stamped, texts, ints), max_size=3).map(tuple)
profiles = st.builds(
    Profile,
    tokens=st.lists(
        st.builds(ResolvedToken, texts, st.sampled_from(TokenSource), ints), max_size=3
    ).map(tuple),
    idfas=stamped,
    gaids=stamped,
    orders=st.lists(orders, max_size=3).map(tuple),
    parked=st.lists(st.builds(ParkedOrder, texts, texts, ints), max_size=3).map(tuple),
    idfa_refused_ms=st.none() | ints,
    gaid_refused_ms=st.none() | ints,
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
        tokens=(ResolvedToken("srctok-0123456789abcdef", TokenSource.URL, 1_714_500_000_000),),
        idfas=(Stamped("6D92078A-8246-4BA4-AE5B-76104861E7DC", 1_714_500_000_000),),
        orders=(order,),
    )


@given(profiles, ints)
def test_encode_decode_round_trip(profile: Profile, expires: int) -> None:
    """decode(encode(p)) == p, and the header carries the expiry."""
    value = encode_profile(profile, expires)
    assert profile == decode_profile(value)
    assert expires == read_expires_at(value)


def adopted_customer_profile() -> Profile:
    """A profile whose order was adopted from Button with Button's customer, its advertising
    id as Button returned it."""
    profile = typical_profile()
    kept = StoredCustomer("cust-42", None, None, "6D92078A-8246-4BA4-AE5B-76104861E7DC")
    return replace(profile, orders=(replace(profile.orders[0], customer=kept),))


def test_a_kept_advertising_id_is_written_as_version_7_and_read_back() -> None:
    """Version 7 only for a customer keeping Button's advertising id; a create's customer is
    still written as version 6, which the release before this one reads."""
    adopted = encode_profile(adopted_customer_profile(), 0)
    created = encode_profile(customer_profile(), 0)

    assert (adopted[0], created[0]) == (7, 6)
    assert decode_profile(adopted) == adopted_customer_profile()
    assert decode_profile(created) == customer_profile()


def test_format_is_versioned() -> None:
    """Byte 0 is the format version; unknown versions are refused, not guessed."""
    value = encode_profile(adopted_customer_profile(), 0)
    assert value[0] == FORMAT_VERSION == 7
    for unknown in (0, FORMAT_VERSION + 1):
        with pytest.raises(ProfileDecodeError):
            decode_profile(bytes([unknown]) + value[1:])
        with pytest.raises(ProfileDecodeError):
            read_expires_at(bytes([unknown]) + value[1:])


# A profile exactly as an earlier release (format version 1, no parking) wrote it.
VERSION_1_VALUE = struct.pack(">Bq", 1, 1_719_756_202_000) + (
    b'[["srctok-0123456789abcdef",2,1714500000000],'
    b'["6D92078A-8246-4BA4-AE5B-76104861E7DC",1714500000000],null,'
    b'[["ORD-100045","USD",1714572202000,5998,0,"evt-1",["evt-r1"],"srctok-0123456789abcdef",'
    b'1714572202000,[["SKU-RED-M",2,"29.99","SKU-RED-M","Red shirt, M",["Apparel"],[]]],null]]]'
)
# The same with a parked order, as the previous release (format version 2) wrote it.
VERSION_2_VALUE = (
    struct.pack(">Bq", 2, 1_719_756_202_000)
    + VERSION_1_VALUE[9:-1]
    + b',[["ORD-9","http_400",1714600000000]]]'
)


def parked_profile() -> Profile:
    return replace(typical_profile(), parked=(ParkedOrder("ORD-9", "http_400", 1_714_600_000_000),))


def refusing_profile() -> Profile:
    """A profile remembering tracking refusals (ATT denied on iOS, then an all-zero GAID)."""
    return replace(
        parked_profile(),
        idfas=(),
        idfa_refused_ms=1_714_600_000_000,
        gaid_refused_ms=1_714_700_000_000,
    )


JANE = StoredCustomer("cust-789", hashlib.sha256(b"jane@example.com").hexdigest(), "idfa")


def customer_profile() -> Profile:
    """A profile whose order keeps its create's customer (an id, an email hash, an IDFA)."""
    profile = typical_profile()
    return replace(profile, orders=(replace(profile.orders[0], customer=JANE),))


def upgraded(profile: Profile) -> Profile:
    """``profile`` as read from an older format: refund ids folded, sent body unknown."""
    order = replace(
        profile.orders[0],
        refunds=(StoredRefund("evt-r1", 1_714_572_202_000, folded=True),),
        sent_digest=1,
    )
    return replace(profile, orders=(order,))


def test_a_version_1_profile_still_decodes() -> None:
    """Changelog values written before parking existed decode, with nothing parked."""
    assert decode_profile(VERSION_1_VALUE) == upgraded(typical_profile())
    assert read_expires_at(VERSION_1_VALUE) == 1_719_756_202_000


def test_a_version_2_profile_still_decodes() -> None:
    """The previous release's values decode: histories of one entry, refunds folded."""
    assert decode_profile(VERSION_2_VALUE) == upgraded(parked_profile())


def test_a_restored_old_order_sends_its_full_state_on_the_next_change() -> None:
    """An order read from version 1 is known as sent; its next change is an update (replayed,
    the create of that state, followed by the update when answered 409)."""
    from consumer.domain.event_forms import event_from_json
    from consumer.domain.mapping import MappingConfig, process

    refund = event_from_json(
        {
            "event_id": "evt-r2",
            "event_type": "REFUND",
            "event_time": "2024-05-01T15:00:00Z",
            "user_key": "u",
            "commerce": {
                "action": "REFUND",
                "transaction_id": "ORD-100045",
                "products": [{"id": "SKU-RED-M"}],
            },
        }
    )
    now = datetime(2024, 5, 2, tzinfo=UTC)
    result, after = process(refund, decode_profile(VERSION_1_VALUE), MappingConfig(), now)
    assert result.request.action == "update"  # type: ignore[union-attr]
    assert result.request.body["total"] == 2999  # type: ignore[union-attr,index]
    replayed, _ = process(refund, after, MappingConfig(), now)
    assert replayed.request.action == "create"  # type: ignore[union-attr]
    assert replayed.follow_up == result.request  # type: ignore[union-attr]


def test_profiles_are_written_as_version_4_and_round_trip() -> None:
    """Version 4 packs version 3's tree (the previous release refuses it): 40 % smaller."""
    value = encode_profile(parked_profile(), 0)
    as_json = json.dumps(_to_json(parked_profile()), separators=(",", ":")).encode()
    assert value[0] == 4
    assert decode_profile(value) == parked_profile()
    assert len(value) - 9 < 0.7 * len(as_json)


def test_a_profile_remembering_a_refusal_is_written_as_version_5() -> None:
    """Version 5 is version 4's packed tree with a sixth element, the times of the latest
    tracking refusals ``[idfa_refused_ms, gaid_refused_ms]``; a profile without one is still
    written as version 4, which the previous release reads (as version 1 was written for a
    profile without parked orders once version 2 existed)."""
    value = encode_profile(refusing_profile(), 7)
    assert value[0] == 5
    assert decode_profile(value) == refusing_profile()
    assert read_expires_at(value) == 7
    assert decode_profile(stamp(value, 3)) == refusing_profile()
    only_gaid = replace(refusing_profile(), idfa_refused_ms=None)
    assert decode_profile(encode_profile(only_gaid, 0)) == only_gaid
    plain = encode_profile(parked_profile(), 0)
    assert plain[0] == 4
    assert plain == struct.pack(">Bq", 4, 0) + _packed(_to_json(parked_profile()))


def test_a_profile_keeping_a_creates_customer_is_written_as_version_6() -> None:
    """Version 6 is version 5's tree (the refusals only when remembered) whose orders have a
    fourteenth element, the create's customer ``[id, email_sha256, device_kind]``, the email
    hash packed as its 32 bytes; a profile none of whose orders keeps one is still written as
    version 4 or 5, which the previous release reads."""
    value = encode_profile(customer_profile(), 7)
    assert value[0] == 6
    assert decode_profile(value) == customer_profile()
    assert decode_profile(stamp(value, 3)) == customer_profile()
    plain = encode_profile(typical_profile(), 7)
    order_tree = _to_json(customer_profile())[3][0]
    assert order_tree[13] == ["cust-789", bytes.fromhex(JANE.email_sha256 or ""), 0]
    assert len(value) - len(plain) == 1 + 9 + 33 + 1  # list, id, digest, kind
    refusing = replace(refusing_profile(), orders=customer_profile().orders)
    assert decode_profile(encode_profile(refusing, 0)) == refusing
    unknown = replace(customer_profile().orders[0], order_id="ORD-OLD", customer=None)
    mixed = replace(customer_profile(), orders=(*customer_profile().orders, unknown))
    assert decode_profile(encode_profile(mixed, 0)) == mixed


def _packed(tree: Any) -> bytes:
    out = bytearray()
    _pack(out, tree)
    return bytes(out)


def test_a_version_3_profile_still_decodes() -> None:
    """The previous release's values (the same tree as JSON) decode unchanged."""
    as_json = json.dumps(_to_json(parked_profile()), separators=(",", ":")).encode()
    value = struct.pack(">Bq", 3, 1_719_756_202_000) + as_json
    assert decode_profile(value) == parked_profile()
    assert read_expires_at(value) == 1_719_756_202_000
    assert decode_profile(stamp(value, 7)) == parked_profile()


uuids = st.uuids().map(str)
trees = st.recursive(
    st.none()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=40)
    | uuids
    | uuids.map(str.upper)
    | st.sampled_from(
        ["6D92078A-8246-4ba4-AE5B-76104861E7DC", "not-a-uuid-but-36-characters-long!!!"]
    ),
    lambda children: st.lists(children, max_size=20),
    max_leaves=40,
)


@given(trees)
def test_the_version_4_packing_round_trips_any_tree(tree: Any) -> None:
    """Strings (short, long, UUIDs of either case, mixed case kept as text), integers of any
    sign and size, nulls and lists (short and long) come back exactly."""
    out = bytearray()
    _pack(out, tree)
    assert _unpack(bytes(out), 0) == (tree, len(out))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xa2\x01", b"\xc3\xff", b"\x85ab", b"\xc4\x00", b"\xc6", b"\xb0", b"\x81\xff"],
)
def test_truncated_or_unknown_version_4_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ProfileDecodeError):
        decode_profile(struct.pack(">Bq", 4, 0) + payload)


def test_trailing_bytes_after_a_version_4_profile_are_refused() -> None:
    with pytest.raises(ProfileDecodeError):
        decode_profile(encode_profile(parked_profile(), 0) + b"\x00")


@pytest.mark.parametrize(
    "value",
    [
        VERSION_1_VALUE[:9] + b'[null,null,null,[],[["o","r",1]]]',  # v1 with a fifth element
        struct.pack(">Bq", 2, 0) + b"[null,null,null,[]]",  # v2 without one
        struct.pack(">Bq", 2, 0) + b'[null,null,null,[],[["o","r"]]]',
        struct.pack(">Bq", 2, 0) + b'[null,null,null,[],[["o",1,1]]]',
        struct.pack(">Bq", 3, 0) + b"[[],[],[],[]]",  # v3 without parked orders
        struct.pack(">Bq", 3, 0) + b'[[],[],[],[["o","USD",1,1,0,"e",[],null,1,[],null]],[]]',
        struct.pack(">Bq", 3, 0)
        + b'[[],[],[],[["o","USD",1,1,0,"e",[["r"]],null,1,[],null,2,0]],[]]',
        struct.pack(">Bq", 3, 0) + b'[[["t",9,1]],[],[],[],[]]',
        struct.pack(">Bq", 4, 0) + _packed([[], [], [], [], [], [1, None]]),  # v4 with a sixth
        struct.pack(">Bq", 5, 0) + _packed([[], [], [], [], []]),  # v5 without one
        struct.pack(">Bq", 5, 0) + _packed([[], [], [], [], [], [1]]),
        struct.pack(">Bq", 5, 0) + _packed([[], [], [], [], [], [1, "2"]]),
        struct.pack(">Bq", 5, 0) + _packed([[], [], [], [], [], [None, None]]),  # no refusal
        struct.pack(">Bq", 6, 0) + _packed([[], [], [], [], [], [None, None]]),
        struct.pack(">Bq", 6, 0) + _packed([[], [], [], []]),
        struct.pack(">Bq", 6, 0)  # an order of 13 elements
        + _packed([[], [], [], [["o", "USD", 1, 1, 0, "e", [], None, 1, [], None, 2, 0]], []]),
        struct.pack(">Bq", 6, 0)  # a customer of 2 elements
        + _packed(
            [
                [],
                [],
                [],
                [["o", "USD", 1, 1, 0, "e", [], None, 1, [], None, 2, 0, [None, None]]],
                [],
            ]
        ),
        struct.pack(">Bq", 6, 0)  # an unknown device kind
        + _packed(
            [
                [],
                [],
                [],
                [["o", "USD", 1, 1, 0, "e", [], None, 1, [], None, 2, 0, [None, None, 7]]],
                [],
            ]
        ),
        struct.pack(">Bq", 6, 0)  # a digest where a string goes
        + _packed(
            [
                [],
                [],
                [],
                [["o", "USD", 1, 1, 0, "e", [], None, 1, [], None, 2, 0, [bytes(32), None, None]]],
                [],
            ]
        ),
    ],
)
def test_malformed_values_of_each_version_are_refused(value: bytes) -> None:
    """A version's array has exactly its elements; a malformed entry is refused."""
    with pytest.raises(ProfileDecodeError):
        decode_profile(value)


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


def test_a_full_history_stays_compact() -> None:
    """Eight tokens, three IDFAs and an order with two refunds stay under 1.2 KB."""
    p = typical_profile()
    tokens = tuple(
        ResolvedToken(f"srctok-{i:016x}", TokenSource.URL, 1_714_500_000_000 + i) for i in range(8)
    )
    idfas = tuple(Stamped(f"6D92078A-8246-4BA4-AE5B-76104861E7D{i}", i) for i in range(3))
    refunds = tuple(StoredRefund(f"evt-r{i}", i, (("SKU-RED-M", 1),)) for i in range(2))
    order = replace(p.orders[0], refunds=refunds, exponent=2, sent_digest=2**62)
    full = replace(p, tokens=tokens, idfas=idfas, orders=(order,))
    assert len(encode_profile(full, 0)) < 1200


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


def test_a_refusal_is_remembered_as_long_as_the_ids_it_overrides() -> None:
    """A refusal's time keeps an id reported before it from being learned again; it is kept
    ``device_id_ms`` after its event time (an id older than that has expired anyway), keeps a
    profile holding nothing else alive, and then goes."""
    refused = Profile(gaid_refused_ms=1_000)
    assert not refused.is_empty
    assert expires_at_ms(refused, RETENTION) == 1_000 + RETENTION.device_id_ms
    assert prune(refused, 1_000 + RETENTION.device_id_ms, RETENTION) is refused
    assert prune(refused, 1_001 + RETENTION.device_id_ms, RETENTION).is_empty
    both = replace(typical_profile(), idfa_refused_ms=5_000, gaid_refused_ms=1_000)
    pruned = prune(both, 1_001 + RETENTION.device_id_ms, RETENTION)
    assert (pruned.idfa_refused_ms, pruned.gaid_refused_ms) == (5_000, None)


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
    fresh = Profile(idfas=(Stamped("ABC", 1_900_000_000_000),))
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


# --- parked orders -------------------------------------------------------------------------------


def test_parking_keeps_the_first_reason_and_refreshes_the_time() -> None:
    """A second dead letter of a parked order keeps the first reason, moves its time on."""
    p = Profile().with_parked("o-1", "http_400", 1_000, limit=10)
    again = p.with_parked("o-1", "parked", 2_000, limit=10)
    assert again.parked == (ParkedOrder("o-1", "http_400", 2_000),)
    assert again.parked_order("o-2") is None


def test_parking_beyond_the_limit_forgets_the_least_recently_touched() -> None:
    """At most ``limit`` parked orders per profile; the oldest touched one goes first."""
    p = Profile().with_parked("a", "r", 1, limit=2).with_parked("b", "r", 2, limit=2)
    p = p.with_parked("a", "r", 3, limit=2).with_parked("c", "r", 4, limit=2)
    assert [e.order_id for e in p.parked] == ["a", "c"]


def test_releasing_an_order_removes_only_it() -> None:
    """without_parked drops one order; an order that is not parked leaves the same profile."""
    p = Profile().with_parked("a", "r", 1, limit=5).with_parked("b", "r", 2, limit=5)
    assert [e.order_id for e in p.without_parked("a").parked] == ["b"]
    assert p.without_parked("zzz") is p


def test_a_profile_with_only_a_parked_order_is_not_empty() -> None:
    """A rejected order of an unknown user still has to be remembered (never a tombstone)."""
    store = ProfileStore(RETENTION)
    p = Profile().with_parked("o-1", "negative_total", 1_000, limit=5)
    assert not p.is_empty
    value = store.put(0, b"k", p)
    assert value is not None
    assert decode_profile(value) == p


def test_parked_orders_expire_with_the_order_retention() -> None:
    """A parked entry lives order_ms after it was last touched, and keeps the profile alive."""
    p = Profile().with_parked("o-1", "http_400", 1_000, limit=5)
    assert expires_at_ms(p, RETENTION) == 1_000 + RETENTION.order_ms
    assert prune(p, 1_000 + RETENTION.order_ms, RETENTION) is p
    assert prune(p, 1_001 + RETENTION.order_ms, RETENTION).parked == ()


# --- size cap ------------------------------------------------------------------------------------


def test_a_profile_over_the_size_cap_forgets_its_least_recently_touched_orders() -> None:
    """A heavy user's profile stays under max_bytes (the changelog's record limit): the orders
    touched longest ago are forgotten first; the newest order and the token are kept."""
    base = typical_profile()
    order = base.orders[0]
    orders = tuple(
        replace(order, order_id=f"order-{i}", touched_ms=order.touched_ms + i) for i in range(40)
    )
    heavy = replace(base, orders=orders)
    store = ProfileStore(RETENTION, max_bytes=2_000)

    value = store.put(0, b"k", heavy)

    assert value is not None
    kept = store.get(0, b"k")
    assert kept is not None
    assert len(value) <= 2_000
    assert 0 < len(kept.orders) < 40
    assert kept.orders[-1].order_id == "order-39"
    assert {o.order_id for o in kept.orders} == {
        f"order-{i}" for i in range(40 - len(kept.orders), 40)
    }
    assert kept.btn_ref == base.btn_ref


# --- owner epochs: a former owner's late writes -----------------------------------------------


def test_a_former_owners_late_write_after_the_new_owners_value_is_ignored_on_restore() -> None:
    """Owner 1 writes, owner 2 fences and writes, owner 1's late write lands last: a restore
    keeps owner 2's value (a stale profile would re-apply refunds or drop a parking)."""
    first = ProfileStore(RETENTION)
    first.restore(0, FENCE_KEY, fence_value(1))
    assert first.claim_epoch(0) == 2
    old = first.put(0, b"k", typical_profile())
    second = ProfileStore(RETENTION)
    for key, value in ((b"k", old), (FENCE_KEY, fence_value(2))):
        second.restore(0, key, value)
    assert second.claim_epoch(0) == 3
    newer = replace(typical_profile(), idfas=(Stamped("NEWER", 1_800_000_000_000),))
    new = second.put(0, b"k", newer)
    late = first.put(0, b"k", replace(typical_profile(), idfas=(Stamped("LATE", 1),)))

    restored = ProfileStore(RETENTION)
    changelog = [
        (FENCE_KEY, fence_value(2)),
        (b"k", old),
        (FENCE_KEY, fence_value(3)),
        (b"k", new),
        (b"k", late),
    ]
    for key, value in changelog:
        restored.restore(0, key, value)

    assert (restored.get(0, b"k"), restored.fenced, restored.claim_epoch(0)) == (newer, 1, 4)


def test_stamped_values_decode_and_unstamped_ones_still_restore() -> None:
    """The epoch envelope is transparent to the readers; a value without it has epoch 0."""
    store = ProfileStore(RETENTION)
    store.restore(0, b"legacy", encode_profile(typical_profile(), 1))
    store.claim_epoch(0)
    value = store.put(0, b"k", typical_profile())
    assert value is not None
    assert (epoch_of(value), decode_profile(value), store.get(0, b"legacy")) == (
        1,
        typical_profile(),
        typical_profile(),
    )


def test_the_profile_count_stays_exact_without_iterating_the_partitions() -> None:
    """len(store) is a running count (read from the Kafka thread while lanes write)."""
    store = ProfileStore(RETENTION)
    store.put(0, b"a", typical_profile())
    store.put(0, b"a", typical_profile())
    store.put(1, b"b", typical_profile())
    store.restore(2, b"c", encode_profile(typical_profile(), 1))
    store.restore(2, b"c", None)
    store.restore(2, b"d", encode_profile(typical_profile(), 1))
    store.put(0, b"a", Profile())
    counts = [len(store)]
    store.drop_partition(2)
    counts.append(len(store))
    store.expire(datetime(2100, 1, 1, tzinfo=UTC))
    counts.append(len(store))

    class NotIterable(dict[int, dict[bytes, bytes]]):
        def values(self) -> Any:
            raise AssertionError("iterated")

    store._partitions = NotIterable(store._partitions)
    assert (counts, len(store)) == ([2, 1, 0], 0)


def test_an_unknown_profile_format_stops_the_service_with_a_clear_error() -> None:
    """A version this release does not know (a rollback) raises a ConsumerError naming the
    version, which the service reports as stopped_on_error rather than a traceback."""
    from consumer.domain.profile_codec import read_expires_at
    from consumer.errors import ConsumerError

    with pytest.raises(ConsumerError, match="unsupported profile format version 99"):
        read_expires_at(bytes([99]) + bytes(8))


def test_a_partition_restored_off_the_store_is_installed_whole_with_its_fencing() -> None:
    """A restore fills a ``PartitionRestore`` (the restore's own thread) with the same fencing
    rules; the store holds nothing of the partition until ``install``, then every profile at
    once, the highest epoch seen and the count; a restore cancelled before ``install`` leaves
    nothing behind."""
    store = ProfileStore(RETENTION)
    store.put(0, b"live", typical_profile())
    writer = ProfileStore(RETENTION)
    writer.restore(1, FENCE_KEY, fence_value(4))
    writer.claim_epoch(1)
    newer = writer.put(1, b"k", typical_profile())
    late = stamp(encode_profile(typical_profile(), 1), 2)

    restore = store.restoring(1)
    restore.apply([(FENCE_KEY, fence_value(5)), (b"k", newer), (b"k", late), (b"gone", newer)])
    restore.apply([(b"gone", None)])
    held_before = (len(store), store.count(1), store.get(1, b"k"))
    store.install(restore)
    assert held_before == (1, 0, None)
    assert (len(store), store.get(1, b"k"), store.fenced, store.claim_epoch(1)) == (
        2,
        typical_profile(),
        1,
        6,
    )
    abandoned = store.restoring(2)
    abandoned.apply([(b"x", newer)])
    store.drop_partition(2)
    assert (len(store), store.count(2)) == (2, 0)


def test_the_restore_reads_the_epoch_and_checks_the_version_in_one_step() -> None:
    """``restored_epoch``: the owner epoch of a value (0 without the envelope); a value of an
    unknown format version, or too short for its header, is refused, stamped or not."""
    value = encode_profile(typical_profile(), 1)
    assert (restored_epoch(value), restored_epoch(stamp(value, 70_000))) == (0, 70_000)
    assert restored_epoch(VERSION_1_VALUE) == 0
    for bad in (b"", value[:5], bytes([9]) + value[1:], stamp(bytes([9]) + value[1:], 3)):
        with pytest.raises(ProfileDecodeError):
            restored_epoch(bad)


def test_the_hand_written_copies_keep_every_field() -> None:
    """``StoredOrder.with_sent`` and ``Profile.with_order`` spell their fields out (for speed):
    a field added to either class must be added to them too."""
    assert [f.name for f in fields(StoredOrder)] == [
        "order_id",
        "currency",
        "purchase_ms",
        "total",
        "lines",
        "status",
        "created_by",
        "refunds",
        "btn_ref",
        "touched_ms",
        "btn_ref_source",
        "exponent",
        "sent_digest",
        "customer",
    ]
    assert [f.name for f in fields(Profile)] == [
        "tokens",
        "idfas",
        "gaids",
        "orders",
        "parked",
        "idfa_refused_ms",
        "gaid_refused_ms",
    ]


@given(orders, st.sampled_from(OrderStatus), st.integers(0, 2**63 - 1))
def test_with_sent_is_replace_of_status_and_digest(
    order: StoredOrder, status: OrderStatus, digest: int
) -> None:
    """``with_sent`` changes the status and the sent digest, and nothing else."""
    assert replace(order, status=status, sent_digest=digest) == order.with_sent(status, digest)


@given(profiles, orders)
def test_with_order_adds_or_replaces_the_order_and_keeps_the_rest(
    profile: Profile, order: StoredOrder
) -> None:
    """``with_order`` puts the order last, drops the one of the same id, keeps the rest."""
    others = tuple(o for o in profile.orders if o.order_id != order.order_id)
    assert replace(profile, orders=(*others, order)) == profile.with_order(order)


class _Code(IntEnum):
    BIG = 200


class _Symbol(StrEnum):
    X = "x-sym"


def test_the_version_4_packing_is_byte_for_byte_stable() -> None:
    """Every tag of the format, written as the format says: changelogs hold these bytes."""
    tree = [
        *(0, 127, 128, -1, -(2**40), 2**63 - 1, None),
        *("", "abc", "a" * 31, "b" * 32, "café" * 10),
        "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        "6D92078A-8246-4ba4-AE5B-76104861E7DC",  # mixed case: kept as text
        "not-a-uuid-but-36-characters-long!!!",
        list(range(15)),
        list(range(16)),
        [[], [None, [1]]],
        _Code.BIG,
        _Symbol.X,
    ]
    out = bytearray()
    _pack(out, tree)
    assert out.hex() == (
        "c215007fc38002c301c3ffffffffff3fc3feffffffffffffffff01c08083616263"
        "9f61616161616161616161616161616161616161616161616161616161616161"
        "c1206262626262626262626262626262626262626262626262626262626262626262"
        "c132636166c3a9636166c3a9636166c3a9636166c3a9636166c3a9636166c3a9"
        "636166c3a9636166c3a9636166c3a9636166c3a9"
        "c46d92078a82464ba4ae5b76104861e7dc"
        "c56d92078a82464ba4ae5b76104861e7dc"
        "c12436443932303738412d383234362d346261342d414535422d373631303438363145374443"
        "c1246e6f742d612d757569642d6275742d33362d636861726163746572732d6c6f6e67212121"
        "af000102030405060708090a0b0c0d0e"
        "c210000102030405060708090a0b0c0d0e0f"
        "a2a0a2c0a101"
        "c39003"
        "85782d73796d"
    )
