"""Deterministic sample commerce events: the traffic of the demo, the tests and ``produce-sample``.

A seeded generator of believable user journeys, so that a demo shows every path of the service
and a test can name the event it expects. Each user, keyed by ``user_key``, does this, in time
order:

1. arrives through one channel (weights in ``CHANNELS``):

   - ``ios_install``: APP_INSTALL on iOS whose ``launch_referral_url`` is a brand deep link with
     ``btn_ref=srctok-<hex>``, then a later APP_OPEN without a URL;
   - ``android_attribute``: APP_OPEN on Android with the token in integration attribute 1022
     (``com.usebutton.source_token``), as mParticle's kits record it;
   - ``ios_btn_ref``: APP_OPEN on iOS with the token in the explicit ``btn_ref`` field;
   - ``web_landing``: PAGE_VIEW on the web whose ``page_url`` is a landing URL with ``btn_ref``,
     then a second page view without it;
   - ``publisher_link``: APP_OPEN whose launch referral is a Button *publisher* link, where
     ``btn_ref`` is an ``org-`` id that must never be sent to Button as a token;
   - ``organic``: SESSION_START with no Button token at all;

   iOS devices have an IDFA (some zeroed with limited ad tracking, ATT denied), Android devices a
   GAID (some with limited ad tracking);
2. browses: a PRODUCT_VIEW and an ADD_TO_CART, sometimes a CHECKOUT or a CUSTOM event;
3. buys one to three orders reported by the SERVER platform, with customer id and email but no
   ``btn_ref`` and no device ids, so the consumer must enrich them from the user's profile. Each
   user pays in one currency (USD, EUR, JPY or KWD, amounts at that currency's precision);
   ``total_amount`` includes tax and shipping;
4. sometimes refunds an order, days later: partially (some units of one line, ``total_amount``
   the refunded amount) or fully (no products, ``total_amount`` the order total).

The same ``(n_users, seed)`` always yields the same events, byte for byte; every random choice
comes from one ``random.Random(seed)``. Events of all users are interleaved by time; each user's
own events keep their order, which is the order a producer keyed by user gives the consumer.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TextIO

from consumer.domain.event_forms import event_from_json, event_to_json
from consumer.domain.events import (
    BUTTON_MODULE_ID,
    BUTTON_SOURCE_TOKEN_KEY,
    AttAuthorizationStatus,
    CommerceData,
    CommerceEvent,
    DeviceInfo,
    Environment,
    EventType,
    Platform,
    Product,
    ProductAction,
    UserIdentities,
)
from consumer.errors import DecodeError

__all__ = [
    "CHANNELS",
    "CURRENCIES",
    "DEFAULT_START",
    "generate",
    "generate_events",
    "past_start",
    "read_jsonl",
    "write_jsonl",
]

DEFAULT_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
"""When the first journey may start; every event time is this plus a seeded offset."""

JOURNEY_SPAN = timedelta(days=17)
"""Longer than any journey (at most 6 hours of start offset plus 16 days of events): journeys
started this long ago lie wholly in the past, so none is dated after the processing time (an
event dated past MAPPING_MAX_FUTURE_SKEW_HOURS teaches the profile nothing)."""


def past_start(now: datetime) -> datetime:
    """A ``start`` for ``generate``/``generate_events`` whose journeys all end before ``now``,
    within the last weeks (inside every retention window)."""
    return now - JOURNEY_SPAN


CHANNELS: tuple[tuple[str, int], ...] = (
    ("ios_install", 25),
    ("android_attribute", 20),
    ("ios_btn_ref", 15),
    ("web_landing", 20),
    ("publisher_link", 5),
    ("organic", 15),
)
"""How users arrive, with relative weights."""


@dataclass(frozen=True, slots=True)
class _Currency:
    code: str
    exponent: int  # ISO 4217 minor-unit digits
    per_usd: Decimal  # sample exchange rate, to price the catalogue
    tax_rate: Decimal
    shipping_usd: Decimal
    weight: int


CURRENCIES: tuple[_Currency, ...] = (
    _Currency("USD", 2, Decimal(1), Decimal("0.08875"), Decimal("4.99"), 40),
    _Currency("EUR", 2, Decimal("0.92"), Decimal("0.20"), Decimal("3.90"), 30),
    _Currency("JPY", 0, Decimal(150), Decimal("0.10"), Decimal("3.50"), 15),
    _Currency("KWD", 3, Decimal("0.307"), Decimal(0), Decimal("2.00"), 15),
)
"""Currencies users pay in: a zero-, two- and three-decimal currency among them."""

_CATALOG: tuple[tuple[str, str, str, str, str, Decimal], ...] = (
    # id, name, brand, category, variant, price in USD
    ("SKU-TEE-RED-M", "Crew tee", "Northwind", "Apparel", "red / M", Decimal("24.00")),
    ("SKU-TEE-BLK-L", "Crew tee", "Northwind", "Apparel", "black / L", Decimal("24.00")),
    ("SKU-JEAN-32", "Slim jeans", "Northwind", "Apparel", "32/32", Decimal("79.50")),
    ("SKU-SNEAK-42", "Runner sneaker", "Fleetfoot", "Shoes", "EU 42", Decimal("119.99")),
    ("SKU-SOCK-3PK", "Socks, 3 pack", "Fleetfoot", "Accessories", "one size", Decimal("12.99")),
    ("SKU-MUG-01", "Enamel mug", "Campside", "Home", "white", Decimal("16.25")),
    ("SKU-LAMP-02", "Desk lamp", "Lumen & Co", "Home", "brass", Decimal("64.00")),
    ("SKU-BAG-TOTE", "Canvas tote", "Campside", "Accessories", "natural", Decimal("29.90")),
)

_FIRST_NAMES = ("Ada", "Grace", "Linus", "Mae", "Omar", "Priya", "Sven", "Yuki", "Zoe", "Kofi")
_LAST_NAMES = ("Lovelace", "Hopper", "Okafor", "Jensen", "Tanaka", "Haddad", "Novak", "Silva")
_ZERO_IDFA = "00000000-0000-0000-0000-000000000000"
_BRAND_APP_LINK = "https://brand.example/p/{product}?btn_ref={token}"
_BRAND_LANDING = "https://www.brand.example/products/{product}?utm_source=button&btn_ref={token}"
_PUBLISHER_LINK = (
    "https://r.bttn.io/?btn_ref={org}&btn_url=https%3A%2F%2Fbrand.example%2Fp%2F{product}"
)


class _Journey:
    """One user's events, built in time order from the shared random source."""

    def __init__(self, rng: random.Random, start: datetime, taken_orders: set[str]) -> None:
        self.rng = rng
        self.now = start
        self.taken_orders = taken_orders
        self.events: list[CommerceEvent] = []
        self.user_key = f"u-{rng.getrandbits(48):012x}"
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        number = rng.randrange(1, 1000)
        # Real emails come with stray case and spaces; the consumer must normalise before hashing.
        email = f"{first}.{last}{number}@Example.com"
        if rng.random() < 0.3:
            email = f" {email.upper()} "
        self.identities = UserIdentities(customer_id=f"cust-{rng.getrandbits(32):08x}", email=email)
        self.currency = rng.choices(CURRENCIES, weights=[c.weight for c in CURRENCIES])[0]

    # --- helpers -------------------------------------------------------------------------------

    def _wait(self, low_seconds: int, high_seconds: int) -> None:
        self.now += timedelta(seconds=self.rng.randint(low_seconds, high_seconds))

    def _event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _token(self) -> str:
        return f"srctok-{self.rng.getrandbits(64):016x}"

    def _emit(self, event_type: EventType, platform: Platform, **fields: Any) -> None:
        self.events.append(
            CommerceEvent(
                event_id=self._event_id(),
                event_type=event_type,
                event_time=self.now,
                user_key=self.user_key,
                platform=platform,
                environment=Environment.PRODUCTION,
                **fields,
            )
        )

    def _ios_device(self) -> DeviceInfo:
        idfv = str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper()
        if self.rng.random() < 0.2:
            return DeviceInfo(
                ios_advertising_id=_ZERO_IDFA,
                ios_idfv=idfv,
                limit_ad_tracking=True,
                att_authorization_status=AttAuthorizationStatus.DENIED,
            )
        return DeviceInfo(
            ios_advertising_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper(),
            ios_idfv=idfv,
            limit_ad_tracking=False,
            att_authorization_status=AttAuthorizationStatus.AUTHORIZED,
        )

    def _android_device(self) -> DeviceInfo:
        gaid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return DeviceInfo(android_advertising_id=gaid, limit_ad_tracking=self.rng.random() < 0.1)

    def _price(self, usd: Decimal) -> Decimal:
        quantum = Decimal(1).scaleb(-self.currency.exponent)
        return (usd * self.currency.per_usd).quantize(quantum, rounding=ROUND_HALF_EVEN)

    def _product(self, quantity: int = 1) -> Product:
        pid, name, brand, category, variant, usd = self.rng.choice(_CATALOG)
        return Product(
            id=pid,
            sku=pid,
            name=name,
            brand=brand,
            category=category,
            variant=variant,
            price=self._price(usd),
            quantity=quantity,
            attributes={"catalog": "spring"} if self.rng.random() < 0.3 else {},
        )

    def _order_id(self) -> str:
        while True:
            order_id = f"ORD-{self.rng.getrandbits(40):010X}"
            if order_id not in self.taken_orders:
                self.taken_orders.add(order_id)
                return order_id

    # --- the journey -------------------------------------------------------------------------

    def arrive(self) -> tuple[Platform, DeviceInfo | None]:
        channel = self.rng.choices(
            [name for name, _ in CHANNELS], weights=[w for _, w in CHANNELS]
        )[0]
        product = self.rng.choice(_CATALOG)[0]
        if channel == "ios_install":
            device = self._ios_device()
            url = _BRAND_APP_LINK.format(product=product, token=self._token())
            self._emit(
                EventType.APP_INSTALL, Platform.IOS, device_info=device, launch_referral_url=url
            )
            self._wait(60, 3 * 3600)
            self._emit(EventType.APP_OPEN, Platform.IOS, device_info=device)
            return Platform.IOS, device
        if channel == "android_attribute":
            device = self._android_device()
            attrs = {BUTTON_MODULE_ID: {BUTTON_SOURCE_TOKEN_KEY: self._token()}}
            self._emit(
                EventType.APP_OPEN,
                Platform.ANDROID,
                device_info=device,
                integration_attributes=attrs,
                launch_referral_url=f"https://brand.example/p/{product}",
            )
            return Platform.ANDROID, device
        if channel == "ios_btn_ref":
            device = self._ios_device()
            self._emit(EventType.APP_OPEN, Platform.IOS, device_info=device, btn_ref=self._token())
            return Platform.IOS, device
        if channel == "web_landing":
            url = _BRAND_LANDING.format(product=product, token=self._token())
            self._emit(EventType.PAGE_VIEW, Platform.WEB, page_url=url, event_name="Product")
            self._wait(5, 120)
            self._emit(
                EventType.PAGE_VIEW,
                Platform.WEB,
                page_url="https://www.brand.example/cart",
                event_name="Cart",
            )
            return Platform.WEB, None
        if channel == "publisher_link":
            device = self._android_device()
            org = f"org-{self.rng.getrandbits(64):016x}"
            self._emit(
                EventType.APP_OPEN,
                Platform.ANDROID,
                device_info=device,
                launch_referral_url=_PUBLISHER_LINK.format(org=org, product=product),
            )
            return Platform.ANDROID, device
        platform = self.rng.choice((Platform.IOS, Platform.ANDROID))
        device = self._ios_device() if platform is Platform.IOS else self._android_device()
        self._emit(EventType.SESSION_START, platform, device_info=device)
        return platform, device

    def browse(self, platform: Platform, device: DeviceInfo | None) -> None:
        self._wait(5, 600)
        viewed = self._product()
        self._emit(
            EventType.PRODUCT_VIEW,
            platform,
            device_info=device,
            commerce=CommerceData(
                action=ProductAction.VIEW_DETAIL,
                currency_code=self.currency.code,
                products=(viewed,),
            ),
        )
        self._wait(5, 300)
        self._emit(
            EventType.ADD_TO_CART,
            platform,
            device_info=device,
            commerce=CommerceData(
                action=ProductAction.ADD_TO_CART,
                currency_code=self.currency.code,
                products=(viewed,),
            ),
        )
        if self.rng.random() < 0.4:
            self._wait(5, 300)
            self._emit(
                EventType.CHECKOUT,
                platform,
                device_info=device,
                commerce=CommerceData(
                    action=ProductAction.CHECKOUT,
                    currency_code=self.currency.code,
                    products=(viewed,),
                ),
            )
        if self.rng.random() < 0.15:
            self._wait(5, 300)
            self._emit(
                EventType.CUSTOM,
                platform,
                device_info=device,
                event_name="wishlist_shared",
                custom_attributes={"items": "1", "via": "share_sheet"},
            )

    def purchase(self) -> CommerceData:
        self._wait(60, 2 * 86400)
        lines = tuple(self._product(self.rng.randint(1, 3)) for _ in range(self.rng.randint(1, 3)))
        quantum = Decimal(1).scaleb(-self.currency.exponent)
        subtotal = sum((p.line_amount or Decimal(0) for p in lines), Decimal(0))
        tax = (subtotal * self.currency.tax_rate).quantize(quantum, rounding=ROUND_HALF_EVEN)
        shipping = self._price(self.currency.shipping_usd) if self.rng.random() < 0.6 else None
        total = subtotal + tax + (shipping or Decimal(0))
        order = CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=self._order_id(),
            currency_code=self.currency.code,
            total_amount=total,
            tax_amount=tax,
            shipping_amount=shipping,
            coupon_code="WELCOME10" if self.rng.random() < 0.1 else None,
            affiliation="online store",
            products=lines,
        )
        self._emit(
            EventType.PURCHASE,
            Platform.SERVER,
            user_identities=self.identities,
            commerce=order,
            custom_attributes={"payment": self.rng.choice(("card", "paypal", "apple_pay"))},
        )
        return order

    def refund(self, order: CommerceData) -> None:
        roll = self.rng.random()
        if roll >= 0.25:
            return
        self._wait(86400, 5 * 86400)
        if roll < 0.15 and order.products:
            line = self.rng.choice(order.products)
            units = self.rng.randint(1, line.quantity)
            refunded = Product(
                id=line.id,
                sku=line.sku,
                name=line.name,
                price=line.price,
                quantity=units,
            )
            data = CommerceData(
                action=ProductAction.REFUND,
                transaction_id=order.transaction_id,
                currency_code=order.currency_code,
                total_amount=refunded.line_amount,
                products=(refunded,),
            )
        else:
            data = CommerceData(
                action=ProductAction.REFUND,
                transaction_id=order.transaction_id,
                currency_code=order.currency_code,
                total_amount=order.total_amount,
            )
        self._emit(
            EventType.REFUND, Platform.SERVER, user_identities=self.identities, commerce=data
        )


