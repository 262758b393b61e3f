"""The bench's report: ``latest.json`` (the shape tools read), Markdown, and the in-flight chart.

Pure functions of the raw results that ``bench.suite`` collects (every run of every round).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def rate(result: dict[str, Any]) -> float:
    return float(result["count"]) / float(result["seconds"])


def median(runs: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> float:
    return float(statistics.median(value(run) for run in runs))


SUSTAINED_SPAN = (0.1, 0.9)
"""The part of a run's orders the sustained rate is measured over: from the 10th to the 90th
percentile of their arrivals at the sandbox."""


def sustained_rate(arrivals: list[float]) -> float:
    """Orders per second while the run was in full flow: the orders that reached the sandbox
    between the 10th and the 90th percentile of their arrival times, over that time.

    Every candidate is measured the same way, at the sandbox, so a consumer's start-up (its
    imports, the group join, the changelog restore) and its last commit, which the whole-run
    figures include and the HTTP ceiling's does not, are left out. This is the rate a pod
    keeps while records wait, what a deployment is sized by.

    Args:
        arrivals: each order's first answered create, in seconds (any epoch), in any order.

    Returns:
        orders per second; 0.0 for fewer than 10 orders or a span of no time.
    """
    if len(arrivals) < 10:
        return 0.0
    times = sorted(arrivals)
    first = int(len(times) * SUSTAINED_SPAN[0])
    last = int(len(times) * SUSTAINED_SPAN[1]) - 1
    span = times[last] - times[first]
    return (last - first) / span if span > 0 else 0.0


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """``latest.json``: the issue's shape, medians of the rounds."""
    fwd, flt = raw["forward"], raw["filter"]

    def med(runs: dict[str, Any], kind: str) -> float:
        return round(median(runs[kind], rate), 1) if runs.get(kind) else 0

    service = fwd["service"]
    cpu = median(service, lambda run: 1000 * run["cpu_s"] / run["count"])

    def sustained(kind: str) -> float:
        runs = [run for run in fwd.get(kind, []) if run.get("sustained_per_s")]
        return round(median(runs, lambda run: run["sustained_per_s"]), 1) if runs else 0

    return {
        "machine": f"{os.cpu_count()} cores, shared by the broker, the sandbox and every candidate;"
        f" {platform.system()}, "
        f"Python {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "paths": {
            "forward": {
                "unit": "orders/s",
                "service": med(fwd, "service"),
                "yardsticks": {
                    "http_ceiling": med(fwd, "http_ceiling"),
                    "quix_stateless": med(fwd, "quix_stateless"),
                    "quix_stateful": med(fwd, "quix_stateful"),
                    "naive": med(fwd, "naive"),
                    "kafka_connect": med(fwd, "kafka_connect"),
                },
                "cpu_s_per_1000": round(cpu, 3),
                "sustained": {
                    kind: sustained(kind)
                    for kind in (
                        "service",
                        "http_ceiling",
                        "quix_stateless",
                        "quix_stateful",
                        "kafka_connect",
                    )
                },
            },
            "filter": {
                "unit": "events/s",
                "service": med(flt, "service"),
                "yardsticks": {"decode_ceiling": med(flt, "decode_ceiling")},
            },
            "state": {
                "profiles": raw["state"]["profiles"],
                "peak_rss_mb": round(raw["state"]["peak_rss_mb"], 1),
                "restart_to_first_delivery_s": round(
                    raw["state"]["restart_to_first_delivery_s"], 2
                ),
            },
        },
    }


