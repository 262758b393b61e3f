"""The profile's changelog bytes: how a ``Profile`` is written to and read from its topic.

Profiles live in a compacted changelog topic (DESIGN, 7) and, in memory, as the same bytes (see
``consumer.engine.profiles``), so the format is compact and versioned, and a reader never guesses
at bytes it does not understand.

Changelog value format, all integers big-endian::

    byte 0      format version (1 to 7)
    bytes 1-8   expires_at, epoch milliseconds, signed: when nothing in the profile is useful
    bytes 9-    versions 1-3: UTF-8 JSON array (positional, no field names), see ``_to_json`` /
                ``_from_json``; version 4: the same version-3 tree in a compact binary form;
                version 5: version 4 with a sixth element, the tracking refusals;
                version 6: version 5 (the sixth element optional) whose orders hold the
                create's customer; version 7: version 6 whose customers may hold an
                advertising id

Version 4 (written by this release, always) is version 3's tree of lists, strings, integers and
nulls, each item a tag byte (``_pack``/``_unpack``): 0x00-0x7F the integer itself; 0x80-0x9F a
UTF-8 string of 0-31 bytes; 0xA0-0xAF a list of 0-15 items; 0xC0 null; 0xC1 a varint length
then a longer string; 0xC2 a varint length then a longer list; 0xC3 a zigzag varint integer;
0xC4 / 0xC5 a lower- / upper-case canonical UUID string as its 16 bytes. About 40 % smaller
than version 3 (133 bytes against 222 for a user after one purchase): the profiles of a pod are
held in memory in this form.

Version 5 is version 4's tree with a sixth element, ``[idfa_refused_ms, gaid_refused_ms]``: the
event times of the user's latest tracking refusal of each kind of advertising id (either may be
null, not both). It is written only for a profile that remembers a refusal; any other profile is
still written as version 4, which the previous release reads (as the release that added parked
orders in version 2 still wrote version 1 for a profile without any). The previous release
refuses a version 5 value by its version byte, rather than reading the sixth element as a
corrupt version 4 profile.

Version 6 is version 5's tree (the sixth element present only when a refusal is remembered)
whose orders have a fourteenth element, the customer the order's create carried (sent again
with every update, ``StoredCustomer``): ``[id, email_sha256, device_kind]`` (each may be null;
``device_kind`` 0 for an IDFA, 1 for a GAID), or null when it is not known (nothing created
yet, an order adopted from Button, one read from an older version). ``email_sha256`` is packed
as its 32 bytes (tag 0xC6, a SHA-256 digest written as 64 lower-case hex digits; a value that is
not one stays a string). About 16 bytes per order for a customer id of 12 characters, 33 more
with an email. It is written for a profile holding an order whose customer is known; any
other profile is still written as version 4 or 5. The previous release refuses a version 6
value by its version byte.

Version 7 is version 6 whose customer may have a fourth element, the advertising id itself:
``[id, email_sha256, device_kind, device_id]``, for an order adopted from Button, whose
``customer`` is kept as Button returned it (``StoredCustomer.device_id``). It is written only for
a profile holding such a customer; any other is still written as version 6, 5 or 4. The
previous release refuses a version 7 value by its version byte.

Version 1 is a 4-element array (token, IDFA, GAID, orders); version 2 appends a fifth, the parked
orders. Version 3 (written by this release, always) holds histories: ``[tokens, idfas, gaids,
orders, parked]`` where each history is a list of entries in event-time order, and an order is
its ledger: the version-1 order fields with refund *records* instead of refund event ids
(``[event_id, event_ms, [[product_id, quantity], ...], amount, currency, folded]``), then the
minor-unit exponent and the digest of what Button was last sent.

Reading: versions 1 and 2 are still read (restore of an existing changelog works): the single
token, IDFA and GAID become one-entry histories, and an order's refund event ids become
``folded`` records (their effect is already in the stored state), with the sent digest ``1``
("sent, body unknown": the next change of the order sends its full state as an update). A
reader refuses versions it does not know (``ProfileDecodeError``) rather than guessing; the
previous release refuses version 3 that way. The plaintext email is never part of a profile.
Token histories: each entry ``[token, source, seen_at]`` is one *sighting* of a token
(``profile.with_stamped``); one token seen several times has several entries. The previous
release wrote the same shape but kept only the latest of consecutive sightings of one token, so
its entries are sightings too and are read unchanged, with no format version of their own: for a
run it merged, only the run's latest sighting is known, and an order dated inside such a run
before that sighting finds the token before it until the token is seen again. The previous release
reads this release's histories as well (it merges the repeated entries at its next sighting).
A value may be wrapped in the owner-epoch envelope of ``consumer.domain.profile_epoch`` (an
epoch stamped by the partition's owner, so a restore can ignore a former owner's late write);
the readers here unwrap it.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.identity import DeviceIdKind, is_sha256_hex
from consumer.domain.profile import (
    OrderStatus,
    ParkedOrder,
    Profile,
    Stamped,
    StoredCustomer,
    StoredLine,
    StoredOrder,
    StoredRefund,
)
from consumer.domain.profile_epoch import STAMP_MARKER, epoch_of, unstamp
from consumer.errors import ConsumerError

FORMAT_VERSION = 7
"""The newest format version, written for a profile holding an order whose create's customer is
known; any other profile is written as version 5 (remembering a tracking refusal) or 4.
Versions 1 to 3 are still read."""
_VERSION_1 = 1
_VERSION_2 = 2
_VERSION_3 = 3
"""The tree of version 3 (histories, order ledgers) is version 4's, as JSON."""
_VERSION_4 = 4
_VERSION_5 = 5
_VERSION_6 = 6
"""Version 4's tree with a sixth element, the tracking refusals."""
_READABLE_VERSIONS = frozenset(
    {_VERSION_1, _VERSION_2, _VERSION_3, _VERSION_4, _VERSION_5, _VERSION_6, FORMAT_VERSION}
)
_HEADER = struct.Struct(">Bq")
_STAMPED_HEADER = 5 + _HEADER.size  # the epoch envelope's marker and epoch, then the header
_SENT_UNKNOWN = 1  # an order of an older format was sent to Button; its body digest is unknown


