"""``button-consumer test-event``'s arguments, without a broker: what ``--total`` accepts.

The broker half (a missing topic, the record produced) is in
``tests/integration/test_test_event_command.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pytest

from consumer import cli
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
