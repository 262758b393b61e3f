"""Which HTTP transport carries the Button client: measured on loopback, not guessed.

The Button client is the consumer's hot path (DESIGN, 9). This benchmark sends Button's
create-order request (``POST /v1/order`` with a realistic JSON order, Basic auth and the version
header) at several numbers of requests in flight through each candidate transport and reports
requests per second and the client process's CPU time per request (steadier than throughput on
a machine shared with other work):

- ``httpx``: ``httpx.AsyncClient`` with its default transport (httpcore);
- ``httpx-aiohttp``: ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``;
- ``aiohttp``: a plain ``aiohttp.ClientSession``;
- ``curl``: the project's ``CurlTransport`` alone (libcurl through pycurl, in a thread of its
  own), with the same prepared headers;
- ``button-client-aiohttp`` and ``button-client-curl``: the project's ``ButtonClient`` on each
  production transport (``BUTTON_HTTP_CLIENT``), request building and response classification
  included, to show what the client itself costs on top of its transport.

Every cell (one transport at one concurrency) runs in a fresh child process against one server
process, with the same pool size, a warm-up and a bound on both request count and duration.
Rounds rotate the order of transports and the table reports the median of the rounds, so noise
from other work on the machine hits every candidate alike. Compare ratios, not absolute numbers.

The server is either a minimal aiohttp app started here (answers Button's success envelope) or,
with ``--target sandbox``, the project's contract-strict Button sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from consumer.adapters.button_client import ButtonClient
from consumer.adapters.curl_transport import CurlTransport
from consumer.adapters.http_transport import TransportRequest
from consumer.sandbox.testing import run_sandbox
from consumer.settings import HttpClient

TRANSPORTS = (
    "httpx",
    "httpx-aiohttp",
    "aiohttp",
    "curl",
    "button-client-aiohttp",
    "button-client-curl",
)
CONCURRENCY = (1, 20, 100, 200)
API_KEY = "sk-bench"
_SUCCESS = b'{"meta":{"status":"ok"},"object":{"button_order_id":"btnorder-0000000000000000"}}'


@dataclass(frozen=True, slots=True)
class Cell:
    """One measurement: a transport at a number of requests in flight."""

    transport: str
    base_url: str
    api_key: str
    concurrency: int
    requests: int
    duration: float
    pool: int


@dataclass(frozen=True, slots=True)
class CellResult:
    transport: str
    concurrency: int
    completed: int
    errors: int
    seconds: float
    cpu_seconds: float  # CPU time of the client process over the timed part

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        done = self.completed + self.errors
        return self.cpu_seconds / done * 1e6 if done else 0.0


def order_body(index: int) -> dict[str, Any]:
    """A create-order body of realistic size; ``order_id`` unique so a strict server accepts it."""
    return {
        "order_id": f"bench-{os.getpid()}-{index}",
        "total": 5998,
        "currency": "USD",
        "purchase_date": "2024-05-01T14:03:22Z",
        "btn_ref": "fakesrctok-abcdef0123456789",
        "customer_order_id": f"{index}",
        "customer": {
            "id": "cust-789",
            "email_sha256": "0" * 64,
            "device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        },
        "line_items": [
            {
                "identifier": "SKU-RED-M",
                "sku": "SKU-RED-M",
                "description": "Red shirt, M",
                "category": ["Apparel"],
                "quantity": 2,
                "amount": 2999,
                "total": 5998,
                "attributes": {"size": "M"},
            }
        ],
    }


def _headers(api_key: str) -> dict[str, str]:
    token = base64.b64encode(f"{api_key}:".encode()).decode("ascii")
    return {
        "Authorization": f"Basic {token}",
        "X-Button-API-Version": "2018-02-13",
        "User-Agent": "button-consumer-bench",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }


def _encode(index: int) -> bytes:
    return json.dumps(order_body(index), separators=(",", ":")).encode()


def _accepted(status: int, body: bytes) -> bool:
    return 200 <= status < 300 and json.loads(body)["meta"]["status"] == "ok"


Sender = Callable[[int], Awaitable[bool]]


async def _httpx_sender(cell: Cell, *, over_aiohttp: bool) -> tuple[Sender, Callable[[], Any]]:
    limits = httpx.Limits(max_connections=cell.pool, max_keepalive_connections=cell.pool)
    timeout = httpx.Timeout(connect=5.0, read=15.0, write=15.0, pool=20.0)
    transport: httpx.AsyncBaseTransport | None = None
    if over_aiohttp:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=cell.pool))
        transport = AiohttpTransport(client=session)
    client = httpx.AsyncClient(
        base_url=cell.base_url,
        headers=_headers(cell.api_key),
        limits=limits,
        timeout=timeout,
        transport=transport,
    )

    async def send(index: int) -> bool:
        response = await client.post("/v1/order", content=_encode(index))
        return _accepted(response.status_code, response.content)

    return send, client.aclose


async def _aiohttp_sender(cell: Cell) -> tuple[Sender, Callable[[], Any]]:
    session = aiohttp.ClientSession(
        base_url=cell.base_url,
        headers=_headers(cell.api_key),
        connector=aiohttp.TCPConnector(limit=cell.pool),
        timeout=aiohttp.ClientTimeout(total=20.0, sock_connect=5.0, sock_read=15.0),
    )

    async def send(index: int) -> bool:
        async with session.post("/v1/order", data=_encode(index)) as response:
            return _accepted(response.status, await response.read())

    return send, session.close


async def _curl_sender(cell: Cell) -> tuple[Sender, Callable[[], Any]]:
    transport = CurlTransport(max_connections=cell.pool)
    url = f"{cell.base_url}/v1/order"
    headers = _headers(cell.api_key)

    async def send(index: int) -> bool:
        response = await transport.send(TransportRequest("POST", url, headers, _encode(index)))
        return _accepted(response.status, response.body)

    return send, transport.aclose


async def _button_client_sender(
    cell: Cell, http_client: HttpClient
) -> tuple[Sender, Callable[[], Any]]:
    client = ButtonClient(
        cell.api_key, base_url=cell.base_url, max_connections=cell.pool, http_client=http_client
    )

    async def send(index: int) -> bool:
        outcome = await client.create(order_body(index))
        return outcome.ok

    return send, client.aclose


async def _sender(cell: Cell) -> tuple[Sender, Callable[[], Any]]:
    if cell.transport == "httpx":
        return await _httpx_sender(cell, over_aiohttp=False)
    if cell.transport == "httpx-aiohttp":
        return await _httpx_sender(cell, over_aiohttp=True)
    if cell.transport == "aiohttp":
        return await _aiohttp_sender(cell)
    if cell.transport == "curl":
        return await _curl_sender(cell)
    if cell.transport == "button-client-aiohttp":
        return await _button_client_sender(cell, "aiohttp")
    if cell.transport == "button-client-curl":
        return await _button_client_sender(cell, "curl")
    raise ValueError(f"unknown transport {cell.transport!r}")


async def _measure(cell: Cell) -> CellResult:
    send, close = await _sender(cell)
    try:
        # Warm-up: open the pool's connections and import lazily loaded code before timing.
        await asyncio.gather(*(send(-1 - i) for i in range(max(cell.concurrency, 20))))
        next_index = 0
        completed = errors = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        deadline = started + cell.duration

        async def worker() -> None:
            nonlocal next_index, completed, errors
            while next_index < cell.requests and time.perf_counter() < deadline:
                index = next_index
                next_index += 1
                if await send(index):
                    completed += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    finally:
        await close()
    return CellResult(cell.transport, cell.concurrency, completed, errors, seconds, cpu_seconds)


def run_cell(cell: Cell) -> CellResult:
    """Entry point of a child process: one cell, on a fresh event loop."""
    return asyncio.run(_measure(cell))


def _serve_envelope(url_queue: Any) -> None:
    """Child process: the minimal stand-in for Button, answering every create with success."""

    async def create(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=_SUCCESS, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/order", create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        url_queue.put(f"http://{host}:{port}")
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_sandbox(url_queue: Any) -> None:
    """Child process: the project's Button sandbox (validation, state, auth), on loopback."""
    with run_sandbox(api_keys=(API_KEY,)) as sandbox:
        url_queue.put(sandbox.base_url)
        threading.Event().wait()


