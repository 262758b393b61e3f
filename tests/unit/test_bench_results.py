"""The bench's ``latest.json`` keeps the shape tools read (issue 14), from the rounds' medians.

No timing is asserted: the figures are made up; only the shape and the median are checked.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import markdown, summarise, sustained_rate


def _run(count: int, seconds: float, cpu_s: float = 1.0) -> dict[str, Any]:
    return {"count": count, "seconds": seconds, "cpu_s": cpu_s}


def _raw() -> dict[str, Any]:
    forward = {
        kind: [_run(1000, 1.0), _run(1000, 2.0), _run(1000, 4.0)]
        for kind in ("service", "http_ceiling", "quix_stateless", "quix_stateful", "kafka_connect")
    }
    forward["naive"] = [_run(100, 4.0)]
    state = {"profiles": 1000, "peak_rss_mb": 80.0, "restart_to_first_delivery_s": 1.5}
    return {
        "args": {
            "rounds": 3,
            "forward": 1000,
            "filter": 100,
            "naive_limit": 100,
            "profiles": 1000,
            "partitions": 3,
            "latency_p50_ms": 20.0,
            "latency_p99_ms": 120.0,
            "in_flight": 64,
        },
        "forward": forward,
        "filter": {"service": [_run(100, 1.0)], "decode_ceiling": [_run(100, 0.1)]},
        "sweep": {"service": {64: 500.0}, "http_ceiling": {64: 1000.0}},
        "state": state,
        "state_empty": state | {"profiles": 0},
    }


def test_latest_json_has_the_issue_shape_with_medians() -> None:
    latest = summarise(_raw())
    shape = {
        "machine": str,
        "date": str,
        "paths": {
            "forward": {
                "unit": "orders/s",
                "service": 500.0,
                "yardsticks": {
                    "http_ceiling": 500.0,
                    "quix_stateless": 500.0,
                    "quix_stateful": 500.0,
                    "naive": 25.0,
                    "kafka_connect": 500.0,
                },
                "cpu_s_per_1000": 1.0,
                "sustained": {
                    "service": 0,
                    "http_ceiling": 0,
                    "quix_stateless": 0,
                    "quix_stateful": 0,
                    "kafka_connect": 0,
                },
            },
            "filter": {
                "unit": "events/s",
                "service": 100.0,
                "yardsticks": {"decode_ceiling": 1000.0},
            },
            "state": {"profiles": 1000, "peak_rss_mb": 80.0, "restart_to_first_delivery_s": 1.5},
        },
    }
    actual = {**latest, "machine": str, "date": str}
    assert shape == actual


def test_the_markdown_names_every_yardstick_with_its_ratio() -> None:
    text = markdown(_raw(), summarise(_raw()))
    assert "| filter (events/s) | 100 | consume + fastavro alone: 1,000 | 0.10x |" in text
    assert "naive loop (poll, decode, one blocking POST): 25 | 20.00x |" in text
    assert "Kafka Connect standalone, HTTP sink (okhttp), 64 in flight: 500 | 1.00x |" in text
    assert "Kafka Connect 1.000 s" in text


def test_the_rate_to_the_last_order_at_the_sandbox_is_reported_beside_it() -> None:
    """A consumer's run also says when its last order reached the sandbox (before the last
    commit); the HTTP ceiling, which commits nothing, counts its whole run."""
    raw = _raw()
    for kind in ("service", "quix_stateless", "quix_stateful", "kafka_connect"):
        for run in raw["forward"][kind]:
            run["to_button_s"] = run["seconds"] / 2
    text = markdown(raw, summarise(raw))
    assert (
        "| forward, to the last order at the sandbox (orders/s) | 1,000 | HTTP ceiling 500;"
        " quix stateless 1,000, stateful 1,000; Kafka Connect 1,000 | 2.00x |"
    ) in text


def test_a_run_without_the_connect_peer_reports_zero_for_it() -> None:
    raw = _raw()
    del raw["forward"]["kafka_connect"]
    latest = summarise(raw)
    assert latest["paths"]["forward"]["yardsticks"]["kafka_connect"] == 0
    assert "HTTP sink (okhttp), 64 in flight: 0 | n/a |" in markdown(raw, latest)


def test_the_sustained_rate_leaves_out_the_start_and_the_tail() -> None:
    """A run that starts late and ends slowly is measured over its middle 80 %."""
    # 100 orders: the first 10 over 5 s (start-up), 80 at 100/s, the last 10 over 5 s (tail).
    start = [i * 0.5 for i in range(10)]
    flow = [5.0 + i * 0.01 for i in range(80)]
    tail = [5.8 + i * 0.5 for i in range(10)]
    arrivals = list(reversed(start + flow + tail))  # the order given does not matter
    assert sustained_rate(arrivals) == pytest.approx(100.0)
    assert sustained_rate(arrivals[:9]) == 0.0
    assert sustained_rate([1.0] * 20) == 0.0


def test_the_sustained_rate_is_reported_for_every_candidate_measured() -> None:
    raw = _raw()
    for kind, value in (("service", 800.0), ("http_ceiling", 1000.0)):
        for run in raw["forward"][kind]:
            run["sustained_per_s"] = value
    latest = summarise(raw)
    assert latest["paths"]["forward"]["sustained"] == {
        "service": 800.0,
        "http_ceiling": 1000.0,
        "quix_stateless": 0,
        "quix_stateful": 0,
        "kafka_connect": 0,
    }
    assert (
        "| forward, sustained: the middle 80 % of the orders at the sandbox (orders/s) | 800 |"
        " HTTP ceiling 1,000; quix stateless 0, stateful 0; Kafka Connect 0 | 0.80x |"
    ) in markdown(raw, latest)
