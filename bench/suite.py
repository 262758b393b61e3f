"""``make bench``: the service against its ceilings and peers, side by side, in one run.

Starts a local broker and the Button sandbox (its own process, log-normal latency), loads the
topics once, then runs alternating rounds (the order rotates each round) of:

- ``service``: ``button-consumer run`` as a process, from spawn to every offset committed;
- ``http_ceiling``: bare aiohttp posting the service's bodies, same in-flight (``bench.peers``);
- ``quix_stateless`` / ``quix_stateful``: quixstreams jobs (``bench/quix_peer.py``, own venv);
- ``naive``: poll, decode, one blocking POST per record (a capped number of records);
- ``kafka_connect``: Kafka Connect standalone with an HTTP sink connector (``bench.connect_peer``);
- the filter path (90 % views/opens): ``service`` against ``decode_ceiling`` (consume + fastavro);

then the in-flight sweep (chart) and the state test (restart to first delivery, peak RSS, with
``--profiles`` profiles in the changelog). Every service and peer run is checked at the sandbox:
every order arrived, else the bench fails. Results: ``bench/results/`` (see bench/README.md),
written by ``bench.report``.

About 630 lines: every candidate's run is here, each short and next to the others, because they
must be timed and checked the same way (spawn, committed offsets, the sandbox's orders).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench import connect_peer, workload
from bench.report import chart, markdown, rate, summarise, sustained_rate
from bench.report import median as _median
from bench.workload import Loaded
from consumer.devtools._proc import repo_root
from consumer.sandbox.testing import SandboxHandle, run_sandbox

ROOT = repo_root()
RESULTS = ROOT / "bench" / "results"
QUIX_VENV = ROOT / ".cache" / "bench-quix"
QUIX_REQUIREMENTS = ("quixstreams==3.28.1", "aiohttp", "fastavro")
API_KEY = "sk-bench"
FORWARD_KINDS = (
    "service",
    "http_ceiling",
    "quix_stateless",
    "quix_stateful",
    "naive",
    "kafka_connect",
)


@dataclass
class Bench:
    args: argparse.Namespace
    bootstrap: str
    sandbox: SandboxHandle
    work: Path
    quix_python: Path | None
    connect: connect_peer.Prepared | None = None
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.append(text)


# --- measuring one run ----------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _proc_peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's peak resident set (``VmHWM``) or, with ``field="VmRSS"``, its current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait(condition: Callable[[], bool], timeout: float, what: str, proc: Any = None) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail at ``timeout`` or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode}) first")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout:.0f}s")
        time.sleep(0.05)


class Committed:
    """The committed offsets of ``group`` on a topic, against its high watermarks."""

    def __init__(self, bench: Bench, loaded: Loaded, group: str) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bench.bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._tps = [TopicPartition(loaded.topic, p) for p in range(loaded.partitions)]
        self._high = {
            tp.partition: self._consumer.get_watermark_offsets(tp, timeout=10.0)[1]
            for tp in self._tps
        }
        self._last = 0.0

    def all_committed(self) -> bool:
        now = time.monotonic()
        if now - self._last < 0.2:
            return False
        self._last = now
        committed = self._consumer.committed(self._tps, timeout=5.0)
        return all(tp.offset >= self._high[tp.partition] for tp in committed)

    def close(self) -> None:
        self._consumer.close()


def _check_orders(bench: Bench, expected: tuple[str, ...], what: str) -> float:
    """Fail unless every expected order is at the sandbox; return the run's sustained rate
    (``report.sustained_rate`` of the orders' first answered creates)."""
    orders = bench.sandbox.orders()
    seen = {order["order_id"] for order in orders}
    missing = [order_id for order_id in expected if order_id not in seen]
    if missing:
        raise RuntimeError(f"{what}: {len(missing)} orders missing at the sandbox: {missing[:3]}")
    arrivals = []
    for order in orders:
        answered = [h for h in order["history"] if h["method"] == "POST" and h["status"] == 200]
        if answered:
            arrivals.append(_iso_seconds(answered[0]["time"]))
    return sustained_rate(arrivals)


def _orders_at_sandbox(bench: Bench) -> int:
    # Polled every 50 ms while a candidate runs: a constant-time read, so that the observer
    # does not slow the sandbox (the stats read every order, 2 ms at 20,000 of them).
    return bench.sandbox.order_count()


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)