def markdown(raw: dict[str, Any], latest: dict[str, Any]) -> str:
    a = raw["args"]
    fwd = latest["paths"]["forward"]
    flt = latest["paths"]["filter"]
    st = latest["paths"]["state"]
    svc = fwd["service"]

    def ratio(value: float, base: float) -> str:
        return f"{value / base:.2f}x" if base else "n/a"

    def cpu_per_1000(kind: str) -> str:
        runs = raw["forward"].get(kind)
        if not runs:
            return "n/a"
        return f"{median(runs, lambda run: 1000 * run['cpu_s'] / run['count']):.3f} s"

    lines = [
        "# Bench results",
        "",
        f"Machine: {latest['machine']}. Date: {latest['date']}. Medians of {a['rounds']} rounds,",
        "the candidates alternating (the order rotates each round); each run checked at the",
        "sandbox that every order arrived. The broker, the sandbox and the candidates share one",
        "machine: only the ratios carry over.",
        "",
        f"Sizes: forward {a['forward']:,} purchases; filter {a['filter']:,} events"
        " (90 % views/opens);"
        f" naive loop capped at {a['naive_limit']:,} records; state {a['profiles']:,} profiles;"
        f" {a['partitions']} partitions; sandbox latency log-normal {a['latency_p50_ms']:g} ms"
        f" median / {a['latency_p99_ms']:g} ms p99; {a['in_flight']} in flight for the peers"
        " (the service at its defaults).",
        "",
        "| path | this service | yardstick | service / yardstick |",
        "|---|--:|--:|--:|",
    ]
    names = {
        "http_ceiling": f"bare aiohttp, {a['in_flight']} in flight (HTTP ceiling)",
        "quix_stateless": "quixstreams, stateless (BatchingSink + aiohttp)",
        "quix_stateful": "quixstreams, per-user state in RocksDB + changelog",
        "naive": "naive loop (poll, decode, one blocking POST)",
        "kafka_connect": f"Kafka Connect standalone, HTTP sink (okhttp), {a['in_flight']}"
        " in flight",
    }
    for kind, label in names.items():
        value = fwd["yardsticks"][kind]
        lines.append(
            f"| forward (orders/s) | {svc:,.0f} | {label}: {value:,.0f} | {ratio(svc, value)} |"
        )

    def to_sandbox(kind: str) -> float:
        """Median orders/s to the last order at the sandbox (the HTTP ceiling: its whole run)."""
        runs = raw["forward"].get(kind)
        if not runs:
            return 0.0
        return median(runs, lambda run: run["count"] / run.get("to_button_s", run["seconds"]))

    reached = to_sandbox("service")
    lines.append(
        f"| forward, to the last order at the sandbox (orders/s) | {reached:,.0f} | HTTP ceiling"
        f" {to_sandbox('http_ceiling'):,.0f}; quix stateless {to_sandbox('quix_stateless'):,.0f},"
        f" stateful {to_sandbox('quix_stateful'):,.0f}; Kafka Connect"
        f" {to_sandbox('kafka_connect'):,.0f} | {ratio(reached, to_sandbox('http_ceiling'))} |"
    )
    held = fwd.get("sustained", {})
    if held.get("service"):
        ceiling = held.get("http_ceiling", 0)
        lines.append(
            "| forward, sustained: the middle 80 % of the orders at the sandbox (orders/s) |"
            f" {held['service']:,.0f} | HTTP ceiling {ceiling:,.0f}; quix stateless"
            f" {held.get('quix_stateless', 0):,.0f}, stateful {held.get('quix_stateful', 0):,.0f};"
            f" Kafka Connect {held.get('kafka_connect', 0):,.0f}"
            f" | {ratio(held['service'], ceiling)} |"
        )
    dec = flt["yardsticks"]["decode_ceiling"]
    lines.append(
        f"| filter (events/s) | {flt['service']:,.0f} | consume + fastavro alone: {dec:,.0f}"
        f" | {ratio(flt['service'], dec)} |"
    )
    lines.append(
        f"| CPU per 1,000 orders | {cpu_per_1000('service')} | quix stateless"
        f" {cpu_per_1000('quix_stateless')}; quix stateful {cpu_per_1000('quix_stateful')};"
        f" Kafka Connect {cpu_per_1000('kafka_connect')};"
        f" bare client {cpu_per_1000('http_ceiling')} | |"
    )
    empty = raw["state_empty"]
    lat = raw.get("latency")
    if lat:
        lines.append(
            f"| event to Button at {lat['rate_per_s']:,.0f} orders/s (half the forward median)"
            f" | p50 {lat['p50_ms']:,.0f} ms, p99 {lat['p99_ms']:,.0f} ms | sandbox alone:"
            f" {a['latency_p50_ms']:g} ms / {a['latency_p99_ms']:g} ms | |"
        )
    lines += [
        f"| peak RSS, {st['profiles']:,} profiles restored | {st['peak_rss_mb']:,.0f} MB"
        f" (empty changelog: {empty['peak_rss_mb']:,.0f} MB) | | |",
        f"| restart to first delivery, {st['profiles']:,} profiles | "
        f"{st['restart_to_first_delivery_s']:.1f} s (empty changelog:"
        f" {empty['restart_to_first_delivery_s']:.1f} s) | | |",
        "",
        "The consumers are timed from spawn to every offset committed. They all commit once a",
        'second, so their figures move in steps; "to the last order at the sandbox" stops at the',
        "last order's arrival instead (the HTTP ceiling commits nothing: its figure is the same).",
        '"Sustained" leaves out the start-up and the tail of every candidate alike: the orders',
        "that reached the sandbox between the 10th and the 90th percentile of their arrivals,",
        "over that time (the rate a pod keeps while records wait).",
        "",
        "Every round:",
        "",
        "| path | candidate | rounds (per second) |",
        "|---|---|---|",
    ]
    for path in ("forward", "filter"):
        for kind, runs in raw[path].items():
            rates = ", ".join(f"{rate(run):,.0f}" for run in runs)
            lines.append(f"| {path} | {kind} | {rates} |")
    if raw["sweep"]["service"]:
        lines += [
            "",
            "Throughput against the in-flight limit (one round; the service with",
            "`DELIVERY_CONCURRENCY_MIN` = `DELIVERY_CONCURRENCY_MAX` = the limit):"
            " [chart](inflight.png)",
            "",
            "| in flight | service (orders/s) | bare aiohttp (orders/s) | ratio |",
            "|--:|--:|--:|--:|",
        ]
        for limit, value in raw["sweep"]["service"].items():
            http = raw["sweep"]["http_ceiling"][limit]
            lines.append(f"| {limit} | {value:,.0f} | {http:,.0f} | {ratio(value, http)} |")
    return "\n".join(lines) + "\n"


def chart(raw: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, label in (("service", "this service"), ("http_ceiling", "bare aiohttp")):
        points = sorted((int(k), v) for k, v in raw["sweep"][kind].items())
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    limits = sorted(int(k) for k in raw["sweep"]["service"])
    ax.set_xticks(limits, [str(limit) for limit in limits])
    ax.set_xlabel("requests in flight to Button (limit)")
    ax.set_ylabel("orders/s")
    ax.set_title("Throughput against the in-flight limit")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
