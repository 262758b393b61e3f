"""``button-consumer test-event``'s arguments, without a broker: what ``--total`` accepts.

The broker half (a missing topic, the record produced) is in
``tests/integration/test_test_event_command.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest

from consumer import cli, commands
from consumer.domain.events import CommerceEvent

ARGS = ("test-event", "--order-id", "E14-a")


@pytest.fixture
def produced(monkeypatch: pytest.MonkeyPatch) -> list[CommerceEvent]:
    """The events ``test-event`` would produce, caught before Kafka; settings to load."""
    caught: list[CommerceEvent] = []

    def produce(_settings: Any, events: Iterable[CommerceEvent], **_kwargs: Any) -> int:
        caught.extend(events)
        return len(caught)

    monkeypatch.setattr("consumer.commands.produce_events", produce)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    return caught


@pytest.mark.parametrize(
    ("total", "expected"),
    [("12.50", Decimal("12.50")), ("1299", Decimal(1299)), (" 12.50 ", Decimal("12.50"))],
)
def test_a_plain_decimal_total_is_produced_as_given(
    produced: list[CommerceEvent],
    capsys: pytest.CaptureFixture[str],
    total: str,
    expected: Decimal,
) -> None:
    """``--total`` in plain decimal notation is the purchase's ``total_amount``."""
    assert cli.main([*ARGS, "--total", total]) == 0

    assert [e.commerce and e.commerce.total_amount for e in produced] == [expected]
    assert f"produced purchase E14-a ({expected} USD)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "total",
    [
        "12_50",  # Decimal() reads 1250: it was produced, and Button stored 125000
        "\u0661\u0662",  # Arabic-Indic digits: Decimal() reads 12, Button stored 1200
        "12.5e1",
        "1E+2",
        "1,299.00",
        "NaN",
        "twelve",
        "",
    ],
)
def test_a_total_not_in_plain_decimal_notation_is_a_usage_error_and_produces_nothing(
    produced: list[CommerceEvent], capsys: pytest.CaptureFixture[str], total: str
) -> None:
    """Exit status 2 (a configuration error), one line naming ``--total`` and the value."""
    assert cli.main([*ARGS, "--total", total]) == 2

    assert produced == []
    assert capsys.readouterr().err == (
        "button-consumer: configuration error: --total: not a plain decimal amount like "
        f"'12.34': {total!r}\n"
    )


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--total", "-5", "total_amount is negative: -5"),
        ("--total", "12.345678901", "total_amount has more than"),
        ("--total", "123456789012345678", "total_amount has more than"),
        ("--currency", "US", "currency_code 'US' is not three upper-case letters"),
        ("--currency", "", "a PURCHASE event has no currency"),
        ("--order-id", "", "a PURCHASE event has no transaction_id"),
        ("--user", "", "user_key is empty"),
        ("--user", "u" * 2_049, "user_key is 2049 bytes, over the 2048"),
        ("--order-id", "B\u00e95", "order_id_not_ascii"),
        ("--order-id", "B" * 256, "order_id_too_long"),
        ("--currency", "XYZ", "unknown_currency"),
    ],
)
def test_a_value_the_purchase_cannot_carry_is_a_usage_error_and_produces_nothing(
    produced: list[CommerceEvent],
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    says: str,
) -> None:
    """An argument that parses but makes no valid purchase (a negative or too precise total,
    a currency that is no ISO 4217 code, an empty order id or user) or a purchase Button's
    contract refuses (an order id not printable ASCII or over 255 characters, a currency that
    is not in ISO 4217): exit status 2, one line naming the option, its value and what is
    wrong, as for a total that does not parse; never a purchase that would be dead-lettered."""
    assert cli.main([*ARGS, option, value]) == 2

    err = capsys.readouterr().err
    assert produced == []
    assert err.startswith(f"button-consumer: configuration error: {option} {value!r}: "), err
    assert says in err, err


