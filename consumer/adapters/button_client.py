"""The HTTP client for Button's Order API: every call ends in a typed ``ButtonOutcome``.

Why it exists: the dispatcher must know *how* a call ended (accepted, duplicate, rejected, rate
limited, down, unreachable...) to apply the failure policy, and must never be surprised by an
exception from a network library. So the client only tells: it never raises for anything the
server or the network does, never retries, never logs, and never puts the API key in a repr, a
message or an exception.

Layers, from pure to I/O (httpx's and h11's split, applied here):

- ``classify``, ``parse_retry_after``, ``excerpt``: pure functions from a raw response to an
  outcome; most unit tests target them.
- ``Transport`` (in ``http_transport``): the seam that moves bytes; in production
  ``CurlTransport`` (libcurl, ``curl_transport``) or ``AiohttpTransport``, as
  ``BUTTON_HTTP_CLIENT`` says; ``MockTransport`` in tests.
- ``ButtonClient``: builds requests (Basic auth, version header, User-Agent, JSON body), times
  them and classifies the answers. One per process: it owns one connection pool.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import platform
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, get_args
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from consumer import __version__
from consumer.adapters.curl_transport import CurlTransport, curl_version
from consumer.adapters.http_transport import (
    AiohttpTransport,
    Timeouts,
    Transport,
    TransportConnectionError,
    TransportError,
    TransportRequest,
    TransportResponse,
    TransportTimeoutError,
    one_line,
)
from consumer.domain.button import ButtonRequest
from consumer.domain.button_wire import cancel_request, create_request, order_path, update_request
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.errors import ConfigError
from consumer.settings import ButtonSettings, HttpClient

__all__ = [
    "DEFAULT_API_VERSION",
    "DEFAULT_BASE_URL",
    "EXCERPT_LIMIT",
    "HTTP_CLIENTS",
    "ButtonClient",
    "basic_authorization",
    "classify",
    "default_user_agent",
    "excerpt",
    "parse_http_date",
    "parse_retry_after",
]

DEFAULT_BASE_URL = "https://api.usebutton.com"
HTTP_CLIENTS: tuple[HttpClient, ...] = get_args(HttpClient)  # the first is the default
DEFAULT_API_VERSION = "2018-02-13"  # the latest version Button documents
EXCERPT_LIMIT = 256  # characters of a response body kept for dead-letter headers

_DEFAULT_TIMEOUTS = Timeouts()
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
# An absolute path of RFC 3986 characters, percent-encoded: it is sent byte for byte.
_ENCODED_PATH = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_STATUS_KINDS = {
    400: OutcomeKind.INVALID,
    401: OutcomeKind.UNAUTHORIZED,
    403: OutcomeKind.FORBIDDEN,
    404: OutcomeKind.NOT_FOUND,
    409: OutcomeKind.CONFLICT,
    429: OutcomeKind.RATE_LIMITED,
}


# --------------------------------------------------------------------------------------------
# Pure part: raw response -> outcome


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` when absent or unreadable.

    Args:
        value: the header, either delta-seconds (``"120"``) or an HTTP-date
            (``"Wed, 21 Oct 2015 07:28:00 GMT"``; RFC 850 and asctime forms are read too).
        now: the current wall-clock time in seconds since the epoch (injected, for tests).

    Returns:
        A non-negative number of seconds; a date in the past gives ``0.0``.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime carries no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def excerpt(body: bytes, limit: int = EXCERPT_LIMIT) -> str:
    """A short, single-line prefix of a response body, for dead-letter headers and logs."""
    return one_line(body[: limit * 4].decode("utf-8", "replace"), limit)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


def _error_message(document: Any) -> str:
    """Button's ``error.message`` from an error envelope, or ``""``."""
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str):
                return one_line(message)
    return ""


def _meta_status(document: Any) -> object:
    if isinstance(document, dict):
        meta = document.get("meta")
        if isinstance(meta, dict):
            return meta.get("status")
    return None


