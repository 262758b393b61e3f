"""Commerce event + profile -> the Button Order API request it becomes, and the new profile.

This is where merchants' money is decided, so it is one pure function (``process``) with no
clock, I/O or logging: the same event and profile always give the same request, which is what
makes replays safe and the ``map`` command an exact preview of the service.

Decisions worth knowing (the README's mapping table has the field-by-field rules):

* PURCHASE -> create (``POST /v1/order``). Every event feeds the profile (token, device ids).
* REFUND -> cancel (``DELETE /v1/order/{id}``) when it covers the whole order (no products and no
  smaller refund amount, or every remaining unit); otherwise update (``POST /v1/order/{id}``)
  with the order's remaining line items and total, computed from the order stored in the
  profile. A refund of an order the profile does not know is a cancel when it names no products,
  else rejected (``refund_order_unknown``): the remaining state cannot be computed.
* Replays. The caller writes the new profile to the changelog before the Button call finishes,
  so after a crash the event is processed again against a profile that already contains its
  effect. Such an event is therefore never skipped: a replayed refund (its event id is already
  in the order's ``refunds``) changes nothing in the profile and re-sends the order's current
  state (update, or cancel); a replayed purchase re-sends the create with the stored state and
  token. Full-state updates and deletes are idempotent at Button, and a duplicate create is
  answered 409, which the dispatcher treats as done: the order's final state is the same however
  many times an event is replayed.
* Remaining total after a partial refund: ``current total - refunded amount`` when the refund
  carries an amount (net of tax and shipping like a purchase), else the value of the remaining
  lines, scaled by ``current total / current lines value`` when order-level discounts make the
  two differ (rounded once, half-even).
* Events from mParticle's DEVELOPMENT environment are skipped by default: Button has no test
  mode, and a test order would bill the merchant.

Reject reasons: ``missing_order_id``, ``order_id_not_ascii``, ``order_id_too_long``,
``unknown_currency``, ``currency_without_minor_unit``, ``invalid_amount``, ``missing_total``,
``negative_total``, ``total_out_of_range``, ``line_item_identifier_too_long``,
``line_item_out_of_range``, ``purchase_after_refund``, ``refund_order_unknown``,
``refund_item_not_in_order``, ``refund_exceeds_quantity``, ``refund_exceeds_total``,
``refund_currency_mismatch``, ``refund_amount_unknown``, ``missing_commerce``.
Skip reasons: ``profile_only`` (installs, opens, page and screen views, sessions),
``not_an_order`` (cart, checkout, product views, custom events), ``unknown_event_type``,
``development_event``, ``order_already_cancelled``.

How Button wants each request written (paths, bodies, line items, id rules) is ``button_wire``'s
job. Kept whole at about 560 lines: the state machine's cases share their helpers, and money
decisions are checked in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from consumer.domain.attribution import resolve_btn_ref, token_from_event
from consumer.domain.button import MapResult, Reject, Send, Skip
from consumer.domain.button_wire import (
    MAX_ID_LENGTH,
    cancel_request,
    checked_order_id,
    create_body,
    create_request,
    line_total,
    order_body,
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
from consumer.domain.identity import DeviceIds, device_ids, email_sha256
from consumer.domain.profile import (
    OrderStatus,
    Profile,
    Retention,
    Stamped,
    StoredLine,
    StoredOrder,
    epoch_ms,
    prune,
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
    application_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("attribution_window", "device_id_retention", "order_retention"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.lag_allowance < timedelta(0):
            raise ValueError("lag_allowance must not be negative")
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

    @property
    def retention(self) -> Retention:
        """The profile retention these settings imply (for ``ProfileStore``)."""
        return Retention(
            btn_ref_ms=_ms(self.attribution_window + self.lag_allowance),
            device_id_ms=_ms(self.device_id_retention),
            order_ms=_ms(self.order_retention),
        )

    def application_id(self, platform: str) -> str | None:
        """The Button application id configured for ``platform`` (``ios``, ``android``, ``web``)."""
        return self.application_ids.get(platform.lower())


def _ms(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


# --- entry point -------------------------------------------------------------------------------


def process(
    event: CommerceEvent, profile: Profile | None, config: MappingConfig, now: datetime
) -> tuple[MapResult, Profile | None]:
    """Decide what Button receives for ``event`` and how the user's profile changes.

    Args:
        event: a decoded, validated commerce event.
        profile: the user's stored profile (``None`` if there is none).
        config: the mapping settings.
        now: the processing time (timezone-aware); expires old profile parts. Attribution and
            ``purchase_date`` use the event's own time, so replays give the same requests.

    Returns:
        The decision (``Send``, ``Skip`` or ``Reject``) and the new profile, or ``None`` when
        the profile did not change. An empty returned profile means: delete it (tombstone).
    """
    if config.skip_development_events and event.environment is Environment.DEVELOPMENT:
        return Skip("development_event"), None
    retention = config.retention
    before = profile if profile is not None else Profile()
    current = _learn(event, prune(before, epoch_ms(now), retention), config)
    result: MapResult
    try:
        if event.event_type is EventType.PURCHASE:
            result, current = _purchase(event, current, config, epoch_ms(now))
        elif event.event_type is EventType.REFUND:
            result, current = _refund(event, current, config, epoch_ms(now))
        elif event.event_type in _PROFILE_ONLY:
            result = Skip("profile_only")
        elif event.event_type is EventType.UNKNOWN:
            result = Skip("unknown_event_type")
        else:
            result = Skip("not_an_order")
    except MappingError as exc:
        result = Reject(exc.reason, str(exc))
    changed = current != before
    return result, (current if changed else None)


# --- the profile learns from every event --------------------------------------------------------


def _learn(event: CommerceEvent, profile: Profile, config: MappingConfig) -> Profile:
    """Remember the event's token and advertising ids (newest by event time wins)."""
    event_ms = epoch_ms(event.event_time)
    token = token_from_event(
        event.btn_ref,
        event.integration_attributes,
        (event.launch_referral_url, event.page_url),
        event_ms,
    )
    btn_ref = profile.btn_ref
    if token is not None and (btn_ref is None or token.seen_at_ms >= btn_ref.seen_at_ms):
        btn_ref = token
    idfa, gaid = profile.idfa, profile.gaid
    ids = _event_device_ids(event, config)
    if ids is not None:
        if ids.refused:
            idfa = gaid = None
        else:
            idfa = None if ids.idfa_withheld else _newer(idfa, ids.idfa, event_ms)
            gaid = None if ids.gaid_withheld else _newer(gaid, ids.gaid, event_ms)
    if btn_ref is profile.btn_ref and idfa is profile.idfa and gaid is profile.gaid:
        return profile
    return replace(profile, btn_ref=btn_ref, idfa=idfa, gaid=gaid)


