"""The Button client without sockets: classification, Retry-After, headers, secret hygiene.

Requests go through ``MockTransport``; the real HTTP path is covered in
``tests/integration/test_button_client.py``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from consumer import __version__
from consumer.adapters.button_client import (
    EXCERPT_LIMIT,
    ButtonClient,
    basic_authorization,
    classify,
    default_user_agent,
    excerpt,
    parse_retry_after,
)
from consumer.adapters.http_transport import (
    AiohttpTransport,
    MockTransport,
    Timeouts,
    TransportConnectionError,
    TransportError,
    TransportRequest,
    TransportResponse,
    TransportTimeoutError,
)
from consumer.domain.button import Action, ButtonRequest
from consumer.domain.button_wire import create_request, order_path
from consumer.domain.outcomes import OutcomeKind
from consumer.settings import ButtonSettings, HttpClient

KEY = "sk-XXX"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
OK_ORDER = {"meta": {"status": "ok"}, "object": {"button_order_id": "btnorder-1", "order_id": "1"}}


def envelope(document: Any) -> bytes:
    return json.dumps(document).encode()


def error_body(message: str) -> bytes:
    return envelope({"meta": {"status": "error"}, "error": {"message": message}})


def response(status: int, body: bytes = b"", **headers: str) -> TransportResponse:
    return TransportResponse(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


class Recorder:
    """A MockTransport handler that answers one canned response and keeps what it was sent."""

    def __init__(self, answer: TransportResponse | Exception | None = None) -> None:
        self.answer = answer or response(200, envelope(OK_ORDER))
        self.requests: list[TransportRequest] = []

    def __call__(self, request: TransportRequest) -> TransportResponse:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    @property
    def last(self) -> TransportRequest:
        return self.requests[-1]


def client_for(handler: Recorder, **kwargs: Any) -> ButtonClient:
    return ButtonClient(KEY, transport=MockTransport(handler), clock=lambda: NOW, **kwargs)


def call(client: ButtonClient, method: str, *args: Any) -> Any:
    async def scenario() -> Any:
        async with client:
            return await getattr(client, method)(*args)

    return asyncio.run(scenario())


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Fri, 02 Jan 2026 03:04:35 GMT", 30.0),  # IMF-fixdate, 30 s after NOW
        ("Friday, 02-Jan-26 03:05:05 GMT", 60.0),  # RFC 850
        ("Fri Jan  2 03:04:15 2026", 10.0),  # asctime, no zone: GMT
        ("Fri, 02 Jan 2026 03:00:00 GMT", 0.0),  # in the past
        ("", None),
        ("-5", None),
        ("soon", None),
        ("Fri, 32 Jan 2026 03:04:35 GMT", None),
        (None, None),
    ],
)
def test_retry_after_reads_delta_seconds_and_http_dates(
    value: str | None, expected: float | None
) -> None:
    """Both forms of Retry-After become seconds from the injected now; garbage becomes None."""
    assert expected == parse_retry_after(value, NOW)


@given(st.integers(min_value=0, max_value=10**9))
def test_retry_after_delta_seconds_round_trip(seconds: int) -> None:
    """Any delta-seconds value is read exactly."""
    assert float(seconds) == parse_retry_after(str(seconds), NOW)


@given(st.integers(min_value=-(10**6), max_value=10**8))
def test_retry_after_http_date_is_relative_to_the_clock(offset: int) -> None:
    """An HTTP-date gives its distance from now, never negative."""
    when = datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=offset)
    assert max(0.0, float(offset)) == parse_retry_after(format_datetime(when, usegmt=True), NOW)


# --- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202])
def test_2xx_with_ok_envelope_is_success_with_object(status: int) -> None:
    """Any 2xx carrying meta.status ok is success, and the object is kept."""
    outcome = classify(response(status, envelope(OK_ORDER)), now=NOW, elapsed=0.25)
    assert (OutcomeKind.SUCCESS, status) == (outcome.kind, outcome.status)
    assert OK_ORDER["object"] == outcome.object
    assert outcome.elapsed == 0.25
    assert outcome.ok
    assert outcome.excerpt == ""


def test_accepted_without_button_order_id_is_success() -> None:
    """Button's 202 carries no button_order_id; it is still success."""
    body = envelope({"meta": {"status": "ok"}, "object": {"order_id": "1"}})
    outcome = classify(response(202, body), now=NOW)
    assert outcome.kind == OutcomeKind.SUCCESS
    assert outcome.object == {"order_id": "1"}


