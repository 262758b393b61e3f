"""The Button client over real loopback HTTP: every outcome, from real sockets, on each transport.

Button's behaviour comes from the project's contract-strict sandbox (``consumer.sandbox``) and its
fault rules: success, 202, 409, 404, 400, 401, 403, 429 with both ``Retry-After`` forms, 5xx, hangs
and resets. What a correct Button never does (201, a non-JSON or wrong-envelope 2xx, a server that
accepts no connection) comes from a few-line aiohttp server and raw sockets inside this module.
Every test runs once per production transport (``BUTTON_HTTP_CLIENT``: libcurl and aiohttp), so
both keep one contract.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consumer.adapters.button_client import HTTP_CLIENTS, ButtonClient, basic_authorization
from consumer.adapters.curl_transport import CurlTransport
from consumer.adapters.http_transport import (
    MAX_BODY_BYTES,
    AiohttpTransport,
    Timeouts,
    Transport,
)
from consumer.domain.button import Action, ButtonRequest
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.sandbox.testing import SandboxHandle, run_sandbox

KEY = "sk-integration"
FAST = Timeouts(connect=2.0, read=0.5, total=5.0)
HTTP_CLIENT = HTTP_CLIENTS[0]  # the transport of the running test; set by ``_each_transport``


@pytest.fixture(autouse=True, params=HTTP_CLIENTS)
def _each_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.HTTP_CLIENT", request.param)


def transport_for(timeouts: Timeouts = FAST, **options: Any) -> Transport:
    """The running test's transport, built directly (to pass options the client does not)."""
    if HTTP_CLIENT == "aiohttp":
        return AiohttpTransport(timeouts=timeouts, **options)
    return CurlTransport(timeouts=timeouts, **options)


def order(order_id: str, total: int = 5998) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "total": total,
        "currency": "USD",
        "purchase_date": "2024-05-01T14:03:22Z",
        "btn_ref": "fakesrctok-abcdef0123456789",
        "line_items": [{"identifier": "SKU-1", "quantity": 1, "amount": total, "total": total}],
    }


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=(KEY,)) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset()


def run(
    base_url: str,
    scenario: Callable[[ButtonClient], Awaitable[Any]],
    *,
    key: str = KEY,
    timeouts: Timeouts = FAST,
    max_connections: int = 10,
) -> Any:
    """Run ``scenario`` with a fresh client on a fresh event loop; close the client after."""

    async def main() -> Any:
        client = ButtonClient(
            key,
            base_url=base_url,
            timeouts=timeouts,
            max_connections=max_connections,
            http_client=HTTP_CLIENT,
        )
        async with client:
            return await scenario(client)

    return asyncio.run(main())


def with_rule(sandbox: SandboxHandle, order_id: str, **rule: Any) -> None:
    sandbox.set_faults({"hang": {"seconds": 30}, "rules": [{"order_id": order_id, **rule}]})


# --- against the sandbox ---------------------------------------------------------------------


def test_create_is_success_with_buttons_object(sandbox: SandboxHandle) -> None:
    """A valid create is 200 with the order and its button_order_id, and the sandbox has it."""
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(order("ORD-1")))
    assert (outcome.kind, outcome.status) == (OutcomeKind.SUCCESS, 200)
    assert outcome.object is not None
    assert outcome.object["order_id"] == "ORD-1"
    assert str(outcome.object["button_order_id"]).startswith("btnorder-")
    assert outcome.elapsed > 0
    stored = sandbox.order("ORD-1")
    assert stored is not None
    assert stored["status"] == "open"


def test_accepted_202_is_success_without_button_order_id(sandbox: SandboxHandle) -> None:
    """Button's asynchronous 202 is success; its object has no button_order_id."""
    sandbox.set_faults({"accepted_rate": 1.0})
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(order("ORD-202")))
    assert (outcome.kind, outcome.status) == (OutcomeKind.SUCCESS, 202)
    assert outcome.object is not None
    assert "button_order_id" not in outcome.object


def test_duplicate_create_is_conflict(sandbox: SandboxHandle) -> None:
    """Creating an order twice answers 409: conflict, with Button's message."""

    async def twice(client: ButtonClient) -> tuple[ButtonOutcome, ButtonOutcome]:
        return await client.create(order("ORD-dup")), await client.create(order("ORD-dup"))

    first, second = run(sandbox.base_url, twice)
    assert first.ok
    assert (second.kind, second.status) == (OutcomeKind.CONFLICT, 409)
    assert second.message
    assert second.excerpt.startswith("{")


