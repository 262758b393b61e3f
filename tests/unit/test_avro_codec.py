"""Avro codec: exact bytes, round trips of any valid event, and typed failures for bad bytes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.adapters.avro_codec import (
    Encoder,
    LocalDecoder,
    RegistryDecoder,
    build_decoder,
    build_encoder,
    encode_schemaless,
    encode_wire,
    load_schema,
    missing_reader_fields,
    parse_schema_text,
    split_wire,
)
from consumer.adapters.schema_registry import ConfluentSchemaSource, subject_for
from consumer.domain.event_forms import (
    event_from_json,
    event_from_record,
    event_to_json,
    event_to_record,
)
from consumer.domain.events import (
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
from consumer.errors import (
    CodecReason,
    ConfigError,
    DecodeError,
    SchemaNotFoundYetError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_TEXT = (SCHEMA_DIR / "commerce_event.avsc").read_text(encoding="utf-8")
SCHEMA = load_schema(SCHEMA_DIR / "commerce_event.avsc")

# --- golden bytes --------------------------------------------------------------------------------

APP_OPEN = CommerceEvent(
    event_id="e1",
    event_type=EventType.APP_OPEN,
    event_time=datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
    user_key="u1",
    platform=Platform.IOS,
    btn_ref="srctok-1",
)
# Field by field, in schema order (varints are zig-zag encoded):
APP_OPEN_BYTES = bytes.fromhex(
    "04 65 31"  # event_id: length 2, "e1"
    "10"  # event_type: enum index 8 (APP_OPEN)
    "d0 0f"  # event_time: long 1000 (ms)
    "02"  # platform: enum index 1 (IOS)
    "02"  # environment: enum index 1 (PRODUCTION)
    "04 75 31"  # user_key: "u1"
    "00"  # event_name: union branch 0 (null)
    "00"  # user_identities: null
    "00"  # device_info: null
    "00"  # integration_attributes: empty map (block count 0)
    "02 10 73 72 63 74 6f 6b 2d 31"  # btn_ref: branch 1, length 8, "srctok-1"
    "00"  # launch_referral_url: null
    "00"  # page_url: null
    "00"  # commerce: null
    "00"  # custom_attributes: empty map
)

PURCHASE = CommerceEvent(
    event_id="e2",
    event_type=EventType.PURCHASE,
    event_time=datetime(1970, 1, 1, tzinfo=UTC),
    user_key="u",
    platform=Platform.SERVER,
    user_identities=UserIdentities(customer_id="c"),
    commerce=CommerceData(
        action=ProductAction.PURCHASE,
        transaction_id="o",
        currency_code="USD",
        total_amount=Decimal("12.34"),
        products=(Product(id="p", price=Decimal("-1.5"), quantity=2),),
    ),
)
PURCHASE_BYTES = bytes.fromhex(
    "04 65 32"  # event_id "e2"
    "02"  # event_type: index 1 (PURCHASE)
    "00"  # event_time: 0
    "08"  # platform: index 4 (SERVER)
    "02"  # environment: PRODUCTION
    "02 75"  # user_key "u"
    "00"  # event_name: null
    "02"  # user_identities: branch 1 (record)
    "02 02 63"  #   customer_id: branch 1, "c"
    "00"  #   email: null
    "00"  #   other: empty map
    "00"  # device_info: null
    "00"  # integration_attributes: {}
    "00 00 00"  # btn_ref, launch_referral_url, page_url: null
    "02"  # commerce: branch 1 (record)
    "0e"  #   action: index 7 (PURCHASE)
    "02 02 6f"  #   transaction_id: "o"
    "02 06 55 53 44"  #   currency_code: "USD"
    "02 08 00 bc 4b 20"  #   total_amount: 4 bytes, unscaled 12340000 (12.34 at scale 6)
    "00 00 00 00"  #   tax, shipping, coupon, affiliation: null
    "02"  #   products: block of 1 item
    "02 70"  #     id "p"
    "00 00 00 00 00"  #     sku, name, brand, category, variant: null
    "02 06 e9 1c a0"  #     price: 3 bytes, unscaled -1500000 (two's complement)
    "04"  #     quantity: int 2
    "00"  #     attributes: {}
    "00"  #   end of products
    "00"  # custom_attributes: {}
)


@pytest.mark.parametrize(
    ("event", "body"), [(APP_OPEN, APP_OPEN_BYTES), (PURCHASE, PURCHASE_BYTES)], ids=["open", "buy"]
)
def test_golden_bytes_encode(event: CommerceEvent, body: bytes) -> None:
    """The plain encoding of a small event is exactly the hand-derived bytes."""
    assert body == encode_schemaless(event_to_record(event), SCHEMA)


@pytest.mark.parametrize(
    ("event", "body"), [(APP_OPEN, APP_OPEN_BYTES), (PURCHASE, PURCHASE_BYTES)], ids=["open", "buy"]
)
def test_golden_bytes_decode_plain_and_framed(event: CommerceEvent, body: bytes) -> None:
    """The registry-free decoder reads the golden body plain and in wire format with id 1."""
    decoder = build_decoder(SCHEMA_DIR)
    assert event == decoder.decode_event(body)
    assert event == decoder.decode_event(b"\x00\x00\x00\x00\x01" + body)


def test_wire_header_is_magic_byte_and_big_endian_id() -> None:
    """``encode_wire`` prefixes 0x00 and the 4-byte big-endian schema id."""
    framed = encode_wire(event_to_record(APP_OPEN), SCHEMA, 0x01020304)
    assert framed == b"\x00\x01\x02\x03\x04" + APP_OPEN_BYTES
    schema_id, body = split_wire(framed)
    assert (schema_id, bytes(body)) == (0x01020304, APP_OPEN_BYTES)


# --- round trips ---------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_name = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_id = _name.filter(lambda text: not text.isspace())  # a product id of whitespace only is none
_maps = st.dictionaries(_text, _text, max_size=3)
_amounts = st.decimals(
    min_value=Decimal(0), max_value=Decimal("99999999999999.999999"), places=6
) | st.decimals(min_value=0, max_value=10**6, places=0)
_prices = st.decimals(
    min_value=Decimal("-99999999999999.999999"),
    max_value=Decimal("99999999999999.999999"),
    places=6,
)
_times = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
_currency = st.from_regex(r"[A-Z]{3}", fullmatch=True)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


_products = st.builds(
    Product,
    id=_id,
    sku=_optional(_text),
    name=_optional(_text),
    brand=_optional(_text),
    category=_optional(_text),
    variant=_optional(_text),
    price=_optional(_prices),
    quantity=st.integers(0, 2**31 - 1),
    attributes=_maps,
)


def _commerce(action: st.SearchStrategy[ProductAction], needs_order: bool) -> Any:
    return st.builds(
        CommerceData,
        action=action,
        transaction_id=_name if needs_order else _optional(_text),
        currency_code=_currency if needs_order else _optional(_currency),
        total_amount=_optional(_amounts),
        tax_amount=_optional(_amounts),
        shipping_amount=_optional(_amounts),
        coupon_code=_optional(_text),
        affiliation=_optional(_text),
        products=st.lists(_products, max_size=3).map(tuple),
    )


_other_actions = st.sampled_from(
    [a for a in ProductAction if a not in (ProductAction.PURCHASE, ProductAction.REFUND)]
)


@st.composite
def events(draw: st.DrawFn) -> CommerceEvent:
    """Any valid event: the invariants of the model hold by construction."""
    event_type = draw(st.sampled_from(EventType))
    if event_type is EventType.PURCHASE:
        commerce = draw(_commerce(st.just(ProductAction.PURCHASE), needs_order=True))
    elif event_type is EventType.REFUND:
        commerce = draw(_commerce(st.just(ProductAction.REFUND), needs_order=True))
    elif event_type is EventType.UNKNOWN:
        commerce = draw(_optional(_commerce(st.sampled_from(ProductAction), needs_order=False)))
    else:
        commerce = draw(_optional(_commerce(_other_actions, needs_order=False)))
    return CommerceEvent(
        event_id=draw(_name),
        event_type=event_type,
        event_time=draw(_times),
        user_key=draw(_name),
        platform=draw(st.sampled_from(Platform)),
        environment=draw(st.sampled_from(Environment)),
        event_name=draw(_optional(_text)),
        user_identities=draw(
            _optional(st.builds(UserIdentities, _optional(_text), _optional(_text), _maps))
        ),
        device_info=draw(
            _optional(
                st.builds(
                    DeviceInfo,
                    _optional(_text),
                    _optional(_text),
                    _optional(_text),
                    _optional(st.booleans()),
                    _optional(st.sampled_from(AttAuthorizationStatus)),
                )
            )
        ),
        integration_attributes=draw(st.dictionaries(_text, _maps, max_size=2)),
        btn_ref=draw(_optional(_text)),
        launch_referral_url=draw(_optional(_text)),
        page_url=draw(_optional(_text)),
        commerce=commerce,
        custom_attributes=draw(_maps),
    )


_LOCAL = build_decoder(SCHEMA_DIR)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event=events())
def test_round_trip_plain(event: CommerceEvent) -> None:
    """decode(encode(x)) == x for any valid event, plain Avro."""
    assert event == _LOCAL.decode_event(Encoder(SCHEMA).encode(event_to_record(event)))


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(event=events())
def test_round_trip_wire_format_through_registry_decoder(event: CommerceEvent) -> None:
    """decode(encode(x)) == x for any valid event, wire format, schema from a registry."""
    decoder = RegistryDecoder(FakeRegistry({7: SCHEMA_TEXT}), SCHEMA)
    assert event == decoder.decode_event(Encoder(SCHEMA, 7).encode(event_to_record(event)))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(event=events())
def test_round_trip_json_form(event: CommerceEvent) -> None:
    """event_from_json(event_to_json(x)) == x, through real JSON text."""
    text = json.dumps(event_to_json(event))
    assert event == event_from_json(json.loads(text))


# --- bad payloads --------------------------------------------------------------------------------


@settings(max_examples=500)
@given(payload=st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(payload: bytes) -> None:
    """Arbitrary bytes either decode to a valid event or raise ``DecodeError``, nothing else."""
    try:
        event = _LOCAL.decode_event(payload)
    except DecodeError:
        return
    assert isinstance(event, CommerceEvent)


@pytest.mark.parametrize("cut", range(1, len(PURCHASE_BYTES)))
def test_truncated_body_is_truncated(cut: int) -> None:
    """Every strict prefix of a valid body is refused as ``truncated``."""
    with pytest.raises(DecodeError) as info:
        _LOCAL.decode(PURCHASE_BYTES[:cut])
    assert info.value.reason == CodecReason.TRUNCATED


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", CodecReason.EMPTY),
        (b"\x00", CodecReason.TRUNCATED),
        (b"\x00\x00\x00\x01", CodecReason.TRUNCATED),
        (APP_OPEN_BYTES + b"\x00", CodecReason.TRAILING_BYTES),
        (b"\x02\x41\x7f", CodecReason.INVALID_AVRO),  # event type index -64
        (b"\x02\x41\x40", CodecReason.INVALID_AVRO),  # event type index 32 (no such symbol)
        (b"\x04\xff\xfe", CodecReason.INVALID_AVRO),  # event_id is not UTF-8
    ],
)
def test_known_bad_payloads_have_their_reason(payload: bytes, reason: CodecReason) -> None:
    """Known-bad payloads raise ``DecodeError`` with a precise reason."""
    with pytest.raises(DecodeError) as info:
        _LOCAL.decode(payload)
    assert reason == info.value.reason


def test_local_decoder_refuses_an_id_outside_its_table() -> None:
    """Wire format with an id the local table lacks is an ``UnknownSchemaError``."""
    with pytest.raises(UnknownSchemaError) as info:
        _LOCAL.decode(b"\x00\x00\x00\x00\x63" + APP_OPEN_BYTES)
    assert info.value.reason == CodecReason.UNKNOWN_SCHEMA


def test_registry_decoder_refuses_plain_avro_as_bad_magic_byte() -> None:
    """The registry decoder accepts only wire format."""
    decoder = RegistryDecoder(FakeRegistry({1: SCHEMA_TEXT}), SCHEMA)
    with pytest.raises(DecodeError) as info:
        decoder.decode(APP_OPEN_BYTES)
    assert info.value.reason == CodecReason.BAD_MAGIC_BYTE


def test_decode_event_refuses_valid_avro_with_invalid_content() -> None:
    """Well-formed Avro that breaks a model invariant is a ``DecodeError`` from the model."""
    record = event_to_record(APP_OPEN) | {"user_key": ""}
    with pytest.raises(DecodeError) as info:
        _LOCAL.decode_event(encode_schemaless(record, SCHEMA))
    assert info.value.reason == "empty_field"


# --- registry decoder with a fake registry -------------------------------------------------------


class FakeRegistry:
    """A ``SchemaSource`` over a dict, counting lookups; ``error`` is raised when set."""

    def __init__(self, schemas: dict[int, str], error: Exception | None = None) -> None:
        self.schemas = schemas
        self.error = error
        self.lookups = 0

    def get_schema_text(self, schema_id: int) -> str:
        self.lookups += 1
        if self.error is not None:
            raise self.error
        if schema_id not in self.schemas:
            raise UnknownSchemaError("unknown_schema", f"no schema {schema_id}")
        return self.schemas[schema_id]


def test_registry_decoder_fetches_each_schema_once() -> None:
    """Writer schemas are cached per id."""
    registry = FakeRegistry({3: SCHEMA_TEXT})
    decoder = RegistryDecoder(registry, SCHEMA)
    framed = encode_wire(event_to_record(APP_OPEN), SCHEMA, 3)
    assert [decoder.decode_event(framed), decoder.decode_event(framed)] == [APP_OPEN, APP_OPEN]
    assert registry.lookups == 1


def test_registry_decoder_cache_is_bounded() -> None:
    """Beyond ``cache_size`` ids the oldest is forgotten and fetched again."""
    registry = FakeRegistry({1: SCHEMA_TEXT, 2: SCHEMA_TEXT})
    decoder = RegistryDecoder(registry, SCHEMA, cache_size=1)
    for schema_id in (1, 2, 1):
        decoder.decode(encode_wire(event_to_record(APP_OPEN), SCHEMA, schema_id))
    assert registry.lookups == 3


def test_registry_decoder_unknown_id() -> None:
    """An id the registry does not know raises ``UnknownSchemaError``."""
    decoder = RegistryDecoder(FakeRegistry({}), SCHEMA)
    with pytest.raises(UnknownSchemaError):
        decoder.decode(encode_wire(event_to_record(APP_OPEN), SCHEMA, 5))


def test_registry_decoder_negative_id_is_unknown_without_asking() -> None:
    """A negative id cannot exist; the registry is not asked."""
    registry = FakeRegistry({})
    with pytest.raises(UnknownSchemaError):
        RegistryDecoder(registry, SCHEMA).decode(b"\x00\xff\xff\xff\xff" + APP_OPEN_BYTES)
    assert registry.lookups == 0


def test_registry_unavailable_is_retryable_not_a_decode_error() -> None:
    """An unreachable registry surfaces as a retryable error, never as a dead-letter reason."""
    registry = FakeRegistry({}, error=SchemaRegistryUnavailableError("down"))
    decoder = RegistryDecoder(registry, SCHEMA)
    with pytest.raises(SchemaRegistryUnavailableError) as info:
        decoder.decode(encode_wire(event_to_record(APP_OPEN), SCHEMA, 1))
    assert not isinstance(info.value, DecodeError)
    assert info.value.retryable


def test_failed_lookups_are_not_cached() -> None:
    """After the registry comes back, the same record decodes."""
    registry = FakeRegistry({1: SCHEMA_TEXT}, error=SchemaRegistryUnavailableError("down"))
    decoder = RegistryDecoder(registry, SCHEMA)
    framed = encode_wire(event_to_record(APP_OPEN), SCHEMA, 1)
    with pytest.raises(SchemaRegistryUnavailableError):
        decoder.decode(framed)
    registry.error = None
    assert decoder.decode_event(framed) == APP_OPEN


@pytest.mark.parametrize(
    ("schema_text", "reason"),
    [
        ("not json", CodecReason.UNSUPPORTED_SCHEMA),
        ('{"type": "recrod", "name": "X"}', CodecReason.UNSUPPORTED_SCHEMA),
        ('"string"', CodecReason.INCOMPATIBLE_SCHEMA),
        (
            '{"type": "record", "name": "Other", "fields": [{"name": "a", "type": "int"}]}',
            CodecReason.INCOMPATIBLE_SCHEMA,
        ),
    ],
)
def test_unusable_writer_schemas(schema_text: str, reason: CodecReason) -> None:
    """A writer schema that is not Avro, or not a commerce event, is refused with a reason."""
    decoder = RegistryDecoder(FakeRegistry({1: schema_text}), SCHEMA)
    with pytest.raises(DecodeError) as info:
        decoder.decode(b"\x00\x00\x00\x00\x01" + APP_OPEN_BYTES)
    assert reason == info.value.reason


# --- confluent registry adapter: failure classification -----------------------------------------


class StatusError(Exception):
    """Shaped like confluent-kafka's ``SchemaRegistryError``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.http_status_code = status
        self.error_message = f"status {status}"


