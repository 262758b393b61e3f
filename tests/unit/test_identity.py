"""Email hashing and advertising-id privacy rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.identity import (
    canonical_email,
    clean_device_id,
    device_ids,
    email_sha256,
    is_sha256_hex,
    tracking_refused,
)

EMAILS = st.from_regex(r"[a-zA-Z0-9._%+-]{1,20}@[a-zA-Z0-9-]{1,15}\.[a-zA-Z]{2,6}", fullmatch=True)
PADDING = st.text(alphabet=" \t\r\n", max_size=4)


def test_email_is_trimmed_lowercased_and_hashed() -> None:
    """The hash is sha256 of the trimmed, lower-cased email, as Button's clients compute it."""
    expected = hashlib.sha256(b"jane.doe@example.com").hexdigest()
    assert expected == email_sha256("  Jane.Doe@Example.COM \n")


@given(email=EMAILS, left=PADDING, right=PADDING, upper=st.booleans())
def test_hash_is_normalisation_stable(email: str, left: str, right: str, upper: bool) -> None:
    """Case and surrounding whitespace never change the hash."""
    variant = left + (email.upper() if upper else email) + right
    assert email_sha256(email.lower()) == email_sha256(variant)


@given(st.text(max_size=60))
def test_hash_is_idempotent_under_normalisation(text: str) -> None:
    """Hashing the normalised form gives the same result as hashing the raw form."""
    assert email_sha256(text.strip().lower()) == email_sha256(text)


@given(email=EMAILS)
def test_hash_is_64_lowercase_hex_and_never_the_email(email: str) -> None:
    """Only a digest leaves the function."""
    digest = email_sha256(email)
    assert digest is not None
    assert is_sha256_hex(digest)
    assert email.lower() not in digest


@pytest.mark.parametrize("value", [None, "", "   ", "not-an-email"])
def test_unusable_email_yields_none(value: str | None) -> None:
    """Empty values and values without @ are not hashed."""
    assert email_sha256(value) is None


@pytest.mark.parametrize(
    "value",
    ["00000000-0000-0000-0000-000000000000", "0000000000000000", "", "  ", None, "x" * 200],
)
def test_zero_empty_or_overlong_device_ids_are_dropped(value: str | None) -> None:
    """All-zero IDFAs/GAIDs carry no identity."""
    assert clean_device_id(value) is None


def test_real_device_id_is_kept_as_reported() -> None:
    """A real id is kept, trimmed, with its letter case."""
    assert (
        clean_device_id(" 6D92078A-8246-4BA4-AE5B-76104861E7DC ")
        == "6D92078A-8246-4BA4-AE5B-76104861E7DC"
    )


@pytest.mark.parametrize(
    ("lat", "att", "refused"),
    [
        (True, None, True),
        (False, "denied", True),
        (None, "restricted", True),
        (None, "ATTrackingManagerAuthorizationStatusDenied", True),
        (None, "att_status_restricted", True),
        (False, "authorized", False),
        (None, "not_determined", False),
        (None, None, False),
    ],
)
def test_tracking_refused(lat: bool | None, att: str | None, refused: bool) -> None:
    """Limit-ad-tracking and ATT denied/restricted mean the user refused tracking."""
    assert refused == tracking_refused(lat, att)


def test_refused_tracking_drops_ids_by_default() -> None:
    """With the privacy rule on, a refusing user's ids are not used."""
    ids = device_ids("ABC-1", "gaid-1", True, None, drop_when_tracking_refused=True)
    assert (ids.idfa, ids.gaid, ids.refused) == (None, None, True)


def test_refused_tracking_can_be_ignored_by_configuration() -> None:
    """With the rule off, ids are kept (zeroed ids are still dropped)."""
    ids = device_ids(
        "ABC00001-0000-4000-8000-000000000001",
        "00000000-0000-0000-0000-000000000000",
        True,
        "denied",
        drop_when_tracking_refused=False,
    )
    assert (ids.idfa, ids.gaid, ids.refused) == (
        "ABC00001-0000-4000-8000-000000000001",
        None,
        False,
    )


