"""The Button client's default transport: libcurl (pycurl), driven from a thread of its own.

Why: on the forward path the HTTP client was the largest part of the event loop's work (a
quarter of its samples with aiohttp, and asyncio's machinery around it). Here the event loop
only hands a request over and takes the finished response back; connecting, writing, reading
and parsing HTTP/1.1 happen in libcurl, in C, without the GIL, on another thread. Measured side
by side (``bench/README.md``, "The HTTP transport"), the Button client on this transport used
about half of aiohttp's CPU per request at 64 in flight, and the service forwarded more orders
with less CPU. ``AiohttpTransport`` stays available (``BUTTON_HTTP_CLIENT=aiohttp``).

How: one daemon thread owns a libcurl multi handle (its connection pool and DNS cache) and
drives it with ``curl_multi_socket_action`` over a ``selectors`` selector. The selector also
watches one end of a socket pair, which the event loop writes to when it hands a request over
(at most one byte per batch of requests). Finished responses go back to their event loop in
batches, with ``loop.call_soon_threadsafe``.

The contract is ``AiohttpTransport``'s:

- only ``TransportTimeoutError`` (``connect timeout``, ``read timeout``, ``total timeout``) or
  ``TransportConnectionError`` (refused, reset, DNS, TLS, a malformed or truncated response)
  is raised for a request that got no response;
- ``connect`` bounds connecting (TCP and TLS), ``read`` the time without a byte arriving on
  the connection once the request is sent (checked about every ``read / 10`` seconds, within
  10 ms to 1 s), ``total`` the whole request;
- a request is sent at most once: libcurl's own resend, when a reused connection closes before
  any answer, is refused (``PREREQFUNCTION``) and the request ends as a connection error, as on
  aiohttp, so the failure policy (not the transport) decides whether to send it again;
- at most ``max_body_bytes`` of a body are read: a longer one ends the transfer and is returned
  cut, with ``truncated=True``;
- redirects are not followed, cookies are not kept, proxies named in the environment are not
  used (as aiohttp without ``trust_env``), and the URL is sent as given (``PATH_AS_IS``);
- HTTP/1.1 over a pool of at most ``max_connections`` connections, kept alive (a request
  waiting for a free connection counts toward its connect limit, as libcurl counts it); TLS verified
  against the certificates Python's ``ssl`` module trusts (``ssl.get_default_verify_paths``,
  which honours ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``), the store aiohttp uses too;
- ``set_concurrency(n)`` caps the requests in flight at ``n``: the others wait in order, and
  the thread starts the next one as soon as one ends, without a round trip through the event
  loop. The time from ``send`` to the thread sending it (the wait for a slot, and the hand-over
  to the thread) is reported as ``TransportResponse.queued`` (and ``TransportError.queued``)
  and is not counted in any timeout; a request waits at most as long as the ones ahead of it
  take. A waiting request does not start while ``hold(True)`` holds them (the caller's gates
  are closed), nor while an answer that is not a 2xx, or a failure, has not yet been handed
  to its caller on the event loop: the caller decides first whether the others may go. A
  ``priority`` request (a gate's probe, an operator's test) skips the wait: it is sent at once,
  whatever the cap or a hold;
- a request whose caller is cancelled is removed from libcurl (its connection closed), or from
  the waiting ones;
- a request libcurl cannot take (a character it refuses in the URL or a header) fails alone;
- ``aclose`` fails the requests still waiting (``TransportConnectionError``) and stops the
  thread. Should the thread ever stop on an unexpected error, the requests it was carrying fail
  the same way, and a new thread takes the ones still waiting to be handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

import pycurl
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from consumer.adapters.http_transport import (
    MAX_BODY_BYTES,
    Timeouts,
    TransportConnectionError,
    TransportError,
    TransportRequest,
    TransportResponse,
    TransportTimeoutError,
    one_line,
)

__all__ = ["CurlTransport", "curl_version", "parse_response_head"]

log = structlog.get_logger("consumer.http")

_BODYLESS: Final = frozenset({"GET", "HEAD", "DELETE"})
_READ_CHECKS: Final = 10  # read-timeout checks per read timeout
_CLOSED: Final = "the transport is closed"
_DEFAULT_TIMEOUTS: Final = Timeouts()


def curl_version() -> str:
    """``libcurl/<version>``, for the User-Agent."""
    return f"libcurl/{pycurl.version_info()[1]}"


def parse_response_head(lines: list[bytes]) -> CIMultiDictProxy[str]:
    """The headers of the final response, from the raw header lines libcurl handed over.

    ``lines`` hold every status and header line as received, CRLF included, of every response
    to the request (a ``100 Continue`` comes before the final one): only the lines after the
    last status line count. Names and values are decoded as ISO-8859-1 (RFC 9110, 5.5) and
    stripped; a folded continuation line (RFC 9112, 5.2) is appended to the value before it.
    """
    start = 0
    for index, line in enumerate(lines):
        if line.startswith(b"HTTP/"):
            start = index + 1
    headers: CIMultiDict[str] = CIMultiDict()
    last: str | None = None
    for raw in lines[start:]:
        text = raw.decode("latin-1").rstrip("\r\n")
        if not text:
            continue
        if text[0] in " \t" and last is not None:
            values = headers.popall(last)
            for earlier in values[:-1]:
                headers.add(last, earlier)
            headers.add(last, f"{values[-1]} {text.strip()}")
            continue
        name, separator, value = text.partition(":")
        if separator:
            last = name.strip()
            headers.add(last, value.strip())
    return CIMultiDictProxy(headers)


class _Transfer:
    """One request on its way: written by the loop once, then owned by the curl thread."""

    __slots__ = (
        "chunks",
        "curl",
        "enqueued",
        "future",
        "head",
        "limit",
        "loop",
        "queued",
        "request",
        "sends",
        "size",
        "started",
        "truncated",
        "withdrawn",
    )

    def __init__(
        self,
        request: TransportRequest,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[TransportResponse],
        limit: int,
    ) -> None:
        self.request = request
        self.loop = loop
        self.future = future
        self.limit = limit
        self.curl: pycurl.Curl | None = None
        self.head: list[bytes] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.sends = 0
        self.truncated = False
        self.withdrawn = False  # the caller was cancelled: drop it
        self.enqueued = time.monotonic()  # handed over (on the loop's thread)
        self.started = 0.0  # taken by the curl thread (and sent)
        self.queued = 0.0  # seconds between the two: waiting for a slot (set_concurrency)

    def prereq(self, *_: object) -> int:
        """libcurl's PREREQFUNCTION, called each time the request is about to go out on a
        connection: the first time it goes; again (libcurl resending it on a new connection
        after a reused one closed unanswered) it is refused, so it is never sent twice."""
        self.sends += 1
        return pycurl.PREREQFUNC_OK if self.sends == 1 else pycurl.PREREQFUNC_ABORT

    def write(self, data: bytes) -> int | None:
        """libcurl's WRITEFUNCTION: keep at most ``limit`` bytes of the body.

        Returns 0 (libcurl then ends the transfer with ``CURLE_WRITE_ERROR``) once the body is
        longer than the limit; ``None`` takes the whole chunk.
        """
        room = self.limit - self.size
        if len(data) > room:
            self.chunks.append(data[:room])
            self.size = self.limit
            self.truncated = True
            return 0
        self.chunks.append(data)
        self.size += len(data)
        return None


Outcome = TransportResponse | TransportError
Finished = list[tuple[_Transfer, Outcome]]


class CurlTransport:
    """The production transport: libcurl's multi interface in a thread of its own.

    Construct it anywhere: the thread, its socket pair and the libcurl handles are created on
    the first request. Use it from one event loop at a time (each request is answered on the
    loop that sent it). See the module docstring for the contract.
    """

    __slots__ = (
        "_cancels",
        "_closed",
        "_concurrency",
        "_digested",
        "_failures",
        "_held",
        "_inbox",
        "_lock",
        "_max_body_bytes",
        "_max_connections",
        "_priority",
        "_reader",
        "_stop",
        "_thread",
        "_timeouts",
        "_woken",
        "_writer",
    )

    def __init__(
        self,
        *,
        timeouts: Timeouts = _DEFAULT_TIMEOUTS,
        max_connections: int = 100,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._timeouts = timeouts
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._inbox: deque[_Transfer] = deque()
        self._priority: deque[_Transfer] = deque()  # sent at once, whatever the cap or a hold
        self._cancels: deque[_Transfer] = deque()
        # Guards _inbox against a thread that ends, _thread and _closed: a request handed over
        # is always taken by a running thread, or failed as closed.
        self._lock = threading.Lock()
        self._woken = False
        self._closed = False
        self._stop = False
        # Requests in flight at most (None: only the pool's size bounds them). Written by the
        # loop's thread, read by the curl thread: an int, so each read sees a whole value.
        self._concurrency: int | None = None
        self._held = False  # hold(True): the caller's gates are closed (written by the loop)
        # Answers that are not a 2xx (or failures) of capped requests: handed back by the curl
        # thread (it writes _failures) and seen by their callers (the loop writes _digested).
        # A waiting request starts only when the two are equal.
        self._failures = 0
        self._digested = 0
        self._thread: threading.Thread | None = None
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None

    def __repr__(self) -> str:
        return f"CurlTransport(max_connections={self._max_connections}, {self._timeouts})"

    # -- the event loop's side --------------------------------------------------------------

    async def send(self, request: TransportRequest) -> TransportResponse:
        loop = asyncio.get_running_loop()
        transfer = _Transfer(request, loop, loop.create_future(), self._max_body_bytes)
        with self._lock:
            if self._closed:
                raise RuntimeError(_CLOSED)
            (self._priority if request.priority else self._inbox).append(transfer)
            if self._thread is None:
                self._start()
        self._wake()
        try:
            return await transfer.future
        except asyncio.CancelledError:
            transfer.withdrawn = True
            self._cancels.append(transfer)
            self._wake()
            raise

    def set_concurrency(self, limit: int | None) -> bool:
        """Send at most ``limit`` requests at once (``None``: no cap but the pool's size); the
        others wait in the order they came, and the next starts on this transport's thread as
        soon as one ends. A lower cap ends no request in flight: it holds the next ones until
        fewer than ``limit`` are. Call it from the event loop's thread. Returns ``True``: this
        transport enforces the cap (``Transport.set_concurrency``).

        Raises:
            ValueError: ``limit`` is below 1.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"the concurrency cap must be at least 1: {limit}")
        raised = limit is None or self._concurrency is None or limit > self._concurrency
        self._concurrency = limit
        if raised and self._inbox:
            self._wake()  # requests waiting for a slot may start now
        return True

    def hold(self, held: bool) -> bool:
        """Hold the requests waiting for a slot (``True``), or let them go again (``False``):
        for callers whose gates close (Button refuses the key, or asks to slow down), so that
        what already waits here is not sent meanwhile. ``priority`` requests are never held.
        Call it from the event loop's thread. Returns ``True`` (``Transport.hold``)."""
        self._held = held
        if not held and self._inbox:
            self._wake()
        return True

    def _digest(self, failures: int) -> None:
        """On the loop, once the callers of ``failures`` such answers have seen them."""
        self._digested += failures
        if self._inbox and not self._held:
            self._wake()

    async def aclose(self) -> None:
        """Fail what is still waiting, stop the thread and close its sockets. Idempotent."""
        with self._lock:
            self._closed = True
            self._stop = True
            thread = self._thread
        if thread is not None:
            self._wake()
            await asyncio.to_thread(thread.join)
        for end in (self._reader, self._writer):
            if end is not None:
                end.close()
        self._reader = self._writer = None

    def _wake(self) -> None:
        # The thread clears the flag before it drains the inbox, so an append made after its
        # drain always finds the flag clear and writes a byte.
        if not self._woken:
            self._woken = True
            writer = self._writer
            if writer is not None:  # None once closed
                with contextlib.suppress(OSError):  # full (a byte is waiting anyway), or closed
                    writer.send(b"\0")

    def _start(self) -> None:
        """Start a thread (under ``_lock``); it takes what waits in the inbox at once."""
        if self._writer is None:
            self._reader, self._writer = socket.socketpair()
            self._reader.setblocking(False)
            self._writer.setblocking(False)
        self._woken = False
        self._thread = threading.Thread(target=self._serve, name="button-http", daemon=True)
        self._thread.start()

    # -- the curl thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        driver: _Driver | None = None
        try:
            driver = _Driver(self)
            driver.run()
        except BaseException as exc:  # noqa: BLE001 - no request may wait for a dead thread
            error = one_line(f"{type(exc).__name__}: {exc}")
            log.error("http_thread_failed", error=error)
            if driver is not None:
                driver.fail_running(f"the HTTP thread failed: {error}")
            with self._lock:
                self._thread = None
                if (self._inbox or self._priority) and not self._closed:
                    self._start()  # a new thread takes the requests still waiting
        else:
            with self._lock:  # closed: nothing is added to the inbox any more
                waiting = [*self._priority, *self._inbox]
                self._priority.clear()
                self._inbox.clear()
            driver.fail_running(_CLOSED, waiting)
        finally:
            if driver is not None:
                driver.close()