class FakeSchema:
    def __init__(self, text: str, schema_type: str | None = "AVRO", refs: Any = ()) -> None:
        self.schema_str = text
        self.schema_type = schema_type
        self.references = list(refs)


class FakeClient:
    """Shaped like ``SchemaRegistryClient.get_schema``: returns ``result`` or raises it."""

    def __init__(self, result: FakeSchema | Exception) -> None:
        self.result = result

    def get_schema(self, schema_id: int) -> FakeSchema:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize("status", [400, 404, 422])
def test_registry_refusals_are_unknown_schema(status: int) -> None:
    """The registry answering 4xx for an id makes the record undecodable."""
    source = ConfluentSchemaSource(FakeClient(StatusError(status)))
    with pytest.raises(UnknownSchemaError):
        source.get_schema_text(1)


def test_a_registry_404_may_be_a_follower_that_has_not_replicated_the_id_yet() -> None:
    """404 (only) is the retryable kind of unknown schema; other 4xx are not."""
    with pytest.raises(SchemaNotFoundYetError):
        ConfluentSchemaSource(FakeClient(StatusError(404))).get_schema_text(1)
    with pytest.raises(UnknownSchemaError) as info:
        ConfluentSchemaSource(FakeClient(StatusError(422))).get_schema_text(1)
    assert not isinstance(info.value, SchemaNotFoundYetError)


