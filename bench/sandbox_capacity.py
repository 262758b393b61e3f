"""How many requests per second the Button sandbox serves, so it is never the bottleneck of a test.

Starts the sandbox in a child process on a free loopback port (or uses ``--url``), then drives it
with an aiohttp client at several in-flight levels. Each level is bounded by a request count and a
time limit; the sandbox is reset between levels. Besides wall-clock throughput (which the load
generator shares the machine's cores with), it reports the sandbox's own CPU time per request
(from ``/proc``), i.e. what one core of sandbox could serve.

    python bench/sandbox_capacity.py                     # creates at 1, 20, 100, 200 in flight
    python bench/sandbox_capacity.py --mode mixed        # create + update + get + cancel
    python bench/sandbox_capacity.py --client raw        # a cheaper load generator
    python bench/sandbox_capacity.py --requests 5000 --duration 5 --concurrency 20,100
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

API_KEY = "sk-bench"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()}
JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parent.parent
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


@dataclass
class LevelResult:
    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    server_cpu_s: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def create_body(order_id: str) -> bytes:
    return json.dumps(
        {
            "order_id": order_id,
            "total": 5998,
            "currency": "USD",
            "purchase_date": "2024-05-01T14:03:22Z",
            "btn_ref": "srctok-0123456789abcdef",
            "customer": {"id": "cust-789", "email_sha256": "a" * 64},
            "line_items": [
                {"identifier": "SKU-RED-M", "quantity": 2, "amount": 2999, "total": 5998}
            ],
        }
    ).encode()


UPDATE_BODY = json.dumps(
    {
        "total": 2999,
        "currency": "USD",
        "line_items": [{"identifier": "SKU-RED-M", "quantity": 1, "amount": 2999, "total": 2999}],
    }
).encode()


async def run_level(
    base_url: str, mode: str, concurrency: int, max_requests: int, duration: float, tag: str
) -> LevelResult:
    result = LevelResult(concurrency)
    issued = 0
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        order_id = f"B-{tag}-{n}"
        steps: list[tuple[str, str, bytes | None]] = [("POST", "/v1/order", create_body(order_id))]
        if mode == "mixed":
            steps += [
                ("POST", f"/v1/order/{order_id}", UPDATE_BODY),
                ("GET", f"/v1/order/{order_id}", None),
                ("DELETE", f"/v1/order/{order_id}", None),
            ]
        for method, path, body in steps:
            started = time.perf_counter()
            headers = JSON_HEADERS if body is not None else AUTH
            async with session.request(
                method, base_url + path, data=body, headers=headers
            ) as response:
                await response.read()
                key = str(response.status)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[key] = result.statuses.get(key, 0) + 1
            result.requests += 1

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1 if mode == "create" else 4
            await one(session, issued)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm the connection pool so the measurement does not include TCP setup.
        async with session.get(base_url + "/__sandbox/healthz") as response:
            await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
    return result


async def run_level_raw(
    base_url: str, mode: str, concurrency: int, max_requests: int, duration: float, tag: str
) -> LevelResult:
    """The same load from a minimal HTTP/1.1 keep-alive client on asyncio streams.

    It costs far less CPU per request than aiohttp's client, so on a small machine it shows the
    sandbox's own limit rather than the load generator's.
    """
    result = LevelResult(concurrency)
    issued = 0
    deadline = time.perf_counter() + duration
    url = URL(base_url)
    auth = AUTH["Authorization"]

    def request_bytes(method: str, path: str, body: bytes | None) -> bytes:
        head = f"{method} {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {auth}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + (body or b"")

    async def worker() -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1 if mode == "create" else 4
                order_id = f"R-{tag}-{issued}"
                steps = [request_bytes("POST", "/v1/order", create_body(order_id))]
                if mode == "mixed":
                    steps += [
                        request_bytes("POST", f"/v1/order/{order_id}", UPDATE_BODY),
                        request_bytes("GET", f"/v1/order/{order_id}", None),
                        request_bytes("DELETE", f"/v1/order/{order_id}", None),
                    ]
                for raw in steps:
                    started = time.perf_counter()
                    writer.write(raw)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = CONTENT_LENGTH.search(head)
                    await reader.readexactly(int(length.group(1)) if length else 0)
                    result.latencies.append(time.perf_counter() - started)
                    key = head[9:12].decode()
                    result.statuses[key] = result.statuses.get(key, 0) + 1
                    result.requests += 1
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sandbox() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumer.sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--seed",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the sandbox exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, base_url
        except OSError:
            time.sleep(0.05)  # polling for the child's listening socket, with a deadline
    process.terminate()
    raise SystemExit("the sandbox did not start within 15 s")


async def reset(base_url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + "/__sandbox/reset", json={}) as response,
    ):
        response.raise_for_status()


async def main_async(args: argparse.Namespace, base_url: str, pid: int | None) -> None:
    print(
        f"sandbox capacity, mode={args.mode}, client={args.client}, up to {args.requests} requests "
        f"or {args.duration:g} s per level, loopback, {os.cpu_count()} CPU(s)"
    )
    print(
        f"{'in flight':>9} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'sandbox CPU s':>13} {'req/s per sandbox core':>23}  statuses"
    )
    for concurrency in args.concurrency:
        await reset(base_url)
        before = cpu_seconds(pid) if pid else None
        level = run_level if args.client == "aiohttp" else run_level_raw
        result = await level(
            base_url, args.mode, concurrency, args.requests, args.duration, f"c{concurrency}"
        )
        after = cpu_seconds(pid) if pid else None
        cpu = after - before if before is not None and after is not None else None
        per_core = f"{result.requests / cpu:,.0f}" if cpu else "n/a"
        print(
            f"{concurrency:>9} {result.requests:>9} {result.rate:>8,.0f} "
            f"{result.percentile(0.5):>8.2f} {result.percentile(0.99):>8.2f} "
            f"{(f'{cpu:.2f}' if cpu is not None else 'n/a'):>13} {per_core:>23}  "
            f"{dict(sorted(result.statuses.items()))}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use a running sandbox (its key must be sk-bench)")
    parser.add_argument("--mode", choices=("create", "mixed"), default="create")
    parser.add_argument(
        "--client",
        choices=("aiohttp", "raw"),
        default="aiohttp",
        help="load generator: aiohttp's client, or a minimal keep-alive client (cheaper)",
    )
    parser.add_argument("--requests", type=int, default=20000, help="per level (default 20000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level (10)")
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 20, 100, 200],
        help="comma-separated in-flight levels (default 1,20,100,200)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.url:
        asyncio.run(main_async(args, args.url.rstrip("/"), None))
        return 0
    process, base_url = start_sandbox()
    try:
        asyncio.run(main_async(args, base_url, process.pid))
    finally:
        process.terminate()
        process.wait(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
