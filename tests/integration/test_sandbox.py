"""The Button sandbox over real HTTP on loopback: auth, errors, life cycle, faults, admin API."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer.sandbox.testing import SandboxHandle, basic_auth, run_sandbox

ROOT = Path(__file__).resolve().parents[2]
BUTTON_ORDER_ID = re.compile(r"btnorder-[0-9a-f]{16}")


def order(order_id: str = "ORD-1", **fields: Any) -> dict[str, Any]:
    """A minimal valid create body."""
    return {
        "order_id": order_id,
        "total": 5998,
        "currency": "USD",
        "purchase_date": "2024-05-01T14:03:22Z",
        **fields,
    }


@pytest.fixture(scope="module")
def running() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=("sk-test", "sk-second")) as handle:
        yield handle


@pytest.fixture
def sandbox(running: SandboxHandle) -> SandboxHandle:
    running.reset()
    return running


@pytest.fixture
def client(sandbox: SandboxHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_header, timeout=5) as c:
        yield c


def error_message(response: httpx.Response) -> str:
    doc = response.json()
    assert doc["meta"] == {"status": "error"}
    message: str = doc["error"]["message"]
    return message


# --- authentication ------------------------------------------------------------------------------


def test_a_request_without_credentials_is_401(sandbox: SandboxHandle) -> None:
    """No Authorization header: 401 in Button's error envelope."""
    response = httpx.post(sandbox.url("/v1/order"), json=order())
    assert response.status_code == 401
    assert "Authorization required" in error_message(response)


@pytest.mark.parametrize(
    "header",
    [
        basic_auth("sk-wrong"),
        "Basic " + base64.b64encode(b"sk-test:secret").decode(),
        "Basic " + base64.b64encode(b"sk-test").decode(),
        "Bearer sk-test",
        "Basic not-base64!",
    ],
    ids=["unknown-key", "non-empty-password", "no-colon", "bearer", "malformed"],
)
def test_wrong_credentials_are_401(sandbox: SandboxHandle, header: str) -> None:
    """Only Basic with a known key as user name and an empty password is accepted."""
    response = httpx.post(sandbox.url("/v1/order"), json=order(), headers={"Authorization": header})
    assert response.status_code == 401
    assert error_message(response)
    assert sandbox.orders() == []


def test_every_configured_key_and_any_scheme_spelling_is_accepted(sandbox: SandboxHandle) -> None:
    """A second key works, and the scheme name is case-insensitive (RFC 7617)."""
    second = httpx.post(
        sandbox.url("/v1/order"),
        json=order("A"),
        headers={"Authorization": basic_auth("sk-second")},
    )
    encoded = base64.b64encode(b"sk-test:").decode()
    lower = httpx.post(
        sandbox.url("/v1/order"), json=order("B"), headers={"Authorization": f"basic {encoded}"}
    )
    assert (second.status_code, lower.status_code) == (200, 200)


