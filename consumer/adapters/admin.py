"""The admin HTTP server: liveness, readiness, Prometheus metrics and the live delivery log.

``/healthz`` reflects poll-loop progress (not lag), so a wedged loop gets the pod restarted;
``/readyz`` is false until the consumer runs and while Button rejects the API key;
``/deliveries`` shows the most recent outcomes, redacted (no email, no API key, no body);
``POST /test-event`` (off unless enabled, then behind a bearer token) runs one event through
decode, enrichment and mapping and, with ``?send=true``, sends it to Button: the CDPs' "test
event" button. What it runs is injected (``TestEventFn``), so this adapter knows no mapping.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.ports import Delivery

MAX_DELIVERIES_LIMIT = 1000
"""The most deliveries ``/deliveries?limit=`` lists at once."""

_DIGITS = re.compile(r"[0-9]{1,9}", re.ASCII)
"""A limit as written: ASCII digits only (``int()`` would also read ``+5``, ``1_0`` and other
scripts' digits), few enough to need no bound before ``int()``."""

TestEventFn = Callable[[str, bool], Awaitable[tuple[int, dict[str, Any]]]]
"""``(event JSON text, send?) -> (HTTP status, answer)`` for ``POST /test-event``."""


class DeliveryLog:
    """A bounded ring of recent deliveries."""

    def __init__(self, size: int) -> None:
        self._items: deque[Delivery] = deque(maxlen=max(size, 1))
        self._enabled = size > 0

    def add(self, delivery: Delivery) -> None:
        if self._enabled:
            self._items.append(delivery)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most recent deliveries, newest first (none for ``limit <= 0``)."""
        items = list(self._items)[-limit:] if limit > 0 else []  # [-0:] would be everything
        return [asdict(d) for d in reversed(items)]


@dataclass(slots=True)
class Health:
    """What the probes read; the worker updates it."""

    started: bool = False
    stopping: bool = False
    auth_paused: bool = False
    assigned: bool = False
    """The member is in its group: the group gave it an assignment (an empty one too: more
    members than partitions), and has not taken it away by a loss since (the member fenced,
    its session expired: it owns nothing and consumes nothing until the group takes it back)."""
    broker_reachable: bool = True
    """The last question to the brokers (every few seconds: the lag, or, owning no partition,
    the group's members) was answered."""
    restoring: int = 0
    """Partitions whose profiles are being restored from the changelog (their records wait)."""
    last_poll: float = 0.0
    poll_stall_seconds: float = 120.0

    def live(self, now: float) -> bool:
        return not self.started or (now - self.last_poll) < self.poll_stall_seconds

    def ready(self) -> bool:
        return (
            self.started
            and not self.stopping
            and not self.auth_paused
            and self.assigned
            and self.broker_reachable
            and self.restoring == 0
        )


class AdminServer:
    """Serves the admin endpoints on the event loop of the worker."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Health,
        deliveries: DeliveryLog,
        clock: Callable[[], float] = time.monotonic,
        test_event: TestEventFn | None = None,
        test_event_token: str | None = None,
    ) -> None:
        self._test_event = test_event if test_event_token else None
        self._token = (test_event_token or "").encode()
        self._host = host
        self._port = port
        self._registry = registry
        self._health = health
        self._deliveries = deliveries
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.port = port

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/deliveries", self._recent)
        app.router.add_post("/test-event", self._test_event_handler)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok = self._health.live(self._clock())
        return web.json_response({"live": ok}, status=200 if ok else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok = self._health.ready()
        h = self._health
        body = {
            "ready": ok,
            "auth_paused": h.auth_paused,
            "assigned": h.assigned,
            "broker_reachable": h.broker_reachable,
            "restoring": h.restoring,
        }
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        payload = generate_latest(self._registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _recent(self, request: web.Request) -> web.Response:
        """``?limit=N``: the N most recent deliveries, N a whole number from 0 to
        ``MAX_DELIVERIES_LIMIT`` in ASCII digits (default 50; 0 lists none); anything else
        (negative, too large, not digits, given twice) answers 400 naming the parameter."""
        given = request.query.getall("limit", ["50"])
        text = given[0] if len(given) == 1 else ""
        limit = int(text) if _DIGITS.fullmatch(text) else -1
        if not 0 <= limit <= MAX_DELIVERIES_LIMIT:
            return web.json_response(
                {
                    "error": f"limit must be a whole number from 0 to {MAX_DELIVERIES_LIMIT} "
                    "(default 50), given once"
                },
                status=400,
            )
        return web.json_response({"deliveries": self._deliveries.recent(limit)})

    async def _test_event_handler(self, request: web.Request) -> web.Response:
        if self._test_event is None:
            return web.json_response(
                {"error": "test events are disabled (ADMIN_TEST_EVENT_ENABLED)"}, status=404
            )
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not token:
            error = "a bearer token is required (ADMIN_TEST_EVENT_TOKEN)"
        elif not hmac.compare_digest(token.encode(), self._token):
            error = "the bearer token is not ADMIN_TEST_EVENT_TOKEN"
        else:
            error = ""
        if error:
            return web.json_response(
                {"error": error}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        send = request.query.get("send", "false").lower() in ("1", "true", "yes")
        status, body = await self._test_event(await request.text(), send)
        return web.json_response(body, status=status)
