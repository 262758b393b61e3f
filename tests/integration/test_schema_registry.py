"""The codec against a real Confluent-compatible schema registry (Apicurio, or SCHEMA_REGISTRY_URL).

Registers the project's schemas through confluent-kafka's client, decodes wire-format records by
the ids the registry assigned, and checks that the registry's answers are classified the way the
failure policy needs: unknown id -> dead-letter, unreachable -> retry, breaking schema -> refused.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.adapters.avro_codec import (
    RegistryDecoder,
    build_decoder,
    build_encoder,
    encode_wire,
    load_schema,
)
from consumer.adapters.schema_registry import ConfluentSchemaSource, subject_for
from consumer.domain.event_forms import event_to_record
from consumer.domain.events import EventType
from consumer.errors import ConfigError, SchemaRegistryUnavailableError, UnknownSchemaError
from consumer.samples import generate_events
from consumer.settings import SchemaSettings

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
CURRENT_TEXT = (SCHEMA_DIR / "commerce_event.avsc").read_text(encoding="utf-8")
NEXT_TEXT = (SCHEMA_DIR / "commerce_event.next.avsc").read_text(encoding="utf-8")
CURRENT = load_schema(SCHEMA_DIR / "commerce_event.avsc")
NEXT = load_schema(SCHEMA_DIR / "commerce_event.next.avsc")


@pytest.fixture
def source(schema_registry_url: str) -> Iterator[ConfluentSchemaSource]:
    with ConfluentSchemaSource.from_config({"url": schema_registry_url}) as registry:
        yield registry


@pytest.fixture
def subject(unique_name: Callable[[str], str]) -> str:
    return subject_for(unique_name("commerce-events"))


def test_decodes_records_written_with_a_registered_id(
    schema_registry_url: str, source: ConfluentSchemaSource, subject: str
) -> None:
    """Records framed with the id the registry assigned decode to the events written."""
    schema_id = source.register_schema(subject, CURRENT_TEXT)
    assert source.register_schema(subject, CURRENT_TEXT) == schema_id
    events = list(generate_events(5, seed=11))
    framed = [encode_wire(event_to_record(e), CURRENT, schema_id) for e in events]
    with build_decoder(SCHEMA_DIR, schema_registry_url) as decoder:
        assert isinstance(decoder, RegistryDecoder)
        assert [decoder.decode_event(value) for value in framed] == events


def test_unknown_id_is_an_unknown_schema(schema_registry_url: str) -> None:
    """An id the registry never assigned is an ``UnknownSchemaError`` (dead-letter)."""
    with (
        build_decoder(SCHEMA_DIR, schema_registry_url) as decoder,
        pytest.raises(UnknownSchemaError) as info,
    ):
        decoder.decode(b"\x00\x7f\xff\xff\xf0" + b"\x04e1")
    assert info.value.reason == "unknown_schema"


def test_backward_transitive_accepts_the_next_version(
    schema_registry_url: str, source: ConfluentSchemaSource, subject: str
) -> None:
    """Under BACKWARD_TRANSITIVE the next version registers, and its data reads as current."""
    source.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    first = source.register_schema(subject, CURRENT_TEXT)
    second = source.register_schema(subject, NEXT_TEXT)
    assert first != second
    event = next(e for e in generate_events(3, seed=2) if e.event_type is EventType.PURCHASE)
    record = event_to_record(event) | {"session_id": "s-1", "event_type": "ADD_TO_WISHLIST"}
    for product in record["commerce"]["products"]:
        product["upc"] = None
    with build_decoder(SCHEMA_DIR, schema_registry_url) as decoder:
        decoded = decoder.decode_event(encode_wire(record, NEXT, second))
    assert decoded.event_type is EventType.UNKNOWN
    assert decoded.commerce == event.commerce


def test_backward_transitive_refuses_a_breaking_change(
    source: ConfluentSchemaSource, subject: str
) -> None:
    """A new required field without a default is refused by the registry."""
    source.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    source.register_schema(subject, CURRENT_TEXT)
    breaking = json.loads(CURRENT_TEXT)
    breaking["fields"].append({"name": "tenant", "type": "string", "doc": "no default"})
    with pytest.raises(ConfigError):
        source.register_schema(subject, json.dumps(breaking))


def test_unreachable_registry_is_retryable() -> None:
    """A registry nobody listens on raises the retryable error, not a decode error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with (
        build_decoder(SCHEMA_DIR, url, {"max.retries": 0}) as decoder,
        pytest.raises(SchemaRegistryUnavailableError),
    ):
        decoder.decode(b"\x00\x00\x00\x00\x01" + b"\x04e1")


def test_build_encoder_registers_and_frames_with_the_id(
    schema_registry_url: str, unique_name: Callable[[str], str]
) -> None:
    """With a registry the producer's encoder registers the schema and frames with its id."""
    topic = unique_name("commerce-events")
    encoder = build_encoder(SCHEMA_DIR, schema_registry_url, topic=topic)
    assert encoder.schema_id is not None
    events = list(generate_events(2, seed=4))
    with build_decoder(SCHEMA_DIR, schema_registry_url) as decoder:
        assert [decoder.decode_event(encoder.encode_event(e)) for e in events] == events


def test_registry_that_never_answers_is_unavailable_within_a_bound() -> None:
    """A registry that accepts connections but never answers (hung, a black-holing balancer)
    must end as the retryable error within a bounded time, as an unreachable one does."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = SchemaSettings(registry_url=url).registry_config()
        outcome: list[BaseException | None] = []

        def decode() -> None:
            with build_decoder(SCHEMA_DIR, url, config) as decoder:
                try:
                    decoder.decode(b"\x00\x00\x00\x00\x01" + b"\x04e1")
                except BaseException as exc:  # handed to the test thread
                    outcome.append(exc)
                else:
                    outcome.append(None)

        worker = threading.Thread(target=decode, daemon=True)
        worker.start()
        worker.join(timeout=90.0)
        assert not worker.is_alive(), "the registry lookup still waits after 90 s"
        assert isinstance(outcome[0], SchemaRegistryUnavailableError)
