"""What only the libcurl transport has: its thread, its shutdown and the trust store it reads.

The contract both production transports keep (outcomes, limits, redirects, cookies, proxies,
cancellation) is tested once per transport in ``test_button_client.py``; this module covers the
thread the libcurl transport drives its transfers from, over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
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


def test_a_failed_thread_fails_what_it_held_and_the_next_request_starts_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the thread ever stop on an unexpected error, no request waits for it forever."""
    real = curl_transport._Driver._take_inbox
    failures = [RuntimeError("boom")]

    def take_inbox(driver: curl_transport._Driver) -> None:
        if failures:
            raise failures.pop()
        real(driver)

    monkeypatch.setattr(curl_transport._Driver, "_take_inbox", take_inbox)

    async def main() -> tuple[BaseException | None, int]:
        async with odd_server() as (base_url, _):
            transport = CurlTransport(timeouts=SLOW)
            try:
                first = asyncio.create_task(transport.send(request(base_url, "plain")))
                await asyncio.wait([first], timeout=10)
                assert first.done(), "the request of the failed thread was not answered"
                second = await asyncio.wait_for(transport.send(request(base_url, "plain")), 10)
                return first.exception(), second.status
            finally:
                await transport.aclose()

    error, status = asyncio.run(main())
    assert isinstance(error, TransportConnectionError)
    assert str(error) == "the HTTP thread failed: RuntimeError: boom"
    assert status == 200


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