def test_a_revoked_key_is_401_until_a_valid_key_is_set(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """set_api_keys simulates revoking the key and deploying a fixed one."""
    sandbox.set_api_keys([])
    assert client.post("/v1/order", json=order()).status_code == 401
    sandbox.set_api_keys(["sk-rotated"])
    assert client.post("/v1/order", json=order()).status_code == 401
    rotated = {"Authorization": basic_auth("sk-rotated")}
    assert client.post("/v1/order", json=order(), headers=rotated).status_code == 200


# --- request bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        (b"order_id=ORD-1&total=5998", "application/x-www-form-urlencoded", "Content-Type"),
        (b'{"order_id": "ORD-1"', "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "body: must be a JSON object"),
        (b'{"order_id": "ORD-1", "total": NaN}', "application/json", "not valid JSON"),
        (b'{"order_id": "A", "order_id": "B"}', "application/json", "duplicate key"),
        (b"", "application/json", "not valid JSON"),
        (b'{"total": 1}', "text/plain", "Content-Type"),
    ],
    ids=["form", "truncated", "array", "nan", "duplicate-key", "empty", "text-plain"],
)
def test_a_body_that_is_not_a_json_object_is_400(
    client: httpx.Client, content: bytes, content_type: str, fragment: str
) -> None:
    """Button takes JSON bodies only."""
    response = client.post("/v1/order", content=content, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert fragment in error_message(response)


def test_json_with_a_charset_parameter_is_accepted(client: httpx.Client) -> None:
    """``application/json; charset=utf-8`` is JSON."""
    response = client.post(
        "/v1/order",
        content=httpx.Request("POST", "/", json=order()).content,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200


def test_a_body_over_one_mebibyte_is_413(client: httpx.Client) -> None:
    """Oversized bodies are refused before parsing."""
    response = client.post("/v1/order", json=order(customer_order_id="x" * (1024 * 1024)))
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"total": 59.98}, "total"),
        ({"total": -1}, "total"),
        ({"total": 2**31}, "total"),
        ({"currency": "XYZ"}, "currency"),
        ({"order_id": "ORD-\u00e9"}, "order_id"),
        ({"order_id": "O" * 256}, "order_id"),
        ({"purchase_date": "01/05/2024"}, "purchase_date"),
        ({"btn_ref": "srctok 1"}, "btn_ref"),
        ({"btn_ref": "s" * 256}, "btn_ref"),
        ({"customer": {"email_sha256": "abc"}}, "customer.email_sha256"),
        ({"line_items": [{"identifier": "A"}]}, "line_items[0].total"),
        ({"line_items": "A"}, "line_items"),
    ],
)
def test_an_invalid_create_is_400_naming_the_field(
    client: httpx.Client, sandbox: SandboxHandle, fields: dict[str, Any], field: str
) -> None:
    """Every documented rule is enforced; the message starts with the field."""
    response = client.post("/v1/order", json=order(**fields))
    assert response.status_code == 400
    assert error_message(response).startswith(f"{field}: ")
    assert response.json()["error"]["details"]["problems"][0].startswith(field)
    assert sandbox.orders() == []


def test_a_missing_required_field_is_400(client: httpx.Client) -> None:
    """purchase_date is required since API version 2018-02-13."""
    body = order()
    del body["purchase_date"]
    response = client.post("/v1/order", json=body)
    assert (response.status_code, error_message(response)) == (400, "purchase_date: is required")


def test_the_api_version_header_must_be_a_date(client: httpx.Client) -> None:
    """X-Button-API-Version is optional but, when sent, a YYYY-MM-DD date."""
    bad = client.post("/v1/order", json=order("A"), headers={"X-Button-API-Version": "v2"})
    good = client.post("/v1/order", json=order("B"), headers={"X-Button-API-Version": "2018-02-13"})
    assert (bad.status_code, good.status_code) == (400, 200)


# --- create, update, cancel, get, list -----------------------------------------------------------


def test_a_create_echoes_the_order_with_button_fields(client: httpx.Client) -> None:
    """200 with the order, a btnorder- ID, status open and a finalization date."""
    response = client.post("/v1/order", json=order(btn_ref="srctok-abc"))
    assert response.status_code == 200
    doc = response.json()
    assert doc["meta"] == {"status": "ok"}
    obj = doc["object"]
    assert BUTTON_ORDER_ID.fullmatch(obj["button_order_id"])
    assert (obj["order_id"], obj["total"], obj["currency"]) == ("ORD-1", 5998, "USD")
    assert (obj["btn_ref"], obj["status"]) == ("srctok-abc", "open")
    assert obj["finalization_date"].endswith("Z")


def test_a_duplicate_create_is_409_and_changes_nothing(client: httpx.Client) -> None:
    """order_id is unique per organisation."""
    client.post("/v1/order", json=order())
    response = client.post("/v1/order", json=order(total=1))
    assert response.status_code == 409
    assert "already exists" in error_message(response)
    assert client.get("/v1/order/ORD-1").json()["object"]["total"] == 5998


