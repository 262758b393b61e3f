"""Which Button attribution token (``btn_ref``) an order carries, and where it came from.

Attribution is what the merchant pays commission on, so a wrong token is as bad as none: the
publisher link ``https://r.bttn.io?btn_ref=org-...`` carries the publisher's *organisation id*,
not a token, and forwarding it would attribute the order to nobody (or to the wrong party).
Resolution order, first valid value wins:

1. the event's explicit ``btn_ref`` field (``TokenSource.EXPLICIT``);
2. integration attribute module ``1022``, key ``com.usebutton.source_token``, where mParticle's
   Button kits and web pages store it (``TokenSource.INTEGRATION_ATTRIBUTE``);
3. the ``btn_ref`` parameter of the event's token carriers, in the order given by the caller
   (deep link, launch referral, landing URL): a URL's query or hash route, a bare install
   referrer ``k=v&k=v``, encoded or wrapped (``btn_ref_from_url``) (``TokenSource.URL``);
4. the user's profile, if the token was seen within the attribution window
   (``TokenSource.PROFILE``).

A value is forwarded only if it is non-empty, at most 255 characters, made of URL-safe (RFC 3986
unreserved) ASCII characters, not a placeholder an SDK or template prints for a missing value
(``undefined``, ``null``, ``NaN``, ``btn_ref`` itself, a bare ``srctok-``...
``TOKEN_PLACEHOLDERS``) and not an
``org-`` organisation id (``btn_ref_problem`` says which rule a value breaks). A value that is
dropped is as if absent: the next source is looked at, and the profile never remembers it, so a
placeholder never hides the real token remembered before it. ``dropped_tokens`` lists an event's
dropped values (but organisation ids, which are publisher links, not faults) for the service to
count and log. Button manages the real validity window server-side, so the newest valid token is
always preferred.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl, unquote, urlsplit

BUTTON_MODULE_ID = "1022"
"""mParticle's integration-attribute module id of Button."""

SOURCE_TOKEN_ATTRIBUTE = "com.usebutton.source_token"  # noqa: S105 (an attribute name, not a secret)
"""The key Button's kits store the token under, inside module ``1022``."""

BTN_REF_PARAM = "btn_ref"
MAX_BTN_REF_LENGTH = 255

TOKEN_PLACEHOLDERS = frozenset(
    {
        # what ``identity`` drops as advertising-id placeholders...
        *("null", "(null)", "nil", "none", "undefined", "unknown", "n/a", "na", "-"),
        # ...and what JavaScript and templates print for a missing or coerced value
        *("nan", "false", "true", "0", "[object object]"),
        # ...and the parameter's own name, which a template or tag writes for a missing value
        BTN_REF_PARAM,
        # ...and a Button token's prefix with nothing after it ("srctok-" + a missing id)
        *("srctok-", "fakesrctok-"),
    }
)
"""Values (compared lower-cased) that stand for "no token": never forwarded nor remembered."""
_LONGEST_PLACEHOLDER = max(len(p) for p in TOKEN_PLACEHOLDERS)

_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+", re.ASCII)
_MAX_URL_LENGTH = 8192  # longer "URLs" are not links; refuse to parse them


class TokenSource(StrEnum):
    """Where a ``btn_ref`` was found (recorded in the profile and exposed for observability)."""

    EXPLICIT = "explicit"
    INTEGRATION_ATTRIBUTE = "integration_attribute"
    URL = "url"
    PROFILE = "profile"


class TokenProblem(StrEnum):
    """Why a value found where a token goes cannot be sent as ``btn_ref``."""

    EMPTY = "empty"  # empty or whitespace only
    PLACEHOLDER = "placeholder"  # TOKEN_PLACEHOLDERS
    TOO_LONG = "too_long"  # over 255 characters
    NOT_URL_SAFE = "not_url_safe"  # a character outside A-Z a-z 0-9 . _ ~ -
    ORGANISATION_ID = "organisation_id"  # org-...: a publisher link's organisation id


@dataclass(frozen=True, slots=True)
class DroppedToken:
    """A value an event carried where a token goes, dropped.

    ``value`` is the value itself only for a placeholder (one of a fixed list, safe to log);
    other junk may be anything, and is not kept.
    """

    source: TokenSource
    problem: TokenProblem
    value: str | None = None


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    """A ``btn_ref`` to send, its source, and when it was seen (epoch milliseconds)."""

    value: str
    source: TokenSource
    seen_at_ms: int