class ProfileDecodeError(ConsumerError, ValueError):
    """Changelog bytes that are not a profile this code understands.

    A ``ConsumerError``, so a restore that meets a format version this release does not know
    (after a rollback) stops the service with a clear line, not a traceback.
    """


_STATUS_CODES = {
    OrderStatus.OPEN: 0,
    OrderStatus.UPDATED: 1,
    OrderStatus.CANCELLED: 2,
    OrderStatus.PENDING: 3,
}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_SOURCE_CODES = {
    TokenSource.EXPLICIT: 0,
    TokenSource.INTEGRATION_ATTRIBUTE: 1,
    TokenSource.URL: 2,
    TokenSource.PROFILE: 3,
}
_SOURCES = {code: source for source, code in _SOURCE_CODES.items()}
_DEVICE_KIND_CODES: dict[DeviceIdKind, int] = {"idfa": 0, "gaid": 1}
_DEVICE_KINDS = {code: kind for kind, code in _DEVICE_KIND_CODES.items()}


def _line_to_json(line: StoredLine) -> list[Any]:
    return [
        line.identifier,
        line.quantity,
        line.price,
        line.sku,
        line.description,
        list(line.category),
        [list(pair) for pair in line.attributes],
    ]


def _refund_to_json(refund: StoredRefund) -> list[Any]:
    return [
        refund.event_id,
        refund.event_ms,
        [[product, quantity] for product, quantity in refund.products],
        refund.amount,
        refund.currency,
        1 if refund.folded else 0,
    ]


def _customer_to_json(customer: StoredCustomer | None) -> list[Any] | None:
    if customer is None:
        return None
    email = customer.email_sha256
    packed = bytes.fromhex(email) if email is not None and is_sha256_hex(email) else email
    kind = None if customer.device_kind is None else _DEVICE_KIND_CODES[customer.device_kind]
    if customer.device_id is not None:  # version 7: Button's, of an adopted order
        return [customer.id, packed, kind, customer.device_id]
    return [customer.id, packed, kind]


