"""The offline ``map`` command: JSON lines in, one decision per line out."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.domain.mapping import MappingConfig
from consumer.mapcmd import run_map

TOKEN = "srctok-0123456789abcdef"


def lines(*events: Any) -> list[str]:
    return [e if isinstance(e, str) else json.dumps(e) for e in events]


def run(*events: Any) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    status = run_map(lines(*events), out, MappingConfig())
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


INSTALL = {
    "event_id": "e1",
    "event_type": "APP_INSTALL",
    "event_time": "2026-01-05T09:00:00Z",
    "user_key": "u1",
    "launch_referral_url": f"https://brand.bttn.io/p/1?btn_ref={TOKEN}",
}
PURCHASE: dict[str, Any] = {
    "event_id": "e2",
    "event_type": "PURCHASE",
    "event_time": "2026-01-05T10:00:00Z",
    "user_key": "u1",
    "commerce": {
        "action": "PURCHASE",
        "transaction_id": "O-1",
        "currency_code": "JPY",
        "total_amount": "1200",
        "products": [{"id": "A", "price": "600", "quantity": 2}],
    },
}
REFUND = {
    "event_id": "e3",
    "event_type": "REFUND",
    "event_time": "2026-01-06T10:00:00Z",
    "user_key": "u1",
    "commerce": {"action": "REFUND", "transaction_id": "O-1", "products": [{"id": "A"}]},
}


def test_profile_is_carried_across_lines_by_user_key() -> None:
    """An install's token reaches the same user's later purchase; the refund updates it."""
    status, results = run(INSTALL, PURCHASE, REFUND)
    assert status == 0
    assert [r["action"] for r in results] == ["skip", "create", "update"]
    assert results[0]["reason"] == "profile_only"
    create = results[1]["request"]
    assert (create["method"], create["path"]) == ("POST", "/v1/order")
    assert (create["body"]["btn_ref"], create["body"]["total"]) == (TOKEN, 1200)
    assert results[1]["btn_ref_source"] == "profile"
    update = results[2]["request"]
    assert (
        update["method"],
        update["path"],
        update["body"]["total"],
    ) == ("POST", "/v1/order/O-1", 600)
    assert [r["line"] for r in results] == [1, 2, 3]
    assert [r["event_id"] for r in results] == ["e1", "e2", "e3"]


def test_other_users_do_not_share_profiles() -> None:
    """A token of user u1 is not attached to user u2's purchase."""
    _, results = run(INSTALL, {**PURCHASE, "user_key": "u2"})
    assert "btn_ref" not in results[1]["request"]["body"]


def test_malformed_lines_become_rejects_not_crashes() -> None:
    """Bad JSON, non-objects and invalid events each produce a reject line."""
    bad_event = {**PURCHASE, "event_id": "e9", "commerce": {"action": "PURCHASE"}}
    status, results = run("{not json", "[1, 2]", bad_event, "", PURCHASE)
    assert status == 1
    assert [r["reason"] for r in results[:3]] == [
        "invalid_json",
        "not_an_object",
        "missing_transaction_id",
    ]
    assert [r["event_id"] for r in results[:3]] == [None, None, "e9"]
    assert all(r["action"] == "reject" and r["request"] is None for r in results[:3])
    assert (results[3]["action"], results[3]["line"]) == ("create", 5)


def test_mapping_rejects_are_reported_with_reason_and_detail() -> None:
    """A purchase in a currency without minor unit is rejected with a named reason."""
    gold = {**PURCHASE, "commerce": {**PURCHASE["commerce"], "currency_code": "XAU"}}
    status, results = run(gold)
    assert status == 1
    assert results[0]["reason"] == "currency_without_minor_unit"
    assert results[0]["detail"]