# --- canonical email: the forms users paste (issue 9, item 4) -----------------------------------

_JANE = hashlib.sha256(b"jane.doe@example.com").hexdigest()
_FULL_WIDTH_JANE = "".join(chr(ord(c) + 0xFEE0) if c != "." else c for c in "jane.doe@example.com")


@pytest.mark.parametrize(
    "pasted",
    [
        "\u200bjane.doe@example.com",  # zero-width space in front
        "jane.doe@example.com\u200b",  # ... and behind
        "\ufeffjane.doe@example.com",  # byte-order mark (a file's first line)
        "jane.\u200ddoe@example.com",  # zero-width joiner inside
        "jane.doe\u2060@example.com",  # word joiner
        "\u200ejane.doe@example.com\u200f",  # left-to-right / right-to-left marks
        "jane.do\u00ade@example.com",  # soft hyphen
        "\u00a0jane.doe@example.com\u00a0",  # non-breaking spaces
        "\u3000jane.doe@example.com\u2007",  # ideographic and figure spaces
        "jane.doe@example.com\r\n",  # a line end
        "<jane.doe@example.com>",  # angle brackets
        "Jane Doe <Jane.Doe@Example.com>",  # a display name
        '"Jane Doe" <jane.doe@example.com>',
        "mailto:jane.doe@example.com",  # a link's target
        "MAILTO:Jane.Doe@Example.com",
        "mailto:jane.doe%40example.com?subject=Order",  # percent-encoded, with a query
        "<mailto:jane.doe@example.com>",
        '"jane.doe@example.com"',  # quotes
        "'jane.doe@example.com'",
        "\u201cjane.doe@example.com\u201d",  # typographic quotes
        "\u2018jane.doe@example.com\u2019",
        "\u00abjane.doe@example.com\u00bb",
        "(jane.doe@example.com)",
        "[jane.doe@example.com]",
        "jane.doe@example.com,",  # the end of a sentence or list
        "jane.doe@example.com;",
        "jane.doe@example.com.",
        _FULL_WIDTH_JANE,  # full width, as an input method types it
        "jane.doe\uff20example.com",  # a full-width at sign (IME)
        "JANE.DOE@EXAMPLE.COM",
        "  \t<mailto:JANE.DOE@example.com> \n",
    ],
)
def test_pasted_forms_of_an_email_hash_like_the_email(pasted: str) -> None:
    """Invisible characters, surrounding forms and compatibility forms do not change the hash."""
    assert email_sha256(pasted) == _JANE


def test_canonical_email_is_what_is_hashed() -> None:
    """The rule in one place: NFKC, invisible characters out, surrounding forms peeled, lower."""
    assert (
        canonical_email(" Jane Doe <MAILTO:Jane.Doe@Example.com>\u200b") == "jane.doe@example.com"
    )


def test_composed_and_decomposed_accents_hash_alike() -> None:
    """An internationalised address hashes the same whether its accents are composed or not."""
    assert email_sha256("jos\u00e9@example.com") == email_sha256("jose\u0301@example.com")


@pytest.mark.parametrize(
    "value",
    [
        "jane doe@example.com",  # a space inside is no address
        "jane@",
        "@example.com",
        "<>",
        "mailto:",
        "jane@doe@example.com",
        "\u200b",
    ],
)
def test_not_an_address_yields_none(value: str) -> None:
    """What is no address after canonicalisation is not hashed."""
    assert email_sha256(value) is None


@given(st.text(max_size=60))
def test_canonical_form_is_a_fixed_point(text: str) -> None:
    """Canonicalising twice changes nothing, so a value hashed upstream the same way matches."""
    once = canonical_email(text)
    if once is not None:
        assert once == canonical_email(once)
        assert email_sha256(text) == email_sha256(once)