def btn_ref_problem(value: str) -> TokenProblem | None:
    """Why ``value`` may not be sent to Button as ``btn_ref``; ``None`` when it may.

    Rejects empty values, placeholders (``TOKEN_PLACEHOLDERS``, any letter case), overlong
    (> 255), non-URL-safe values and publisher organisation ids (``org-...``, any letter case).
    """
    if not value:
        return TokenProblem.EMPTY
    if len(value) <= _LONGEST_PLACEHOLDER and value.lower() in TOKEN_PLACEHOLDERS:
        return TokenProblem.PLACEHOLDER
    if len(value) > MAX_BTN_REF_LENGTH:
        return TokenProblem.TOO_LONG
    if _URL_SAFE.fullmatch(value) is None:
        return TokenProblem.NOT_URL_SAFE
    if value[:4].lower() == "org-":
        return TokenProblem.ORGANISATION_ID
    return None


def is_forwardable_btn_ref(value: str) -> bool:
    """True if ``value`` may be sent to Button as ``btn_ref`` (``btn_ref_problem``)."""
    return btn_ref_problem(value) is None


def clean_btn_ref(value: str | None) -> str | None:
    """``value`` stripped of surrounding whitespace if forwardable, else ``None``."""
    if value is None:
        return None
    stripped = value.strip()
    return stripped if is_forwardable_btn_ref(stripped) else None


def is_junk_btn_ref(value: str) -> bool:
    """True if ``value``, stripped, is no token and no organisation id: a fault of the sender."""
    return btn_ref_problem(value.strip()) not in (None, TokenProblem.ORGANISATION_ID)


def _dropped(source: TokenSource, value: str) -> DroppedToken | None:
    stripped = value.strip()
    problem = btn_ref_problem(stripped)
    if problem is None or problem is TokenProblem.ORGANISATION_ID:
        return None
    return DroppedToken(source, problem, stripped if problem is TokenProblem.PLACEHOLDER else None)


def btn_ref_from_url(url: str | None, rejected: list[str] | None = None) -> str | None:
    """The first forwardable ``btn_ref`` a token carrier holds, else ``None``.

    A carrier is any string users send where a token may sit (the README's "Token parsing
    rules"), read in this order:

    1. the query string of a URL (web URLs, universal links, custom-scheme deep links
       ``myapp://p/1?btn_ref=``);
    2. the query part of its fragment, as single-page apps route (``https://s/#/p/1?btn_ref=``),
       or the whole fragment when it is itself ``k=v&k=v``;
    3. a bare ``k=v&k=v`` string (an Android install referrer), with or without a leading ``?``;
    4. the same, once more, inside a wrapping parameter's value: ``referrer=`` (the Play Store
       link's install referrer) and ``link=`` (deep-link services), and any parameter whose
       value is itself a URL or percent-decodes to one (AppsFlyer's ``af_dp=``, Facebook's
       ``l.php?u=``, Google's ``url?q=``...); and inside the carrier percent-decoded, when it
       was encoded as a whole (``utm_source%3Dx%26btn_ref%3D...``).

    HTML-escaped ampersands (``&amp;``, ``&#38;``, ``&#x26;``, any case) count as ``&``; the
    parameter name matches in any letter case (Button's iOS library does); the value keeps its
    case (tokens are case-sensitive). Wrapping is followed at most ``_MAX_NESTING`` levels. A
    publisher link (``r.bttn.io?btn_ref=org-...``) yields ``None`` in every form: its value is an
    organisation id. ``rejected``, when given, receives the ``btn_ref`` values met before the
    token (or in the whole carrier, if none) that could not be one.
    """
    if not url or len(url) > _MAX_URL_LENGTH:
        return None
    if "=" not in url and "%" not in url:
        # Every form above needs a "k=v" pair, or a percent-encoded one: none here (most page
        # URLs), so the URL need not be split.
        return None
    return _token_in(url, _MAX_NESTING, rejected)


_MAX_NESTING = 3
_WRAPPERS = frozenset({"referrer", "link"})
_HTML_AMP = re.compile(r"&(?:amp|#38|#x26);", re.IGNORECASE)
_URL_START = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*(?::|%3A)", re.ASCII | re.IGNORECASE)
"""A URL's scheme (``https:``, ``brandapp:``), its colon perhaps still percent-encoded."""


def _is_link(value: str) -> bool:
    """True if a parameter's value is a URL, or percent-decodes to one, with something after
    its scheme that may hold a ``btn_ref`` (a ``=``, or a ``%`` that may decode to one)."""
    return _URL_START.match(value) is not None and ("=" in value or "%" in value)