def classify(response: TransportResponse, *, now: float, elapsed: float = 0.0) -> ButtonOutcome:
    """Turn one HTTP response into an outcome. Pure; never raises.

    Success is any 2xx whose body is Button's envelope with ``meta.status == "ok"``; a 202 or 204
    with an empty body is success too (Button documents 202 without saying what it carries). Other
    statuses are classified by code, whatever their body, so an HTML 502 from a load balancer is
    still a server error; Button's ``error.message`` is kept when present.
    """
    status = response.status
    body = response.body
    if 200 <= status < 300:
        return _classify_success(response, elapsed)
    if status < 400:
        return _unreadable(response, elapsed, f"unexpected HTTP {status}")
    kind = _STATUS_KINDS.get(status)
    if kind is None:
        kind = OutcomeKind.SERVER_ERROR if status >= 500 else OutcomeKind.CLIENT_ERROR
    # An HTTP-date Retry-After is read against the server's own Date when it sends one, so a
    # skewed local clock neither inflates nor erases it (the policy caps it as well).
    server_now = parse_http_date(_header(response.headers, "Date"))
    retry_after = parse_retry_after(
        _header(response.headers, "Retry-After"), now if server_now is None else server_now
    )
    document = _json(body)
    return ButtonOutcome(
        kind,
        status,
        message=_error_message(document) or f"HTTP {status}",
        excerpt=excerpt(body),
        retry_after=retry_after,
        elapsed=elapsed,
        from_button=_is_error_envelope(document),
        queued=response.queued,
    )


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an HTTP-date header (``Date``), or ``None``."""
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _is_error_envelope(document: Any) -> bool:
    """Button's error envelope: ``{"meta": {"status": "error"}, "error": {...}}``."""
    return (
        _meta_status(document) == "error"
        and isinstance(document, dict)
        and isinstance(document.get("error"), dict)
    )


def _classify_success(response: TransportResponse, elapsed: float) -> ButtonOutcome:
    status = response.status
    if not response.body and status in (202, 204):
        return ButtonOutcome(OutcomeKind.SUCCESS, status, elapsed=elapsed, queued=response.queued)
    if response.truncated:
        return _unreadable(response, elapsed, f"body longer than {len(response.body)} bytes")
    document = _json(response.body)
    meta_status = _meta_status(document)
    if meta_status == "ok":
        obj = document.get("object")
        return ButtonOutcome(
            OutcomeKind.SUCCESS,
            status,
            elapsed=elapsed,
            object=obj if isinstance(obj, dict) else None,
            from_button=True,
            queued=response.queued,
        )
    if document is None:
        return _unreadable(response, elapsed, "body is not JSON")
    if meta_status == "error":
        detail = _error_message(document) or "no message"
        return _unreadable(response, elapsed, f"meta.status is error: {detail}")
    return _unreadable(response, elapsed, "body is not Button's envelope (meta.status)")


def _unreadable(response: TransportResponse, elapsed: float, message: str) -> ButtonOutcome:
    return ButtonOutcome(
        OutcomeKind.UNREADABLE,
        response.status,
        message=message,
        excerpt=excerpt(response.body),
        elapsed=elapsed,
        queued=response.queued,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive look-up: direct for aiohttp's headers, by scanning for a plain dict."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


# --------------------------------------------------------------------------------------------
# The client


def basic_authorization(api_key: str) -> str:
    """Button's Basic auth: the API key is the user name and the password is empty."""
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode("ascii")


def default_user_agent(http_client: HttpClient = "curl") -> str:
    """``button-consumer/<version> python/<version>`` and the HTTP library that sends it."""
    library = curl_version() if http_client == "curl" else f"aiohttp/{aiohttp.__version__}"
    return f"button-consumer/{__version__} python/{platform.python_version()} {library}"


def _transport(http_client: HttpClient, timeouts: Timeouts, max_connections: int) -> Transport:
    if http_client == "aiohttp":
        return AiohttpTransport(timeouts=timeouts, max_connections=max_connections)
    return CurlTransport(timeouts=timeouts, max_connections=max_connections)


class _Headers(dict[str, str]):
    """Request headers whose repr hides the credentials."""

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.items()}
        return repr(shown)


