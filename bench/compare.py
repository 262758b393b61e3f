"""``python -m bench.compare CHECKOUT[:VAR=VALUE,...][@PYTHON] ...``: the service, side by side.

How one change moves the service, measured as ``make bench`` measures the service: one local
broker and one Button sandbox (log-normal latency), the topics loaded once, then alternating
rounds (the order rotates each round) of ``button-consumer run`` from each candidate, timed from
spawn to every offset committed and every order at the sandbox, CPU from ``/proc/<pid>/stat``.

A candidate is a directory holding a checkout of this repository (``git worktree add DIR REV``),
run with ``PYTHONPATH=DIR`` in this virtualenv (the dependencies must match), optionally with
settings after a colon: ``.:DELIVERY_CONCURRENCY_MAX=128`` is the working tree with that setting.
After an ``@``, another interpreter runs it (``python -m consumer run``), with the same locked
dependencies installed in its own virtualenv: ``.@/tmp/py313/bin/python`` is the working tree on
that Python.
Prints each run and the medians: orders (or events) per second to every offset committed and to
the last order at the sandbox (finer: the first moves in steps of the service's one-second
commit interval), the orders per second sustained in full flow (``report.sustained_rate``: the
middle 80 % of the orders at the sandbox), and CPU seconds per 1,000. With ``--latency-rate R``,
each round also runs each candidate at a steady R purchases/s for ``--latency-seconds`` and
prints its event-to-Button latency (p50 and p99, milliseconds), as ``make bench`` measures it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import suite, workload


def _candidate(text: str) -> tuple[str, dict[str, str], str | None]:
    """``DIR[:VAR=VALUE,...][@PYTHON]`` -> (the checkout's absolute path, the settings, the
    interpreter; ``None``: this virtualenv's ``button-consumer``)."""
    text, _, python = text.partition("@")
    path, _, extra = text.partition(":")
    settings = dict(item.split("=", 1) for item in extra.split(",") if item)
    return str(Path(path).resolve()), settings, python or None


def _run(bench: suite.Bench, loaded: workload.Loaded, candidate: str) -> dict[str, Any]:
    path, settings, python = _candidate(candidate)
    group = f"bench-compare-{uuid.uuid4().hex[:8]}"
    env = suite.service_env(bench, loaded.topic, group, PYTHONPATH=path, **settings)
    if python is None:
        cmd = [str(Path(sys.executable).with_name("button-consumer")), "run"]
    else:
        cmd = [python, "-m", "consumer", "run"]
    return suite._consumer_process(bench, cmd, env, loaded, group, "compare")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("candidates", nargs="+", help="DIR[:VAR=VALUE,...][@PYTHON]")
    parser.add_argument("--forward", type=int, default=20_000, help="purchases (0: none)")
    parser.add_argument("--filter", type=int, default=0, help="filter events (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--latency-p50-ms", type=float, default=20.0)
    parser.add_argument("--latency-p99-ms", type=float, default=120.0)
    parser.add_argument("--run-timeout", type=float, default=900.0, help="bound of one run")
    parser.add_argument(
        "--latency-rate", type=float, default=0.0, help="purchases/s of a latency run (0: none)"
    )
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    work = suite.ROOT / ".cache" / "bench-compare"
    work.mkdir(parents=True, exist_ok=True)
    with suite.infrastructure(args) as (bootstrap, sandbox):
        bench = suite.Bench(args, bootstrap, sandbox, work, None)
        tag, now = uuid.uuid4().hex[:6], datetime.now(UTC)
        loads: dict[str, workload.Loaded] = {}
        if args.forward:
            events = workload.forward_events(f"c{tag}", args.forward, now)
            loads["forward"] = workload.load(
                bootstrap, f"bench-compare-f-{tag}", events, args.partitions
            )
        if args.filter:
            events = workload.filter_events(f"d{tag}", args.filter, now)
            loads["filter"] = workload.load(
                bootstrap, f"bench-compare-v-{tag}", events, args.partitions
            )
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {
            (path, c): [] for path in loads for c in args.candidates
        }
        latencies: dict[str, list[dict[str, Any]]] = {c: [] for c in args.candidates}
        for r in range(args.rounds):
            shift = r % len(args.candidates)
            order = args.candidates[shift:] + args.candidates[:shift]
            for path, loaded in loads.items():
                for candidate in order:
                    result = _run(bench, loaded, candidate)
                    runs[(path, candidate)].append(result)
                    bench.say(f"round {r + 1} {path} {candidate}: {_summary([result])}")
            for candidate in order if args.latency_rate else ():
                latency = _latency(bench, candidate, args.latency_rate, args.latency_seconds)
                latencies[candidate].append(latency)
                bench.say(f"round {r + 1} latency {candidate}: {_latency_summary([latency])}")
        for (path, candidate), results in runs.items():
            bench.say(f"median {path} {candidate}: {_summary(results)}")
        for candidate, results in latencies.items():
            if results:
                bench.say(f"median latency {candidate}: {_latency_summary(results)}")
    return 0


def _latency(bench: suite.Bench, candidate: str, rate: float, seconds: float) -> dict[str, Any]:
    path, settings, python = _candidate(candidate)
    if python is not None:
        raise SystemExit("--latency-rate runs this virtualenv's service only (no @PYTHON)")
    return suite.run_latency(bench, rate, seconds, PYTHONPATH=path, **settings)


def _latency_summary(results: list[dict[str, Any]]) -> str:
    p50 = statistics.median(r["p50_ms"] for r in results)
    p99 = statistics.median(r["p99_ms"] for r in results)
    return f"event to Button p50 {p50:.0f} ms, p99 {p99:.0f} ms at {results[0]['rate_per_s']:g}/s"


def _summary(results: list[dict[str, Any]]) -> str:
    """Records per second to every offset committed; the same to the last order at the sandbox
    (finer: the first moves in steps of the service's one-second commit); CPU per 1,000."""
    rate = statistics.median(r["count"] / r["seconds"] for r in results)
    to_button = statistics.median(r["count"] / r["to_button_s"] for r in results)
    cpu = statistics.median(1000 * r["cpu_s"] / r["count"] for r in results)
    held = statistics.median(r.get("sustained_per_s", 0.0) for r in results)
    return (
        f"{rate:,.0f}/s ({to_button:,.0f}/s to Button, {held:,.0f} orders/s sustained),"
        f" {cpu:.3f} s CPU per 1,000"
    )


if __name__ == "__main__":
    raise SystemExit(main())
