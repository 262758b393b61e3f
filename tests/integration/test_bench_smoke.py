"""The bench harness (``python -m bench``, bench/README.md) runs end to end at tiny sizes.

A smoke run so the harness cannot rot: the real broker of the session, the sandbox in its own
process, every candidate but the quixstreams and Kafka Connect peers (their own virtualenv and
JVM cost more to install than this test's budget; bench/README.md). No timing is asserted: only
that the run finished, that each run counted every record it was given, and the results' shape.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import suite, workload
from bench.workload import Loaded
from consumer.sandbox.testing import run_sandbox

ROOT = Path(__file__).resolve().parents[2]
FORWARD, FILTER, PROFILES, NAIVE = 300, 1000, 2000, 50


@pytest.mark.broker
def test_a_tiny_bench_run_measures_every_path_and_writes_the_results(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "bench",
        f"--forward={FORWARD}",
        f"--filter={FILTER}",
        f"--profiles={PROFILES}",
        f"--naive-limit={NAIVE}",
        "--rounds=1",
        "--sweep=16,64",
        "--latency-seconds=2",
        "--run-timeout=120",
        "--skip-quix",
        "--skip-connect",
        f"--out={out}",
    ]
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=280, check=False)
    assert done.returncode == 0, (done.stdout.decode()[-3000:], done.stderr.decode()[-3000:])

    latest = json.loads((out / "latest.json").read_text())
    assert set(latest) == {"machine", "date", "paths"}
    forward, filtered, state = (latest["paths"][k] for k in ("forward", "filter", "state"))
    assert set(latest["paths"]) == {"forward", "filter", "state"}
    assert forward["unit"] == "orders/s"
    assert set(forward["yardsticks"]) == {
        "http_ceiling",
        "quix_stateless",
        "quix_stateful",
        "naive",
        "kafka_connect",
    }
    measured = ("http_ceiling", "naive")
    assert all(forward["yardsticks"][k] > 0 for k in measured), forward
    assert all(forward["yardsticks"][k] == 0 for k in forward["yardsticks"] if k not in measured)
    assert forward["service"] > 0
    assert forward["cpu_s_per_1000"] > 0
    assert filtered["unit"] == "events/s"
    assert filtered["service"] > 0
    assert set(filtered["yardsticks"]) == {"decode_ceiling"}
    assert filtered["yardsticks"]["decode_ceiling"] > 0
    assert state["profiles"] == PROFILES
    assert state["peak_rss_mb"] > 0
    assert state["restart_to_first_delivery_s"] > 0

    # Each run counted what it was given (the bench checked each at the sandbox; see below).
    rounds = json.loads((out / "latest-rounds.json").read_text())
    assert [run["count"] for run in rounds["forward"]["service"]] == [FORWARD]
    assert [run["count"] for run in rounds["forward"]["http_ceiling"]] == [FORWARD]
    assert [run["count"] for run in rounds["forward"]["naive"]] == [NAIVE]
    assert [run["count"] for run in rounds["filter"]["service"]] == [FILTER]
    assert [run["count"] for run in rounds["filter"]["decode_ceiling"]] == [FILTER]
    assert set(rounds["sweep"]["service"]) == {"16", "64"}
    assert rounds["latency"]["p50_ms"] > 0
    assert (out / "latest.md").read_text().startswith("# Bench results")
    assert (out / "inflight.png").stat().st_size > 0


def test_the_bench_fails_when_an_order_is_missing_at_the_sandbox(tmp_path: Path) -> None:
    """A peer that finishes without one order at the sandbox fails the bench, naming it."""
    now = datetime.now(UTC)
    events = list(workload.forward_events("missing", 3, now))
    bodies = tmp_path / "bodies.jsonl"
    # The peer is given every body but the last: it posts two orders and reports success.
    bodies.write_text("".join(json.dumps(workload.button_body(e, now)) + "\n" for e in events[:2]))
    order_ids = tuple(e.commerce.transaction_id or "" for e in events if e.commerce is not None)
    loaded = Loaded(topic="unused", partitions=1, records=3, order_ids=order_ids)
    args = argparse.Namespace(run_timeout=120.0)
    with run_sandbox(api_keys=(suite.API_KEY,)) as sandbox:
        bench = suite.Bench(args, "unused", sandbox, tmp_path, None)
        with pytest.raises(RuntimeError, match=r"1 orders missing at the sandbox.*ORD-missing-2"):
            suite.run_http(bench, bodies, loaded, in_flight=2)
        assert {order["order_id"] for order in sandbox.orders()} == set(order_ids[:2])