def test_an_update_replaces_the_state_and_keeps_the_token(client: httpx.Client) -> None:
    """An update is the full new state; btn_ref need not be resent."""
    client.post("/v1/order", json=order(btn_ref="srctok-abc", customer_order_id="C-1"))
    body = {"total": 2999, "currency": "USD", "line_items": [{"identifier": "A", "total": 2999}]}
    response = client.post("/v1/order/ORD-1", json=body)
    assert response.status_code == 200
    obj = client.get("/v1/order/ORD-1").json()["object"]
    assert (obj["total"], obj["btn_ref"], obj["line_items"]) == (
        2999,
        "srctok-abc",
        [{"identifier": "A", "total": 2999}],
    )
    assert "customer_order_id" not in obj  # full state: what the update omits is gone


def test_orders_can_be_addressed_by_button_order_id(client: httpx.Client) -> None:
    """The path accepts the btnorder- ID as well as the merchant order_id."""
    button_id = client.post("/v1/order", json=order()).json()["object"]["button_order_id"]
    assert client.get(f"/v1/order/{button_id}").json()["object"]["order_id"] == "ORD-1"
    assert client.post(f"/v1/order/{button_id}", json={"total": 1, "currency": "USD"}).is_success


@pytest.mark.parametrize(
    ("method", "body"),
    [("POST", {"total": 1, "currency": "USD"}), ("DELETE", None), ("GET", None)],
)
def test_an_unknown_order_is_404(client: httpx.Client, method: str, body: Any) -> None:
    """Update, cancel and get of an order Button never saw: 404."""
    response = client.request(method, "/v1/order/NOPE", json=body)
    assert response.status_code == 404
    assert "not found" in error_message(response)


def test_an_invalid_update_is_400(client: httpx.Client) -> None:
    """Update bodies follow the same rules; total and currency are required."""
    client.post("/v1/order", json=order())
    response = client.post("/v1/order/ORD-1", json={"total": 100})
    assert (response.status_code, error_message(response)) == (400, "currency: is required")
    mismatch = client.post("/v1/order/ORD-1", json={"order_id": "X", "total": 1, "currency": "USD"})
    assert mismatch.status_code == 400


def test_a_cancel_deletes_and_a_second_cancel_is_404(client: httpx.Client) -> None:
    """DELETE answers object null; the order stays readable as deleted; then 404 to changes."""
    client.post("/v1/order", json=order())
    first = client.delete("/v1/order/ORD-1")
    assert (first.status_code, first.json()) == (200, {"meta": {"status": "ok"}, "object": None})
    assert client.get("/v1/order/ORD-1").json()["object"]["status"] == "deleted"
    assert client.delete("/v1/order/ORD-1").status_code == 404
    assert client.post("/v1/order/ORD-1", json={"total": 1, "currency": "USD"}).status_code == 404
    assert client.post("/v1/order", json=order()).status_code == 409


def test_order_ids_with_reserved_characters_work_percent_encoded(client: httpx.Client) -> None:
    """An order_id containing '/' or spaces is addressed percent-encoded."""
    client.post("/v1/order", json=order("A/B C"))
    assert client.get("/v1/order/A%2FB%20C").json()["object"]["order_id"] == "A/B C"


def test_orders_are_listed_by_attribution_token(client: httpx.Client) -> None:
    """GET /v1/order/btn-ref/{btn_ref} lists every order reported with it, under objects."""
    client.post("/v1/order", json=order("A", btn_ref="srctok-1"))
    client.post("/v1/order", json=order("B", btn_ref="srctok-1"))
    client.post("/v1/order", json=order("C", btn_ref="srctok-2"))
    doc = client.get("/v1/order/btn-ref/srctok-1").json()
    assert doc["meta"]["status"] == "ok"
    assert [o["order_id"] for o in doc["objects"]] == ["A", "B"]
    assert client.get("/v1/order/btn-ref/srctok-none").json()["objects"] == []
    assert client.get("/v1/order/btn-ref/bad%20token").status_code == 400


