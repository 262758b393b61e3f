"""What happens to one record, from bytes to *finished*.

decode -> (permit) -> profile + mapping -> (parked? dry run?) -> send with the failure policy ->
dead letter. The concurrency permit of a record's first request is taken before it is mapped (see
``_handle``), so records are prepared as fast as Button takes them, not a poll batch at a time.
A record is finished when Button accepted it, it was skipped on purpose, or its dead-letter write
was acknowledged (and, for an order's record, the order's parking written to the changelog);
``handle`` returns only then, and raises only when the record must not be considered finished
(the dead-letter or changelog topic cannot be written): the worker then stops consuming.

The profile change a record causes is queued to the changelog before its request to Button and
acknowledged before the record is finished, so before its offset may be stored (DESIGN, 7); the
request does not wait for the acknowledgement. A write refused after Button accepted the request
leaves the record unfinished: a restart replays it and sends the same state again (DESIGN, 2).

Parking (DESIGN, 5) is owned by the ``ParkingPort`` collaborator: after a dead letter that parks
its order (or key, ``Decision.parks``) is acknowledged, the order is parked and the profile
written to the changelog before the record counts as finished, so a parked order stays parked
across restarts and rebalances (its offset is stored only once the park is durable). A dead
letter decided by the event's own data (a rejection, an invalid event) parks nothing.

The collaborators are ports (small protocols) so the whole path is testable with fakes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import structlog

from consumer.domain.adoption import Lookup
from consumer.domain.attribution import DroppedToken
from consumer.domain.backoff import RandomSource
from consumer.domain.button import (
    REFUND_HELD,
    Action,
    ButtonRequest,
    DiscardedRefund,
    DroppedInput,
    MapResult,
    Read,
    Send,
    Skip,
)
from consumer.domain.deadletter import (
    DeadLetter,
    Stage,
    as_reference,
    parks_its_order,
    releases_key_if_undecodable,
    releases_parked_key,
    replayed_reason,
    replays_parking_letter,
)
from consumer.domain.events import MAX_KEY_BYTES, CommerceEvent, key_problem
from consumer.domain.outcomes import ButtonOutcome
from consumer.domain.policy import (
    BUTTON_UNAVAILABLE,
    SKIPPED,
    Decision,
    Parks,
    RetryPolicy,
    Verdict,
    decide,
    decide_error,
    decide_mapped,
    judge_lookup,
    judge_read,
)
from consumer.domain.triage import InertEvent
from consumer.engine.authgate import AuthGate
from consumer.engine.breaker import CircuitBreaker
from consumer.engine.concurrency import AdaptiveLimiter, Permit, TokenBucket
from consumer.engine.parking import KEY_PARKED, ParkingCheck
from consumer.engine.profiles import ChangelogWrite, report_discarded
from consumer.errors import (
    CodecReason,
    DeadLetterError,
    DecodeError,
    InvalidEventError,
    RecordTooLargeError,
    SchemaRegistryUnavailableError,
)
from consumer.ports import (
    CURRENT_RECORD,
    ButtonPort,
    Changelog,
    DeadLetterSink,
    Decoder,
    Delivery,
    FinishedRecord,
    Record,
    RecordScope,
    Telemetry,
)

log = structlog.get_logger("consumer.pipeline")

_SKIP = Action.SKIP.value

KEY_PROBLEM_LOG_INTERVAL = 60.0
"""Seconds between two ``record_key_not_user_key`` lines of one problem: a producer that keys
every record wrongly logs one line a minute (with the count it left out), not one a record."""


@dataclass(frozen=True, slots=True)
class Processed:
    """The mapper's verdict on one event and the profile change it caused."""

    result: MapResult
    event_id: str
    event_time_ms: int | None
    order_id: str
    profile_changed: bool
    updated: object = None
    """The new profile, in the processor's own form; only its ``apply`` reads it."""
    dropped_tokens: tuple[DroppedToken, ...] = ()
    """Junk the event carried where a token goes (``attribution.dropped_tokens``): counted and
    logged, so a merchant sees that the app sends it."""
    dropped_inputs: tuple[DroppedInput, ...] = ()
    """What else the event carried that is not sent nor remembered (``mapping.dropped_inputs``):
    counted and logged, as ``dropped_tokens``."""
    discarded_refunds: tuple[DiscardedRefund, ...] = ()
    """Refunds the order's ledger held that this event made stop applying (the mapping's
    ``discarded_by``), or that left the profile with their order before their purchase arrived:
    counted and logged when the change is applied."""


class Processor(Protocol):
    """Enrichment, profile state and mapping for one record.

    ``process`` is pure (it reads the profile store, changes nothing); ``apply`` stores the
    profile change it computed and returns the changelog record to write (``None``: nothing to
    write). ``lookup`` is Button's answer to the read a ``Read`` result asked for: the same
    event is processed again with it. The pipeline applies a change only for a record that is
    not parked: a record that follows a dead letter to the DLQ must not move the user's order
    ledger (DESIGN, 5).
    """

    def process(
        self,
        partition: int,
        key: bytes | None,
        event: CommerceEvent,
        now: datetime,
        lookup: Lookup | None = None,
    ) -> Processed: ...

    def apply(self, partition: int, key: bytes, processed: Processed) -> ChangelogWrite | None: ...


