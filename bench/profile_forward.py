"""``python -m bench.profile_forward``: a py-spy profile of the service's forward path.

Starts the broker and the sandbox as ``make bench`` does, loads ``--forward`` purchases (or, with
``--filter N``, the filter path's N events, 90 % views/opens), runs
``button-consumer run`` and attaches ``py-spy record`` (from PyPI, in its own virtualenv under
``.cache/py-spy/``) to it until every offset is committed. Writes the collapsed stacks
(``--out``, one ``frame;frame;... count`` line per stack) and prints the samples by part of the
process (``PARTS``: HTTP, decode, mapping, asyncio...) and the functions with the most samples,
self and inclusive. Only threads that run are sampled (py-spy's default, no ``--idle``).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench import suite, workload
from consumer.devtools._proc import free_port

PY_SPY_VENV = suite.ROOT / ".cache" / "py-spy"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def py_spy() -> Path:
    binary = PY_SPY_VENV / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PY_SPY_VENV)], check=True)
        pip = PY_SPY_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "--quiet", "py-spy"], check=True)
    return binary


GAUGES = (
    "button_consumer_in_flight_records",
    "button_consumer_concurrency_limit",
    "button_consumer_partitions_paused",
)
SUMS = (
    "button_consumer_changelog_write_seconds",
    "button_consumer_button_request_duration_seconds",
)


class Sampler:
    """Every 0.5 s: the service's gauges (``/metrics``) and the sandbox's requests in flight."""

    def __init__(self, metrics_url: str, bench: suite.Bench) -> None:
        self._url = metrics_url
        self._bench = bench
        self.samples: list[dict[str, float]] = []
        self.last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _scrape(self) -> dict[str, float]:
        values: dict[str, float] = {}
        with _DIRECT.open(self._url, timeout=2.0) as response:
            for line in response.read().decode().splitlines():
                name, _, value = line.partition(" ")
                base = name.split("{")[0]
                if base in GAUGES or base.removesuffix("_sum") in SUMS or base.endswith("_count"):
                    values[base] = values.get(base, 0.0) + float(value)
                elif base.removesuffix("_bucket") in SUMS:
                    le = name.split('le="')[1].split('"')[0]
                    key = f"{base}:{le}"
                    values[key] = values.get(key, 0.0) + float(value)
        values["sandbox_in_flight"] = float(self._bench.sandbox.stats()["in_flight"])
        return values

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                sample = self._scrape()
            except OSError:
                continue  # not listening yet
            self.samples.append(sample)
            self.last = sample

    def _quantile(self, name: str, q: float, count: float) -> str:
        """The upper bound of the histogram bucket holding quantile ``q`` (cumulative buckets)."""
        prefix = f"{name}_bucket:"
        buckets = sorted(
            (float(key.removeprefix(prefix)), value)
            for key, value in self.last.items()
            if key.startswith(prefix)
        )
        for bound, cumulative in buckets:
            if cumulative >= q * count:
                return f"{bound:g}"
        return "inf"

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(5.0)
        if not self.samples:
            return "no metrics sampled"
        out = [f"{len(self.samples)} metric samples (every 0.5 s):"]
        for name in (*GAUGES, "sandbox_in_flight"):
            values = [s.get(name, 0.0) for s in self.samples]
            zero = sum(1 for v in values if v == 0) / len(values)
            out.append(
                f"  {name}: median {statistics.median(values):.0f}, max {max(values):.0f},"
                f" zero in {100 * zero:.0f}% of samples"
            )
        for name in SUMS:
            total, count = self.last.get(f"{name}_sum", 0.0), self.last.get(f"{name}_count", 0.0)
            if count:
                out.append(
                    f"  {name}: mean {1000 * total / count:.1f} ms over {count:.0f},"
                    f" p50 <= {self._quantile(name, 0.5, count)},"
                    f" p99 <= {self._quantile(name, 0.99, count)} s"
                )
        return "\n".join(out)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads, user and system apart, summed by kind: the event
    loop (the main thread), librdkafka's own threads (named ``rdk:...``) and the other Python
    threads (the Kafka calls' thread, the producer's delivery-report thread, executors)."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_kind: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        if task.name == str(pid):
            kind = "event loop"
        elif name.startswith("rdk:"):
            kind = "librdkafka"
        else:
            kind = "other Python threads"
        by_kind[f"{kind}, user"] += int(fields[11]) / ticks
        by_kind[f"{kind}, system"] += int(fields[12]) / ticks
    return dict(by_kind)


PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start-up imports", ("importlib", "_call_with_frames_removed")),
    ("HTTP: aiohttp, yarl, multidict", ("aiohttp/", "yarl/", "multidict/", "propcache/")),
    ("HTTP: the libcurl transport and its thread", ("adapters/curl_transport.py", "pycurl")),
    ("Avro decode: fastavro, avro_codec", ("fastavro", "adapters/avro_codec.py")),
    (
        "event model: event_forms, events, triage",
        ("domain/event_forms.py", "domain/events.py", "domain/triage.py"),
    ),
    (
        "Button client: button_client, transport, wire",
        ("adapters/button_client.py", "adapters/http_transport.py", "domain/button_wire.py"),
    ),
    ("mapping and profile: the rest of the domain", ("consumer/domain/",)),
    (
        "profile store, processor, parking",
        ("engine/profiles.py", "engine/processor.py", "engine/parking.py"),
    ),
    (
        "telemetry: metrics, health, live log",
        ("adapters/telemetry.py", "adapters/metrics.py", "prometheus_client/"),
    ),
    ("logging: structlog", ("structlog/", "adapters/logging.py")),
    (
        "Kafka: poll, produce, commit",
        (
            "adapters/kafka.py",
            "adapters/kafka_producer.py",
            "adapters/topics.py",
            "confluent_kafka/",
        ),
    ),
    ("pipeline", ("engine/pipeline.py",)),
    ("dispatcher, worker, limiter, watermarks", ("consumer/engine/",)),
    ("asyncio's machinery", ("asyncio/",)),
    ("json", ("json/",)),
)
"""Parts of the process by the file of a frame (the first rule that matches wins)."""


def part_of(frame: str) -> str | None:
    """The ``PARTS`` name of one collapsed-stack frame, ``None`` when no rule matches."""
    for name, patterns in PARTS:
        if any(pattern in frame for pattern in patterns):
            return name
    return None


def by_part(collapsed: Path) -> str:
    """Samples by part: each sample counts for the innermost frame that belongs to a part, so a
    C call made from aiohttp counts for HTTP and a callback run by asyncio for its own part."""
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        total += n
        named = (part_of(frame) for frame in reversed(stack.split(";")))
        parts[next((name for name in named if name is not None), "other")] += n
    if not total:
        return "no samples"
    out = ["by part (innermost frame):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in parts.most_common()]
    return "\n".join(out)


def top(collapsed: Path, count: int) -> str:
    """The functions with the most samples: self (leaf) and inclusive (anywhere on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue  # py-spy wrote a torn line (it reads a running process's memory)
        n = int(samples)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{total} samples", "", "self:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(count)]
    out += ["", "inclusive:"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(count)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_forward", description=__doc__)
    parser.add_argument("--forward", type=int, default=20_000)
    parser.add_argument(
        "--filter",
        type=int,
        default=0,
        help="profile the filter path instead: this many events, 90 %% views/opens",
    )
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("forward-profile.txt"))
    parser.add_argument("--latency-p50-ms", type=float, default=20.0)
    parser.add_argument("--latency-p99-ms", type=float, default=120.0)
    parser.add_argument("--run-timeout", type=float, default=900.0)
    parser.add_argument(
        "--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)"
    )
    args = parser.parse_args(argv)
    spy = py_spy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with suite.infrastructure(args) as (bootstrap, sandbox):
        work = args.out.parent
        bench = suite.Bench(args, bootstrap, sandbox, work, None)
        tag = uuid.uuid4().hex[:6]
        loaded = workload.load(
            bootstrap,
            f"bench-profile-{tag}",
            (
                workload.filter_events(f"p{tag}", args.filter, datetime.now(UTC))
                if args.filter
                else workload.forward_events(f"p{tag}", args.forward, datetime.now(UTC))
            ),
            args.partitions,
        )
        group = f"bench-profile-{tag}"
        port = free_port()
        env = suite.service_env(bench, loaded.topic, group, ADMIN_PORT=str(port))
        sampler = Sampler(f"http://127.0.0.1:{port}/metrics", bench)
        cmd = [str(Path(sys.executable).with_name("button-consumer")), "run"]
        committed = suite.Committed(bench, loaded, group)
        service = subprocess.Popen(cmd, env=env, cwd=suite.ROOT, stdout=subprocess.DEVNULL)
        spy_cmd = [str(spy), "record", "--pid", str(service.pid), "--rate", str(args.rate)]
        spy_cmd += ["--format", "raw", "--output", str(args.out), "--nonblocking"]
        spy_cmd += ["--gil"] if args.gil else []
        recorder = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL)
        started = time.monotonic()
        try:
            suite._wait(
                lambda: (
                    suite._orders_at_sandbox(bench) >= len(loaded.order_ids)
                    and committed.all_committed()
                ),
                args.run_timeout,
                "profiled service",
                service,
            )
            seconds = time.monotonic() - started
            cpu = suite._proc_cpu_s(service.pid)
            threads = thread_cpu(service.pid)
            metrics = sampler.stop()
        finally:
            suite._stop(service)
            committed.close()
            recorder.wait(30.0)
    count, unit = (loaded.records, "events") if args.filter else (args.forward, "orders")
    print(
        f"{count} {unit} in {seconds:.1f}s ({count / seconds:,.0f}/s),"
        f" CPU {cpu:.1f}s ({1000 * cpu / count:.3f}s per 1,000), profile: {args.out}"
    )
    print(f"CPU by thread (s per 1,000 {unit}):")
    for name, seconds in sorted(threads.items(), key=lambda item: -item[1]):
        print(f"  {name}: {1000 * seconds / count:.3f}")
    print(metrics)
    print(by_part(args.out))
    print(top(args.out, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
