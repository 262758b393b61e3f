"""Customer identifiers Button may receive, and the privacy rules that shape them.

Button matches customers by ``customer.id`` (the merchant's id, sent raw), ``email_sha256`` and
``device_id`` (an advertising id). The plaintext email never leaves this module: it is trimmed,
lower-cased and SHA-256 hashed the way Button's clients do (``sha256(email.strip().lower())``),
and only the hex digest is stored or sent. Advertising ids that carry no identity (the all-zero
IDFA/GAID a device reports when tracking is off) are dropped, and so, by default, are ids of users
who asked not to be tracked (limit-ad-tracking on, or App Tracking Transparency denied or
restricted): sending them would ignore the user's choice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ZERO_ID = re.compile(r"[0-]+")
_MAX_DEVICE_ID_LENGTH = 128

ATT_DENIED_STATUSES = frozenset({"denied", "restricted"})
"""ATT statuses meaning the user (or a device policy) refused tracking. Compared lower-cased,
with any ``att_status_`` / ``ATTrackingManagerAuthorizationStatus`` prefix removed."""


def normalise_email(email: str) -> str:
    """The form Button hashes: surrounding whitespace removed, lower-cased."""
    return email.strip().lower()


def email_sha256(email: str | None) -> str | None:
    """Hex SHA-256 of the normalised email, or ``None`` if there is no usable email.

    A value without ``@`` after normalisation is not an email and yields ``None``.
    """
    if email is None:
        return None
    normalised = normalise_email(email)
    if not normalised or "@" not in normalised:
        return None
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """True for a 64-character lower-case hex digest (an already-hashed email)."""
    return _HEX64.fullmatch(value) is not None


def clean_device_id(value: str | None) -> str | None:
    """A usable advertising id, or ``None``.

    Empty, overlong, and all-zero ids (``00000000-0000-0000-0000-000000000000``) are dropped.
    The letter case is kept as the device reported it.
    """
    if value is None:
        return None
    stripped = value.strip()
    if not stripped or len(stripped) > _MAX_DEVICE_ID_LENGTH:
        return None
    if _ZERO_ID.fullmatch(stripped):
        return None
    return stripped


def is_zeroed_device_id(value: str | None) -> bool:
    """True for an all-zero advertising id: the device is withholding its id.

    iOS reports it without ATT authorisation, Android after the user opted out of ad
    personalisation. It means "no id now", so an id remembered from earlier must not be used.
    """
    return value is not None and _ZERO_ID.fullmatch(value.strip()) is not None


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
        clean_device_id(ios_advertising_id),
        clean_device_id(android_advertising_id),
        refused=False,
        idfa_withheld=is_zeroed_device_id(ios_advertising_id),
        gaid_withheld=is_zeroed_device_id(android_advertising_id),
    )