@pytest.mark.parametrize("status", [202, 204])
def test_empty_accepted_or_no_content_is_success(status: int) -> None:
    """202 (undocumented body) and 204 with no body at all are success."""
    assert classify(response(status), now=NOW).kind == OutcomeKind.SUCCESS


def test_cancel_success_has_null_object() -> None:
    """DELETE answers {"object": null}: success without an object."""
    body = envelope({"meta": {"status": "ok"}, "object": None})
    outcome = classify(response(200, body), now=NOW)
    assert (outcome.kind, outcome.object) == (OutcomeKind.SUCCESS, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "body is not JSON"),
        (b"<html>ok</html>", "body is not JSON"),
        (b"\xff\xfe not utf-8", "body is not JSON"),
        (b'{"status": "ok"}', "body is not Button's envelope (meta.status)"),
        (b"[1, 2]", "body is not Button's envelope (meta.status)"),
        (b'{"meta": "ok"}', "body is not Button's envelope (meta.status)"),
        (error_body("odd"), "meta.status is error: odd"),
    ],
)
def test_2xx_without_ok_envelope_is_unreadable(body: bytes, message: str) -> None:
    """A 2xx that is not Button's ok envelope is unreadable, with a reason and an excerpt."""
    outcome = classify(response(200, body), now=NOW)
    assert (OutcomeKind.UNREADABLE, 200, message) == (outcome.kind, outcome.status, outcome.message)
    assert excerpt(body) == outcome.excerpt


def test_truncated_2xx_is_unreadable() -> None:
    """A body cut at the transport's limit cannot be trusted."""
    truncated = TransportResponse(200, {}, b'{"meta": {"status": "ok"}', truncated=True)
    assert classify(truncated, now=NOW).kind == OutcomeKind.UNREADABLE


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, OutcomeKind.INVALID),
        (401, OutcomeKind.UNAUTHORIZED),
        (403, OutcomeKind.FORBIDDEN),
        (404, OutcomeKind.NOT_FOUND),
        (409, OutcomeKind.CONFLICT),
        (429, OutcomeKind.RATE_LIMITED),
        (500, OutcomeKind.SERVER_ERROR),
        (502, OutcomeKind.SERVER_ERROR),
        (503, OutcomeKind.SERVER_ERROR),
        (504, OutcomeKind.SERVER_ERROR),
        (599, OutcomeKind.SERVER_ERROR),
        (405, OutcomeKind.CLIENT_ERROR),
        (422, OutcomeKind.CLIENT_ERROR),
    ],
)
def test_error_statuses_map_to_kinds_with_buttons_message(status: int, kind: OutcomeKind) -> None:
    """Each error status has its kind; Button's error.message is the outcome's message."""
    outcome = classify(response(status, error_body("Order already exists")), now=NOW)
    assert (kind, status, "Order already exists") == (outcome.kind, outcome.status, outcome.message)
    assert not outcome.ok


def test_error_status_without_envelope_keeps_kind_and_names_the_status() -> None:
    """An HTML 502 from a proxy is a server error, not unreadable."""
    body = b"<html><body>502 Bad Gateway</body></html>"
    outcome = classify(response(502, body), now=NOW)
    assert (outcome.kind, outcome.message) == (OutcomeKind.SERVER_ERROR, "HTTP 502")
    assert body.decode() == outcome.excerpt


@pytest.mark.parametrize("status", [100, 199, 301, 304, 307])
def test_informational_and_redirect_statuses_are_unreadable(status: int) -> None:
    """The client follows no redirects: a 3xx is not an answer it understands."""
    outcome = classify(response(status), now=NOW)
    assert (OutcomeKind.UNREADABLE, f"unexpected HTTP {status}") == (outcome.kind, outcome.message)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("30", 30.0), ("Fri, 02 Jan 2026 03:05:05 GMT", 60.0), ("later", None)],
)
def test_rate_limited_carries_parsed_retry_after(header: str, expected: float | None) -> None:
    """429 carries Retry-After in seconds, whichever form the header took."""
    outcome = classify(response(429, error_body("slow down"), retry_after=header), now=NOW)
    assert (OutcomeKind.RATE_LIMITED, expected) == (outcome.kind, outcome.retry_after)


