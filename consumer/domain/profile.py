"""The per-user profile: what earlier events taught us that a later order needs.

A purchase often arrives without its Button token (the token came with an install or a deep-link
open days earlier), without its advertising id, and a partial refund arrives without the order it
reduces. The profile remembers, per Kafka record key (the user): a short history of ``btn_ref``
tokens with their event times and sources, of advertising ids with their times, the event time
of the user's latest tracking refusal of each kind of id (so an older event arriving late cannot
teach a refused id again), and the recent orders (line items, total,
status, refund events already applied) for as long as Button may still change them.

The profile also holds the user's *parked* orders (DESIGN, 5): an order one of whose events was
dead-lettered, so that its later events follow it to the DLQ instead of reaching Button. Kept
here, parking survives restarts and rebalances with the rest of the profile (DESIGN, 7).

The model is immutable and pure; its changelog bytes are ``profile_codec``'s job and the
profiles of the owned partitions are held by ``consumer.engine.profiles.ProfileStore``. The
plaintext email is never part of a profile.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from consumer.domain.attribution import ResolvedToken, TokenSource, is_forwardable_btn_ref
from consumer.domain.identity import DeviceIdKind

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware ``datetime``.

    Raises:
        ValueError: ``moment`` is naive (a naive time would silently mean the host's zone).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class OrderStatus(StrEnum):
    """What the service last told Button about an order."""

    OPEN = "open"  # created
    UPDATED = "updated"  # updated since (refunded in part, or revised): Button has that state
    CANCELLED = "cancelled"  # fully refunded or cancelled: deleted at Button, never re-created
    PENDING = "pending"  # nothing sent yet: refunds held until the purchase arrives


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
class StoredRefund:
    """One refund event of an order, kept so the order's state can be recomputed in event time.

    ``products`` are the refunded (product id, quantity) pairs, ``amount`` the refunded amount
    net of tax and shipping in major units (a decimal string) or ``None``, ``currency`` the
    refund's own currency code if it gave one. No products and no amount is a full refund.
    ``folded`` marks a refund from an older profile format whose effect is already in the
    order's stored state: it only makes a replay of that event recognisable.
    """

    event_id: str
    event_ms: int
    products: tuple[tuple[str, int], ...] = ()
    amount: str | None = None
    currency: str | None = None
    folded: bool = False

    @property
    def full(self) -> bool:
        return not self.folded and not self.products and self.amount is None


@dataclass(frozen=True, slots=True)
class StoredCustomer:
    """The ``customer`` an order's create carried, as its ledger keeps it for the updates.

    Button may read an update as the order's whole new state, so every update carries the
    create's customer again. ``id`` and ``email_sha256`` (64 lower-case hex digits) are kept as
    sent; the advertising id is not: ``device_kind`` says which kind the create sent (``"idfa"``
    or ``"gaid"``, ``None`` for none), and an update sends the profile's id of that kind in force
    at the order's purchase time, which is the create's while the profile remembers it (an id
    forgotten since, by a tracking refusal or its retention, is not sent again).
    ``device_id``: for an order adopted from Button (``consumer.domain.adoption``), the
    advertising id Button's ``customer`` held, sent back as is (its kind is not known);
    ``None`` for a create's customer, whose id is the profile's (``device_kind``).
    """

    id: str | None = None
    email_sha256: str | None = None
    device_kind: DeviceIdKind | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order's ledger: its purchase, its refunds, and what Button was last sent.

    ``total``, ``lines``, ``currency`` and ``purchase_ms`` are the content of the purchase event
    ``created_by`` (the latest by event time when a purchase was published more than once; ``""``
    while only refunds are known), ``refunds`` every refund event of the order in event-time
    order (so a replayed refund never reduces the order twice, and a late one is applied in its
    place). The state Button should hold is recomputed from them (``mapping``); ``status`` and
    ``sent_digest`` say what Button was last sent (a digest of the body), so an event that
    changes nothing sends nothing new. ``exponent`` is the currency's minor-unit exponent fixed
    at the purchase (a currency that later leaves the ISO 4217 table keeps working);
    ``btn_ref`` is the token the create carried (so a replayed purchase sends the same one) and
    ``btn_ref_source`` where it was found; ``touched_ms`` the processing time of the last
    change (retention counts from it). ``customer`` is the customer the create carried (sent
    again with every update); ``None`` when it is not known: nothing created yet, an order
    adopted from Button, or one stored by a release before profile format 6.
    """

    order_id: str
    currency: str
    purchase_ms: int
    total: int
    lines: tuple[StoredLine, ...]
    status: OrderStatus
    created_by: str
    refunds: tuple[StoredRefund, ...]
    btn_ref: str | None
    touched_ms: int
    btn_ref_source: TokenSource | None = None
    exponent: int | None = None
    sent_digest: int = 0
    customer: StoredCustomer | None = None

    def refund(self, event_id: str) -> StoredRefund | None:
        return next((r for r in self.refunds if r.event_id == event_id), None)

    def with_sent(
        self, status: OrderStatus, digest: int, customer: StoredCustomer | None = None
    ) -> StoredOrder:
        """This order once Button was sent it: ``status``, and the ``digest`` of the body sent;
        with ``customer``, the customer a create carried (else the order's own is kept).

        ``replace(self, status=status, sent_digest=digest)`` with each field spelled out: it
        runs for every order sent, and ``dataclasses.replace`` costs twice the construction.
        """
        return StoredOrder(
            order_id=self.order_id,
            currency=self.currency,
            purchase_ms=self.purchase_ms,
            total=self.total,
            lines=self.lines,
            status=status,
            created_by=self.created_by,
            refunds=self.refunds,
            btn_ref=self.btn_ref,
            touched_ms=self.touched_ms,
            btn_ref_source=self.btn_ref_source,
            exponent=self.exponent,
            sent_digest=digest,
            customer=self.customer if customer is None else customer,
        )


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