def _consumer_process(
    bench: Bench, cmd: list[str], env: dict[str, str], loaded: Loaded, group: str, what: str
) -> dict[str, Any]:
    """Spawn a consumer process; time it from spawn to every offset committed and every order
    at the sandbox; then stop it (SIGTERM).

    ``seconds`` ends when both hold. ``to_button_s`` ends when the last order reached the
    sandbox: the service commits once a second (``auto.commit.interval.ms``), so ``seconds`` of
    a run of a few seconds moves in steps of about a second, and ``to_button_s`` separates
    candidates whose runs end on the same commit."""
    bench.sandbox.reset()
    log_path = bench.work / f"{what}-{group}.log"
    committed = Committed(bench, loaded, group)
    with log_path.open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            where = f"{what} (log: {log_path})"
            deadline = started + bench.args.run_timeout
            orders = len(loaded.order_ids)
            _wait(lambda: _orders_at_sandbox(bench) >= orders, bench.args.run_timeout, where, proc)
            to_button = time.monotonic() - started
            _wait(committed.all_committed, max(deadline - time.monotonic(), 0.0), where, proc)
            seconds = time.monotonic() - started
            cpu = _proc_cpu_s(proc.pid)
            rss = _proc_peak_rss_mb(proc.pid)
        finally:
            _stop(proc)
            committed.close()
    sustained = _check_orders(bench, loaded.order_ids, what)
    return {
        "count": loaded.records,
        "seconds": seconds,
        "to_button_s": to_button,
        "cpu_s": cpu,
        "peak_rss_mb": rss,
        "sustained_per_s": sustained,
    }


def service_env(bench: Bench, topic: str, group: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DELIVERY_"))}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bench.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": group,
            "KAFKA_DLQ_TOPIC": f"{group}.dlq",
            "KAFKA_PROFILE_TOPIC": f"{group}.profiles",
            "BUTTON_API_KEY": API_KEY,
            "BUTTON_BASE_URL": bench.sandbox.base_url,
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": "0",
            "LOG_LEVEL": "warning",
        }
    )
    env.update(extra)
    return env


def run_service(bench: Bench, loaded: Loaded, **extra: str) -> dict[str, Any]:
    group = f"bench-service-{uuid.uuid4().hex[:8]}"
    cmd = [str(Path(sys.executable).with_name("button-consumer")), "run"]
    env = service_env(bench, loaded.topic, group, **extra)
    return _consumer_process(bench, cmd, env, loaded, group, "service")


def run_quix(bench: Bench, loaded: Loaded, *, stateful: bool) -> dict[str, Any]:
    assert bench.quix_python is not None
    group = f"bench-quix-{uuid.uuid4().hex[:8]}"
    cmd = [
        str(bench.quix_python),
        str(ROOT / "bench" / "quix_peer.py"),
        "--bootstrap",
        bench.bootstrap,
        "--topic",
        loaded.topic,
        "--group",
        group,
        "--base-url",
        bench.sandbox.base_url,
        "--api-key",
        API_KEY,
        "--in-flight",
        str(bench.args.in_flight),
    ]
    if stateful:
        cmd.append("--stateful")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kind = "quix_stateful" if stateful else "quix_stateless"
    return _consumer_process(bench, cmd, env, loaded, group, kind)


def run_connect(bench: Bench, loaded: Loaded) -> dict[str, Any]:
    """Kafka Connect standalone, the HTTP sink (``bench.connect_peer``), one task a partition."""
    assert bench.connect is not None
    name = f"bench-connect-{uuid.uuid4().hex[:8]}"
    cmd = connect_peer.command(
        bench.connect,
        bench.work,
        bootstrap=bench.bootstrap,
        topic=loaded.topic,
        name=name,
        base_url=bench.sandbox.base_url,
        api_key=API_KEY,
        tasks=loaded.partitions,
        in_flight=bench.args.in_flight,
    )
    return _consumer_process(
        bench, cmd, dict(os.environ), loaded, f"connect-{name}", "kafka_connect"
    )


def run_peer(bench: Bench, kind: str, *args: str) -> dict[str, Any]:
    """A ``bench.peers`` yardstick; its JSON line is the result."""
    bench.sandbox.reset()
    cmd = [sys.executable, "-m", "bench.peers", kind, *args]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, timeout=bench.args.run_timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def run_http(bench: Bench, bodies: Path, loaded: Loaded, in_flight: int) -> dict[str, Any]:
    result = run_peer(
        bench,
        "http",
        f"--base-url={bench.sandbox.base_url}",
        f"--api-key={API_KEY}",
        f"--bodies={bodies}",
        f"--in-flight={in_flight}",
    )
    result["sustained_per_s"] = _check_orders(bench, loaded.order_ids, "http_ceiling")
    return result