def test_retry_after_header_name_is_case_insensitive() -> None:
    """Header names are case-insensitive, even in a plain dict from a fake transport."""
    outcome = classify(TransportResponse(503, {"retry-after": "5"}, b""), now=NOW)
    assert (outcome.kind, outcome.retry_after) == (OutcomeKind.SERVER_ERROR, 5.0)


def test_rate_limited_without_retry_after_has_none() -> None:
    """No header, no hint: the failure policy uses its own backoff."""
    assert None is classify(response(429), now=NOW).retry_after


def test_excerpt_is_capped_and_single_line() -> None:
    """Excerpts fit a dead-letter header: at most EXCERPT_LIMIT characters, no line breaks."""
    body = error_body("line one\nline two\r\n\t" + "x" * 1000)
    outcome = classify(response(400, body), now=NOW)
    assert len(outcome.excerpt) == EXCERPT_LIMIT
    assert not any(c in outcome.excerpt for c in "\r\n\t")
    assert len(outcome.message) <= 256
    assert "\n" not in outcome.message


def test_excerpt_survives_invalid_utf8() -> None:
    """Bytes that are not UTF-8 are replaced, not raised."""
    assert excerpt(b"\xff\xfeok") == "\ufffd\ufffdok"


@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(st.binary(max_size=600), st.text(max_size=300).map(str.encode)),
    retry_after=st.one_of(st.none(), st.text(max_size=40)),
)
def test_classify_never_raises_and_errors_follow_the_status(
    status: int, body: bytes, retry_after: str | None
) -> None:
    """Whatever comes back, the client tells; for >= 400 the kind depends on the status only."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    outcome = classify(TransportResponse(status, headers, body), now=NOW)
    assert len(outcome.excerpt) <= EXCERPT_LIMIT
    assert outcome.retry_after is None or outcome.retry_after >= 0
    if status >= 400:
        assert classify(response(status), now=NOW).kind == outcome.kind
    if outcome.ok:
        assert 200 <= status < 300


# --- requests and headers --------------------------------------------------------------------


def test_basic_auth_uses_the_key_as_user_and_an_empty_password() -> None:
    """The same header Button's own Python client sends for sk-XXX."""
    assert basic_authorization("sk-XXX") == "Basic c2stWFhYOg=="


def test_create_posts_json_with_every_header() -> None:
    """create: POST /v1/order, JSON body, Basic auth, version header, project User-Agent."""
    recorder = Recorder()
    order = {"order_id": "ORD-1", "total": 5998, "currency": "USD", "note": "café"}
    outcome = call(client_for(recorder), "create", order)
    assert outcome.ok
    sent = recorder.last
    assert (sent.method, sent.url) == ("POST", "https://api.usebutton.com/v1/order")
    assert order == json.loads(sent.body or b"")
    headers = sent.headers
    assert headers["Authorization"] == "Basic c2stWFhYOg=="
    assert headers["X-Button-API-Version"] == "2018-02-13"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith(f"button-consumer/{__version__} ")


def test_update_cancel_and_get_address_the_order_by_encoded_id() -> None:
    """The order id is percent-encoded into the path; cancel and get send no body."""
    recorder = Recorder()
    client = client_for(recorder, base_url="http://127.0.0.1:8089/")

    async def scenario() -> None:
        async with client:
            await client.update("A/B 1?", {"total": 1})
            await client.cancel("A/B 1?")
            await client.get("A/B 1?")

    asyncio.run(scenario())
    url = "http://127.0.0.1:8089/v1/order/A%2FB%201%3F"
    assert [("POST", url), ("DELETE", url), ("GET", url)] == [
        (r.method, r.url) for r in recorder.requests
    ]
    assert [r.body for r in recorder.requests] == [b'{"total":1}', None, None]
    assert "Content-Type" not in recorder.requests[1].headers
    assert "Content-Type" in recorder.requests[0].headers


def test_send_uses_the_requests_method_path_and_body() -> None:
    """The generic send takes a mapped ButtonRequest as is."""
    recorder = Recorder()
    request = ButtonRequest(Action.CANCEL, "DELETE", order_path("ORD-9"), "ORD-9")
    assert call(client_for(recorder), "send", request).ok
    assert (
        recorder.last.method,
        recorder.last.url,
        recorder.last.body,
    ) == ("DELETE", "https://api.usebutton.com/v1/order/ORD-9", None)