@pytest.mark.parametrize(
    "error",
    [
        StatusError(500),
        StatusError(503),
        StatusError(429),
        StatusError(401),
        StatusError(403),
        ConnectionRefusedError("refused"),
        TimeoutError("slow"),
        ValueError("not JSON"),
    ],
)
def test_registry_failures_are_unavailable(error: Exception) -> None:
    """Server errors, throttling, auth and transport failures are retryable."""
    source = ConfluentSchemaSource(FakeClient(error))
    with pytest.raises(SchemaRegistryUnavailableError):
        source.get_schema_text(1)


@pytest.mark.parametrize(
    "schema", [FakeSchema("{}", "PROTOBUF"), FakeSchema(SCHEMA_TEXT, "AVRO", refs=["x"])]
)
def test_registry_schemas_we_cannot_use(schema: FakeSchema) -> None:
    """Non-Avro schemas and schemas with references are unsupported."""
    with pytest.raises(UnknownSchemaError) as info:
        ConfluentSchemaSource(FakeClient(schema)).get_schema_text(1)
    assert info.value.reason == CodecReason.UNSUPPORTED_SCHEMA


def test_registry_source_returns_avro_text() -> None:
    """An Avro schema (type AVRO or unset) comes back as its text."""
    for schema_type in ("AVRO", None):
        source = ConfluentSchemaSource(FakeClient(FakeSchema(SCHEMA_TEXT, schema_type)))
        assert source.get_schema_text(1) == SCHEMA_TEXT


