"""Email hashing and advertising-id privacy rules."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.identity import (
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
        "ABC-1",
        "00000000-0000-0000-0000-000000000000",
        True,
        "denied",
        drop_when_tracking_refused=False,
    )
    assert (ids.idfa, ids.gaid, ids.refused) == ("ABC-1", None, False)