def test_api_version_and_user_agent_are_configurable() -> None:
    """A later version can be pinned, or the header left out; the User-Agent replaced."""
    recorder = Recorder()
    call(client_for(recorder, api_version="2030-01-01", user_agent="ua/1"), "get", "1")
    assert recorder.last.headers["X-Button-API-Version"] == "2030-01-01"
    assert recorder.last.headers["User-Agent"] == "ua/1"
    call(client_for(recorder, api_version=None), "get", "1")
    assert "X-Button-API-Version" not in recorder.last.headers


@pytest.mark.parametrize("total", [float("nan"), float("inf")])
def test_bodies_that_are_not_json_are_refused(total: float) -> None:
    """NaN and Infinity are programming errors, raised before anything is sent."""
    recorder = Recorder()
    with pytest.raises(ValueError, match="JSON"):
        call(client_for(recorder), "create", {"order_id": "1", "total": total})
    assert recorder.requests == []


@pytest.mark.parametrize("version", ["latest", "2018-2-13", "2018-02-13\r\nX: y"])
def test_api_version_must_be_a_date(version: str) -> None:
    """The version header is a YYYY-MM-DD date (and can never smuggle another header)."""
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        ButtonClient(KEY, api_version=version)


@pytest.mark.parametrize("path", ["v1/order", "/v1/order/a b", "/v1/order/a?b", "/v1/%zz"])
def test_path_must_be_absolute_and_encoded(path: str) -> None:
    """A relative or unencoded path is a programming error, raised before anything is sent."""
    recorder = Recorder()
    request = ButtonRequest(Action.CREATE, "POST", path, "1", {})
    with pytest.raises(ValueError, match="absolute and percent-encoded"):
        call(client_for(recorder), "send", request)
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (TransportTimeoutError("read timeout"), OutcomeKind.TIMEOUT, "read timeout"),
        (TransportConnectionError("refused"), OutcomeKind.CONNECTION_ERROR, "refused"),
    ],
)
def test_transport_failures_become_outcomes(
    error: Exception, kind: OutcomeKind, message: str
) -> None:
    """Timeouts and connection failures are outcomes with no status, never exceptions."""
    outcome = call(client_for(Recorder(error)), "get", "1")
    assert (kind, None, message) == (outcome.kind, outcome.status, outcome.message)


def test_elapsed_and_retry_after_use_the_injected_clocks() -> None:
    """elapsed comes from the monotonic timer; a Retry-After date from the wall clock."""
    ticks = iter([10.0, 10.5])
    recorder = Recorder(response(429, retry_after="Fri, 02 Jan 2026 03:04:25 GMT"))
    client = client_for(recorder, timer=lambda: next(ticks))
    outcome = call(client, "get", "1")
    assert (
        outcome.kind,
        outcome.retry_after,
        outcome.elapsed,
    ) == (OutcomeKind.RATE_LIMITED, 20.0, 0.5)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (TransportResponse(200, {}, envelope(OK_ORDER), queued=0.25), OutcomeKind.SUCCESS),
        (TransportResponse(204, {}, b"", queued=0.25), OutcomeKind.SUCCESS),
        (TransportResponse(200, {}, b"<html>", queued=0.25), OutcomeKind.UNREADABLE),
        (TransportResponse(503, {}, b"", queued=0.25), OutcomeKind.SERVER_ERROR),
        (TransportTimeoutError("read timeout"), OutcomeKind.TIMEOUT),
        (TransportConnectionError("reset"), OutcomeKind.CONNECTION_ERROR),
    ],
)
def test_the_wait_for_a_transport_slot_is_reported_apart_from_elapsed(
    answer: TransportResponse | Exception, kind: OutcomeKind
) -> None:
    """A request that waited 0.25 s of its 0.75 s for a slot under the transport's cap took
    0.5 s at Button: ``elapsed`` leaves the wait out and ``queued`` carries it, whatever the
    outcome (a failed request's wait rides on its error)."""
    if isinstance(answer, TransportError):
        answer.queued = 0.25
    ticks = iter([10.0, 10.75])
    outcome = call(client_for(Recorder(answer), timer=lambda: next(ticks)), "get", "1")
    assert (outcome.kind, outcome.elapsed, outcome.queued) == (kind, 0.5, 0.25)


def test_the_concurrency_cap_is_the_transports_to_take() -> None:
    """``set_concurrency`` and ``hold`` ask the transport; one that cannot cap (a mock,
    aiohttp) says no."""
    for client in (
        ButtonClient(KEY, transport=MockTransport(Recorder())),
        ButtonClient(KEY, http_client="aiohttp"),
    ):
        assert (client.set_concurrency(8), client.hold(True)) == (False, False)
    curl = ButtonClient(KEY, http_client="curl")
    assert (curl.set_concurrency(8), curl.hold(True)) == (True, True)


