"""``python -m bench.profile_forward``: a py-spy profile of the service's forward path.

Starts the broker and the sandbox as ``make bench`` does, loads ``--forward`` purchases, runs
``button-consumer run`` and attaches ``py-spy record`` (from PyPI, in its own virtualenv under
``.cache/py-spy/``) to it until every offset is committed. Writes the collapsed stacks
(``--out``, one ``frame;frame;... count`` line per stack) and prints the functions with the most
samples, self and inclusive. Only threads that run are sampled (py-spy's default, no ``--idle``).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench import suite, workload

PY_SPY_VENV = suite.ROOT / ".cache" / "py-spy"


def py_spy() -> Path:
    binary = PY_SPY_VENV / "bin" / "py-spy"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PY_SPY_VENV)], check=True)
        pip = PY_SPY_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "--quiet", "py-spy"], check=True)
    return binary


def top(collapsed: Path, count: int) -> str:
    """The functions with the most samples: self (leaf) and inclusive (anywhere on the stack)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
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
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("forward-profile.txt"))
    parser.add_argument("--latency-p50-ms", type=float, default=20.0)
    parser.add_argument("--latency-p99-ms", type=float, default=120.0)
    parser.add_argument("--run-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    spy = py_spy()
    with suite.infrastructure(args) as (bootstrap, sandbox):
        work = args.out.parent
        bench = suite.Bench(args, bootstrap, sandbox, work, None)
        tag = uuid.uuid4().hex[:6]
        loaded = workload.load(
            bootstrap,
            f"bench-profile-{tag}",
            workload.forward_events(f"p{tag}", args.forward, datetime.now(UTC)),
            args.partitions,
        )
        group = f"bench-profile-{tag}"
        env = suite.service_env(bench, loaded.topic, group)
        cmd = [str(Path(sys.executable).with_name("button-consumer")), "run"]
        committed = suite.Committed(bench, loaded, group)
        service = subprocess.Popen(cmd, env=env, cwd=suite.ROOT, stdout=subprocess.DEVNULL)
        spy_cmd = [str(spy), "record", "--pid", str(service.pid), "--rate", str(args.rate)]
        spy_cmd += ["--format", "raw", "--output", str(args.out), "--nonblocking"]
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
        finally:
            suite._stop(service)
            committed.close()
            recorder.wait(30.0)
    print(
        f"{args.forward} orders in {seconds:.1f}s ({args.forward / seconds:,.0f}/s),"
        f" CPU {cpu:.1f}s ({1000 * cpu / args.forward:.3f}s per 1,000), profile: {args.out}"
    )
    print(top(args.out, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
