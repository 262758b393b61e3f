"""Issue 9's table, row by row, through ``button-consumer map``: arrival order is not event time.

Each row is the issue's example with the value Button should end with; the other members of each
kind are tested beside the code they exercise (``test_attribution``, ``test_mapcmd``,
``test_mapping``, ``test_ledger_property``).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.domain.event_forms import event_from_json
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.profile import Profile, epoch_ms, expires_at_ms, prune
from consumer.mapcmd import run_map

T0 = datetime(2026, 1, 5, 10, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)
CONFIG = MappingConfig()


def at(delta: timedelta) -> str:
    return (T0 + delta).isoformat().replace("+00:00", "Z")


def run(*events: dict[str, Any]) -> list[dict[str, Any]]:
    out = io.StringIO()
    run_map([json.dumps(e) for e in events], out, MappingConfig(), received=RECEIVED)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def app_open(event_id: str, time: str, token: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_type": "APP_OPEN",
        "event_time": time,
        "user_key": "u1",
        "launch_referral_url": f"https://brand.example/p?btn_ref={token}",
    }


def order_event(
    event_id: str, kind: str, time: str, products: list[dict[str, Any]] | None = None, **c: Any
) -> dict[str, Any]:
    commerce: dict[str, Any] = {"action": kind, "transaction_id": "O", **c}
    if products is not None:
        commerce["products"] = products
    return {
        "event_id": event_id,
        "event_type": kind,
        "event_time": time,
        "user_key": "u1",
        "commerce": commerce,
    }


def purchase(
    event_id: str, time: str, products: list[dict[str, Any]], total: str
) -> dict[str, Any]:
    return order_event(
        event_id, "PURCHASE", time, products, currency_code="USD", total_amount=total
    )


def summary(results: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(action, total or reason) per line: what Button is told."""
    out: list[tuple[str, Any]] = []
    for r in results:
        body = (r["request"] or {}).get("body") or {}
        out.append((r["action"], body.get("total", r["reason"])))
    return out


def test_row_1_the_token_in_force_at_purchase_time_is_attached() -> None:
    """t1 at T0, t2 at T0+2h, a late server purchase at T0+1h: btn_ref t1."""
    results = run(
        app_open("o1", at(timedelta(0)), "srctok-t1"),
        app_open("o2", at(timedelta(hours=2)), "srctok-t2"),
        purchase("p", at(timedelta(hours=1)), [{"id": "A", "price": "10", "quantity": 1}], "10"),
    )
    assert results[2]["request"]["body"]["btn_ref"] == "srctok-t1"
    assert results[2]["btn_ref_source"] == "profile"


def test_row_2_a_far_future_token_teaches_nothing() -> None:
    """A token dated 2100 is not learned; the token of T0 is attached to the purchase."""
    results = run(
        app_open("o1", "2100-01-01T00:00:00Z", "srctok-future"),
        app_open("o2", at(timedelta(0)), "srctok-t2"),
        purchase("p", at(timedelta(hours=1)), [{"id": "A", "price": "10", "quantity": 1}], "10"),
    )
    assert results[2]["request"]["body"]["btn_ref"] == "srctok-t2"


def test_row_2_kind_an_order_dated_in_the_future_is_rejected() -> None:
    """A purchase or refund dated beyond the skew is rejected with a named reason."""
    results = run(
        purchase("p", "2100-01-01T00:00:00Z", [{"id": "A", "price": "1", "quantity": 1}], "1"),
        order_event("r", "REFUND", "2100-01-01T00:00:00Z"),
    )
    assert [r["reason"] for r in results] == ["event_time_in_future"] * 2


def test_an_order_dated_by_a_reset_device_clock_is_rejected() -> None:
    """A purchase or refund dated 1970 (``event_time`` 0: a reset device clock) is rejected
    ``event_time_too_old``, never sent to Button with a 1970 purchase date."""
    results = run(
        purchase("p", "1970-01-01T00:00:00Z", [{"id": "A", "price": "1", "quantity": 1}], "1"),
        order_event("r", "REFUND", "1970-01-01T00:00:00Z"),
    )
    assert [(r["action"], r["reason"]) for r in results] == [("reject", "event_time_too_old")] * 2


def test_an_event_dated_by_a_reset_device_clock_teaches_nothing() -> None:
    """An app open dated 1970 carrying a token and an IDFA changes no profile (nothing for the
    changelog), as one dated beyond the future skew teaches nothing."""
    event = event_from_json(
        {
            **app_open("o1", "1970-01-01T00:00:00Z", "srctok-reset"),
            "device_info": {"ios_advertising_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC"},
        }
    )

    result, profile = process(event, None, CONFIG, RECEIVED)

    assert (result.reason, profile) == ("profile_only", None)  # type: ignore[union-attr]


def test_a_dead_letter_replayed_weeks_later_is_still_sent() -> None:
    """The default age limit leaves room for a dead-letter topic replayed at the end of its
    retention (30 days by default) after the event lagged: a purchase 60 days old is sent."""
    old = (RECEIVED - timedelta(days=60)).isoformat().replace("+00:00", "Z")
    results = run(purchase("p", old, [{"id": "A", "price": "1", "quantity": 1}], "1"))
    assert summary(results) == [("create", 100)]