def test_update_cancel_and_get_by_an_id_that_needs_encoding(sandbox: SandboxHandle) -> None:
    """Update, get and cancel address the order by its merchant id, percent-encoded."""
    order_id = "ORD/7 ?#%"

    async def lifecycle(client: ButtonClient) -> list[ButtonOutcome]:
        return [
            await client.create(order(order_id)),
            await client.update(order_id, order(order_id, total=2999)),
            await client.get(order_id),
            await client.cancel(order_id),
        ]

    created, updated, got, cancelled = run(sandbox.base_url, lifecycle)
    assert [o.kind for o in (created, updated, got, cancelled)] == [OutcomeKind.SUCCESS] * 4
    assert got.object is not None
    assert got.object["total"] == 2999
    assert cancelled.object is None
    stored = sandbox.order(order_id)
    assert stored is not None
    assert stored["status"] == "deleted"


@pytest.mark.parametrize("order_id", ["..", "."])
def test_dot_segment_ids_reach_their_order(sandbox: SandboxHandle, order_id: str) -> None:
    """An id of "." or ".." is not normalised away: the path still names the order."""

    async def lifecycle(client: ButtonClient) -> list[ButtonOutcome]:
        return [await client.create(order(order_id)), await client.get(order_id)]

    created, got = run(sandbox.base_url, lifecycle)
    assert (created.kind, got.kind) == (OutcomeKind.SUCCESS, OutcomeKind.SUCCESS)
    assert got.object is not None
    assert got.object["order_id"] == order_id


def test_send_takes_a_mapped_request(sandbox: SandboxHandle) -> None:
    """The generic send carries what the mapper decided."""
    request = ButtonRequest(Action.CREATE, "POST", "/v1/order", "ORD-send", order("ORD-send"))
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.send(request))
    assert outcome.ok


def test_cancel_of_an_unknown_order_is_not_found(sandbox: SandboxHandle) -> None:
    """404 is not found (a cancel of an order Button never had)."""
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.cancel("ORD-missing"))
    assert (outcome.kind, outcome.status) == (OutcomeKind.NOT_FOUND, 404)


def test_invalid_order_is_invalid_with_buttons_message(sandbox: SandboxHandle) -> None:
    """400 is invalid and carries Button's error.message naming the problem."""
    bad = order("ORD-bad") | {"total": -1}
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(bad))
    assert (outcome.kind, outcome.status) == (OutcomeKind.INVALID, 400)
    assert "total" in outcome.message


def test_wrong_key_is_unauthorized_and_never_echoed(sandbox: SandboxHandle) -> None:
    """401 is unauthorized; the outcome carries neither the key nor its Basic token."""
    wrong = "sk-wrong-key"
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.get("ORD-1"), key=wrong)
    assert (outcome.kind, outcome.status) == (OutcomeKind.UNAUTHORIZED, 401)
    for secret in (wrong, basic_authorization(wrong).removeprefix("Basic ")):
        assert secret not in repr(outcome)


def test_update_of_a_finalized_order_is_forbidden(sandbox: SandboxHandle) -> None:
    """403 is forbidden (Button refuses to change a finalized order)."""
    assert run(sandbox.base_url, lambda c: c.create(order("ORD-final"))).ok
    sandbox.finalize("ORD-final")
    outcome: ButtonOutcome = run(
        sandbox.base_url, lambda c: c.update("ORD-final", order("ORD-final", total=1))
    )
    assert (outcome.kind, outcome.status) == (OutcomeKind.FORBIDDEN, 403)


def test_rate_limited_with_delta_seconds(sandbox: SandboxHandle) -> None:
    """429 with Retry-After: 7 is rate limited for 7 seconds."""
    with_rule(
        sandbox,
        "ORD-429",
        fail_first=1,
        status=429,
        retry_after={"seconds": 7, "format": "seconds"},
    )
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(order("ORD-429")))
    assert (outcome.kind, outcome.status, outcome.retry_after) == (
        OutcomeKind.RATE_LIMITED,
        429,
        7.0,
    )


def test_rate_limited_with_an_http_date(sandbox: SandboxHandle) -> None:
    """429 with Retry-After as an HTTP-date 7 s ahead is about 7 s (the date has whole seconds)."""
    with_rule(
        sandbox,
        "ORD-429d",
        fail_first=1,
        status=429,
        retry_after={"seconds": 7, "format": "http-date"},
    )
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(order("ORD-429d")))
    assert outcome.kind == OutcomeKind.RATE_LIMITED
    assert outcome.retry_after is not None
    assert 5.0 <= outcome.retry_after <= 7.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(sandbox: SandboxHandle, status: int) -> None:
    """5xx is a server error, whether its body is Button's envelope or a proxy's HTML."""
    with_rule(sandbox, f"ORD-{status}", fail_first=1, status=status)
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(order(f"ORD-{status}")))
    assert (outcome.kind, outcome.status) == (OutcomeKind.SERVER_ERROR, status)
    assert outcome.excerpt