# --- an email already given as a SHA-256 digest -------------------------------------------------


@pytest.mark.parametrize(
    "given_as",
    [
        _JANE,
        _JANE.upper(),
        f"  {_JANE}\n",
        f"\ufeff{_JANE}",
        f'"{_JANE}"',
        _JANE[:10].upper() + _JANE[10:],
    ],
)
def test_a_sha256_digest_is_passed_on_lower_cased(given_as: str) -> None:
    """A 64-hex digest (any case) is the hash already: passed on, never dropped or hashed again."""
    assert email_sha256(given_as) == _JANE


def test_a_base64_sha256_digest_is_passed_on_as_hex() -> None:
    """The same 32 bytes in base64 (as UID2 and The Trade Desk carry them) become the hex digest."""
    raw = bytes.fromhex(_JANE)
    assert email_sha256(base64.b64encode(raw).decode()) == _JANE
    assert email_sha256(base64.urlsafe_b64encode(raw).decode()) == _JANE


@pytest.mark.parametrize(
    "digest",
    [
        hashlib.md5(b"jane.doe@example.com").hexdigest(),
        hashlib.sha1(b"jane.doe@example.com").hexdigest(),
        _JANE[:63],
        _JANE + "0",
        "g" * 64,
    ],
)
def test_other_digests_are_not_sha256_and_are_dropped(digest: str) -> None:
    """MD5, SHA-1 and near-misses cannot become Button's SHA-256: nothing is sent."""
    assert email_sha256(digest) is None


# --- advertising ids ---------------------------------------------------------------------------

_IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
_GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


@pytest.mark.parametrize(
    "reported",
    [
        _IDFA,
        _IDFA.lower(),
        f"{{{_IDFA}}}",
        f"{{{_IDFA.lower()}}}",
        f"urn:uuid:{_IDFA.lower()}",
        _IDFA.replace("-", ""),
        f"\u200b{_IDFA}\ufeff",
        f"\u00a0{_IDFA}\n",
    ],
)
def test_idfa_forms_become_apples_form(reported: str) -> None:
    """An IDFA is sent as iOS reports it: hyphenated, upper case, whatever form it arrived in."""
    assert clean_device_id(reported, kind="idfa") == _IDFA


@pytest.mark.parametrize(
    "reported",
    [_GAID, _GAID.upper(), f"{{{_GAID.upper()}}}", _GAID.replace("-", ""), f" {_GAID}\u200b"],
)
def test_gaid_forms_become_androids_form(reported: str) -> None:
    """A GAID is sent as Android reports it: hyphenated, lower case."""
    assert clean_device_id(reported, kind="gaid") == _GAID


@pytest.mark.parametrize(
    "withheld",
    [
        "00000000-0000-0000-0000-000000000000",
        "{00000000-0000-0000-0000-000000000000}",
        "urn:uuid:00000000-0000-0000-0000-000000000000",
        "00000000000000000000000000000000",
        "\u200b00000000-0000-0000-0000-000000000000",
        "0",
    ],
)
def test_all_zero_ids_in_any_form_are_withheld(withheld: str) -> None:
    """Every form of the all-zero id means "withheld": dropped, and a remembered id forgotten."""
    ids = device_ids(withheld, withheld, None, None, drop_when_tracking_refused=True)
    assert (ids.idfa, ids.gaid, ids.idfa_withheld, ids.gaid_withheld) == (None, None, True, True)


@pytest.mark.parametrize(
    "placeholder",
    [
        "null",
        "NULL",
        "(null)",
        "nil",
        "None",
        "undefined",
        "unknown",
        "N/A",
        "-",
        "IDFA unavailable",
    ],
)
def test_placeholders_are_no_advertising_id(placeholder: str) -> None:
    """SDKs' placeholder strings carry no identity and are never sent as a device id."""
    assert clean_device_id(placeholder, kind="idfa") is None
    assert clean_device_id(placeholder, kind="gaid") is None
