"""btn_ref resolution: order of sources, forwardable values, the publisher-link pitfall."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.attribution import (
    ResolvedToken,
    TokenSource,
    btn_ref_from_integration_attributes,
    btn_ref_from_url,
    is_forwardable_btn_ref,
    resolve_btn_ref,
    token_from_event,
)

TOKEN = "srctok-0123456789abcdef"
DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (TOKEN, True),
        ("fakesrctok-abcdef0123456789", True),
        ("opaque_Token.~-1", True),
        ("org-1234567890abcdef", False),
        ("ORG-1234", False),
        ("", False),
        ("x" * 255, True),
        ("x" * 256, False),
        ("srctok with space", False),
        ("srctok-é", False),
        ("srctok/abc", False),
    ],
)
def test_forwardable_values(value: str, ok: bool) -> None:
    """Only non-empty, <=255, URL-safe, non-org values are forwarded."""
    assert ok == is_forwardable_btn_ref(value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"https://brand.bttn.io/p/42?btn_ref={TOKEN}", TOKEN),
        (f"https://www.brand.com/landing?utm_source=x&btn_ref={TOKEN}&from_landing=true", TOKEN),
        (f"myapp://product/42?BTN_REF={TOKEN}", TOKEN),
        (f"brand.com/p?btn_ref={TOKEN}", TOKEN),
        ("https://r.bttn.io?btn_ref=org-1234567890abcdef&btn_url=https%3A%2F%2Fbrand.com", None),
        ("https://brand.com/p?btn_ref=", None),
        ("https://brand.com/p?other=1", None),
        ("", None),
        (None, None),
        ("https://[::1/p?btn_ref=srctok-1", None),
        (f"https://brand.com/p?btn_ref=org-1&btn_ref={TOKEN}", TOKEN),
    ],
)
def test_btn_ref_from_url(url: str | None, expected: str | None) -> None:
    """The btn_ref query parameter of brand links; publisher org ids are never returned."""
    assert expected == btn_ref_from_url(url)


@given(st.text(max_size=300))
def test_url_parsing_never_crashes_and_never_returns_org_ids(url: str) -> None:
    """Arbitrary text yields either None or a forwardable token."""
    token = btn_ref_from_url(url)
    assert token is None or is_forwardable_btn_ref(token)


def test_integration_attribute_1022() -> None:
    """mParticle's Button module stores the token as com.usebutton.source_token."""
    attrs = {"1022": {"com.usebutton.source_token": TOKEN}, "80": {"x": "y"}}
    assert btn_ref_from_integration_attributes(attrs) == TOKEN
    assert btn_ref_from_integration_attributes({"1022": {"other": TOKEN}}) is None
    assert btn_ref_from_integration_attributes(None) is None


def test_sources_in_order() -> None:
    """Explicit beats integration attribute beats URL."""
    attrs = {"1022": {"com.usebutton.source_token": "srctok-attr"}}
    url = "https://brand.com/?btn_ref=srctok-url"
    assert ResolvedToken(TOKEN, TokenSource.EXPLICIT, 5) == token_from_event(TOKEN, attrs, [url], 5)
    assert ResolvedToken("srctok-attr", TokenSource.INTEGRATION_ATTRIBUTE, 5) == token_from_event(
        None, attrs, [url], 5
    )
    assert ResolvedToken("srctok-url", TokenSource.URL, 5) == token_from_event(
        "org-123", None, [None, url], 5
    )
    assert token_from_event("", {}, [], 5) is None


def test_profile_token_used_within_window_only() -> None:
    """A remembered token is used only if seen within the attribution window before the order."""
    remembered = ResolvedToken(TOKEN, TokenSource.URL, 10 * DAY_MS)
    in_window = resolve_btn_ref(None, remembered, 15 * DAY_MS, 7 * DAY_MS)
    assert ResolvedToken(TOKEN, TokenSource.PROFILE, 10 * DAY_MS) == in_window
    assert resolve_btn_ref(None, remembered, 18 * DAY_MS, 7 * DAY_MS) is None
    assert resolve_btn_ref(None, remembered, 9 * DAY_MS, 7 * DAY_MS) is None


def test_event_token_wins_over_profile() -> None:
    """The newest token (the event's own) is always preferred."""
    remembered = ResolvedToken("srctok-old", TokenSource.URL, 0)
    own = ResolvedToken(TOKEN, TokenSource.EXPLICIT, 1)
    assert own == resolve_btn_ref(own, remembered, 1, DAY_MS)