def test_server_that_hangs_is_a_read_timeout() -> None:
    """A server that never answers ends in a timeout after the read limit, not a hang.

    The read limit (0.5 s) is the only one that can end it: the total limit is ten minutes
    and the hang an hour, so no scheduling delay can make another limit fire first. Its own
    sandbox drops the hang when the test ends."""
    hang = {"order_id": "ORD-hang", "fail_first": 1, "action": "hang"}
    faults = {"hang": {"seconds": 3600}, "rules": [hang]}
    timeouts = Timeouts(connect=FAST.connect, read=FAST.read, total=600.0)
    with run_sandbox(api_keys=(KEY,), faults=faults) as sandbox:
        outcome: ButtonOutcome = run(
            sandbox.base_url, lambda c: c.create(order("ORD-hang")), timeouts=timeouts
        )
    assert (outcome.kind, outcome.message) == (OutcomeKind.TIMEOUT, "read timeout")
    assert FAST.read <= outcome.elapsed < timeouts.total


@pytest.mark.parametrize("action", ["reset", "lost_response"])
def test_connection_reset_is_a_connection_error(sandbox: SandboxHandle, action: str) -> None:
    """A reset before the answer (whether or not Button applied the request) is a connection
    error."""
    with_rule(sandbox, f"ORD-{action}", fail_first=1, action=action)
    outcome: ButtonOutcome = run(sandbox.base_url, lambda c: c.create(order(f"ORD-{action}")))
    assert (outcome.kind, outcome.status) == (OutcomeKind.CONNECTION_ERROR, None)
    assert outcome.message


@pytest.mark.parametrize("action", ["reset", "lost_response"])
def test_a_request_is_sent_once_when_its_kept_alive_connection_closes_unanswered(
    sandbox: SandboxHandle, action: str
) -> None:
    """The one connection of the pool carried an order; the next create on it is read, then the
    connection closes without an answer: a connection error, and Button saw the create once.
    (libcurl would resend it by itself on a new connection; the policy decides, not it.)"""
    order_id = f"ORD-kept-{action}"
    with_rule(sandbox, order_id, fail_first=1, action=action)

    async def second_on_the_connection(client: ButtonClient) -> ButtonOutcome:
        assert (await client.create(order(f"ORD-before-{action}"))).ok
        return await client.create(order(order_id))

    outcome: ButtonOutcome = run(sandbox.base_url, second_on_the_connection, max_connections=1)
    assert (outcome.kind, outcome.status) == (OutcomeKind.CONNECTION_ERROR, None)
    assert len(sandbox.requests_for(order_id)) == 1  # reset: not applied; lost: applied once


def test_the_pool_is_shared_and_bounded(sandbox: SandboxHandle) -> None:
    """Many concurrent calls on one client all succeed through at most max_connections."""

    async def many(client: ButtonClient) -> list[ButtonOutcome]:
        return list(await asyncio.gather(*(client.create(order(f"P-{i}")) for i in range(60))))

    outcomes = run(sandbox.base_url, many, max_connections=4)
    assert all(o.ok for o in outcomes)
    assert len(sandbox.orders()) == 60


# --- what Button never does: a small local server and raw sockets ----------------------------