@contextmanager
def server(target: str) -> Iterator[str]:
    """Start the target server in a child process; yield its base URL; stop it on exit."""
    context = multiprocessing.get_context("spawn")
    url_queue = context.Queue()
    entry = _serve_sandbox if target == "sandbox" else _serve_envelope
    process = context.Process(target=entry, args=(url_queue,), daemon=True)
    process.start()
    try:
        yield url_queue.get(timeout=30)
    finally:
        process.terminate()
        process.join(timeout=10)


def measure(
    *,
    target: str,
    transports: Sequence[str],
    concurrency: Sequence[int],
    requests: int,
    duration: float,
    rounds: int,
    pool: int,
    progress: Callable[[CellResult], None] = lambda _: None,
) -> list[CellResult]:
    """Run every (round, concurrency, transport) cell, each in a fresh process."""
    context = multiprocessing.get_context("spawn")
    results: list[CellResult] = []
    with server(target) as base_url:
        for round_number in range(rounds):
            shift = round_number % len(transports)
            order = list(transports[shift:]) + list(transports[:shift])
            for level in concurrency:
                for name in order:
                    cell = Cell(name, base_url, API_KEY, level, requests, duration, pool)
                    with ProcessPoolExecutor(1, mp_context=context) as pool_executor:
                        result = pool_executor.submit(run_cell, cell).result()
                    progress(result)
                    results.append(result)
    return results


