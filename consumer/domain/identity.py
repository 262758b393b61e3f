"""Customer identifiers Button may receive, and the privacy rules that shape them.

Button matches customers by ``customer.id`` (the merchant's id), ``email_sha256`` and
``device_id`` (an advertising id). The plaintext email never leaves this module: only the hex
SHA-256 of its canonical form is stored or sent. The canonical form (``canonical_email``) is what
Button's clients hash (``sha256(email.strip().lower())``) and what the ad platforms' and CDPs'
hashing guides ask for (trim, lower-case), made robust to what users and pipelines really send:
Unicode compatibility forms folded (NFKC), invisible characters removed, and the wrappers people
paste around an address (``<...>``, a display name, ``mailto:``, quotes, a trailing comma) peeled
off. Provider-specific rewrites (Gmail's dots and ``+tags``) are deliberately not applied: Button's
own clients do not apply them, so the same person would hash differently on the two paths. An
email already given as a SHA-256 digest (64 hex characters in any case, or its base64 form) is
passed on as the lower-case hex digest, never hashed again.

Advertising ids that carry no identity (the all-zero IDFA/GAID a device reports when tracking is
off, in any of its spellings, and SDK placeholders such as ``null``) are dropped; UUID-shaped ids
are sent in their platform's form (IDFA upper case, GAID lower case, hyphenated); any other
value (``opt-out``, a truncated UUID, free text) is no IDFA or GAID and is dropped too. By default
ids of users who asked not to be tracked (limit-ad-tracking on, or App Tracking Transparency denied
or restricted) are dropped too: sending them would ignore the user's choice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ANY_CASE_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_BASE64_32_BYTES = re.compile(r"[A-Za-z0-9+/_-]{43}=?")
_ZERO_ID = re.compile(r"[0-]+")
_UUID_HEX = re.compile(r"[0-9a-fA-F]{32}")
_MAX_DEVICE_ID_LENGTH = 128
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf"})
"""Control and format characters: zero-width space/joiners, word joiner, BOM, soft hyphen,
bidirectional marks, line ends. None is part of an address or an id; all are removed anywhere."""
_WRAPPERS = {
    '"': '"',
    "'": "'",
    "`": "`",
    "<": ">",
    "(": ")",
    "[": "]",
    "\u201c": "\u201d",
    "\u2018": "\u2019",
    "\u00ab": "\u00bb",
}
"""Pairs users paste around an address (after NFKC, full-width forms are already ASCII)."""
_TRAILING_PUNCTUATION = ".,;:"
_DEVICE_ID_PLACEHOLDERS = frozenset(
    {"null", "(null)", "nil", "none", "undefined", "unknown", "n/a", "na", "-"}
)

DeviceIdKind = Literal["idfa", "gaid"]

ATT_DENIED_STATUSES = frozenset({"denied", "restricted"})
"""ATT statuses meaning the user (or a device policy) refused tracking. Compared lower-cased,
with any ``att_status_`` / ``ATTrackingManagerAuthorizationStatus`` prefix removed."""


def _visible(text: str) -> str:
    """NFKC, then every control and format (invisible) character removed, then trimmed."""
    folded = unicodedata.normalize("NFKC", text)
    kept = "".join(ch for ch in folded if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)
    return kept.strip()


def _unwrap(text: str) -> str:
    """Peel the forms pasted around an address until none is left."""
    while True:
        before = text
        closing = _WRAPPERS.get(text[:1])
        if len(text) >= 2 and closing is not None and text.endswith(closing):
            text = text[1:-1].strip()
        elif text.endswith(">") and "<" in text:
            text = text[text.rindex("<") + 1 : -1].strip()  # a display name: Jane <jane@...>
        if text[:7].lower() == "mailto:":
            text = unquote(text[7:].split("?", 1)[0]).strip()
        text = text.rstrip(_TRAILING_PUNCTUATION).strip()
        if text == before:
            return text


def canonical_email(email: str) -> str | None:
    """The form of an email that is hashed, or ``None`` when the value is no address.

    In order: Unicode NFKC (full-width and other compatibility forms become their plain
    characters, composed and decomposed accents agree); control and format characters removed
    anywhere (zero-width spaces and joiners, word joiner, BOM, soft hyphen, bidirectional marks,
    CR/LF); surrounding whitespace trimmed (any Unicode space, non-breaking included); wrappers
    peeled, repeatedly: quotes (straight, typographic, guillemets), ``<...>``, ``(...)``,
    ``[...]``, a display name before ``<...>``, a ``mailto:`` prefix (any case; its ``?query``
    dropped, percent-encoding decoded), trailing ``.,;:``; then lower-cased (``str.lower``, as
    Button's clients do, not case-folding) and NFKC again. The result must be ``local@domain``
    with exactly one ``@``, both parts non-empty and no whitespace.
    """
    text = _unwrap(_visible(email))
    canonical = unicodedata.normalize("NFKC", text.lower())
    local, at, domain = canonical.partition("@")
    if not at or not local or not domain or "@" in domain:
        return None
    if any(ch.isspace() for ch in canonical):
        return None
    return canonical


def normalise_email(email: str) -> str:
    """The canonical form of an email, or ``""`` when it is no address."""
    return canonical_email(email) or ""


def _given_digest(value: str) -> str | None:
    """The lower-case hex SHA-256 when ``value`` already is one (hex any case, or base64)."""
    if _ANY_CASE_HEX64.fullmatch(value):
        return value.lower()
    if _BASE64_32_BYTES.fullmatch(value):
        padded = value + "=" * (-len(value) % 4)
        try:
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) == hashlib.sha256().digest_size:
            return raw.hex()
    return None


def email_sha256(email: str | None) -> str | None:
    """Hex SHA-256 of the canonical email, or ``None`` if there is no usable email.

    A value that already is a SHA-256 digest (64 hex characters in any case, or the base64 of
    32 bytes, possibly wrapped or padded like an address) is passed on as lower-case hex, not
    hashed again. A value that is neither a digest nor an address (``canonical_email``) yields
    ``None``, so do MD5 and SHA-1 digests: they cannot become the SHA-256 Button expects.
    """
    if email is None:
        return None
    digest = _given_digest(_unwrap(_visible(email)))
    if digest is not None:
        return digest
    canonical = canonical_email(email)
    if canonical is None:
        return None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """True for a 64-character lower-case hex digest (an already-hashed email)."""
    return _HEX64.fullmatch(value) is not None


def _device_id_text(value: str) -> str:
    """An advertising id without invisible characters, braces or a ``urn:uuid:`` prefix."""
    text = _visible(value)
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text[:9].lower() == "urn:uuid:":
        text = text[9:].strip()
    return text


def clean_device_id(value: str | None, *, kind: DeviceIdKind = "idfa") -> str | None:
    """A usable advertising id in its platform's form, or ``None``.

    Invisible characters, surrounding whitespace, braces (``{...}``) and a ``urn:uuid:`` prefix
    are removed. A UUID (hyphenated or as 32 hex digits) is written hyphenated, in upper case for
    an IDFA (iOS's ``uuidString``) and lower case for a GAID (as Android reports it). Empty,
    overlong and all-zero ids (``00000000-0000-0000-0000-000000000000`` in any of these forms),
    SDK placeholders (``null``, ``(null)``, ``undefined``, ``unknown``, ``n/a``...) and values
    with whitespace inside are dropped, and so is any other value that is not a UUID (IDFA and
    GAID are UUIDs: ``opt-out``, a truncated UUID, free text): never sent nor learned
    (``is_junk_device_id`` tells the caller which to report).
    """
    if value is None:
        return None
    text = _device_id_text(value)
    if not text or len(text) > _MAX_DEVICE_ID_LENGTH or _ZERO_ID.fullmatch(text):
        return None
    if text.lower() in _DEVICE_ID_PLACEHOLDERS or any(ch.isspace() for ch in text):
        return None
    hex_digits = text.replace("-", "")
    if _UUID_HEX.fullmatch(hex_digits) and (
        len(text) == 32 or [len(p) for p in text.split("-")] == [8, 4, 4, 4, 12]
    ):
        uuid = "-".join(
            (
                hex_digits[:8],
                hex_digits[8:12],
                hex_digits[12:16],
                hex_digits[16:20],
                hex_digits[20:],
            )
        )
        return uuid.upper() if kind == "idfa" else uuid.lower()
    return None


def is_junk_device_id(value: str | None) -> bool:
    """True for a reported advertising id that carries no identity and is no known way of
    saying so: not a UUID, not all-zero (withheld), not empty nor an SDK placeholder. Such a
    value (``opt-out``, a truncated UUID, free text) is dropped and reported (``input_dropped``,
    ``not_uuid``)."""
    if value is None:
        return False
    text = _device_id_text(value)
    if not text or _ZERO_ID.fullmatch(text) or text.lower() in _DEVICE_ID_PLACEHOLDERS:
        return False
    return clean_device_id(value) is None


def is_zeroed_device_id(value: str | None) -> bool:
    """True for an all-zero advertising id: the device is withholding its id.

    iOS reports it without ATT authorisation, Android after the user opted out of ad
    personalisation. It means "no id now", so an id remembered from earlier must not be used.
    """
    return value is not None and _ZERO_ID.fullmatch(_device_id_text(value)) is not None


def _att_status(value: str | None) -> str:
    if value is None:
        return ""
    status = value.strip().lower()
    for prefix in ("att_status_", "attrackingmanagerauthorizationstatus"):
        status = status.removeprefix(prefix)
    return status.replace("_", "").replace(" ", "")


def tracking_refused(limit_ad_tracking: bool | None, att_authorization_status: str | None) -> bool:
    """True if the user limited ad tracking or ATT is denied/restricted."""
    return bool(limit_ad_tracking) or _att_status(att_authorization_status) in ATT_DENIED_STATUSES


@dataclass(frozen=True, slots=True)
class DeviceIds:
    """The event's usable advertising ids after the privacy rules.

    ``refused`` is True when the event says the user refused tracking and the configuration
    honours it: then no id is usable, and ids remembered in the profile must be forgotten too.
    ``idfa_withheld`` / ``gaid_withheld`` are True when the device reported that id all-zero:
    a remembered id of that kind must be forgotten as well.
    """

    idfa: str | None
    gaid: str | None
    refused: bool
    idfa_withheld: bool = False
    gaid_withheld: bool = False


def device_ids(
    ios_advertising_id: str | None,
    android_advertising_id: str | None,
    limit_ad_tracking: bool | None,
    att_authorization_status: str | None,
    *,
    drop_when_tracking_refused: bool,
) -> DeviceIds:
    """Apply the privacy rules to an event's advertising ids."""
    if drop_when_tracking_refused and tracking_refused(limit_ad_tracking, att_authorization_status):
        return DeviceIds(None, None, refused=True)
    return DeviceIds(
        clean_device_id(ios_advertising_id, kind="idfa"),
        clean_device_id(android_advertising_id, kind="gaid"),
        refused=False,
        idfa_withheld=is_zeroed_device_id(ios_advertising_id),
        gaid_withheld=is_zeroed_device_id(android_advertising_id),
    )