def _order_to_json(order: StoredOrder, *, with_customer: bool = False) -> list[Any]:
    tree = [
        order.order_id,
        order.currency,
        order.purchase_ms,
        order.total,
        _STATUS_CODES[order.status],
        order.created_by,
        [_refund_to_json(refund) for refund in order.refunds],
        order.btn_ref,
        order.touched_ms,
        [_line_to_json(line) for line in order.lines],
        None if order.btn_ref_source is None else _SOURCE_CODES[order.btn_ref_source],
        order.exponent,
        order.sent_digest,
    ]
    if with_customer:
        tree.append(_customer_to_json(order.customer))
    return tree


def _knows_a_customer(profile: Profile) -> bool:
    return any(order.customer is not None for order in profile.orders)


def _keeps_a_device_id(profile: Profile) -> bool:
    return any(
        order.customer is not None and order.customer.device_id is not None
        for order in profile.orders
    )


def _to_json(profile: Profile) -> list[Any]:
    """The version-3 tree of ``profile``; with a sixth element (version 5) when it remembers a
    tracking refusal; with each order's customer (version 6) when one is known."""
    with_customer = _knows_a_customer(profile)
    tree: list[Any] = [
        [[t.value, _SOURCE_CODES[t.source], t.seen_at_ms] for t in profile.tokens],
        [[d.value, d.seen_at_ms] for d in profile.idfas],
        [[d.value, d.seen_at_ms] for d in profile.gaids],
        [_order_to_json(order, with_customer=with_customer) for order in profile.orders],
        [[p.order_id, p.reason, p.touched_ms] for p in profile.parked],
    ]
    if _remembers_refusal(profile):
        tree.append([profile.idfa_refused_ms, profile.gaid_refused_ms])
    return tree


def _remembers_refusal(profile: Profile) -> bool:
    return profile.idfa_refused_ms is not None or profile.gaid_refused_ms is not None


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ProfileDecodeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProfileDecodeError(f"expected an integer, got {type(value).__name__}")
    return value