# --- construction --------------------------------------------------------------------------------


def test_build_decoder_without_registry_is_local() -> None:
    """No registry URL: the registry-free decoder."""
    assert isinstance(build_decoder(SCHEMA_DIR), LocalDecoder)


def test_missing_schema_dir_is_a_config_error(tmp_path: Path) -> None:
    """A schema folder without the schema file fails at start, naming the file."""
    with pytest.raises(ConfigError, match=r"commerce_event\.avsc"):
        build_decoder(tmp_path)


def test_invalid_schema_file_is_a_config_error(tmp_path: Path) -> None:
    """A schema file that is not Avro fails at start."""
    (tmp_path / "commerce_event.avsc").write_text('{"type": "record"}', encoding="utf-8")
    with pytest.raises(ConfigError):
        build_decoder(tmp_path)


def test_subject_for_uses_topic_name_strategy() -> None:
    """Values of topic T are registered under subject ``T-value``."""
    assert subject_for("commerce-events") == "commerce-events-value"


def test_decoded_record_is_the_plain_record() -> None:
    """``decode`` gives the fastavro record, which ``event_from_record`` accepts."""
    record = _LOCAL.decode(PURCHASE_BYTES)
    assert record["commerce"]["total_amount"] == Decimal("12.34")
    assert event_from_record(record) == PURCHASE


