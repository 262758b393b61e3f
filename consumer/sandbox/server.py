"""The sandbox's HTTP face: Button's Order API routes, strict like the real one, plus an admin API.

Button offers no sandbox, so tests, demos and benchmarks talk to this aiohttp server over real
HTTP. Each Button request goes through the same steps: read the body (to learn the ``order_id``
that fault rules match), ask the ``FaultInjector`` what to do, check HTTP Basic authentication,
check the body, let the ``OrderBook`` answer, record the outcome. Faults therefore come before
authentication, as a gateway in front of Button would fail. Everything runs on one event loop.

Button routes (``Authorization: Basic base64("<api key>:")``, JSON bodies, Button's envelope)::

    POST   /v1/order                      create: 200 {object}, 400, 401, 409
    POST   /v1/order/{order_id}           update (full new state): 200, 400, 401, 403, 404
    DELETE /v1/order/{order_id}           cancel: 200 {"object": null}, 401, 403, 404
    GET    /v1/order/{order_id}           200 {object} (also when deleted), 400, 401, 404
    GET    /v1/order/btn-ref/{btn_ref}    200 {"objects": [...]}, 400, 401

``{order_id}`` is the merchant ``order_id`` (percent-encoded) or the ``button_order_id``. 403: the
order is finalized. 404: unknown, or (update and cancel) already deleted. The rules for bodies are
in ``consumer.sandbox.validation``; 400 answers carry every problem in ``error.message`` (joined
by ``"; "``, each starting with the field) and as a list in ``error.details.problems``.

Any other path answers 404 (405 for another method on a Button path), in Button's envelope.
A request body must be ``Content-Type: application/json`` and a JSON object (no NaN, no duplicate
keys, at most 1 MiB), else 400 (413 when larger). ``X-Button-API-Version``, when sent, must be a
``YYYY-MM-DD`` date.

Admin routes (no authentication; JSON in and out; errors are ``{"error": "<message>"}``)::

    GET  /__sandbox/healthz                  {"status": "ok", "orders": 3}
    GET  /__sandbox/orders[?order_id=X]      {"orders": [ORDER...],
                                              "unknown_order_requests": {order_id: [REQUEST...]}}
    GET  /__sandbox/orders/{order_id}        ORDER (merchant or button_order_id), 404 if none
    POST /__sandbox/orders/{order_id}/finalize   finalize an open order now: ORDER, 409 if not open
    GET  /__sandbox/stats                    STATS
    GET  /__sandbox/faults                   {"faults": FAULTS, "state": {"outage_remaining_s": 0,
                                                                          "rule_attempts": [0]}}
    POST /__sandbox/faults                   body FAULTS (see ``faults``), replaces the faults;
                                             answers like GET; 400 names the bad key
    GET  /__sandbox/api-keys                 {"count": 1}
    POST /__sandbox/api-keys                 {"api_keys": ["sk-new"]}: the accepted keys from now
                                             on ([] rejects every request); answers {"count": 1}
    GET  /__sandbox/hold                     HOLD
    POST /__sandbox/hold                     body {"order_ids": [...]} | {"all": true} | {} (see
                                             ``hold``): replaces the hold, wakes parked requests
                                             it no longer covers; answers HOLD; 400 names the key
    POST /__sandbox/reset                    forget orders, history and counters; restore the
                                             start-up keys and faults; end the hold and drop the
                                             parked requests: {"status": "reset"}

    ORDER   = {"order_id", "button_order_id", "status": "open|finalized|deleted", "version",
               "created_at", "updated_at", "object": <Button's object for GET /v1/order/{id}>,
               "history": [REQUEST...]}
    REQUEST = {"method", "path", "status": 200 | null (no response sent), "time": ISO-8601,
               "fault": null | "503" | "429" | "reset" | "hang" | "lost_response" |
                        "accepted_202" | "outage_503" | "rule_503" | "rule_reset" | ...,
               "total": the body's total in minor units (create, update) | null}
    STATS   = {"requests": 12, "by_route": {"POST /v1/order": {"200": 10, "409": 2}, ...},
               "by_status": {"200": 10, "409": 2}, "faults": {"503": 1},
               "orders": {"open": 9, "finalized": 0, "deleted": 1}, "since": ISO-8601,
               "in_flight": 0, "max_in_flight": 20}
    HOLD    = {"hold": {"all": false, "order_ids": ["ORD-1"]}, "parked": 1,
               "parked_by_order": {"ORD-1": 1}}

``requests`` counts answered (or dropped) Button requests; ``in_flight`` those being served now
(delayed, hanging and parked ones included) and ``max_in_flight`` the most at once since start or
reset, which lets a test check a client's concurrency bound. In HOLD, ``parked`` counts the
requests the hold parks now, ``parked_by_order`` those that name an order, by the name they used.

Routes in STATS: ``POST /v1/order``, ``POST /v1/order/{order_id}``, ``DELETE
/v1/order/{order_id}``, ``GET /v1/order/{order_id}``, ``GET /v1/order/btn-ref/{btn_ref}``,
``other``. A status key is the HTTP status, or the fault's name when no response was delivered.

About 650 lines, 80 of them this contract: the routes stay next to the table that documents them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import re
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from consumer.sandbox.faults import Decision, FaultConfig, FaultConfigError, FaultInjector
from consumer.sandbox.hold import Hold, HoldConfigError
from consumer.sandbox.state import DEFAULT_FINALIZATION_WINDOW_S, OrderBook, Reply, error_envelope

__all__ = ["Sandbox", "SandboxOptions", "SandboxServer"]

ROUTE_CREATE: Final = "POST /v1/order"
ROUTE_UPDATE: Final = "POST /v1/order/{order_id}"
ROUTE_CANCEL: Final = "DELETE /v1/order/{order_id}"
ROUTE_GET: Final = "GET /v1/order/{order_id}"
ROUTE_LIST: Final = "GET /v1/order/btn-ref/{btn_ref}"
ROUTE_OTHER: Final = "other"
MAX_BODY_BYTES: Final = 1024 * 1024
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_BUTTON_PATH = re.compile(r"/v1/order(?:/[^/]+|/btn-ref/[^/]+)?")
_BAD_GATEWAY: Final = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
_CLIENT_CHECK_S: Final = 0.05  # how often a parked request looks whether its client left
_AUTH_HELP: Final = "use HTTP Basic with the API key as user name and an empty password"


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    """How a sandbox starts (and what ``POST /__sandbox/reset`` returns to)."""

    api_keys: tuple[str, ...] = ("sk-sandbox",)
    finalization_window_s: float = DEFAULT_FINALIZATION_WINDOW_S
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Sandbox:
    """The Button Order API and admin API as an ``aiohttp`` application (one per event loop)."""

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options or SandboxOptions()
        self.book = OrderBook(
            finalization_window_s=self.options.finalization_window_s,
            clock=clock,
            seed=self.options.seed,
        )
        self.faults = FaultInjector(
            self.options.faults, seed=self.options.seed, monotonic=monotonic, wall=clock
        )
        self._keys: frozenset[str] = frozenset()
        self._auth_headers: frozenset[str] = frozenset()
        self.set_api_keys(self.options.api_keys)
        self._closing: asyncio.Event | None = None
        self.in_flight = 0  # Button requests being served now
        self.max_in_flight = 0  # the most served at once since start or reset
        self.hold = Hold()
        self._hold_changed = asyncio.Event()  # set (and replaced) whenever the hold changes
        self._hold_epoch = 0  # bumped by reset: requests parked before it are dropped
        self._parked: Counter[str | None] = Counter()

    # --- control ------------------------------------------------------------------------------

    def set_api_keys(self, keys: Iterable[str]) -> None:
        """Accept exactly these API keys from now on."""
        self._keys = frozenset(keys)
        self._auth_headers = frozenset(
            "Basic " + base64.b64encode(f"{key}:".encode()).decode() for key in self._keys
        )

    def set_hold(self, hold: Hold) -> None:
        """Park the requests ``hold`` covers from now on; wake the parked ones to re-check."""
        self.hold = hold
        changed, self._hold_changed = self._hold_changed, asyncio.Event()
        changed.set()

    def reset(self) -> None:
        """Forget all orders and counters; restore the start-up keys and faults; drop parked
        requests and end the hold."""
        self._hold_epoch += 1
        self.set_hold(Hold())
        self.book.clear()
        self.max_in_flight = self.in_flight
        self.set_api_keys(self.options.api_keys)
        self.faults.configure(self.options.faults)

    def make_app(self) -> web.Application:
        """A fresh application serving this sandbox."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        add = app.router.add_route
        add("POST", "/v1/order", self._create)
        add("GET", "/v1/order/btn-ref/{btn_ref}", self._list)
        add("POST", "/v1/order/{order_id}", self._update)
        add("DELETE", "/v1/order/{order_id}", self._cancel)
        add("GET", "/v1/order/{order_id}", self._get)
        add("GET", "/__sandbox/healthz", self._admin_healthz)
        add("GET", "/__sandbox/orders", self._admin_orders)
        add("GET", "/__sandbox/orders/{order_id}", self._admin_order)
        add("POST", "/__sandbox/orders/{order_id}/finalize", self._admin_finalize)
        add("GET", "/__sandbox/stats", self._admin_stats)
        add("GET", "/__sandbox/faults", self._admin_faults)
        add("POST", "/__sandbox/faults", self._admin_set_faults)
        add("GET", "/__sandbox/api-keys", self._admin_keys)
        add("POST", "/__sandbox/api-keys", self._admin_set_keys)
        add("GET", "/__sandbox/hold", self._admin_hold)
        add("POST", "/__sandbox/hold", self._admin_set_hold)
        add("POST", "/__sandbox/reset", self._admin_reset)
        add("*", "/{tail:.*}", self._unknown)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._closing = asyncio.Event()

    async def _on_shutdown(self, _app: web.Application) -> None:
        # Wake hanging and delayed requests so shutdown does not wait for them.
        if self._closing is not None:
            self._closing.set()

    # --- Button routes ------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body, problem = await _read_json(request)
        order_id = body.get("order_id") if isinstance(body, dict) else None
        key = order_id if isinstance(order_id, str) else None
        return await self._serve(
            request,
            "create",
            ROUTE_CREATE,
            order_key=key,
            problem=problem,
            apply=lambda: self.book.create(body),
            total=_body_total(body),
        )

    async def _update(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info["order_id"]
        body, problem = await _read_json(request)
        return await self._serve(
            request,
            "update",
            ROUTE_UPDATE,
            order_key=path_id,
            problem=problem,
            apply=lambda: self.book.update(path_id, body),
            total=_body_total(body),
        )

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info["order_id"]
        return await self._serve(
            request,
            "cancel",
            ROUTE_CANCEL,
            order_key=path_id,
            problem=None,
            apply=lambda: self.book.cancel(path_id),
        )

    async def _get(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info["order_id"]
        return await self._serve(
            request,
            "get",
            ROUTE_GET,
            order_key=path_id,
            problem=None,
            apply=lambda: self.book.get(path_id),
        )

    async def _list(self, request: web.Request) -> web.StreamResponse:
        btn_ref = request.match_info["btn_ref"]
        return await self._serve(
            request,
            "list",
            ROUTE_LIST,
            order_key=None,
            problem=None,
            apply=lambda: self.book.list_by_btn_ref(btn_ref),
        )

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        if _BUTTON_PATH.fullmatch(request.path):
            status, message = 405, f"Method not allowed: {request.method} {request.path}"
        else:
            status, message = 404, f"Not found: {request.path[:200]}"
        self.book.record(ROUTE_OTHER, None, method=request.method, path=request.path, status=status)
        return _json(status, error_envelope(message))

    async def _serve(
        self,
        request: web.Request,
        operation: str,
        route: str,
        *,
        order_key: str | None,
        problem: _BodyError | None,
        apply: Callable[[], Reply],
        total: int | None = None,
    ) -> web.StreamResponse:
        """Serve one Button request; ``total`` is its body's ``total`` (minor units), recorded in
        the order's history with the answer."""
        record = functools.partial(self._record, request, route, order_key, total=total)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold.covers(order_key):
                parked = await self._park(request, order_key)
                if parked == "dropped":  # a reset or shutdown: nothing applied, nothing recorded
                    return _drop_connection(request)
                if parked == "gone" or _client_gone(request):
                    record(None, "hold_abandoned")
                    return _drop_connection(request)
            decision = self.faults.decide(operation, order_key)
            if decision.delay_s:
                await self._pause(decision.delay_s)
            if decision.kind == "status":
                record(decision.status, decision.label)
                return _fault_response(decision)
            if decision.kind in ("reset", "hang"):
                if decision.kind == "hang":
                    await self._pause(decision.hang_seconds)
                record(None, decision.label)
                return _drop_connection(request)
            status, envelope = self._check_request(request, problem) or apply()
            if decision.kind == "lost_response":
                record(status, decision.label)
                return _drop_connection(request)
            fault = None
            if decision.kind == "accepted" and status == 200:
                status, fault = 202, decision.label
                obj = dict(envelope["object"])
                obj.pop("button_order_id", None)
                envelope = {"meta": envelope["meta"], "object": obj}
            record(status, fault)
            return _json(status, envelope)
        finally:
            self.in_flight -= 1

    def _check_request(self, request: web.Request, problem: _BodyError | None) -> Reply | None:
        header = request.headers.get("Authorization")
        if header not in self._auth_headers:
            auth_problem = self._auth_problem(header)
            if auth_problem is not None:
                return 401, error_envelope(auth_problem)
        version = request.headers.get("X-Button-API-Version")
        if version is not None and not _API_VERSION.fullmatch(version):
            return 400, error_envelope("X-Button-API-Version: must be a date YYYY-MM-DD")
        if problem is not None:
            return problem.status, error_envelope(problem.message)
        return None

    def _auth_problem(self, header: str | None) -> str | None:
        """Why ``header`` is refused; None when it is valid in a non-canonical spelling."""
        if header is None:
            return f"Authorization required: {_AUTH_HELP}"
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return f"Unsupported authorization scheme: {_AUTH_HELP}"
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
            user, colon, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return f"Malformed Basic credentials: {_AUTH_HELP}"
        if not colon or password:
            return f"Invalid api_key: {_AUTH_HELP}"
        return None if user in self._keys else "Invalid api_key"

    def _record(
        self,
        request: web.Request,
        route: str,
        order_key: str | None,
        status: int | None,
        fault: str | None,
        *,
        total: int | None = None,
    ) -> None:
        self.book.record(
            route,
            order_key,
            method=request.method,
            path=request.path,
            status=status,
            fault=fault,
            total=total,
        )

    async def _park(self, request: web.Request, order_key: str | None) -> str:
        """Wait while the hold covers ``order_key``. Returns ``"released"``; ``"gone"`` as soon
        as the client closes the connection; ``"dropped"`` on a reset or server shutdown."""
        epoch = self._hold_epoch
        self._parked[order_key] += 1
        try:
            while self.hold.covers(order_key):
                if _client_gone(request):
                    return "gone"
                closing = self._closing
                waiters = [asyncio.ensure_future(self._hold_changed.wait())]
                if closing is not None:
                    waiters.append(asyncio.ensure_future(closing.wait()))
                try:
                    # Woken by a hold change or shutdown; every _CLIENT_CHECK_S to look at the
                    # connection (aiohttp does not cancel a handler whose client left).
                    await asyncio.wait(
                        waiters, timeout=_CLIENT_CHECK_S, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if (closing is not None and closing.is_set()) or self._hold_epoch != epoch:
                    return "dropped"
            return "released"
        finally:
            self._parked[order_key] -= 1
            if self._parked[order_key] <= 0:
                del self._parked[order_key]

    async def _pause(self, seconds: float) -> None:
        closing = self._closing
        if closing is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), seconds)

    # --- admin routes -------------------------------------------------------------------------

    async def _admin_healthz(self, _request: web.Request) -> web.StreamResponse:
        return _json(200, {"status": "ok", "orders": len(self.book.orders)})

    async def _admin_orders(self, request: web.Request) -> web.StreamResponse:
        doc = self.book.orders_json()
        wanted = request.query.get("order_id")
        if wanted is not None:
            doc["orders"] = [o for o in doc["orders"] if o["order_id"] == wanted]
            doc["unknown_order_requests"] = {
                k: v for k, v in doc["unknown_order_requests"].items() if k == wanted
            }
        return _json(200, doc)

    async def _admin_order(self, request: web.Request) -> web.StreamResponse:
        order = self.book.find(request.match_info["order_id"])
        if order is None:
            return _json(404, {"error": "no such order"})
        return _json(200, self.book.order_json(order))

    async def _admin_finalize(self, request: web.Request) -> web.StreamResponse:
        path_id = request.match_info["order_id"]
        if self.book.find(path_id) is None:
            return _json(404, {"error": "no such order"})
        order = self.book.finalize(path_id)
        if order is None:
            return _json(409, {"error": "order is not open"})
        return _json(200, self.book.order_json(order))

    async def _admin_stats(self, _request: web.Request) -> web.StreamResponse:
        stats = self.book.stats_json()
        stats["in_flight"] = self.in_flight
        stats["max_in_flight"] = self.max_in_flight
        return _json(200, stats)

    async def _admin_faults(self, _request: web.Request) -> web.StreamResponse:
        return _json(200, {"faults": self.faults.config.to_json(), "state": self.faults.state()})

    async def _admin_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            doc = await _admin_body(request)
            self.faults.configure(FaultConfig.from_json(doc))
        except (_BodyError, FaultConfigError) as exc:
            return _json(400, {"error": str(exc)})
        return await self._admin_faults(request)

    async def _admin_keys(self, _request: web.Request) -> web.StreamResponse:
        return _json(200, {"count": len(self._keys)})

    async def _admin_set_keys(self, request: web.Request) -> web.StreamResponse:
        try:
            doc = await _admin_body(request)
        except _BodyError as exc:
            return _json(400, {"error": str(exc)})
        keys = doc.get("api_keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            return _json(400, {"error": "api_keys: must be an array of non-empty strings"})
        self.set_api_keys(keys)
        return _json(200, {"count": len(self._keys)})

    def hold_json(self) -> dict[str, Any]:
        """The hold and the requests it parks now (``GET /__sandbox/hold``)."""
        return {
            "hold": self.hold.to_json(),
            "parked": sum(self._parked.values()),
            "parked_by_order": dict(sorted((k, n) for k, n in self._parked.items() if k)),
        }

    async def _admin_hold(self, _request: web.Request) -> web.StreamResponse:
        return _json(200, self.hold_json())

    async def _admin_set_hold(self, request: web.Request) -> web.StreamResponse:
        try:
            self.set_hold(Hold.from_json(await _admin_body(request)))
        except (_BodyError, HoldConfigError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, self.hold_json())

    async def _admin_reset(self, _request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json(200, {"status": "reset"})


class SandboxServer:
    """Runs a ``Sandbox`` on a TCP port inside the current event loop.

    >>> server = SandboxServer(Sandbox(SandboxOptions(api_keys=("sk-test",))))  # doctest: +SKIP
    >>> await server.start(); print(server.base_url); await server.stop()      # doctest: +SKIP
    """

    def __init__(
        self,
        sandbox: Sandbox,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.host = host
        self.port = port
        self._reuse_port = reuse_port
        self._sock = sock
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; ``port`` then holds the bound port (useful with port 0)."""
        runner = web.AppRunner(
            self.sandbox.make_app(), access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        site: web.BaseSite
        if self._sock is not None:
            site = web.SockSite(runner, self._sock)
        else:
            site = web.TCPSite(
                runner, self.host, self.port, backlog=1024, reuse_port=self._reuse_port or None
            )
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        """Stop serving; hanging requests are woken and dropped."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


# --- helpers ------------------------------------------------------------------------------------


async def _read_json(request: web.Request) -> tuple[object, _BodyError | None]:
    try:
        return await _json_body(request), None
    except _BodyError as exc:
        return None, exc


async def _json_body(request: web.Request) -> object:
    # The exact header is the common case; only other spellings pay for full parsing.
    header = request.headers.get("Content-Type")
    if header != "application/json" and request.content_type != "application/json":
        raise _BodyError(400, "Content-Type: must be application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _BodyError(413, f"body: must be at most {MAX_BODY_BYTES} bytes") from None
    try:
        return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise _BodyError(400, f"body: not valid JSON ({str(exc)[:120]})") from None


async def _admin_body(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise _BodyError(400, f"body: not valid JSON ({str(exc)[:120]})") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return doc


def _json(status: int, doc: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(doc, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


def _fault_response(decision: Decision) -> web.Response:
    headers = {"Retry-After": decision.retry_after} if decision.retry_after else None
    if decision.status == 502:
        return web.Response(
            status=502, body=_BAD_GATEWAY, content_type="text/html", headers=headers
        )
    if decision.body == "html":
        return web.Response(
            status=decision.status,
            body=_proxy_page(decision.status),
            content_type="text/html",
            headers=headers,
        )
    message = {
        429: "Too many requests",
        500: "Internal server error",
        503: "Service unavailable",
        504: "Gateway timeout",
    }.get(decision.status, "Injected error")
    return _json(decision.status, error_envelope(f"{message} (sandbox fault)"), headers)


def _proxy_page(status: int) -> bytes:
    """The HTML page a proxy, WAF or CDN in front of Button answers with (not Button's JSON)."""
    reason = {403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}.get(
        status, "Error"
    )
    return (
        f"<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1>"
        "<p>Request blocked by the gateway (sandbox fault).</p></body></html>\n"
    ).encode()


def _client_gone(request: web.Request) -> bool:
    """Whether the client closed the connection (it will never read an answer)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Reset the TCP connection (RST, not FIN) so the client sees a connection error."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)


def _body_total(body: object) -> int | None:
    """A create or update body's ``total`` when it is an integer (minor units), else None."""
    total = body.get("total") if isinstance(body, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None
