"""An HTTPS reverse proxy for tests: what a merchant puts in front of a plain HTTP server.

A registry behind an ingress that terminates TLS with a private CA's certificate and checks
HTTP basic auth, or Button reached through a corporate TLS-intercepting proxy, look the same to
the service: an ``https://`` URL whose certificate only a private CA vouches for. ``TlsProxy``
serves HTTPS on a free loopback port with a given certificate (``chain_path``: certificate and
key, PEM) and forwards every request, method, path, query, headers and body, to ``upstream``
(a plain ``http://`` base URL), then the answer back. With ``basic_auth`` (``user:password``)
a request without exactly those credentials is answered 401 and not forwarded.

It runs its own event loop in a daemon thread; ``requests`` counts the requests it received
(forwarded or refused), so a test can tell a TLS failure (no request) from an HTTP one.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web

from consumer.devtools._proc import free_port

__all__ = ["TlsProxy"]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "upgrade"}
)


class TlsProxy:
    """HTTPS on ``127.0.0.1:<port>`` in front of ``upstream`` (see the module docstring)."""

    def __init__(self, upstream: str, chain_path: Path, *, basic_auth: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.chain_path = chain_path
        self.basic_auth = basic_auth
        self.port = free_port()
        self.requests = 0
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    def url(self, host: str) -> str:
        """The proxy's base URL under another host name (``localhost``)."""
        return f"https://{host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.chain_path)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
            if request.headers.get("Authorization") != expected:
                self.refused += 1
                return web.json_response(
                    {"error_code": 401, "message": "Unauthorized"},
                    status=401,
                    headers={"WWW-Authenticate": 'Basic realm="registry"'},
                )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=answer.status, headers=out, body=body)
