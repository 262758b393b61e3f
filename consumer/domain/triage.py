"""Which decoded records can change nothing: found before the validated model is built.

Most events are views and opens (90 % in the bench's filter workload). Such an event reaches
Button never, and changes the user's profile only through what ``mapping`` learns from every
event: a token (``btn_ref``, integration attribute 1022, a ``btn_ref`` in ``launch_referral_url``
or ``page_url``) and the advertising ids and tracking consent in ``device_info``. An event that
carries none of those (nor a junk value where a token goes: the full path counts it), no order
(``commerce``) and is not a development event changes nothing, whatever the stored profile
holds: ``inert_record`` recognises it on the record fastavro decoded, so the pipeline finishes
it as skipped without the model, the profile read or a changelog write.

It is conservative: any doubt (a field of an unexpected type, an empty required field, an
unknown event type) answers ``None``, and the record takes the full path, which validates it
(and dead-letters it when it is invalid). What it does not check are optional fields that the
mapping never reads for such an event (``user_identities``, ``custom_attributes``...): an inert
view with an invalid one of those is skipped instead of dead-lettered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consumer.domain.attribution import (
    BUTTON_MODULE_ID,
    SOURCE_TOKEN_ATTRIBUTE,
    btn_ref_from_integration_attributes,
    btn_ref_from_url,
    is_junk_btn_ref,
)
from consumer.domain.button import Skip
from consumer.domain.events import EventType
from consumer.domain.mapping import skip_for

_INERT_TYPES: dict[str, EventType] = {
    t.value: t
    for t in EventType
    if t not in (EventType.PURCHASE, EventType.REFUND, EventType.UNKNOWN)
}
_SKIPS: dict[EventType, Skip] = {t: skip_for(t) for t in _INERT_TYPES.values()}
"""The mapping's decision for each inert type, made once (``Skip`` is immutable)."""
_DEVICE_FIELDS = (
    "ios_advertising_id",
    "android_advertising_id",
    "limit_ad_tracking",
    "att_authorization_status",
)
"""``device_info`` fields the mapping learns from (``ios_idfv`` is never used)."""


@dataclass(frozen=True, slots=True)
class InertEvent:
    """An event that can neither reach Button nor change a profile (see the module docstring).

    Attributes:
        event_id: the event's id (non-empty).
        event_type: a type that is not an order's.
        event_time_ms: the event time in epoch milliseconds.
        result: the mapping's decision for it (``mapping.skip_for``).
    """

    event_id: str
    event_type: EventType
    event_time_ms: int
    result: Skip


def inert_record(record: Mapping[str, Any]) -> InertEvent | None:
    """The record as an ``InertEvent`` if it can change nothing, else ``None``.

    Args:
        record: a commerce event as fastavro decodes it with the reader schema (an aware
            ``datetime`` for ``event_time``).
    """
    event_type = _INERT_TYPES.get(record.get("event_type"))  # type: ignore[arg-type]
    if event_type is None or not (_well_formed(record) and _teaches_nothing(record)):
        return None
    try:
        event_time_ms = int(record["event_time"].timestamp() * 1000)
    except (OverflowError, ValueError):
        return None
    return InertEvent(record["event_id"], event_type, event_time_ms, _SKIPS[event_type])


def _well_formed(record: Mapping[str, Any]) -> bool:
    """The fields the model requires are there, and it is not a development event."""
    event_id, user_key, event_time = (
        record.get("event_id"),
        record.get("user_key"),
        record.get("event_time"),
    )
    environment = record.get("environment")
    return (
        isinstance(event_id, str)
        and bool(event_id)
        and isinstance(user_key, str)
        and bool(user_key)
        and isinstance(event_time, datetime)
        and event_time.tzinfo is not None
        and (environment is None or environment == "PRODUCTION")
    )


def _teaches_nothing(record: Mapping[str, Any]) -> bool:
    """No order, no token, no advertising id or consent: nothing for the mapping to learn."""
    if record.get("commerce") is not None or record.get("btn_ref") is not None:
        return False
    device = record.get("device_info")
    if device is not None and (
        not isinstance(device, Mapping) or any(device.get(f) is not None for f in _DEVICE_FIELDS)
    ):
        return False
    attributes = record.get("integration_attributes")
    if attributes and (
        not isinstance(attributes, Mapping)
        or not all(isinstance(m, Mapping) for m in attributes.values())
        or _attribute_token(attributes)
    ):
        return False
    return _no_token(record.get("launch_referral_url")) and _no_token(record.get("page_url"))


def _attribute_token(attributes: Mapping[str, Mapping[str, Any]]) -> bool:
    """Module 1022 holds a token, or junk where the token goes (the full path counts it)."""
    if btn_ref_from_integration_attributes(attributes) is not None:
        return True
    value = attributes.get(BUTTON_MODULE_ID, {}).get(SOURCE_TOKEN_ATTRIBUTE)
    return isinstance(value, str) and is_junk_btn_ref(value)


def _no_token(url: object) -> bool:
    """No URL, or one that carries no ``btn_ref`` (``attribution.btn_ref_from_url``) and no
    junk value where one goes (the full path counts and logs it, ``dropped_tokens``)."""
    if url is None:
        return True
    if not isinstance(url, str):
        return False
    rejected: list[str] = []
    return btn_ref_from_url(url, rejected) is None and not any(map(is_junk_btn_ref, rejected))