class ParkingPort(Protocol):
    """Parking (DESIGN, 5): ``consumer.engine.parking.Parking``."""

    def check(self, record: Record, order_id: str, now: datetime) -> ParkingCheck:
        """Is the record's order parked? Releases it first if the record replays its first DLQ."""
        ...

    def park(
        self, partition: int, key: bytes | None, order_id: str, reason: str, now: datetime
    ) -> ChangelogWrite | None:
        """Park ``order_id`` (first reason kept); the changelog record to write, if any."""
        ...

    def release_key(
        self, partition: int, key: bytes, *, reason: str | None = None
    ) -> ChangelogWrite | None:
        """Release ``key`` parked behind an undecodable record (only if parked with ``reason``,
        when given); the changelog record, if the key was released."""
        ...

    def key_parked(self, partition: int, key: bytes, now: datetime) -> bool:
        """Is ``key`` parked behind an undecodable record?"""
        ...


class StopGate(Protocol):
    """Whether a partition's records are being given up (revoked, or the service drains):
    ``consumer.engine.dispatcher.Dispatcher``. A record sends no new request then: it waits at
    ``hold_if_stopping`` until it is abandoned, for the next owner (a request started now
    could be abandoned in flight and applied by Button after the next owner's newer ones)."""

    def stopping(self, partition: int) -> bool: ...

    async def hold_if_stopping(self, partition: int) -> None: ...


class _NeverStopping:
    """The ``StopGate`` of a pipeline without a dispatcher (tests, ``map``)."""

    def stopping(self, partition: int) -> bool:
        return False

    async def hold_if_stopping(self, partition: int) -> None:
        return None


@dataclass(slots=True)
class PipelineDeps:
    """Everything the pipeline talks to; built by the composition root."""

    decoder: Decoder
    processor: Processor
    parking: ParkingPort
    changelog: Changelog
    button: ButtonPort
    dead_letters: DeadLetterSink
    retry: RetryPolicy
    rng: RandomSource
    limiter: AdaptiveLimiter
    rate: TokenBucket | None
    gate: AuthGate
    breaker: CircuitBreaker
    telemetry: Telemetry
    wall_clock: Callable[[], datetime]
    monotonic: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    dry_run: bool = False
    stop_gate: StopGate = field(default_factory=_NeverStopping)


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    last: ButtonOutcome | None = None

    def start(self, now_ms: int) -> None:
        """One more attempt (a request, or a ``READ``'s read), made at ``now_ms``."""
        self.count += 1
        self.first_ms = self.first_ms or now_ms
        self.last_ms = now_ms


