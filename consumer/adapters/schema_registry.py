"""The schema registry client: writer schemas by id, and registering the current schema.

The registry decoder (``avro_codec.RegistryDecoder``) needs writer schemas by id, and producers
need the current schema's id; this module is the one place that talks to a Confluent-compatible
registry (Confluent, Apicurio's ``/apis/ccompat/v7``, Karapace...) and turns its failures into
this service's terms: the registry *answering* no makes a record undecodable (dead-letter), a
registry that cannot be *asked* makes it wait (retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from consumer.errors import (
    CodecReason,
    ConfigError,
    ConsumerError,
    SchemaNotFoundYetError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)

__all__ = [
    "ConfluentSchemaSource",
    "subject_for",
]

_REGISTRY_UNAVAILABLE_STATUSES = frozenset({401, 403, 408, 429})


def subject_for(topic: str) -> str:
    """Registry subject of a topic's values under the default TopicNameStrategy."""
    return f"{topic}-value"


class ConfluentSchemaSource:
    """``avro_codec.SchemaSource`` over confluent-kafka's ``SchemaRegistryClient`` (any
    Confluent-compatible registry: Confluent, Apicurio's ``/apis/ccompat/v7``, Karapace...).

    It translates the client's failures into this service's terms: the registry *answering* that
    an id is unknown (404 or another 4xx) makes the record undecodable (``UnknownSchemaError``,
    dead-letter); everything else (connection errors, timeouts, 5xx, 429, 401/403, garbled
    answers) means the registry could not be asked (``SchemaRegistryUnavailableError``, retry).
    The client is imported here, lazily, so that registry-free deployments and unit tests do not
    need the ``schemaregistry`` extra of confluent-kafka. No network I/O in the constructor.

    Args:
        client: a ``SchemaRegistryClient`` (or anything with its ``get_schema``,
            ``register_schema`` and ``set_compatibility``); ``from_config`` builds one.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConfluentSchemaSource:
        """A source over a new ``SchemaRegistryClient`` with ``config`` (``url`` included).

        Raises:
            ConfigError: the client cannot be imported (missing ``schemaregistry`` extra).
        """
        try:
            from confluent_kafka.schema_registry import (
                SchemaRegistryClient,
            )
        except ImportError as exc:
            raise ConfigError(
                "a schema registry URL is set but confluent-kafka's schema registry client "
                f"cannot be imported (install confluent-kafka[schemaregistry]): {exc}"
            ) from exc
        return cls(SchemaRegistryClient(dict(config)))

    def close(self) -> None:
        """Close the client's HTTP session. Idempotent."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get_schema_text(self, schema_id: int) -> str:
        """The Avro schema JSON of ``schema_id`` (see ``SchemaSource``)."""
        try:
            schema = self.client.get_schema(schema_id)
        except Exception as exc:  # every client failure is classified by _classify
            raise _classify(exc, f"schema id {schema_id}") from exc
        if schema.schema_type not in (None, "AVRO"):
            raise UnknownSchemaError(
                CodecReason.UNSUPPORTED_SCHEMA,
                f"schema id {schema_id} is a {schema.schema_type} schema, not Avro",
            )
        if schema.references:
            raise UnknownSchemaError(
                CodecReason.UNSUPPORTED_SCHEMA,
                f"schema id {schema_id} uses schema references, which are not supported",
            )
        return str(schema.schema_str or "")

    def register_schema(self, subject: str, schema_text: str) -> int:
        """Register an Avro schema under ``subject``; its id (the same id for the same content).

        Raises:
            SchemaRegistryUnavailableError: the registry could not be asked.
            ConfigError: the registry refused the schema (409 incompatible, 422 invalid).
        """
        from confluent_kafka.schema_registry import Schema

        try:
            return int(self.client.register_schema(subject, Schema(schema_text, "AVRO")))
        except Exception as exc:  # every client failure is classified by _classify
            raise _classify(exc, f"registering subject {subject}", refused=ConfigError) from exc

    def set_compatibility(self, subject: str, level: str) -> None:
        """Set the compatibility level of ``subject`` (``FULL_TRANSITIVE`` recommended)."""
        try:
            self.client.set_compatibility(subject_name=subject, level=level)
        except Exception as exc:  # every client failure is classified by _classify
            raise _classify(
                exc, f"setting compatibility of {subject}", refused=ConfigError
            ) from exc


def _classify(
    exc: Exception, what: str, refused: type[ConsumerError] | None = None
) -> ConsumerError:
    """A registry client failure -> refused (the registry answered no) or unavailable (retry).

    A refusal of a schema lookup is an ``UnknownSchemaError``; of a write, ``refused``.
    """
    status = getattr(exc, "http_status_code", None)
    if (
        isinstance(status, int)
        and 400 <= status < 500
        and status not in _REGISTRY_UNAVAILABLE_STATUSES
    ):
        message = f"schema registry answered {status} for {what}: "
        message += getattr(exc, "error_message", None) or str(exc)
        if refused is None and status == 404:
            # Also what a registry follower answers before it replicated a new id: retryable
            # for a bounded time (the policy's), not dead-lettered at once.
            return SchemaNotFoundYetError(CodecReason.UNKNOWN_SCHEMA, message)
        if refused is None:
            return UnknownSchemaError(CodecReason.UNKNOWN_SCHEMA, message)
        return refused(message)
    return SchemaRegistryUnavailableError(
        f"schema registry unavailable for {what}: {type(exc).__name__}: {exc}"
    )
