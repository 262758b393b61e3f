"""Button's documented example payloads against the sandbox, over real HTTP.

Each test sends a request exactly as the reference shows it and checks the documented response:
status code, Button's envelope and the fields the reference lists.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from consumer.sandbox.testing import SandboxHandle, run_sandbox
from tests.reference import example_create

API_KEY = "sk-XXX"
HEADERS = {
    # The Python client's own test expects exactly this header for the key sk-XXX.
    "Authorization": "Basic c2stWFhYOg==",
    "Content-Type": "application/json",
    "X-Button-API-Version": "2018-02-13",
}
CREATE: dict[str, Any] = example_create()
PARTIAL_REFUND: dict[str, Any] = {
    "total": 2999,
    "currency": "USD",
    "line_items": [{"identifier": "SKU-RED-M", "quantity": 1, "amount": 2999, "total": 2999}],
}
# The fields Button's Node client test fixture shows a create returning (session_id and ifa are
# mobile-SDK fields the server API does not take).
CREATE_RESPONSE_FIELDS = {
    "button_order_id",
    "order_id",
    "total",
    "currency",
    "btn_ref",
    "line_items",
    "status",
    "purchase_date",
    "finalization_date",
}


@pytest.fixture(scope="module")
def running() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=(API_KEY,)) as handle:
        yield handle


@pytest.fixture
def button(running: SandboxHandle) -> Iterator[httpx.Client]:
    running.reset()
    with httpx.Client(base_url=running.base_url, headers=HEADERS, timeout=5) as client:
        yield client


def test_create_answers_200_with_the_order_and_a_button_order_id(button: httpx.Client) -> None:
    """Section 11 create: 200, meta ok, the order echoed with button_order_id and status open."""
    response = button.post("/v1/order", json=CREATE)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    doc = response.json()
    assert set(doc) == {"meta", "object"}
    assert doc["meta"] == {"status": "ok"}
    obj = doc["object"]
    assert set(obj) >= CREATE_RESPONSE_FIELDS
    assert re.fullmatch(r"btnorder-[0-9a-f]{16}", obj["button_order_id"])
    for name in ("order_id", "total", "currency", "btn_ref", "purchase_date", "line_items"):
        assert obj[name] == CREATE[name], name
    assert obj["status"] == "open"
    assert datetime.fromisoformat(obj["finalization_date"]) > datetime.fromisoformat(
        CREATE["purchase_date"]
    )


def test_a_duplicate_create_answers_409_in_the_error_envelope(button: httpx.Client) -> None:
    """Section 11 error example: {"meta": {"status": "error"}, "error": {"message": ...}}."""
    button.post("/v1/order", json=CREATE)
    response = button.post("/v1/order", json=CREATE)
    assert response.status_code == 409
    doc = response.json()
    assert set(doc) == {"meta", "error"}
    assert doc["meta"] == {"status": "error"}
    assert doc["error"]["message"].startswith("Order already exists")


def test_a_partial_refund_update_answers_the_new_state(button: httpx.Client) -> None:
    """Section 11 update: POST /v1/order/ORD-100045 without btn_ref; total and items replaced."""
    button.post("/v1/order", json=CREATE)
    response = button.post("/v1/order/ORD-100045", json=PARTIAL_REFUND)
    assert response.status_code == 200
    obj = response.json()["object"]
    assert (obj["total"], obj["line_items"]) == (2999, PARTIAL_REFUND["line_items"])
    assert (obj["order_id"], obj["btn_ref"], obj["status"]) == (
        "ORD-100045",
        "srctok-0123456789abcdef",
        "open",
    )


def test_a_full_cancellation_answers_object_null(button: httpx.Client) -> None:
    """Section 11 cancel: DELETE without a body answers exactly {"meta": ok, "object": null}."""
    button.post("/v1/order", json=CREATE)
    response = button.delete("/v1/order/ORD-100045", headers={"Content-Type": ""})
    assert (response.status_code, response.json()) == (
        200,
        {"meta": {"status": "ok"}, "object": None},
    )
    assert button.get("/v1/order/ORD-100045").json()["object"]["status"] == "deleted"


def test_get_answers_the_order_in_the_object_envelope(button: httpx.Client) -> None:
    """GET /v1/order/{order_id}: {"meta": ok, "object": {...}}."""
    created = button.post("/v1/order", json=CREATE).json()["object"]
    response = button.get("/v1/order/ORD-100045")
    assert response.status_code == 200
    assert response.json() == {"meta": {"status": "ok"}, "object": created}


def test_list_by_btn_ref_answers_objects_with_paging_meta(button: httpx.Client) -> None:
    """GET /v1/order/btn-ref/{btn_ref}: a list under objects; meta has next and previous."""
    button.post("/v1/order", json=CREATE)
    doc = button.get("/v1/order/btn-ref/srctok-0123456789abcdef").json()
    assert doc["meta"] == {"status": "ok", "next": None, "previous": None}
    assert [o["order_id"] for o in doc["objects"]] == ["ORD-100045"]


def test_a_documented_test_token_is_accepted(button: httpx.Client) -> None:
    """Button's fake test tokens (fakesrctok- plus 16 hex) are valid btn_ref values."""
    body = copy.deepcopy(CREATE) | {"btn_ref": "fakesrctok-abcdef0123456789"}
    assert button.post("/v1/order", json=body).status_code == 200


def test_an_unknown_order_answers_404_in_the_error_envelope(button: httpx.Client) -> None:
    """The clients' tests show 404 with {"meta": {"status": "error"}, "error": {...}}."""
    response = button.get("/v1/order/ORD-NOPE")
    assert response.status_code == 404
    assert response.json()["meta"] == {"status": "error"}
    assert response.json()["error"]["message"]


def test_a_finalized_order_cannot_be_changed(running: SandboxHandle, button: httpx.Client) -> None:
    """Status finalized is immutable: update and cancel answer 403."""
    button.post("/v1/order", json=CREATE)
    running.finalize("ORD-100045")
    assert button.get("/v1/order/ORD-100045").json()["object"]["status"] == "finalized"
    assert button.post("/v1/order/ORD-100045", json=PARTIAL_REFUND).status_code == 403
    assert button.delete("/v1/order/ORD-100045").status_code == 403


def test_the_api_key_is_the_basic_user_name_with_an_empty_password(
    running: SandboxHandle, button: httpx.Client
) -> None:
    """``curl -u KEY:`` works; the key sent as the password does not."""
    url = running.url("/v1/order/ORD-NOPE")
    assert httpx.get(url, auth=(API_KEY, "")).status_code == 404  # authenticated, no order
    assert httpx.get(url, auth=("", API_KEY)).status_code == 401