def table(
    results: Sequence[CellResult], transports: Sequence[str], concurrency: Sequence[int]
) -> str:
    """Markdown tables: median requests/s, and median client CPU time per request."""
    baseline = "aiohttp" if "aiohttp" in transports else transports[0]

    def median(name: str, level: int, metric: Callable[[CellResult], float]) -> float:
        values = [metric(r) for r in results if r.transport == name and r.concurrency == level]
        return statistics.median(values) if values else 0.0

    def one(title: str, metric: Callable[[CellResult], float]) -> list[str]:
        header = f"| {title} | " + " | ".join(f"{c} in flight" for c in concurrency) + " |"
        lines = [header, "|---|" + "---:|" * len(concurrency)]
        for name in transports:
            cells = []
            for level in concurrency:
                value = median(name, level, metric)
                base = median(baseline, level, metric)
                ratio = f" ({value / base:.2f}x)" if base and name != baseline else ""
                cells.append(f"{value:,.0f}{ratio}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    errors = sum(r.errors for r in results)
    rounds = max((sum(1 for r in results if r.transport == transports[0]) // len(concurrency)), 1)
    return "\n".join(
        [
            *one("requests/s", lambda r: r.rps),
            "",
            *one("client CPU µs/request", lambda r: r.cpu_us_per_request),
            "",
            f"Medians of {rounds} rounds; ratios against {baseline};"
            f" {errors} non-success responses.",
        ]
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench transport", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--target", choices=("local", "sandbox"), default="local")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--requests", type=int, default=5000, help="per cell (bound)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell (bound)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=100, help="connections per client")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    transports = [t for t in args.transports.split(",") if t]
    concurrency = [int(c) for c in args.concurrency.split(",") if c]

    def progress(result: CellResult) -> None:
        print(
            f"  {result.transport:>14} x{result.concurrency:<4}"
            f" {result.rps:>9,.0f} req/s ({result.completed} ok, {result.errors} errors)",
            file=sys.stderr,
        )

    print(
        f"target={args.target} requests<={args.requests} duration<={args.duration}s"
        f" rounds={args.rounds} pool={args.pool} cpus={os.cpu_count()}"
        f" load={os.getloadavg()[0]:.2f} python={sys.version.split()[0]}",
        file=sys.stderr,
    )
    results = measure(
        target=args.target,
        transports=transports,
        concurrency=concurrency,
        requests=args.requests,
        duration=args.duration,
        rounds=args.rounds,
        pool=args.pool,
        progress=progress,
    )
    print(table(results, transports, concurrency))
    return 0