class Pipeline:
    """Turns one record into a finished record."""

    def __init__(self, deps: PipelineDeps) -> None:
        self._d = deps
        # Per key problem: when its line was last logged (monotonic s), records left out since.
        self._key_lines: dict[str, tuple[float, int]] = {}

    async def handle(self, record: Record, event: CommerceEvent | None = None) -> str:
        """Process ``record`` until it is finished; return its outcome name.

        ``event``: its value decoded already (``triage``); ``None``: decoded here.
        """
        scope = CURRENT_RECORD.set(RecordScope(record.partition, record.offset, record.key))
        try:
            return await self._handle(record, event)
        finally:
            CURRENT_RECORD.reset(scope)

    def triage(self, record: Record) -> CommerceEvent | InertEvent | None:
        """Decode ``record`` at once when that needs no I/O (``RecordHandler.triage``).

        ``None`` for a value that needs a schema lookup, has no value or does not decode:
        ``handle`` decodes it again, with the waits, counts and dead letters of the full path.
        """
        if record.value is None or _key_too_large(record.key):
            return None
        try:
            return self._d.decoder.decode_triaged_at_hand(record.value)
        except (DecodeError, SchemaRegistryUnavailableError):
            return None

    def finish_inert(self, inert: Sequence[tuple[Record, InertEvent]]) -> None:
        """Finish inert records as skipped, together (``RecordHandler.finish_inert``).

        One clock reading and one telemetry report for the batch: an inert record costs the
        loop its decode and little more (a poll batch of views is most of the filter path).
        """
        if not inert:
            return
        now = self._d.wall_clock()
        at = now.timestamp()
        now_ms = int(at * 1000)
        decisions: dict[Skip, Decision] = {}
        finished: list[FinishedRecord] = []
        for record, event in inert:
            skip = event.result
            decision = decisions.get(skip)
            if decision is None:
                decision = decisions[skip] = decide_mapped(skip, parked=None, dry_run=False)
            delivery = Delivery(
                at,
                record.partition,
                record.offset,
                event.event_id,
                _SKIP,
                "",
                decision.outcome,
                None,
                0,
                decision.reason,
                event.event_type.value,
            )
            finished.append(
                FinishedRecord(delivery, record.key, (now_ms - event.event_time_ms) / 1000.0)
            )
        self._d.telemetry.finished_together(finished)
        if log.is_enabled_for(logging.DEBUG):
            for item in finished:
                self._log_processed(item.delivery, item.key)

    async def _handle(self, record: Record, event: CommerceEvent | None) -> str:
        decoded = event if event is not None else await self._decode(record)
        if isinstance(decoded, tuple):
            return await self._execute(record, *decoded)
        if isinstance(decoded, InertEvent):
            # Can change nothing (no order, token or device id): no profile, no changelog.
            return self._skip_inert(record, decoded)
        problem = key_problem(record.key, decoded.user_key)
        if problem is not None:
            self._report_key_problem(problem, decoded.event_id)
        # The concurrency permit for its first request is taken before the record is mapped:
        # so the loop prepares about as many records as Button can take at once, not a whole
        # poll batch in one go while the answers of those in flight wait behind it. (With a
        # rate limit, the token comes first and the permit after it, at the send.)
        ahead = None if self._d.rate is not None else await self._d.limiter.acquire_permit()
        try:
            return await self._map_and_deliver(record, decoded, ahead)
        finally:
            if ahead is not None:
                ahead.release()  # unused (no request): neutral for the limit

    async def _map_and_deliver(
        self, record: Record, decoded: CommerceEvent, ahead: Permit | None
    ) -> str:
        d = self._d
        # Parking first, against the profile before this record: a record parked behind a dead
        # letter must not move the order ledger, and the replay of an order's first dead letter
        # releases it before the record is mapped (DESIGN, 5).
        parking = d.parking.check(record, decoded.order_id, d.wall_clock())
        await self._write(parking.write)
        lookup: Lookup | None = None
        while True:
            try:
                processed = d.processor.process(
                    record.partition, record.key, decoded, d.wall_clock(), lookup
                )
            except DecodeError as exc:
                _release(ahead)
                d.telemetry.decode_failed(exc.reason)
                context = _Context(
                    event_type=decoded.event_type.value,
                    event_id=decoded.event_id,
                    order_id=decoded.order_id,
                )
                return await self._execute(record, decide_error(exc), context)
            current = CURRENT_RECORD.get()
            if current is not None:
                current.event_id = processed.event_id
            result = processed.result
            context = _Context(
                processed,
                _action(result),
                event_type=decoded.event_type.value,
                behind_key_only=parking.behind_key_only,
            )
            decision = decide_mapped(
                result,
                parked=parking.reason,
                dry_run=d.dry_run,
                order_id=processed.order_id,
                changes=processed.profile_changed,
                behind_key=parking.behind_key_only,
            )
            if not isinstance(result, Read):
                break
            if decision.verdict is not Verdict.READ or lookup is not None:
                if d.dry_run:  # a dry run reads nothing: ``Read.held``, as without a read
                    log.info("order_not_read", reason="dry_run")
                break  # (or parked: it follows its first dead letter, unread)
            # The order as Button holds it decides; nothing of this record is written or sent
            # before the answer (the key's later records wait in its lane meanwhile).
            _release(ahead)
            ahead = None
            answered = await self._look_up(record, context, result.request)
            if isinstance(answered, Decision):
                return await self._execute(record, answered, context)
            lookup = answered
        self._report_mapping(processed, parked=parking.reason is not None)
        if parking.reason is None and record.key is not None:
            # Queued now, before the request is sent (the key's writes keep their order), and
            # acknowledged before the record is finished, so before its offset may be stored;
            # the send does not wait for the acknowledgement.
            write = d.processor.apply(record.partition, record.key, processed)
            report_discarded(d.telemetry, write)  # held refunds forgotten to the cap in bytes
            context.pending = self._start_write(write)
        try:
            if lookup is not None and lookup.found:
                # An order adopted from Button: Button's state is the refund's base, and holds
                # the refund once the update is applied. Sent before the profile recording the
                # refund is written, a failed write (or a crash) would replay the record
                # against Button's reduced state and refund it twice: the write comes first.
                await self._acknowledged(context)
            if decision.verdict is Verdict.SEND and isinstance(result, Send):
                return await self._deliver(
                    record, context, result.request, result.follow_up, ahead=ahead
                )
            _release(ahead)
            outcome = await self._execute(record, decision, context)
            self._report_held(decision, processed)
            return outcome
        finally:
            # Raised or cancelled before the acknowledgement was awaited: the record is not
            # finished (its offset is never stored), so the write's fate no longer matters.
            _abandon(context.pending)

    def _report_mapping(self, processed: Processed, *, parked: bool) -> None:
        """Count and log what the mapping that counts (the last pass) found beside its decision.

        Junk where a token goes (``Processed.dropped_tokens``), and what else the event carried
        that is not sent (``dropped_inputs``), at info. Each refund the
        order's ledger held that this record made stop applying (``discarded_refunds``), at
        warning: the order Button gets does not carry it, and there is no record of it to
        dead-letter (the refund's own was finished when it was held), so this line and the
        counter are where an operator learns of it. Not for a ``parked`` record: it moves no
        ledger, so nothing is discarded yet (its replay maps it again and reports then).
        """
        d = self._d
        for dropped in processed.dropped_tokens:
            d.telemetry.btn_ref_dropped(dropped.source.value, dropped.problem.value)
            log.info(
                "btn_ref_dropped",
                source=dropped.source.value,
                problem=dropped.problem.value,
                value=dropped.value,
            )
        for left_out in processed.dropped_inputs:
            d.telemetry.input_dropped(left_out.field, left_out.problem)
            log.info(
                "input_dropped",
                field=left_out.field,
                problem=left_out.problem,
                value=left_out.value,
            )
        if parked:
            return
        for refund in processed.discarded_refunds:
            self._d.telemetry.held_refund_discarded(refund.reason)
            log.warning(
                "held_refund_discarded",
                order_id=refund.order_id or processed.order_id,
                refund_event_id=refund.event_id,
                reason=refund.reason,
                detail=refund.detail,
            )

    def _report_key_problem(self, problem: str, event_id: str) -> None:
        """Count a record whose key breaks the producer contract (``events.key_problem``), and
        log it at warning: the first of each problem, then one per
        ``KEY_PROBLEM_LOG_INTERVAL`` seconds with ``suppressed``, the records of that problem
        left out since the last line. The line carries partition, offset, event id and the
        key's hash (``add_record_scope``), never the key nor the user key themselves."""
        d = self._d
        d.telemetry.record_key_problem(problem)
        now = d.monotonic()
        last = self._key_lines.get(problem)
        if last is not None and now - last[0] < KEY_PROBLEM_LOG_INTERVAL:
            self._key_lines[problem] = (last[0], last[1] + 1)
            return
        self._key_lines[problem] = (now, 0)
        log.warning(
            "record_key_not_user_key",
            problem=problem,
            event_id=event_id,
            suppressed=0 if last is None else last[1],
        )

    def _report_held(self, decision: Decision, processed: Processed) -> None:
        """A record finished as skipped ``refund_held`` (its profile write acknowledged): the
        refund waits in the profile for its purchase. Counted and logged with its order and
        event ids, so that an operator can find the refunds waiting."""
        if decision.reason != REFUND_HELD:
            return
        self._d.telemetry.refund_held()
        log.info("refund_held", order_id=processed.order_id, event_id=processed.event_id)

    def _skip_inert(self, record: Record, event: InertEvent) -> str:
        self.finish_inert([(record, event)])
        return SKIPPED

    @staticmethod
    def _log_processed(delivery: Delivery, key: bytes | None) -> None:
        """The ``processed`` debug line of a record finished in a batch, under its scope."""
        scope = CURRENT_RECORD.set(
            RecordScope(delivery.partition, delivery.offset, key, delivery.event_id)
        )
        try:
            log.debug(
                "processed",
                outcome=delivery.outcome,
                action=delivery.action,
                reason=delivery.reason,
            )
        finally:
            CURRENT_RECORD.reset(scope)

    async def _decode(
        self, record: Record
    ) -> CommerceEvent | InertEvent | tuple[Decision, _Context]:
        """Decode the value, waiting as the policy says while the schema registry is away.

        A value that does not become an event ends in a final decision, with what is known of
        the record (the event and order ids of one that decoded but is not a valid event).
        """
        attempt = 0
        context = _Context()
        while True:
            attempt += 1
            try:
                if _key_too_large(record.key):
                    raise DecodeError(
                        CodecReason.KEY_TOO_LARGE,
                        f"the record's key is {len(record.key or b'')} bytes, over the"
                        f" {MAX_KEY_BYTES} a profile can be kept under",
                    )
                if record.value is None:
                    raise DecodeError(CodecReason.NULL_VALUE, "the record has no value (tombstone)")
                # Off the loop's thread when the registry must be asked: a registry that
                # hangs holds this record (and its key's), never the poll loop.
                return await self._d.decoder.decode_triaged_async(record.value)
            except DecodeError as exc:
                self._d.telemetry.decode_failed(exc.reason)
                decision = decide_error(exc, attempt=attempt)
                if isinstance(exc, InvalidEventError):
                    context = _Context(event_id=exc.event_id, order_id=exc.order_id)
                    current = CURRENT_RECORD.get()
                    if current is not None:
                        current.event_id = exc.event_id
            except SchemaRegistryUnavailableError as exc:
                decision = decide_error(exc, attempt=attempt)
                self._d.telemetry.schema_registry_unavailable()
                log.warning("schema_registry_unavailable", error=str(exc), retry_in=decision.delay)
            if decision.verdict is not Verdict.RETRY:
                return decision, context
            await self._d.sleep(decision.delay)

    async def _deliver(
        self,
        record: Record,
        context: _Context,
        request: ButtonRequest,
        follow_up: ButtonRequest | None = None,
        *,
        ahead: Permit | None = None,
    ) -> str:
        """Send ``request`` until the policy's decision is no longer retry, pause or break.

        ``ahead``: a concurrency permit taken before the record was prepared, for the first
        attempt (given back unused if a gate holds requests back first).

        When the policy says ``FOLLOW_UP`` (a create answered 409 that carries the update of the
        same state), the follow-up is delivered the same way, with its own retry budget, and its
        decision finishes the record (the live log shows the update, with its attempts).
        """
        d = self._d
        attempts = context.attempts
        started = d.monotonic()
        paused_for = 0.0
        refused = False  # the last attempt was answered PAUSE (a 401 or 403)
        while True:
            if ahead is not None and (d.gate.closed or d.breaker.closed):
                ahead.release()  # not held while waiting at a gate
                ahead = None
            waited, waited_for_key = await self._wait_at_gates()
            paused_for += waited
            # The gate opened on an accepted probe (or a 2xx): the key works, so a 403 of this
            # record's next attempt is about the record itself.
            key_accepted = refused and waited_for_key
            if d.stop_gate.stopping(record.partition):
                _release(ahead)  # not held while it waits to be abandoned
                ahead = None
                await d.stop_gate.hold_if_stopping(record.partition)
            outcome = await self._attempt(request, attempts, ahead)
            ahead = None  # used (and released) by the first attempt
            source = (record.partition, record.offset)
            self._observe(outcome, source)
            budget = _Budget(attempts.count, started + paused_for, key_accepted, source)
            decision = decide(
                request.action,
                outcome,
                attempt=budget.attempt,
                elapsed=d.monotonic() - budget.since,
                policy=d.retry,
                rng=d.rng,
                key_accepted=key_accepted,
                outage=d.breaker.failing(source),
                follow_up=follow_up is not None,
            )
            if decision.verdict is Verdict.VERIFY:
                outcome, decision, waited = await self._verify(request, outcome, budget)
                paused_for += waited
            refused = decision.verdict is Verdict.PAUSE
            match decision.verdict:
                case Verdict.RETRY | Verdict.PAUSE | Verdict.BREAK:
                    if await self._wait_out(decision, outcome, attempts):
                        started = d.monotonic()
                        paused_for = 0.0
                case Verdict.FOLLOW_UP if follow_up is not None:
                    log.info("order_exists_update", status=outcome.status)
                    then = replace(context, action=follow_up.action.value, attempts=_Attempts())
                    return await self._deliver(record, then, follow_up)
                case _:
                    return await self._execute(record, decision, context)

    async def _wait_out(
        self, decision: Decision, outcome: ButtonOutcome, attempts: _Attempts
    ) -> bool:
        """Carry out a ``RETRY`` (wait its delay), ``PAUSE`` (close the auth gate) or ``BREAK``
        (open the circuit breaker) after ``outcome``; a paused or broken attempt does not count
        against the budget. Returns whether the record starts a fresh budget: it waited out an
        outage (DESIGN, 4)."""
        d = self._d
        match decision.verdict:
            case Verdict.RETRY:
                d.telemetry.retry_scheduled(outcome.kind.value)
                log.info(
                    "retrying",
                    status=outcome.status,
                    outcome=outcome.kind.value,
                    attempt=attempts.count,
                    delay=round(decision.delay, 3),
                )
                await d.sleep(decision.delay)
            case Verdict.PAUSE:
                if not d.gate.closed:
                    log.error("button_auth_failed", status=outcome.status, message=outcome.message)
                d.gate.close()
                attempts.count -= 1  # a paused attempt does not use up the retry budget
            case Verdict.BREAK:
                d.telemetry.retry_scheduled(outcome.kind.value)
                if d.breaker.close(decision.reason, decision.delay or None):
                    self._breaker_opened(decision.reason, outcome)
                attempts.count -= 1  # back-pressure does not use up the retry budget
                if decision.reason == BUTTON_UNAVAILABLE:
                    # The budget ran out while Button failed for everyone: after the outage
                    # the record starts a fresh budget (DESIGN, 4).
                    attempts.count = 0
                    return True
        return False

    async def _look_up(
        self, record: Record, context: _Context, request: ButtonRequest
    ) -> Lookup | Decision:
        """Read the order a refund needs (``READ``) until Button answers: its ``Lookup`` for
        the mapping's second pass, or the final decision (a dead letter) when the read cannot be
        had. The reads pass the gates, the rate limit and the breaker as any request, and use the
        record's budget (``context.attempts``): a failed read is retried, pauses or breaks as
        the ``VERIFY`` read does (``judge_lookup``)."""
        d = self._d
        attempts = context.attempts
        started = d.monotonic()
        paused_for = 0.0
        refused = False
        source = (record.partition, record.offset)
        while True:
            waited, waited_for_key = await self._wait_at_gates()
            paused_for += waited
            key_accepted = refused and waited_for_key
            if d.stop_gate.stopping(record.partition):
                await d.stop_gate.hold_if_stopping(record.partition)
            read = await self._read(request.order_id, attempts)
            self._observe(read, source)
            decision = judge_lookup(
                read,
                attempt=attempts.count,
                elapsed=d.monotonic() - started - paused_for,
                policy=d.retry,
                rng=d.rng,
                key_accepted=key_accepted,
                outage=d.breaker.failing(source),
            )
            refused = decision.verdict is Verdict.PAUSE
            if decision.verdict is Verdict.MAP:
                return Lookup(request.order_id, found=read.ok, order=read.object)
            if decision.verdict not in (Verdict.RETRY, Verdict.PAUSE, Verdict.BREAK):
                return decision
            if await self._wait_out(decision, read, attempts):
                started = d.monotonic()
                paused_for = 0.0

    def _observe(self, outcome: ButtonOutcome, source: tuple[int, int]) -> None:
        """Let the gates see an answer: the circuit breaker counts it towards an outage, and
        a 2xx opens a closed auth gate (only a 2xx, or an accepted probe, proves the key works;
        no other answer does)."""
        d = self._d
        if d.breaker.observe(outcome, source):
            self._breaker_opened(BUTTON_UNAVAILABLE, outcome)
        if outcome.ok and d.gate.closed:
            d.gate.open()
            log.info("button_auth_recovered")

    async def _wait_at_gates(self) -> tuple[float, bool]:
        """Wait while the auth gate or the circuit breaker holds requests back.

        Returns:
            the seconds waited, and whether the auth gate was closed when the wait began.
        """
        d = self._d
        if not (d.gate.closed or d.breaker.closed):
            return 0.0, False
        since = d.monotonic()
        waited_for_key = d.gate.closed
        while d.gate.closed or d.breaker.closed:
            await d.gate.admit()
            await d.breaker.admit()
        return d.monotonic() - since, waited_for_key

    async def _attempt(
        self, request: ButtonRequest, attempts: _Attempts, ahead: Permit | None = None
    ) -> ButtonOutcome:
        """Send one attempt within the rate and concurrency limits; record and report it.

        ``ahead``: a permit already held for it (its round-trip clock restarts now).
        """
        d = self._d
        if d.rate is not None:
            await d.rate.take(d.sleep)
        if ahead is not None:
            permit = ahead
            permit.restart()
        else:
            permit = await d.limiter.acquire_permit()
        try:
            attempts.start(_ms(d.wall_clock()))
            outcome = await d.button.send(request)
            permit.observe(outcome)
        finally:
            permit.release()
        attempts.last = outcome
        d.telemetry.button_attempt(
            request.action.value,
            outcome.kind.value,
            outcome.elapsed,
            d.limiter.limit,
            outcome.status,
            from_button=outcome.from_button,
        )
        return outcome

    async def _verify(
        self, request: ButtonRequest, update: ButtonOutcome, budget: _Budget
    ) -> tuple[ButtonOutcome, Decision, float]:
        """An update answered 404 (``VERIFY``): read its order, after the gates, and decide
        (``judge_read``). Returns the read's outcome (what a retry, a pause or the breaker
        is then about), the decision, and the seconds waited at the gates."""
        d = self._d
        waited, _ = await self._wait_at_gates()
        read = await self._read(request.order_id)
        self._observe(read, budget.source)
        decision = judge_read(
            update,
            read,
            attempt=budget.attempt,
            elapsed=d.monotonic() - budget.since - waited,
            policy=d.retry,
            rng=d.rng,
            key_accepted=budget.key_accepted,
            outage=d.breaker.failing(budget.source),
        )
        return read, decision, waited

    async def _read(self, order_id: str, attempts: _Attempts | None = None) -> ButtonOutcome:
        """Read an order from Button (``VERIFY``, ``READ``), within the rate limit; reported as
        a ``read`` request. Sent at once, without a concurrency permit: it is rare.
        ``attempts``: the record's attempts, when the read is one (``READ``)."""
        d = self._d
        if d.rate is not None:
            await d.rate.take(d.sleep)
        if attempts is not None:
            attempts.start(_ms(d.wall_clock()))
        outcome = await d.button.get(order_id)
        if attempts is not None:
            attempts.last = outcome
        d.telemetry.button_attempt(
            "read",
            outcome.kind.value,
            outcome.elapsed,
            d.limiter.limit,
            outcome.status,
            from_button=outcome.from_button,
        )
        log.info("order_read", status=outcome.status, order_status=outcome.order_status)
        return outcome

    def _breaker_opened(self, reason: str, outcome: ButtonOutcome) -> None:
        self._d.telemetry.breaker_opened(reason)
        log.warning(
            "button_breaker_open",
            reason=reason,
            status=outcome.status,
            retry_after=outcome.retry_after,
        )

    async def _execute(self, record: Record, decision: Decision, context: _Context) -> str:
        """Carry out a final decision: finish the record, dead-letter it, or stop consuming."""
        match decision.verdict:
            case Verdict.DONE:
                await self._acknowledged(context)
                if decision.noteworthy:
                    last = context.attempts.last
                    log.warning(
                        "done_without_change",
                        reason=decision.reason,
                        status=last.status if last else None,
                    )
                return self._finish(record, decision, context)
            case Verdict.DEAD_LETTER:
                return await self._dead_letter(record, decision, context)
            case _:
                # STOP (and a verdict that cannot end a record here): never finish the record.
                raise DeadLetterError(f"cannot continue: {decision.reason}: {decision.detail}")

    def _finish(self, record: Record, decision: Decision, context: _Context) -> str:
        d = self._d
        processed = context.processed
        age = None
        if processed is not None and processed.event_time_ms is not None:
            age = (_ms(d.wall_clock()) - processed.event_time_ms) / 1000.0
        d.telemetry.finished(decision.outcome, age)
        self._record(record, decision, context, decision.reason)
        log.debug(
            "processed", outcome=decision.outcome, action=context.action, reason=decision.reason
        )
        return decision.outcome

    async def _dead_letter(self, record: Record, decision: Decision, context: _Context) -> str:
        d = self._d
        attempts = context.attempts
        last = attempts.last
        event_id, order_id = context.ids
        # What the dead letter parks (DESIGN, 5). Replayed with --release-keys and still not
        # decodable: given up, so the key's order records parked behind it (replayed after it)
        # go on, and its dead letter says so.
        parks = decision.parks
        key_parks = record.key is not None and parks is Parks.KEY
        gives_up = key_parks and releases_key_if_undecodable(record.headers)
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=decision.stage or Stage.DELIVER,
            reason=decision.reason,
            error_class=decision.error_class,
            message=decision.detail,
            dead_lettered_ms=_ms(d.wall_clock()),
            action=context.letter_action,
            order_id=order_id,
            event_id=event_id,
            http_status=last.status if last else None,
            excerpt=last.excerpt if last else "",
            attempts=attempts.count,
            first_attempt_ms=attempts.first_ms,
            last_attempt_ms=attempts.last_ms,
            parked=decision.parked,
            key_released=gives_up,
            parks_order=parks_its_order(
                record.headers,
                parked=decision.parked,
                behind_key_only=context.behind_key_only,
                parks_nothing=parks is Parks.NOTHING,
            ),
        )
        try:
            try:
                await d.dead_letters.write(record, letter)
            except RecordTooLargeError as exc:
                # Certain, not an outage: a reference (no value, no source headers) instead.
                size = len(record.value or b"")  # the source value's size
                letter = as_reference(letter, decide_error(exc).reason, size)
                reference = replace(record, value=None, headers=[])
                try:
                    await d.dead_letters.write(reference, letter)
                except RecordTooLargeError:
                    if not record.key:
                        raise
                    # The key alone is over the DLQ's limit: the reference goes without it.
                    letter = replace(letter, original_key_size=len(record.key))
                    await d.dead_letters.write(replace(reference, key=None), letter)
        except Exception as exc:
            # The table's row for a DeadLetterError is STOP: never finish the record.
            d.telemetry.dead_letter_failed()
            raise DeadLetterError(f"dead-letter write failed: {exc}") from exc
        # The profile's own write first: a park written after it is the key's latest value.
        await self._acknowledged(context)
        if parks is Parks.ORDER and order_id:
            # Park the order (or refresh its parking) once its dead letter is acknowledged, and
            # before the record is finished: its offset is stored only after the park is durable.
            # Parking first could mark this very record, retried after a crash, as parked
            # behind itself.
            await self._write(
                d.parking.park(
                    record.partition, record.key, order_id, letter.reason, d.wall_clock()
                )
            )
            if not decision.parked:
                d.telemetry.order_parked()
        elif record.key is not None and (gives_up or _unparks_its_key(record, decision)):
            # Given up by the operator: whatever parked the key. Replayed: only the parking its
            # own dead letter made (another undecodable record may have parked the key).
            reason = None if gives_up else replayed_reason(record.headers)
            released = d.parking.release_key(record.partition, record.key, reason=reason)
            if released is not None:
                await self._write(released)
                log.warning("key_released", reason=letter.reason)
        elif record.key is not None and key_parks:
            # Its order is unknown (not decoded): park the key, so no later order record
            # of the key overtakes it (released when this record is replayed). A parking of
            # its orders, counted as an order's is, unless the key was parked already.
            now = d.wall_clock()
            newly = not d.parking.key_parked(record.partition, record.key, now)
            await self._write(
                d.parking.park(record.partition, record.key, KEY_PARKED, letter.reason, now)
            )
            if newly:
                d.telemetry.order_parked()
        d.telemetry.dead_lettered(letter.reason)
        d.telemetry.finished(decision.outcome, None)
        self._record(record, decision, context, letter.reason)
        log.warning(
            decision.outcome,
            reason=letter.reason,
            stage=letter.stage.value,
            status=letter.http_status,
            attempts=letter.attempts,
        )
        return decision.outcome

    async def _write(self, write: ChangelogWrite | None) -> None:
        """Write a parking's changelog record (a park or a release) and wait for its
        acknowledgement. The held refunds it erased with their orders to the profile's cap in
        bytes (gone from the store already) are counted and logged first (``report_discarded``),
        as for the profile's own write."""
        if write is not None:
            report_discarded(self._d.telemetry, write)
            await self._d.changelog.write(
                write.partition, write.key, write.value, epoch=write.epoch
            )

    def _start_write(self, write: ChangelogWrite | None) -> asyncio.Future[Any] | None:
        """Queue ``write`` now and return its acknowledgement to await later (``None``: none).

        The changelog queues a record before ``write`` returns (``consumer.ports.Changelog``),
        so it is queued before anything else of this record is written or sent.
        """
        if write is None:
            return None
        return asyncio.ensure_future(
            self._d.changelog.write(write.partition, write.key, write.value, epoch=write.epoch)
        )

    @staticmethod
    async def _acknowledged(context: _Context) -> None:
        """Wait for the profile's changelog write of this record, if any; raise if it failed
        (the record must not be finished: the worker stops, as for any unwritable changelog)."""
        pending, context.pending = context.pending, None
        if pending is not None:
            await pending

    def _record(self, record: Record, decision: Decision, context: _Context, reason: str) -> None:
        attempts = context.attempts
        event_id, order_id = context.ids
        last = attempts.last
        self._d.telemetry.delivery(
            Delivery(
                at=self._d.wall_clock().timestamp(),
                partition=record.partition,
                offset=record.offset,
                event_id=event_id,
                action=context.action,
                order_id=order_id,
                outcome=decision.outcome,
                status=last.status if last else None,
                attempts=attempts.count,
                reason=reason,
                event_type=context.event_type,
            )
        )