def test_build_encoder_without_registry_writes_plain_avro() -> None:
    """No registry: the producer writes plain Avro, which the local decoder reads."""
    encoder = build_encoder(SCHEMA_DIR, topic="commerce-events")
    assert encoder.schema_id is None
    assert encoder.encode_event(APP_OPEN) == APP_OPEN_BYTES


# --- writer schemas that lack a field the mapping reads ------------------------------------------


def test_a_writer_schema_without_a_field_the_mapping_reads_is_reported_once() -> None:
    """A producer that renamed btn_ref (reading resolves it to its default, silently) is
    noticed: the decoder reports the writer schema's missing reader fields on first sight."""
    renamed = json.loads(SCHEMA_TEXT)
    for field in renamed["fields"]:
        if field["name"] == "btn_ref":
            field["name"] = "button_ref"
    reports: list[tuple[int, tuple[str, ...]]] = []
    registry = FakeRegistry({7: SCHEMA_TEXT, 8: json.dumps(renamed)})
    decoder = RegistryDecoder(
        registry, SCHEMA, on_missing_fields=lambda sid, names: reports.append((sid, names))
    )
    writer = parse_schema_text(json.dumps(renamed), "renamed")
    event = event_to_record(PURCHASE)
    renamed_record = {k: v for k, v in event.items() if k != "btn_ref"}
    body = Encoder(writer, 8).encode({**renamed_record, "button_ref": event.get("btn_ref")})

    decoder.decode_event(Encoder(SCHEMA, 7).encode(event))
    decoder.decode_event(body)
    decoder.decode_event(body)

    assert reports == [(8, ("btn_ref",))]


