"""The seam that moves the Button client's bytes: one request in, one whole response out.

The client's logic (building requests, classifying answers) is pure and tested without sockets;
only this seam does network I/O, and it is small enough to replace (httpx's and h11's split).
``AiohttpTransport`` is the production one: in the transport benchmark, plain aiohttp used
1.6-3.4x less CPU per request than httpx over the aiohttp transport, and 6-100x less than
httpx's default transport (``bench/README.md``). ``MockTransport`` answers from a function, so
tests need no sockets. A transport raises only ``TransportTimeoutError`` or
``TransportConnectionError``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import yarl

from consumer.errors import ConsumerError

__all__ = [
    "MAX_BODY_BYTES",
    "MESSAGE_LIMIT",
    "AiohttpTransport",
    "MockTransport",
    "Timeouts",
    "Transport",
    "TransportConnectionError",
    "TransportError",
    "TransportRequest",
    "TransportResponse",
    "TransportTimeoutError",
    "one_line",
]

MESSAGE_LIMIT = 256  # characters of Button's error.message or of a transport error
MAX_BODY_BYTES = 1 << 20  # Button's answers are small; a larger body is not Button's

_CONTROL = {code: " " for code in (*range(0x20), 0x7F)}


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The first ``limit`` characters of ``text``, control characters turned into spaces."""
    return text[:limit].translate(_CONTROL)


@dataclass(frozen=True, slots=True)
class TransportResponse:
    """What a transport read: the status, headers (looked up case-insensitively) and body.

    ``queued``: seconds from the request's hand-over to the transport until it was sent: the
    wait for a slot under the transport's concurrency cap (``Transport.set_concurrency``), and
    the hand-over to its thread (microseconds); 0.0 for a transport without a cap.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    truncated: bool = False  # the body was longer than the transport's limit and was cut
    queued: float = 0.0


class TransportError(ConsumerError):
    """A request got no HTTP response. Raised by transports, caught by ``ButtonClient``.

    ``queued``: as ``TransportResponse.queued``, the seconds it waited for a slot first.
    """

    queued: float = 0.0


class TransportTimeoutError(TransportError):
    """The connect, read or total timeout expired."""


class TransportConnectionError(TransportError):
    """Refused, reset, DNS failure, TLS failure, a malformed or truncated response."""


@dataclass(frozen=True, slots=True)
class TransportRequest:
    """What the client asks a transport to send. ``headers`` hold the credentials: no repr.

    ``url`` is already percent-encoded; a transport sends it as is, without normalising it.
    ``priority``: sent at once, ahead of the requests waiting under a concurrency cap and
    whatever holds them (a gate's probe, an operator's test: requests no permit covers).
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes | None = None
    priority: bool = False


class Transport(Protocol):
    """Moves one request and reads its whole response; raises only ``TransportError``s."""

    async def send(self, request: TransportRequest) -> TransportResponse: ...

    def set_concurrency(self, limit: int | None) -> bool:
        """Cap the requests in flight at ``limit`` (``None``: no cap), the others waiting in the
        transport in order. Returns ``False`` when the transport cannot: the caller must then
        bound its requests itself."""
        ...

    def hold(self, held: bool) -> bool:
        """Hold the requests waiting under the cap (``True``) or let them go (``False``).
        Returns ``False`` when the transport keeps no waiting requests (no cap)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Explicit limits, in seconds: TCP/TLS connect, gap between reads, whole request."""

    connect: float = 5.0
    read: float = 15.0
    total: float = 20.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} timeout must be a positive number of seconds")


class AiohttpTransport:
    """The production transport: one ``aiohttp.ClientSession`` and its pool, made lazily.

    The session is created on the first request, inside the running event loop (aiohttp binds it
    to the loop), so constructing the transport does no I/O. Redirects are not followed (they
    would carry the credentials elsewhere) and cookies are not kept.
    """

    __slots__ = ("_closed", "_max_body_bytes", "_max_connections", "_session", "_timeouts")

    def __init__(
        self,
        *,
        timeouts: Timeouts = Timeouts(),
        max_connections: int = 100,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections}, {self._timeouts})"

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=self._timeouts.total,
                sock_connect=self._timeouts.connect,
                sock_read=self._timeouts.read,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        return self._session

    async def send(self, request: TransportRequest) -> TransportResponse:
        session = self._session or self._open()
        try:
            async with session.request(
                request.method,
                # encoded=True: sent as given. Otherwise yarl would decode %2E%2E and drop it
                # with the segment before it, turning /v1/order/%2E%2E into /v1/.
                yarl.URL(request.url, encoded=True),
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
            ) as response:
                body, truncated = await self._read(response)
                return TransportResponse(response.status, response.headers, body, truncated)
        except aiohttp.ConnectionTimeoutError:
            raise TransportTimeoutError("connect timeout") from None
        except aiohttp.SocketTimeoutError:
            raise TransportTimeoutError("read timeout") from None
        except TimeoutError:
            raise TransportTimeoutError("total timeout") from None
        except (aiohttp.ClientError, OSError) as exc:
            # ``from None``: aiohttp's exceptions can carry the request, headers included.
            raise TransportConnectionError(one_line(f"{type(exc).__name__}: {exc}")) from None

    def set_concurrency(self, limit: int | None) -> bool:
        """Not supported: the caller bounds its requests (``Transport.set_concurrency``)."""
        return False

    def hold(self, held: bool) -> bool:
        """Nothing waits here to hold (``Transport.hold``)."""
        return False

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        limit = self._max_body_bytes
        length = response.content_length
        if length is not None and length <= limit:
            return await response.read(), False
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await response.content.read(limit + 1 - size)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[:limit], True

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


Handler = Callable[[TransportRequest], TransportResponse | Awaitable[TransportResponse]]


class MockTransport:
    """A transport that answers from a function (sync or async), for tests without sockets.

    The handler may raise ``TransportTimeoutError`` or ``TransportConnectionError`` to stand for
    network failures.
    """

    __slots__ = ("_handler", "closed")

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.closed = False

    async def send(self, request: TransportRequest) -> TransportResponse:
        answer = self._handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    def set_concurrency(self, limit: int | None) -> bool:
        """Not supported: the caller bounds its requests (``Transport.set_concurrency``)."""
        return False

    def hold(self, held: bool) -> bool:
        """Nothing waits here to hold (``Transport.hold``)."""
        return False

    async def aclose(self) -> None:
        self.closed = True
