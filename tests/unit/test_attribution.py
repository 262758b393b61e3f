"""btn_ref resolution: order of sources, forwardable values, the publisher-link pitfall."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.attribution import (
    _MAX_NESTING,
    DroppedToken,
    ResolvedToken,
    TokenProblem,
    TokenSource,
    _token_in,
    btn_ref_from_integration_attributes,
    btn_ref_from_url,
    btn_ref_problem,
    dropped_tokens,
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


@given(
    st.text(
        alphabet=st.sampled_from("btn_refBTN_REF&#;?/:.-x1srctok[]"),
        max_size=80,
    )
)
def test_a_carrier_without_a_pair_or_a_percent_sign_is_not_split(carrier: str) -> None:
    """``btn_ref_from_url`` answers ``None`` at once for text without "=" and "%" (most page
    URLs): the full search over every carrier form finds nothing in such text either."""
    assert _token_in(carrier, _MAX_NESTING) is None
    assert btn_ref_from_url(carrier) is None


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


# --- every carrier form users send (issue 9, rows 6 and 7 and their kind) ----------------------

CARRIERS = [
    # row 6: a bare Android install referrer, not a URL
    ("utm_source=partner&utm_medium=affiliate&btn_ref=srctok-aaa111", "srctok-aaa111"),
    # row 7: a single-page app's hash route
    ("https://shop.example/#/product/1?btn_ref=srctok-bbb222", "srctok-bbb222"),
    # the same kind: a fragment that is itself a query string
    ("https://shop.example/p#btn_ref=srctok-ccc333&x=1", "srctok-ccc333"),
    # the install referrer percent-encoded as a whole
    ("utm_source%3Dpartner%26btn_ref%3Dsrctok-ddd444", "srctok-ddd444"),
    # the Play Store link wrapping one in its referrer= parameter
    (
        "https://play.google.com/store/apps/details?id=com.brand"
        "&referrer=utm_source%3Dpartner%26btn_ref%3Dsrctok-eee555",
        "srctok-eee555",
    ),
    # referrer= wrapping, twice encoded
    ("referrer=utm_source%253Dx%2526btn_ref%253Dsrctok-fff666", "srctok-fff666"),
    # HTML-escaped ampersands, pasted from a page's source
    ("https://brand.example/p?utm_source=x&amp;btn_ref=srctok-ggg777", "srctok-ggg777"),
    ("utm_source=x&AMP;btn_ref=srctok-hhh888", "srctok-hhh888"),
    ("https://brand.example/p?a=1&#38;btn_ref=srctok-iii999", "srctok-iii999"),
    # any letter case of the parameter name; the token's own case is kept
    ("https://brand.example/p?BTN_REF=srctok-AbC123", "srctok-AbC123"),
    ("Btn_Ref=srctok-jjj000", "srctok-jjj000"),
    ("HTTPS://BRAND.EXAMPLE/#/P?Btn_Ref=srctok-kkk111", "srctok-kkk111"),
    # a leading '?' on a bare query string, surrounding whitespace
    ("  ?btn_ref=srctok-lll222  ", "srctok-lll222"),
    # a deep-link wrapper's link= parameter (Firebase dynamic links, Branch)
    (
        "https://brand.page.link/?link=https%3A%2F%2Fbrand.example%2Fp%3Fbtn_ref%3Dsrctok-mmm333",
        "srctok-mmm333",
    ),
    # a deep link encoded in any parameter (AppsFlyer's af_dp), btn_ref its first parameter
    (
        "https://brand.onelink.me/abc?af_dp=brandapp%3A%2F%2Fp%3Fbtn_ref%3Dsrctok-nnn444",
        "srctok-nnn444",
    ),
    # Facebook's and Google's outbound-link wrappers
    (
        "https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example%2Fp%3Fbtn_ref%3Dsrctok-ooo555"
        "&h=AT0abc",
        "srctok-ooo555",
    ),
    (
        "https://www.google.com/url?sa=t&q=https%3A%2F%2Fshop.example%2F%3Fbtn_ref%3Dsrctok-ppp666"
        "&usg=AOv",
        "srctok-ppp666",
    ),
    # the wrapped link's own value twice encoded
    (
        "https://l.example/?u=https%253A%252F%252Fs.example%252F%253Fbtn_ref%253Dsrctok-qqq777",
        "srctok-qqq777",
    ),
]


@pytest.mark.parametrize(("carrier", "expected"), CARRIERS)
def test_every_carrier_form_yields_its_token(carrier: str, expected: str) -> None:
    """Query, hash route, bare and encoded install referrers, `&amp;`, any case: one token."""
    assert expected == btn_ref_from_url(carrier)


@pytest.mark.parametrize(
    "carrier",
    [
        "utm_source=partner&btn_ref=org-abc123",
        "https://shop.example/#/p?btn_ref=ORG-abc123",
        "btn_ref%3Dorg-abc123",
        "referrer=utm_source%3Dx%26btn_ref%3DOrg-abc",
        "https://r.bttn.io?btn_ref=org-123&amp;btn_url=https%3A%2F%2Fbrand.example",
        "btn_ref=",
        "btn_ref=not%20url%20safe",
        "just some text",
        "%",
        "#?",
        "referrer=" + "referrer%3D" * 40 + "btn_ref%3Dsrctok-deep",
    ],
)
def test_carriers_without_a_forwardable_token(carrier: str) -> None:
    """Publisher org ids stay refused in every form; junk and endless wrapping give nothing."""
    assert btn_ref_from_url(carrier) is None


_NAMES = st.sampled_from(["a", "utm_source", "af_dp", "u", "q", "deep_link_value", "x-y"])
_VALUES = st.sampled_from(["1", "partner", "a%20b", "", "https%3A%2F%2Fo.example%2F"])


@st.composite
def _query(draw: st.DrawFn, carried: str) -> str:
    """``k=v&...`` with ``carried`` (a ``k=v`` pair) at a drawn position among other pairs."""
    others = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=3))
    pairs = [f"{name}={value}" for name, value in others]
    pairs.insert(draw(st.integers(0, len(pairs))), carried)
    return "&".join(pairs)


@st.composite
def _nested_links(draw: st.DrawFn) -> str:
    """A link carrying ``btn_ref`` (query or hash route), nested 1 to ``_MAX_NESTING`` deep as
    the percent-encoded value of another link's parameter of any name, at any position."""
    link = draw(
        st.sampled_from(["brandapp://p", "https://shop.example/p", "https://s.example/#/p"])
    )
    link += "?" + draw(_query(f"btn_ref={TOKEN}"))
    for _ in range(draw(st.integers(1, _MAX_NESTING))):
        outer = draw(st.sampled_from(["https://brand.onelink.me/abc", "https://l.example/l.php"]))
        name = draw(_NAMES)
        link = outer + "?" + draw(_query(f"{name}={quote(link, safe='')}"))
    return link


