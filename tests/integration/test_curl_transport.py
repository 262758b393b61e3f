"""What only the libcurl transport has: its thread, its shutdown and the trust store it reads.

The contract both production transports keep (outcomes, limits, redirects, cookies, proxies,
cancellation) is tested once per transport in ``test_button_client.py``; this module covers the
thread the libcurl transport drives its transfers from, over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from consumer.adapters import curl_transport
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.curl_transport import CurlTransport
from consumer.adapters.http_transport import (
    Timeouts,
    TransportConnectionError,
    TransportRequest,
    TransportResponse,
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
                (failing,) = http_threads()
                waiting = await asyncio.wait_for(transport.send(request(base_url, "boom")), 10)
                await asyncio.wait([carried], timeout=10)
                assert carried.done(), "the carried request was not answered"
                later = await asyncio.wait_for(transport.send(request(base_url, "plain")), 10)
                # The failed thread hands over, then closes its handles and ends: only then
                # is the new one alone (bounded: it does not wait for anything).
                await asyncio.to_thread(failing.join, 10)
                assert not failing.is_alive(), "the failed HTTP thread did not end"
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


class HeldServer:
    """Loopback HTTP that holds every ``GET /v1/order/{case}`` until the test releases it.

    ``held`` are the cases held now, in arrival order; ``most_held`` the most held at once (each
    arrival counts itself), so it is the most requests the server ever had in flight. A case
    named ``s<status>-...`` is answered with that status (``s429-a``: 429); others with 200."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[str] = asyncio.Queue()
        self.held: dict[str, asyncio.Event] = {}
        self.most_held = 0
        self.base_url = ""

    async def answer(self, request: web.Request) -> web.Response:
        case = request.match_info["case"]
        release = self.held[case] = asyncio.Event()
        self.most_held = max(self.most_held, len(self.held))
        self.arrivals.put_nowait(case)
        await release.wait()
        del self.held[case]
        status = int(case[1:4]) if case[:1] == "s" and case[1:4].isdigit() else 200
        return web.json_response(
            {"meta": {"status": "ok"}, "object": {"case": case}}, status=status
        )

    async def arrival(self) -> str:
        return await asyncio.wait_for(self.arrivals.get(), 10)

    def release(self, case: str) -> None:
        self.held[case].set()

    def release_all(self) -> None:
        for release in self.held.values():
            release.set()


