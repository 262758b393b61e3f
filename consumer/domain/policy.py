"""The failure policy: what happens to a record at each step, in one table (DESIGN, 4).

Scattered ``try/except`` blocks drift apart; a single table can be read, reviewed against
Button's Order API documentation and tested row by row. The pipeline executes the decisions of
this module and decides nothing itself: every way a record can end, or wait, comes from here.

- ``decide_error``: an error before any request (undecodable bytes, an unknown schema, an
  unreachable schema registry) or one the service cannot continue after (the dead-letter topic
  cannot be written, Kafka is unusable, anything unexpected).
- ``decide_mapped``: the mapper's verdict on a decoded event (skip, reject, send), a record whose
  order is parked behind a dead letter, and a dry run.
- ``decide``: one of Button's answers to a request (``classify`` is the table itself), with the
  retry budget applied. The Button client never raises, it returns a ``ButtonOutcome``.

Verdicts:

- ``SEND``: build nothing more; send the record's request to Button.
- ``DONE``: the record is finished (accepted, or already in the wanted state: 409 on a create
  without a follow-up, 404 on cancel, Button's own 403 saying "finalized" on update or cancel,
  an update answered 404 for an order that reads as deleted; the last two are ``noteworthy``
  and should be logged; skipped on purpose; a dry run). Only Button's JSON error envelope can
  finish a record this way: a 403 or 404 page from a proxy, WAF or CDN in front of Button
  never does (its 404 is a dead letter, ``http_404``).
- ``FOLLOW_UP``: a create answered 409 that carries a follow-up (``Send.follow_up``, the update
  of the same order with the same full state): Button holds the order, perhaps in another state
  (a profile lost or expired, a revised purchase created first). Send the follow-up through the
  same path (limits, retries, gates); its answer decides the record (``order_exists_update``).
  Idempotent: the update carries the whole state, so a repeated one changes nothing.
- ``VERIFY``: an update answered 404 in Button's envelope: the order was deleted at Button (a
  cancel that reached Button before a crash, replayed in front of it) or Button never knew it.
  Read the order (``GET /v1/order/{id}``, after the same gates); ``judge_read`` decides:
  ``DONE`` when it reads as deleted, the dead letter ``http_404`` when Button answers otherwise,
  and for a read that fails, what a failed attempt of the update gets (retry, pause, breaker).
- ``READ``: the mapping needs the order as Button holds it (``Read``: a partial refund of an
  order the profile does not know). Read it (``GET /v1/order/{id}``, after the same gates, within
  the rate limit); ``judge_lookup`` decides: ``MAP`` when Button answered (the order, or its 404
  in its envelope), and for a read that fails, what a failed attempt gets (retry within the
  record's budget, pause, breaker; the dead letter at the end names the read and its answer).
- ``MAP``: Button answered the read: map the event again with the answer (``Lookup``), whose
  decision is then carried out as any mapped event's.
- ``RETRY``: try again after ``delay`` seconds. For Button (429, 5xx, 408, timeouts, connection
  errors, unreadable responses) the budget is ``max_attempts`` attempts *and* ``max_elapsed``
  seconds since the first attempt; when the next retry would exceed either, the verdict becomes
  ``DEAD_LETTER`` with reason ``retries_exhausted`` or ``retry_deadline`` and ``cause`` naming
  the last failure. An unreadable body is retried, not dead-lettered: it is usually a proxy's
  error page, and every Button call we make is safe to repeat (a repeated create answers 409).
  An unreachable schema registry is waited for without a budget: the record itself may be fine.
  A schema id the registry answers 404 for is retried for about 30 s (a follower may not have
  replicated it yet), then dead-lettered as ``unknown_schema``.
- ``DEAD_LETTER``: send the record to the DLQ with ``reason`` (400 and other 4xx, 404 on create,
  on an update whose order Button does not hold deleted, or from in front of Button, 409 on
  update or cancel, decode and mapping errors, records parked behind a dead letter).
  ``Decision.parks`` says what the dead letter parks (DESIGN, 5): a delivery failure, whose
  request may still have to reach Button before the order's later ones, parks its order (and a
  parked record keeps it parked); a record that could not be decoded parks its whole key, as its
  order is not known; a dead letter decided by the event's own data, the same way each time (a
  mapping rejection, a record that decoded but is not a valid event), changed nothing in the
  profile or at Button and parks nothing. A dead letter too large for the DLQ is replaced by a
  reference (``too_large``: the key and the headers, with the original size, no value).
- ``PAUSE``: the API key may be refused (401, or a 403 that does not say "finalized"). Close the
  auth gate: pause every partition, report not ready, keep the record. A record-independent
  probe (``judge_probe``: the harmless read of an unknown order) decides when the gate opens;
  only an accepted probe or a 2xx opens it, never another non-2xx. When the probe shows the key
  is accepted and the record is answered 403 again (``key_accepted``), the 403 is the record's
  own: Button's envelope dead-letters it (``http_403``), a page from in front of Button is
  retried within the budget. Attempts answered ``PAUSE`` do not count against the retry budget,
  and time spent paused does not count as elapsed.
- ``BREAK``: Button pushes back (429 or 503 with ``Retry-After``) or is down for everyone (an
  exhausted budget while the breaker counts an outage, ``outage``). Open the circuit breaker
  for ``delay`` seconds (``Retry-After`` capped at ``RetryPolicy.retry_after_cap``; 0: the
  breaker's probe interval): intake pauses, no request is sent, then a probe decides whether it
  closes. The attempt does not count against the budget, time spent open is not elapsed, and a
  record that waited out an outage starts a fresh budget: only what fails while Button answers
  others is dead-lettered. ``breaker_signal`` says which answers count towards an outage.
- ``STOP``: the dead-letter topic or Kafka itself is unusable, or an unexpected error occurred.
  Stop consuming without storing the offset: never drop a record.

Reasons are short machine strings (``ok``, ``order_exists``, ``http_400``, ``retries_exhausted``);
they become DLQ headers and bounded metric labels. The README's table is rendered from these
functions (``python -m consumer.devtools.policy_table``) and a unit test keeps the two equal.

The delay math lives in ``consumer.domain.backoff``, a pure leaf module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from consumer.domain.backoff import Backoff, RandomSource
from consumer.domain.button import Action, MapResult, Read, Reject, Send, Skip
from consumer.domain.deadletter import Stage
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.errors import (
    BrokerError,
    CodecReason,
    DeadLetterError,
    DecodeError,
    InvalidEventError,
    MappingError,
    RecordTooLargeError,
    SchemaNotFoundYetError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)


class Verdict(StrEnum):
    """What the engine does next with a record."""

    SEND = "send"
    DONE = "done"
    FOLLOW_UP = "follow_up"
    VERIFY = "verify"
    READ = "read"
    MAP = "map"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    PAUSE = "pause"
    BREAK = "break"
    STOP = "stop"


class Parks(StrEnum):
    """What a dead letter parks (DESIGN, 5): the later records of what wait behind it."""

    NOTHING = "nothing"
    """Decided by the event's own data (a mapping rejection, an invalid event), or no order at
    all (a record without a value): it changed nothing, nothing needs to wait for it."""
    ORDER = "order"
    """Its request may still have to reach Button first (a delivery failure), or its order is
    parked already (a parked record): the order's later records follow it to the DLQ."""
    KEY = "key"
    """It could not be decoded: its order is unknown, so every later order record of its key
    follows it."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One row of the failure table, applied.

    Attributes:
        verdict: what to do next.
        reason: short machine string for logs, metrics and the DLQ ``reason`` header.
        delay: seconds to wait before the retry (``RETRY`` only).
        cause: for an exhausted retry budget, the reason of the last failure (``http_503``).
        noteworthy: a ``DONE`` that is not a plain success and deserves a log line.
        outcome: how the record finishes, for metrics and the live log (``DONE``:
            ``delivered``, ``skipped`` or ``dry_run``; ``DEAD_LETTER``: ``dead_lettered`` or
            ``parked``).
        stage: ``DEAD_LETTER`` only: where the record failed (decode, map, deliver).
        error_class: ``DEAD_LETTER``: the exception class header; ``STOP``: the error's class.
        detail: ``DEAD_LETTER``: the exception message header; ``STOP``: why consuming stops.
        parks: ``DEAD_LETTER`` only: what the dead letter parks (``Parks``).
    """

    verdict: Verdict
    reason: str
    delay: float = 0.0
    cause: str = ""
    noteworthy: bool = False
    outcome: str = ""
    stage: Stage | None = None
    error_class: str = ""
    detail: str = ""
    parks: Parks = Parks.NOTHING

    @property
    def parked(self) -> bool:
        """A dead letter of a record parked behind an earlier one of its order (DESIGN, 5)."""
        return self.outcome == PARKED_OUTCOME


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry budget and backoff. Defaults match ``DeliverySettings``.

    Attributes:
        max_attempts: attempts in total, the first one included (paused attempts not counted).
        max_elapsed: seconds from the first attempt after which no retry is scheduled.
        base_delay: ceiling of the first retry's jittered delay, in seconds.
        max_delay: largest ceiling of a jittered delay, in seconds (``Retry-After`` may exceed it).
        retry_after_cap: the longest ``Retry-After`` honoured, in seconds (a longer one, or an
            HTTP-date far ahead because of clock skew, is cut to it).
    """

    max_attempts: int = 8
    max_elapsed: float = 300.0
    base_delay: float = 0.2
    max_delay: float = 30.0
    retry_after_cap: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_elapsed <= 0:
            raise ValueError("retry policy needs max_attempts >= 1 and max_elapsed > 0")

    @property
    def backoff(self) -> Backoff:
        return Backoff(base=self.base_delay, cap=self.max_delay)


DELIVERED = "delivered"
SKIPPED = "skipped"
DRY_RUN = "dry_run"
DEAD_LETTERED = "dead_lettered"
PARKED_OUTCOME = "parked"
PARKED_REASON = "parked"
"""The dead-letter reason of a record parked behind an earlier dead letter (DESIGN, 5)."""

REGISTRY_BACKOFF_FIRST = 0.5
REGISTRY_BACKOFF_CAP = 30.0
"""Seconds between attempts to reach the schema registry: 0.5, 1, 2... up to 30 (no budget)."""
SCHEMA_NOT_FOUND_ATTEMPTS = 7
"""Decodes of a schema id the registry answered 404 for: 6 waits of 0.5, 1... 16 s (31.5 s)."""
_NO_PARKING_REASONS = frozenset(
    {CodecReason.NULL_VALUE, CodecReason.EMPTY, CodecReason.KEY_TOO_LARGE}
)

_REQUESTS = (Action.CREATE, Action.UPDATE, Action.CANCEL)


def classify(  # noqa: PLR0911, PLR0912 (one table)
    action: Action, outcome: ButtonOutcome, *, key_accepted: bool = False, follow_up: bool = False
) -> Decision:
    """The table itself: the verdict for one outcome, before the retry budget is applied.

    A ``RETRY`` returned here has no delay yet; ``decide`` adds it or turns it into a dead letter.

    Args:
        action: the request's action.
        outcome: how the attempt ended.
        key_accepted: since this record's previous 403, a record-independent probe (or another
            request) showed that Button accepts the key: a 403 now is about this record.
        follow_up: the request carries a follow-up update (``Send.follow_up``), sent when a
            create is answered 409.

    Raises:
        ValueError: ``action`` is not a request (``skip`` and ``reject`` are never sent).
    """
    if action not in _REQUESTS:
        raise ValueError(f"{action!r} is not sent to Button")
    kind, status = outcome.kind, outcome.status
    finalized = outcome.from_button and _says_finalized(outcome.message)
    match kind, action:
        case OutcomeKind.SUCCESS, _:
            return Decision(Verdict.DONE, "ok", outcome=DELIVERED)
        case OutcomeKind.CONFLICT, Action.CREATE if follow_up:
            # Button holds the order, maybe in another state: its update decides the record.
            return Decision(Verdict.FOLLOW_UP, ORDER_EXISTS_UPDATE)
        case OutcomeKind.CONFLICT, Action.CREATE:
            return Decision(Verdict.DONE, "order_exists", outcome=DELIVERED)
        case OutcomeKind.NOT_FOUND, Action.CANCEL if outcome.from_button:
            return Decision(Verdict.DONE, "order_gone", outcome=DELIVERED)
        case OutcomeKind.NOT_FOUND, Action.UPDATE if outcome.from_button:
            # Deleted, or never known: only reading the order tells (``judge_read``).
            return Decision(Verdict.VERIFY, "http_404")
        case (
            OutcomeKind.FORBIDDEN | OutcomeKind.INVALID | OutcomeKind.CLIENT_ERROR,
            Action.UPDATE | Action.CANCEL,
        ) if finalized:
            # Button's own envelope says the order is finalized: final, and not ours to change.
            return Decision(Verdict.DONE, "order_finalized", noteworthy=True, outcome=DELIVERED)
        case OutcomeKind.FORBIDDEN, _ if key_accepted and outcome.from_button:
            # The key works for a record-independent request: Button refuses this record.
            return Decision(Verdict.DEAD_LETTER, "http_403")
        case OutcomeKind.FORBIDDEN, _ if key_accepted:
            # The key works, yet something in front of Button refuses this request: retried.
            return Decision(Verdict.RETRY, "http_403")
        case OutcomeKind.UNAUTHORIZED | OutcomeKind.FORBIDDEN, _:
            return Decision(Verdict.PAUSE, _http_reason("auth_rejected", status))
        case OutcomeKind.RATE_LIMITED, _:
            return Decision(Verdict.RETRY, "http_429")
        case OutcomeKind.SERVER_ERROR, _:
            return Decision(Verdict.RETRY, _http_reason("http_5xx", status))
        case OutcomeKind.CLIENT_ERROR, _ if status == 408:
            return Decision(Verdict.RETRY, "http_408")
        case OutcomeKind.TIMEOUT, _:
            return Decision(Verdict.RETRY, "timeout")
        case OutcomeKind.CONNECTION_ERROR, _:
            return Decision(Verdict.RETRY, "connection_error")
        case OutcomeKind.UNREADABLE, _:
            return Decision(Verdict.RETRY, "unreadable_response")
        case OutcomeKind.INVALID, _:
            return Decision(Verdict.DEAD_LETTER, _http_reason("http_400", status))
        case OutcomeKind.NOT_FOUND, _:
            return Decision(Verdict.DEAD_LETTER, "http_404")
        case OutcomeKind.CONFLICT, _:
            return Decision(Verdict.DEAD_LETTER, "http_409")
        case _:  # CLIENT_ERROR: any other 4xx
            return Decision(Verdict.DEAD_LETTER, _http_reason("http_4xx", status))


def decide(
    action: Action,
    outcome: ButtonOutcome,
    *,
    attempt: int,
    elapsed: float,
    policy: RetryPolicy,
    rng: RandomSource,
    key_accepted: bool = False,
    outage: bool = False,
    follow_up: bool = False,
) -> Decision:
    """What to do after attempt number ``attempt`` (1-based) of ``action`` ended in ``outcome``.

    Args:
        action: the request's action (create, update or cancel).
        outcome: what the Button client returned for this attempt.
        attempt: attempts made so far, this one included; attempts answered ``PAUSE`` or
            ``BREAK`` excluded.
        elapsed: seconds since the first attempt, time spent paused excluded.
        policy: the retry budget and backoff.
        rng: source of the backoff jitter.
        key_accepted: see ``classify``.
        outage: the circuit breaker counts an outage (Button fails for other requests too):
            an exhausted budget then opens the breaker instead of dead-lettering.
        follow_up: see ``classify``.

    Returns:
        The table's decision, with the retry delay filled in, a ``BREAK`` for back-pressure
        (429/503 with ``Retry-After``, capped) or an outage, or the dead letter that replaces a
        retry when the budget is spent. A dead letter names the failure: ``error_class``
        ``Button<OutcomeKind>`` and ``detail`` Button's message (after retries, with the cause).
    """
    decision = classify(action, outcome, key_accepted=key_accepted, follow_up=follow_up)
    if decision.verdict is Verdict.RETRY:
        retry_after = outcome.retry_after
        if _pushes_back(outcome) and retry_after is not None and retry_after > 0:
            delay = min(retry_after, policy.retry_after_cap)
            return Decision(Verdict.BREAK, decision.reason, delay=delay)
        if attempt >= policy.max_attempts:
            decision = Decision(Verdict.DEAD_LETTER, "retries_exhausted", cause=decision.reason)
        else:
            delay = policy.backoff.delay(attempt, rng, retry_after=retry_after)
            if elapsed + delay > policy.max_elapsed:
                decision = Decision(Verdict.DEAD_LETTER, "retry_deadline", cause=decision.reason)
            else:
                return Decision(Verdict.RETRY, decision.reason, delay=delay)
        if outage:
            return Decision(Verdict.BREAK, BUTTON_UNAVAILABLE, cause=decision.cause)
    if decision.verdict is not Verdict.DEAD_LETTER:
        return decision
    return _delivery_letter(decision, outcome)


def judge_read(
    update: ButtonOutcome,
    read: ButtonOutcome,
    *,
    attempt: int,
    elapsed: float,
    policy: RetryPolicy,
    rng: RandomSource,
    key_accepted: bool = False,
    outage: bool = False,
) -> Decision:
    """The decision for an update Button answered 404 (``VERIFY``), once the order is read.

    A 404 on an update is ambiguous: Button never knew the order, or it holds the order
    ``deleted`` (cancelled for good: update and cancel answer 404, a create 409, a read shows
    ``status: "deleted"``; Button's order life cycle, ``open`` / ``finalized`` / ``deleted``).
    A deleted order is final, so the update has nothing left to change: ``DONE``
    (``order_deleted``, noteworthy). This is what a replay meets after a cancel reached Button
    but its profile write did not survive a crash. When Button answers otherwise (it does not
    know the order, or holds it in another status), the update's 404 stands: its dead letter,
    ``http_404``, as before the read, the read's answer in its message.

    A read that fails or is refused (a timeout, 5xx, 429, 401...) tells nothing: it is decided
    as a failed attempt of the update would be (``decide``: retried within the budget, a pause,
    the circuit breaker), and the next attempt sends the update again (a full state: harmless)
    and reads again.

    Args:
        update: the update's outcome, the 404 in Button's envelope.
        read: the outcome of ``GET /v1/order/{order_id}`` sent after it.
        attempt, elapsed, policy, rng, key_accepted, outage: the update's budget and state,
            as for ``decide``.
    """
    status = read.order_status
    if status == "deleted":
        return Decision(Verdict.DONE, ORDER_DELETED, noteworthy=True, outcome=DELIVERED)
    if read.ok or (read.from_button and read.kind is OutcomeKind.NOT_FOUND):
        letter = _delivery_letter(Decision(Verdict.DEAD_LETTER, "http_404"), update)
        seen = f"status {status}" if status else read.message or read.kind.value
        return replace(letter, detail=f"{letter.detail} (the order read: {seen})")
    return decide(
        Action.UPDATE,
        read,
        attempt=attempt,
        elapsed=elapsed,
        policy=policy,
        rng=rng,
        key_accepted=key_accepted,
        outage=outage,
    )


def judge_lookup(
    read: ButtonOutcome,
    *,
    attempt: int,
    elapsed: float,
    policy: RetryPolicy,
    rng: RandomSource,
    key_accepted: bool = False,
    outage: bool = False,
) -> Decision:
    """The decision on the read of an order a refund needs (``READ``).

    Button answered: with the order (a 2xx: ``MAP``, ``order_read``: the mapping adopts it, or
    remembers it cancelled when it reads as deleted), or with its 404 in its JSON envelope
    (``MAP``, ``order_unknown``: the refund is held until the purchase arrives). Any other
    answer tells nothing about the order: it is decided as the read of ``VERIFY`` is
    (``judge_read``): retried within the budget, a pause, the circuit breaker; a dead letter,
    once the budget is spent or for a 4xx (a 404 page from in front of Button too), names the
    read and its answer in its message.

    Args:
        read: the outcome of ``GET /v1/order/{order_id}``.
        attempt: reads made so far, this one included (paused ones excluded).
        elapsed, policy, rng, key_accepted, outage: as for ``decide``.
    """
    if read.ok:
        return Decision(Verdict.MAP, ORDER_READ)
    if read.from_button and read.kind is OutcomeKind.NOT_FOUND:
        return Decision(Verdict.MAP, ORDER_UNKNOWN)
    decision = decide(
        Action.UPDATE,
        read,
        attempt=attempt,
        elapsed=elapsed,
        policy=policy,
        rng=rng,
        key_accepted=key_accepted,
        outage=outage,
    )
    if decision.verdict not in (Verdict.RETRY, Verdict.PAUSE, Verdict.BREAK):
        # A read can finish nothing: whatever is not a wait is the read's dead letter.
        if decision.verdict is not Verdict.DEAD_LETTER:
            reason = _http_reason("http_4xx", read.status)
            decision = _delivery_letter(Decision(Verdict.DEAD_LETTER, reason), read)
        decision = replace(decision, detail=f"reading the order: {decision.detail}")
    return decision


def _delivery_letter(decision: Decision, outcome: ButtonOutcome) -> Decision:
    """``decision`` (a ``DEAD_LETTER`` of a Button answer) with its dead-letter headers."""
    detail = outcome.message or outcome.kind.value
    return replace(
        decision,
        outcome=DEAD_LETTERED,
        stage=Stage.DELIVER,
        parks=Parks.ORDER,
        error_class=f"Button{outcome.kind.value.title().replace('_', '')}",
        detail=f"{decision.cause} after retries: {detail}" if decision.cause else detail,
    )


def decide_mapped(  # noqa: PLR0911 (one table)
    result: MapResult,
    *,
    parked: str | None,
    dry_run: bool,
    order_id: str = "",
    changes: bool = False,
    behind_key: bool = False,
) -> Decision:
    """The decision for a decoded, mapped event, before anything is sent.

    A record of a parked order waits behind the order's first dead letter whatever the mapping
    says (DESIGN, 5): the mapping read a profile without the records parked ahead of it, so its
    verdict may change once they are replayed (a refund rejected now may fit the corrected
    purchase parked ahead of it), and a parked record must not move the profile. Only a skip
    that changes nothing finishes it.

    Args:
        result: the mapper's verdict: send a request, skip (with a reason), or reject.
        parked: the first dead letter's reason when the record's order is parked behind it
            (DESIGN, 5), else ``None``.
        dry_run: the service runs without sending anything to Button.
        order_id: the record's order (named in a parked dead letter; a request names its own).
        changes: the record would change the user's profile (``Processed.profile_changed``):
            a skip that does (a refund held for its purchase) is parked too, not lost.
        behind_key: the order is parked only because its key is, behind a record that could
            not be decoded (``parked`` is that record's reason): the message says so, not
            that the order has a dead letter of its own.

    Returns:
        ``DONE`` (skipped, dry run), ``DEAD_LETTER`` (rejected at the map stage, parking
        nothing, or parked), ``READ`` (the order is read from Button first; a dry run reads
        nothing and keeps the mapping's ``Read.held``, the refund held as without a read, or
        dead-lettered when its record has no key to hold it under) or
        ``SEND``.
    """
    match result:
        case Skip(reason=reason) if parked is None or not changes:
            return Decision(Verdict.DONE, reason, outcome=SKIPPED)
        case _ if parked is not None:
            order = result.request.order_id if isinstance(result, Send | Read) else order_id
            behind = "an undecodable record of its key" if behind_key else "a dead letter"
            return Decision(
                Verdict.DEAD_LETTER,
                PARKED_REASON,
                outcome=PARKED_OUTCOME,
                stage=Stage.DELIVER,
                error_class="Parked",
                detail=f"order {order} is parked behind {behind} ({parked})",
                parks=Parks.ORDER,
            )
        case Reject(reason=reason, detail=detail):
            return Decision(
                Verdict.DEAD_LETTER,
                reason or "mapping_rejected",
                outcome=DEAD_LETTERED,
                stage=Stage.MAP,
                error_class="MappingError",
                detail=detail or reason or "mapping_rejected",
            )
        case Send() if dry_run:
            return Decision(Verdict.DONE, DRY_RUN, outcome=DRY_RUN)
        case Read(held=Reject() as held) if dry_run:
            return decide_mapped(held, parked=None, dry_run=dry_run)
        case Read(held=held) if dry_run:
            return Decision(Verdict.DONE, held.reason, outcome=SKIPPED)
        case Read():
            return Decision(Verdict.READ, "read")
        case _:
            return Decision(Verdict.SEND, "send")


def decide_error(error: BaseException, *, attempt: int = 1) -> Decision:  # noqa: PLR0911 (one table)
    """The decision for an error raised outside the Button call (decode, mapping, DLQ, Kafka).

    Records that can never succeed go to the DLQ; an unreachable schema registry is waited for
    (``RETRY`` after 0.5, 1, 2... up to 30 seconds, without a budget); when the DLQ or Kafka
    fails, or for any error the service did not expect, consuming stops so that no record is
    dropped.

    Args:
        error: what was raised.
        attempt: attempts made so far at the step that raised it (1-based).
    """
    match error:
        case SchemaRegistryUnavailableError():
            return Decision(
                Verdict.RETRY, "schema_registry_unavailable", delay=_registry_delay(attempt)
            )
        case SchemaNotFoundYetError() if attempt < SCHEMA_NOT_FOUND_ATTEMPTS:
            # A registry follower that has not replicated a new id answers 404 too.
            return Decision(Verdict.RETRY, "schema_not_found_yet", delay=_registry_delay(attempt))
        case UnknownSchemaError() | DecodeError() | MappingError():
            fallback = {UnknownSchemaError: "unknown_schema", MappingError: "mapping_error"}
            reason = error.reason or fallback.get(type(error), "decode_error")
            return Decision(
                Verdict.DEAD_LETTER,
                reason,
                outcome=DEAD_LETTERED,
                stage=Stage.MAP if isinstance(error, MappingError) else Stage.DECODE,
                error_class=type(error).__name__,
                detail=str(error),
                parks=_parks_of(error, reason),
            )
        case RecordTooLargeError():
            # Certain and per record, not an outage: a reference to the record takes its place
            # in the DLQ (key and our headers, no value), instead of stopping on every start.
            return Decision(
                Verdict.DEAD_LETTER,
                "too_large",
                outcome=DEAD_LETTERED,
                error_class=type(error).__name__,
                detail=str(error),
            )
        case DeadLetterError():
            return Decision(Verdict.STOP, "dlq_unavailable", detail=str(error))
        case BrokerError():
            return Decision(Verdict.STOP, "broker_error", detail=str(error))
        case _:
            return Decision(
                Verdict.STOP,
                "unexpected_error",
                cause=type(error).__name__,
                error_class=type(error).__name__,
                detail=str(error),
            )


class Probe(StrEnum):
    """What a record-independent probe of Button found (``judge_probe``)."""

    ACCEPTED = "accepted"  # Button answered in its envelope and took the key
    REFUSED = "refused"  # 401 or 403: the key (or something in front of Button) refuses us
    UNAVAILABLE = "unavailable"  # no answer of Button's: 5xx, 429, timeout, unreadable...


def judge_probe(outcome: ButtonOutcome) -> Probe:
    """The verdict on a probe: the harmless read of an order that does not exist.

    Only Button's own answer accepts: a 2xx, or an error in its JSON envelope that is neither an
    authentication failure nor back-pressure (a 404 "not found" is the usual one). The auth gate
    opens and the circuit breaker closes only on ``ACCEPTED``.
    """
    kind = outcome.kind
    if kind in (OutcomeKind.UNAUTHORIZED, OutcomeKind.FORBIDDEN):
        return Probe.REFUSED
    if outcome.ok or (outcome.from_button and kind not in _FAILING):
        return Probe.ACCEPTED
    return Probe.UNAVAILABLE


def breaker_signal(outcome: ButtonOutcome) -> bool | None:
    """How one answer counts towards an outage: ``True`` a failure of Button or of the path to
    it (5xx, 429, timeout, connection error, unreadable body), ``False`` an answer of Button's
    (which ends the count), ``None`` neither (e.g. a proxy's 403 page)."""
    if outcome.kind in _FAILING:
        return True
    if outcome.ok or outcome.from_button:
        return False
    return None


def breaker_wait(outcome: ButtonOutcome, *, interval: float, policy: RetryPolicy) -> float | None:
    """After a probe while the circuit breaker is open: ``None`` closes it (Button answered;
    a refused key is the auth gate's business, not an outage), else the seconds it stays open:
    the probe interval, or the answer's ``Retry-After`` capped at ``policy.retry_after_cap``."""
    if judge_probe(outcome) is not Probe.UNAVAILABLE:
        return None
    retry_after = outcome.retry_after
    if retry_after is not None and retry_after > 0:
        return max(interval, min(retry_after, policy.retry_after_cap))
    return interval


ORDER_DELETED = "order_deleted"
"""The reason of a ``DONE`` for an update answered 404 whose order reads as deleted."""

ORDER_READ = "order_read"
"""The reason of a ``MAP``: Button answered the read of a refund's order with the order."""

ORDER_UNKNOWN = "order_unknown"
"""The reason of a ``MAP``: Button answered the read of a refund's order with its 404."""

ORDER_EXISTS_UPDATE = "order_exists_update"
"""The reason of a ``FOLLOW_UP``: the create was answered 409, its update is sent next."""

BUTTON_UNAVAILABLE = "button_unavailable"
"""The reason of a ``BREAK`` for an outage: a budget ran out while Button failed for others."""

BREAKER_REASONS = ("http_429", "http_503", BUTTON_UNAVAILABLE)
"""Every reason the circuit breaker opens for (a bounded metric label)."""

_FAILING = frozenset(
    {
        OutcomeKind.RATE_LIMITED,
        OutcomeKind.SERVER_ERROR,
        OutcomeKind.TIMEOUT,
        OutcomeKind.CONNECTION_ERROR,
        OutcomeKind.UNREADABLE,
    }
)


def _pushes_back(outcome: ButtonOutcome) -> bool:
    """429, or 503 (Service Unavailable): the statuses whose ``Retry-After`` is back-pressure."""
    return outcome.kind is OutcomeKind.RATE_LIMITED or outcome.status == 503


def _parks_of(error: DecodeError | MappingError, reason: str) -> Parks:
    """What the dead letter of a record that failed before any request parks (DESIGN, 5).

    Bytes that could not be decoded may have been any order of the key: the key's later order
    records must not overtake them. A record that decoded but is not a valid event
    (``InvalidEventError``), or that the mapping refused, is refused by its own data, the same
    way each time, and changed nothing: it parks nothing. Nor does a record without a value (a
    tombstone), which is no order, nor one whose key is too long to keep a profile under
    (``key_too_large``): no changelog record can hold its parking.
    """
    if isinstance(error, InvalidEventError | MappingError) or reason in _NO_PARKING_REASONS:
        return Parks.NOTHING
    return Parks.KEY


def _registry_delay(attempt: int) -> float:
    exponent = min(max(attempt - 1, 0), 16)
    return min(REGISTRY_BACKOFF_FIRST * float(2**exponent), REGISTRY_BACKOFF_CAP)


def _http_reason(fallback: str, status: int | None) -> str:
    return fallback if status is None else f"http_{status}"


def _says_finalized(message: str) -> bool:
    return "finaliz" in message.lower() or "finalis" in message.lower()
