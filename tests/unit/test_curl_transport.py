"""The libcurl transport's pure parts: the response head it parses and the body limit it keeps.

Its behaviour over real sockets is in ``tests/integration`` (``test_button_client.py`` runs the
whole transport contract on it, ``test_curl_transport.py`` its thread).
"""

from __future__ import annotations

import asyncio
import socket

import pycurl
import pytest

from consumer.adapters.curl_transport import CurlTransport, _Driver, _Transfer, parse_response_head
from consumer.adapters.http_transport import TransportRequest


def test_only_the_final_responses_headers_count() -> None:
    """A 100 Continue's lines come first; the final response's headers replace them."""
    head = parse_response_head(
        [
            b"HTTP/1.1 100 Continue\r\n",
            b"X-Interim: yes\r\n",
            b"\r\n",
            b"HTTP/1.1 429 Too Many Requests\r\n",
            b"Retry-After: 30\r\n",
            b"Content-Type: application/json\r\n",
            b"\r\n",
        ]
    )
    assert dict(head) == {"Retry-After": "30", "Content-Type": "application/json"}


def test_names_are_case_insensitive_and_repeated_fields_kept() -> None:
    head = parse_response_head(
        [b"HTTP/1.1 200 OK\r\n", b"set-cookie: a=1\r\n", b"Set-Cookie: b=2\r\n", b"\r\n"]
    )
    assert head.getall("SET-COOKIE") == ["a=1", "b=2"]
    assert head["Set-Cookie"] == "a=1"


def test_values_are_latin_1_stripped_and_folded_lines_joined() -> None:
    """RFC 9110, 5.5 (field values as ISO-8859-1) and RFC 9112, 5.2 (obsolete line folding)."""
    head = parse_response_head(
        [
            b"HTTP/1.1 200 OK\r\n",
            b"X-Name:   caf\xe9  \r\n",
            b"X-Long: first\r\n",
            b"\t second\r\n",
            b"no colon here\r\n",
            b"\r\n",
        ]
    )
    assert dict(head) == {"X-Name": "caf\xe9", "X-Long": "first second"}


def _transfer(limit: int) -> _Transfer:
    loop = asyncio.new_event_loop()
    try:
        request = TransportRequest("GET", "http://127.0.0.1:9/", {})
        return _Transfer(request, loop, loop.create_future(), limit)
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("chunks", "kept", "truncated", "answers"),
    [
        ([b"abc", b"de"], b"abcde", False, [None, None]),  # exactly the limit: whole
        ([b"abc", b"def"], b"abcde", True, [None, 0]),  # one byte over: cut, transfer ended
        ([b"abcdefgh"], b"abcde", True, [0]),
    ],
)
def test_the_body_is_kept_up_to_its_limit(
    chunks: list[bytes], kept: bytes, truncated: bool, answers: list[int | None]
) -> None:
    """WRITEFUNCTION keeps at most ``limit`` bytes; 0 tells libcurl to end the transfer."""
    transfer = _transfer(limit=5)
    assert [transfer.write(chunk) for chunk in chunks] == answers
    assert (b"".join(transfer.chunks), transfer.truncated) == (kept, truncated)


def test_a_late_cancel_leaves_the_request_now_on_its_handle_alone() -> None:
    """A caller cancelled after its request finished, when its pooled handle already carries
    another request: the other request keeps running (it was removed in its place)."""
    transport = CurlTransport()
    transport._reader, transport._writer = socket.socketpair()
    driver = _Driver(transport)
    try:
        handle = pycurl.Curl()
        finished, carried = _transfer(limit=5), _transfer(limit=5)
        finished.curl = carried.curl = handle
        driver.running[handle] = carried
        transport._cancels.append(finished)
        driver._take_cancels()
        assert driver.running == {handle: carried}
    finally:
        driver.close()
        transport._reader.close()
        transport._writer.close()