@given(_nested_links())
def test_a_link_nested_in_any_parameter_yields_its_token_wherever_it_sits(link: str) -> None:
    """A parameter value that is itself a link (a deep link, an outbound-link wrapper's
    target) is searched as one, up to ``_MAX_NESTING`` levels: the token is found whatever the
    parameter's name and whatever the positions of the pairs, its own included."""
    assert btn_ref_from_url(link) == TOKEN


def test_nesting_beyond_the_bound_is_not_followed() -> None:
    """Links nested deeper than ``_MAX_NESTING`` are not searched (the work per URL stays
    bounded), and a link nested in itself ends."""
    link = f"https://s.example/?btn_ref={TOKEN}"
    for _ in range(_MAX_NESTING + 2):
        link = "https://l.example/?u=" + quote(link, safe="")
    assert btn_ref_from_url(link) is None
    assert btn_ref_from_url("https://l.example/?u=https%3A%2F%2Fl.example%2F%3Fu%3D") is None


# --- placeholders and junk: dropped from every source, counted (the user trial's fault 1) -----

PLACEHOLDERS = [
    "undefined",
    "null",
    "NULL",
    "(null)",
    "nil",
    "None",
    "none",
    "unknown",
    "n/a",
    "na",
    "-",
    "NaN",
    "false",
    "true",
    "0",
    "[object Object]",
    # the parameter's own name: a template or tag that writes the key for its missing value
    "btn_ref",
    "BTN_REF",
    # a token's prefix with nothing after it: a template that writes "srctok-" + a missing id
    "srctok-",
    "SRCTOK-",
    "fakesrctok-",
]


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_sdk_placeholders_are_not_tokens(value: str) -> None:
    """What SDKs and templates print for a missing value is never forwarded, in any case."""
    assert not is_forwardable_btn_ref(value)
    assert btn_ref_problem(value) is TokenProblem.PLACEHOLDER


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", TokenProblem.EMPTY),
        ("x" * 256, TokenProblem.TOO_LONG),
        ("srctok abc", TokenProblem.NOT_URL_SAFE),
        ("srctok-\u200babc", TokenProblem.NOT_URL_SAFE),
        ("{{btn_ref}}", TokenProblem.NOT_URL_SAFE),
        ("org-1234", TokenProblem.ORGANISATION_ID),
        (TOKEN, None),
        ("nullable-srctok", None),
    ],
)
def test_each_value_that_cannot_be_a_token_says_why(value: str, problem: TokenProblem) -> None:
    """The contract's rules (1-255 URL-safe characters), placeholders and organisation ids."""
    assert problem is btn_ref_problem(value)


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_values_are_no_token(blank: str) -> None:
    """Empty and whitespace-only values from every source give nothing."""
    attrs = {"1022": {"com.usebutton.source_token": blank}}
    assert token_from_event(blank, attrs, [f"https://b.example/?btn_ref={blank}"], 5) is None


