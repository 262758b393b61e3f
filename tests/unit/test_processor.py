"""The profile processor: the real ProfileStore and mapping, joined by (partition, record key)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from structlog.testing import capture_logs

from consumer.domain.adoption import Lookup
from consumer.domain.button import Read, Reject, Send, Skip
from consumer.domain.events import CommerceData, CommerceEvent, EventType, Product, ProductAction
from consumer.domain.mapping import MappingConfig
from consumer.domain.profile_codec import decode_profile
from consumer.engine.pipeline import Processed
from consumer.engine.processor import ProfileProcessor
from consumer.engine.profiles import ChangelogWrite, ProfileStore, report_discarded
from tests.fakes import RecordingTelemetry

T_OPEN = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T_BUY = T_OPEN + timedelta(hours=2)
NOW = T_BUY + timedelta(minutes=1)
TOKEN = "srctok-abc123def456"
KEY = b"user-1"
PARTITION = 3


def processor() -> ProfileProcessor:
    config = MappingConfig()
    return ProfileProcessor(ProfileStore(config.retention), config)


@dataclass(frozen=True)
class Step:
    """A processed record and what applying it (as the pipeline does) wrote."""

    processed: Processed
    write: ChangelogWrite | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.processed, name)

    @property
    def profile_value_written(self) -> bytes | None:
        return None if self.write is None else self.write.value


def step(
    proc: ProfileProcessor,
    key: bytes | None,
    event: CommerceEvent,
    now: datetime,
    *,
    partition: int = PARTITION,
) -> Step:
    """Process ``event`` and apply its profile change, as the pipeline does for a record that
    is not parked."""
    processed = proc.process(partition, key, event, now)
    write = None if key is None else proc.apply(partition, key, processed)
    return Step(processed, write)


def app_open(btn_ref: str = TOKEN) -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-open",
        event_type=EventType.APP_OPEN,
        event_time=T_OPEN,
        user_key="user-1",
        btn_ref=btn_ref,
    )


def purchase(order_id: str = "ORD-1") -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-buy",
        event_type=EventType.PURCHASE,
        event_time=T_BUY,
        user_key="user-1",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order_id,
            currency_code="USD",
            total_amount=Decimal("25.00"),
        ),
    )


def body_of(done: Step | Processed) -> dict[str, object]:
    processed = done.processed if isinstance(done, Step) else done
    assert isinstance(processed.result, Send), processed.result
    body = processed.result.request.body
    assert body is not None
    return dict(body)


def test_app_open_feeds_the_profile_and_is_skipped() -> None:
    """An app open is not an order: skipped, but its btn_ref is stored and must be written."""
    opened = step(processor(), KEY, app_open(), NOW)

    assert (Skip("profile_only"), True) == (opened.result, opened.profile_changed)
    assert opened.profile_value_written is not None
    token = decode_profile(opened.profile_value_written).btn_ref
    assert token is not None
    assert token.value == TOKEN


def test_purchase_after_an_app_open_carries_the_remembered_btn_ref() -> None:
    """The token seen on the open is attached to the later purchase of the same user."""
    proc = processor()
    step(proc, KEY, app_open(), NOW)

    bought = step(proc, KEY, purchase(), NOW)

    assert body_of(bought)["btn_ref"] == TOKEN


def test_purchase_changes_the_profile_and_returns_the_changelog_bytes() -> None:
    """The purchase stores its order; the bytes to write are those now in the store."""
    proc = processor()
    step(proc, KEY, app_open(), NOW)

    bought = step(proc, KEY, purchase(), NOW)

    assert bought.profile_changed
    assert bought.profile_value_written is not None
    assert bought.profile_value_written == proc.store.get_encoded(PARTITION, KEY)
    assert [o.order_id for o in decode_profile(bought.profile_value_written).orders] == ["ORD-1"]


def test_processed_names_the_event_its_time_and_its_order() -> None:
    """event_id, event time in epoch ms and the order id come from the event."""
    bought = step(processor(), KEY, purchase("ORD-77"), NOW)

    expected = ("evt-buy", int(T_BUY.timestamp() * 1000), "ORD-77")
    assert expected == (bought.event_id, bought.event_time_ms, bought.order_id)


def test_event_without_commerce_has_no_order_id() -> None:
    """An app open has no order: order_id is empty (nothing to park)."""
    assert step(processor(), KEY, app_open(), NOW).order_id == ""


def test_unchanged_profile_is_not_written_again() -> None:
    """Seeing the same token at the same time again changes nothing: no changelog write."""
    proc = processor()
    step(proc, KEY, app_open(), NOW)

    again = step(proc, KEY, app_open(), NOW)

    assert (again.profile_changed, again.profile_value_written) == (False, None)


def test_record_without_key_stores_no_profile() -> None:
    """Without a key there is no user to remember: nothing stored, nothing to write."""
    proc = processor()

    opened = step(proc, None, app_open(), NOW)

    assert (opened.profile_changed, opened.profile_value_written, len(proc.store)) == (
        False,
        None,
        0,
    )


def test_record_without_key_uses_no_stored_profile() -> None:
    """A keyless purchase is not joined with any stored profile, so it has no btn_ref."""
    proc = processor()
    step(proc, KEY, app_open(), NOW)

    bought = step(proc, None, purchase(), NOW)

    assert "btn_ref" not in body_of(bought)


def partial_refund(order_id: str = "ORD-1") -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-refund",
        event_type=EventType.REFUND,
        event_time=T_BUY,
        user_key="user-1",
        commerce=CommerceData(
            action=ProductAction.REFUND,
            transaction_id=order_id,
            products=(Product(id="SKU-1", quantity=1),),
        ),
    )


def test_a_keyless_refund_button_does_not_know_is_dead_lettered_not_held() -> None:
    """Without a key there is no profile to hold a refund in until its purchase: Button's 404
    to the read rejects it (``keyless_refund_before_purchase``, replayable once the purchase
    reached Button), never ``refund_held`` (the refund would be lost: the purchase after it is
    created whole)."""
    proc = processor()
    not_found = Lookup("ORD-1", found=False)

    first = proc.process(PARTITION, None, partial_refund(), NOW)
    second = proc.process(PARTITION, None, partial_refund(), NOW, not_found)

    assert isinstance(first.result, Read)
    assert first.result.held.reason == "keyless_refund_before_purchase"
    assert isinstance(second.result, Reject), second.result
    assert second.result.reason == "keyless_refund_before_purchase"
    assert "no key" in second.result.detail
    assert (second.profile_changed, len(proc.store)) == (False, 0)


def test_a_keyed_refund_button_does_not_know_is_still_held() -> None:
    """With a key the profile holds it, as before."""
    processed = processor().process(
        PARTITION, KEY, partial_refund(), NOW, Lookup("ORD-1", found=False)
    )

    assert (processed.result, processed.profile_changed) == (Skip("refund_held"), True)


def whole_order_refund(order_id: str = "ORD-1") -> CommerceEvent:
    return CommerceEvent(
        event_id="evt-cancel",
        event_type=EventType.REFUND,
        event_time=T_BUY,
        user_key="user-1",
        commerce=CommerceData(action=ProductAction.REFUND, transaction_id=order_id),
    )


def test_a_keyless_whole_order_refund_button_does_not_know_is_dead_lettered_not_cancelled() -> None:
    """Without a key no profile remembers the order cancelled: the order is read first, and
    Button's 404 rejects the refund (``keyless_refund_before_purchase``, replayable once the
    purchase reached Button), never a cancel whose 404 is taken as done (``order_gone``: the
    purchase after it would be created live)."""
    proc = processor()

    first = proc.process(PARTITION, None, whole_order_refund(), NOW)
    second = proc.process(PARTITION, None, whole_order_refund(), NOW, Lookup("ORD-1", found=False))

    assert isinstance(first.result, Read), first.result
    assert first.result.held.reason == "keyless_refund_before_purchase"
    assert isinstance(second.result, Reject), second.result
    assert second.result.reason == "keyless_refund_before_purchase"
    assert len(proc.store) == 0


def test_a_keyed_whole_order_refund_is_still_cancelled_without_a_read() -> None:
    """With a key the profile remembers the order cancelled, as before."""
    processed = processor().process(PARTITION, KEY, whole_order_refund(), NOW)

    assert isinstance(processed.result, Send), processed.result
    assert (processed.result.request.method, processed.profile_changed) == ("DELETE", True)


def test_profiles_are_per_partition() -> None:
    """The same key in another partition is another profile (co-partitioned changelog)."""
    proc = processor()
    step(proc, KEY, app_open(), NOW)

    bought = step(proc, KEY, purchase(), NOW, partition=PARTITION + 1)

    assert "btn_ref" not in body_of(bought)


def test_profiles_are_per_key() -> None:
    """Another user's token is never attached to this user's order."""
    proc = processor()
    step(proc, b"user-2", app_open(), NOW)

    bought = step(proc, KEY, purchase(), NOW)

    assert "btn_ref" not in body_of(bought)


def corrupt_profile() -> bytes:
    """A version-1 header (accepted by restore) followed by a payload that is not JSON."""
    return struct.pack(">Bq", 1, 2**62) + b"{not json"


def test_corrupt_stored_profile_is_treated_as_none() -> None:
    """Unreadable stored bytes do not fail the record: the purchase maps as if no profile."""
    proc = processor()
    proc.store.restore(PARTITION, KEY, corrupt_profile())

    bought = step(proc, KEY, purchase(), NOW)

    assert "btn_ref" not in body_of(bought)
    assert bought.order_id == "ORD-1"


def test_corrupt_stored_profile_is_replaced_by_a_readable_one() -> None:
    """The new profile overwrites the corrupt bytes in the store and in the changelog."""
    proc = processor()
    proc.store.restore(PARTITION, KEY, corrupt_profile())

    bought = step(proc, KEY, purchase(), NOW)

    stored = proc.store.get(PARTITION, KEY)
    assert bought.profile_changed
    assert stored is not None
    assert [o.order_id for o in stored.orders] == ["ORD-1"]


def test_corrupt_stored_profile_is_logged() -> None:
    """An unreadable profile is reported once, as an error, without the user's key."""
    proc = processor()
    proc.store.restore(PARTITION, KEY, corrupt_profile())

    with capture_logs() as logs:
        step(proc, KEY, purchase(), NOW)

    unreadable = [e for e in logs if e["event"] == "profile_unreadable"]
    assert [e["log_level"] for e in unreadable] == ["error"]
    assert all(KEY.decode() not in str(e) for e in unreadable)


