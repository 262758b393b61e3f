"""The dead-letter record's headers: Kafka Connect's names, ours, caps, and the replay helpers."""

from __future__ import annotations

import pytest

from consumer.domain.deadletter import (
    EXCERPT_LIMIT,
    H_REPLAYED,
    H_REPLAYED_PARKED,
    H_REPLAYED_PARKS_ORDER,
    MESSAGE_LIMIT,
    DeadLetter,
    Stage,
    dead_letter_headers,
    header_map,
    is_parked,
    parks_its_order,
    strip_own_headers,
)


def letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "topic": "commerce-events",
        "partition": 3,
        "offset": 42,
        "stage": Stage.DELIVER,
        "reason": "http_400",
        "error_class": "ButtonInvalid",
        "message": "order_id is invalid",
        "dead_lettered_ms": 1_714_572_202_000,
    }
    fields.update(overrides)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def test_minimal_letter_has_connect_and_mandatory_button_headers_in_order() -> None:
    """Without optional context, exactly the Connect headers and the mandatory button.* ones."""
    expected = [
        ("__connect.errors.topic", b"commerce-events"),
        ("__connect.errors.partition", b"3"),
        ("__connect.errors.offset", b"42"),
        ("__connect.errors.connector.name", b"button-consumer"),
        ("__connect.errors.stage", b"TASK_PUT"),
        ("__connect.errors.class.name", b"consumer.deliver"),
        ("__connect.errors.exception.class.name", b"ButtonInvalid"),
        ("__connect.errors.exception.message", b"order_id is invalid"),
        ("button.reason", b"http_400"),
        ("button.parked", b"false"),
        ("button.dead.lettered.ms", b"1714572202000"),
        ("button.attempts", b"0"),
    ]
    assert expected == dead_letter_headers(letter())


def test_full_letter_adds_every_optional_button_header() -> None:
    """Action, order, event, status, excerpt and attempt times appear when known."""
    full = letter(
        action="create",
        order_id="ORD-1",
        event_id="evt-1",
        http_status=400,
        excerpt='{"error":{"message":"bad"}}',
        attempts=3,
        first_attempt_ms=1000,
        last_attempt_ms=2500,
        parked=True,
    )

    headers = header_map(dead_letter_headers(full))

    expected = {
        "button.action": "create",
        "button.order.id": "ORD-1",
        "button.event.id": "evt-1",
        "button.http.status": "400",
        "button.response.excerpt": '{"error":{"message":"bad"}}',
        "button.attempts": "3",
        "button.first.attempt.ms": "1000",
        "button.last.attempt.ms": "2500",
        "button.parked": "true",
    }
    assert expected == {k: headers[k] for k in expected}


def test_optional_headers_are_omitted_when_empty() -> None:
    """No empty button.action, order id, status, excerpt or attempt-time headers."""
    names = {name for name, _ in dead_letter_headers(letter())}

    optional = {
        "button.action",
        "button.order.id",
        "button.event.id",
        "button.http.status",
        "button.response.excerpt",
        "button.first.attempt.ms",
        "button.last.attempt.ms",
    }
    assert set() == names & optional


def test_stage_names_use_connect_vocabulary() -> None:
    """Decode, map and deliver failures carry Connect's stage names."""
    stages = [
        header_map(dead_letter_headers(letter(stage=stage)))["__connect.errors.stage"]
        for stage in (Stage.DECODE, Stage.MAP, Stage.DELIVER)
    ]

    assert stages == ["VALUE_CONVERTER", "TRANSFORMATION", "TASK_PUT"]


def test_exception_message_is_capped() -> None:
    """A long error message is cut to MESSAGE_LIMIT characters."""
    headers = header_map(dead_letter_headers(letter(message="m" * (MESSAGE_LIMIT + 100))))

    assert headers["__connect.errors.exception.message"] == "m" * MESSAGE_LIMIT


def test_response_excerpt_is_capped() -> None:
    """A long response excerpt is cut to EXCERPT_LIMIT characters."""
    headers = header_map(dead_letter_headers(letter(excerpt="x" * (EXCERPT_LIMIT * 3))))

    assert headers["button.response.excerpt"] == "x" * EXCERPT_LIMIT


def test_source_headers_come_first_and_ours_are_stripped_from_them() -> None:
    """The source's own headers lead, unchanged; stale __connect/button headers are dropped."""
    source = [
        ("trace-id", b"abc"),
        ("button.reason", b"stale"),
        ("__connect.errors.topic", b"older-topic"),
        ("content-type", b"avro"),
    ]

    headers = dead_letter_headers(letter(), source)

    assert headers[:2] == [("trace-id", b"abc"), ("content-type", b"avro")]
    assert header_map(headers)["button.reason"] == "http_400"
    assert sum(1 for name, _ in headers if name == "button.reason") == 1


def test_strip_own_headers_keeps_only_the_source_headers_in_order() -> None:
    """A replay drops every __connect.errors.* and button.* header and keeps the rest."""
    headers = [
        ("a", b"1"),
        ("__connect.errors.offset", b"9"),
        ("button.parked", b"true"),
        ("b", b"2"),
        ("button.replayed", b"0:1"),
    ]

    assert strip_own_headers(headers) == [("a", b"1"), ("b", b"2")]


def test_header_map_decodes_values_and_the_last_repeat_wins() -> None:
    """Values become text (None as empty, bad UTF-8 replaced); a repeated name keeps its last."""
    headers = [("a", b"1"), ("n", None), ("a", b"2"), ("bad", b"\xff")]

    assert header_map(headers) == {"a": "2", "n": "", "bad": "\ufffd"}


def test_is_parked_reads_the_parked_header() -> None:
    """Only button.parked == "true" means parked; false or absent does not."""
    expected = [True, False, False]
    actual = [
        is_parked({"button.parked": "true"}),
        is_parked({"button.parked": "false"}),
        is_parked({}),
    ]
    assert expected == actual


def test_round_trip_of_a_parked_letter_is_parked() -> None:
    """The headers written for a parked letter read back as parked."""
    assert is_parked(header_map(dead_letter_headers(letter(parked=True))))


@pytest.mark.parametrize(
    ("headers", "parked", "behind_key_only", "expected"),
    [
        ([], False, False, None),
        ([], True, True, True),
        ([], True, False, False),
        ([(H_REPLAYED, b"0:1"), (H_REPLAYED_PARKS_ORDER, b"true")], True, False, True),
        ([(H_REPLAYED, b"0:1"), (H_REPLAYED_PARKS_ORDER, b"false")], True, False, False),
        ([(H_REPLAYED, b"0:1"), (H_REPLAYED_PARKED, b"true")], True, False, None),
    ],
    ids=[
        "not-parked",
        "behind-key",
        "behind-order",
        "replayed-parker",
        "replayed-follower",
        "older-version-replay",
    ],
)
def test_a_parked_dead_letter_says_whether_it_parked_its_order(
    headers: list[tuple[str, bytes]], parked: bool, behind_key_only: bool, expected: bool | None
) -> None:
    """``button.parks.order``: a record parked only behind its key parks its order, and its
    replay parked again keeps that role; a follower does not; an older version's replay, which
    did not say, says nothing."""
    assert parks_its_order(headers, parked=parked, behind_key_only=behind_key_only) is expected