def _list(value: Any, length: int | None = None) -> list[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ProfileDecodeError("malformed profile structure")
    return value


def _stamped(value: Any) -> Stamped | None:
    if value is None:
        return None
    raw = _list(value, 2)
    return Stamped(_str(raw[0]), _int(raw[1]))


def _line_from_json(value: Any) -> StoredLine:
    raw = _list(value, 7)
    return StoredLine(
        identifier=_str(raw[0]),
        quantity=_int(raw[1]),
        price=_opt_str(raw[2]),
        sku=_opt_str(raw[3]),
        description=_opt_str(raw[4]),
        category=tuple(_str(c) for c in _list(raw[5])),
        attributes=tuple((_str(k), _str(v)) for k, v in (_list(p, 2) for p in _list(raw[6]))),
    )


def _refund_from_json(value: Any) -> StoredRefund:
    raw = _list(value, 6)
    return StoredRefund(
        event_id=_str(raw[0]),
        event_ms=_int(raw[1]),
        products=tuple((_str(p), _int(q)) for p, q in (_list(x, 2) for x in _list(raw[2]))),
        amount=_opt_str(raw[3]),
        currency=_opt_str(raw[4]),
        folded=bool(_int(raw[5])),
    )


def _customer_from_json(value: Any, version: int) -> StoredCustomer | None:
    if value is None:
        return None
    raw = _list(value)
    if len(raw) not in ((3, 4) if version == FORMAT_VERSION else (3,)):
        raise ProfileDecodeError("malformed profile structure")
    email = raw[1]
    if isinstance(email, bytes):
        email = email.hex()
    kind = None
    if raw[2] is not None:
        kind = _DEVICE_KINDS.get(_int(raw[2]))
        if kind is None:
            raise ProfileDecodeError(f"unknown device id kind code {raw[2]}")
    device_id = _str(raw[3]) if len(raw) == 4 else None
    return StoredCustomer(_opt_str(raw[0]), _opt_str(email), kind, device_id)


def _order_from_json(value: Any, version: int) -> StoredOrder:
    raw = _list(value, 11 if version < _VERSION_3 else 14 if version >= _VERSION_6 else 13)
    status = _STATUSES.get(_int(raw[4]))
    if status is None:
        raise ProfileDecodeError(f"unknown order status code {raw[4]}")
    purchase_ms = _int(raw[2])
    if version < _VERSION_3:  # refund event ids whose effect is in the stored state
        refunds = tuple(StoredRefund(_str(r), purchase_ms, folded=True) for r in _list(raw[6]))
        exponent = None
        digest = 0 if status is OrderStatus.PENDING else _SENT_UNKNOWN
    else:
        refunds = tuple(_refund_from_json(r) for r in _list(raw[6]))
        exponent = None if raw[11] is None else _int(raw[11])
        digest = _int(raw[12])
    return StoredOrder(
        order_id=_str(raw[0]),
        currency=_str(raw[1]),
        purchase_ms=purchase_ms,
        total=_int(raw[3]),
        status=status,
        created_by=_str(raw[5]),
        refunds=refunds,
        btn_ref=_opt_str(raw[7]),
        touched_ms=_int(raw[8]),
        lines=tuple(_line_from_json(line) for line in _list(raw[9])),
        btn_ref_source=None if raw[10] is None else _source(raw[10]),
        exponent=exponent,
        sent_digest=digest,
        customer=_customer_from_json(raw[13], version) if version >= _VERSION_6 else None,
    )


def _source(value: Any) -> TokenSource:
    source = _SOURCES.get(_int(value))
    if source is None:
        raise ProfileDecodeError(f"unknown token source code {value}")
    return source


def _parked_from_json(value: Any) -> ParkedOrder:
    raw = _list(value, 3)
    return ParkedOrder(_str(raw[0]), _str(raw[1]), _int(raw[2]))


def _token(value: Any) -> ResolvedToken:
    tok = _list(value, 3)
    return ResolvedToken(_str(tok[0]), _source(tok[1]), _int(tok[2]))


def _refusals(value: Any) -> tuple[int | None, int | None]:
    """Version 5's sixth element: the latest refusal of each kind, at least one of them."""
    raw = _list(value, 2)
    idfa, gaid = (None if r is None else _int(r) for r in raw)
    if idfa is None and gaid is None:
        raise ProfileDecodeError("a version 5 or 6 profile without a tracking refusal")
    return idfa, gaid


def _from_json(value: Any, version: int) -> Profile:
    if version >= _VERSION_6:  # the sixth element only with a refusal
        raw = _list(value)
        if len(raw) not in (5, 6):
            raise ProfileDecodeError("malformed profile structure")
    else:
        raw = _list(value, {_VERSION_1: 4, _VERSION_5: 6}.get(version, 5))
    orders = tuple(_order_from_json(o, version) for o in _list(raw[3]))
    parked = () if version == _VERSION_1 else tuple(_parked_from_json(p) for p in _list(raw[4]))
    if version < _VERSION_3:  # one token, IDFA and GAID: one-entry histories
        idfa, gaid = _stamped(raw[1]), _stamped(raw[2])
        return Profile(
            tokens=() if raw[0] is None else (_token(raw[0]),),
            idfas=() if idfa is None else (idfa,),
            gaids=() if gaid is None else (gaid,),
            orders=orders,
            parked=parked,
        )
    histories = [tuple(_stamped(d) for d in _list(raw[i])) for i in (1, 2)]
    idfa_refused, gaid_refused = _refusals(raw[5]) if len(raw) == 6 else (None, None)
    return Profile(
        tokens=tuple(_token(t) for t in _list(raw[0])),
        idfas=tuple(d for d in histories[0] if d is not None),
        gaids=tuple(d for d in histories[1] if d is not None),
        orders=orders,
        parked=parked,
        idfa_refused_ms=idfa_refused,
        gaid_refused_ms=gaid_refused,
    )


# -- version 4: the version-3 tree, packed ---------------------------------------------------

_NULL = 0xC0
_LONG_STR = 0xC1
_LONG_LIST = 0xC2
_INT = 0xC3
_UUID_LOWER = 0xC4
_UUID_UPPER = 0xC5
_DIGEST = 0xC6  # 32 bytes: a SHA-256 digest (version 6's email_sha256)
_SHORT_STR = 0x80  # + length 0-31
_SHORT_LIST = 0xA0  # + length 0-15
_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
)
"""8-4-4-4-12 hex digits, all lower- or all upper-case (digits alone are both)."""


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _uuid_bytes(text: str) -> bytes | None:
    """The 16 bytes of a canonical (8-4-4-4-12, one case) UUID string, else None."""
    if _CANONICAL_UUID.fullmatch(text) is None:
        return None
    return bytes.fromhex(text.replace("-", ""))