def test_the_junk_an_event_carries_where_a_token_goes_is_handed_to_the_pipeline() -> None:
    """A purchase with ``btn_ref: "undefined"`` names it (source, problem, value) so the
    pipeline counts and logs it; an event with a real token or none names nothing."""
    from consumer.domain.attribution import DroppedToken, TokenProblem, TokenSource

    proc = processor()
    junk = step(proc, KEY, replace(purchase(), btn_ref="undefined"), NOW)
    expected = (DroppedToken(TokenSource.EXPLICIT, TokenProblem.PLACEHOLDER, "undefined"),)
    assert expected == junk.dropped_tokens
    assert step(proc, KEY, app_open(), NOW).dropped_tokens == ()


def test_held_refunds_forgotten_to_the_profiles_cap_in_bytes_are_named_by_the_write() -> None:
    """Over the profile's cap in bytes the orders touched longest ago are forgotten; an order
    holding a refund for its purchase takes the refund with it. The changelog write names it
    (``profile_capped``) and ``report_discarded`` (the pipeline's, after ``apply``) counts and
    logs it: it used to vanish uncounted."""
    config = MappingConfig()
    proc = ProfileProcessor(ProfileStore(config.retention, max_bytes=400), config)
    refund = CommerceEvent(
        event_id="evt-held",
        event_type=EventType.REFUND,
        event_time=T_BUY,
        user_key="user-1",
        commerce=CommerceData(
            action=ProductAction.REFUND, transaction_id="ORD-H", total_amount=Decimal("2.50")
        ),
    )
    held = step(proc, KEY, refund, NOW)
    assert held.write is not None
    assert held.write.discarded == ()
    big = CommerceEvent(
        event_id="evt-big",
        event_type=EventType.PURCHASE,
        event_time=T_BUY,
        user_key="user-1",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id="ORD-BIG",
            currency_code="USD",
            total_amount=Decimal("10.00"),
            products=tuple(
                Product(id=f"SKU-{n}", name="x" * 40, price=Decimal("1.00")) for n in range(5)
            ),
        ),
    )
    capped = step(proc, KEY, big, NOW + timedelta(minutes=1))
    assert proc.store.capped == 1  # five lines fit 400 bytes alone, not beside the held order
    assert capped.write is not None
    telemetry = RecordingTelemetry()

    with capture_logs() as logs:
        report_discarded(telemetry, capped.write)

    assert [(d.order_id, d.event_id, d.reason) for d in capped.write.discarded] == [
        ("ORD-H", "evt-held", "profile_capped")
    ]
    assert telemetry.named("held_refund_discarded") == [("profile_capped",)]
    assert [
        (e["log_level"], e["order_id"]) for e in logs if e["event"] == "held_refund_discarded"
    ] == [("warning", "ORD-H")]
    profile = proc.store.get(PARTITION, KEY)
    assert profile is not None
    assert (profile.order("ORD-H"), profile.order("ORD-BIG") is not None) == (None, True)


def test_the_products_without_a_price_an_order_goes_without_are_handed_to_the_pipeline() -> None:
    """A purchase with a product without a price is sent without line items: each such product
    is named (``line_items``, ``product_without_price``, its id) for the pipeline to count and
    log; a product priced 0 (a free gift) or of quantity 0 names nothing."""
    from consumer.domain.button import DroppedInput

    commerce = purchase().commerce
    assert commerce is not None
    products = (
        Product(id="A", price=Decimal("10")),
        Product(id="B"),
        Product(id="GIFT", price=Decimal("0")),
        Product(id="NONE", quantity=0),
    )
    event = replace(purchase(), commerce=replace(commerce, products=products))

    dropped = step(processor(), KEY, event, NOW).dropped_inputs

    assert dropped == (DroppedInput("line_items", "product_without_price", "B"),)