@contextlib.asynccontextmanager
async def held_server() -> AsyncIterator[HeldServer]:
    server = HeldServer()
    app = web.Application()
    app.router.add_get("/v1/order/{case}", server.answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        server.release_all()
        await runner.cleanup()


def send_each(
    transport: CurlTransport, server: HeldServer, count: int
) -> list[asyncio.Task[TransportResponse]]:
    """Hand ``r0`` .. ``r<count-1>`` to ``transport`` in that order, each in a task of its own."""
    return [
        asyncio.create_task(transport.send(request(server.base_url, f"r{i}"))) for i in range(count)
    ]


def test_a_cap_holds_the_requests_beyond_it_and_starts_each_as_a_slot_frees() -> None:
    """With ``set_concurrency(2)`` and every answer held, two of five requests reach the server;
    each answer lets the next waiting one in, in the order they were sent, and the waiting ones
    report how long they waited (``queued``), each longer than the one before it."""

    async def main() -> tuple[list[str], list[int], int, list[float], list[int]]:
        async with held_server() as server:
            transport = CurlTransport(timeouts=SLOW)
            try:
                assert transport.set_concurrency(2) is True
                sends = send_each(transport, server, 5)
                arrived = sorted([await server.arrival(), await server.arrival()])
                # All five were handed over in one turn of the loop, before any arrival.
                waiting = [len(transport._inbox)]
                for _ in range(3):
                    oldest = next(iter(server.held))
                    server.release(oldest)
                    arrived.append(await server.arrival())
                    waiting.append(len(transport._inbox))
                server.release_all()
                responses = await asyncio.wait_for(asyncio.gather(*sends), 10)
                queued = [response.queued for response in responses]
                statuses = [response.status for response in responses]
                return arrived, waiting, server.most_held, queued, statuses
            finally:
                await transport.aclose()

    arrived, waiting, most_held, queued, statuses = asyncio.run(main())
    assert arrived == ["r0", "r1", "r2", "r3", "r4"]
    assert waiting == [3, 2, 1, 0]
    assert most_held == 2
    assert statuses == [200] * 5
    assert 0 < queued[2] < queued[3] < queued[4]


def test_a_lower_cap_holds_new_requests_until_fewer_run_and_a_higher_one_starts_them() -> None:
    """Lowering the cap ends nothing in flight; the next request starts only once fewer than
    the new cap run. Raising it starts the waiting ones at once, without another answer."""

    async def main() -> tuple[list[str], int, int]:
        async with held_server() as server:
            transport = CurlTransport(timeouts=SLOW)
            try:
                transport.set_concurrency(2)
                sends = send_each(transport, server, 5)
                arrived = sorted([await server.arrival(), await server.arrival()])
                transport.set_concurrency(1)
                server.release("r0")
                # The thread hands r0's answer back only after the pass that would have started
                # r2 in its slot: r2 to r4 still waiting means the lower cap held r2 back.
                await asyncio.wait_for(sends[0], 10)
                waiting = len(transport._inbox)
                server.release("r1")
                arrived.append(await server.arrival())  # only now: r2
                transport.set_concurrency(3)  # r2 still held: r3 and r4 start now
                arrived += sorted([await server.arrival(), await server.arrival()])
                server.release_all()
                await asyncio.wait_for(asyncio.gather(*sends), 10)
                return arrived, waiting, server.most_held
            finally:
                await transport.aclose()

    arrived, waiting, most_held = asyncio.run(main())
    assert arrived == ["r0", "r1", "r2", "r3", "r4"]
    assert waiting == 3
    assert most_held == 3  # r2, r3 and r4 together, after the raise


def test_a_request_cancelled_while_it_waits_for_a_slot_is_never_sent() -> None:
    async def main() -> tuple[list[str], bool]:
        async with held_server() as server:
            transport = CurlTransport(timeouts=SLOW)
            try:
                transport.set_concurrency(1)
                first = asyncio.create_task(transport.send(request(server.base_url, "first")))
                assert await server.arrival() == "first"
                withdrawn = asyncio.create_task(transport.send(request(server.base_url, "gone")))
                last = asyncio.create_task(transport.send(request(server.base_url, "last")))
                await asyncio.sleep(0)  # both handed over (each send appends, then awaits)
                withdrawn.cancel()
                server.release("first")
                arrived = [await server.arrival()]
                server.release_all()
                await asyncio.wait_for(asyncio.gather(first, last), 10)
                return arrived, withdrawn.cancelled()
            finally:
                await transport.aclose()

    assert asyncio.run(main()) == (["last"], True)


def test_the_cap_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1: 0"):
        CurlTransport().set_concurrency(0)


def priority(base_url: str, case: str) -> TransportRequest:
    return TransportRequest(
        "GET", f"{base_url}/v1/order/{case}", {"Accept": "application/json"}, priority=True
    )


def test_a_hold_keeps_the_waiting_requests_while_a_priority_request_goes_at_once() -> None:
    """While held (the caller's gates are closed), a slot that frees starts no waiting request;
    a priority request (a gate's probe) goes at once, and releasing the hold starts the rest."""

    async def main() -> tuple[int, list[str]]:
        async with held_server() as server:
            transport = CurlTransport(timeouts=SLOW)
            try:
                transport.set_concurrency(1)
                sends = send_each(transport, server, 2)
                assert await server.arrival() == "r0"
                assert transport.hold(True) is True
                server.release("r0")
                await asyncio.wait_for(sends[0], 10)
                probe = asyncio.create_task(transport.send(priority(server.base_url, "probe")))
                # The thread took the probe in a pass that found r1 held (r1 would have gone
                # first, in r0's slot, without the hold).
                arrived = [await server.arrival()]
                waiting = len(transport._inbox)
                server.release("probe")
                await asyncio.wait_for(probe, 10)
                transport.hold(False)
                arrived.append(await server.arrival())
                server.release_all()
                await asyncio.wait_for(asyncio.gather(*sends), 10)
                return waiting, arrived
            finally:
                await transport.aclose()

    assert asyncio.run(main()) == (1, ["probe", "r1"])


@pytest.mark.parametrize(("holds", "expected"), [(True, ["probe"]), (False, ["r1", "probe"])])
def test_a_waiting_request_starts_only_once_its_caller_has_seen_a_failed_answer(
    holds: bool, expected: list[str]
) -> None:
    """A 429 frees a slot, but the request waiting for it does not start in that slot at once:
    first the 429's caller reads it, and may close its gates (``hold(True)``, as the circuit
    breaker does). Then nothing more goes out. A caller that does not hold lets it go."""

    async def main() -> tuple[int, list[str]]:
        async with held_server() as server:
            transport = CurlTransport(timeouts=SLOW)
            try:
                transport.set_concurrency(1)

                async def first() -> int:
                    response = await transport.send(request(server.base_url, "s429-r0"))
                    if holds:
                        transport.hold(True)  # in the step that reads the answer
                    return response.status

                sends = [
                    asyncio.create_task(first()),
                    asyncio.create_task(transport.send(request(server.base_url, "r1"))),
                ]
                assert await server.arrival() == "s429-r0"
                server.release("s429-r0")
                assert await asyncio.wait_for(sends[0], 10) == 429
                arrived = [] if holds else [await server.arrival()]
                probe = asyncio.create_task(transport.send(priority(server.base_url, "probe")))
                arrived.append(await server.arrival())
                waiting = len(transport._inbox)
                server.release("probe")
                await asyncio.wait_for(probe, 10)  # the probe's slot is free again
                transport.hold(False)
                if holds:
                    assert await server.arrival() == "r1"  # let go by the caller
                server.release_all()
                await asyncio.wait_for(asyncio.gather(*sends), 10)
                return waiting, arrived
            finally:
                await transport.aclose()

    assert asyncio.run(main()) == (1 if holds else 0, expected)