def _pack_str(out: bytearray, item: str) -> None:
    raw = _uuid_bytes(item) if len(item) == 36 else None
    if raw is not None:
        out.append(_UUID_LOWER if item == item.lower() else _UUID_UPPER)
        out += raw
        return
    data = item.encode("utf-8")
    if len(data) < 32:
        out.append(_SHORT_STR | len(data))
    else:
        out.append(_LONG_STR)
        _varint(out, len(data))
    out += data


def _pack(out: bytearray, item: Any) -> None:
    # Dispatch on the exact type first: this runs for every item of every profile written.
    kind = type(item)
    if kind is str:
        _pack_str(out, item)
    elif kind is int:
        if 0 <= item < 0x80:
            out.append(item)
        else:
            out.append(_INT)
            _varint(out, item << 1 if item >= 0 else ((-item) << 1) - 1)
    elif kind is list:
        count = len(item)
        if count < 16:
            out.append(_SHORT_LIST | count)
        else:
            out.append(_LONG_LIST)
            _varint(out, count)
        for child in item:
            _pack(out, child)
    elif item is None:
        out.append(_NULL)
    elif kind is bytes and len(item) == 32:
        out.append(_DIGEST)
        out += item
    else:
        _pack_other(out, item)


def _pack_other(out: bytearray, item: Any) -> None:
    """Subclasses of the tree's types (an ``IntEnum``, a ``str`` enum) by their base type's
    rule; anything else is refused."""
    if isinstance(item, bool):  # never in the tree; refused rather than read back as int
        raise TypeError("a profile tree holds no booleans")
    if isinstance(item, str):
        _pack_str(out, item)
    elif isinstance(item, int):
        _pack(out, int(item))
    elif isinstance(item, list):
        _pack(out, list(item))
    else:
        raise TypeError(f"a profile tree holds no {type(item).__name__}")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 70:
            raise ProfileDecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _unpack(data: bytes, pos: int) -> tuple[Any, int]:
    """The item at ``pos`` and the position after it."""
    if pos >= len(data):
        raise ProfileDecodeError("truncated profile")
    tag = data[pos]
    pos += 1
    if tag < 0x80:
        return tag, pos
    if tag < _SHORT_LIST:
        end = pos + (tag & 0x1F)
        return _text(data, pos, end), end
    if tag < _NULL:
        if tag > _SHORT_LIST | 0x0F:
            raise ProfileDecodeError(f"unknown tag {tag:#x}")
        return _items(data, pos, tag & 0x0F)
    if tag == _NULL:
        return None, pos
    return _unpack_tagged(tag, data, pos)