def test_missing_reader_fields_follow_aliases() -> None:
    """A field renamed with an alias in the reader is not missing."""
    reader = json.loads(SCHEMA_TEXT)
    writer = json.loads(SCHEMA_TEXT)
    for field in writer["fields"]:
        if field["name"] == "btn_ref":
            field["name"] = "old_btn_ref"
    for field in reader["fields"]:
        if field["name"] == "btn_ref":
            field["aliases"] = ["old_btn_ref"]
    parsed_reader = parse_schema_text(json.dumps(reader), "reader")
    assert (
        missing_reader_fields(parse_schema_text(json.dumps(writer), "writer"), parsed_reader) == ()
    )
    assert missing_reader_fields(parse_schema_text(json.dumps(writer), "writer"), SCHEMA) == (
        "btn_ref",
    )


class HeldRegistry(FakeRegistry):
    """A ``FakeRegistry`` whose lookups wait until ``answer`` is set, noting their threads."""

    def __init__(self, schemas: dict[int, str]) -> None:
        super().__init__(schemas)
        self.answer = threading.Event()
        self.started = threading.Event()
        self.threads: list[str] = []
        self.closed = False

    def get_schema_text(self, schema_id: int) -> str:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.answer.wait(30.0), "never answered"
        return super().get_schema_text(schema_id)

    def close(self) -> None:
        self.closed = True


