"""``python -m bench.compare``: how a candidate is named on the command line, and its summary."""

from __future__ import annotations

from pathlib import Path

from bench.compare import _candidate, _summary


def test_a_candidate_is_a_checkout_with_optional_settings_and_interpreter() -> None:
    """``DIR[:VAR=VALUE,...][@PYTHON]``: the directory made absolute, the settings as given (a
    value may hold ``=``), the interpreter (``None``: this virtualenv's)."""
    assert _candidate(".") == (str(Path.cwd()), {}, None)
    assert _candidate("/x:DELIVERY_CONCURRENCY_MAX=128,KAFKA_CONFIG_CLIENT_ID=a=b") == (
        "/x",
        {"DELIVERY_CONCURRENCY_MAX": "128", "KAFKA_CONFIG_CLIENT_ID": "a=b"},
        None,
    )
    assert _candidate("/x:LOG_LEVEL=info@/opt/py313/bin/python") == (
        "/x",
        {"LOG_LEVEL": "info"},
        "/opt/py313/bin/python",
    )
    assert _candidate("/x@python3.12") == ("/x", {}, "python3.12")


def test_the_summary_is_the_median_rates_and_cpu_per_thousand() -> None:
    """To every offset committed, to the last order at the sandbox, sustained, and CPU per
    1,000."""
    runs = [
        {"count": 1000, "seconds": 1.0, "to_button_s": 0.5, "cpu_s": 0.5, "sustained_per_s": 900},
        {"count": 1000, "seconds": 2.0, "to_button_s": 1.25, "cpu_s": 0.7, "sustained_per_s": 1100},
        {"count": 1000, "seconds": 4.0, "to_button_s": 3.5, "cpu_s": 0.6, "sustained_per_s": 1000},
    ]
    expected = "500/s (800/s to Button, 1,000 orders/s sustained), 0.600 s CPU per 1,000"
    assert _summary(runs) == expected
