"""Start a Button sandbox for a test, on a free loopback port, and look inside it.

Synchronous tests (no event loop of their own) use it like this::

    from consumer.sandbox.testing import run_sandbox

    with run_sandbox(api_keys=("sk-test",)) as sandbox:
        client = MyButtonClient(base_url=sandbox.base_url, api_key=sandbox.api_key)
        client.create_order(...)
        sandbox.wait_for(lambda: sandbox.order("ORD-1"), timeout=5)
        assert sandbox.order("ORD-1")["status"] == "open"
        sandbox.set_faults({"outage": {"seconds": 5}})
        sandbox.set_api_keys([])            # every request now answers 401
        with sandbox.holding(order_ids=["ORD-2"]):   # requests for ORD-2 get no answer
            ...                                      # until the block ends
        sandbox.reset()                     # back to how it started

The server runs on its own event loop in a daemon thread (or, with ``mode="process"``, in a child
process); the helpers talk to its admin API over HTTP (``/__sandbox/...``, see
``consumer.sandbox.server``), so they are safe from any thread. Leaving the ``with`` block stops
the server (hanging requests are dropped) and joins the thread or reaps the process.
Async tests that own a loop can use ``SandboxServer`` from ``consumer.sandbox.server`` instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

from consumer.sandbox.faults import FaultConfig
from consumer.sandbox.server import Sandbox, SandboxOptions, SandboxServer
from consumer.sandbox.state import DEFAULT_FINALIZATION_WINDOW_S

__all__ = ["SandboxHandle", "basic_auth", "run_sandbox"]

T = TypeVar("T")
# The sandbox is on loopback: never route admin calls through an HTTP proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def basic_auth(api_key: str) -> str:
    """The ``Authorization`` header value Button expects for ``api_key``."""
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()


class SandboxHandle:
    """A running sandbox: where it is, and helpers over its admin API."""

    def __init__(self, base_url: str, api_keys: Sequence[str]) -> None:
        self.base_url = base_url
        self.api_keys = tuple(api_keys)
        self.api_key = self.api_keys[0] if self.api_keys else ""

    @property
    def auth_header(self) -> dict[str, str]:
        """``{"Authorization": ...}`` for ``api_key``."""
        return {"Authorization": basic_auth(self.api_key)}

    def url(self, path: str) -> str:
        """``base_url + path``."""
        return self.base_url + path

    def orders(self) -> list[dict[str, Any]]:
        """Every order with its state and request history (``GET /__sandbox/orders``)."""
        doc = self._admin("GET", "/__sandbox/orders")
        orders: list[dict[str, Any]] = doc["orders"]
        return orders

    def order(self, order_id: str) -> dict[str, Any] | None:
        """One order (by merchant or Button ID) with its history, or None if it does not exist."""
        quoted = urllib.parse.quote(order_id, safe="")
        try:
            return self._admin("GET", f"/__sandbox/orders/{quoted}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def requests_for(self, order_id: str) -> list[dict[str, Any]]:
        """Every request that named ``order_id``, whether or not the order exists."""
        doc = self._admin("GET", "/__sandbox/orders?order_id=" + urllib.parse.quote(order_id))
        history: list[dict[str, Any]] = [
            entry for order in doc["orders"] for entry in order["history"]
        ]
        history.extend(doc["unknown_order_requests"].get(order_id, []))
        return history

    def stats(self) -> dict[str, Any]:
        """Request counts by route and status (``GET /__sandbox/stats``)."""
        return self._admin("GET", "/__sandbox/stats")

    def order_count(self) -> int:
        """How many orders the sandbox holds, deleted ones included (``GET
        /__sandbox/healthz``): a constant-time read, for polling while a load runs. ``stats``
        reads every order's status, which at tens of thousands of orders takes the sandbox's
        event loop milliseconds per call."""
        return int(self._admin("GET", "/__sandbox/healthz")["orders"])

    def set_faults(self, faults: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the faults (JSON of ``consumer.sandbox.faults``); ``{}`` clears them."""
        return self._admin("POST", "/__sandbox/faults", faults)

    def clear_faults(self) -> None:
        """No faults from now on."""
        self.set_faults({})

    def set_hold(self, *, order_ids: Sequence[str] = (), hold_all: bool = False) -> dict[str, Any]:
        """Park the Button requests naming one of ``order_ids`` (every request with
        ``hold_all``) until the hold changes; replaces the hold (JSON of
        ``consumer.sandbox.hold``). Answers the hold view (``hold_state``)."""
        return self._admin("POST", "/__sandbox/hold", {"all": hold_all, "order_ids": [*order_ids]})

    def release(self) -> dict[str, Any]:
        """End the hold: every parked request goes on as if it had just arrived."""
        return self._admin("POST", "/__sandbox/hold", {})

    def hold_state(self) -> dict[str, Any]:
        """``{"hold": {...}, "parked": n, "parked_by_order": {order_id: n}}``."""
        return self._admin("GET", "/__sandbox/hold")

    @contextmanager
    def holding(
        self, *, order_ids: Sequence[str] = (), hold_all: bool = False
    ) -> Iterator[SandboxHandle]:
        """``set_hold`` for the duration of the ``with`` block; released however it ends."""
        self.set_hold(order_ids=order_ids, hold_all=hold_all)
        try:
            yield self
        finally:
            self.release()

    def wait_parked(self, order_id: str | None = None, timeout: float = 60.0) -> int:
        """Wait until a request naming ``order_id`` (any request, when None) is parked; return
        how many are.

        Raises:
            TimeoutError: when none is parked within ``timeout`` seconds.
        """

        def parked() -> int:
            state = self.hold_state()
            return int(
                state["parked"] if order_id is None else state["parked_by_order"].get(order_id, 0)
            )

        what = "any request" if order_id is None else f"a request for {order_id}"
        return self.wait_for(
            parked, timeout, interval=0.05, message=f"{what} was not parked within {timeout} s"
        )

    def set_api_keys(self, keys: Sequence[str]) -> None:
        """Accept exactly ``keys`` from now on (``[]``: every Button request answers 401)."""
        self._admin("POST", "/__sandbox/api-keys", {"api_keys": list(keys)})

    def finalize(self, order_id: str) -> dict[str, Any]:
        """Finalize an open order now."""
        quoted = urllib.parse.quote(order_id, safe="")
        return self._admin("POST", f"/__sandbox/orders/{quoted}/finalize", {})

    def reset(self) -> None:
        """Forget orders, history and counters; restore the start-up keys and faults."""
        self._admin("POST", "/__sandbox/reset", {})

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 10.0,
        interval: float = 0.02,
        message: str = "",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Raises:
            TimeoutError: when ``timeout`` seconds pass first (the message says what was awaited).
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(message or f"condition not met within {timeout} s: {predicate}")
            time.sleep(interval)

    def _admin(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1 (our server)
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        with _DIRECT.open(request, timeout=10) as response:
            doc: dict[str, Any] = json.loads(response.read())
        return doc


@contextmanager
def run_sandbox(
    *,
    api_keys: Sequence[str] = ("sk-test",),
    faults: Mapping[str, Any] | None = None,
    finalization_window_s: float = DEFAULT_FINALIZATION_WINDOW_S,
    seed: int | None = 0,
    host: str = "127.0.0.1",
    mode: Literal["thread", "process"] = "thread",
) -> Iterator[SandboxHandle]:
    """Run a sandbox for the duration of the ``with`` block.

    Args:
        api_keys: the accepted API keys; ``handle.api_key`` is the first.
        faults: start-up faults (``consumer.sandbox.faults`` JSON); ``reset()`` returns to them.
        finalization_window_s: how long an order stays open after its create arrives.
        seed: random seed for faults and Button order IDs (None: not reproducible).
        host: the loopback address to bind; the port is chosen free.
        mode: ``"thread"`` (default, starts in milliseconds) runs it on an event loop in a
            daemon thread; ``"process"`` runs ``python -m consumer.sandbox`` in a child process,
            so it does not share the test process's GIL (use it when the code under test is
            CPU-bound in the same process, e.g. throughput tests).

    Yields:
        A ``SandboxHandle`` with ``base_url``, ``api_key`` and admin helpers.
    """
    options = SandboxOptions(
        api_keys=tuple(api_keys),
        finalization_window_s=finalization_window_s,
        faults=FaultConfig.from_json(faults or {}),
        seed=seed,
    )
    runner: _ThreadRunner | _ProcessRunner = (
        _ThreadRunner(options, host) if mode == "thread" else _ProcessRunner(options, host)
    )
    runner.start()
    try:
        yield SandboxHandle(runner.base_url, options.api_keys)
    finally:
        runner.stop()


class _ProcessRunner:
    """Owns a ``python -m consumer.sandbox`` child process."""

    def __init__(self, options: SandboxOptions, host: str) -> None:
        self._command = [
            sys.executable,
            "-m",
            "consumer.sandbox",
            "--host",
            host,
            "--port",
            "0",
            "--finalization-window",
            repr(options.finalization_window_s),
            "--faults",
            json.dumps(options.faults.to_json()),
        ]
        for key in options.api_keys:
            self._command += ["--api-key", key]
        if options.seed is not None:
            self._command += ["--seed", str(options.seed)]
        self._process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(self._command, stdout=subprocess.PIPE, env=env)  # noqa: S603
        self._process = process
        try:
            self.base_url = _read_banner(process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()


def _read_banner(process: subprocess.Popen[bytes]) -> str:
    """The base URL the child prints once it listens (waits at most ``_START_TIMEOUT_S``)."""
    stdout = process.stdout
    if stdout is None:
        raise RuntimeError("the sandbox process has no stdout pipe")
    deadline = time.monotonic() + _START_TIMEOUT_S
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the sandbox process did not start in time")
        readable, _, _ = select.select([stdout], [], [], remaining)
        if readable:
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the sandbox process exited with {process.wait()}")
            line += chunk
    found = re.search(rb"listening on (http://\S+)", line)
    if found is None:
        raise RuntimeError(f"unexpected sandbox banner: {line[:200]!r}")
    return found.group(1).decode()


class _ThreadRunner:
    """Owns the background thread and its event loop."""

    def __init__(self, options: SandboxOptions, host: str) -> None:
        self._options = options
        self._host = host
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.base_url = ""
        self._thread = threading.Thread(target=self._run, name="button-sandbox", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise TimeoutError("the sandbox did not start in time")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT_S)
            raise RuntimeError("the sandbox failed to start") from self._error

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError("the sandbox thread did not stop in time")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        server = SandboxServer(Sandbox(self._options), self._host, 0)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await server.start()
        try:
            self.base_url = server.base_url
            self._ready.set()
            await self._stop.wait()
        finally:
            await server.stop()