MAX_TOKENS = 8
"""Token sightings kept per user (``with_stamped``): a token's first and latest sightings and
each change of token are kept before repeated sightings in between; enough for the opens and
deep links of an attribution window in practice, and about 60 bytes each."""
MAX_DEVICE_IDS = 3
"""Advertising ids kept per kind (IDFA, GAID) per user: the newest by event time."""


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything remembered about one user. Immutable: changes make a new ``Profile``.

    ``tokens``, ``idfas`` and ``gaids`` are histories in event-time order (oldest first),
    bounded by ``MAX_TOKENS`` and ``MAX_DEVICE_IDS``: an order takes the value in force at its
    own event time, however late it arrives (``token_at``, ``device_id_at``). ``tokens`` holds
    sightings (``with_stamped``): one token seen several times has an entry per sighting kept.

    ``idfa_refused_ms`` and ``gaid_refused_ms`` are the event times (epoch ms) of the latest
    refusal of each kind, ``None`` when none is remembered: tracking refused (limit-ad-tracking,
    ATT denied or restricted) refuses both kinds, an id reported all-zero withholds its own
    kind. An id reported at or before that time is neither kept nor sent (``with_refusal``,
    ``id_allowed``); one reported after it (tracking allowed again) is, as before the refusal.
    """

    tokens: tuple[ResolvedToken, ...] = ()
    idfas: tuple[Stamped, ...] = ()
    gaids: tuple[Stamped, ...] = ()
    orders: tuple[StoredOrder, ...] = ()
    parked: tuple[ParkedOrder, ...] = ()
    idfa_refused_ms: int | None = None
    gaid_refused_ms: int | None = None

    @property
    def btn_ref(self) -> ResolvedToken | None:
        """The newest token by event time."""
        return self.tokens[-1] if self.tokens else None

    @property
    def idfa(self) -> Stamped | None:
        """The newest IDFA by event time."""
        return self.idfas[-1] if self.idfas else None

    @property
    def gaid(self) -> Stamped | None:
        """The newest GAID by event time."""
        return self.gaids[-1] if self.gaids else None

    @property
    def is_empty(self) -> bool:
        return (
            not self.tokens
            and not self.idfas
            and not self.gaids
            and not self.orders
            and not self.parked
            and self.idfa_refused_ms is None
            and self.gaid_refused_ms is None
        )

    def token_at(self, moment_ms: int, window_ms: int) -> ResolvedToken | None:
        """The token in force at ``moment_ms``: its latest sighting at or before it, if that
        sighting is at most ``window_ms`` old (a token seen again is fresh again). Entries that
        are no token (``attribution.is_forwardable_btn_ref``) are skipped."""
        for token in reversed(self.tokens):
            if token.seen_at_ms <= moment_ms and is_forwardable_btn_ref(token.value):
                # (A value that is no token, a placeholder the previous release remembered,
                # is passed over as if never seen.)
                return token if moment_ms - token.seen_at_ms <= window_ms else None
        return None

    def order(self, order_id: str) -> StoredOrder | None:
        for stored in self.orders:
            if stored.order_id == order_id:
                return stored
        return None

    def with_order(self, order: StoredOrder) -> Profile:
        """This profile with ``order`` added, or replacing the order of the same id."""
        others = tuple(o for o in self.orders if o.order_id != order.order_id)
        # Constructed rather than ``replace``d: this runs for every order event.
        return Profile(
            self.tokens,
            self.idfas,
            self.gaids,
            (*others, order),
            self.parked,
            self.idfa_refused_ms,
            self.gaid_refused_ms,
        )

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

    ``btn_ref_ms`` is the attribution window plus the lag allowance, counted from each token
    sighting's event time: a sighting older than that is forgotten, and a token seen again
    lives on in its newer sightings (the profile expires with its newest one);
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
    candidates.extend(
        refused + retention.device_id_ms
        for refused in (profile.idfa_refused_ms, profile.gaid_refused_ms)
        if refused is not None
    )
    if profile.tokens:
        candidates.append(profile.tokens[-1].seen_at_ms + retention.btn_ref_ms)
    for history in (profile.idfas, profile.gaids):
        if history:
            candidates.append(history[-1].seen_at_ms + retention.device_id_ms)
    return max(candidates, default=-(2**63))


def prune(profile: Profile, now_ms: int, retention: Retention) -> Profile:
    """``profile`` without its expired parts (the same object if nothing expired)."""
    if profile.is_empty:  # a new user's: nothing to look at
        return profile
    tokens = tuple(t for t in profile.tokens if t.seen_at_ms + retention.btn_ref_ms >= now_ms)
    idfas, gaids = (
        tuple(d for d in history if d.seen_at_ms + retention.device_id_ms >= now_ms)
        for history in (profile.idfas, profile.gaids)
    )
    orders = tuple(o for o in profile.orders if o.touched_ms + retention.order_ms >= now_ms)
    parked = tuple(p for p in profile.parked if p.touched_ms + retention.order_ms >= now_ms)
    # A refusal matters while an id reported before it could still be in use: as long as ids.
    idfa_refused, gaid_refused = (
        None if refused is None or refused + retention.device_id_ms < now_ms else refused
        for refused in (profile.idfa_refused_ms, profile.gaid_refused_ms)
    )
    if (
        len(tokens) == len(profile.tokens)
        and len(idfas) == len(profile.idfas)
        and len(gaids) == len(profile.gaids)
        and len(orders) == len(profile.orders)
        and len(parked) == len(profile.parked)
        and idfa_refused == profile.idfa_refused_ms
        and gaid_refused == profile.gaid_refused_ms
    ):
        return profile
    return Profile(tokens, idfas, gaids, orders, parked, idfa_refused, gaid_refused)


def with_stamped(
    history: tuple[ResolvedToken, ...], item: ResolvedToken, limit: int
) -> tuple[ResolvedToken, ...]:
    """``history`` with the sighting ``item`` in event-time order, within ``limit`` entries.

    The history is a list of *sightings*: each entry is a token with an event time it was
    really seen at, so ``Profile.token_at`` is the latest sighting at or before a moment, and
    the window counts from that sighting, whatever order the sightings arrived in. A token seen
    again is another entry: merging it into one (as the previous release did, keeping only the
    latest of consecutive sightings of one value) loses the time it was first in force, and an
    order dated between two sightings of one token found nothing before it.

    A sighting already held (same value, same time; whatever its source) changes nothing; an
    entry that is no token (``attribution.is_forwardable_btn_ref``: a placeholder remembered by an
    older release) is dropped with the next sighting added. Beyond
    ``limit`` entries, the least useful one goes (``_least_useful``): first a sighting between
    two sightings of its own token (the token in force at every moment stays the same, only the
    freshness between its neighbours is counted from the earlier one), else the oldest.
    """
    key = (item.seen_at_ms, item.value)
    if any((t.seen_at_ms, t.value) == key for t in history):
        return history
    # Entries that are no token (placeholders an older release remembered) go at once.
    kept = (t for t in history if is_forwardable_btn_ref(t.value))
    merged = sorted((*kept, item), key=_event_time_order)
    while len(merged) > limit:
        del merged[_least_useful(merged)]
    result = tuple(merged)
    return history if result == history else result


def _event_time_order(token: ResolvedToken) -> tuple[int, str]:
    """Event time, then value: of two tokens seen at one millisecond, the greater is in force."""
    return token.seen_at_ms, token.value


def _least_useful(history: list[ResolvedToken]) -> int:
    """The index of the sighting a full history gives up.

    A sighting whose neighbours are sightings of the same token decides nothing about which
    token is in force; of those, the one whose neighbours are closest in time (its absence
    ages the token least). The first and last sightings of a run of one token are kept: the
    first is when it came into force, the last how fresh it is. With no such sighting, the
    oldest goes: only orders dated before the history's start lose their token.
    """
    best, best_gap = 0, None
    for i in range(1, len(history) - 1):
        value = history[i].value
        if history[i - 1].value == value == history[i + 1].value:
            gap = history[i + 1].seen_at_ms - history[i - 1].seen_at_ms
            if best_gap is None or gap < best_gap:
                best, best_gap = i, gap
    return best


def with_device_id(history: tuple[Stamped, ...], item: Stamped, limit: int) -> tuple[Stamped, ...]:
    """``history`` with ``item`` in event-time order; one entry per id (its latest sighting)."""
    known = next((d for d in history if d.value == item.value), None)
    if known is not None and known.seen_at_ms >= item.seen_at_ms:
        return history
    merged = sorted(
        (*(d for d in history if d.value != item.value), item),
        key=lambda d: (d.seen_at_ms, d.value),
    )
    return tuple(merged[-limit:])


def id_allowed(seen_at_ms: int, refused_ms: int | None) -> bool:
    """True if an id reported at ``seen_at_ms`` may be kept and sent given the latest refusal
    of its kind at ``refused_ms`` (``None``: none remembered): only one reported after it."""
    return refused_ms is None or seen_at_ms > refused_ms


def with_refusal(
    history: tuple[Stamped, ...], refused_ms: int | None, moment_ms: int
) -> tuple[tuple[Stamped, ...], int]:
    """A refusal of one kind of id at ``moment_ms`` (event time) applied to its ``history`` and
    to the latest refusal remembered, ``refused_ms``.

    Returns the history without the ids reported at or before the refusal (those after it, a
    later grant, stay, whatever order the events arrived in) and the latest refusal's time.
    """
    latest = moment_ms if refused_ms is None else max(refused_ms, moment_ms)
    kept = tuple(d for d in history if d.seen_at_ms > latest)
    return (history if len(kept) == len(history) else kept), latest


def device_id_at(history: tuple[Stamped, ...], moment_ms: int) -> Stamped | None:
    """The id in force at ``moment_ms``: the newest seen at or before it, else the next one."""
    for stamped in reversed(history):
        if stamped.seen_at_ms <= moment_ms:
            return stamped
    return history[0] if history else None
