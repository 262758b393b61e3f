"""Commerce event + profile -> the Button Order API request it becomes, and the new profile.

This is where merchants' money is decided, so it is one pure function (``process``) with no
clock, I/O or logging: the same event and profile always give the same request, which is what
makes replays safe and the ``map`` command an exact preview of the service's mapping (not of
what the pipeline adds around it: parking behind a dead letter, the profile's cap in bytes).

Decisions worth knowing (the README's mapping table has the field-by-field rules):

* PURCHASE -> create (``POST /v1/order``). Every event feeds the profile (token, device ids).
* REFUND -> cancel (``DELETE /v1/order/{id}``) when it covers the whole order (no products and no
  amount, an amount of at least the remaining total, every remaining unit, or, naming products,
  leaving no line with a positive amount or a remaining total of 0 or below); otherwise update
  (``POST /v1/order/{id}``) with the order's remaining line items and total, computed from the
  order stored in the profile. An amount that is nothing net of tax and shipping in the
  currency's minor unit (the tax or shipping alone, a fraction of a cent) changes no total: the
  same state re-sent, as a replay re-sends it (below), never a cancel. A ``total_amount`` of 0
  counts as none given (CDPs send 0 on a refund that names only its transaction). A refund of
  an order the profile does not know is a cancel when it names no products and no amount
  (remembered, so a later purchase is not created; a record without a key, whose profile is
  never stored, reads the order first instead, and is rejected
  ``keyless_refund_before_purchase`` when Button does not know it). Else it needs the order:
  the mapping asks for it to be read from Button (``Read``) and, given the answer (``lookup``,
  ``adoption``), adopts Button's order as the base the refund applies to (an update, or a
  cancel when nothing is left), remembers an order Button holds deleted as cancelled (skip
  ``order_already_cancelled``), or, when Button does not know the order either, holds the
  refund in the profile (``refund_held``) until the purchase arrives.
* Replays. The caller queues the new profile to the changelog before the Button call and
  finishes the record only once the write is acknowledged, so after a crash the event is
  processed again against a profile that may already contain its effect. Such an event is
  therefore never skipped: a replayed refund (its event id is already in the order's
  ``refunds``) or purchase changes nothing in the profile and re-sends the order's current state:
  the cancel, or the create with the stored state and token, whatever the event's type (the
  create may have been carried by a refund, one that made a pending order live, and never have
  reached Button: dead-lettered, or lost in a crash after the profile was written). Full-state
  updates and deletes are idempotent at Button, and a duplicate create is answered 409, which
  the pipeline follows with the update of the same state (``Send.follow_up``, DESIGN 2): the
  order's final state is the same however many times an event is replayed.
* The order ledger (``_order_event``): Button is sent the ledger's event-time state. A refund
  that does not fit the order's content is rejected and kept as not applying (a corrected
  purchase applies it; processed again while it does not apply, a duplicate or a replay of its
  dead letter, it is rejected again); refunds that leave nothing before anything was sent send
  nothing (a correction is judged again); an event that would make live again an
  order Button holds deleted is rejected ``order_deleted_at_button`` (a DELETE is permanent).
* Remaining total after a partial refund: ``current total - refunded amount`` when the refund
  carries an amount (net of tax and shipping like a purchase), else the value of the remaining
  lines, scaled by ``current total / current lines value`` when order-level discounts make the
  two differ (rounded once, half-even). A refund whose refunded units are worth less than
  nothing together (a discount line taken back) would raise what Button counts: it is rejected
  (``refund_raises_total``), never applied.
* Events from mParticle's DEVELOPMENT environment are skipped by default: Button has no test
  mode, and a test order would bill the merchant.

Every skip and reject reason is listed, with its meaning, in the README's reason table, which a
unit test (``tests/unit/test_readme_in_step.py``) keeps equal to the reasons this code emits.

How Button wants each request written (paths, bodies, line items, id rules) is ``button_wire``'s
job. Kept whole at about 900 lines: the ledger's cases share their helpers, and money
decisions are checked in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from consumer.domain.adoption import ButtonOrder, Lookup, button_order
from consumer.domain.attribution import (
    DroppedToken,
    dropped_tokens,
    resolve_btn_ref,
    token_from_event,
)
from consumer.domain.button import (
    DROPPED_INPUT_KINDS,
    KEYLESS_REFUND_BEFORE_PURCHASE,
    ORDER_EVICTED,
    ORDER_EXPIRED,
    PROFILE_CAPPED,
    REFUND_HELD,
    DiscardedRefund,
    DroppedInput,
    MapResult,
    Read,
    Reject,
    Send,
    Skip,
)
from consumer.domain.button_wire import (
    MAX_ID_LENGTH,
    body_digest,
    cancel_request,
    checked_order_id,
    create_body,
    create_request,
    line_total,
    order_body,
    read_request,
    update_body,
    update_request,
)
from consumer.domain.currency import (
    checked_total,
    minor_unit_exponent,
    order_total_minor,
    to_minor_units,
)
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    Environment,
    EventType,
    Platform,
    Product,
)
from consumer.domain.identity import (
    DeviceIdKind,
    DeviceIds,
    clean_device_id,
    device_ids,
    email_sha256,
    is_junk_device_id,
)
from consumer.domain.profile import (
    MAX_DEVICE_IDS,
    MAX_TOKENS,
    OrderStatus,
    Profile,
    Retention,
    Stamped,
    StoredCustomer,
    StoredLine,
    StoredOrder,
    StoredRefund,
    device_id_at,
    epoch_ms,
    id_allowed,
    prune,
    with_device_id,
    with_refusal,
    with_stamped,
)
from consumer.errors import MappingError

_APPLICATION_ID = re.compile(r"app-[A-Za-z0-9]{1,60}", re.ASCII)
_APPLICATION_PLATFORMS = frozenset({"ios", "android", "web"})

_PROFILE_ONLY = frozenset(
    {
        EventType.APP_INSTALL,
        EventType.APP_OPEN,
        EventType.PAGE_VIEW,
        EventType.SCREEN_VIEW,
        EventType.SESSION_START,
    }
)


@dataclass(frozen=True, slots=True)
class MappingConfig:
    """What a merchant can tune in the mapping. Validated on construction (``ValueError``).

    Attributes:
        revenue_includes_tax_and_shipping: the source's ``total_amount`` includes tax and
            shipping (the schema's and mParticle's convention), so they are subtracted;
            ``False`` uses ``total_amount`` as is.
        attribution_window: how long a remembered ``btn_ref`` may be attached to a later order.
        device_id_retention: how long a remembered advertising id is used.
        order_retention: how long orders are remembered for refunds: Button's finalization
            window for the account plus a safety margin.
        drop_when_tracking_refused: drop advertising ids of users with limit-ad-tracking on or
            ATT denied/restricted (and forget the profile's).
        skip_development_events: skip mParticle DEVELOPMENT-environment events entirely.
        max_orders_per_profile: the oldest orders beyond this are forgotten.
        lag_allowance: extra time a remembered ``btn_ref`` is kept beyond the attribution
            window, counted in processing time, so a consumer that lags (or replays) still
            attaches tokens that were in window at the order's own event time. Attribution itself
            is always judged by event times.
        max_future_skew: how far after the processing time an event may be dated. A later event
            (a device clock years off) teaches the profile nothing, and an order or refund so
            dated is rejected (``event_time_in_future``): a future purchase date would make
            Button finalize the order late, and a future token would win over every real one.
        max_event_age: how far before the processing time an event may be dated: the past-date
            mirror of ``max_future_skew``. An older event (a reset device clock: ``event_time``
            0, 1970) teaches the profile nothing, and an order or refund so dated is rejected
            (``event_time_too_old``): Button would hold a purchase dated decades back, finalized
            at once. Generous (a year by default), so that a dead-letter topic replayed at the
            end of its retention, of events that lagged first, is still sent.
        application_ids: Button application ids (``app-...``) by platform (``ios``, ``android``,
            ``web``). The public Order API has no field for them; they are validated and exposed
            for the integration's configuration and checks only.
    """

    revenue_includes_tax_and_shipping: bool = True
    attribution_window: timedelta = timedelta(days=30)
    device_id_retention: timedelta = timedelta(days=90)
    order_retention: timedelta = timedelta(days=90)
    drop_when_tracking_refused: bool = True
    skip_development_events: bool = True
    max_orders_per_profile: int = 100
    lag_allowance: timedelta = timedelta(days=2)
    max_future_skew: timedelta = timedelta(days=1)
    max_event_age: timedelta = timedelta(days=365)
    application_ids: Mapping[str, str] = field(default_factory=dict)
    _retention: Retention = field(init=False, repr=False, compare=False)
    """``retention``, computed once: every event's mapping reads it."""

    def __post_init__(self) -> None:
        for name in ("attribution_window", "device_id_retention", "order_retention"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.lag_allowance < timedelta(0):
            raise ValueError("lag_allowance must not be negative")
        if self.max_future_skew < timedelta(0):
            raise ValueError("max_future_skew must not be negative")
        if self.max_event_age <= timedelta(0):
            raise ValueError("max_event_age must be positive")
        if self.max_orders_per_profile < 1:
            raise ValueError("max_orders_per_profile must be at least 1")
        for platform, app_id in self.application_ids.items():
            if platform not in _APPLICATION_PLATFORMS:
                raise ValueError(
                    f"application_ids: unknown platform {platform!r} "
                    f"(expected one of {sorted(_APPLICATION_PLATFORMS)})"
                )
            if not _APPLICATION_ID.fullmatch(app_id):
                raise ValueError(
                    f"application_ids[{platform!r}]: {app_id!r} is not a Button application id"
                    " (app-...)"
                )
        retention = Retention(
            btn_ref_ms=_ms(self.attribution_window + self.lag_allowance),
            device_id_ms=_ms(self.device_id_retention),
            order_ms=_ms(self.order_retention),
        )
        object.__setattr__(self, "_retention", retention)

    @property
    def retention(self) -> Retention:
        """The profile retention these settings imply (for ``ProfileStore``)."""
        return self._retention

    def application_id(self, platform: str) -> str | None:
        """The Button application id configured for ``platform`` (``ios``, ``android``, ``web``)."""
        return self.application_ids.get(platform.lower())


def _ms(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# --- entry point -------------------------------------------------------------------------------


def process(
    event: CommerceEvent,
    profile: Profile | None,
    config: MappingConfig,
    now: datetime,
    *,
    received: datetime | None = None,
    lookup: Lookup | None = None,
    keyless: bool = False,
) -> tuple[MapResult, Profile | None]:
    """Decide what Button receives for ``event`` and how the user's profile changes.

    Args:
        event: a decoded, validated commerce event.
        profile: the user's stored profile (``None`` if there is none).
        config: the mapping settings.
        now: the processing time (timezone-aware); expires old profile parts. Attribution and
            ``purchase_date`` use the event's own time, so replays give the same requests.
        received: the wall-clock time the event is judged against for ``max_future_skew``
            and ``max_event_age``; ``now`` when not given (the ``map`` command expires by event
            time but judges the event's date by the time it runs).
        lookup: Button's answer to the read a first pass asked for (``Read``), for the same
            event and profile; ``None``: nothing was read.
        keyless: the event's record has no key, so no profile is kept for it (``profile`` is
            ``None`` and the returned one is never stored): a partial refund that would be held
            for its purchase (``refund_held``) has nowhere to be held and is rejected
            ``keyless_refund_before_purchase`` instead (also as ``Read.held``); a whole-order
            refund, whose cancel nothing would remember, reads the order first too, and is
            rejected so when Button does not know it (``_order_event``).

    Returns:
        The decision (``Send``, ``Skip``, ``Reject``, or ``Read`` without a ``lookup``) and the
        new profile, or ``None`` when the profile did not change. An empty returned profile
        means: delete it (tombstone).
    """
    if config.skip_development_events and event.environment is Environment.DEVELOPMENT:
        return Skip("development_event"), None
    now_ms = epoch_ms(now)
    before = profile if profile is not None else Profile()
    current = prune(before, now_ms, config.retention)
    gone = held_refunds_gone(before, current, ORDER_EXPIRED)
    misdated = _misdated(event, now if received is None else received, config)
    if misdated is None:
        current = _learn(event, current, config)
    result: MapResult
    try:
        if misdated is not None and event.event_type in (EventType.PURCHASE, EventType.REFUND):
            raise misdated
        if event.event_type in (EventType.PURCHASE, EventType.REFUND):
            kept = current
            result, current = _order_event(event, current, config, now_ms, lookup, keyless)
            gone += held_refunds_gone(kept, current, ORDER_EVICTED)
        else:
            result = skip_for(event.event_type)
    except MappingError as exc:
        result = Reject(exc.reason, str(exc))
    if gone:
        result = _reporting_gone(result, gone)
    if keyless:
        result = _unheld(result, event)
    changed = current != before
    return result, (current if changed else None)


def _misdated(
    event: CommerceEvent, received: datetime, config: MappingConfig
) -> MappingError | None:
    """Why ``event`` is dated too far from ``received`` (the wall-clock time it is judged
    against) to be believed, a device clock being off: more than ``max_future_skew`` after it
    (``event_time_in_future``) or more than ``max_event_age`` before it
    (``event_time_too_old``); ``None`` when it is not."""
    if event.event_time - received > config.max_future_skew:
        return MappingError(
            "event_time_in_future",
            f"event_time {event.event_time.isoformat()} is more than"
            f" {config.max_future_skew} after the processing time",
        )
    if received - event.event_time > config.max_event_age:
        return MappingError(
            "event_time_too_old",
            f"event_time {event.event_time.isoformat()} is more than {config.max_event_age}"
            " before the processing time: a device clock reset?",
        )
    return None


_GONE = {
    ORDER_EXPIRED: "held for order {order_id!r}, which expired from the profile (no event of it"
    " within the order retention) before its purchase arrived",
    ORDER_EVICTED: "held for order {order_id!r}, forgotten before its purchase arrived: the"
    " profile keeps only the orders touched last (its order cap)",
    PROFILE_CAPPED: "held for order {order_id!r}, forgotten before its purchase arrived: the"
    " profile was over its cap in bytes",
}


def held_refunds_gone(before: Profile, after: Profile, reason: str) -> tuple[DiscardedRefund, ...]:
    """The refunds held for their purchase (a pending order's) in ``before`` whose order is not
    in ``after``: they leave with it, never applied, and are reported so that none vanishes
    uncounted.

    Args:
        before: the profile before orders left it.
        after: the profile after (an empty ``Profile()`` for one expired whole).
        reason: why the orders left: ``ORDER_EXPIRED``, ``ORDER_EVICTED`` or
            ``PROFILE_CAPPED`` (the ``DiscardedRefund.reason``; its ``detail`` names the order).

    Raises:
        KeyError: another ``reason``.
    """
    if not before.orders:
        return ()
    detail = _GONE[reason]
    left = {order.order_id for order in after.orders}
    return tuple(
        DiscardedRefund(
            refund.event_id, reason, detail.format(order_id=order.order_id), order.order_id
        )
        for order in before.orders
        if order.status is OrderStatus.PENDING
        and not order.created_by  # (its purchase came: the refunds met it, none is held)
        and order.order_id not in left
        for refund in order.refunds
    )


def _unheld(result: MapResult, event: CommerceEvent) -> MapResult:
    """``result`` for a record without a key: a refund held for its purchase (``REFUND_HELD``,
    or a ``Read``'s ``held``) rejected instead, since no profile is kept to hold it in (the
    profile that would hold it is never stored, and the purchase arriving later would be created
    whole). Its dead letter is replayable once the purchase has reached Button: the replay's
    read finds the order and applies the refund to it."""
    held = result.held if isinstance(result, Read) else result
    if not isinstance(held, Skip) or held.reason != REFUND_HELD:
        return result
    rejected = Reject(
        KEYLESS_REFUND_BEFORE_PURCHASE,
        f"a partial refund of order {event.order_id!r}, which Button does not know (or was not"
        " read): its purchase has not reached Button yet, and the record has no key, so there"
        " is no profile to hold the refund in until the purchase arrives; replay it once the"
        " purchase has reached Button",
        held.discarded,
    )
    return replace(result, held=rejected) if isinstance(result, Read) else rejected


def _reporting_gone(result: MapResult, gone: tuple[DiscardedRefund, ...]) -> MapResult:
    """``result`` also reporting the held refunds ``gone`` with their order."""
    if isinstance(result, Read):
        return replace(result, held=replace(result.held, discarded=(*result.held.discarded, *gone)))
    return replace(result, discarded=(*result.discarded, *gone))


def event_dropped_tokens(event: CommerceEvent) -> tuple[DroppedToken, ...]:
    """The junk ``event`` carried where a Button token goes (``attribution.dropped_tokens`` over
    its explicit ``btn_ref``, integration attribute 1022, launch referral and page URLs), for
    the service to count and log (``btn_ref_dropped``). Empty for most events."""
    return dropped_tokens(
        event.btn_ref,
        event.integration_attributes,
        (event.launch_referral_url, event.page_url),
    )


def dropped_inputs(event: CommerceEvent) -> tuple[DroppedInput, ...]:
    """What ``event`` carried that Button is not sent and the profile does not learn, for the
    service to count and log (the ``btn_ref`` junk is ``attribution.dropped_tokens``'): each
    product of a purchase without a price (``line_items``, ``product_without_price``, its id:
    the order goes without line items, ``_lines_known``); an advertising id that is not a UUID
    (``ios_advertising_id`` or ``android_advertising_id``, ``not_uuid``, without the value: it
    may be anything)."""
    dropped: list[DroppedInput] = []
    if event.event_type is EventType.PURCHASE and event.commerce is not None:
        dropped.extend(
            DroppedInput(*DROPPED_INPUT_KINDS[0], product.id)
            for product in event.commerce.products
            if product.price is None and product.quantity != 0
        )
    info = event.device_info
    if info is not None:
        dropped.extend(
            DroppedInput(*kind)
            for kind, value in (
                (DROPPED_INPUT_KINDS[1], info.ios_advertising_id),
                (DROPPED_INPUT_KINDS[2], info.android_advertising_id),
            )
            if is_junk_device_id(value)
        )
    return tuple(dropped)


def skip_for(event_type: EventType) -> Skip:
    """The decision for an event of a type that is not an order's (not PURCHASE or REFUND)."""
    if event_type in _PROFILE_ONLY:
        return Skip("profile_only")
    if event_type is EventType.UNKNOWN:
        return Skip("unknown_event_type")
    return Skip("not_an_order")


# --- the profile learns from every event --------------------------------------------------------


def _learn(event: CommerceEvent, profile: Profile, config: MappingConfig) -> Profile:
    """Add the event's token and advertising ids to the profile's histories, by event time.

    A tracking refusal (both kinds) or an id reported all-zero (its kind) is remembered with
    its event time and forgets the ids reported at or before it; an id reported at or before
    the latest refusal of its kind (an older event arriving late) is not learned.
    """
    event_ms = epoch_ms(event.event_time)
    token = token_from_event(
        event.btn_ref,
        event.integration_attributes,
        (event.launch_referral_url, event.page_url),
        event_ms,
    )
    tokens = profile.tokens
    if token is not None:
        tokens = with_stamped(tokens, token, MAX_TOKENS)
    idfas, gaids = profile.idfas, profile.gaids
    idfa_refused, gaid_refused = profile.idfa_refused_ms, profile.gaid_refused_ms
    ids = _event_device_ids(event, config)
    if ids is not None:
        if ids.refused or ids.idfa_withheld:
            idfas, idfa_refused = with_refusal(idfas, idfa_refused, event_ms)
        else:
            idfas = _seen(idfas, ids.idfa, event_ms, idfa_refused)
        if ids.refused or ids.gaid_withheld:
            gaids, gaid_refused = with_refusal(gaids, gaid_refused, event_ms)
        else:
            gaids = _seen(gaids, ids.gaid, event_ms, gaid_refused)
    if (
        tokens is profile.tokens
        and idfas is profile.idfas
        and gaids is profile.gaids
        and idfa_refused == profile.idfa_refused_ms
        and gaid_refused == profile.gaid_refused_ms
    ):
        return profile
    return replace(
        profile,
        tokens=tokens,
        idfas=idfas,
        gaids=gaids,
        idfa_refused_ms=idfa_refused,
        gaid_refused_ms=gaid_refused,
    )


def _seen(
    history: tuple[Stamped, ...], value: str | None, event_ms: int, refused_ms: int | None
) -> tuple[Stamped, ...]:
    if value is None or not id_allowed(event_ms, refused_ms):
        return history
    return with_device_id(history, Stamped(value, event_ms), MAX_DEVICE_IDS)


def _event_device_ids(event: CommerceEvent, config: MappingConfig) -> DeviceIds | None:
    info = event.device_info
    if info is None:
        return None
    return device_ids(
        info.ios_advertising_id,
        info.android_advertising_id,
        info.limit_ad_tracking,
        None if info.att_authorization_status is None else str(info.att_authorization_status),
        drop_when_tracking_refused=config.drop_when_tracking_refused,
    )


def _device_id(
    event: CommerceEvent, profile: Profile, config: MappingConfig
) -> tuple[str, DeviceIdKind] | None:
    """The order's advertising id and its kind: the event's own, else the profile's; never a
    refused one.

    The profile's is the id in force at the order's event time (the newest seen at or before
    it, else the first seen after it).

    The id of the event's platform comes first (GAID on Android, IDFA elsewhere). A profile's
    id that is no IDFA or GAID (``identity.clean_device_id``: learned by a release before the
    UUID rule) is not sent. A kind the
    event reports all-zero (withheld) is not taken from the profile either, and the event's own
    id of a kind the profile knows a refusal of at or after the event's time (the event is
    older than the user's latest word) is not sent.
    """
    own = _event_device_ids(event, config)
    if own is not None and own.refused:
        return None
    withheld_idfa = own is not None and own.idfa_withheld
    withheld_gaid = own is not None and own.gaid_withheld
    event_ms = epoch_ms(event.event_time)
    idfa = None if withheld_idfa else device_id_at(profile.idfas, event_ms)
    gaid = None if withheld_gaid else device_id_at(profile.gaids, event_ms)
    own_idfa = own.idfa if own and id_allowed(event_ms, profile.idfa_refused_ms) else None
    own_gaid = own.gaid if own and id_allowed(event_ms, profile.gaid_refused_ms) else None
    candidates: tuple[tuple[str | None, DeviceIdKind], ...] = (
        (own_idfa, "idfa"),
        (own_gaid, "gaid"),
        # A profile written before the UUID rule may hold any reported value ("opt-out"):
        # cleaned again on the way out, so such an id is never sent.
        (clean_device_id(idfa.value, kind="idfa") if idfa else None, "idfa"),
        (clean_device_id(gaid.value, kind="gaid") if gaid else None, "gaid"),
    )
    if event.platform is Platform.ANDROID:
        candidates = (candidates[1], candidates[0], candidates[3], candidates[2])
    return next(((c, kind) for c, kind in candidates if c is not None), None)


def _profile_device_id(profile: Profile, kind: DeviceIdKind, moment_ms: int) -> str | None:
    """The profile's advertising id of ``kind`` in force at ``moment_ms`` (epoch ms), cleaned
    (``identity.clean_device_id``); ``None`` when it remembers none of that kind: never seen,
    forgotten by a tracking refusal or by its retention."""
    stamped = device_id_at(profile.idfas if kind == "idfa" else profile.gaids, moment_ms)
    return None if stamped is None else clean_device_id(stamped.value, kind=kind)


def _usable_customer_id(value: str) -> bool:
    """``customer.id`` is sent when it has 1-255 characters and is not blank (the event model
    took it without surrounding whitespace, ``events.stripped_id``).

    Button documents no limit for it; 255 characters is the one it documents for the merchant's
    other strings (``order_id``, ``btn_ref``, ``customer_order_id``). A longer id is omitted and
    the order still sent: truncating or hashing it would name a customer no other channel knows.
    """
    return not value.isspace() and 0 < len(value) <= MAX_ID_LENGTH


def _customer(
    event: CommerceEvent, profile: Profile, config: MappingConfig
) -> tuple[dict[str, str], StoredCustomer]:
    """The ``customer`` of a create carried by ``event`` (its identities and the advertising id
    in force at its event time), and what the order's ledger keeps of it for the updates."""
    customer: dict[str, str] = {}
    ids = event.user_identities
    if ids is not None:
        if ids.customer_id is not None and _usable_customer_id(ids.customer_id):
            customer["id"] = ids.customer_id
        hashed = email_sha256(ids.email)
        if hashed is not None:
            customer["email_sha256"] = hashed
    device = _device_id(event, profile, config)
    if device is not None:
        customer["device_id"] = device[0]
    kept = StoredCustomer(
        customer.get("id"), customer.get("email_sha256"), None if device is None else device[1]
    )
    return customer, kept


def _order_customer(
    order: StoredOrder, event: CommerceEvent, profile: Profile, config: MappingConfig
) -> dict[str, str]:
    """The ``customer`` of a request about an order created already (an update, a create sent
    again): the create's (``StoredOrder.customer``), its advertising id the profile's of the
    create's kind in force at the order's purchase time; for an order adopted from Button, the
    ``customer`` Button held, as it held it. For an order whose customer is not known (adopted
    from Button holding none, stored by a release before profile format 6): ``event``'s
    identities, with the profile's advertising id in force at the purchase time (the event's
    platform's kind first)."""
    kept = order.customer
    if kept is None:
        customer, _ = _customer(event, profile, config)
        customer.pop("device_id", None)
        kinds: tuple[DeviceIdKind, ...] = (
            ("gaid", "idfa") if event.platform is Platform.ANDROID else ("idfa", "gaid")
        )
        device_id = next(
            (d for d in (_profile_device_id(profile, k, order.purchase_ms) for k in kinds) if d),
            None,
        )
    else:
        customer = {}
        if kept.id is not None:
            customer["id"] = kept.id
        if kept.email_sha256 is not None:
            customer["email_sha256"] = kept.email_sha256
        device_id = (
            kept.device_id  # Button's, of an adopted order: sent back as it holds it
            if kept.device_id is not None or kept.device_kind is None
            else _profile_device_id(profile, kept.device_kind, order.purchase_ms)
        )
    if device_id is not None:
        customer["device_id"] = device_id
    return customer


# --- the order ledger ---------------------------------------------------------------------------

MAX_REFUNDS_PER_ORDER = 64
"""Refund events per live order, counted apart among those that apply and those the ledger keeps
but that do not apply (held and unable to fit the purchase, rejected on arrival and kept, or
made to stop applying by a later event; ``_within_refund_cap``). A 65th that applies and
leaves the order live (or is held for its purchase) is rejected (``too_many_refunds``), and so
is a 65th that does not apply (the refund itself does not fit, or it makes a kept one stop
applying): rejected and not kept, so refunds that never apply cannot grow a profile (in memory
and in the changelog) without bound. A live order's ledger so keeps at most 128 refunds (a
corrected purchase moves refunds between the two counts, and adds none). Held refunds count as
applying until the purchase judges them, so at most 64 are held. A refund that cancels the
order is always taken, and so is any refund of an order whose ledger holds a whole-order refund
(cancelled for good, pending or not): a cancelled order's later refunds are recorded up to 65
in all, and not beyond.
"""


@dataclass(frozen=True, slots=True)
class _State:
    """The state Button should hold for an order: pending (nothing yet), cancelled, or live."""

    status: OrderStatus  # PENDING, CANCELLED, or OPEN for a live order
    total: int = 0
    lines: tuple[StoredLine, ...] = ()
    ignored: tuple[DiscardedRefund, ...] = ()
    """Refunds of the ledger that could not apply, in the order they were tried."""


def _order_event(
    event: CommerceEvent,
    profile: Profile,
    config: MappingConfig,
    now_ms: int,
    lookup: Lookup | None,
    keyless: bool = False,
) -> tuple[MapResult, Profile]:
    """Record a purchase or refund in the order's ledger and send what brings Button in step.

    The state Button should hold is recomputed from the ledger as if its events had arrived in
    event-time order (``_desired``); what is sent is the difference from what Button was last
    sent. Nothing is recorded when the event is rejected, but a refund that does not fit the
    order's content (``_not_fitting``: kept as not applying, it changes no state; up to
    ``MAX_REFUNDS_PER_ORDER`` such refunds, beyond which ``too_many_refunds`` keeps none), so the
    profile never records a state Button was not sent.

    A refund that needs an order the ledger knows no purchase of (pending) is a ``Read`` of the
    order, whose profile holds the refund; with Button's answer (``lookup``) the order is
    adopted from Button, remembered cancelled (Button holds it deleted) or held (Button does
    not know it: ``refund_held``). For a record without a key (``keyless``), whose profile is
    never stored, so is a whole-order refund of such an order: its cancel would be remembered
    nowhere, and Button's 404 to it taken as done while the purchase, arriving later, is
    created live; Button not knowing the order rejects it (``_keyless_cancel_unread``).
    """
    commerce = _commerce(event)
    order_id = checked_order_id(commerce.transaction_id)
    known = profile.order(order_id)
    if event.event_type is EventType.PURCHASE:
        order = _with_purchase(event, commerce, order_id, known, profile, config, now_ms)
    else:
        order = _with_refund(event, commerce, order_id, known, config, now_ms)
    desired = _desired(order)
    if known is not None and known.status is OrderStatus.CANCELLED:
        order, desired = _after_delete(known, order, desired)
    elif (
        known is not None
        and _whole_order_refunded(known)
        and len(order.refunds) > MAX_REFUNDS_PER_ORDER + 1
    ):
        # Pending and cancelled for good (nothing was ever sent): as after a DELETE, beyond
        # the cap nothing more is recorded, and nothing is rejected (``_within_refund_cap``).
        order, desired = known, _desired(known)
    looked = lookup if lookup is not None and lookup.order_id == order_id else None
    unremembered = keyless and _cancels_unknown_order(order, desired)
    result: MapResult
    if (
        (desired.status is OrderStatus.PENDING or unremembered)
        and looked is not None
        and looked.found
    ):
        result, order = _with_button_order(event, order, looked, profile, config)
        desired = _desired(order)
    elif unremembered:
        held = _keyless_cancel_unread(order_id)
        result = held if looked is not None else Read(read_request(order_id), held)
    else:
        result, order = _reconcile(event, order, desired, profile, config)
        if isinstance(result, Skip) and desired.status is OrderStatus.PENDING and looked is None:
            # Held until now; whether Button knows the order decides (``Read.held`` otherwise).
            result = Read(read_request(order_id), result)
    _within_refund_cap(event, known, order, desired)
    misfit = _not_fitting(event, desired)
    if misfit is not None:
        # Dead-lettered with its reason (a ``MappingError``'s, ``_desired``), and kept in the
        # ledger as a refund that does not apply: a corrected purchase applies it when it
        # fits; processed again while it does not, it is dead-lettered again.
        result = Reject(misfit.reason, misfit.detail)
    elif desired.ignored and order.status is not OrderStatus.CANCELLED:
        result = _reporting_discarded(result, desired.ignored, known)
    if order == known:
        return result, profile
    return result, _keep_orders(profile.with_order(order), config.max_orders_per_profile)


def _with_button_order(
    event: CommerceEvent, order: StoredOrder, found: Lookup, profile: Profile, config: MappingConfig
) -> tuple[MapResult, StoredOrder]:
    """The decision for ``event`` and its ledger ``order``, of which no purchase is known,
    given Button's order (``found``: the read found it). Held deleted at Button: cancelled for
    good, nothing left to refund and never created (skip ``order_already_cancelled``,
    remembered cancelled). Otherwise adopted as the base the ledger's refunds apply to.

    Raises:
        MappingError: ``order_not_adoptable`` (``adoption.button_order``).
    """
    at_button = button_order(found.order, order.order_id)
    if at_button.deleted:
        return Skip("order_already_cancelled"), replace(order, status=OrderStatus.CANCELLED)
    adopted = _adopted(order, at_button)
    return _reconcile(event, adopted, _desired(adopted), profile, config)


def _cancels_unknown_order(order: StoredOrder, desired: _State) -> bool:
    """Whether ``desired`` cancels ``order`` while the ledger knows no purchase of it and
    nothing was sent for it: a whole-order refund arriving before its purchase (or for an order
    this consumer never saw), whose cancel only a stored profile remembers."""
    return (
        desired.status is OrderStatus.CANCELLED
        and not order.created_by
        and order.status is OrderStatus.PENDING
    )


def _keyless_cancel_unread(order_id: str) -> Reject:
    """The reject of a whole-order refund of ``order_id`` whose record has no key, when Button
    does not know the order (or it was not read): sent, its cancel would be answered 404 and
    taken as done, and with no profile to remember the order cancelled the purchase arriving
    later would be created live. Its dead letter is replayable once the purchase has reached
    Button: the replay's read finds the order and cancels it."""
    return Reject(
        KEYLESS_REFUND_BEFORE_PURCHASE,
        f"a whole-order refund (a cancellation) of order {order_id!r}, which Button does not"
        " know (or was not read): its purchase has not reached Button yet, and the record has"
        " no key, so there is no profile to remember the order cancelled, and the purchase"
        " arriving later would be created live; replay it once the purchase has reached"
        " Button (its read then finds the order and cancels it)",
    )


def _not_fitting(event: CommerceEvent, desired: _State) -> DiscardedRefund | None:
    """The refund ``event`` when it does not apply to the order's content as it stands
    (``desired.ignored``): a product the order does not have, more units or more than the
    total, another currency. It is rejected with that reason and detail, as in event-time
    order, and still recorded (``_desired`` ignores it until a corrected purchase lets it
    apply). Every time it is processed while it does not apply: new to the ledger, or not (a
    duplicate, the replay of its dead letter, its record processed again after a crash that
    came before the dead letter was written, a held refund's event sent again after its
    purchase discarded it), so that replaying the dead-letter topic never makes it look
    handled. ``None`` for any other event."""
    if event.event_type is not EventType.REFUND:
        return None
    return next((r for r in desired.ignored if r.event_id == event.event_id), None)


def _after_delete(
    known: StoredOrder, order: StoredOrder, desired: _State
) -> tuple[StoredOrder, _State]:
    """The ledger ``order`` and its state ``desired`` as kept for an order deleted at Button
    (``known``, before the event; ``order``, with it): deleted for good, so the event may not
    make it live (``_never_live_after_delete``), but the ledger still takes it, so that a later
    event is judged against all of them, as far as the refund cap (beyond it a cancelled order
    records nothing more: nothing is left to refund).

    Raises:
        MappingError: ``order_deleted_at_button``.
    """
    _never_live_after_delete(known, order, desired)
    if len(order.refunds) > MAX_REFUNDS_PER_ORDER + 1:
        return known, _desired(known)
    if order.created_by != known.created_by:
        # A purchase recorded after the DELETE: its create was never sent, so a replay of it
        # has no create to send again.
        return replace(order, sent_digest=0), desired
    return order, desired


def _never_live_after_delete(known: StoredOrder, order: StoredOrder, desired: _State) -> None:
    """Refuse an event that would make live again an order Button holds deleted.

    ``known`` is the order's ledger before the event, cancelled at Button (a ``DELETE`` was
    sent, or Button's read found it deleted); ``order`` the ledger with the event (a later
    purchase as its content, or a refund added) and ``desired`` the state computed from it.
    Button's ``DELETE`` is permanent (status ``deleted``), so a live state cannot be sent: the
    event is dead-lettered instead of skipped, naming the state Button should hold. An event
    after which the order is still cancelled (a duplicate, an older publication) passes, and
    is skipped (``order_already_cancelled``) or re-sends the cancel, as before.

    Raises:
        MappingError: ``order_deleted_at_button``.
    """
    if order == known or desired.status is not OrderStatus.OPEN:
        return
    lines = ", ".join(f"{line.identifier!r} x{line.quantity}" for line in desired.lines)
    raise MappingError(
        "order_deleted_at_button",
        f"order {known.order_id!r} is deleted at Button (a DELETE is permanent); in event-time"
        f" order it would be live: total {desired.total} minor units of {order.currency},"
        f" line items {lines or 'none'}",
    )


def _reporting_discarded(
    result: MapResult, ignored: tuple[DiscardedRefund, ...], known: StoredOrder | None
) -> MapResult:
    """``result`` naming the refunds this event made stop applying (``Send.discarded``,
    ``Skip.discarded``): those of ``ignored`` (the refunds the order's new state could not
    take) that the ledger before the event (``known``) did not ignore already. A refund held
    for its purchase is judged once the purchase (or Button's order, adopted) arrives, and one
    that cannot apply to it is ignored, as in event-time order it would have been rejected: the
    order's state does not carry it, and the caller makes that visible (it has no record to
    dead-letter: the refund's was finished when it was held). Reported by the event that
    discarded it, once: a replay, or a later event of the order, finds it ignored already."""
    if not isinstance(result, Send | Skip):
        return result
    before = set() if known is None else {r.event_id for r in _desired(known).ignored}
    discarded = tuple(r for r in ignored if r.event_id not in before)
    return replace(result, discarded=discarded) if discarded else result


def _within_refund_cap(
    event: CommerceEvent, known: StoredOrder | None, order: StoredOrder, desired: _State
) -> None:
    """Refuse a refund ``event`` recorded beyond ``MAX_REFUNDS_PER_ORDER`` unless it ends in a
    cancel: beyond it among the refunds that apply, or among those that do not.

    ``known`` is the order's ledger before the event, ``order`` after it was decided, and
    ``desired`` the state computed from it. The refunds that apply and those the state ignores
    (``_State.ignored``: held for the purchase and discarded because they did not fit it,
    rejected on arrival and kept, or made to stop applying by a later event; they reduce
    nothing at Button) are capped apart, each at ``MAX_REFUNDS_PER_ORDER``: a refund after
    which more than that many apply, or more than that many do not (the refund itself does not
    fit, or it makes a kept one stop applying), is refused and not kept, so a producer sending
    refunds that never apply cannot grow the profile without bound. (A corrected purchase may
    leave more than that many not applying: it is never refused, and no refund is kept then
    until the order takes fewer.)
    The cap bounds the size of the profile (every refund of a live order is kept, so the
    state can be recomputed in event-time order); a refund after which the order is cancelled (a
    whole-order refund, every remaining unit, an amount of at least the remaining total,
    whatever ``_apply_refund`` finds leaves nothing) is recorded:
    it is what makes a replay of it send the cancel again, and an order deleted at Button
    records later refunds up to ``MAX_REFUNDS_PER_ORDER`` + 1 in all (``_after_delete``). So is
    any refund of an order whose ledger, with the event, holds a whole-order refund
    (``_whole_order_refunded``: the event's own or an earlier one), pending too: the order ends
    cancelled whatever Button holds (sent as the ``DELETE``, or nothing when nothing was ever
    sent: a purchase its held refunds left nothing of), and such a pending order records
    refunds up to ``MAX_REFUNDS_PER_ORDER`` + 1 in all, as after a ``DELETE``
    (``_order_event``). A partial refund of an order whose purchase the ledger does not know
    yet (held, ``refund_held``) cannot be told to cancel before Button is read: beyond the cap
    it is refused before the read.

    Raises:
        MappingError: ``too_many_refunds``.
    """
    if (
        known is None
        or len(order.refunds) <= len(known.refunds)
        or order.status is OrderStatus.CANCELLED
        or _whole_order_refunded(order)
    ):
        return
    not_applying = len(desired.ignored)
    applying = len(order.refunds) - not_applying
    if not_applying > MAX_REFUNDS_PER_ORDER:
        already = len(_desired(known).ignored)
        itself = next((r for r in desired.ignored if r.event_id == event.event_id), None)
        why = (
            f"with this one {not_applying} would not apply"
            if itself is None
            else f"this one does not apply either ({itself.reason}: {itself.detail})"
        )
        raise MappingError(
            "too_many_refunds",
            f"order {known.order_id!r} keeps {already} refunds that do not apply already; {why}:"
            " it is not kept",
        )
    if applying > MAX_REFUNDS_PER_ORDER:
        raise MappingError(
            "too_many_refunds", f"order {known.order_id!r} has {applying - 1} refunds already"
        )


ADOPTED = "button:adopted"
"""``StoredOrder.created_by`` of an order adopted from Button (``adoption``): its content is
Button's, not a purchase event's. Button's state is the base from then on: a purchase event of
the order arriving later (the original one, late or duplicated, or one published again) changes
nothing, since Button held the order before and may have applied refunds the purchase does not
carry; it re-sends the order's current state, as a replayed purchase does."""


def _adopted(order: StoredOrder, at_button: ButtonOrder) -> StoredOrder:
    """``order`` (its refunds, none applied at Button) with Button's state as its content, and
    that state as what Button was last sent: the refunds apply to what Button holds."""
    adopted = replace(
        order,
        currency=at_button.currency,
        purchase_ms=at_button.purchase_ms,
        total=at_button.total,
        lines=at_button.lines,
        created_by=ADOPTED,
        btn_ref=at_button.btn_ref,
        btn_ref_source=None,
        exponent=at_button.exponent,
        customer=at_button.customer,
    )
    body = order_body(adopted, line_items=_lines_known(adopted))
    return adopted.with_sent(OrderStatus.OPEN, body_digest(body))


def _with_purchase(
    event: CommerceEvent,
    commerce: CommerceData,
    order_id: str,
    known: StoredOrder | None,
    profile: Profile,
    config: MappingConfig,
    now_ms: int,
) -> StoredOrder:
    """The ledger with this purchase as the order's content, if it is the latest by event time.

    A purchase published again (a correction) replaces the content when it is later in event
    time than the one recorded (ties broken by event id); an earlier one changes nothing, nor
    does any purchase of an order adopted from Button (``ADOPTED``).
    """
    currency = commerce.currency_code or ""
    exponent = minor_unit_exponent(currency)
    lines = tuple(_stored_line(p) for p in commerce.products)
    total = _purchase_total(commerce, lines, exponent, config)
    event_ms = epoch_ms(event.event_time)
    recorded = None if known is None or not known.created_by else known
    if recorded is not None and (
        recorded.created_by in (event.event_id, ADOPTED)
        or (recorded.purchase_ms, recorded.created_by) > (event_ms, event.event_id)
    ):
        # A replay, an order adopted from Button (its state is the base), or an older
        # publication. (An order deleted at Button takes the purchase here, for the caller to
        # judge: ``_never_live_after_delete``.)
        return recorded
    window_ms = _ms(config.attribution_window)
    token = resolve_btn_ref(
        token_from_event(
            event.btn_ref,
            event.integration_attributes,
            (event.launch_referral_url, event.page_url),
            event_ms,
        ),
        profile.token_at(event_ms, window_ms),
        event_ms,
        window_ms,
    )
    btn_ref = token.value if token is not None else None
    source = token.source if token is not None else None
    if known is not None and known.status not in (OrderStatus.PENDING, OrderStatus.CANCELLED):
        btn_ref, source = known.btn_ref, known.btn_ref_source  # Button keeps the create's token
    elif btn_ref is None and known is not None:
        btn_ref, source = known.btn_ref, known.btn_ref_source
    return StoredOrder(
        order_id=order_id,
        currency=currency,
        purchase_ms=event_ms,
        total=total,
        lines=lines,
        status=OrderStatus.PENDING if known is None else known.status,
        created_by=event.event_id,
        refunds=() if known is None else known.refunds,
        btn_ref=btn_ref,
        touched_ms=now_ms,
        btn_ref_source=source,
        exponent=exponent,
        sent_digest=0 if known is None else known.sent_digest,
        customer=None if known is None else known.customer,
    )


def _with_refund(
    event: CommerceEvent,
    commerce: CommerceData,
    order_id: str,
    known: StoredOrder | None,
    config: MappingConfig,
    now_ms: int,
) -> StoredOrder:
    """The ledger with this refund added in event-time order.

    Unchanged for a replay. (An order deleted at Button takes the refund here, for the caller
    to judge, ``_never_live_after_delete``, and keeps its ledger: nothing is left to refund,
    the cancel is sent again.) The refund cap (``MAX_REFUNDS_PER_ORDER``) is checked
    once the refund's effect is known (``_within_refund_cap``): a refund that cancels the order
    is never refused for it.
    """
    if known is not None and known.refund(event.event_id) is not None:
        return known
    refund = StoredRefund(
        event_id=event.event_id,
        event_ms=epoch_ms(event.event_time),
        products=tuple((p.id, p.quantity) for p in commerce.products),
        amount=_refund_amount(commerce, config),
        currency=None if commerce.currency_code is None else commerce.currency_code.upper(),
    )
    if known is None:
        return StoredOrder(
            order_id=order_id,
            currency=refund.currency or "",
            purchase_ms=refund.event_ms,
            total=0,
            lines=(),
            status=OrderStatus.PENDING,
            created_by="",
            refunds=(refund,),
            btn_ref=None,
            touched_ms=now_ms,
        )
    refunds = sorted((*known.refunds, refund), key=lambda r: (r.event_ms, r.event_id))
    return replace(known, refunds=tuple(refunds), touched_ms=now_ms)


def _desired(order: StoredOrder) -> _State:
    """The state Button should hold: the purchase's content with every refund applied in
    event-time order. A refund that cannot apply is ignored (the event being processed is then
    rejected, ``_not_fitting``, and kept in the ledger). The ignored ones are listed
    (``_State.ignored``), for a live state only: a cancelled order has nothing left for them to
    reduce."""
    if _whole_order_refunded(order):
        return _State(OrderStatus.CANCELLED)
    if not order.created_by:
        return _State(OrderStatus.PENDING)
    total, lines = order.total, order.lines
    ignored: list[DiscardedRefund] = []
    for refund in order.refunds:
        if refund.folded:
            continue
        try:
            applied = _apply_refund(order, total, lines, refund)
        except MappingError as exc:
            ignored.append(DiscardedRefund(refund.event_id, exc.reason, str(exc)))
            continue
        if applied is None:
            return _State(OrderStatus.CANCELLED)
        total, lines = applied
    return _State(OrderStatus.OPEN, total, lines, tuple(ignored))


def _whole_order_refunded(order: StoredOrder) -> bool:
    """Whether the ledger ``order`` holds a whole-order refund (no products and no amount,
    ``StoredRefund.full``): the order is cancelled for good, whatever comes after it in arrival
    or in event time and whatever Button holds."""
    return any(r.full for r in order.refunds)


def _apply_refund(
    order: StoredOrder, total: int, lines: tuple[StoredLine, ...], refund: StoredRefund
) -> tuple[int, tuple[StoredLine, ...]] | None:
    """The order's (total, lines) after ``refund``; ``None`` when nothing is left (cancelled).

    ``total`` is the order's total before the refund (minor units), ``lines`` its lines.
    Nothing is left (a whole-order refund) when the refund names no products and no amount;
    when its amount (net of tax and shipping, minor units) is at least ``total`` and it names
    no products; or, when it names products, when no unit is left, no line with a positive
    amount is left (only discount lines, or lines of 0: ``_nothing_of_value_left``), or the
    remaining total is below 0, or 0 while ``total`` was not. An amount that is nothing in
    minor units (the tax or the shipping alone) and names no products changes nothing.

    Raises:
        MappingError: ``refund_currency_mismatch``; ``unknown_currency`` (an order stored
            without its exponent, in a currency no longer in ISO 4217); ``invalid_amount`` or
            ``total_out_of_range`` for the refund's amount; ``refund_item_not_in_order``,
            ``refund_exceeds_quantity``, ``refund_exceeds_total``, ``refund_amount_unknown``,
            ``refund_raises_total`` (``_never_raising``) or ``total_out_of_range`` for a refund
            naming products.
    """
    if refund.currency is not None and refund.currency != order.currency:
        raise MappingError(
            "refund_currency_mismatch", f"refund in {refund.currency}, order in {order.currency}"
        )
    exponent = _exponent(order)
    refund_minor = None
    if refund.amount is not None:
        try:
            refund_minor = checked_total(to_minor_units(Decimal(refund.amount), exponent))
        except MappingError as exc:
            raise MappingError(exc.reason, f"refund amount: {exc}") from exc
    if refund.products:
        remaining = _remaining_lines(lines, refund.products)
        if _nothing_of_value_left(lines, remaining, exponent):
            return None
        left = _remaining_total(total, lines, remaining, refund_minor, exponent)
        if left < 0 or left == 0 < total:
            # All of Button's total refunded, or lines left worth less than nothing: nothing is
            # left, as for an amount-only refund of at least the total. (A free order, total 0,
            # keeps its total of 0 and the lines left: the refund took nothing from it.)
            return None
        _never_raising(
            total, left, lines, remaining, exponent, with_amount=refund_minor is not None
        )
        return checked_total(left), remaining
    if refund_minor is not None:
        if refund_minor <= 0:
            # Only tax or shipping, or less than one minor unit: nothing Button's total counts.
            # Not a cancel: an order is cancelled only when all of it is (Button's order API
            # best practices).
            return total, lines
        if refund_minor < total:
            return total - refund_minor, lines
    return None


def _exponent(order: StoredOrder) -> int:
    return order.exponent if order.exponent is not None else minor_unit_exponent(order.currency)


def _reconcile(  # noqa: PLR0911 - one return per row of the reconciliation table
    event: CommerceEvent,
    order: StoredOrder,
    desired: _State,
    profile: Profile,
    config: MappingConfig,
) -> tuple[MapResult, StoredOrder]:
    """The request that brings Button from what it was last sent to ``desired``."""
    is_purchase = event.event_type is EventType.PURCHASE
    sent = order.status
    if desired.status is OrderStatus.PENDING:
        return Skip(REFUND_HELD), order
    if desired.status is OrderStatus.CANCELLED:
        if sent is OrderStatus.PENDING and order.created_by:
            # The purchase arrived after refunds that leave nothing: nothing is created, and
            # nothing was ever sent, so the order stays pending (not deleted at Button): a
            # corrected purchase, or a refund earlier in event time, is judged again and
            # created when the order is live.
            return Skip("order_already_cancelled"), order
        if sent is OrderStatus.CANCELLED and is_purchase:
            if order.created_by == event.event_id and order.sent_digest:
                # A replayed purchase whose create was sent: re-send it, so that a redriven
                # create reaches Button before the cancel that follows it in the replay.
                # No follow-up: the order is meant to end cancelled, not in this state.
                customer = _order_customer(order, event, profile, config)
                return _create(order, customer, converge=False), order
            return Skip("order_already_cancelled"), order
        # Cancel (again: a replay, or Button may hold an order this profile never saw).
        return _cancel(order.order_id), replace(order, status=OrderStatus.CANCELLED)
    if sent is OrderStatus.CANCELLED:
        return Skip("order_already_cancelled"), order
    state = order
    if desired.total != order.total or desired.lines != order.lines:  # refunds changed them
        state = replace(order, total=desired.total, lines=desired.lines)
    # Built once: the digest, the create and the update share it. Line items or not is decided
    # on the purchase's lines (``order``), so every request of the order agrees.
    body = order_body(state, line_items=_lines_known(order))
    digest = body_digest(body)
    if sent is OrderStatus.PENDING:
        customer, kept = _customer(event, profile, config)
        created = order.with_sent(OrderStatus.OPEN, digest, kept)
        return _create(state, customer, body=body), created
    if digest == order.sent_digest:
        # Nothing new for Button (a replay, or a duplicate): re-send its state as the create,
        # whatever the event (a refund may have carried the create, and that create may never
        # have reached Button: dead-lettered, or a crash after the profile was written); a 409
        # is followed by the update of the same state, idempotently. Both carry the create's
        # customer, whatever identities this event has.
        return _create(state, _order_customer(order, event, profile, config), body=body), order
    updated = order.with_sent(OrderStatus.UPDATED, digest)
    customer = _order_customer(order, event, profile, config)
    return Send(update_request(order.order_id, update_body(body, customer))), updated


def _purchase_total(
    commerce: CommerceData, lines: tuple[StoredLine, ...], exponent: int, config: MappingConfig
) -> int:
    if commerce.total_amount is not None:
        total = order_total_minor(
            commerce.total_amount,
            commerce.tax_amount,
            commerce.shipping_amount,
            exponent,
            revenue_includes_tax_and_shipping=config.revenue_includes_tax_and_shipping,
        )
        if total == 0 and _net_revenue(commerce, config) != 0:
            raise MappingError(
                "total_below_minor_unit",
                f"revenue {commerce.total_amount} is not zero but rounds to a total of 0"
                " minor units",
            )
        return total
    if lines and all(line.price is not None for line in lines):
        return checked_total(sum(line_total(line, exponent) for line in lines))
    raise MappingError("missing_total", "purchase has no total_amount and unpriced products")


def _net_revenue(commerce: CommerceData, config: MappingConfig) -> Decimal:
    net = commerce.total_amount or Decimal(0)
    if config.revenue_includes_tax_and_shipping:
        net = net - (commerce.tax_amount or 0) - (commerce.shipping_amount or 0)
    return net


def _keep_orders(profile: Profile, limit: int) -> Profile:
    if len(profile.orders) <= limit:
        return profile
    newest = sorted(profile.orders, key=lambda o: o.touched_ms)[-limit:]
    return replace(profile, orders=tuple(o for o in profile.orders if o in newest))


def _stored_line(product: Product) -> StoredLine:
    """The ledger's line of ``product``. Its id becomes the line's ``identifier`` however long:
    Button documents 255 characters for ``order_id``, ``btn_ref`` and ``customer_order_id``,
    not for a line's ``identifier``, and refusing the line would lose the whole order's
    attribution for one odd line (leaving the line out would tell Button the order held less
    than it did, and a refund naming it could not apply)."""
    return StoredLine(
        identifier=product.id,
        quantity=product.quantity,
        price=None if product.price is None else _decimal_text(product.price),
        sku=product.sku or product.id,
        description=product.name,
        category=() if not product.category else (product.category,),
        attributes=tuple(sorted(product.attributes.items())),
    )


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _refund_amount(commerce: CommerceData, config: MappingConfig) -> str | None:
    """The refunded amount net of tax and shipping (major units); None if not given, or 0: CDPs
    fill a refund that names only its transaction with revenue 0 (a whole-order refund)."""
    if not commerce.total_amount:
        return None
    net = _net_revenue(commerce, config)
    if net < 0:
        raise MappingError("negative_total", f"refund amount is negative: {net}")
    return _decimal_text(net)


def _remaining_lines(
    lines: tuple[StoredLine, ...], refunded: tuple[tuple[str, int], ...]
) -> tuple[StoredLine, ...]:
    quantities = [line.quantity for line in lines]
    for product_id, quantity in refunded:
        matching = [i for i, line in enumerate(lines) if line.identifier == product_id]
        if not matching:
            raise MappingError(
                "refund_item_not_in_order", f"refunded product {product_id!r} is not in the order"
            )
        left = quantity
        for i in matching:
            take = min(left, quantities[i])
            quantities[i] -= take
            left -= take
        if left:
            raise MappingError(
                "refund_exceeds_quantity",
                f"refund of {quantity} x {product_id!r} exceeds the remaining quantity",
            )
    return tuple(
        line if q == line.quantity else replace(line, quantity=q)
        for line, q in zip(lines, quantities, strict=True)
        if q > 0
    )


def _never_raising(
    total: int,
    left: int,
    lines: tuple[StoredLine, ...],
    remaining: tuple[StoredLine, ...],
    exponent: int,
    *,
    with_amount: bool,
) -> None:
    """Refuse a refund naming products that would raise what Button counts as commissionable.

    A refund returns money to the customer. One whose refunded units are worth less than
    nothing together (a discount line taken back alone, or with products worth less than it)
    would raise the order's ``total`` from ``total`` to ``left`` (minor units; without an
    amount the total follows the lines left), or, with an amount (``with_amount``: the total
    falls by it), the value of the line items Button rates. ``lines`` and ``remaining`` are
    the lines before and after the refund (``_remaining_lines``). Units of a line without a
    price are of unknown value: a refund naming one is not judged here (its amount decides, or
    it is ``refund_amount_unknown``).

    Raises:
        MappingError: ``refund_raises_total``, naming the refunded lines and the totals.
    """
    taken = _taken(lines, remaining)
    if any(line.price is None for line, _ in taken):
        return
    before = sum(line_total(line, exponent) for line in lines)
    after = sum(line_total(line, exponent) for line in remaining)
    if after <= before and left <= total:
        return
    named = ", ".join(f"{line.identifier!r} x{units}" for line, units in taken)
    raised = (
        f"the order's line items from {before} to {after}"
        if with_amount
        else f"the order's total from {total} to {left}"
    )
    raise MappingError(
        "refund_raises_total",
        f"refunded lines {named} are worth {before - after} minor units together: the refund"
        f" would raise {raised}",
    )


def _taken(
    lines: tuple[StoredLine, ...], remaining: tuple[StoredLine, ...]
) -> list[tuple[StoredLine, int]]:
    """Each line a refund took units from, with the units taken: ``remaining`` is ``lines``
    after it (``_remaining_lines``: in the same order, a line with units left kept as it was
    but for its quantity, a line with none left dropped)."""
    taken: list[tuple[StoredLine, int]] = []
    rest = iter(remaining)
    kept = next(rest, None)
    for line in lines:
        if kept is not None and replace(kept, quantity=line.quantity) == line:
            if kept.quantity != line.quantity:
                taken.append((line, line.quantity - kept.quantity))
            kept = next(rest, None)
        else:
            taken.append((line, line.quantity))
    return taken


def _nothing_of_value_left(
    lines: tuple[StoredLine, ...], remaining: tuple[StoredLine, ...], exponent: int
) -> bool:
    """Whether a refund that took ``lines`` to ``remaining`` leaves nothing the customer paid
    for: no unit at all, or no line with a positive amount (``line_total`` in minor units)
    where there was one (every unit bought is returned, only discount lines or lines of 0 are
    left). A line without a price may be worth something: it counts as one with a positive
    amount. An order none of whose lines had a positive amount (prices of 0, a total given
    alone) is left to its total (``_remaining_total``)."""
    if not remaining:
        return True

    def valued(line: StoredLine) -> bool:
        return line.price is None or line_total(line, exponent) > 0

    if any(valued(line) for line in remaining):  # the usual case: decided by the first line
        return False
    return any(valued(line) for line in lines)


def _remaining_total(
    total: int,
    lines: tuple[StoredLine, ...],
    remaining: tuple[StoredLine, ...],
    refund_minor: int | None,
    exponent: int,
) -> int:
    """The order's total after a refund that names products (minor units), not yet checked:
    below 0 when the lines left are worth less than nothing (a discount line left beside a
    cheaper one); the caller decides that nothing is left (``_apply_refund``).

    ``total`` is the total before the refund, ``lines`` and ``remaining`` the lines before and
    after it, ``refund_minor`` the refund's amount net of tax and shipping (or ``None``: the
    total follows the value of the lines left, scaled by ``total`` / the lines' value when an
    order-level discount makes them differ).

    Raises:
        MappingError: ``refund_exceeds_total`` (an amount above ``total``),
            ``refund_amount_unknown`` (no amount, and lines without prices or worth 0).
    """
    if refund_minor is not None:
        if refund_minor > total:
            raise MappingError(
                "refund_exceeds_total",
                f"refund of {refund_minor} exceeds the order's remaining total {total}",
            )
        return total - refund_minor
    if any(line.price is None for line in (*lines, *remaining)):
        raise MappingError(
            "refund_amount_unknown",
            "refund carries no amount and the order's lines have no prices",
        )
    before = sum(line_total(line, exponent) for line in lines)
    after = sum(line_total(line, exponent) for line in remaining)
    if before == total:
        return after
    if before <= 0:
        raise MappingError(
            "refund_amount_unknown", "refund carries no amount and the order's lines sum to 0"
        )
    # Order-level adjustments (coupons) make the total differ from the lines: keep the ratio.
    scaled = Decimal(total) * Decimal(after) / Decimal(before)
    return to_minor_units(scaled, 0)


# --- requests ----------------------------------------------------------------------------------


def _lines_known(order: StoredOrder) -> bool:
    """Whether Button is sent the line items of ``order`` (the ledger's: its purchase's lines,
    or Button's when adopted): only when the value of every line is known. A product without a
    price (of a quantity above 0) would be a line of ``total`` 0, telling Button it cost nothing
    (line totals drive segmented rates and product commissions); leaving only that line out
    would list an order of less than it was. So such an order is sent on its ``total`` (the
    event's total amount) alone, with no line items, in its create and in every update, whatever
    lines refunds leave: its commission does not switch to segmented rates midway. The ledger
    keeps the lines, so refunds naming them apply as before. A price of 0 (a free gift) is a
    real 0 and is sent."""
    return all(line.price is not None or line.quantity == 0 for line in order.lines)


def _create(
    order: StoredOrder,
    customer: Mapping[str, str],
    *,
    converge: bool = True,
    body: Mapping[str, Any] | None = None,
) -> Send:
    """The create; with ``converge``, carrying the update of the same state that the pipeline
    sends when the create is answered 409 (Button may hold another state of the order), with
    the same ``customer``: an update may be read as the whole order.
    ``body``: ``order_body(order)`` when the caller built it already."""
    state = order_body(order, line_items=_lines_known(order)) if body is None else body
    request = create_request(order.order_id, create_body(order, customer, state))
    if not converge:
        return Send(request)
    return Send(request, follow_up=update_request(order.order_id, update_body(state, customer)))


def _cancel(order_id: str) -> Send:
    return Send(cancel_request(order_id))


def _commerce(event: CommerceEvent) -> CommerceData:
    if event.commerce is None:  # the event model guarantees it; keep the mapper total anyway
        raise MappingError("missing_commerce", f"a {event.event_type} event has no commerce data")
    return event.commerce


__all__ = [
    "MappingConfig",
    "dropped_inputs",
    "held_refunds_gone",
    "process",
]