def _newer(known: Stamped | None, value: str | None, event_ms: int) -> Stamped | None:
    if value is None:
        return known
    if known is None or event_ms >= known.seen_at_ms:
        candidate = Stamped(value, event_ms)
        return known if candidate == known else candidate
    return known


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


def _device_id(event: CommerceEvent, profile: Profile, config: MappingConfig) -> str | None:
    """The order's advertising id: the event's own, else the profile's; never a refused one.

    The id of the event's platform comes first (GAID on Android, IDFA elsewhere). A kind the
    event reports all-zero (withheld) is not taken from the profile either.
    """
    own = _event_device_ids(event, config)
    if own is not None and own.refused:
        return None
    withheld_idfa = own is not None and own.idfa_withheld
    withheld_gaid = own is not None and own.gaid_withheld
    candidates = (
        own.idfa if own else None,
        own.gaid if own else None,
        profile.idfa.value if profile.idfa and not withheld_idfa else None,
        profile.gaid.value if profile.gaid and not withheld_gaid else None,
    )
    if event.platform is Platform.ANDROID:
        candidates = (candidates[1], candidates[0], candidates[3], candidates[2])
    return next((c for c in candidates if c is not None), None)


def _customer(event: CommerceEvent, profile: Profile, config: MappingConfig) -> dict[str, str]:
    customer: dict[str, str] = {}
    ids = event.user_identities
    if ids is not None:
        if ids.customer_id and len(ids.customer_id) <= MAX_ID_LENGTH:
            customer["id"] = ids.customer_id
        hashed = email_sha256(ids.email)
        if hashed is not None:
            customer["email_sha256"] = hashed
    device_id = _device_id(event, profile, config)
    if device_id is not None:
        customer["device_id"] = device_id
    return customer


# --- purchase ----------------------------------------------------------------------------------