@dataclass(frozen=True, slots=True)
class _Budget:
    """Where a record's delivery stands after an attempt, for the policy's decision."""

    attempt: int
    since: float
    """Monotonic seconds the elapsed budget counts from (the start, moved by paused time)."""
    key_accepted: bool
    source: tuple[int, int]
    """The record's (partition, offset), for the circuit breaker."""


@dataclass(slots=True)
class _Context:
    """What is known of a record when its decision is carried out."""

    processed: Processed | None = None
    action: str = "none"
    attempts: _Attempts = field(default_factory=_Attempts)
    event_type: str = ""
    pending: asyncio.Future[Any] | None = None
    """The profile's changelog write, queued but not yet awaited (``_acknowledged``)."""
    behind_key_only: bool = False
    """Parked only because its key is (``ParkingCheck.behind_key_only``)."""
    event_id: str = ""
    order_id: str = ""
    """The ids of a record known without ``processed`` (one that decoded but is not a valid
    event: ``InvalidEventError``)."""

    @property
    def ids(self) -> tuple[str, str]:
        """The record's event id and order id, as far as they are known."""
        processed = self.processed
        if processed is not None:
            return processed.event_id, processed.order_id
        return self.event_id, self.order_id

    @property
    def letter_action(self) -> str:
        """The dead letter's action header: empty when nothing was mapped."""
        return "" if self.action == "none" else self.action


