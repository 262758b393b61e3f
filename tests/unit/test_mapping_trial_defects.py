"""Reproductions of mapping defects found by a domain trial (``button-consumer map``'s path).

Each test drives the offline mapping (``consumer.mapcmd.run_map``: the service's own
``mapping.process`` with profiles carried across lines by ``user_key``) with JSON lines as a
merchant's producers send them, and reads the Button requests it prints. The defects are fixed
(their tests failed before); one finding is a documented limit of Button's contract, pinned as
the README states it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from consumer.domain.attribution import btn_ref_from_url
from consumer.domain.mapping import MappingConfig
from consumer.mapcmd import run_map

TOKEN = "srctok-bbbbbbbbbbbbbbbb"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def _map(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = io.StringIO()
    run_map([json.dumps(e) for e in events], out, MappingConfig())
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _purchase(event_id: str, time: str, order_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "PURCHASE",
        "event_time": time,
        "user_key": "user-1",
        "commerce": {
            "action": "PURCHASE",
            "transaction_id": order_id,
            "currency_code": "USD",
            "total_amount": "100.00",
        },
        **fields,
    }


def _sent_btn_refs(results: list[dict[str, Any]], order_id: str) -> list[str | None]:
    """The ``btn_ref`` of every create and update ``map`` printed for ``order_id``."""
    refs: list[str | None] = []
    for result in results:
        request = result.get("request") or {}
        body = request.get("body") or {}
        if body.get("order_id") == order_id:
            refs.append(body.get("btn_ref"))
    return refs


def test_a_token_arriving_after_its_order_was_created_attributes_only_later_orders() -> None:
    """README, "Attribution token": the token is chosen once, when the order is created; "a
    sighting that arrives after its order was created ... is remembered for later orders but
    does not attribute the one already sent". Here the landing page view (09:58, ``btn_ref``
    in ``page_url``) arrives after its purchase (10:00): web and app events travel separate
    pipelines, SDKs upload batches late.

    A documented limit, pinned (the trial reported it as a defect): Button's contract
    (button-api.md, 4) says ``btn_ref`` need not be re-sent on an update and does not say an
    update may set it, so no update carries it. Every request of O1 goes without ``btn_ref``
    (its replay re-sends the stored create; the refund's update has none); O2 at 10:30 takes
    the token from the profile.
    """
    results = _map(
        [
            _purchase("p1", "2026-01-05T10:00:00Z", "O1", platform="WEB"),
            {
                "event_id": "v1",
                "event_type": "PAGE_VIEW",
                "event_time": "2026-01-05T09:58:00Z",
                "user_key": "user-1",
                "platform": "WEB",
                "page_url": f"https://shop.example/landing?btn_ref={TOKEN}",
            },
            _purchase("p1", "2026-01-05T10:00:00Z", "O1", platform="WEB"),  # its replay
            {
                "event_id": "r1",
                "event_type": "REFUND",
                "event_time": "2026-01-06T10:00:00Z",
                "user_key": "user-1",
                "commerce": {"action": "REFUND", "transaction_id": "O1", "total_amount": "10"},
            },
            _purchase("p2", "2026-01-05T10:30:00Z", "O2", platform="WEB"),
        ]
    )

    assert _sent_btn_refs(results, "O2") == [TOKEN]  # the profile did learn it
    assert _sent_btn_refs(results, "O1") == [None, None, None]  # create, replay, refund's update


@pytest.mark.parametrize(
    ("platform", "refusal", "earlier"),
    [
        (
            "IOS",
            {
                "ios_advertising_id": "00000000-0000-0000-0000-000000000000",
                "att_authorization_status": "DENIED",
            },
            {"ios_advertising_id": IDFA},
        ),
        (
            "ANDROID",
            {"limit_ad_tracking": True},
            {"android_advertising_id": GAID, "limit_ad_tracking": False},
        ),
    ],
    ids=["att_denied", "limit_ad_tracking"],
)
def test_an_older_event_arriving_late_does_not_undo_a_tracking_refusal(
    platform: str, refusal: dict[str, Any], earlier: dict[str, Any]
) -> None:
    """README, "Privacy": "With limit-ad-tracking or ATT denied/restricted no advertising id
    is sent"; ``MAPPING_DROP_LIMITED_AD_TRACKING_IDS``: "never send IDFA/GAID of users with
    limit-ad-tracking or ATT denied". The user refuses tracking on Jan 5; an app event of
    Jan 2 (an SDK batch uploaded late) arrives after the refusal; the user buys on Jan 6.

    Expected: the Jan 6 order carries no advertising id (the refusal of Jan 5 is the user's
    latest word, in event time as in arrival).
    Before the fix, the late Jan 2 event put the id back into the profile and the order sent it
    as ``customer.device_id``: the profile forgot its ids on the refusal but not when it was.
    """

    def app_event(event_id: str, time: str, device: dict[str, Any]) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "event_type": "APP_OPEN",
            "event_time": time,
            "user_key": "user-1",
            "platform": platform,
            "device_info": device,
        }

    results = _map(
        [
            app_event("e1", "2026-01-05T10:00:00Z", refusal),
            app_event("e2", "2026-01-02T10:00:00Z", earlier),
            _purchase("p1", "2026-01-06T10:00:00Z", "O1", platform=platform),
        ]
    )

    body = results[-1]["request"]["body"]
    assert "device_id" not in body.get("customer", {}), body


def test_a_nested_deep_link_yields_its_token_whatever_its_position() -> None:
    """README, "Token parsing rules": the carrier is also read "percent-decoded when it was
    encoded as a whole". An AppsFlyer OneLink carries the brand's deep link encoded in
    ``af_dp``; whether its ``btn_ref`` is found depends on whether another parameter comes
    before it in the deep link.

    Expected: both links give the same answer (the token, or, if nested links outside
    ``referrer=``/``link=`` are not a carrier, none for both).
    Before the fix ``...%3Fa%3D1%26btn_ref%3D...`` gave the token (found only in the whole link
    percent-decoded, where the deep link's ``&`` splits it), ``...%3Fbtn_ref%3D...`` none: a
    parameter's value that is a link was not searched. Now both give the token.
    """
    second = f"https://brand.onelink.me/abc?af_dp=brandapp%3A%2F%2Fp%3Fa%3D1%26btn_ref%3D{TOKEN}"
    first = f"https://brand.onelink.me/abc?af_dp=brandapp%3A%2F%2Fp%3Fbtn_ref%3D{TOKEN}"

    assert btn_ref_from_url(second) == TOKEN
    assert btn_ref_from_url(first) == btn_ref_from_url(second)