def test_a_placeholder_falls_back_to_the_next_source() -> None:
    """``btn_ref: "undefined"``, attribute 1022 ``"null"`` and ``?btn_ref=undefined`` are
    passed over: the next source's real token is the event's."""
    attrs = {"1022": {"com.usebutton.source_token": "null"}}
    urls = ["https://b.example/landing?btn_ref=undefined", f"https://b.example/p?btn_ref={TOKEN}"]
    assert ResolvedToken(TOKEN, TokenSource.URL, 5) == token_from_event("undefined", attrs, urls, 5)
    real = {"1022": {"com.usebutton.source_token": TOKEN}}
    expected = ResolvedToken(TOKEN, TokenSource.INTEGRATION_ATTRIBUTE, 5)
    assert expected == token_from_event("undefined", real, [], 5)
    assert token_from_event("undefined", attrs, urls[:1], 5) is None


def test_a_placeholder_in_a_url_is_passed_over() -> None:
    """``?btn_ref=undefined`` gives nothing; a real token further in the carrier still wins."""
    assert btn_ref_from_url("https://b.example/landing?btn_ref=undefined") is None
    wrapped = f"https://b.example/?btn_ref=null&link=https%3A%2F%2Fb.example%2F%3Fbtn_ref%3D{TOKEN}"
    assert btn_ref_from_url(wrapped) == TOKEN


def test_the_junk_an_event_carries_is_listed_by_source_and_problem() -> None:
    """Every value found where a token goes that cannot be one, but an organisation id (a
    publisher link, not a fault of the app); a placeholder is named, other junk is not."""
    attrs = {"1022": {"com.usebutton.source_token": " NULL "}}
    urls = [
        "https://r.bttn.io?btn_ref=org-1",
        "myapp://p?btn_ref=srctok%20x",
        None,
        "https://b.example/?btn_ref=undefined",
    ]
    expected = (
        DroppedToken(TokenSource.EXPLICIT, TokenProblem.TOO_LONG, None),
        DroppedToken(TokenSource.INTEGRATION_ATTRIBUTE, TokenProblem.PLACEHOLDER, "NULL"),
        DroppedToken(TokenSource.URL, TokenProblem.NOT_URL_SAFE, None),
        DroppedToken(TokenSource.URL, TokenProblem.PLACEHOLDER, "undefined"),
    )
    assert expected == dropped_tokens("s" * 300, attrs, urls)
    assert dropped_tokens(TOKEN, None, [f"https://b.example/?btn_ref={TOKEN}"]) == ()
    assert dropped_tokens(None, None, ["https://b.example/?btn_ref=srctok-"]) == (
        DroppedToken(TokenSource.URL, TokenProblem.PLACEHOLDER, "srctok-"),
    )
    assert dropped_tokens(None, None, [None, "https://b.example/p?x=1"]) == ()
