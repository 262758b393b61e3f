"""The logic of ``button-consumer map``: events as JSON lines in, the Button requests out.

Merchants and support need to see what an event *will* become before it reaches Button (and
why it is skipped or rejected), without Kafka or HTTP. This runs exactly the service's code path:
the event forms' ``event_from_json``, the pure ``mapping.process`` and the same ``ProfileStore``
and codec, with profiles carried across lines by the event's ``user_key`` (what the service uses
as the record key), so an install on line 1 lends its token to a purchase on line 5.

Output: one JSON object per non-blank input line, in input order::

    {"line": 3, "event_id": "evt-3", "action": "create",
     "request": {"method": "POST", "path": "/v1/order", "body": {...}}, "reason": null}

``action`` is ``create``, ``update``, ``cancel``, ``read``, ``skip`` or ``reject``; ``request`` is
null for skip and reject; ``reason`` names why for skip and reject (``detail`` adds a human
sentence to a reject); ``read`` is a partial refund of an order the profile does not know: ``map``
cannot read, so it says the service would read the order from Button first (``request``, the
``GET``), ``reason`` the decision without a read (``refund_held``) and ``detail`` what follows;
a create also says where its ``btn_ref`` came from (``btn_ref_source``: ``explicit``,
``integration_attribute``, ``url``, ``profile`` or null). A line that made
refunds held in the order's ledger stop applying (a purchase they do not fit), or whose mapping
dropped an order holding refunds for its purchase (expired, or beyond the profile's order cap),
lists them in ``discarded`` (``event_id``, ``reason``, ``detail``, and ``order_id`` for another
order's: what the service logs as ``held_refund_discarded``); the key is absent otherwise.
What the event carried that is neither sent nor remembered is listed in ``dropped`` (absent when
nothing was), as the service counts and logs it: junk where a token goes (``field``
``btn_ref``, ``source``, ``problem``, ``value`` for a placeholder: ``btn_ref_dropped``), a
product without a price (``line_items``, ``product_without_price``, its id) or an advertising
id that is not a UUID (``ios_advertising_id`` or ``android_advertising_id``, ``not_uuid``):
``input_dropped``. A
malformed line is a reject (``invalid_json``, ``not_an_object`` or the event model's reason such
as ``missing_field`` or ``invalid_timestamp``), never a crash; a line whose mapping fails
unexpectedly is a reject with reason ``unprocessable`` (and the exception's class in
``detail``), and the next line runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from consumer.domain.button import (
    Action,
    ButtonRequest,
    MapResult,
    Read,
    Send,
    Skip,
    discarded_by,
)
from consumer.domain.event_forms import event_from_json
from consumer.domain.events import CommerceEvent
from consumer.domain.mapping import (
    MappingConfig,
    dropped_inputs,
    event_dropped_tokens,
    process,
)
from consumer.domain.profile import Profile
from consumer.engine.profiles import ProfileStore
from consumer.errors import DecodeError

_PARTITION = 0  # offline, every user lives in one partition


def run_map(
    lines: Iterable[str],
    out: TextIO,
    config: MappingConfig,
    now: datetime | None = None,
    received: datetime | None = None,
) -> int:
    """Map every JSON line of ``lines`` and write one JSON result line per event to ``out``.

    Args:
        lines: the input, one event per line (blank lines are ignored).
        out: where the result lines go.
        config: the mapping settings (the same object the service uses).
        now: the processing time used to expire profile parts; ``None`` (recommended for
            files of past events) processes each event as if at its own ``event_time``, which
            makes the output independent of when the command runs.
        received: the time events are judged against for ``MAPPING_MAX_FUTURE_SKEW_HOURS``
            (an event dated later than it plus the skew teaches nothing; such an order is
            rejected); ``now`` if given, else the time the command starts. Events are judged
            too old (``MAPPING_MAX_EVENT_AGE_DAYS``, ``event_time_too_old``) only against an
            explicit ``received`` or ``now`` (``--now``): against the time the command starts,
            the output would depend on when it runs.

    Returns:
        The exit status: 0 if no line was rejected, 1 if at least one was.
    """
    store = ProfileStore(config.retention)
    if received is None and now is None:
        # Each event as of its own time: the output must not depend on when the command runs,
        # so a file of past events is not judged too old (``event_time_too_old``) against it.
        config = replace(config, max_event_age=timedelta.max)
    received = received or now or datetime.now(UTC)
    rejected = False
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        event, problem = _parse(text)
        if event is None:
            rejected = True
            _write(out, number, problem.get("event_id"), problem)
            continue
        try:
            described = _map_one(store, event, config, now, received)
        except Exception as exc:  # noqa: BLE001 - one line never stops the others
            described = _reject("unprocessable", f"{type(exc).__name__}: {str(exc)[:200]}")
        rejected = rejected or described["action"] == "reject"
        _write(out, number, event.event_id, described)
    return 1 if rejected else 0


def _map_one(
    store: ProfileStore,
    event: CommerceEvent,
    config: MappingConfig,
    now: datetime | None,
    received: datetime,
) -> dict[str, Any]:
    key = event.user_key.encode("utf-8")
    before = store.get(_PARTITION, key)
    moment = event.event_time if now is None else now
    result, profile = process(event, before, config, moment, received=received)
    if profile is not None:
        store.put(_PARTITION, key, profile)
    described = _describe(result)
    if isinstance(result, Send) and result.request.action is Action.CREATE:
        described["btn_ref_source"] = _btn_ref_source(profile or before, result.request.order_id)
    dropped = [
        {"field": "btn_ref", "source": d.source.value, "problem": d.problem.value, "value": d.value}
        for d in event_dropped_tokens(event)
    ] + [{"field": d.field, "problem": d.problem, "value": d.value} for d in dropped_inputs(event)]
    if dropped:
        described["dropped"] = dropped
    return described


def map_one(
    text: str, config: MappingConfig, received: datetime
) -> tuple[dict[str, Any], ButtonRequest | None]:
    """One event (a JSON object in the input form above) without any profile: its result as
    ``run_map`` writes it (without ``line``), and the Button request it becomes, if any.

    ``POST /test-event`` of the admin server runs this: decode, enrichment and mapping, exactly
    as ``map`` does for a first line. ``received`` (timezone-aware) is the wall-clock time the
    event arrived: its ``event_time`` is judged against it as the consumer judges a record's
    (``MAPPING_MAX_FUTURE_SKEW_HOURS``), so a test event the consumer would reject is rejected.
    """
    event, problem = _parse(text)
    if event is None:
        return problem, None
    result, profile = process(event, None, config, event.event_time, received=received)
    described = {"event_id": event.event_id, **_describe(result)}
    if isinstance(result, Send):
        if result.request.action is Action.CREATE:
            described["btn_ref_source"] = _btn_ref_source(profile, result.request.order_id)
        return described, result.request
    return described, None


def _parse(text: str) -> tuple[CommerceEvent | None, dict[str, Any]]:
    """The event of one line, or ``None`` and the reject describing why."""
    try:
        obj = json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer too long
        return None, _reject("invalid_json", f"line is not JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return None, _reject("not_an_object", "line is JSON but not an object")
    event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    try:
        return event_from_json(obj), {}
    except DecodeError as exc:
        return None, {**_reject(exc.reason, str(exc)), "event_id": event_id}


def _btn_ref_source(profile: Profile | None, order_id: str) -> str | None:
    order = None if profile is None else profile.order(order_id)
    if order is None or order.btn_ref_source is None:
        return None
    return str(order.btn_ref_source)


def _reject(reason: str, detail: str) -> dict[str, Any]:
    return {"action": "reject", "request": None, "reason": reason, "detail": detail}


def _describe(result: MapResult) -> dict[str, Any]:
    if isinstance(result, Send):
        request = result.request
        return {
            "action": str(request.action),
            "request": {
                "method": request.method,
                "path": request.path,
                "body": None if request.body is None else dict(request.body),
            },
            "reason": None,
            **_discarded(result),
        }
    if isinstance(result, Skip):
        return {"action": "skip", "request": None, "reason": result.reason, **_discarded(result)}
    if isinstance(result, Read):
        request = result.request
        return {
            "action": str(request.action),
            "request": {"method": request.method, "path": request.path, "body": None},
            "reason": result.held.reason,
            "detail": "the profile does not know the order: the service reads it from Button"
            " first and applies the refund to Button's order (an update, or a cancel when"
            f" nothing is left); {result.held.reason} when Button does not know it either, and"
            " in a dry run",
            **_discarded(result),
        }
    return {**_reject(result.reason, result.detail), **_discarded(result)}


def _discarded(result: MapResult) -> dict[str, Any]:
    """``discarded``: the held refunds the event made stop applying, or that left the profile
    with their order (``order_id``: that order), when there are any."""
    if not discarded_by(result):
        return {}
    return {
        "discarded": [
            {
                "event_id": r.event_id,
                "reason": r.reason,
                "detail": r.detail,
                **({} if r.order_id is None else {"order_id": r.order_id}),
            }
            for r in discarded_by(result)
        ]
    }


def _write(out: TextIO, number: int, event_id: str | None, described: dict[str, Any]) -> None:
    described = {k: v for k, v in described.items() if k != "event_id"}
    line = {"line": number, "event_id": event_id, **described}
    out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