def test_an_unknown_writer_schema_is_looked_up_off_the_loop_once_for_every_waiting_record() -> None:
    """Two records of an unknown id wait for one lookup, on another thread, while the loop
    keeps running; once it answers both decode, and a cached id decodes without suspending."""
    registry = HeldRegistry({3: SCHEMA_TEXT})
    decoder = RegistryDecoder(registry, SCHEMA)
    framed = encode_wire(event_to_record(APP_OPEN), SCHEMA, 3)

    async def scenario() -> tuple[list[Any], int]:
        waiting = [asyncio.create_task(decoder.decode_triaged_async(framed)) for _ in range(2)]
        ticks = 0
        while not registry.threads:  # the loop runs while the lookup waits
            ticks += 1
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in waiting)
        registry.answer.set()
        return list(await asyncio.gather(*waiting)), ticks

    decoded, ticks = asyncio.run(scenario())
    cached = decoder.decode_triaged_async(framed)
    with pytest.raises(StopIteration) as at_once:  # completes at its first step: no await
        cached.send(None)

    assert (decoded, at_once.value.value) == ([decoder.decode_triaged(framed)] * 2, decoded[0])
    assert (registry.lookups, ticks > 0) == (1, True)
    assert registry.threads[0] != threading.main_thread().name


def test_a_failed_lookup_reaches_every_waiting_record_and_is_not_cached() -> None:
    """The registry's failure is raised to each record that waited for the lookup; the next
    decode asks again."""
    registry = FakeRegistry({1: SCHEMA_TEXT}, error=SchemaRegistryUnavailableError("down"))
    decoder = RegistryDecoder(registry, SCHEMA)
    framed = encode_wire(event_to_record(APP_OPEN), SCHEMA, 1)

    async def twice() -> list[BaseException | Any]:
        tasks = [decoder.decode_triaged_async(framed) for _ in range(2)]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    failed = asyncio.run(twice())
    registry.error = None
    again = asyncio.run(decoder.decode_triaged_async(framed))

    assert [type(e) for e in failed] == [SchemaRegistryUnavailableError] * 2
    assert (again, registry.lookups) == (decoder.decode_triaged(framed), 2)


def test_closing_during_a_lookup_closes_the_registry_client_once_the_lookup_ends() -> None:
    """``close`` does not pull the client from under a running lookup: the lookup's thread
    closes it when it ends; later lookups fail as unavailable."""
    registry = HeldRegistry({3: SCHEMA_TEXT})
    decoder = RegistryDecoder(registry, SCHEMA)
    framed = encode_wire(event_to_record(APP_OPEN), SCHEMA, 3)

    async def close_while_looking_up() -> bool:
        task = asyncio.create_task(decoder.decode_triaged_async(framed))
        assert await asyncio.to_thread(registry.started.wait, 30.0)
        decoder.close()
        closed_at_once = registry.closed
        registry.answer.set()
        await task
        return closed_at_once

    closed_at_once = asyncio.run(close_while_looking_up())
    deadline = time.monotonic() + 30
    while not registry.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    other = encode_wire(event_to_record(APP_OPEN), SCHEMA, 4)

    assert (closed_at_once, registry.closed) == (False, True)
    with pytest.raises(SchemaRegistryUnavailableError):
        asyncio.run(decoder.decode_triaged_async(other))