def _unparks_its_key(record: Record, decision: Decision) -> bool:
    """Whether a dead letter releases its key's parking: the replay of a dead letter that
    parked the key (an older version parked it behind a record that decoded but was not a
    valid event) fails validation again, and now parks nothing (DESIGN, 5). Its replay
    releases the key as the replay of a record that decodes now does."""
    return (
        decision.parks is Parks.NOTHING
        and decision.error_class == InvalidEventError.__name__
        and replays_parking_letter(record.headers)
        and releases_parked_key(record.headers)
    )


def _key_too_large(key: bytes | None) -> bool:
    """Whether ``key`` is too long to keep a profile under (``MAX_KEY_BYTES``)."""
    return key is not None and len(key) > MAX_KEY_BYTES


def _release(permit: Permit | None) -> None:
    """Give back a concurrency permit taken ahead and not used (``None``: nothing held)."""
    if permit is not None:
        permit.release()


def _abandon(pending: asyncio.Future[Any] | None) -> None:
    """Stop waiting for a changelog acknowledgement: its record will not be finished (its
    offset is never stored), so the write's fate no longer matters; an error it already has
    counts as seen."""
    if pending is None:
        return
    if not pending.done():
        pending.cancel()
    elif not pending.cancelled():
        pending.exception()


def _action(result: MapResult) -> str:
    match result:
        case Send(request=request) | Read(request=request):
            return request.action.value
        case Skip():
            return Action.SKIP.value
        case _:
            return Action.REJECT.value


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
