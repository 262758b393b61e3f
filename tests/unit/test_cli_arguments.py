"""Every numeric option of every command refuses what it cannot mean: a usage error (exit 2)
naming the option and the value, before any setting is read or any client is built."""

from __future__ import annotations

import pytest

from consumer import cli

SANDBOX = ("sandbox", "--api-key", "k")
RATE = ("nan", "inf", "-inf", "-0.5", "1.5")
"""Refused by a share between 0 and 1 (0 and 1 are meaningful)."""
POSITIVE = ("nan", "inf", "-1", "0")
"""Refused by a finite number above 0."""
NOT_NEGATIVE = ("nan", "inf", "-1")
"""Refused by a finite number of at least 0 (0 is meaningful: none)."""

CASES = [
    *((("replay-dlq",), "--rate", v) for v in (*POSITIVE, "-inf", "1_0")),
    *((("produce-sample",), "--users", v) for v in ("nan", "-1", "0", "1.5")),
    *((("produce-sample",), "--partitions", v) for v in ("nan", "-1", "0")),
    *((("produce-sample",), "--seed", v) for v in ("nan", "1.5")),
    *((("produce-sample",), "--rate", v) for v in POSITIVE),
    *((("produce-sample",), "--duration", v) for v in POSITIVE),
    *((("produce-sample",), "--invalid-ratio", v) for v in RATE),
    *((("check",), "--timeout", v) for v in POSITIVE),
    *((SANDBOX, "--port", v) for v in ("nan", "-1", "65536")),
    *((SANDBOX, "--finalization-window", v) for v in NOT_NEGATIVE),
    *((SANDBOX, "--seed", v) for v in ("nan", "1.5")),
    *((SANDBOX, "--latency-ms", v) for v in NOT_NEGATIVE),
    *((SANDBOX, "--latency-p50-ms", v) for v in POSITIVE),
    *((SANDBOX, "--latency-p99-ms", v) for v in POSITIVE),
    *((SANDBOX, "--retry-after", v) for v in ("nan", "-1", "1.5")),
    *((SANDBOX, "--reset-rate", v) for v in RATE),
    *((SANDBOX, "--hang-rate", v) for v in RATE),
    *((SANDBOX, "--hang-seconds", v) for v in NOT_NEGATIVE),
    *((SANDBOX, "--lost-response-rate", v) for v in RATE),
    *((SANDBOX, "--accepted-rate", v) for v in RATE),
    *((SANDBOX, "--outage-seconds", v) for v in NOT_NEGATIVE),
    *((SANDBOX, "--outage-status", v) for v in ("nan", "200", "600", "-1")),
    *((SANDBOX, "--error-rate", v) for v in ("500=nan", "500=inf", "500=-1", "500=2", "500")),
]


@pytest.mark.parametrize(
    ("command", "option", "value"), CASES, ids=[f"{c[0]} {o} {v}" for c, o, v in CASES]
)
def test_a_meaningless_number_is_a_usage_error_naming_the_option_and_value(
    command: tuple[str, ...],
    option: str,
    value: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``button-consumer COMMAND OPTION VALUE``: exit 2, the usage line, and an error naming
    the option and the value as given. (A value taken would run the command: it is stopped at
    its dispatch, so the test reaches no broker and serves nothing.)"""
    monkeypatch.setattr(cli, "_dispatch", lambda _args: 0)
    with pytest.raises(SystemExit) as stop:
        cli.main([*command, f"{option}={value}"])

    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert f"error: argument {option}: " in err, err
    assert repr(value) in err, err


@pytest.mark.parametrize(
    ("command", "option", "value", "parsed"),
    [
        (("replay-dlq",), "--rate", "0.5", 0.5),
        (("produce-sample",), "--invalid-ratio", "0", 0.0),
        (("produce-sample",), "--invalid-ratio", "1", 1.0),
        (("produce-sample",), "--seed", "-3", -3),
        (("check",), "--timeout", "2.5", 2.5),
        (SANDBOX, "--port", "0", 0),
        (SANDBOX, "--finalization-window", "0", 0.0),
        (SANDBOX, "--latency-ms", "0", 0.0),
        (SANDBOX, "--retry-after", "0", 0),
        (SANDBOX, "--outage-status", "503", 503),
        (SANDBOX, "--error-rate", "503=0.25", ["503=0.25"]),
    ],
)
def test_a_meaningful_number_is_taken(
    command: tuple[str, ...], option: str, value: str, parsed: object
) -> None:
    """The bounds are the meaningful ones: 0 where it means none (or, for a port, any free
    one), 1 where a share may be whole, a negative seed."""
    args = cli._parser().parse_args([*command, option, value])

    assert getattr(args, option.lstrip("-").replace("-", "_")) == parsed
