"""Avro bytes <-> commerce event records, with or without a schema registry.

Kafka record values arrive in one of two encodings, and this module is the one place that knows
them (the producer contract, see ``schemas/README.md``):

* **Confluent wire format**: byte 0 is the magic byte ``0``, bytes 1-4 the writer schema id
  (big-endian, signed 32-bit), the rest the Avro body written with that schema.
* **Plain (schemaless) Avro**: the body alone, written with the current local schema.

Two decoders read them, both resolving the writer schema against the local reader schema
(``schemas/commerce_event.avsc``) with fastavro, so a reader sees defaults for fields older
writers lacked and ignores fields newer writers added:

* ``RegistryDecoder``: wire format only; writer schemas come from a Confluent-compatible schema
  registry by id and are cached, parsed, per id (ids are immutable).
* ``LocalDecoder`` (registry-free): a payload starting with the magic byte must carry an id of
  the small local table ``LOCAL_SCHEMA_IDS`` (id 1 = ``schemas/commerce_event.avsc``); any other
  payload is read as plain Avro written with the current local schema. This is unambiguous
  because ``event_id``, the first field, is a non-empty string, whose Avro encoding never starts
  with a zero byte. It is meant for development, demos and merchants without a registry: a real
  registry's ids mean nothing to it.

Every failure to turn bytes into a record is a typed ``DecodeError`` whose ``reason`` is a
``CodecReason`` value (``UnknownSchemaError`` for ids that resolve to nothing); those records are
dead-lettered. A registry that cannot be *reached* is different: the record is fine and must not
be dead-lettered, so it raises ``SchemaRegistryUnavailableError`` (retryable), which is not a
``DecodeError``. The registry client itself is ``schema_registry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, Self

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.types import Schema as ParsedSchema

from consumer.adapters.schema_registry import ConfluentSchemaSource, subject_for
from consumer.domain.event_forms import event_from_record, event_to_record
from consumer.domain.events import CommerceEvent
from consumer.domain.triage import InertEvent, inert_record
from consumer.errors import (
    CodecReason,
    ConfigError,
    DecodeError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)

__all__ = [
    "CURRENT_SCHEMA_FILE",
    "HEADER_SIZE",
    "LOCAL_SCHEMA_IDS",
    "MAGIC_BYTE",
    "Decoder",
    "Encoder",
    "LocalDecoder",
    "RegistryDecoder",
    "SchemaSource",
    "build_decoder",
    "build_encoder",
    "encode_schemaless",
    "encode_wire",
    "load_schema",
    "parse_schema_text",
    "split_wire",
]

MAGIC_BYTE = 0
"""First byte of the Confluent wire format."""
HEADER_SIZE = 5
"""Magic byte plus the 4-byte schema id."""
CURRENT_SCHEMA_FILE = "commerce_event.avsc"
"""The reader schema (and the writer schema of plain Avro payloads) inside the schema folder."""
LOCAL_SCHEMA_IDS: Mapping[int, str] = MappingProxyType({1: CURRENT_SCHEMA_FILE})
"""Registry-free mode: wire-format schema id -> file in the schema folder."""

_HEADER = struct.Struct(">bi")
_DEFAULT_CACHE_SIZE = 1000

# What fastavro and the logical-type converters raise on bytes that are not a valid body.
_AVRO_ERRORS = (
    EOFError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    ArithmeticError,
    struct.error,
    MemoryError,
)


class Decoder(Protocol):
    """Bytes of a Kafka record value -> the decoded Avro record (reader schema applied)."""

    def decode(self, value: bytes) -> dict[str, Any]:
        """Decode one value. Raises ``DecodeError`` (or ``SchemaRegistryUnavailableError``)."""
        ...

    def decode_event(self, value: bytes) -> CommerceEvent:
        """Decode one value into the event model; ``DecodeError`` also for invalid content."""
        ...

    def decode_triaged(self, value: bytes) -> CommerceEvent | InertEvent:
        """``decode_event``, or an ``InertEvent`` (no model) for an event that can change
        nothing (``consumer.domain.triage``)."""
        ...

    def decode_triaged_at_hand(self, value: bytes) -> CommerceEvent | InertEvent | None:
        """``decode_triaged`` without a schema lookup: ``None`` when one would be needed."""
        ...

    async def decode_triaged_async(self, value: bytes) -> CommerceEvent | InertEvent:
        """``decode_triaged``, its schema lookup (if any) run off the event loop."""
        ...

    def close(self) -> None:
        """Release the registry connection, if any. Idempotent."""
        ...


class SchemaSource(Protocol):
    """Where the registry decoder gets writer schemas by id (the port to the registry)."""

    def get_schema_text(self, schema_id: int) -> str:
        """The Avro schema JSON registered under ``schema_id``.

        Raises:
            UnknownSchemaError: the registry answered that the id is unknown or not Avro.
            SchemaRegistryUnavailableError: the registry could not be asked.
        """
        ...


def parse_schema_text(text: str, origin: str) -> ParsedSchema:
    """Parse an Avro schema from JSON text; ``ValueError`` names ``origin`` when it is invalid."""
    try:
        parsed: ParsedSchema = fastavro.parse_schema(json.loads(text))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise ValueError(f"{origin} is not a valid Avro schema: {exc}") from exc
    return parsed


def load_schema(path: Path) -> ParsedSchema:
    """Read and parse one ``.avsc`` file. A missing or invalid file is a ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read Avro schema {path}: {exc}") from exc
    try:
        return parse_schema_text(text, str(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def split_wire(value: bytes) -> tuple[int, memoryview]:
    """Split a Confluent wire-format value into (schema id, Avro body).

    Raises:
        DecodeError: ``empty``, ``bad_magic_byte`` or ``truncated``.
    """
    if not value:
        raise DecodeError(CodecReason.EMPTY, "empty record value (tombstone?)")
    if value[0] != MAGIC_BYTE:
        raise DecodeError(
            CodecReason.BAD_MAGIC_BYTE,
            f"first byte is 0x{value[0]:02x}, not the wire-format magic byte 0x00",
        )
    if len(value) < HEADER_SIZE:
        raise DecodeError(
            CodecReason.TRUNCATED, f"{len(value)} bytes: shorter than the 5-byte wire header"
        )
    _, schema_id = _HEADER.unpack_from(value)
    return schema_id, memoryview(value)[HEADER_SIZE:]


MissingFieldsHook = Callable[[int, tuple[str, ...]], None]
"""Called with (writer schema id, reader fields it lacks) when a writer schema is first seen."""


def missing_reader_fields(writer: ParsedSchema, reader: ParsedSchema) -> tuple[str, ...]:
    """Top-level reader fields the writer schema has neither by name nor by a reader alias.

    Avro resolution fills such a field with its default, silently: a producer that renamed or
    removed an optional field (``btn_ref``) sends every event without it. Only top-level fields
    are compared: the mapping's inputs are top-level fields or records in them.
    """
    names = {str(f.get("name", "")).rsplit(".", 1)[-1] for f in _fields(writer)}
    missing: list[str] = []
    for field in _fields(reader):
        name = str(field.get("name", "")).rsplit(".", 1)[-1]
        aliases = {str(a).rsplit(".", 1)[-1] for a in field.get("aliases", ())}
        if name not in names and not aliases & names:
            missing.append(name)
    return tuple(missing)


def reader_field_names(schema_dir: Path) -> tuple[str, ...]:
    """The top-level field names of the reader schema in ``schema_dir`` (what
    ``missing_reader_fields`` can report), in schema order.

    Raises:
        ConfigError: the schema file is missing or invalid.
    """
    reader = load_schema(schema_dir / CURRENT_SCHEMA_FILE)
    return tuple(str(f.get("name", "")).rsplit(".", 1)[-1] for f in _fields(reader))


def _fields(schema: ParsedSchema) -> list[dict[str, Any]]:
    fields = schema.get("fields", []) if isinstance(schema, dict) else []
    return [f for f in fields if isinstance(f, dict)]


def _reader_for(writer: ParsedSchema, reader: ParsedSchema) -> ParsedSchema | None:
    """The reader schema to resolve to, or None when the writer is the same schema.

    Decided once per writer schema: fastavro otherwise compares the two schemas on every record,
    and resolving a schema against itself costs a fifth of the decoding time.
    """
    return None if writer == reader else reader


def _read_body(body: bytes | memoryview, writer: ParsedSchema, reader: ParsedSchema | None) -> Any:
    """Read one Avro body, translating fastavro's exceptions into ``DecodeError``."""
    buffer = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buffer, writer, reader)
    except SchemaResolutionError as exc:
        raise DecodeError(
            CodecReason.INCOMPATIBLE_SCHEMA, f"writer schema does not resolve to reader: {exc}"
        ) from exc
    except EOFError as exc:
        raise DecodeError(CodecReason.TRUNCATED, f"Avro body ends early: {exc}") from exc
    except _AVRO_ERRORS as exc:
        raise DecodeError(
            CodecReason.INVALID_AVRO, f"not a valid Avro body: {type(exc).__name__}: {exc}"
        ) from exc
    if buffer.tell() != len(body):
        raise DecodeError(
            CodecReason.TRAILING_BYTES,
            f"{len(body) - buffer.tell()} bytes left after the Avro record",
        )
    return record


def _as_record(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(CodecReason.INVALID_AVRO, "the Avro body is not a record")
    return value


class _EventDecoding:
    """``decode_event`` for every decoder: bytes -> record -> validated model."""

    def decode(self, value: bytes) -> dict[str, Any]:
        raise NotImplementedError

    def decode_event(self, value: bytes) -> CommerceEvent:
        return event_from_record(self.decode(value))

    def decode_triaged(self, value: bytes) -> CommerceEvent | InertEvent:
        """The model, or an ``InertEvent`` for an event that can change nothing (no model)."""
        record = self.decode(value)
        return inert_record(record) or event_from_record(record)

    def decode_at_hand(self, value: bytes) -> dict[str, Any] | None:
        """``decode`` when it needs no schema lookup, else ``None`` (no lookup by default)."""
        return self.decode(value)

    def decode_triaged_at_hand(self, value: bytes) -> CommerceEvent | InertEvent | None:
        """``decode_triaged`` when the writer schema is known already, else ``None``."""
        record = self.decode_at_hand(value)
        if record is None:
            return None
        return inert_record(record) or event_from_record(record)

    async def decode_triaged_async(self, value: bytes) -> CommerceEvent | InertEvent:
        """``decode_triaged`` for the event loop (no I/O by default: decoded at once)."""
        return self.decode_triaged(value)

    def close(self) -> None:
        """Nothing to release by default."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RegistryDecoder(_EventDecoding):
    """Confluent wire format with writer schemas from a schema registry.

    One instance per consuming thread: the schema cache is not locked. On an event loop,
    ``decode_triaged_async`` looks an unknown writer schema up on a daemon thread of its own
    (one lookup per schema id at a time, shared by every record waiting for it) and caches it
    on the loop's thread; a cached id decodes at once, with no thread hop. A registry that
    never answers then holds only the records that need it, never the loop (and a lookup still
    running at exit does not keep the process alive).

    Args:
        registry: where writer schemas come from (``ConfluentSchemaSource`` in production; its
            client's retries and timeouts, ``max.retries`` and ``timeout``, apply per lookup).
        reader_schema: the parsed local schema every record is resolved to.
        cache_size: parsed writer schemas kept; the oldest is dropped beyond it.
        on_missing_fields: told once per writer schema id that lacks reader fields
            (``missing_reader_fields``), for a metric and a log line.
    """

    def __init__(
        self,
        registry: SchemaSource,
        reader_schema: ParsedSchema,
        cache_size: int = _DEFAULT_CACHE_SIZE,
        on_missing_fields: MissingFieldsHook | None = None,
    ) -> None:
        self._registry = registry
        self._reader = reader_schema
        self._cache: dict[int, tuple[ParsedSchema, ParsedSchema | None]] = {}
        self._cache_size = cache_size
        self._on_missing = on_missing_fields
        self._reported: set[int] = set()
        self._lookups: dict[int, asyncio.Future[ParsedSchema]] = {}
        self._threads = threading.Lock()  # guards the two below (lookup threads, close)
        self._running = 0
        self._closed = False

    def decode(self, value: bytes) -> dict[str, Any]:
        """Decode one wire-format value.

        Raises:
            DecodeError: bad bytes (reasons in ``CodecReason``); ``UnknownSchemaError`` when the
                registry does not know the id or its schema is not usable Avro.
            SchemaRegistryUnavailableError: the registry could not be asked; retry later.
        """
        schema_id, body = split_wire(value)
        writer, reader = self._schemas(schema_id)
        return _as_record(_read_body(body, writer, reader))

    def decode_at_hand(self, value: bytes) -> dict[str, Any] | None:
        """``decode`` when the writer schema is cached, else ``None`` (no registry call)."""
        schema_id, body = split_wire(value)
        cached = self._cache.get(schema_id)
        if cached is None:
            return None
        return _as_record(_read_body(body, *cached))

    async def decode_triaged_async(self, value: bytes) -> CommerceEvent | InertEvent:
        """``decode_triaged`` without blocking the event loop: a writer schema not cached yet
        is looked up on a thread (``RegistryDecoder``) while the caller awaits it.

        Raises:
            DecodeError: as ``decode`` (``UnknownSchemaError`` included).
            SchemaRegistryUnavailableError: the registry could not be asked (bounded by the
                client's request timeout and retries); nothing is cached, the next call asks
                again.
        """
        schema_id, body = split_wire(value)
        pair = self._cache.get(schema_id)
        if pair is None:
            pair = self._remember(schema_id, await self._looked_up(schema_id))
        record = _as_record(_read_body(body, *pair))
        return inert_record(record) or event_from_record(record)

    async def _looked_up(self, schema_id: int) -> ParsedSchema:
        """The writer schema of ``schema_id``, fetched on a daemon thread; one lookup per id at
        a time (concurrent callers share it; a cancelled caller leaves it to the others)."""
        lookup = self._lookups.get(schema_id)
        if lookup is None:
            loop = asyncio.get_running_loop()
            lookup = loop.create_future()
            self._lookups[schema_id] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(schema_id, done))
            self._start_lookup(schema_id, lookup, loop)
        return await asyncio.shield(lookup)

    def _lookup_done(self, schema_id: int, lookup: asyncio.Future[ParsedSchema]) -> None:
        if self._lookups.get(schema_id) is lookup:
            del self._lookups[schema_id]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every caller may have been cancelled meanwhile

    def _start_lookup(
        self,
        schema_id: int,
        lookup: asyncio.Future[ParsedSchema],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        with self._threads:
            if self._closed:
                lookup.set_exception(
                    SchemaRegistryUnavailableError(
                        f"schema id {schema_id}: the registry client is closed"
                    )
                )
                return
            self._running += 1

        def run() -> None:
            try:
                writer = self._fetch(schema_id)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting records
                settle = _settler(lookup, error=exc)
            else:
                settle = _settler(lookup, writer=writer)
            finally:
                self._lookup_ended()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle)

        threading.Thread(target=run, name=f"schema-lookup-{schema_id}", daemon=True).start()

    def _lookup_ended(self) -> None:
        """A lookup thread is done with the client: close it now if ``close`` was deferred."""
        with self._threads:
            self._running -= 1
            last = self._closed and self._running == 0
        if last:
            self._close_registry()

    def close(self) -> None:
        """Close the registry source when it holds a connection; while a lookup thread still
        uses it, the thread closes it when its lookup ends. Idempotent."""
        with self._threads:
            if self._closed:
                return
            self._closed = True
            busy = self._running > 0
        if not busy:
            self._close_registry()

    def _close_registry(self) -> None:
        close = getattr(self._registry, "close", None)
        if callable(close):
            close()

    def writer_schema(self, schema_id: int) -> ParsedSchema:
        """The parsed writer schema of ``schema_id``, from the cache or the registry."""
        return self._schemas(schema_id)[0]

    def _schemas(self, schema_id: int) -> tuple[ParsedSchema, ParsedSchema | None]:
        cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        return self._remember(schema_id, self._fetch(schema_id))

    def _remember(
        self, schema_id: int, writer: ParsedSchema
    ) -> tuple[ParsedSchema, ParsedSchema | None]:
        """Cache ``writer`` (reporting the reader fields it lacks, once per id); the pair."""
        cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        if self._on_missing is not None and schema_id not in self._reported:
            self._reported.add(schema_id)
            missing = missing_reader_fields(writer, self._reader)
            if missing:
                self._on_missing(schema_id, missing)
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]
        pair = (writer, _reader_for(writer, self._reader))
        self._cache[schema_id] = pair
        return pair

    def _fetch(self, schema_id: int) -> ParsedSchema:
        """Ask the registry for ``schema_id`` and parse it (blocking I/O; any thread)."""
        if schema_id < 0:
            raise UnknownSchemaError(
                CodecReason.UNKNOWN_SCHEMA, f"schema id {schema_id} is negative"
            )
        text = self._registry.get_schema_text(schema_id)
        try:
            return parse_schema_text(text, f"schema id {schema_id}")
        except ValueError as exc:
            raise UnknownSchemaError(CodecReason.UNSUPPORTED_SCHEMA, str(exc)) from exc


def _settler(
    lookup: asyncio.Future[ParsedSchema],
    *,
    writer: ParsedSchema | None = None,
    error: BaseException | None = None,
) -> Callable[[], None]:
    """What the loop runs to settle ``lookup`` with a lookup thread's outcome."""

    def settle() -> None:
        if lookup.done():
            return
        if error is not None:
            lookup.set_exception(error)
        else:
            lookup.set_result(writer if writer is not None else {})

    return settle


class LocalDecoder(_EventDecoding):
    """Registry-free decoding with the local schema files (see the module docstring).

    Args:
        reader_schema: the parsed current schema; also the writer of plain Avro payloads.
        writer_schemas: wire-format schema id -> parsed writer schema.
    """

    def __init__(
        self, reader_schema: ParsedSchema, writer_schemas: Mapping[int, ParsedSchema]
    ) -> None:
        self._reader = reader_schema
        self._writers = {
            schema_id: (writer, _reader_for(writer, reader_schema))
            for schema_id, writer in writer_schemas.items()
        }

    def decode(self, value: bytes) -> dict[str, Any]:
        """Decode one value: wire format with a local id, else plain Avro.

        Raises:
            DecodeError: bad bytes (reasons in ``CodecReason``); ``UnknownSchemaError`` for a
                wire-format id that is not in the local table.
        """
        if not value:
            raise DecodeError(CodecReason.EMPTY, "empty record value (tombstone?)")
        if value[0] != MAGIC_BYTE:
            return _as_record(_read_body(value, self._reader, None))
        schema_id, body = split_wire(value)
        pair = self._writers.get(schema_id)
        if pair is None:
            raise UnknownSchemaError(
                CodecReason.UNKNOWN_SCHEMA,
                f"schema id {schema_id} is not in the local table {sorted(self._writers)}",
            )
        return _as_record(_read_body(body, *pair))


def build_decoder(
    schema_dir: Path,
    registry_url: str | None = None,
    registry_config: Mapping[str, Any] | None = None,
    *,
    local_ids: Mapping[int, str] = LOCAL_SCHEMA_IDS,
    on_missing_fields: MissingFieldsHook | None = None,
) -> RegistryDecoder | LocalDecoder:
    """The decoder for a deployment: with a registry URL, wire format via the registry; without
    one, the registry-free ``LocalDecoder``. No network I/O happens here.

    Args:
        schema_dir: the folder holding ``commerce_event.avsc``.
        registry_url: base URL of a Confluent-compatible registry (for Apicurio, ending in
            ``/apis/ccompat/v7``), or None.
        registry_config: further ``SchemaRegistryClient`` settings (``basic.auth.user.info``,
            ``timeout``, ``max.retries``...).
        local_ids: registry-free id table, id -> file name in ``schema_dir``.
        on_missing_fields: see ``RegistryDecoder``.

    Raises:
        ConfigError: a schema file is missing or invalid.
    """
    reader = load_schema(schema_dir / CURRENT_SCHEMA_FILE)
    if registry_url is not None:
        config = {**(registry_config or {}), "url": registry_url}
        return RegistryDecoder(
            ConfluentSchemaSource.from_config(config), reader, on_missing_fields=on_missing_fields
        )
    writers = {schema_id: load_schema(schema_dir / name) for schema_id, name in local_ids.items()}
    return LocalDecoder(reader, writers)


# --- producing ---------------------------------------------------------------------------------


def encode_schemaless(record: Mapping[str, Any], schema: ParsedSchema) -> bytes:
    """Plain Avro body of ``record`` (the registry-free encoding).

    Raises:
        ValueError, TypeError: the record does not fit the schema (from fastavro).
    """
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record, strict_allow_default=True)
    return buffer.getvalue()


def encode_wire(record: Mapping[str, Any], schema: ParsedSchema, schema_id: int) -> bytes:
    """Confluent wire format: magic byte, big-endian schema id, Avro body."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + encode_schemaless(record, schema)


class Encoder:
    """Encodes records with one schema, framed with ``schema_id`` or, when None, plain."""

    def __init__(self, schema: ParsedSchema, schema_id: int | None = None) -> None:
        self.schema = schema
        self.schema_id = schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Bytes of one record value."""
        if self.schema_id is None:
            return encode_schemaless(record, self.schema)
        return encode_wire(record, self.schema, self.schema_id)

    def encode_event(self, event: CommerceEvent) -> bytes:
        """Bytes of one event (``event_to_record`` then ``encode``)."""
        return self.encode(event_to_record(event))


def build_encoder(
    schema_dir: Path,
    registry_url: str | None = None,
    registry_config: Mapping[str, Any] | None = None,
    *,
    topic: str,
) -> Encoder:
    """The encoder a producer of ``topic`` should use (the sample producer, tests).

    With a registry URL the current schema is registered under ``<topic>-value`` (a network
    call; registering the same schema again returns the same id) and records are framed with
    its id. Without one, records are plain Avro, which the registry-free decoder reads.

    Raises:
        ConfigError: the schema file is invalid, or the registry refused the schema.
        SchemaRegistryUnavailableError: the registry could not be reached.
    """
    path = schema_dir / CURRENT_SCHEMA_FILE
    schema = load_schema(path)
    if registry_url is None:
        return Encoder(schema)
    config = {**(registry_config or {}), "url": registry_url}
    with ConfluentSchemaSource.from_config(config) as source:
        schema_id = source.register_schema(subject_for(topic), path.read_text(encoding="utf-8"))
    return Encoder(schema, schema_id)