class ButtonClient:
    """Button's Order API over one pooled HTTP client; every call returns a ``ButtonOutcome``.

    Build one per process in the composition root and close it on shutdown (``aclose()`` or
    ``async with``). The constructor does no I/O. Example::

        async with ButtonClient("sk-...", base_url="http://127.0.0.1:8089") as button:
            outcome = await button.create({"order_id": "ORD-1", "total": 5998, ...})
            if outcome.kind is OutcomeKind.CONFLICT: ...

    Args:
        api_key: Button API key (``str`` or pydantic ``SecretStr``); sent as the Basic auth user.
        base_url: scheme, host and optional path prefix; HTTPS by default. No credentials in it.
        api_version: value of ``X-Button-API-Version``; ``None`` leaves the header out (Button
            then uses the version the organisation is pinned to).
        timeouts: connect, read and total limits for the default transport.
        max_connections: size of the default transport's connection pool.
        http_client: the default transport: ``"curl"`` (``CurlTransport``, libcurl in a thread
            of its own) or ``"aiohttp"`` (``AiohttpTransport``); ``ValueError`` otherwise.
        transport: replaces the default transport (tests pass ``MockTransport``).
        clock: wall-clock seconds since the epoch, to turn a ``Retry-After`` date into seconds.
        timer: a monotonic clock, to measure each attempt's ``elapsed``.
        user_agent: replaces ``button-consumer/<version> python/<v> libcurl/<v>`` (or
            ``aiohttp/<v>``).
    """

    __slots__ = (
        "_base_url",
        "_clock",
        "_closed",
        "_headers_bare",
        "_headers_json",
        "_secret_bytes",
        "_secrets",
        "_timer",
        "_transport",
        "api_version",
    )

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str | None = DEFAULT_API_VERSION,
        timeouts: Timeouts = _DEFAULT_TIMEOUTS,
        max_connections: int = 100,
        http_client: HttpClient = "curl",
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
        user_agent: str | None = None,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        _check_api_key(key)
        if http_client not in HTTP_CLIENTS:
            choices = ", ".join(HTTP_CLIENTS)
            raise ValueError(f"http_client must be one of {choices}: {http_client!r}")
        self._base_url = _check_base_url(base_url)
        if api_version is not None and not _API_VERSION.fullmatch(api_version):
            raise ValueError(f"api_version must be a date YYYY-MM-DD: {api_version!r}")
        self.api_version = api_version
        authorization = basic_authorization(key)
        # Redacted from transport messages and excerpts, should anything ever echo them.
        self._secrets = (key, authorization.removeprefix("Basic "))
        self._secret_bytes = tuple(secret.encode() for secret in self._secrets)
        bare = _Headers(
            {
                "Authorization": authorization,
                "User-Agent": user_agent or default_user_agent(http_client),
                "Accept": "application/json",
            }
        )
        if api_version is not None:
            bare["X-Button-API-Version"] = api_version
        self._headers_bare = bare
        self._headers_json = _Headers(bare, **{"Content-Type": "application/json"})
        self._transport: Transport = transport or _transport(http_client, timeouts, max_connections)
        self._clock = clock
        self._timer = timer
        self._closed = False

    @classmethod
    def from_settings(cls, settings: ButtonSettings, **overrides: Any) -> ButtonClient:
        """Build from the ``BUTTON_*`` settings; ``overrides`` go to the constructor."""
        if settings.api_key is None:
            raise ConfigError("BUTTON_API_KEY is required to call Button")
        arguments: dict[str, Any] = {
            "base_url": settings.base_url,
            "api_version": settings.api_version,
            "timeouts": Timeouts(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                total=settings.total_timeout,
            ),
            "max_connections": settings.max_connections,
            "http_client": settings.http_client,
        }
        arguments.update(overrides)
        return cls(settings.api_key, **arguments)

    def __repr__(self) -> str:
        return (
            f"ButtonClient(base_url={self._base_url!r}, api_version={self.api_version!r},"
            f" transport={self._transport!r})"
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent; later calls to ``send`` raise."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    async def send(self, request: ButtonRequest, *, priority: bool = False) -> ButtonOutcome:
        """Send one request to Button and tell how it ended. Never raises for HTTP or network.

        ``request.path`` is sent byte for byte, so it must already be percent-encoded (the
        mapper builds it with ``consumer.domain.button_wire.order_path``). ``priority``: a
        request no concurrency permit covers (an operator's test event), sent at once, ahead of
        those waiting under the transport's cap and whatever holds them.

        Raises only for programming errors: a closed client, a path that is not absolute and
        percent-encoded, a body that is not JSON-serialisable (NaN and Infinity included).
        """
        return await self._call(request.method, request.path, request.body, priority)

    async def create(self, order: Mapping[str, Any]) -> ButtonOutcome:
        """``POST /v1/order``: report a new order (``order["order_id"]`` names it)."""
        return await self.send(create_request(str(order.get("order_id", "")), order))

    async def update(self, order_id: str, order: Mapping[str, Any]) -> ButtonOutcome:
        """``POST /v1/order/{order_id}``: the new full state of the order."""
        return await self.send(update_request(order_id, order))

    async def cancel(self, order_id: str) -> ButtonOutcome:
        """``DELETE /v1/order/{order_id}``: the whole order was cancelled or refunded."""
        return await self.send(cancel_request(order_id))

    async def get(self, order_id: str) -> ButtonOutcome:
        """``GET /v1/order/{order_id}``: the order as Button holds it (in ``outcome.object``).

        Sent with priority (``send``): the gates probe with it while they hold everything else,
        and the pipeline reads an order after an update's 404 with it (after waiting at the
        gates itself), without a concurrency permit.
        """
        # Not a ButtonRequest: reading an order is not something the mapper ever decides.
        return await self._call("GET", order_path(order_id), None, True)

    async def _call(
        self, method: str, path: str, payload: Mapping[str, Any] | None, priority: bool = False
    ) -> ButtonOutcome:
        if self._closed:
            raise RuntimeError("the Button client is closed")
        if not _ENCODED_PATH.fullmatch(path):
            raise ValueError(f"path must be absolute and percent-encoded: {path[:300]!r}")
        if payload is None:
            body, headers = None, self._headers_bare
        else:
            # allow_nan=False: NaN and Infinity are not JSON; Button would reject the body.
            body = json.dumps(
                payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode()
            headers = self._headers_json
        request = TransportRequest(method, self._base_url + path, headers, body, priority)
        started = self._timer()
        try:
            response = await self._transport.send(request)
        except TransportTimeoutError as exc:
            return self._failed(OutcomeKind.TIMEOUT, exc, started)
        except TransportConnectionError as exc:
            return self._failed(OutcomeKind.CONNECTION_ERROR, exc, started)
        elapsed = max(0.0, self._timer() - started - response.queued)
        outcome = classify(response, now=self._clock(), elapsed=elapsed)
        if outcome.excerpt and any(secret in response.body for secret in self._secret_bytes):
            # Something echoed the credentials (a misbehaving proxy?): keep none of the body.
            return _with_text(outcome, message=self._redact(outcome.message), excerpt="<redacted>")
        return outcome

    def _failed(self, kind: OutcomeKind, exc: TransportError, started: float) -> ButtonOutcome:
        message = self._redact(str(exc)) or kind.value
        elapsed = max(0.0, self._timer() - started - exc.queued)
        return ButtonOutcome(kind, message=message, elapsed=elapsed, queued=exc.queued)

    def set_concurrency(self, limit: int | None) -> bool:
        """Have the transport send at most ``limit`` requests at once (``None``: no cap), the
        others waiting in it in order (``Transport.set_concurrency``). Returns ``False`` when
        the transport cannot (aiohttp's): the caller must bound its requests itself."""
        return self._transport.set_concurrency(limit)

    def hold(self, held: bool) -> bool:
        """Hold the requests waiting under the transport's cap while ``held`` (the caller's
        gates are closed), so that none of them is sent meanwhile (``Transport.hold``)."""
        return self._transport.hold(held)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def _with_text(outcome: ButtonOutcome, *, message: str, excerpt: str) -> ButtonOutcome:
    return dataclasses.replace(outcome, message=message, excerpt=excerpt)


def _check_api_key(key: str) -> None:
    # The message never contains the key itself.
    if not key or key != key.strip():
        raise ValueError("the Button API key is empty or has surrounding whitespace")
    if ":" in key or any(ord(c) < 0x21 or ord(c) == 0x7F for c in key):
        raise ValueError("the Button API key contains ':' or control characters")


def _check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if "@" in parts.netloc:
        raise ValueError("base_url must not carry credentials; pass the API key as api_key")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL with a host: {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query or a fragment")
    return base_url.rstrip("/")