@pytest.mark.parametrize(
    ("btn_ref", "why"),
    [
        ("undefined", "a placeholder for a missing value, not a token"),
        ("NULL", "a placeholder for a missing value, not a token"),
        ("srctok-", "a placeholder for a missing value, not a token"),
        (" ", "empty"),
        ("srctok-" + "a" * 250, "over 255 characters"),
        ("srctok-a b", "not URL-safe (only A-Z a-z 0-9 . _ ~ -)"),
        ("org-0123456789abcdef", "a publisher's organisation id (org-...), not a token"),
    ],
)
def test_a_btn_ref_the_service_drops_is_produced_with_a_warning_saying_why(
    produced: list[CommerceEvent], capsys: pytest.CaptureFixture[str], btn_ref: str, why: str
) -> None:
    """``--btn-ref undefined`` (or any value the mapping's ``btn_ref_problem`` refuses) is
    produced as asked, the purchase being valid, but a line on stderr says the service will
    drop the token and why, so "produced" is not read as "attributed"."""
    assert cli.main([*ARGS, "--btn-ref", btn_ref]) == 0

    assert [e.btn_ref for e in produced] == [btn_ref]
    assert capsys.readouterr().err == (
        f"button-consumer: warning: --btn-ref {btn_ref!r} is {why}: the service drops it, so "
        "the purchase carries no attribution token of its own\n"
    )


@pytest.mark.parametrize("btn_ref", ["fakesrctok-0123456789abcdef", "srctok-abc", ""])
def test_a_forwardable_or_empty_btn_ref_is_produced_without_a_warning(
    produced: list[CommerceEvent], capsys: pytest.CaptureFixture[str], btn_ref: str
) -> None:
    """A token the service forwards, or ``--btn-ref ''`` (asking for no token), warns of
    nothing."""
    assert cli.main([*ARGS, "--btn-ref", btn_ref]) == 0

    assert [e.btn_ref for e in produced] == [btn_ref or None]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("url", ["notaurl", "ftp://pod:9400", "http://", "file:///etc"])
def test_an_admin_value_that_is_no_http_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """``--admin`` takes an http(s) URL with a host; anything else is exit status 2 naming the
    option and the value, before any request (not a traceback out of urllib)."""
    monkeypatch.setenv("ADMIN_TEST_EVENT_TOKEN", "0123456789abcdef0123")

    assert cli.main([*ARGS, "--admin", url]) == 2

    assert capsys.readouterr().err == (
        f"button-consumer: configuration error: --admin: not an http(s) URL with a host: {url!r}\n"
    )


def test_admin_refuses_a_setting_in_another_letter_case_as_every_command_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--admin`` reads only its token, yet refuses a setting's name in another letter case
    (``admin_test_event_token``) as ``run`` and the other commands do: exit status 2 naming the
    variable and the right name, before any request."""
    monkeypatch.setenv("ADMIN_TEST_EVENT_TOKEN", "0123456789abcdef0123")
    monkeypatch.setenv("admin_test_event_token", "fedcba98765432100123")

    assert cli.main([*ARGS, "--admin", "http://127.0.0.1:1"]) == 2

    assert capsys.readouterr().err.startswith(
        "button-consumer: configuration error: admin_test_event_token: is not a setting of this "
        "service (did you mean ADMIN_TEST_EVENT_TOKEN?)"
    )


def test_an_unreachable_broker_is_named_by_its_setting_as_produce_sample_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``test-event`` against brokers that do not answer: exit status 1 and one line naming
    the address and KAFKA_BOOTSTRAP_SERVERS in librdkafka's words, as ``produce-sample`` and
    ``replay-dlq`` report it, not a ``KafkaError{code=_TRANSPORT,...}`` repr naming no setting.
    A closed port and a 1 s metadata timeout bound the test."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.setattr(commands, "METADATA_TIMEOUT", 1.0)

    assert cli.main(["test-event", "--order-id", "T26"]) == 1

    err = capsys.readouterr().err
    assert "button-consumer: Kafka error at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS): " in err, err
    assert "KafkaError{" not in err, err