def run_naive(bench: Bench, loaded: Loaded) -> dict[str, Any]:
    limit = min(bench.args.naive_limit, loaded.records)
    result = run_peer(
        bench,
        "naive",
        f"--bootstrap={bench.bootstrap}",
        f"--topic={loaded.topic}",
        f"--base-url={bench.sandbox.base_url}",
        f"--api-key={API_KEY}",
        f"--limit={limit}",
    )
    if result["count"] != limit or _orders_at_sandbox(bench) != limit:
        raise RuntimeError(f"naive: {result['count']} of {limit} records, orders missing")
    return result


def run_decode(bench: Bench, loaded: Loaded) -> dict[str, Any]:
    result = run_peer(
        bench,
        "decode",
        f"--bootstrap={bench.bootstrap}",
        f"--topic={loaded.topic}",
        f"--count={loaded.records}",
    )
    if result["count"] != loaded.records:
        raise RuntimeError(f"decode: {result['count']} of {loaded.records} records")
    return result


# --- event-to-Button latency -----------------------------------------------------------------


def _iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_latency(
    bench: Bench, rate_per_s: float, seconds: float, **env_extra: str
) -> dict[str, Any]:
    """Event-to-Button latency at a steady ``rate_per_s``: purchases produced, paced, to a
    running service; each one's latency is the sandbox's time of its answered create minus the
    wall-clock time it was produced (same machine, same clock). ``env_extra``: more environment
    for the service (``PYTHONPATH`` of a checkout, settings)."""
    tag = f"lat{uuid.uuid4().hex[:6]}"
    group = f"bench-{tag}"
    topic = f"bench-{tag}-in"
    partitions = bench.args.partitions
    warm = workload.load(
        bench.bootstrap, topic, workload.forward_events(f"w{tag}", 1, datetime.now(UTC)), partitions
    )
    bench.sandbox.reset()
    env = service_env(bench, topic, group, **env_extra)
    cmd = [str(Path(sys.executable).with_name("button-consumer")), "run"]
    total = max(int(rate_per_s * seconds), 1)
    produced_at: dict[str, float] = {}
    log_path = bench.work / f"{group}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            # The warm-up order proves the service is assigned and delivering.
            _wait(lambda: _orders_at_sandbox(bench) >= 1, 120.0, "latency warm-up", proc)
            producer = workload.producer(bench.bootstrap)
            encoder = workload.encoder(topic)
            started = time.monotonic()
            try:
                for i in range(total):
                    due = started + i / rate_per_s
                    ahead = due - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the load, not waiting for a result
                    event = workload.purchase(tag, i, datetime.now(UTC))
                    key = event.user_key.encode()
                    producer.send_nowait(topic, key, encoder.encode_event(event))
                    produced_at[f"ORD-{tag}-{i}"] = time.time()
                if producer.settle(60.0):
                    raise RuntimeError("latency: not every purchase was acknowledged")
            finally:
                producer.close()
            _wait(
                lambda: _orders_at_sandbox(bench) >= total + len(warm.order_ids),
                bench.args.run_timeout,
                f"latency (log: {log_path})",
                proc,
            )
        finally:
            _stop(proc)
    latencies = []
    for order in bench.sandbox.orders():
        at = produced_at.get(order["order_id"])
        if at is None:
            continue
        answered = [h for h in order["history"] if h["method"] == "POST" and h["status"] == 200]
        latencies.append(_iso_seconds(answered[0]["time"]) - at)
    if len(latencies) != total:
        raise RuntimeError(f"latency: {len(latencies)} of {total} orders at the sandbox")
    latencies.sort()
    return {
        "rate_per_s": rate_per_s,
        "orders": total,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


# --- the state test -------------------------------------------------------------------------


def run_state(bench: Bench, profiles: int) -> dict[str, Any]:
    """Restart to first delivery with ``profiles`` in the changelog, and the peak RSS."""
    tag = f"state{uuid.uuid4().hex[:6]}"
    group = f"bench-{tag}"
    partitions = bench.args.partitions
    started = time.monotonic()
    kind = bench.args.state_profile
    workload.load_profiles(bench.bootstrap, f"{group}.profiles", partitions, profiles, kind)
    bench.say(f"  state: {profiles:,} profiles written in {time.monotonic() - started:.1f}s")
    loaded = workload.load(
        bench.bootstrap,
        f"bench-{tag}-in",
        workload.forward_events(tag, 1, datetime.now(UTC)),
        partitions,
    )
    bench.sandbox.reset()
    env = service_env(bench, loaded.topic, group)
    cmd = [str(Path(sys.executable).with_name("button-consumer")), "run"]
    log_path = bench.work / f"{group}.log"
    with log_path.open("wb") as log:
        spawned = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            _wait(
                lambda: _orders_at_sandbox(bench) >= 1,
                bench.args.run_timeout,
                f"state (log: {log_path})",
                proc,
            )
            seconds = time.monotonic() - spawned
            rss = _proc_peak_rss_mb(proc.pid)
            now_rss = _proc_peak_rss_mb(proc.pid, "VmRSS")
        finally:
            _stop(proc)
    _check_orders(bench, loaded.order_ids, "state")
    return {
        "profiles": profiles,
        "profile_kind": kind,
        "restart_to_first_delivery_s": seconds,
        "peak_rss_mb": rss,
        "rss_at_first_delivery_mb": now_rss,
    }


# --- the whole bench ------------------------------------------------------------------------


def quix_python(bench_args: argparse.Namespace) -> Path | None:
    """The quixstreams virtualenv's python, created on first use (pip from PyPI)."""
    if bench_args.skip_quix:
        return None
    python = QUIX_VENV / "bin" / "python"
    stamp = QUIX_VENV / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *QUIX_REQUIREMENTS], check=True
        )
        stamp.touch()
    return python