def _token_in(carrier: str, depth: int, rejected: list[str] | None = None) -> str | None:
    text = _HTML_AMP.sub("&", carrier.strip())
    nested: list[str] = []
    for query in _query_strings(text):
        for name, value in parse_qsl(query, keep_blank_values=False):
            key = name.strip().lower()
            if key == BTN_REF_PARAM:
                token = clean_btn_ref(value)
                if token is not None:
                    return token
                if rejected is not None:
                    rejected.append(value)
            elif key in _WRAPPERS or _is_link(value):
                nested.append(value)
    if depth <= 0:
        return None
    if "%" in text:
        nested.append(unquote(text))
    for inner in nested:
        if inner and inner != carrier:
            token = _token_in(inner, depth - 1, rejected)
            if token is not None:
                return token
    return None


def _query_strings(text: str) -> list[str]:
    """The query strings a carrier may hold: the URL's query, its fragment's, or itself."""
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an invalid IPv6 netloc
        return [text] if "=" in text else []
    queries = [parts.query] if parts.query else []
    fragment = parts.fragment
    if fragment:
        queries.append(fragment.partition("?")[2] if "?" in fragment else fragment)
    if not parts.scheme and not parts.netloc and not parts.query:
        queries.append(text.partition("#")[0].removeprefix("?"))
    return [q for q in queries if "=" in q]


def btn_ref_from_integration_attributes(
    attributes: Mapping[str, Mapping[str, str]] | None,
) -> str | None:
    """The forwardable token under module ``1022`` / ``com.usebutton.source_token``, if any."""
    if not attributes:
        return None
    module = attributes.get(BUTTON_MODULE_ID)
    if not module:
        return None
    return clean_btn_ref(module.get(SOURCE_TOKEN_ATTRIBUTE))


def token_from_event(
    explicit: str | None,
    integration_attributes: Mapping[str, Mapping[str, str]] | None,
    urls: Iterable[str | None],
    event_time_ms: int,
) -> ResolvedToken | None:
    """The token the event itself carries (sources 1-3), with its source, else ``None``."""
    token = clean_btn_ref(explicit)
    if token is not None:
        return ResolvedToken(token, TokenSource.EXPLICIT, event_time_ms)
    token = btn_ref_from_integration_attributes(integration_attributes)
    if token is not None:
        return ResolvedToken(token, TokenSource.INTEGRATION_ATTRIBUTE, event_time_ms)
    for url in urls:
        token = btn_ref_from_url(url)
        if token is not None:
            return ResolvedToken(token, TokenSource.URL, event_time_ms)
    return None


def dropped_tokens(
    explicit: str | None,
    integration_attributes: Mapping[str, Mapping[str, str]] | None,
    urls: Iterable[str | None],
) -> tuple[DroppedToken, ...]:
    """The values the event carries where a token goes (sources 1-3) that are junk: empty,
    placeholders, overlong or not URL-safe; organisation ids are not listed (``is_junk_btn_ref``).

    A URL's values are those met up to its first forwardable token. Empty for most events.
    """
    found: list[DroppedToken | None] = []
    if explicit is not None:
        found.append(_dropped(TokenSource.EXPLICIT, explicit))
    module = integration_attributes.get(BUTTON_MODULE_ID) if integration_attributes else None
    attribute = module.get(SOURCE_TOKEN_ATTRIBUTE) if module else None
    if attribute is not None:
        found.append(_dropped(TokenSource.INTEGRATION_ATTRIBUTE, attribute))
    for url in urls:
        rejected: list[str] = []
        btn_ref_from_url(url, rejected)
        # A value met again in the carrier percent-decoded is one value.
        found.extend(_dropped(TokenSource.URL, value) for value in dict.fromkeys(rejected))
    return tuple(d for d in found if d is not None)


def resolve_btn_ref(
    from_event: ResolvedToken | None,
    remembered: ResolvedToken | None,
    event_time_ms: int,
    attribution_window_ms: int,
) -> ResolvedToken | None:
    """The token an order should carry: the event's own, else the profile's if still in window.

    ``remembered`` is the profile's latest token (with its original source and time). It is used
    only if it was seen at most ``attribution_window_ms`` before the order and not after it, and
    is then reported with source ``PROFILE``.
    """
    if from_event is not None:
        return from_event
    if remembered is None or not is_forwardable_btn_ref(remembered.value):
        return None
    age = event_time_ms - remembered.seen_at_ms
    if 0 <= age <= attribution_window_ms:
        return ResolvedToken(remembered.value, TokenSource.PROFILE, remembered.seen_at_ms)
    return None