@asynccontextmanager
async def odd_server(
    arrivals: asyncio.Queue[str] | None = None, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An aiohttp server answering ``GET /v1/order/{case}`` as ``case`` says; keeps requests.

    ``arrivals`` receives each request's case as it arrives; with ``ssl_context`` it serves
    https."""
    seen: list[web.Request] = []
    release = asyncio.Event()
    ok = {"meta": {"status": "ok"}, "object": {"order_id": "1", "button_order_id": "btnorder-1"}}

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        case = request.match_info["case"]
        if arrivals is not None:
            arrivals.put_nowait(case)
        if case == "redirect":
            raise web.HTTPFound("/v1/order/plain")
        if case == "cookie":
            response = web.json_response(ok)
            response.set_cookie("session", "s3cr3t")
            return response
        if case == "created":
            return web.json_response(ok, status=201)
        if case == "not-json":
            return web.Response(text="<html>fine</html>", content_type="text/html")
        if case == "wrong-envelope":
            return web.json_response({"order": {"order_id": "1"}})
        if case == "hang":
            await release.wait()
        if case.startswith("chunked-"):  # no Content-Length: the transport reads to the end
            stream = web.StreamResponse(headers={"Content-Type": "application/json"})
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            padding = int(case.removeprefix("chunked-"))
            await stream.write(b'{"meta": {"status": "ok"}, "object": {"pad": "')
            for _ in range(padding // 1000):
                await stream.write(b"x" * 1000)
            await stream.write(b'"}}')
            await stream.write_eof()
            return stream
        if case == "large":
            return web.json_response(ok | {"pad": "x" * 5000})
        return web.json_response(ok)

    app = web.Application()
    app.router.add_get("/v1/order/{case}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    host, port = runner.addresses[0][:2]
    scheme = "http" if ssl_context is None else "https"
    try:
        yield f"{scheme}://{host}:{port}", seen
    finally:
        release.set()
        await runner.cleanup()


def call_odd(
    case: str, timeouts: Timeouts = FAST, max_body_bytes: int = MAX_BODY_BYTES
) -> tuple[ButtonOutcome, list[web.Request]]:
    async def main() -> tuple[ButtonOutcome, list[web.Request]]:
        async with odd_server() as (base_url, seen):
            transport = transport_for(timeouts, max_body_bytes=max_body_bytes)
            client = ButtonClient(KEY, base_url=base_url, transport=transport)
            async with client:
                return await client.get(case), seen

    return asyncio.run(main())


def test_created_201_is_success() -> None:
    """201 with the ok envelope is success."""
    outcome, _ = call_odd("created")
    assert (outcome.kind, outcome.status) == (OutcomeKind.SUCCESS, 201)
    assert outcome.object == {"order_id": "1", "button_order_id": "btnorder-1"}


def test_headers_on_the_wire() -> None:
    """The server receives Basic auth, the version header, JSON Accept and the User-Agent."""
    outcome, seen = call_odd("plain")
    assert outcome.ok
    headers = seen[0].headers
    assert headers["Authorization"] == basic_authorization(KEY)
    assert headers["X-Button-API-Version"] == "2018-02-13"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("button-consumer/")


def test_non_json_2xx_is_unreadable() -> None:
    """A 200 whose body is not JSON is unreadable, with an excerpt of it."""
    outcome, _ = call_odd("not-json")
    assert (outcome.kind, outcome.status, outcome.message) == (
        OutcomeKind.UNREADABLE,
        200,
        "body is not JSON",
    )
    assert outcome.excerpt == "<html>fine</html>"


def test_wrong_envelope_2xx_is_unreadable() -> None:
    """A 200 JSON body without Button's meta.status is unreadable."""
    outcome, _ = call_odd("wrong-envelope")
    assert (outcome.kind, outcome.status) == (OutcomeKind.UNREADABLE, 200)
    assert json.loads(outcome.excerpt) == {"order": {"order_id": "1"}}


def test_total_timeout_bounds_the_whole_request() -> None:
    """With a long read limit, the total limit still ends a hanging request."""
    outcome, _ = call_odd("hang", Timeouts(connect=2.0, read=30.0, total=0.3))
    assert (outcome.kind, outcome.message) == (OutcomeKind.TIMEOUT, "total timeout")


def test_connection_refused_is_a_connection_error() -> None:
    """Nothing listening on the port: a connection error, at once."""
    with closing(socket.socket()) as bound:  # bound, never listening: the port stays ours
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        outcome: ButtonOutcome = run(f"http://127.0.0.1:{port}", lambda c: c.get("1"))
    assert (outcome.kind, outcome.status) == (OutcomeKind.CONNECTION_ERROR, None)
    assert "connect" in outcome.message.lower()  # aiohttp: Cannot connect; libcurl: Failed to


def test_connect_timeout_when_the_server_accepts_nothing() -> None:
    """A server whose accept queue is full drops SYNs: the connect limit ends the attempt."""
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers: list[socket.socket] = []
        try:
            for _ in range(16):  # fill the queue until a connect no longer completes
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.5)
                try:
                    filler.connect(address)
                except TimeoutError:
                    break
            # Read and total limits far above the connect limit: only it can fire first.
            timeouts = Timeouts(connect=0.3, read=60.0, total=60.0)
            outcome: ButtonOutcome = run(
                f"http://{address[0]}:{address[1]}", lambda c: c.get("1"), timeouts=timeouts
            )
        finally:
            for filler in fillers:
                filler.close()
    assert (outcome.kind, outcome.message) == (OutcomeKind.TIMEOUT, "connect timeout")