class _Driver:
    """The curl thread's state: the multi handle, its sockets and timer, the transfers."""

    def __init__(self, transport: CurlTransport) -> None:
        self.transport = transport
        self.timeouts = transport._timeouts
        self.read_check = min(max(self.timeouts.read / _READ_CHECKS, 0.01), 1.0)
        self.selector = selectors.DefaultSelector()
        self.watched: dict[int, int] = {}
        self.arrived: dict[int, float] = {}  # socket -> when bytes last arrived on it
        self.curl_due: float | None = None
        self.next_read_check = 0.0
        self.running: dict[pycurl.Curl, _Transfer] = {}
        self.idle: list[pycurl.Curl] = []
        self.finished: dict[asyncio.AbstractEventLoop, Finished] = {}
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self.multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, transport._max_connections)
        self.multi.setopt(pycurl.M_MAXCONNECTS, transport._max_connections)
        verify = ssl.get_default_verify_paths()
        self.cafile = verify.cafile if verify.cafile and os.path.isfile(verify.cafile) else None
        self.capath = verify.capath if verify.capath and os.path.isdir(verify.capath) else None
        assert transport._reader is not None
        self.wake = transport._reader
        self.selector.register(self.wake, selectors.EVENT_READ, None)

    def run(self) -> None:
        transport = self.transport
        self._take_inbox()  # a thread started after another failed has requests waiting
        while not transport._stop:
            ready = self.selector.select(self._timeout())
            now = time.monotonic()
            for key, mask in ready:
                if key.data is None:
                    self._drain_wake()
                    continue
                flags = 0
                if mask & selectors.EVENT_READ:
                    flags |= pycurl.CSELECT_IN
                    self.arrived[key.fd] = now
                if mask & selectors.EVENT_WRITE:
                    flags |= pycurl.CSELECT_OUT
                self.multi.socket_action(key.fd, flags)
            self._take_cancels()
            self._take_inbox()
            now = time.monotonic()
            if self.curl_due is not None and now >= self.curl_due:
                self.curl_due = None
                self.multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
            if self.running and now >= self.next_read_check:
                self._check_reads(now)
            self._collect()
            if self.transport._inbox or self.transport._priority:
                # Slots that just freed take the requests waiting for one, here and now (libcurl
                # starts them at the next pass, its timer set to 0 by ``add_handle``).
                self._take_inbox()
            self._hand_back()

    # libcurl's callbacks

    def _on_socket(self, what: int, fd: int, _multi: object, _socketp: object) -> None:
        events = (selectors.EVENT_READ if what & pycurl.POLL_IN else 0) | (
            selectors.EVENT_WRITE if what & pycurl.POLL_OUT else 0
        )
        if not events:  # POLL_REMOVE, or POLL_NONE: nothing to wait for on this socket
            if self.watched.pop(fd, None) is not None:
                self.selector.unregister(fd)
            return
        if fd in self.watched:
            self.selector.modify(fd, events, fd)
        else:
            self.selector.register(fd, events, fd)
        self.watched[fd] = events

    def _on_timer(self, milliseconds: int) -> None:
        self.curl_due = None if milliseconds < 0 else time.monotonic() + milliseconds / 1000

    # the loop's hand-overs

    def _timeout(self) -> float | None:
        due = self.curl_due
        if self.running:
            due = self.next_read_check if due is None else min(due, self.next_read_check)
        return None if due is None else max(0.0, due - time.monotonic())

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            self.wake.recv(4096)
        self.transport._woken = False

    def _take_inbox(self) -> None:
        transport = self.transport
        priority = transport._priority
        while priority:
            self._start_transfer(priority.popleft())
        inbox = transport._inbox
        running = self.running
        while inbox:
            if transport._held or transport._failures != transport._digested:
                return  # the caller decides first whether they may go
            cap = transport._concurrency
            if cap is not None and len(running) >= cap:
                return  # the rest wait for a slot
            self._start_transfer(inbox.popleft())

    def _start_transfer(self, transfer: _Transfer) -> None:
        if transfer.withdrawn:
            return
        transfer.started = time.monotonic()
        transfer.queued = max(0.0, transfer.started - transfer.enqueued)
        curl = self.idle.pop() if self.idle else self._new_handle()
        try:
            _prepare(curl, transfer)
            transfer.curl = curl
            self.multi.add_handle(curl)
        except Exception as exc:  # noqa: BLE001 - only this request fails
            with contextlib.suppress(pycurl.error):
                self.multi.remove_handle(curl)
            curl.close()  # half set up: not reused
            message = one_line(f"libcurl refused the request: {type(exc).__name__}: {exc}")
            self._finish(transfer, TransportConnectionError(message))
            return
        if not self.running:
            self.next_read_check = transfer.started + self.read_check
        self.running[curl] = transfer

    def _take_cancels(self) -> None:
        cancels = self.transport._cancels
        while cancels:
            transfer = cancels.popleft()
            curl = transfer.curl
            # The handle may already be free again, or carry another request by now.
            if curl is not None and self.running.get(curl) is transfer:
                del self.running[curl]
                self._release(curl)

    def _new_handle(self) -> pycurl.Curl:
        timeouts = self.timeouts
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        curl.setopt(pycurl.PROXY, "")  # ignore http_proxy / https_proxy, as aiohttp does
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.PATH_AS_IS, 1)
        curl.setopt(pycurl.DNS_CACHE_TIMEOUT, 300)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, _milliseconds(timeouts.connect))
        curl.setopt(pycurl.TIMEOUT_MS, _milliseconds(timeouts.total))
        if self.cafile is not None:
            curl.setopt(pycurl.CAINFO, self.cafile)
        if self.capath is not None:
            curl.setopt(pycurl.CAPATH, self.capath)
        return curl

    # finished transfers

    def _check_reads(self, now: float) -> None:
        """End the transfers whose connection received nothing for ``read`` seconds since
        their request was sent (libcurl hands lines and chunks over only once complete, so
        the bytes are watched on the socket)."""
        self.next_read_check = now + self.read_check
        read = self.timeouts.read
        for curl, transfer in list(self.running.items()):
            if now - transfer.started < read:
                continue
            sent = curl.getinfo(pycurl.PRETRANSFER_TIME)  # 0 until the request is being sent
            if sent <= 0:  # still connecting: the connect limit governs
                continue
            arrived = self.arrived.get(curl.getinfo(pycurl.ACTIVESOCKET), 0.0)
            if now - max(transfer.started + sent, arrived) >= read:
                del self.running[curl]
                self._release(curl)
                self._finish(transfer, TransportTimeoutError("read timeout"))

    def _collect(self) -> None:
        while True:
            queued, succeeded, failed = self.multi.info_read()
            for curl in succeeded:
                transfer = self.running.pop(curl)
                status = curl.getinfo(pycurl.RESPONSE_CODE)
                self._release(curl)
                self._finish(transfer, _response(transfer, status))
            for curl, errno, message in failed:
                transfer = self.running.pop(curl)
                outcome = self._failure(curl, transfer, errno, message)
                self._release(curl)
                self._finish(transfer, outcome)
            if not queued:
                return

    def _failure(self, curl: pycurl.Curl, transfer: _Transfer, errno: int, message: str) -> Outcome:
        if errno == pycurl.E_WRITE_ERROR and transfer.truncated:
            return _response(transfer, curl.getinfo(pycurl.RESPONSE_CODE))
        if errno == pycurl.E_ABORTED_BY_CALLBACK and transfer.sends > 1:
            return TransportConnectionError(
                "the connection closed before any answer (the request is not sent again)"
            )
        if errno == pycurl.E_OPERATION_TIMEDOUT:
            # After a failure libcurl fills PRETRANSFER_TIME in; the connect times stay 0 when
            # the TCP (or, for https, TLS) connection never completed.
            connecting = curl.getinfo(pycurl.CONNECT_TIME) <= 0 or (
                transfer.request.url.startswith("https:")
                and curl.getinfo(pycurl.APPCONNECT_TIME) <= 0
            )
            if connecting and self.timeouts.connect <= self.timeouts.total:
                return TransportTimeoutError("connect timeout")
            return TransportTimeoutError("total timeout")
        return TransportConnectionError(one_line(f"libcurl error {errno}: {message}"))

    def _release(self, curl: pycurl.Curl) -> None:
        """Take the handle out of libcurl; keep it for a later request (at most as many as
        the pool's connections), its callbacks no longer holding the finished request."""
        self.multi.remove_handle(curl)
        if len(self.idle) >= self.transport._max_connections:
            curl.close()
            return
        curl.setopt(pycurl.HEADERFUNCTION, _ignore)
        curl.setopt(pycurl.WRITEFUNCTION, _ignore)
        curl.setopt(pycurl.PREREQFUNCTION, _ignore)
        self.idle.append(curl)

    def _finish(self, transfer: _Transfer, outcome: Outcome) -> None:
        if isinstance(outcome, TransportError):
            outcome.queued = transfer.queued
        if _holds(transfer, outcome):
            # Counted at once: no waiting request starts in the slot this one frees before its
            # caller has seen the answer (this thread is the counter's one writer).
            self.transport._failures += 1
        self.finished.setdefault(transfer.loop, []).append((transfer, outcome))

    def _hand_back(self) -> None:
        if not self.finished:
            return
        finished, self.finished = self.finished, {}
        transport = self.transport
        for loop, batch in finished.items():
            failures = sum(1 for transfer, outcome in batch if _holds(transfer, outcome))
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, batch, transport, failures)

    def fail_running(self, message: str, waiting: Sequence[_Transfer] = ()) -> None:
        """Answer what finished, and fail what this thread carried (and ``waiting``)."""
        with contextlib.suppress(Exception):
            self._hand_back()
        transfers = [*self.running.values(), *waiting]
        self.running.clear()
        for transfer in transfers:
            if not transfer.withdrawn:
                self._finish(transfer, TransportConnectionError(message))
        self._hand_back()

    def close(self) -> None:
        for curl in (*self.running, *self.idle):
            with contextlib.suppress(pycurl.error):
                self.multi.remove_handle(curl)
            curl.close()
        self.running.clear()
        self.idle.clear()
        self.multi.close()
        self.selector.close()