def test_a_held_refund_the_purchase_cannot_take_is_listed_on_the_purchase_line() -> None:
    """A refund of a product the order lacks, held (``map`` reads nothing), then the purchase:
    its line is the create at the full total, and ``discarded`` names the refund and why."""
    held = {
        **REFUND,
        "event_time": "2026-01-05T09:30:00Z",
        "commerce": {"action": "REFUND", "transaction_id": "O-1", "products": [{"id": "Z"}]},
    }

    status, results = run(held, PURCHASE)

    assert status == 0
    assert (results[0]["reason"], "discarded" in results[0]) == ("refund_held", False)
    assert (results[1]["action"], results[1]["request"]["body"]["total"]) == ("create", 1200)
    assert results[1]["discarded"] == [
        {
            "event_id": "e3",
            "reason": "refund_item_not_in_order",
            "detail": "refunded product 'Z' is not in the order",
        }
    ]


def test_cancel_has_no_body() -> None:
    """A whole-order refund prints DELETE with a null body."""
    full = {**REFUND, "commerce": {"action": "REFUND", "transaction_id": "O 1/2"}}
    _, results = run(full)
    assert results[0]["request"] == {
        "method": "DELETE",
        "path": "/v1/order/O%201%2F2",
        "body": None,
    }
    assert results[0]["action"] == "cancel"


def _raw_purchase(event_id: str, **overrides: Any) -> str:
    """A purchase line as text, so that a field can hold what json.dumps would never write."""
    fields = {**PURCHASE, "event_id": event_id, **overrides}
    return json.dumps(fields)


HUGE_INTEGER = _raw_purchase("e2").replace(
    '"total_amount": "1200"', '"total_amount": 1' + "0" * 4400
)
HUGE_QUANTITY = _raw_purchase("e2").replace('"quantity": 2', '"quantity": 9' * 1 + "9" * 5000)
OUT_OF_RANGE_LINES = [
    # issue 9, row 9: a 4,400-digit total_amount; an event_time before year 1 in UTC
    (HUGE_INTEGER, "invalid_json"),
    (_raw_purchase("e2", event_time="0001-01-01T00:30:00+01:00"), "invalid_timestamp"),
    # the same kind: after year 9999 in UTC, an epoch far out of range, a 5,000-digit quantity,
    # an exponent no amount has, a number nested deeper than the parser goes
    (_raw_purchase("e2", event_time="9999-12-31T23:30:00-01:00"), "invalid_timestamp"),
    (_raw_purchase("e2", event_time=-(10**20)), "invalid_timestamp"),
    (HUGE_QUANTITY, "invalid_json"),
    (
        _raw_purchase("e2").replace('"total_amount": "1200"', '"total_amount": 1e999999'),
        "invalid_amount",
    ),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
]


@pytest.mark.parametrize(("line", "reason"), OUT_OF_RANGE_LINES)
def test_out_of_range_line_becomes_a_reject_and_later_lines_run(line: str, reason: str) -> None:
    """A malformed or out-of-range second line is a reject line; the lines after it still run."""
    later = {
        **PURCHASE,
        "event_id": "e3",
        "commerce": {**PURCHASE["commerce"], "transaction_id": "O-2"},
    }
    status, results = run(PURCHASE, line, later)
    assert status == 1
    assert [r["action"] for r in results] == ["create", "reject", "create"]
    assert results[1]["reason"] == reason
    assert results[1]["line"] == 2


