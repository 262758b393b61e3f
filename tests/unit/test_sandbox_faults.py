"""The sandbox's fault injection on its own: an injected status can answer like a proxy in
front of Button (an HTML page) instead of Button's JSON error envelope."""

from __future__ import annotations

import json

import pytest

from consumer.sandbox.faults import FaultConfig, FaultConfigError, FaultInjector
from consumer.sandbox.server import _fault_response


def test_an_outage_can_answer_403_with_an_html_page() -> None:
    """outage.body=html: every request is answered 403 with a text/html page, no JSON."""
    injector = FaultInjector(
        FaultConfig.from_json({"outage": {"seconds": 60, "status": 403, "body": "html"}})
    )

    response = _fault_response(injector.decide("update", "ORD-1"))

    assert (response.status, response.content_type) == (403, "text/html")
    assert isinstance(response.body, bytes)
    assert response.body.startswith(b"<html>")
    assert b"403 Forbidden" in response.body


def test_a_rule_can_answer_403_with_an_html_page_for_one_order_only() -> None:
    """A rule with body=html answers that order's create with HTML; others are not faulted."""
    injector = FaultInjector(
        FaultConfig.from_json(
            {
                "rules": [
                    {
                        "order_id": "ORD-1",
                        "operation": "create",
                        "fail_first": 1,
                        "status": 403,
                        "body": "html",
                    }
                ]
            }
        )
    )

    decision = injector.decide("create", "ORD-1")
    response = _fault_response(decision)

    assert (decision.kind, decision.label, decision.body) == ("status", "rule_403", "html")
    assert (response.status, response.content_type) == (403, "text/html")
    assert injector.decide("create", "ORD-2").kind == "none"


def test_an_injected_status_answers_buttons_json_envelope_by_default() -> None:
    """Without body, a 403 is Button's JSON error envelope, as before."""
    injector = FaultInjector(FaultConfig.from_json({"outage": {"seconds": 60, "status": 403}}))

    response = _fault_response(injector.decide("cancel", "ORD-1"))

    assert (response.status, response.content_type) == (403, "application/json")
    assert isinstance(response.body, bytes)
    assert json.loads(response.body)["meta"]["status"] == "error"


def test_the_body_round_trips_through_the_faults_json() -> None:
    """GET /__sandbox/faults shows the body of the outage and of each rule."""
    doc = {
        "outage": {"seconds": 5, "status": 403, "body": "html"},
        "rules": [{"order_id": "ORD-1", "status": 403, "body": "html"}],
    }

    shown = FaultConfig.from_json(doc).to_json()

    assert (shown["outage"]["body"], shown["rules"][0]["body"]) == ("html", "html")
    assert FaultConfig.from_json(shown) == FaultConfig.from_json(doc)


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"outage": {"seconds": 5, "body": "xml"}}, "outage.body"),
        ({"rules": [{"order_id": "ORD-1", "body": 1}]}, "rules[0].body"),
    ],
)
def test_an_unknown_body_is_refused_naming_the_key(doc: dict[str, object], named: str) -> None:
    """Only "json" and "html" are bodies; the error names the key."""
    with pytest.raises(FaultConfigError, match=rf"^{named.replace('[', '.').replace(']', '.')}"):
        FaultConfig.from_json(doc)