def _ignore(*_: object) -> None:
    """The callback of an idle handle: it holds no finished request."""


def _prepare(curl: pycurl.Curl, transfer: _Transfer) -> None:
    """Set one request's options on a pooled handle (each overrides the previous request's)."""
    request = transfer.request
    method = request.method.upper()
    curl.setopt(pycurl.URL, request.url)
    curl.setopt(pycurl.NOBODY, method == "HEAD")
    if request.body is None and method in _BODYLESS:
        curl.setopt(pycurl.HTTPGET, 1)
    else:
        curl.setopt(pycurl.POSTFIELDS, request.body or b"")
    curl.setopt(pycurl.CUSTOMREQUEST, method)
    headers = [f"{name}: {value}" for name, value in request.headers.items()]
    headers.append("Expect:")  # no 100-continue round trip
    if not any(name.lower() == "content-type" for name in request.headers):
        headers.append("Content-Type:")  # not libcurl's form-urlencoded default
    curl.setopt(pycurl.HTTPHEADER, headers)
    curl.setopt(pycurl.HEADERFUNCTION, transfer.head.append)
    curl.setopt(pycurl.WRITEFUNCTION, transfer.write)
    curl.setopt(pycurl.PREREQFUNCTION, transfer.prereq)


def _response(transfer: _Transfer, status: int) -> TransportResponse:
    body = transfer.chunks[0] if len(transfer.chunks) == 1 else b"".join(transfer.chunks)
    return TransportResponse(
        status, parse_response_head(transfer.head), body, transfer.truncated, transfer.queued
    )


def _holds(transfer: _Transfer, outcome: Outcome) -> bool:
    """A capped request's answer that is not a 2xx, or its failure: the waiting requests stay
    until its caller has seen it (``CurlTransport._digest``)."""
    if transfer.request.priority:
        return False
    return not (isinstance(outcome, TransportResponse) and 200 <= outcome.status < 300)


def _settle(batch: Finished, transport: CurlTransport, failures: int) -> None:
    """On the event loop: answer each transfer's caller (unless it was cancelled meanwhile).

    Then, after the callers have run on these answers (their tasks were woken first, and a
    caller's gates close in the same step as it reads its answer), the waiting requests may go
    again, unless a gate holds them (``CurlTransport.hold``)."""
    for transfer, outcome in batch:
        future = transfer.future
        if future.done():
            continue
        if isinstance(outcome, TransportError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    if failures:
        batch[0][0].loop.call_soon(transport._digest, failures)


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