def generate_events(
    n_users: int, seed: int = 0, *, start: datetime = DEFAULT_START
) -> Iterator[CommerceEvent]:
    """Sample events of ``n_users`` users, interleaved by time (see the module docstring)."""
    rng = random.Random(seed)  # noqa: S311 -- sample data, not security
    taken_orders: set[str] = set()
    journeys: list[list[CommerceEvent]] = []
    for _ in range(n_users):
        journey = _Journey(rng, start + timedelta(seconds=rng.randint(0, 6 * 3600)), taken_orders)
        platform, device = journey.arrive()
        journey.browse(platform, device)
        for _ in range(rng.randint(1, 3)):
            journey.refund(journey.purchase())
        journeys.append(journey.events)
    # Each journey is in time order; sorting by (time, user, position) keeps it and interleaves.
    tagged = (
        ((e.event_time, u, i), e) for u, evs in enumerate(journeys) for i, e in enumerate(evs)
    )
    for _, event in sorted(tagged, key=lambda pair: pair[0]):
        yield event


def generate(
    n_users: int, seed: int = 0, *, start: datetime = DEFAULT_START
) -> Iterator[tuple[bytes, CommerceEvent]]:
    """``(Kafka key, event)`` pairs: the key is the UTF-8 ``user_key``, as producers must key."""
    for event in generate_events(n_users, seed, start=start):
        yield event.user_key.encode("utf-8"), event


def write_jsonl(events: Iterable[CommerceEvent], out: TextIO) -> int:
    """Write events as JSON lines in ``event_from_json``'s form; returns how many were written."""
    count = 0
    for event in events:
        out.write(json.dumps(event_to_json(event), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def read_jsonl(lines: Iterable[str]) -> Iterator[CommerceEvent]:
    """Read JSON lines written by ``write_jsonl`` (or by hand); blank lines are skipped.

    Numbers are parsed as ``Decimal``, so JSON numbers keep their exact value.

    Raises:
        DecodeError: a line is not JSON (``invalid_json``) or not a valid event; the message
            starts with the line number.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            raise DecodeError("invalid_json", f"line {number}: not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise DecodeError("invalid_json", f"line {number}: not a JSON object")
        try:
            yield event_from_json(obj)
        except DecodeError as exc:
            raise DecodeError(exc.reason, f"line {number}: {exc}") from exc
