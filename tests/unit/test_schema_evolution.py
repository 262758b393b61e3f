"""Schema rules and evolution: both schemas parse, and old and new readers and writers interoperate.

``schemas/commerce_event.next.avsc`` is the current schema plus one compatible change of each
kind (a top-level field with a default, a nested field with a default, a new enum symbol); it
exists only for these tests.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest

from consumer.adapters.avro_codec import LocalDecoder, encode_wire, load_schema
from consumer.domain.event_forms import event_from_record, event_to_record
from consumer.domain.events import (
    AMOUNT_PRECISION,
    AMOUNT_SCALE,
    AttAuthorizationStatus,
    CommerceData,
    CommerceEvent,
    Environment,
    EventType,
    Platform,
    Product,
    ProductAction,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CURRENT_PATH = SCHEMA_DIR / "commerce_event.avsc"
NEXT_PATH = SCHEMA_DIR / "commerce_event.next.avsc"
CURRENT = load_schema(CURRENT_PATH)
NEXT = load_schema(NEXT_PATH)

EVENT = CommerceEvent(
    event_id="e-1",
    event_type=EventType.PURCHASE,
    event_time=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    user_key="u-1",
    platform=Platform.SERVER,
    commerce=CommerceData(
        action=ProductAction.PURCHASE,
        transaction_id="ORD-1",
        currency_code="EUR",
        total_amount=Decimal("10.00"),
        products=(Product(id="SKU-1", price=Decimal("10.00")),),
    ),
)


def raw(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def write(schema: Any, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def read(body: bytes, writer: Any, reader: Any) -> dict[str, Any]:
    record = fastavro.schemaless_reader(io.BytesIO(body), writer, reader)
    assert isinstance(record, dict)
    return record


def walk(schema: Any) -> Iterator[dict[str, Any]]:
    """Every named type and field object in a raw schema."""
    if isinstance(schema, list):
        for branch in schema:
            yield from walk(branch)
    elif isinstance(schema, dict):
        yield schema
        for field in schema.get("fields", []):
            yield field
            yield from walk(field["type"])
        for key in ("items", "values"):
            if key in schema:
                yield from walk(schema[key])


@pytest.mark.parametrize("path", [CURRENT_PATH, NEXT_PATH], ids=["current", "next"])
def test_schema_parses_with_fastavro(path: Path) -> None:
    """Both schema files are valid Avro for fastavro."""
    fastavro.parse_schema(raw(path))


def test_every_field_and_type_is_documented() -> None:
    """Every field, record and enum of the current schema has a non-empty doc."""
    undocumented = [
        node.get("name")
        for node in walk(raw(CURRENT_PATH))
        if ("name" in node or node.get("type") == "record") and not node.get("doc")
    ]
    assert undocumented == []


def test_optional_fields_default_to_null_and_collections_to_empty() -> None:
    """Unions list null first with a null default; maps and arrays default to empty."""
    problems = []
    for node in walk(raw(CURRENT_PATH)):
        if "name" not in node or "type" not in node or isinstance(node["type"], str):
            continue
        kind = node["type"]
        if isinstance(kind, list) and (kind[0] != "null" or node.get("default", 0) is not None):
            problems.append(node["name"])
        if isinstance(kind, dict) and kind.get("type") in ("map", "array"):
            expected: object = {} if kind["type"] == "map" else []
            if node.get("default") != expected:
                problems.append(node["name"])
    assert problems == []


def test_every_enum_has_an_unknown_default_symbol() -> None:
    """Each enum has a default symbol, so readers survive symbols added later."""
    enums = [node for node in walk(raw(CURRENT_PATH)) if node.get("type") == "enum"]
    assert {e["name"] for e in enums} == {
        "EventType",
        "Platform",
        "Environment",
        "AttAuthorizationStatus",
        "ProductAction",
    }
    assert all(e.get("default") == "UNKNOWN" and e["symbols"][0] == "UNKNOWN" for e in enums)


def test_model_enums_match_schema_symbols() -> None:
    """The model's enums list exactly the schema's symbols, in order."""
    symbols = {
        node["name"]: node["symbols"]
        for node in walk(raw(CURRENT_PATH))
        if node.get("type") == "enum"
    }
    for enum in (EventType, Platform, Environment, AttAuthorizationStatus, ProductAction):
        assert [member.value for member in enum] == symbols[enum.__name__]


def test_decimals_are_bytes_with_the_model_precision_and_scale() -> None:
    """Every amount is decimal(20, 6) over bytes: never a float."""
    decimals = [
        node
        for node in walk(raw(CURRENT_PATH))
        if node.get("logicalType") == "decimal" or node.get("type") in ("float", "double")
    ]
    assert len(decimals) == 4
    for node in decimals:
        assert (node["type"], node["precision"], node["scale"]) == (
            "bytes",
            AMOUNT_PRECISION,
            AMOUNT_SCALE,
        )


def test_event_id_stays_the_first_field() -> None:
    """Registry-free decoding relies on event_id (non-empty) being encoded first."""
    assert raw(CURRENT_PATH)["fields"][0]["name"] == "event_id"


def test_next_schema_is_current_plus_compatible_additions() -> None:
    """The next version differs only by fields with defaults and one appended enum symbol."""
    current, nxt = raw(CURRENT_PATH), copy.deepcopy(raw(NEXT_PATH))
    nxt.pop("doc")
    current.pop("doc")
    fields = nxt["fields"]
    added = [f for f in fields if f["name"] == "session_id"]
    assert added == [
        {
            "name": "session_id",
            "type": ["null", "string"],
            "default": None,
            "doc": added[0]["doc"],
        }
    ]
    fields.remove(added[0])
    event_type = next(f for f in fields if f["name"] == "event_type")["type"]
    assert event_type["symbols"].pop() == "ADD_TO_WISHLIST"
    commerce = next(f for f in fields if f["name"] == "commerce")["type"][1]
    product = next(f for f in commerce["fields"] if f["name"] == "products")["type"]["items"]
    upc = next(f for f in product["fields"] if f["name"] == "upc")
    assert upc["default"] is None
    product["fields"].remove(upc)
    assert current == nxt


def test_new_reader_reads_old_data_with_defaults() -> None:
    """Data written with the current schema reads under the next one, new fields defaulted."""
    record = read(write(CURRENT, event_to_record(EVENT)), CURRENT, NEXT)
    assert record["session_id"] is None
    assert record["commerce"]["products"][0]["upc"] is None
    assert record["event_type"] == "PURCHASE"


def test_old_reader_reads_new_data_ignoring_new_fields() -> None:
    """Data written with the next schema reads under the current one, additions dropped."""
    new_record = event_to_record(EVENT) | {"session_id": "s-1"}
    new_record["commerce"]["products"][0]["upc"] = "0123456789012"
    record = read(write(NEXT, new_record), NEXT, CURRENT)
    assert "session_id" not in record
    assert "upc" not in record["commerce"]["products"][0]
    assert event_from_record(record) == EVENT


def test_old_reader_maps_a_new_enum_symbol_to_unknown() -> None:
    """An event type added later reads as UNKNOWN through the enum default."""
    new_record = event_to_record(EVENT) | {
        "event_type": "ADD_TO_WISHLIST",
        "session_id": None,
        "commerce": None,
    }
    record = read(write(NEXT, new_record), NEXT, CURRENT)
    assert record["event_type"] == "UNKNOWN"
    assert event_from_record(record).event_type is EventType.UNKNOWN


def test_local_decoder_resolves_a_newer_writer_by_id() -> None:
    """With the next schema in its id table, the registry-free decoder reads its data."""
    decoder = LocalDecoder(CURRENT, {1: CURRENT, 2: NEXT})
    new_record = event_to_record(EVENT) | {"session_id": "s-1"}
    new_record["commerce"]["products"][0]["upc"] = None
    assert decoder.decode_event(encode_wire(new_record, NEXT, 2)) == EVENT