def _unpack_tagged(tag: int, data: bytes, pos: int) -> tuple[Any, int]:
    """An item of a tag from 0xC1 on (see ``_unpack``)."""
    if tag == _INT:
        raw, pos = _read_varint(data, pos)
        return (raw >> 1) if not raw & 1 else -((raw + 1) >> 1), pos
    if tag == _LONG_STR:
        length, pos = _read_varint(data, pos)
        return _text(data, pos, pos + length), pos + length
    if tag == _LONG_LIST:
        length, pos = _read_varint(data, pos)
        return _items(data, pos, length)
    if tag == _DIGEST:
        if pos + 32 > len(data):
            raise ProfileDecodeError("truncated profile")
        return data[pos : pos + 32], pos + 32
    if tag in (_UUID_LOWER, _UUID_UPPER):
        if pos + 16 > len(data):
            raise ProfileDecodeError("truncated profile")
        h = data[pos : pos + 16].hex()
        text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return (text if tag == _UUID_LOWER else text.upper()), pos + 16
    raise ProfileDecodeError(f"unknown tag {tag:#x}")


def _text(data: bytes, start: int, end: int) -> str:
    if end > len(data):
        raise ProfileDecodeError("truncated profile")
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileDecodeError(f"profile string is not UTF-8: {exc}") from exc


def _items(data: bytes, pos: int, count: int) -> tuple[list[Any], int]:
    if count > len(data) - pos:  # every item takes at least one byte
        raise ProfileDecodeError("truncated profile")
    items = []
    for _ in range(count):
        item, pos = _unpack(data, pos)
        items.append(item)
    return items, pos


def encode_profile(profile: Profile, expires_at: int) -> bytes:
    """The changelog value of ``profile`` (format version 7 when it holds an order adopted with
    Button's customer's advertising id, else 6 when it holds an order whose customer is known,
    else 5 when it remembers a tracking refusal, else 4); ``expires_at`` (epoch ms) goes in the
    header."""
    if _keeps_a_device_id(profile):
        version = FORMAT_VERSION
    elif _knows_a_customer(profile):
        version = _VERSION_6
    else:
        version = _VERSION_5 if _remembers_refusal(profile) else _VERSION_4
    out = bytearray(_HEADER.pack(version, expires_at))
    _pack(out, _to_json(profile))
    return bytes(out)


def read_expires_at(value: bytes) -> int:
    """The header's expiry time of an encoded profile, without decoding the rest.

    Raises:
        ProfileDecodeError: too short, or a format version this code does not know.
    """
    return _read_header(unstamp(value))[1]


def restored_epoch(value: bytes) -> int:
    """The owner epoch of a changelog value (``consumer.domain.profile_epoch``), once its
    format version is checked: what the restore needs of each of a million values, in one call.

    Raises:
        ProfileDecodeError: too short, or a format version this code does not know.
    """
    if value and value[0] == STAMP_MARKER:
        if len(value) >= _STAMPED_HEADER and value[5] in _READABLE_VERSIONS:
            return int.from_bytes(value[1:5])
    elif len(value) >= _HEADER.size and value[0] in _READABLE_VERSIONS:
        return 0
    read_expires_at(value)  # raises with the reason
    return epoch_of(value)


def _read_header(value: bytes) -> tuple[int, int]:
    if len(value) < _HEADER.size:
        raise ProfileDecodeError("profile value shorter than its header")
    version, expires_at = _HEADER.unpack_from(value)
    if version not in _READABLE_VERSIONS:
        raise ProfileDecodeError(
            f"unsupported profile format version {version}: a changelog written by a newer "
            "release (see the README's upgrades and rollback)"
        )
    return int(version), int(expires_at)


def decode_profile(value: bytes) -> Profile:
    """The ``Profile`` encoded in a changelog value.

    Raises:
        ProfileDecodeError: the bytes are not a version 1 to 7 profile.
    """
    value = unstamp(value)  # the owner-epoch envelope, if any (consumer.domain.profile_epoch)
    version, _ = _read_header(value)
    if version >= _VERSION_4:
        tree, end = _unpack(value, _HEADER.size)
        if end != len(value):
            raise ProfileDecodeError("trailing bytes after the profile")
        return _from_json(tree, _VERSION_3 if version == _VERSION_4 else version)
    try:
        parsed = json.loads(value[_HEADER.size :].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileDecodeError(f"profile payload is not UTF-8 JSON: {exc}") from exc
    return _from_json(parsed, version)
