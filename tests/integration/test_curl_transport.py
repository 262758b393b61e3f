"""What only the libcurl transport has: its thread, its shutdown and the trust store it reads.

The contract both production transports keep (outcomes, limits, redirects, cookies, proxies,
cancellation) is tested once per transport in ``test_button_client.py``; this module covers the
thread the libcurl transport drives its transfers from, over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import threading
from pathlib import Path

import pytest

from consumer.adapters import curl_transport
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.curl_transport import CurlTransport
from consumer.adapters.http_transport import (
    Timeouts,
    TransportConnectionError,
    TransportRequest,
)
from tests.integration.test_button_client import KEY, odd_server, self_signed

SLOW = Timeouts(connect=2.0, read=60.0, total=60.0)  # no limit ends a request in a test's time


def request(base_url: str, case: str) -> TransportRequest:
    return TransportRequest("GET", f"{base_url}/v1/order/{case}", {"Accept": "application/json"})


def http_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "button-http"]


def test_close_fails_the_requests_still_waiting_and_stops_the_thread() -> None:
    """``aclose`` answers a hanging request with a connection error and ends the thread."""

    async def main() -> BaseException | None:
        arrivals: asyncio.Queue[str] = asyncio.Queue()
        async with odd_server(arrivals) as (base_url, _):
            transport = CurlTransport(timeouts=SLOW)
            hanging = asyncio.create_task(transport.send(request(base_url, "hang")))
            assert await asyncio.wait_for(arrivals.get(), 10) == "hang"
            await transport.aclose()
            done, _ = await asyncio.wait([hanging], timeout=10)
            assert done, "the hanging request was not answered"
            return hanging.exception()

    error = asyncio.run(main())
    assert isinstance(error, TransportConnectionError)
    assert str(error) == "the transport is closed"
    assert http_threads() == []


def test_a_closed_transport_refuses_requests() -> None:
    async def main() -> None:
        transport = CurlTransport()
        await transport.aclose()
        with pytest.raises(RuntimeError, match="the transport is closed"):
            await transport.send(TransportRequest("GET", "http://127.0.0.1:9/", {}))

    asyncio.run(main())


def test_a_failed_thread_fails_what_it_carried_and_a_new_one_takes_what_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the thread ever stop on an unexpected error, the request it was carrying fails at
    once, the one waiting to be handed over goes to a new thread, and later ones work."""
    real = curl_transport._Driver._take_inbox
    failures = [RuntimeError("boom")]

    def take_inbox(driver: curl_transport._Driver) -> None:
        inbox = driver.transport._inbox
        if failures and inbox and inbox[0].request.url.endswith("/boom"):
            raise failures.pop()  # while the hanging request is carried
        real(driver)

    monkeypatch.setattr(curl_transport._Driver, "_take_inbox", take_inbox)

    async def main() -> tuple[BaseException | None, int, int, int]:
        arrivals: asyncio.Queue[str] = asyncio.Queue()
        async with odd_server(arrivals) as (base_url, _):
            transport = CurlTransport(timeouts=SLOW)
            try:
                carried = asyncio.create_task(transport.send(request(base_url, "hang")))
                assert await asyncio.wait_for(arrivals.get(), 10) == "hang"
                waiting = await asyncio.wait_for(transport.send(request(base_url, "boom")), 10)
                await asyncio.wait([carried], timeout=10)
                assert carried.done(), "the carried request was not answered"
                later = await asyncio.wait_for(transport.send(request(base_url, "plain")), 10)
                return carried.exception(), waiting.status, later.status, len(http_threads())
            finally:
                await transport.aclose()

    error, waiting, later, threads = asyncio.run(main())
    assert isinstance(error, TransportConnectionError)
    assert str(error) == "the HTTP thread failed: RuntimeError: boom"
    assert (waiting, later, threads) == (200, 200, 1)
    assert http_threads() == []


def test_a_request_libcurl_refuses_fails_alone() -> None:
    """A URL libcurl cannot take (a NUL byte) fails that request only; the others are answered
    and the thread goes on."""

    async def main() -> tuple[BaseException | None, list[int], int]:
        async with odd_server() as (base_url, _):
            transport = CurlTransport()
            try:
                bad = asyncio.create_task(transport.send(request(base_url, "bad\x00")))
                others = [transport.send(request(base_url, f"n{i}")) for i in range(20)]
                answered = await asyncio.wait_for(asyncio.gather(*others), 10)
                await asyncio.wait([bad], timeout=10)
                assert bad.done(), "the refused request was not answered"
                after = await asyncio.wait_for(transport.send(request(base_url, "plain")), 10)
                return bad.exception(), [r.status for r in answered], after.status
            finally:
                await transport.aclose()

    error, statuses, after = asyncio.run(main())
    assert isinstance(error, TransportConnectionError)
    assert str(error).startswith("libcurl refused the request: ValueError")
    assert (statuses, after) == ([200] * 20, 200)


def test_finished_requests_are_not_kept_by_idle_handles() -> None:
    """Once answered, a request (its body, its headers) is no longer referenced by the pooled
    libcurl handles, however many ran at once."""

    async def main() -> int:
        async with odd_server() as (base_url, _):
            transport = CurlTransport(max_connections=5)
            try:
                requests = (transport.send(request(base_url, "large")) for _ in range(50))
                responses = await asyncio.wait_for(asyncio.gather(*requests), 30)
                assert all(response.status == 200 for response in responses)
                del responses
                gc.collect()
                return sum(type(o) is curl_transport._Transfer for o in gc.get_objects())
            finally:
                await transport.aclose()

    assert asyncio.run(main()) == 0


def test_tls_trusts_the_store_python_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate in SSL_CERT_FILE (the store ``ssl.get_default_verify_paths`` names) is
    trusted: libcurl verifies against the same certificates as Python's ssl module."""
    cert_path, key_path = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)

    async def main() -> bool:
        async with odd_server(ssl_context=server_context) as (base_url, _):
            transport = CurlTransport()
            async with ButtonClient(KEY, base_url=base_url, transport=transport) as client:
                return (await client.get("plain")).ok

    assert asyncio.run(main())


def test_many_requests_on_few_connections_all_arrive() -> None:
    """More requests than connections queue inside libcurl and all get their own answer."""

    async def main() -> list[int]:
        async with odd_server() as (base_url, seen):
            transport = CurlTransport(max_connections=3)
            try:
                responses = await asyncio.wait_for(
                    asyncio.gather(
                        *(transport.send(request(base_url, f"n{i}")) for i in range(200))
                    ),
                    30,
                )
            finally:
                await transport.aclose()
            assert sorted(r.match_info["case"] for r in seen) == sorted(f"n{i}" for i in range(200))
            return [response.status for response in responses]

    assert asyncio.run(main()) == [200] * 200
