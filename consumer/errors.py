"""The exception tree of the service.

Every error the service raises on purpose is a ``ConsumerError``; adapters translate foreign
exceptions (confluent-kafka, fastavro, httpx, aiohttp) into one of these with ``raise ... from``::

    ConsumerError
    +-- ConfigError              settings invalid; names the variable (never the secret value)
    +-- TopicError               a topic missing or unfit for the service; names its variable
    +-- DecodeError              bytes that cannot become a commerce event (dead-letter)
    |   +-- InvalidEventError    a record that decoded but breaks the event model's rules
    |   +-- UnknownSchemaError   writer schema id or fingerprint not resolvable
    |       +-- SchemaNotFoundYetError  the registry answered 404: maybe not replicated yet
    +-- MappingError             an event that cannot become a valid Button request (dead-letter)
    +-- SchemaRegistryUnavailableError  the registry cannot answer now (wait, decode again)
    +-- DeadLetterError          the dead-letter topic cannot be written (stop consuming)
    +-- BrokerError              Kafka is unusable beyond librdkafka's own retries
        +-- RecordTooLargeError  a record over the producer's or the topic's size limit (certain)
        +-- AuthorizationError   a Kafka ACL the service needs is missing; names each one

``CodecReason`` lists the reasons a ``DecodeError`` carries when bytes cannot become a record,
whether the Avro decoders or the schema registry client found out.
"""

from __future__ import annotations

from enum import StrEnum


class ConsumerError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigError(ConsumerError):
    """A setting is missing or invalid. The message names the environment variable."""


class TopicError(ConsumerError):
    """A topic a command needs is missing, or unfit for the service (``run``'s topic checks).

    Not a ``ConfigError``: the settings are valid, the cluster lacks what they name. Every
    command reports it as a failure it could not get past (exit status 1, README "Commands"),
    the message naming the variable (``KAFKA_TOPIC``, ``KAFKA_DLQ_TOPIC``, ...).
    """


class DecodeError(ConsumerError):
    """Record bytes could not be decoded into a commerce event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CodecReason(StrEnum):
    """Machine reasons of the ``DecodeError`` raised by the decoders, and by the pipeline for a
    record without value or with a key too long to keep a profile under (dead-letter
    headers)."""

    EMPTY = "empty"
    NULL_VALUE = "null_value"
    BAD_MAGIC_BYTE = "bad_magic_byte"
    TRUNCATED = "truncated"
    UNKNOWN_SCHEMA = "unknown_schema"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    INCOMPATIBLE_SCHEMA = "incompatible_schema"
    INVALID_AVRO = "invalid_avro"
    TRAILING_BYTES = "trailing_bytes"
    KEY_TOO_LARGE = "key_too_large"
    """The record's key is over ``consumer.domain.profile.MAX_KEY_BYTES`` (checked before the
    value is decoded)."""


class InvalidEventError(DecodeError):
    """A record that decoded (its bytes are a record of the schema) but is not a valid commerce
    event (``consumer.domain.events``: a negative amount, a purchase without an order id...).

    Decided by the record's own data, the same way every time: it changed nothing, so it parks
    neither its order nor its key (DESIGN, 5). ``event_id`` and ``order_id`` are the record's
    ``event_id`` and ``commerce.transaction_id`` when it has them as strings (``""`` else), for
    the dead letter's headers.
    """

    def __init__(
        self, reason: str, message: str, *, event_id: str = "", order_id: str = ""
    ) -> None:
        super().__init__(reason, message)
        self.event_id = event_id
        self.order_id = order_id


class UnknownSchemaError(DecodeError):
    """The writer schema of a record is not known (unknown id, registry says 404)."""


class SchemaNotFoundYetError(UnknownSchemaError):
    """The registry answered 404 for a schema id: a registry node that has not yet replicated a
    newly registered schema answers so too, hence retried for a bounded time before it counts
    as unknown (DESIGN, 4)."""


class MappingError(ConsumerError):
    """An event cannot be turned into a valid Button request."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeadLetterError(ConsumerError):
    """Writing to the dead-letter topic failed; consuming must stop rather than drop."""


class BrokerError(ConsumerError):
    """Kafka reported a fatal error."""


class BrokersUnreachableError(BrokerError):
    """No bootstrap broker answered a metadata request (``kafka_admin.await_brokers``).

    ``servers``: the bootstrap servers asked; ``detail``: why, in librdkafka's words (a refused
    connection, an unresolved name) or the deadline that passed.
    """

    def __init__(self, servers: str, detail: str) -> None:
        super().__init__(f"Kafka error at {servers} (KAFKA_BOOTSTRAP_SERVERS): {detail}")
        self.servers = servers
        self.detail = detail


class SchemaRegistryUnavailableError(ConsumerError):
    """The schema registry could not be asked (connection, timeout, 5xx, 429, auth).

    Retryable: the record itself may be fine, so it must not be dead-lettered. The caller retries
    with backoff (or pauses) and decodes the same bytes again.
    """

    retryable = True


class RecordTooLargeError(BrokerError):
    """A record is larger than the producer or the topic accepts: a certain, per-record failure,
    not an outage (writing it again fails again).

    Attributes:
        size: the record's size in bytes as written (value, key and headers), if known.
    """

    def __init__(self, size: int, message: str) -> None:
        super().__init__(message)
        self.size = size


class AuthorizationError(BrokerError):
    """The brokers' authorizer refuses this principal operations the service needs (Kafka ACLs
    missing). The message names each one: the operation, the topic or group, its variable and
    Kafka's error code (README "Kafka ACLs")."""