def _purchase(
    event: CommerceEvent, profile: Profile, config: MappingConfig, now_ms: int
) -> tuple[MapResult, Profile]:
    commerce = _commerce(event)
    order_id = checked_order_id(commerce.transaction_id)
    currency = commerce.currency_code or ""
    exponent = minor_unit_exponent(currency)
    lines = tuple(_stored_line(p) for p in commerce.products)
    total = _purchase_total(commerce, lines, exponent, config)
    event_ms = epoch_ms(event.event_time)
    existing = profile.order(order_id)
    if existing is not None:
        if existing.created_by == event.event_id:
            # A replay: re-send the create with the state and token stored the first time, also
            # when the order was cancelled since. A redelivered create is answered 409 (done);
            # a redriven one (its create was dead-lettered, its cancel parked behind it) must
            # reach Button before the cancel that follows it in the replay.
            return _create(existing, _customer(event, profile, config)), profile
        if existing.status is OrderStatus.CANCELLED:
            return Skip("order_already_cancelled"), profile
        if existing.refunds:
            raise MappingError(
                "purchase_after_refund",
                f"order {order_id!r} was already refunded; a new purchase event for it is"
                " ambiguous",
            )
    remembered = profile.btn_ref
    token = resolve_btn_ref(
        token_from_event(
            event.btn_ref,
            event.integration_attributes,
            (event.launch_referral_url, event.page_url),
            event_ms,
        ),
        remembered,
        event_ms,
        _ms(config.attribution_window),
    )
    btn_ref = token.value if token is not None else None
    source = token.source if token is not None else None
    if btn_ref is None and existing is not None:
        btn_ref, source = existing.btn_ref, existing.btn_ref_source
    stored = StoredOrder(
        order_id=order_id,
        currency=currency,
        purchase_ms=event_ms,
        total=total,
        lines=lines,
        status=OrderStatus.OPEN,
        created_by=event.event_id,
        refunds=(),
        btn_ref=btn_ref,
        touched_ms=now_ms,
        btn_ref_source=source,
    )
    request = _create(stored, _customer(event, profile, config))
    return request, _keep_orders(profile.with_order(stored), config.max_orders_per_profile)


def _purchase_total(
    commerce: CommerceData, lines: tuple[StoredLine, ...], exponent: int, config: MappingConfig
) -> int:
    if commerce.total_amount is not None:
        return order_total_minor(
            commerce.total_amount,
            commerce.tax_amount,
            commerce.shipping_amount,
            exponent,
            revenue_includes_tax_and_shipping=config.revenue_includes_tax_and_shipping,
        )
    if lines and all(line.price is not None for line in lines):
        return checked_total(sum(line_total(line, exponent) for line in lines))
    raise MappingError("missing_total", "purchase has no total_amount and unpriced products")


def _keep_orders(profile: Profile, limit: int) -> Profile:
    if len(profile.orders) <= limit:
        return profile
    newest = sorted(profile.orders, key=lambda o: o.touched_ms)[-limit:]
    return replace(profile, orders=tuple(o for o in profile.orders if o in newest))


def _stored_line(product: Product) -> StoredLine:
    if len(product.id) > MAX_ID_LENGTH:
        raise MappingError(
            "line_item_identifier_too_long",
            f"product id is {len(product.id)} characters; Button allows {MAX_ID_LENGTH}",
        )
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


# --- refund ------------------------------------------------------------------------------------