def test_reads_and_priority_sends_skip_the_requests_waiting_under_the_cap() -> None:
    """A read (the gates' probe) and a send with ``priority`` (an operator's test event) are
    marked for the transport to send at once; the pipeline's sends are not."""
    recorder = Recorder()
    client = client_for(recorder)
    request = create_request("ORD-1", {"order_id": "ORD-1"})

    async def scenario() -> list[bool]:
        async with client:
            await client.send(request)
            await client.send(request, priority=True)
            await client.get("ORD-1")
        return [sent.priority for sent in recorder.requests]

    assert asyncio.run(scenario()) == [False, True, True]


def test_async_handlers_are_awaited() -> None:
    """MockTransport takes coroutine handlers too."""

    async def handler(request: TransportRequest) -> TransportResponse:
        return response(409, error_body("Order already exists"))

    client = ButtonClient(KEY, transport=MockTransport(handler))
    assert call(client, "create", {"order_id": "1"}).kind == OutcomeKind.CONFLICT


# --- lifecycle -------------------------------------------------------------------------------


def test_constructor_does_no_io_and_needs_no_event_loop() -> None:
    """Built outside any event loop without warnings; no session exists until a request."""
    threads = threading.active_count()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = ButtonClient(KEY)
    assert "CurlTransport" in repr(client)
    assert threading.active_count() == threads  # the transport's thread starts on a request
    asyncio.run(client.aclose())


@pytest.mark.parametrize(
    ("http_client", "transport", "library"),
    [("curl", "CurlTransport", "libcurl/"), ("aiohttp", "AiohttpTransport", "aiohttp/")],
)
def test_the_http_client_setting_picks_the_transport_and_names_it(
    http_client: HttpClient, transport: str, library: str
) -> None:
    """BUTTON_HTTP_CLIENT: the transport, and the library the User-Agent names."""
    client = ButtonClient.from_settings(
        ButtonSettings(api_key=SecretStr(KEY), http_client=http_client)
    )
    assert transport in repr(client)
    assert default_user_agent(http_client).split()[-1].startswith(library)
    asyncio.run(client.aclose())


def test_an_unknown_http_client_is_refused() -> None:
    with pytest.raises(ValueError, match="http_client must be one of curl, aiohttp: 'httpx'"):
        ButtonClient(KEY, http_client="httpx")  # type: ignore[arg-type]


def test_aclose_is_idempotent_and_closes_the_transport() -> None:
    """Closing twice is fine; a closed client refuses to send."""
    transport = MockTransport(Recorder())
    client = ButtonClient(KEY, transport=transport)

    async def scenario() -> None:
        async with client:
            pass
        await client.aclose()
        assert transport.closed
        with pytest.raises(RuntimeError, match="closed"):
            await client.get("1")

    asyncio.run(scenario())


def test_closed_aiohttp_transport_refuses_to_open() -> None:
    """After aclose the default transport never creates a new session."""
    transport = AiohttpTransport()

    async def scenario() -> None:
        await transport.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await transport.send(TransportRequest("GET", "http://127.0.0.1:9/", {}))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "kwargs", [{"connect": 0}, {"read": -1.0}, {"total": float("nan")}, {"total": float("inf")}]
)
def test_timeouts_must_be_positive_and_finite(kwargs: dict[str, float]) -> None:
    """No zero, negative or infinite timeouts: every request ends."""
    with pytest.raises(ValueError, match="timeout"):
        Timeouts(**kwargs)


def test_from_settings_maps_button_settings() -> None:
    """The BUTTON_* settings give the base URL, version, timeouts and pool size."""
    settings = ButtonSettings(
        api_key=SecretStr(KEY),
        base_url="http://127.0.0.1:8089",
        api_version="2018-02-13",
        connect_timeout=1.0,
        read_timeout=2.0,
        total_timeout=3.0,
        max_connections=7,
    )
    client = ButtonClient.from_settings(settings)
    assert client.base_url == "http://127.0.0.1:8089"
    assert "max_connections=7" in repr(client)
    assert "Timeouts(connect=1.0, read=2.0, total=3.0)" in repr(client)
    asyncio.run(client.aclose())


# --- secret hygiene --------------------------------------------------------------------------

SECRET = "sk-0123456789abcdef"
SECRET_B64 = basic_authorization(SECRET).removeprefix("Basic ")