def test_row_3_a_revised_purchase_updates_and_the_refund_applies_to_it() -> None:
    """25.00, then a revised 30.00, then a refund of one B: Button holds 30.00, then 25.00."""
    results = run(
        purchase(
            "p1",
            at(timedelta(0)),
            [{"id": "A", "price": "10", "quantity": 2}, {"id": "B", "price": "5", "quantity": 1}],
            "25.00",
        ),
        purchase(
            "p2",
            at(timedelta(minutes=1)),
            [{"id": "A", "price": "10", "quantity": 2}, {"id": "B", "price": "5", "quantity": 2}],
            "30.00",
        ),
        order_event("r", "REFUND", at(timedelta(minutes=2)), [{"id": "B", "quantity": 1}]),
    )
    assert summary(results) == [("create", 2500), ("update", 3000), ("update", 2500)]


def test_row_4_a_refund_arriving_before_its_purchase_keeps_the_order_cancelled() -> None:
    """The full refund (T0+1h) arrives first: the later-arriving purchase (T0) is not created."""
    results = run(
        order_event("r", "REFUND", at(timedelta(hours=1))),
        purchase("p", at(timedelta(0)), [{"id": "A", "price": "10", "quantity": 1}], "10"),
    )
    assert summary(results) == [("cancel", None), ("skip", "order_already_cancelled")]


def test_row_5_a_partial_refund_of_an_unknown_order_is_not_a_cancellation() -> None:
    """A refund with a partial amount and no products is read from Button first (``map`` cannot
    read: it says so, held), then applied to the purchase."""
    results = run(
        order_event("r", "REFUND", at(timedelta(hours=1)), total_amount="5.00"),
        purchase("p", at(timedelta(0)), [{"id": "A", "price": "10", "quantity": 2}], "20.00"),
    )
    assert summary(results) == [("read", "refund_held"), ("create", 1500)]


def test_row_6_an_install_referrer_is_a_token_carrier() -> None:
    """A bare install referrer in launch_referral_url lends its token to the purchase."""
    install = {
        "event_id": "i",
        "event_type": "APP_INSTALL",
        "event_time": at(timedelta(0)),
        "user_key": "u1",
        "launch_referral_url": "utm_source=partner&utm_medium=affiliate&btn_ref=srctok-aaa111",
    }
    results = run(
        install,
        purchase("p", at(timedelta(hours=1)), [{"id": "A", "price": "1", "quantity": 1}], "1"),
    )
    assert results[1]["request"]["body"]["btn_ref"] == "srctok-aaa111"


def test_row_7_a_hash_route_is_a_token_carrier() -> None:
    """A single-page app's hash route in page_url lends its token to the purchase."""
    view = {
        "event_id": "v",
        "event_type": "PAGE_VIEW",
        "event_time": at(timedelta(0)),
        "user_key": "u1",
        "page_url": "https://shop.example/#/product/1?btn_ref=srctok-bbb222",
    }
    results = run(
        view,
        purchase("p", at(timedelta(hours=1)), [{"id": "A", "price": "1", "quantity": 1}], "1"),
    )
    assert results[1]["request"]["body"]["btn_ref"] == "srctok-bbb222"


# --- row 2: the profile still expires on schedule ----------------------------------------------


def _profile_after(*events: dict[str, Any], now: datetime) -> Profile | None:
    """The profile ``process`` leaves after ``events``, each processed at ``now``."""
    profile: Profile | None = None
    for obj in events:
        _, changed = process(event_from_json(obj), profile, CONFIG, now)
        if changed is not None:
            profile = changed
    return profile


def _far_future_open(event_id: str, **device: str) -> dict[str, Any]:
    return {
        **app_open(event_id, "2100-01-01T00:00:00Z", "srctok-future"),
        "device_info": device,
    }


_IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
_GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def test_row_2_a_far_future_event_does_not_keep_the_profile_alive() -> None:
    """After a token and ids dated 2100, the profile expires when T0's token and ids do."""
    now = T0 + timedelta(hours=1)
    profile = _profile_after(
        _far_future_open("o1", ios_advertising_id=_IDFA, android_advertising_id=_GAID),
        {
            **app_open("o2", at(timedelta()), "srctok-t2"),
            "device_info": {"ios_advertising_id": _IDFA},
        },
        now=now,
    )
    assert profile is not None
    retention = CONFIG.retention
    t0_ms = epoch_ms(T0)
    assert expires_at_ms(profile, retention) == max(
        t0_ms + retention.btn_ref_ms, t0_ms + retention.device_id_ms
    )
    later = T0 + timedelta(milliseconds=max(retention.btn_ref_ms, retention.device_id_ms) + 1)
    assert prune(profile, epoch_ms(later), retention) == Profile()


def test_row_2_kind_a_far_future_event_alone_leaves_no_profile() -> None:
    """A token, IDFA or GAID dated 2100 on a user's first event stores nothing that could live."""
    for device in ({}, {"ios_advertising_id": _IDFA}, {"android_advertising_id": _GAID}):
        profile = _profile_after(_far_future_open("o1", **device), now=T0)
        assert profile is None or expires_at_ms(profile, CONFIG.retention) < epoch_ms(T0)


def test_row_2_kind_an_event_within_the_skew_expires_from_its_own_time() -> None:
    """An event dated just inside the allowed skew is learned, and expires from that time."""
    skew = CONFIG.max_future_skew
    profile = _profile_after(app_open("o1", at(skew), "srctok-edge"), now=T0)
    assert profile is not None
    assert expires_at_ms(profile, CONFIG.retention) == epoch_ms(T0 + skew) + (
        CONFIG.retention.btn_ref_ms
    )
