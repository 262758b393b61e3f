"""The per-user profile: what earlier events taught us that a later order needs.

A purchase often arrives without its Button token (the token came with an install or a deep-link
open days earlier), without its advertising id, and a partial refund arrives without the order it
reduces. The profile remembers, per Kafka record key (the user): the latest ``btn_ref`` with its
time and source, the advertising ids with their times, and the recent orders (line items, total,
status, refund events already applied) for as long as Button may still change them.

Memory is the constraint: a pod must hold about a million profiles. So the ``ProfileStore``
keeps each profile as the same compact bytes it writes to the compacted changelog topic (about
120 bytes for a token and a device id, about 390 with one two-line order: 2.5-3 times less than
the same profile as Python objects) and decodes one on ``get`` (tens of microseconds); restoring a
partition stores the changelog values without decoding them.

The profile also holds the user's *parked* orders (DESIGN, 5): an order one of whose events was
dead-lettered, so that its later events follow it to the DLQ instead of reaching Button. Kept
here, parking survives restarts and rebalances with the rest of the profile (DESIGN, 7).

Changelog value format, all integers big-endian::

    byte 0      format version (1 or 2)
    bytes 1-8   expires_at, epoch milliseconds, signed: when nothing in the profile is useful
    bytes 9-    UTF-8 JSON array (positional, no field names), see ``_to_json`` / ``_from_json``

Version 1 is a 4-element array (token, IDFA, GAID, orders); version 2 appends a fifth, the parked
orders. A profile with no parked order is still written as version 1, byte for byte as before,
so the previous release reads every such profile; one with parked orders is version 2, which the
previous release refuses loudly instead of misreading. A reader refuses versions it does not
know (``ProfileDecodeError``) rather than guessing. The plaintext email is never part of a
profile.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from consumer.domain.attribution import ResolvedToken, TokenSource

FORMAT_VERSION = 2
"""The newest format version; profiles without parked orders are still written as version 1."""
_VERSION_1 = 1
_READABLE_VERSIONS = frozenset({_VERSION_1, FORMAT_VERSION})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEADER = struct.Struct(">Bq")


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware ``datetime``.

    Raises:
        ValueError: ``moment`` is naive (a naive time would silently mean the host's zone).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class ProfileDecodeError(ValueError):
    """Changelog bytes that are not a profile this code understands."""


class OrderStatus(StrEnum):
    """What the service last told Button about an order."""

    OPEN = "open"  # created, no refund applied
    UPDATED = "updated"  # partially refunded: Button has the reduced state
    CANCELLED = "cancelled"  # fully refunded: deleted at Button


@dataclass(frozen=True, slots=True)
class Stamped:
    """A value with the event time (epoch ms) it was last seen at."""

    value: str
    seen_at_ms: int


@dataclass(frozen=True, slots=True)
class StoredLine:
    """One line item of a stored order, enough to send its remaining state after a refund.

    ``price`` is the exact unit price in major units as a decimal string (``"3.333333"``), or
    ``None`` when the event gave none; minor units are derived from it when a request is built,
    so a partial refund recomputes the line total exactly instead of from a rounded value.
    """

    identifier: str
    quantity: int
    price: str | None
    sku: str | None = None
    description: str | None = None
    category: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """The state of an order at Button, as far as this service made it.

    ``created_by`` is the purchase event id, ``refunds`` the refund event ids already applied (so
    a replayed refund never reduces the order twice), ``btn_ref`` the token the create carried
    (so a replayed purchase sends the same one) and ``btn_ref_source`` where it was found,
    ``touched_ms`` the processing time of the last change (retention counts from it).
    """

    order_id: str
    currency: str
    purchase_ms: int
    total: int
    lines: tuple[StoredLine, ...]
    status: OrderStatus
    created_by: str
    refunds: tuple[str, ...]
    btn_ref: str | None
    touched_ms: int
    btn_ref_source: TokenSource | None = None


@dataclass(frozen=True, slots=True)
class ParkedOrder:
    """An order parked behind a dead letter (DESIGN, 5).

    ``reason`` is the first dead letter's reason (``http_400``, ``retries_exhausted``...);
    ``touched_ms`` the processing time of the last dead letter of the order (the first, or one
    parked behind it): retention counts from it, like an order's. The order may be absent from
    ``Profile.orders`` (an event rejected by the mapping never stored its order).
    """

    order_id: str
    reason: str
    touched_ms: int


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything remembered about one user. Immutable: changes make a new ``Profile``."""

    btn_ref: ResolvedToken | None = None
    idfa: Stamped | None = None
    gaid: Stamped | None = None
    orders: tuple[StoredOrder, ...] = ()
    parked: tuple[ParkedOrder, ...] = ()

    @property
    def is_empty(self) -> bool:
        return (
            self.btn_ref is None
            and self.idfa is None
            and self.gaid is None
            and not self.orders
            and not self.parked
        )

    def order(self, order_id: str) -> StoredOrder | None:
        for stored in self.orders:
            if stored.order_id == order_id:
                return stored
        return None

    def with_order(self, order: StoredOrder) -> Profile:
        """This profile with ``order`` added, or replacing the order of the same id."""
        others = tuple(o for o in self.orders if o.order_id != order.order_id)
        return replace(self, orders=(*others, order))

    def parked_order(self, order_id: str) -> ParkedOrder | None:
        """The parking entry of ``order_id``, ``None`` if the order is not parked."""
        for entry in self.parked:
            if entry.order_id == order_id:
                return entry
        return None

    def with_parked(self, order_id: str, reason: str, now_ms: int, limit: int) -> Profile:
        """This profile with ``order_id`` parked at ``now_ms``.

        An order already parked keeps its first reason and has its time refreshed. ``parked``
        stays in the order entries were touched, so beyond ``limit`` entries the least recently
        touched are forgotten from the front (a user with that many orders dead-lettered at once
        is not a shopper).
        """
        known = self.parked_order(order_id)
        entry = ParkedOrder(order_id, known.reason if known else reason, now_ms)
        others = tuple(p for p in self.parked if p.order_id != order_id)
        return replace(self, parked=(*others[max(len(others) + 1 - limit, 0) :], entry))

    def without_parked(self, order_id: str) -> Profile:
        """This profile with ``order_id`` no longer parked (the same object if it was not)."""
        if self.parked_order(order_id) is None:
            return self
        return replace(self, parked=tuple(p for p in self.parked if p.order_id != order_id))


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each part of a profile stays useful (milliseconds).

    ``btn_ref_ms`` is the attribution window (counted from the token's event time),
    ``device_id_ms`` counts from the id's event time, ``order_ms`` from the last change of the
    order and should be Button's finalization window plus a safety margin.
    """

    btn_ref_ms: int
    device_id_ms: int
    order_ms: int


def expires_at_ms(profile: Profile, retention: Retention) -> int:
    """When every part of ``profile`` has expired (epoch ms); ``-2**63`` for an empty profile."""
    candidates = [o.touched_ms + retention.order_ms for o in profile.orders]
    candidates.extend(p.touched_ms + retention.order_ms for p in profile.parked)
    if profile.btn_ref is not None:
        candidates.append(profile.btn_ref.seen_at_ms + retention.btn_ref_ms)
    for device in (profile.idfa, profile.gaid):
        if device is not None:
            candidates.append(device.seen_at_ms + retention.device_id_ms)
    return max(candidates, default=-(2**63))


def prune(profile: Profile, now_ms: int, retention: Retention) -> Profile:
    """``profile`` without its expired parts (the same object if nothing expired)."""
    btn_ref = profile.btn_ref
    if btn_ref is not None and btn_ref.seen_at_ms + retention.btn_ref_ms < now_ms:
        btn_ref = None
    idfa, gaid = (
        d if d is not None and d.seen_at_ms + retention.device_id_ms >= now_ms else None
        for d in (profile.idfa, profile.gaid)
    )
    orders = tuple(o for o in profile.orders if o.touched_ms + retention.order_ms >= now_ms)
    parked = tuple(p for p in profile.parked if p.touched_ms + retention.order_ms >= now_ms)
    if (
        btn_ref is profile.btn_ref
        and idfa is profile.idfa
        and gaid is profile.gaid
        and len(orders) == len(profile.orders)
        and len(parked) == len(profile.parked)
    ):
        return profile
    return Profile(btn_ref, idfa, gaid, orders, parked)


# --- codec -------------------------------------------------------------------------------------

_STATUS_CODES = {OrderStatus.OPEN: 0, OrderStatus.UPDATED: 1, OrderStatus.CANCELLED: 2}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_SOURCE_CODES = {
    TokenSource.EXPLICIT: 0,
    TokenSource.INTEGRATION_ATTRIBUTE: 1,
    TokenSource.URL: 2,
    TokenSource.PROFILE: 3,
}
_SOURCES = {code: source for source, code in _SOURCE_CODES.items()}


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


def _order_to_json(order: StoredOrder) -> list[Any]:
    return [
        order.order_id,
        order.currency,
        order.purchase_ms,
        order.total,
        _STATUS_CODES[order.status],
        order.created_by,
        list(order.refunds),
        order.btn_ref,
        order.touched_ms,
        [_line_to_json(line) for line in order.lines],
        None if order.btn_ref_source is None else _SOURCE_CODES[order.btn_ref_source],
    ]


def _to_json(profile: Profile) -> list[Any]:
    token = profile.btn_ref
    fields: list[Any] = [
        None if token is None else [token.value, _SOURCE_CODES[token.source], token.seen_at_ms],
        None if profile.idfa is None else [profile.idfa.value, profile.idfa.seen_at_ms],
        None if profile.gaid is None else [profile.gaid.value, profile.gaid.seen_at_ms],
        [_order_to_json(order) for order in profile.orders],
    ]
    if profile.parked:  # version 2 only
        fields.append([[p.order_id, p.reason, p.touched_ms] for p in profile.parked])
    return fields


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


def _order_from_json(value: Any) -> StoredOrder:
    raw = _list(value, 11)
    status = _STATUSES.get(_int(raw[4]))
    if status is None:
        raise ProfileDecodeError(f"unknown order status code {raw[4]}")
    return StoredOrder(
        order_id=_str(raw[0]),
        currency=_str(raw[1]),
        purchase_ms=_int(raw[2]),
        total=_int(raw[3]),
        status=status,
        created_by=_str(raw[5]),
        refunds=tuple(_str(r) for r in _list(raw[6])),
        btn_ref=_opt_str(raw[7]),
        touched_ms=_int(raw[8]),
        lines=tuple(_line_from_json(line) for line in _list(raw[9])),
        btn_ref_source=None if raw[10] is None else _source(raw[10]),
    )


def _source(value: Any) -> TokenSource:
    source = _SOURCES.get(_int(value))
    if source is None:
        raise ProfileDecodeError(f"unknown token source code {value}")
    return source


def _parked_from_json(value: Any) -> ParkedOrder:
    raw = _list(value, 3)
    return ParkedOrder(_str(raw[0]), _str(raw[1]), _int(raw[2]))


def _from_json(value: Any, version: int) -> Profile:
    raw = _list(value, 4 if version == _VERSION_1 else 5)
    token: ResolvedToken | None = None
    if raw[0] is not None:
        tok = _list(raw[0], 3)
        token = ResolvedToken(_str(tok[0]), _source(tok[1]), _int(tok[2]))
    return Profile(
        btn_ref=token,
        idfa=_stamped(raw[1]),
        gaid=_stamped(raw[2]),
        orders=tuple(_order_from_json(o) for o in _list(raw[3])),
        parked=() if version == _VERSION_1 else tuple(_parked_from_json(p) for p in _list(raw[4])),
    )


def encode_profile(profile: Profile, expires_at: int) -> bytes:
    """The changelog value of ``profile``; ``expires_at`` (epoch ms) goes in the header.

    Version 1 when nothing is parked (readable by the previous release), else version 2.
    """
    payload = json.dumps(_to_json(profile), ensure_ascii=False, separators=(",", ":"))
    version = FORMAT_VERSION if profile.parked else _VERSION_1
    return _HEADER.pack(version, expires_at) + payload.encode("utf-8")


def read_expires_at(value: bytes) -> int:
    """The header's expiry time of an encoded profile, without decoding the rest.

    Raises:
        ProfileDecodeError: too short, or a format version this code does not know.
    """
    return _read_header(value)[1]


def _read_header(value: bytes) -> tuple[int, int]:
    if len(value) < _HEADER.size:
        raise ProfileDecodeError("profile value shorter than its header")
    version, expires_at = _HEADER.unpack_from(value)
    if version not in _READABLE_VERSIONS:
        raise ProfileDecodeError(f"unsupported profile format version {version}")
    return int(version), int(expires_at)


def decode_profile(value: bytes) -> Profile:
    """The ``Profile`` encoded in a changelog value.

    Raises:
        ProfileDecodeError: the bytes are not a version-1 or version-2 profile.
    """
    version, _ = _read_header(value)
    try:
        parsed = json.loads(value[_HEADER.size :].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileDecodeError(f"profile payload is not UTF-8 JSON: {exc}") from exc
    return _from_json(parsed, version)


# --- store -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangelogWrite:
    """A record the caller must write to the changelog topic (``value`` None = tombstone)."""

    partition: int
    key: bytes
    value: bytes | None


class ProfileStore:
    """All profiles of the partitions this process owns, in their encoded (compact) form.

    Grouped by partition so a revoked partition is dropped at once and a newly assigned one is
    restored from the same partition of the changelog. Pure: the caller does the Kafka I/O with
    the bytes ``put`` returns and the writes ``expire`` returns.
    """

    __slots__ = ("_partitions", "_retention")

    def __init__(self, retention: Retention) -> None:
        self._retention = retention
        self._partitions: dict[int, dict[bytes, bytes]] = {}

    @property
    def retention(self) -> Retention:
        return self._retention

    def get(self, partition: int, key: bytes) -> Profile | None:
        """The user's profile, or ``None`` if none is stored.

        Raises:
            ProfileDecodeError: the stored bytes are corrupt.
        """
        value = self._partitions.get(partition, {}).get(key)
        return None if value is None else decode_profile(value)

    def get_encoded(self, partition: int, key: bytes) -> bytes | None:
        return self._partitions.get(partition, {}).get(key)

    def put(self, partition: int, key: bytes, profile: Profile) -> bytes | None:
        """Store ``profile``; return the changelog value to write (None = write a tombstone).

        An empty profile is deleted rather than stored.
        """
        if profile.is_empty:
            self._partitions.get(partition, {}).pop(key, None)
            return None
        value = encode_profile(profile, expires_at_ms(profile, self._retention))
        self._partitions.setdefault(partition, {})[key] = value
        return value

    def restore(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply one changelog record while restoring a partition (None = tombstone).

        Only the header is checked here (a restore of a million profiles must be fast); a record
        of an unknown format version fails the restore loudly.

        Raises:
            ProfileDecodeError: unknown format version or truncated header.
        """
        profiles = self._partitions.setdefault(partition, {})
        if value is None:
            profiles.pop(key, None)
            return
        read_expires_at(value)
        profiles[key] = bytes(value)

    def drop_partition(self, partition: int) -> None:
        """Forget every profile of a revoked partition."""
        self._partitions.pop(partition, None)

    def expire(
        self, now: datetime, partitions: Iterable[int] | None = None
    ) -> list[ChangelogWrite]:
        """Remove profiles whose every part has expired; return the tombstones to write.

        Reads only each value's 9-byte header (about 0.8 s per million profiles on one core);
        pass ``partitions`` to spread the scan over several calls.
        """
        now_ms = epoch_ms(now)
        chosen = tuple(self._partitions) if partitions is None else tuple(partitions)
        tombstones: list[ChangelogWrite] = []
        for partition in chosen:
            profiles = self._partitions.get(partition, {})
            expired = [k for k, v in profiles.items() if read_expires_at(v) < now_ms]
            for key in expired:
                del profiles[key]
                tombstones.append(ChangelogWrite(partition, key, None))
        return tombstones

    def partitions(self) -> Iterator[int]:
        return iter(tuple(self._partitions))

    def __len__(self) -> int:
        return sum(len(p) for p in self._partitions.values())

    def count(self, partition: int) -> int:
        return len(self._partitions.get(partition, {}))