def _rounds(bench: Bench, kinds: list[str], one: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for r in range(bench.args.rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
        for kind in order:
            result = one(kind)
            runs[kind].append(result)
            bench.say(
                f"  round {r + 1} {kind}: {result['count']} in {result['seconds']:.1f}s"
                f" = {rate(result):,.0f}/s, cpu {result.get('cpu_s', 0):.1f}s"
            )
    return runs


@contextmanager
def infrastructure(args: argparse.Namespace) -> Iterator[tuple[str, SandboxHandle]]:
    latency = {"latency": {"p50_ms": args.latency_p50_ms, "p99_ms": args.latency_p99_ms}}
    with run_sandbox(api_keys=(API_KEY,), faults=latency, mode="process", seed=1) as sandbox:
        configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if configured:
            yield configured, sandbox
            return
        from consumer.devtools.localkafka import LocalKafka

        with LocalKafka() as kafka:
            yield kafka.bootstrap_servers, sandbox


def _args_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (v.name if isinstance(v, Path) else v) for k, v in vars(args).items()}


def _state_pair(bench: Bench) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state test with ``--profiles`` profiles, then with an empty changelog."""
    bench.say(f"state: {bench.args.profiles:,} profiles")
    state = run_state(bench, bench.args.profiles)
    empty = run_state(bench, 0)
    bench.say(
        f"  restart to first delivery {state['restart_to_first_delivery_s']:.1f}s"
        f" (empty changelog {empty['restart_to_first_delivery_s']:.1f}s),"
        f" peak RSS {state['peak_rss_mb']:.0f} MB (empty {empty['peak_rss_mb']:.0f} MB),"
        f" RSS at first delivery {state['rss_at_first_delivery_mb']:.0f} MB"
    )
    return state, empty


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = ROOT / ".cache" / "bench" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    state_only = args.only == "state"
    python = None if state_only else quix_python(args)
    connect = None if state_only or args.skip_connect else connect_peer.prepare()
    with infrastructure(args) as (bootstrap, sandbox):
        bench = Bench(args, bootstrap, sandbox, work, python, connect)
        if state_only:
            state, empty = _state_pair(bench)
            if args.keep_work is False:
                shutil.rmtree(work, ignore_errors=True)
            return {"args": _args_json(args), "state": state, "state_empty": empty}
        tag = uuid.uuid4().hex[:6]
        now = datetime.now(UTC)
        bench.say(f"loading {args.forward:,} purchases and {args.filter:,} filter events ...")
        bodies = work / "forward-bodies.jsonl"
        forward = workload.load(
            bootstrap,
            f"bench-forward-{tag}",
            workload.forward_events(f"f{tag}", args.forward, now),
            args.partitions,
            bodies,
        )
        filtered = workload.load(
            bootstrap,
            f"bench-filter-{tag}",
            workload.filter_events(f"v{tag}", args.filter, now),
            args.partitions,
        )
        in_flight = str(args.in_flight)
        forward_runs: dict[str, Callable[[], dict[str, Any]]] = {
            "service": lambda: run_service(bench, forward),
            "http_ceiling": lambda: run_http(bench, bodies, forward, args.in_flight),
            "quix_stateless": lambda: run_quix(bench, forward, stateful=False),
            "quix_stateful": lambda: run_quix(bench, forward, stateful=True),
            "naive": lambda: run_naive(bench, forward),
            "kafka_connect": lambda: run_connect(bench, forward),
        }
        skipped = {"quix_stateless", "quix_stateful"} if python is None else set()
        skipped |= {"kafka_connect"} if args.skip_connect else set()
        kinds = [k for k in FORWARD_KINDS if k not in skipped]
        bench.say(f"forward path: {args.forward:,} purchases, {args.rounds} rounds")
        fwd = _rounds(bench, kinds, lambda kind: forward_runs[kind]())
        bench.say(f"filter path: {args.filter:,} events (90 % views/opens)")
        filter_runs: dict[str, Callable[[], dict[str, Any]]] = {
            "service": lambda: run_service(bench, filtered),
            "decode_ceiling": lambda: run_decode(bench, filtered),
        }
        flt = _rounds(bench, ["service", "decode_ceiling"], lambda kind: filter_runs[kind]())
        lat_rate = args.latency_rate or 0.5 * _median(fwd["service"], rate)
        bench.say(f"latency: {lat_rate:,.0f} purchases/s for {args.latency_seconds:g}s")
        latency = run_latency(bench, lat_rate, args.latency_seconds)
        bench.say(
            f"  event to Button p50 {latency['p50_ms']:.0f} ms, p99 {latency['p99_ms']:.0f} ms"
        )
        sweep: dict[str, dict[int, float]] = {"service": {}, "http_ceiling": {}}
        if args.sweep:
            size = max(args.forward // 3, 300)
            bench.say(f"in-flight sweep: {size:,} purchases at {args.sweep}")
            sweep_bodies = work / "sweep-bodies.jsonl"
            small = workload.load(
                bootstrap,
                f"bench-sweep-{tag}",
                workload.forward_events(f"s{tag}", size, now),
                args.partitions,
                sweep_bodies,
            )
            for limit in args.sweep:
                svc = run_service(
                    bench,
                    small,
                    DELIVERY_CONCURRENCY_MIN=str(limit),
                    DELIVERY_CONCURRENCY_MAX=str(limit),
                )
                http = run_http(bench, sweep_bodies, small, limit)
                sweep["service"][limit] = rate(svc)
                sweep["http_ceiling"][limit] = rate(http)
                bench.say(
                    f"  {limit} in flight: service {rate(svc):,.0f}/s, http {rate(http):,.0f}/s"
                )
        state, empty = _state_pair(bench)
    if args.keep_work is False:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "args": _args_json(args),
        "forward": fwd,
        "filter": flt,
        "sweep": sweep,
        "state": state,
        "state_empty": empty,
        "latency": latency,
        "in_flight": in_flight,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--forward", type=int, default=30_000, help="purchases (forward path)")
    parser.add_argument("--filter", type=int, default=100_000, help="events (filter path)")
    parser.add_argument("--profiles", type=int, default=1_000_000, help="profiles (state test)")
    parser.add_argument(
        "--state-profile",
        choices=workload.STATE_PROFILES,
        default="minimal",
        help="the state test's profiles: minimal (a customer id) or attributed (btn_ref, IDFA, "
        "email, customer id, UUID user keys)",
    )
    parser.add_argument("--naive-limit", type=int, default=500, help="records the naive loop sends")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=64, help="the peers' requests in flight")
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[8, 16, 32, 64, 128],
        help="in-flight limits of the chart (empty: no sweep)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0.0,
        help="purchases/s of the latency run (default: half the service's forward median)",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-p50-ms", type=float, default=20.0)
    parser.add_argument("--latency-p99-ms", type=float, default=120.0)
    parser.add_argument("--run-timeout", type=float, default=900.0, help="bound of one run")
    parser.add_argument("--skip-quix", action="store_true", help="no quixstreams peers")
    parser.add_argument("--skip-connect", action="store_true", help="no Kafka Connect peer")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--keep-work", action="store_true", help="keep logs in .cache/bench/")
    parser.add_argument(
        "--only",
        choices=("all", "state"),
        default="all",
        help="state: only the state test, its result in OUT/state.json (latest.* untouched)",
    )
    args = parser.parse_args(argv)
    raw = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only == "state":
        (args.out / "state.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
        return 0
    latest = summarise(raw)
    (args.out / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    (args.out / "latest-rounds.json").write_text(json.dumps(raw, indent=2, default=str) + "\n")
    (args.out / "latest.md").write_text(markdown(raw, latest))
    if raw["sweep"]["service"]:
        chart(raw, args.out / "inflight.png")
    print((args.out / "latest.md").read_text())
    return 0