@pytest.mark.parametrize("case", ["large", "chunked-5000"])
def test_bodies_beyond_the_limit_are_cut_and_unreadable(case: str) -> None:
    """The transport reads at most max_body_bytes, with or without Content-Length."""
    outcome, _ = call_odd(case, max_body_bytes=1000)
    assert (outcome.kind, outcome.status) == (OutcomeKind.UNREADABLE, 200)
    assert outcome.message == "body longer than 1000 bytes"


def test_chunked_bodies_within_the_limit_are_read_whole() -> None:
    """A chunked answer (no Content-Length) under the limit is read to its end."""
    outcome, _ = call_odd("chunked-3000", max_body_bytes=10_000)
    assert outcome.kind == OutcomeKind.SUCCESS
    assert outcome.object == {"pad": "x" * 3000}


def test_redirects_are_not_followed() -> None:
    """A 3xx is the answer (unexpected, unreadable): the client never follows it elsewhere."""
    outcome, seen = call_odd("redirect")
    assert (outcome.kind, outcome.status) == (OutcomeKind.UNREADABLE, 302)
    assert [request.match_info["case"] for request in seen] == ["redirect"]


def test_cookies_are_not_kept() -> None:
    """A cookie Button (or a proxy) sets is not sent back with the next request."""

    async def main() -> list[web.Request]:
        async with odd_server() as (base_url, seen):
            async with ButtonClient(KEY, base_url=base_url, transport=transport_for()) as client:
                assert (await client.get("cookie")).ok
                assert (await client.get("plain")).ok
            return seen

    first, second = asyncio.run(main())
    assert "Set-Cookie" not in first.headers
    assert "Cookie" not in second.headers


def test_proxies_named_in_the_environment_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """http_proxy and the like are ignored: requests go straight to Button's address."""
    with closing(socket.socket()) as bound:  # bound, never listening: a proxy there refuses
        bound.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{bound.getsockname()[1]}"
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        outcome, seen = call_odd("plain")
    assert outcome.ok
    assert len(seen) == 1


def test_a_cancelled_request_gives_its_connection_back() -> None:
    """A caller cancelled while its request hangs frees the pool's only connection at once."""

    async def main() -> ButtonOutcome:
        arrivals: asyncio.Queue[str] = asyncio.Queue()
        async with odd_server(arrivals) as (base_url, _):
            transport = transport_for(
                Timeouts(connect=2.0, read=60.0, total=60.0), max_connections=1
            )
            async with ButtonClient(KEY, base_url=base_url, transport=transport) as client:
                hanging = asyncio.create_task(client.get("hang"))
                assert await asyncio.wait_for(arrivals.get(), 10) == "hang"
                hanging.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await hanging
                # The read and total limits are a minute: only a freed connection answers this.
                return await asyncio.wait_for(client.get("plain"), 10)

    assert asyncio.run(main()).ok


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (certificate, key) as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "button-sandbox.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_certificates_nobody_trusts_are_refused(tmp_path: Path) -> None:
    """An https server whose certificate is in no trust store: a connection error."""
    cert_path, key_path = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)

    async def main() -> ButtonOutcome:
        async with (
            odd_server(ssl_context=server_context) as (base_url, _),
            ButtonClient(KEY, base_url=base_url, transport=transport_for()) as client,
        ):
            return await client.get("plain")

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status) == (OutcomeKind.CONNECTION_ERROR, None)
    assert "certificate" in outcome.message.lower()


def test_bytes_arriving_slowly_are_no_read_timeout() -> None:
    """The read limit is the time without a byte: a header line that arrives one byte every
    0.1 s for 2 s (libcurl hands a line over only once it is complete) is read in full."""
    envelope = json.dumps({"meta": {"status": "ok"}, "object": {"order_id": "1"}}).encode()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            for byte in b"X-Slow: " + b"s" * 12 + b"\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(envelope), envelope))
            await writer.drain()
        except ConnectionError:
            pass  # the client gave up: the test's assertion says so
        finally:
            writer.close()

    async def main() -> ButtonOutcome:
        server = await asyncio.start_server(trickle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        timeouts = Timeouts(connect=2.0, read=1.0, total=60.0)
        try:
            async with ButtonClient(
                KEY, base_url=f"http://127.0.0.1:{port}", transport=transport_for(timeouts)
            ) as client:
                return await client.get("1")
        finally:
            server.close()

    outcome = asyncio.run(main())
    assert (outcome.kind, outcome.status) == (OutcomeKind.SUCCESS, 200)
    assert outcome.elapsed >= 2.0