def assert_no_secret(text: str) -> None:
    assert SECRET not in text
    assert SECRET_B64 not in text


def test_reprs_never_show_the_key() -> None:
    """Neither the client, its transport nor an outgoing request shows the key or its base64."""
    recorder = Recorder()
    client = ButtonClient(SecretStr(SECRET), transport=MockTransport(recorder))
    asyncio.run(client.get("1"))
    assert_no_secret(repr(client))
    assert_no_secret(repr(recorder.last))
    assert_no_secret(repr(recorder.last.headers))
    assert_no_secret(str(recorder.last))
    assert basic_authorization(SECRET) == recorder.last.headers["Authorization"]
    asyncio.run(client.aclose())


def test_transport_messages_are_redacted() -> None:
    """Should a transport error ever quote the credentials, the outcome does not."""
    error = TransportConnectionError(f"failed with Authorization: Basic {SECRET_B64} ({SECRET})")
    client = ButtonClient(SECRET, transport=MockTransport(Recorder(error)))
    outcome = asyncio.run(client.get("1"))
    assert outcome.kind == OutcomeKind.CONNECTION_ERROR
    assert_no_secret(outcome.message)
    assert "<redacted>" in outcome.message
    asyncio.run(client.aclose())


@pytest.mark.parametrize("echo", [SECRET, SECRET_B64])
def test_bodies_echoing_credentials_are_not_excerpted(echo: str) -> None:
    """A body that echoes the credentials (a misbehaving proxy) is not kept at all."""
    body = error_body(f"bad key {echo}") + b" " + echo.encode()
    client = ButtonClient(SECRET, transport=MockTransport(Recorder(response(401, body))))
    outcome = asyncio.run(client.get("1"))
    assert outcome.kind == OutcomeKind.UNAUTHORIZED
    assert outcome.excerpt == "<redacted>"
    assert_no_secret(outcome.message)
    assert_no_secret(repr(outcome))
    asyncio.run(client.aclose())


@pytest.mark.parametrize("bad", ["", " sk-1", "sk:1", "sk-1\n", "sk\x00"])
def test_invalid_keys_are_rejected_without_quoting_them(bad: str) -> None:
    """The error says what is wrong with the key, never what the key is."""
    with pytest.raises(ValueError, match="API key") as caught:
        ButtonClient(bad)
    if bad.strip():
        assert bad.strip() not in str(caught.value)


@pytest.mark.parametrize(
    ("base_url", "match"),
    [
        ("https://sk-1:@api.usebutton.com", "credentials"),
        ("ftp://api.usebutton.com", "http"),
        ("api.usebutton.com", "http"),
        ("https://api.usebutton.com/?x=1", "query"),
    ],
)
def test_base_url_is_validated(base_url: str, match: str) -> None:
    """The base URL is http(s) with a host and carries no credentials, query or fragment."""
    with pytest.raises(ValueError, match=match) as caught:
        ButtonClient(KEY, base_url=base_url)
    assert "sk-1" not in str(caught.value)


def test_only_buttons_json_envelope_is_from_button() -> None:
    """A 403 in Button's error envelope is Button's answer; the same status with a proxy's HTML
    page (or JSON that is not the envelope) is not, so it can never mean "finalized"."""
    envelope = json.dumps(
        {"meta": {"status": "error"}, "error": {"message": "Order is finalized"}}
    ).encode()
    button = classify(response(403, envelope), now=NOW)
    proxy = classify(response(403, b"<html><h1>403 Forbidden</h1></html>"), now=NOW)
    other = classify(response(403, b'{"message": "Order is finalized"}'), now=NOW)

    assert (button.from_button, button.message) == (True, "Order is finalized")
    assert (proxy.from_button, proxy.message) == (False, "HTTP 403")
    assert other.from_button is False


def test_an_http_date_retry_after_is_read_against_the_servers_date() -> None:
    """Retry-After as an HTTP-date is measured from the response's Date, not the local clock,
    so a local clock ten minutes behind does not turn 60 s into 11 minutes."""
    server_now = datetime.fromtimestamp(NOW, UTC) + timedelta(minutes=10)
    outcome = classify(
        response(
            429,
            b"",
            Date=format_datetime(server_now, usegmt=True),
            Retry_After=format_datetime(server_now + timedelta(seconds=60), usegmt=True),
        ),
        now=NOW,
    )

    assert outcome.retry_after == 60.0
