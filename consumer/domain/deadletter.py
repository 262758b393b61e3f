"""The dead-letter record: the source key and value untouched, the reason in headers.

Headers follow Kafka Connect's ``__connect.errors.*`` names so existing tooling reads them, plus
``button.*`` headers for what Connect has no name for. Nothing here may carry a plaintext email,
the API key or a full response body: the response excerpt is capped and comes from Button's error
envelope, which does not echo request data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

CONNECT = "__connect.errors."
BUTTON = "button."
CONNECTOR_NAME = "button-consumer"
EXCERPT_LIMIT = 256
MESSAGE_LIMIT = 512

H_TOPIC = CONNECT + "topic"
H_PARTITION = CONNECT + "partition"
H_OFFSET = CONNECT + "offset"
H_CONNECTOR = CONNECT + "connector.name"
H_STAGE = CONNECT + "stage"
H_CLASS = CONNECT + "class.name"
H_EXC_CLASS = CONNECT + "exception.class.name"
H_EXC_MESSAGE = CONNECT + "exception.message"
H_REASON = BUTTON + "reason"
H_ACTION = BUTTON + "action"
H_ORDER_ID = BUTTON + "order.id"
H_EVENT_ID = BUTTON + "event.id"
H_STATUS = BUTTON + "http.status"
H_EXCERPT = BUTTON + "response.excerpt"
H_ATTEMPTS = BUTTON + "attempts"
H_FIRST_ATTEMPT = BUTTON + "first.attempt.ms"
H_LAST_ATTEMPT = BUTTON + "last.attempt.ms"
H_PARKED = BUTTON + "parked"
H_DEAD_LETTERED_AT = BUTTON + "dead.lettered.ms"
H_ORIGINAL_SIZE = BUTTON + "original.size"
H_ORIGINAL_KEY_SIZE = BUTTON + "original.key.size"
H_REPLAYED = BUTTON + "replayed"
H_REPLAYED_PARKED = BUTTON + "replayed.parked"
H_REPLAYED_RELEASE = BUTTON + "replayed.release"
H_REPLAYED_STAGE = BUTTON + "replayed.stage"
H_KEY_RELEASED = BUTTON + "key.released"
H_PARKS_ORDER = BUTTON + "parks.order"
H_REPLAYED_PARKS_ORDER = BUTTON + "replayed.parks.order"
H_REPLAYED_REASON = BUTTON + "replayed.reason"

#: Headers of ours that a replay strips before the record goes back to the input topic.
OWN_PREFIXES = (CONNECT, BUTTON)


class Stage(StrEnum):
    """Where the record failed, in Kafka Connect's vocabulary where it has one."""

    DECODE = "VALUE_CONVERTER"
    MAP = "TRANSFORMATION"
    DELIVER = "TASK_PUT"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record could not be delivered, and the context to replay it."""

    topic: str
    partition: int
    offset: int
    stage: Stage
    reason: str
    error_class: str
    message: str
    dead_lettered_ms: int
    action: str = ""
    order_id: str = ""
    event_id: str = ""
    http_status: int | None = None
    excerpt: str = ""
    attempts: int = 0
    first_attempt_ms: int | None = None
    last_attempt_ms: int | None = None
    parked: bool = False
    original_size: int | None = None
    original_key_size: int | None = None
    """Of a ``too_large`` reference written without the source key (the key alone is over the
    DLQ's record limit): the key's size in bytes (``button.original.key.size``)."""
    key_released: bool = False
    """The record was given up (``replay-dlq --release-keys``) and released its key: any later
    replay of this dead letter asks the same (``button.key.released``)."""
    parks_order: bool | None = None
    """Whether later records of its order wait behind this dead letter, so that its replay
    releases the order (``button.parks.order``: ``true``/``false``; ``None``: left out).

    Of a parked dead letter: ``True`` for the one that parked its order (the order was parked
    only because its key was, behind an undecodable record), ``False`` for those that followed
    it, ``None`` when not known (the replay of an older version's parked dead letter). Of a
    first dead letter: ``False`` when it parked nothing (decided by the event's own data: a
    mapping rejection, an invalid event; DESIGN, 5), so its replay releases nothing; ``None``
    when it parked its order or its key, as every first dead letter of older versions did."""


def as_reference(letter: DeadLetter, reason: str, size: int) -> DeadLetter:
    """The dead letter of a record too large for the dead-letter topic: written without the
    source value and headers, it points at the source record (topic, partition, offset, the
    ``__connect.errors.*`` headers) and keeps the first reason in its message."""
    return replace(
        letter,
        reason=reason,
        original_size=size,
        message=(
            f"{letter.reason}: record of {size} bytes too large for the dead-letter topic; "
            f"read it at {letter.topic}/{letter.partition}@{letter.offset}: {letter.message}"
        ),
    )


def dead_letter_headers(
    letter: DeadLetter, source_headers: Iterable[tuple[str, bytes]] = ()
) -> list[tuple[str, bytes]]:
    """The headers of the DLQ record: the source's own headers first, then ours."""
    kept = [(k, v) for k, v in source_headers if not k.startswith(OWN_PREFIXES)]
    ours: list[tuple[str, str]] = [
        (H_TOPIC, letter.topic),
        (H_PARTITION, str(letter.partition)),
        (H_OFFSET, str(letter.offset)),
        (H_CONNECTOR, CONNECTOR_NAME),
        (H_STAGE, letter.stage.value),
        (H_CLASS, "consumer." + letter.stage.name.lower()),
        (H_EXC_CLASS, letter.error_class),
        (H_EXC_MESSAGE, letter.message[:MESSAGE_LIMIT]),
        (H_REASON, letter.reason),
        (H_PARKED, "true" if letter.parked else "false"),
        (H_DEAD_LETTERED_AT, str(letter.dead_lettered_ms)),
        (H_ATTEMPTS, str(letter.attempts)),
    ]
    optional = {
        H_ACTION: letter.action,
        H_ORDER_ID: letter.order_id,
        H_EVENT_ID: letter.event_id,
        H_STATUS: "" if letter.http_status is None else str(letter.http_status),
        H_EXCERPT: letter.excerpt[:EXCERPT_LIMIT],
        H_FIRST_ATTEMPT: "" if letter.first_attempt_ms is None else str(letter.first_attempt_ms),
        H_LAST_ATTEMPT: "" if letter.last_attempt_ms is None else str(letter.last_attempt_ms),
        H_ORIGINAL_SIZE: "" if letter.original_size is None else str(letter.original_size),
        H_ORIGINAL_KEY_SIZE: (
            "" if letter.original_key_size is None else str(letter.original_key_size)
        ),
        H_KEY_RELEASED: "true" if letter.key_released else "",
        H_PARKS_ORDER: "" if letter.parks_order is None else str(letter.parks_order).lower(),
    }
    ours.extend((k, v) for k, v in optional.items() if v)
    return kept + [(k, v.encode("utf-8")) for k, v in ours]


def header_map(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """Headers as text, the last value of a repeated name winning."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers}


def strip_own_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The source's headers, without the dead-letter context (for a replay)."""
    return [(k, v) for k, v in headers if not k.startswith(OWN_PREFIXES)]


def is_parked(headers: Mapping[str, str]) -> bool:
    return headers.get(H_PARKED) == "true"


def releases_key_if_undecodable(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Whether a replayed first dead letter asks to release its key if it still does not
    decode (``replay-dlq --release-keys``: ``button.replayed.release: true``).

    By default such a record parks its key again (DESIGN, 5), which keeps the key's order
    records parked behind it until it decodes: for bytes that never will (truncated, not
    Avro...), the operator gives it up this way, and the key's orders go on.
    """
    pairs = list(headers)
    return replays_parking_letter(pairs) and (H_REPLAYED_RELEASE, b"true") in pairs


def releases_parked_key(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Whether a replayed first dead letter, decoded now, also releases its key's parking: only
    a record that failed to decode parked the key (``button.replayed.stage`` is the decode
    stage; without the header, from an older replay, it is taken to be).

    A user's other orders' first dead letters (refused by the mapping or by Button) release
    only their own orders: the record that parked the key may still not decode.
    """
    stage = dict(headers).get(H_REPLAYED_STAGE)
    return stage is None or stage == Stage.DECODE.value.encode()


def replayed_parks_order(headers: Iterable[tuple[str, bytes]]) -> bool | None:
    """Whether a replayed parked record is the one whose dead letter parked its order
    (``button.replayed.parks.order``, from its dead letter's ``button.parks.order``); ``None``
    when its dead letter did not say (written by an older version)."""
    value = dict(headers).get(H_REPLAYED_PARKS_ORDER)
    return None if value is None else value == b"true"


def parks_its_order(
    headers: Iterable[tuple[str, bytes]],
    *,
    parked: bool,
    behind_key_only: bool,
    parks_nothing: bool = False,
) -> bool | None:
    """The ``parks_order`` of a record's dead letter (``DeadLetter.parks_order``).

    A record that is not parked: ``False`` when its dead letter parks nothing
    (``parks_nothing``), else ``None`` (its own failure parks its order or key, and its replay
    says so by ``button.replayed.parked: false``). A parked record parks its order when the
    order was parked only because its key was (``behind_key_only``), and keeps that role when
    its replay is parked again; the replay of an older version's parked dead letter, which
    did not say, says nothing either.
    """
    if not parked:
        return False if parks_nothing else None
    pairs = list(headers)
    replayed = replayed_parks_order(pairs)
    if behind_key_only or replayed:
        return True
    if replayed is None and is_replay(pairs):
        return None
    return False


def replayed_reason(headers: Iterable[tuple[str, bytes]]) -> str | None:
    """The reason of the dead letter a record is the replay of (``button.replayed.reason``, from
    its ``button.reason``); ``None`` when the replay did not say (an older ``replay-dlq``).
    A replay releases only a parking with this reason: the parking its dead letter made."""
    value = dict(headers).get(H_REPLAYED_REASON)
    return None if value is None else value.decode("utf-8", "replace")


def is_replay(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Whether a record was sent back by ``replay-dlq`` (it carries ``button.replayed``)."""
    return any(name == H_REPLAYED for name, _ in headers)


def replays_parking_letter(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Whether a record is the replay of a first dead letter that parked its order (or, not
    decoded then, its key): its replay releases what it parked (DESIGN, 5). A first dead letter
    that says it parked nothing (``button.replayed.parks.order: false``: a mapping rejection,
    an invalid event) releases nothing, so that it cannot free an order parked since behind
    another dead letter, or a key parked behind an undecodable record."""
    pairs = list(headers)
    return replays_first_dead_letter(pairs) and replayed_parks_order(pairs) is not False


def replays_first_dead_letter(headers: Iterable[tuple[str, bytes]]) -> bool:
    """Whether a record is a replay (``replay-dlq``) of a dead letter written for itself.

    Such a record is the one whose dead letter parked its order (DESIGN, 5), as opposed to one
    parked behind another (``button.replayed.parked: true``): replaying it releases the order.
    """
    replayed = parked = False
    for name, value in headers:
        if name == H_REPLAYED:
            replayed = True
        elif name == H_REPLAYED_PARKED:
            parked = value == b"true"
    return replayed and not parked