def test_unknown_paths_are_404_and_wrong_methods_405(client: httpx.Client) -> None:
    """Outside Button's routes: Button's envelope with 404, or 405 on a Button path."""
    assert client.get("/v1/customers/1").status_code == 404
    assert client.post("/v1/order/", json=order()).status_code == 404
    response = client.put("/v1/order/ORD-1", json={})
    assert response.status_code == 405
    assert error_message(response).startswith("Method not allowed")


# --- finalization --------------------------------------------------------------------------------


def test_an_order_finalizes_when_its_window_passes() -> None:
    """open -> finalized after the configured window; then changes are 403."""
    with (
        run_sandbox(finalization_window_s=0.3) as sandbox,
        httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_header) as client,
    ):
        assert client.post("/v1/order", json=order()).json()["object"]["status"] == "open"
        sandbox.wait_for(
            lambda: client.get("/v1/order/ORD-1").json()["object"]["status"] == "finalized",
            timeout=5,
        )
        update = client.post("/v1/order/ORD-1", json={"total": 1, "currency": "USD"})
        assert update.status_code == 403
        assert "finalized" in error_message(update)
        assert client.delete("/v1/order/ORD-1").status_code == 403


def test_admin_finalize_makes_an_order_immutable(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """POST /__sandbox/orders/{id}/finalize finalizes at once (no waiting in tests)."""
    client.post("/v1/order", json=order())
    assert sandbox.finalize("ORD-1")["status"] == "finalized"
    assert client.delete("/v1/order/ORD-1").status_code == 403


def test_a_finalization_date_in_the_body_overrides_the_window(client: httpx.Client) -> None:
    """An explicit finalization_date in the past finalizes the order immediately."""
    client.post("/v1/order", json=order(finalization_date="2024-05-08T00:00:00Z"))
    obj = client.get("/v1/order/ORD-1").json()["object"]
    assert (obj["status"], obj["finalization_date"]) == ("finalized", "2024-05-08T00:00:00Z")


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_error_rates_inject_that_status_without_applying(
    sandbox: SandboxHandle, client: httpx.Client, status: int
) -> None:
    """An injected error is answered before the order is applied."""
    sandbox.set_faults({"error_rates": {str(status): 1.0}})
    response = client.post("/v1/order", json=order())
    assert response.status_code == status
    assert sandbox.orders() == []
    if status == 502:  # like a proxy: not Button's envelope
        assert response.headers["Content-Type"].startswith("text/html")
    else:
        assert "sandbox fault" in error_message(response)


def test_429_carries_retry_after_in_seconds(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """Retry-After as delay-seconds."""
    sandbox.set_faults({"error_rates": {"429": 1.0}, "retry_after": {"seconds": 3}})
    assert client.get("/v1/order/X").headers["Retry-After"] == "3"


def test_429_carries_retry_after_as_an_http_date(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """Retry-After as an HTTP date that many seconds ahead."""
    sandbox.set_faults(
        {"error_rates": {"429": 1.0}, "retry_after": {"seconds": 30, "format": "http-date"}}
    )
    header = client.get("/v1/order/X").headers["Retry-After"]
    ahead = parsedate_to_datetime(header).timestamp() - time.time()
    assert 25 < ahead <= 31


def test_a_connection_reset_applies_nothing(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """reset_rate drops the connection (RST) before the request is applied."""
    sandbox.set_faults({"reset_rate": 1.0})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/v1/order", json=order())
    sandbox.clear_faults()
    assert sandbox.orders() == []
    assert sandbox.stats()["faults"] == {"reset": 1}


def test_a_lost_response_applies_then_drops(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """lost_response: Button applied the create but the client never heard; a retry is 409."""
    sandbox.set_faults({"lost_response_rate": 1.0})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/v1/order", json=order())
    sandbox.clear_faults()
    assert client.post("/v1/order", json=order()).status_code == 409
    assert [e["status"] for e in sandbox.requests_for("ORD-1")] == [200, 409]


def test_a_hang_outlasts_the_client_timeout() -> None:
    """hang: no answer within the client's timeout; nothing is applied.

    The hang (an hour) outlasts the client's timeout by construction; its own sandbox drops it
    when the test ends, so it cannot land in another test's counters."""
    with run_sandbox(faults={"hang": {"rate": 1.0, "seconds": 3600}}) as sandbox:
        with (
            httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_header, timeout=0.1) as c,
            pytest.raises(httpx.ReadTimeout),
        ):
            c.post("/v1/order", json=order())
        sandbox.wait_for(
            lambda: sandbox.stats()["in_flight"] == 1,
            timeout=30,
            message="the request is not hanging in the sandbox",
        )
        assert sandbox.orders() == []


def test_shutdown_does_not_wait_for_hanging_requests() -> None:
    """Leaving run_sandbox while a request hangs for an hour ends it and leaks no thread.

    run_sandbox fails when its server thread does not stop within its own deadline (10 s), and
    the caller is joined with a deadline: both far below the hang, so neither can pass by
    waiting for it."""
    threads_before = set(threading.enumerate())
    with run_sandbox(faults={"hang": {"rate": 1.0, "seconds": 3600}}) as sandbox:
        caller = threading.Thread(target=get_quietly, args=(sandbox.url("/v1/order/X"),))
        caller.start()
        sandbox.wait_for(
            lambda: sandbox.stats()["in_flight"] == 1,
            timeout=30,
            message="the request did not reach the sandbox",
        )
    caller.join(60)
    assert not caller.is_alive(), "the hanging request outlived the sandbox"
    assert set(threading.enumerate()) <= threads_before


def test_an_outage_fails_everything_until_it_ends(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """outage: 503 for the next N seconds, then normal service.

    Two outages: an hour long, so that the 503 is certain, and a short one, seen to end by
    itself (the wait has a deadline, not a fixed sleep)."""
    sandbox.set_faults({"outage": {"seconds": 3600}})
    assert client.post("/v1/order", json=order()).status_code == 503
    assert sandbox.order("ORD-1") is None
    sandbox.set_faults({"outage": {"seconds": 0.5}})
    sandbox.wait_for(
        lambda: client.post("/v1/order", json=order()).status_code == 200,
        timeout=30,
        message="the outage did not end",
    )
    assert sandbox.stats()["faults"]["outage_503"] >= 1


def test_a_rule_fails_the_first_attempts_of_one_order(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """Deterministic: the first k attempts for order X fail with the given status."""
    sandbox.set_faults(
        {
            "rules": [
                {
                    "order_id": "X",
                    "fail_first": 2,
                    "status": 502,
                    "operation": "create",
                    "retry_after": {"seconds": 1},
                }
            ]
        }
    )
    assert client.post("/v1/order", json=order("Y")).status_code == 200
    first = client.post("/v1/order", json=order("X"))
    assert (first.status_code, first.headers["Retry-After"]) == (502, "1")
    assert client.post("/v1/order", json=order("X")).status_code == 502
    assert client.post("/v1/order", json=order("X")).status_code == 200
    assert client.get("/v1/order/X").status_code == 200
    assert [e["status"] for e in sandbox.requests_for("X")] == [502, 502, 200, 200]


def test_a_rule_can_reset_the_connection(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """A rule's action may be a connection fault instead of a status."""
    sandbox.set_faults({"rules": [{"order_id": "ORD-1", "fail_first": 1, "action": "reset"}]})
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.delete("/v1/order/ORD-1")
    assert client.delete("/v1/order/ORD-1").status_code == 404


def test_accepted_answers_202_without_a_button_order_id(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """accepted_rate: 202, no button_order_id, but the order exists."""
    sandbox.set_faults({"accepted_rate": 1.0})
    response = client.post("/v1/order", json=order())
    assert response.status_code == 202
    assert response.json()["meta"]["status"] == "ok"
    assert "button_order_id" not in response.json()["object"]
    assert client.get("/v1/order/ORD-1").status_code == 200


def test_fixed_latency_delays_every_answer(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """latency.fixed_ms is added to each request."""
    sandbox.set_faults({"latency": {"fixed_ms": 200}})
    started = time.monotonic()
    client.get("/v1/order/X")
    assert time.monotonic() - started >= 0.2


def test_a_latency_distribution_is_accepted(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """latency p50/p99 configures a log-normal delay; requests still succeed."""
    sandbox.set_faults({"latency": {"p50_ms": 1, "p99_ms": 5}})
    assert all(client.get("/v1/order/X").status_code == 404 for _ in range(5))


def test_the_same_seed_gives_the_same_faults(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """Random faults are reproducible from the seed."""

    def run() -> list[int]:
        sandbox.set_faults({"seed": 42, "error_rates": {"503": 0.5}})
        return [client.get("/v1/order/X").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {404, 503}


def test_invalid_faults_are_refused_naming_the_key(sandbox: SandboxHandle) -> None:
    """POST /__sandbox/faults answers 400 with the bad key; the old faults stay."""
    response = httpx.post(sandbox.url("/__sandbox/faults"), json={"error_rates": {"503": 2}})
    assert response.status_code == 400
    assert response.json()["error"].startswith("error_rates.503")
    unknown = httpx.post(sandbox.url("/__sandbox/faults"), json={"latency_ms": 5})
    assert "latency_ms" in unknown.json()["error"]


def test_faults_come_before_authentication(sandbox: SandboxHandle) -> None:
    """Like a gateway in front of Button: injected 503s reach unauthenticated callers too."""
    sandbox.set_faults({"error_rates": {"503": 1.0}})
    assert httpx.get(sandbox.url("/v1/order/X")).status_code == 503


# --- admin API -----------------------------------------------------------------------------------


def test_orders_show_state_and_full_history(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """/__sandbox/orders: current state and every request (method, path, status, time)."""
    sandbox.set_faults({"rules": [{"order_id": "ORD-1", "fail_first": 1, "status": 500}]})
    client.post("/v1/order", json=order())
    client.post("/v1/order", json=order())
    client.post("/v1/order/ORD-1", json={"total": 10, "currency": "USD"})
    client.delete("/v1/order/NOPE")
    [entry] = sandbox.orders()
    assert (entry["status"], entry["version"], entry["object"]["total"]) == ("open", 2, 10)
    assert [(h["method"], h["path"], h["status"], h["fault"]) for h in entry["history"]] == [
        ("POST", "/v1/order", 500, "rule_500"),
        ("POST", "/v1/order", 200, None),
        ("POST", "/v1/order/ORD-1", 200, None),
    ]
    assert all(h["time"].endswith("Z") for h in entry["history"])
    orphans = httpx.get(sandbox.url("/__sandbox/orders")).json()["unknown_order_requests"]
    assert [h["status"] for h in orphans["NOPE"]] == [404]
    assert sandbox.order("NOPE") is None


def test_stats_count_by_route_and_status(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """/__sandbox/stats counts every Button request by route and status."""
    client.post("/v1/order", json=order())
    client.post("/v1/order", json=order())
    client.get("/v1/order/ORD-1")
    stats = sandbox.stats()
    assert stats["requests"] == 3
    assert stats["by_route"] == {
        "POST /v1/order": {"200": 1, "409": 1},
        "GET /v1/order/{order_id}": {"200": 1},
    }
    assert stats["by_status"] == {"200": 2, "409": 1}
    assert stats["orders"] == {"open": 1, "finalized": 0, "deleted": 0}


def test_stats_show_how_many_requests_were_in_flight_at_once() -> None:
    """in_flight and max_in_flight let a test check a client's concurrency bound."""
    with run_sandbox(faults={"hang": {"rate": 1.0, "seconds": 3600}}) as sandbox:
        callers = [
            threading.Thread(target=get_quietly, args=(sandbox.url(f"/v1/order/{n}"),))
            for n in range(4)
        ]
        for caller in callers:
            caller.start()
        sandbox.wait_for(
            lambda: sandbox.stats()["in_flight"] == 4,
            timeout=30,
            message="the four requests were not all in flight",
        )
        assert sandbox.stats()["max_in_flight"] == 4
    for caller in callers:  # leaving the block dropped the hanging requests
        caller.join(60)
    assert not any(caller.is_alive() for caller in callers)


def get_quietly(url: str) -> None:
    """GET, ignoring transport errors (for requests the sandbox is told to drop)."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=120)


# --- hold ---------------------------------------------------------------------------------------


def _post_in_thread(
    sandbox: SandboxHandle, body: dict[str, Any], timeout: float = 60
) -> tuple[threading.Thread, list[object]]:
    """POST /v1/order from a thread; the list gets the status code or the exception."""
    result: list[object] = []

    def post() -> None:
        headers = sandbox.auth_header
        try:
            with httpx.Client(base_url=sandbox.base_url, headers=headers, timeout=timeout) as c:
                result.append(c.post("/v1/order", json=body).status_code)
        except httpx.HTTPError as exc:
            result.append(exc)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, result


def test_a_held_order_gets_no_answer_until_released(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """A hold parks the requests naming its orders (others pass); released, they are served."""
    state = sandbox.set_hold(order_ids=["HELD"])
    assert state["hold"] == {"all": False, "order_ids": ["HELD"]}
    assert (state["parked"], state["parked_by_order"]) == (0, {})
    thread, result = _post_in_thread(sandbox, order("HELD"))
    assert sandbox.wait_parked("HELD", timeout=10) == 1
    assert client.post("/v1/order", json=order("FREE")).status_code == 200
    assert sandbox.order("HELD") is None, "a parked create is not applied"
    assert result == [], "a parked request gets no answer"
    assert sandbox.stats()["in_flight"] == 1

    assert sandbox.release()["hold"] == {"all": False, "order_ids": []}
    thread.join(30)
    assert result == [200]
    held = sandbox.order("HELD")
    assert held is not None
    assert [(e["status"], e["fault"]) for e in held["history"]] == [(200, None)]
    assert sandbox.hold_state()["parked"] == 0


def test_a_held_request_whose_client_left_is_never_applied(sandbox: SandboxHandle) -> None:
    """The client gives up while parked: recorded as hold_abandoned, not applied, also not
    once the hold ends."""
    host, port = httpx.URL(sandbox.base_url).host, httpx.URL(sandbox.base_url).port
    body = json.dumps(order("GONE")).encode()
    head = (
        f"POST /v1/order HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: {basic_auth(sandbox.api_key)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with sandbox.holding(hold_all=True):
        with socket.create_connection((host, port or 80), timeout=30) as raw:
            raw.sendall(head.encode() + body)
            sandbox.wait_parked("GONE", timeout=30)
        sandbox.wait_for(
            lambda: [e["fault"] for e in sandbox.requests_for("GONE")] == ["hold_abandoned"],
            timeout=10,
            message="the abandoned request was not recorded",
        )
        assert sandbox.hold_state()["parked"] == 0
    assert sandbox.order("GONE") is None
    assert sandbox.stats()["by_status"] == {"hold_abandoned": 1}


def test_reset_and_shutdown_drop_parked_requests() -> None:
    """Reset ends the hold and drops what it parked (nothing applied or recorded); so does
    leaving run_sandbox."""
    with run_sandbox(api_keys=("sk-test",)) as sandbox:
        sandbox.set_hold(hold_all=True)
        first, first_result = _post_in_thread(sandbox, order("A"))
        sandbox.wait_parked(timeout=10)
        sandbox.reset()
        first.join(30)
        assert len(first_result) == 1
        assert isinstance(first_result[0], httpx.TransportError), first_result
        assert (sandbox.orders(), sandbox.stats()["requests"]) == ([], 0)
        assert sandbox.hold_state()["hold"] == {"all": False, "order_ids": []}

        sandbox.set_hold(order_ids=["B"])
        second, second_result = _post_in_thread(sandbox, order("B"))
        sandbox.wait_parked("B", timeout=10)
    second.join(30)
    assert len(second_result) == 1
    assert isinstance(second_result[0], httpx.TransportError), second_result


def test_a_bad_hold_is_refused_naming_the_key(sandbox: SandboxHandle) -> None:
    """POST /__sandbox/hold validates like the faults document: 400 naming the key."""
    for body, key in (({"order_ids": "X"}, "order_ids"), ({"every": True}, "every")):
        response = httpx.post(sandbox.url("/__sandbox/hold"), json=body)
        assert response.status_code == 400
        assert key in response.json()["error"]
    assert sandbox.hold_state()["hold"] == {"all": False, "order_ids": []}


def test_reset_forgets_everything_and_restores_start_up_settings(
    sandbox: SandboxHandle, client: httpx.Client
) -> None:
    """POST /__sandbox/reset: no orders, no counts, start-up keys and faults."""
    client.post("/v1/order", json=order())
    sandbox.set_api_keys([])
    sandbox.set_faults({"error_rates": {"500": 1.0}})
    sandbox.reset()
    assert (sandbox.orders(), sandbox.stats()["requests"]) == ([], 0)
    assert client.post("/v1/order", json=order()).status_code == 200


def test_healthz_and_the_fault_view(sandbox: SandboxHandle) -> None:
    """healthz answers without auth; GET /__sandbox/faults shows the config and its state."""
    health = httpx.get(sandbox.url("/__sandbox/healthz"))
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    sandbox.set_faults({"outage": {"seconds": 3600}})
    view = httpx.get(sandbox.url("/__sandbox/faults")).json()
    assert view["faults"]["outage"] == {"seconds": 3600, "status": 503, "body": "json"}
    assert 0 < view["state"]["outage_remaining_s"] <= 3600


def test_order_count_counts_every_order_held(sandbox: SandboxHandle, client: httpx.Client) -> None:
    """order_count: the orders held, deleted ones included, as the stats' statuses add up."""
    for order_id in ("ORD-1", "ORD-2"):
        assert client.post("/v1/order", json=order(order_id)).status_code == 200
    assert client.delete("/v1/order/ORD-2").status_code == 200
    statuses = sandbox.stats()["orders"]
    assert (sandbox.order_count(), sum(statuses.values()), statuses["deleted"]) == (2, 2, 1)


def test_wait_for_raises_on_its_deadline(sandbox: SandboxHandle) -> None:
    """wait_for polls until its timeout, then raises TimeoutError with the message."""
    with pytest.raises(TimeoutError, match="never"):
        sandbox.wait_for(lambda: False, timeout=0.1, message="never")


# --- command line --------------------------------------------------------------------------------


def test_the_command_line_serves_with_start_up_faults() -> None:
    """python -m consumer.sandbox with flags serves (port 0: any free port); SIGTERM stops it."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumer.sandbox",
            "--port",
            "0",
            "--api-key",
            "sk-a",
            "--api-key",
            "sk-b",
            "--error-rate",
            "503=1",
            "--retry-after",
            "2",
            "--seed",
            "3",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().decode()
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", banner)
        assert found, banner
        response = httpx.get(
            found.group(1) + "/v1/order/X", headers={"Authorization": basic_auth("sk-b")}
        )
        assert (response.status_code, response.headers["Retry-After"]) == (503, "2")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()


def test_the_command_line_rejects_bad_faults() -> None:
    """A bad fault flag exits 2 with a message naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "consumer.sandbox", "--api-key", "k", "--error-rate", "418=0.5"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"error_rates.418" in result.stderr


def test_the_sandbox_can_run_in_a_child_process() -> None:
    """mode="process" serves the same API from its own process and reaps it on exit."""
    with run_sandbox(
        mode="process", api_keys=("sk-proc",), faults={"latency": {"fixed_ms": 1}}
    ) as sb:
        with httpx.Client(base_url=sb.base_url, headers=sb.auth_header) as client:
            assert client.post("/v1/order", json=order()).status_code == 200
        stored = sb.order("ORD-1")
        assert stored is not None
        assert stored["status"] == "open"
        faults = httpx.get(sb.url("/__sandbox/faults")).json()["faults"]
        assert faults["latency"] == {"fixed_ms": 1}
        sb.reset()
        assert sb.orders() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(sb.url("/__sandbox/healthz"))