def test_an_unexpected_failure_of_one_line_is_a_reject_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever goes wrong inside the mapping of a line, map writes a reject and goes on."""
    from consumer.domain.mapping import process as real

    calls = iter([True, False])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(calls):
            raise ArithmeticError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr("consumer.mapcmd.process", flaky)
    status, results = run(PURCHASE, {**PURCHASE, "event_id": "e3"})
    assert status == 1
    assert (results[0]["action"], results[0]["reason"]) == ("reject", "unprocessable")
    assert "ArithmeticError" in results[0]["detail"]
    assert results[1]["action"] == "create"


def test_the_example_journey_in_docs_maps_as_the_readme_says() -> None:
    """``button-consumer map docs/examples/events.jsonl`` (the README's example input): an
    install's token and advertising id reach the purchase; a partial refund updates it, a
    full one cancels it; another user's view is skipped and an unknown currency rejected."""
    path = Path(__file__).resolve().parents[2] / "docs" / "examples" / "events.jsonl"
    out = io.StringIO()

    status = run_map(path.read_text(encoding="utf-8").splitlines(), out, MappingConfig())

    results = [json.loads(line) for line in out.getvalue().splitlines()]
    assert status == 1
    assert [(r["action"], r["reason"]) for r in results] == [
        ("skip", "profile_only"),
        ("create", None),
        ("update", None),
        ("cancel", None),
        ("skip", "profile_only"),
        ("reject", "unknown_currency"),
    ]
    create = results[1]["request"]["body"]
    assert (create["btn_ref"], create["total"], create["customer"]["device_id"]) == (
        TOKEN,
        5998,
        "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    )
    assert results[2]["request"]["body"]["total"] == 2999


def _usd_purchase_line(total: str) -> str:
    """A USD purchase line whose ``total_amount`` is the JSON text ``total`` as written."""
    return _raw_purchase(
        "e2",
        commerce={"action": "PURCHASE", "transaction_id": "O-1", "currency_code": "USD"},
    ).replace('"currency_code": "USD"', f'"currency_code": "USD", "total_amount": {total}')


@pytest.mark.parametrize(
    ("total", "action", "reason", "button_total"),
    [
        # amounts written as JSON strings: plain decimal notation only
        ('" 12.50 "', "create", None, 1250),
        ('"12_50"', "reject", "invalid_amount", None),  # was created with total 125000
        ('"\\u0661\\u0662"', "reject", "invalid_amount", None),  # was created with total 1200
        ('"12.5e1"', "reject", "invalid_amount", None),  # was created with total 12500
        ('"1E+2"', "reject", "invalid_amount", None),  # was created with total 10000
        ('"1,299.00"', "reject", "invalid_amount", None),
        # amounts written as JSON numbers are numbers, whatever their notation
        ("12.5", "create", None, 1250),
        ("1e2", "create", None, 10000),
    ],
)
def test_a_text_amount_is_read_only_in_plain_decimal_notation(
    total: str, action: str, reason: str | None, button_total: int | None
) -> None:
    """The tester's ``map`` lines: an amount string with an underscore, other digits or an
    exponent is rejected ``invalid_amount``, not sent as another total; numbers are kept."""
    status, results = run(_usd_purchase_line(total))

    body = results[0]["request"] and results[0]["request"]["body"]
    assert (status, results[0]["action"], results[0]["reason"]) == (
        0 if reason is None else 1,
        action,
        reason,
    )
    assert (None if body is None else body["total"]) == button_total


def test_what_an_event_carried_that_is_dropped_is_listed() -> None:
    """``dropped`` lists what the service counts and logs as ``btn_ref_dropped`` and
    ``input_dropped`` for the line: a placeholder token (with its value), a product without a
    price (its id), an advertising id that is not a UUID (no value); absent when nothing was."""
    purchase = {
        **PURCHASE,
        "btn_ref": "undefined",
        "device_info": {"ios_advertising_id": "opt-out"},
        "commerce": {
            **PURCHASE["commerce"],
            "products": [{"id": "A", "price": "600", "quantity": 1}, {"id": "B", "quantity": 1}],
        },
    }
    status, results = run(INSTALL, purchase)
    assert status == 0
    assert "dropped" not in results[0]
    assert results[1]["dropped"] == [
        {"field": "btn_ref", "source": "explicit", "problem": "placeholder", "value": "undefined"},
        {"field": "line_items", "problem": "product_without_price", "value": "B"},
        {"field": "ios_advertising_id", "problem": "not_uuid", "value": None},
    ]


def test_without_now_the_output_does_not_depend_on_when_map_runs() -> None:
    """Without ``--now`` each event is processed as of its own time (README: the output does not
    depend on when it runs), so a file of past events maps the same years later: no event is
    judged ``event_time_too_old`` against the time the command runs, only against ``--now``."""
    old = {**PURCHASE, "event_time": "2001-01-05T10:00:00Z"}
    assert [r["action"] for r in run(old)[1]] == ["create"]

    out = io.StringIO()
    run_map(lines(old), out, MappingConfig(), now=datetime(2026, 1, 6, tzinfo=UTC))
    assert json.loads(out.getvalue())["reason"] == "event_time_too_old"