def _refund(
    event: CommerceEvent, profile: Profile, config: MappingConfig, now_ms: int
) -> tuple[MapResult, Profile]:
    commerce = _commerce(event)
    order_id = checked_order_id(commerce.transaction_id)
    order = profile.order(order_id)
    if order is None:
        if commerce.products:
            raise MappingError(
                "refund_order_unknown",
                f"partial refund of order {order_id!r}, which is not in the profile: the"
                " remaining state cannot be computed",
            )
        return _cancel(order_id), profile
    if event.event_id in order.refunds or order.status is OrderStatus.CANCELLED:
        # Already applied (a replay), or nothing is left to refund: the profile stays as it is
        # and the order's current state is sent again (idempotent at Button).
        return _current_state(order), profile
    if commerce.currency_code is not None and commerce.currency_code != order.currency:
        raise MappingError(
            "refund_currency_mismatch",
            f"refund in {commerce.currency_code}, order in {order.currency}",
        )
    exponent = minor_unit_exponent(order.currency)
    refund_minor = _refund_amount(commerce, exponent, config)
    if commerce.products:
        lines = _remaining_lines(order.lines, commerce.products)
        if sum(line.quantity for line in lines) == 0:
            status, total = OrderStatus.CANCELLED, 0
        else:
            status = OrderStatus.UPDATED
            total = _remaining_total(order, lines, refund_minor, exponent)
    elif refund_minor is not None and 0 < refund_minor < order.total:
        lines, status = order.lines, OrderStatus.UPDATED
        total = order.total - refund_minor
    else:
        lines, status, total = order.lines, OrderStatus.CANCELLED, order.total
    updated = replace(
        order,
        total=total,
        lines=lines,
        status=status,
        refunds=(*order.refunds, event.event_id),
        touched_ms=now_ms,
    )
    return _current_state(updated), profile.with_order(updated)


def _refund_amount(commerce: CommerceData, exponent: int, config: MappingConfig) -> int | None:
    """The refunded amount in minor units, net of tax and shipping; None if not given (or 0)."""
    if not commerce.total_amount:
        return None
    try:
        return order_total_minor(
            commerce.total_amount,
            commerce.tax_amount,
            commerce.shipping_amount,
            exponent,
            revenue_includes_tax_and_shipping=config.revenue_includes_tax_and_shipping,
        )
    except MappingError as exc:
        raise MappingError(exc.reason, f"refund amount: {exc}") from exc


def _remaining_lines(
    lines: tuple[StoredLine, ...], refunded: tuple[Product, ...]
) -> tuple[StoredLine, ...]:
    quantities = [line.quantity for line in lines]
    for product in refunded:
        matching = [i for i, line in enumerate(lines) if line.identifier == product.id]
        if not matching:
            raise MappingError(
                "refund_item_not_in_order", f"refunded product {product.id!r} is not in the order"
            )
        left = product.quantity
        for i in matching:
            take = min(left, quantities[i])
            quantities[i] -= take
            left -= take
        if left:
            raise MappingError(
                "refund_exceeds_quantity",
                f"refund of {product.quantity} x {product.id!r} exceeds the remaining quantity",
            )
    return tuple(
        line if q == line.quantity else replace(line, quantity=q)
        for line, q in zip(lines, quantities, strict=True)
        if q > 0
    )


def _remaining_total(
    order: StoredOrder, lines: tuple[StoredLine, ...], refund_minor: int | None, exponent: int
) -> int:
    if refund_minor is not None:
        if refund_minor > order.total:
            raise MappingError(
                "refund_exceeds_total",
                f"refund of {refund_minor} exceeds the order's remaining total {order.total}",
            )
        return order.total - refund_minor
    if any(line.price is None for line in (*order.lines, *lines)):
        raise MappingError(
            "refund_amount_unknown",
            "refund carries no amount and the order's lines have no prices",
        )
    before = sum(line_total(line, exponent) for line in order.lines)
    after = sum(line_total(line, exponent) for line in lines)
    if before == order.total:
        return checked_total(after)
    if before <= 0:
        raise MappingError(
            "refund_amount_unknown", "refund carries no amount and the order's lines sum to 0"
        )
    # Order-level adjustments (coupons) make the total differ from the lines: keep the ratio.
    scaled = Decimal(order.total) * Decimal(after) / Decimal(before)
    return checked_total(to_minor_units(scaled, 0))


# --- requests ----------------------------------------------------------------------------------


def _create(order: StoredOrder, customer: Mapping[str, str]) -> Send:
    return Send(create_request(order.order_id, create_body(order, customer)))


def _cancel(order_id: str) -> Send:
    return Send(cancel_request(order_id))


def _current_state(order: StoredOrder) -> Send:
    """The request that brings Button to the stored state of an order after a refund."""
    if order.status is OrderStatus.CANCELLED:
        return _cancel(order.order_id)
    return Send(update_request(order.order_id, order_body(order)))


def _commerce(event: CommerceEvent) -> CommerceData:
    if event.commerce is None:  # the event model guarantees it; keep the mapper total anyway
        raise MappingError("missing_commerce", f"a {event.event_type} event has no commerce data")
    return event.commerce


__all__ = [
    "MappingConfig",
    "process",
]
