"""What happens to one record, from bytes to *finished*.

decode -> profile + mapping -> (parked? dry run?) -> send with the failure policy -> dead letter.
A record is finished when Button accepted it, it was skipped on purpose, or its dead-letter write
was acknowledged (and, for an order's record, the order's parking written to the changelog);
``handle`` returns only then, and raises only when the record must not be considered finished
(the dead-letter or changelog topic cannot be written): the worker then stops consuming.

Parking (DESIGN, 5) lives in the user's profile, behind the ``Processor`` port: after the dead
letter of an order's record is acknowledged, the order is parked and the profile written to the
changelog before the record counts as finished, so a parked order stays parked across restarts
and rebalances (its offset is stored only once the park is durable).

The collaborators are ports (small protocols) so the whole path is testable with fakes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from consumer.adapters.admin import Delivery, DeliveryLog
from consumer.adapters.kafka import Record
from consumer.adapters.metrics import Metrics
from consumer.domain.button import Action, ButtonRequest, Reject, Send, Skip
from consumer.domain.deadletter import H_REPLAYED, H_REPLAYED_PARKED, DeadLetter, Stage
from consumer.domain.events import CommerceEvent
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.domain.policy import Decision, RetryPolicy, Verdict, decide
from consumer.engine.authgate import AuthGate
from consumer.engine.backoff import RandomSource
from consumer.engine.concurrency import AdaptiveLimiter, TokenBucket
from consumer.engine.profiles import ChangelogWrite
from consumer.errors import DeadLetterError, DecodeError, SchemaRegistryUnavailableError

log = structlog.get_logger("consumer.pipeline")


class Decoder(Protocol):
    def decode_event(self, value: bytes) -> CommerceEvent: ...


class ButtonPort(Protocol):
    async def send(self, request: ButtonRequest) -> ButtonOutcome: ...


@dataclass(frozen=True, slots=True)
class Processed:
    """The mapper's verdict on one event and the profile change it caused."""

    result: Send | Skip | Reject
    event_id: str
    event_time_ms: int | None
    order_id: str
    profile_changed: bool
    profile_value: bytes | None  # None with profile_changed = tombstone
    parked: str | None = None
    """The first dead letter's reason if the order is parked behind it, else ``None``."""


class Processor(Protocol):
    """Enrichment, profile state, mapping and parking for one record (pure but for the store).

    ``park`` and ``release`` return the changelog record to write (``None``: nothing to write,
    e.g. a record without a key, whose parking is not durable).
    """

    def process(
        self, partition: int, key: bytes | None, event: CommerceEvent, now: datetime
    ) -> Processed: ...

    def park(
        self, partition: int, key: bytes | None, order_id: str, reason: str, now: datetime
    ) -> ChangelogWrite | None:
        """Park ``order_id`` (first reason kept, time refreshed if already parked)."""
        ...

    def release(self, partition: int, key: bytes | None, order_id: str) -> ChangelogWrite | None:
        """Unpark ``order_id``: its first dead letter is being replayed."""
        ...


class Changelog(Protocol):
    async def write(self, partition: int, key: bytes, value: bytes | None) -> None: ...


class DeadLetterSink(Protocol):
    async def write(self, record: Record, letter: DeadLetter) -> None: ...


@dataclass(slots=True)
class PipelineDeps:
    """Everything the pipeline talks to; built by the composition root."""

    decoder: Decoder
    processor: Processor
    changelog: Changelog
    button: ButtonPort
    dead_letters: DeadLetterSink
    retry: RetryPolicy
    rng: RandomSource
    limiter: AdaptiveLimiter
    rate: TokenBucket | None
    gate: AuthGate
    metrics: Metrics
    deliveries: DeliveryLog
    wall_clock: Callable[[], datetime]
    monotonic: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    dry_run: bool = False


@dataclass(slots=True)
class _Attempts:
    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    last: ButtonOutcome | None = None


class Pipeline:
    """Turns one record into a finished record."""

    def __init__(self, deps: PipelineDeps) -> None:
        self._d = deps

    async def handle(self, record: Record) -> str:
        """Process ``record`` until it is finished; return its outcome name."""
        d = self._d
        structlog.contextvars.bind_contextvars(
            partition=record.partition, offset=record.offset, key=_key_hash(record.key)
        )
        try:
            return await self._handle(record)
        finally:
            structlog.contextvars.unbind_contextvars("partition", "offset", "key", "event_id")
            d.metrics.in_flight.dec()

    async def _handle(self, record: Record) -> str:
        d = self._d
        try:
            event = await self._decode(record)
            processed = d.processor.process(record.partition, record.key, event, d.wall_clock())
        except DecodeError as exc:
            d.metrics.decode_failures.labels(exc.reason).inc()
            return await self._dead_letter(
                record, Stage.DECODE, exc.reason, type(exc).__name__, str(exc)
            )
        structlog.contextvars.bind_contextvars(event_id=processed.event_id)
        if processed.profile_changed and record.key is not None:
            await d.changelog.write(record.partition, record.key, processed.profile_value)
        result = processed.result
        parked_reason = processed.parked
        if processed.order_id and _replay_of_first_dead_letter(record):
            # The record whose dead letter parked its order is back: release the order so it
            # and the records parked behind it (replayed after it, in order) are sent again.
            await self._write(d.processor.release(record.partition, record.key, processed.order_id))
            parked_reason = None
        if isinstance(result, Skip):
            return self._finish(record, processed, "skipped", Action.SKIP, reason=result.reason)
        if isinstance(result, Reject):
            return await self._dead_letter(
                record,
                Stage.MAP,
                result.reason,
                "MappingError",
                result.detail or result.reason,
                processed=processed,
                action=Action.REJECT.value,
            )
        request = result.request
        if parked_reason is not None:
            return await self._dead_letter(
                record,
                Stage.DELIVER,
                "parked",
                "Parked",
                f"order {request.order_id} is parked behind a dead letter ({parked_reason})",
                processed=processed,
                action=request.action.value,
                parked=True,
            )
        if d.dry_run:
            log.info("dry_run", action=request.action.value, path=request.path)
            return self._finish(record, processed, "dry_run", request.action)
        return await self._deliver(record, processed, request)

    async def _decode(self, record: Record) -> CommerceEvent:
        """Decode the value; while the schema registry is unreachable, wait and try again."""
        if record.value is None:
            raise DecodeError("null_value", "the record has no value (tombstone)")
        delay = 0.5
        while True:
            try:
                return self._d.decoder.decode_event(record.value)
            except SchemaRegistryUnavailableError as exc:
                log.warning("schema_registry_unavailable", error=str(exc), retry_in=delay)
                await self._d.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _deliver(self, record: Record, processed: Processed, request: ButtonRequest) -> str:
        d = self._d
        attempts = _Attempts()
        started = d.monotonic()
        paused_for = 0.0
        while True:
            if d.gate.closed:
                paused_since = d.monotonic()
                await d.gate.admit()
                paused_for += d.monotonic() - paused_since
            else:
                await d.gate.admit()
            if d.rate is not None:
                await d.rate.take(d.sleep)
            async with d.limiter.permit() as permit:
                attempts.count += 1
                now_ms = _ms(d.wall_clock())
                attempts.first_ms = attempts.first_ms or now_ms
                attempts.last_ms = now_ms
                outcome = await d.button.send(request)
                permit.observe(outcome)
            attempts.last = outcome
            d.metrics.concurrency_limit.set(d.limiter.limit)
            d.metrics.button_requests.labels(request.action.value, outcome.kind.value).inc()
            d.metrics.button_latency.labels(request.action.value).observe(outcome.elapsed)
            decision = decide(
                request.action,
                outcome,
                attempt=attempts.count,
                elapsed=d.monotonic() - started - paused_for,
                policy=d.retry,
                rng=d.rng,
            )
            if (
                decision.verdict is not Verdict.PAUSE
                and d.gate.closed
                and outcome.kind not in (OutcomeKind.TIMEOUT, OutcomeKind.CONNECTION_ERROR)
            ):
                d.gate.open()
                log.info("button_auth_recovered")
            if decision.verdict is Verdict.DONE:
                if decision.noteworthy:
                    log.warning(
                        "done_without_change", reason=decision.reason, status=outcome.status
                    )
                return self._finish(
                    record, processed, "delivered", request.action, outcome, attempts, decision
                )
            if decision.verdict is Verdict.RETRY:
                d.metrics.retries.labels(outcome.kind.value).inc()
                log.info(
                    "retrying",
                    status=outcome.status,
                    outcome=outcome.kind.value,
                    attempt=attempts.count,
                    delay=round(decision.delay, 3),
                )
                await d.sleep(decision.delay)
                continue
            if decision.verdict is Verdict.PAUSE:
                if not d.gate.closed:
                    log.error("button_auth_failed", status=outcome.status, message=outcome.message)
                d.gate.close()
                attempts.count -= 1  # a paused attempt does not use up the retry budget
                continue
            if decision.verdict is Verdict.STOP:
                raise DeadLetterError(f"cannot continue: {decision.reason}")
            return await self._dead_letter(
                record,
                Stage.DELIVER,
                decision.reason,
                f"Button{outcome.kind.value.title().replace('_', '')}",
                _failure_message(decision, outcome),
                processed=processed,
                action=request.action.value,
                attempts=attempts,
            )

    def _finish(
        self,
        record: Record,
        processed: Processed,
        outcome_name: str,
        action: Action,
        outcome: ButtonOutcome | None = None,
        attempts: _Attempts | None = None,
        decision: Decision | None = None,
        reason: str = "",
    ) -> str:
        d = self._d
        d.metrics.records_finished.labels(outcome_name).inc()
        if processed.event_time_ms is not None:
            age = _ms(d.wall_clock()) - processed.event_time_ms
            d.metrics.event_age.observe(max(age, 0) / 1000.0)
        why = reason or (decision.reason if decision is not None else "")
        self._record(
            record,
            processed.event_id,
            action.value,
            processed.order_id,
            outcome_name,
            outcome.status if outcome else None,
            attempts.count if attempts else 0,
            why,
        )
        log.debug("processed", outcome=outcome_name, action=action.value, reason=why or None)
        return outcome_name

    async def _dead_letter(
        self,
        record: Record,
        stage: Stage,
        reason: str,
        error_class: str,
        message: str,
        *,
        processed: Processed | None = None,
        action: str = "",
        parked: bool = False,
        attempts: _Attempts | None = None,
    ) -> str:
        d = self._d
        last = attempts.last if attempts else None
        letter = DeadLetter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            stage=stage,
            reason=reason,
            error_class=error_class,
            message=message,
            dead_lettered_ms=_ms(d.wall_clock()),
            action=action,
            order_id=processed.order_id if processed else "",
            event_id=processed.event_id if processed else "",
            http_status=last.status if last else None,
            excerpt=last.excerpt if last else "",
            attempts=attempts.count if attempts else 0,
            first_attempt_ms=attempts.first_ms if attempts else None,
            last_attempt_ms=attempts.last_ms if attempts else None,
            parked=parked,
        )
        try:
            await d.dead_letters.write(record, letter)
        except Exception as exc:
            raise DeadLetterError(f"dead-letter write failed: {exc}") from exc
        if letter.order_id:
            # Park the order (or refresh its parking) once its dead letter is acknowledged, and
            # before the record is finished: its offset is stored only after the park is durable.
            # Parking first could mark this very record, retried after a crash, as parked
            # behind itself.
            await self._write(
                d.processor.park(
                    record.partition, record.key, letter.order_id, reason, d.wall_clock()
                )
            )
        outcome = "parked" if parked else "dead_lettered"
        d.metrics.dead_letters.labels(reason).inc()
        d.metrics.records_finished.labels(outcome).inc()
        self._record(
            record,
            letter.event_id,
            action or "none",
            letter.order_id,
            outcome,
            letter.http_status,
            letter.attempts,
            reason,
        )
        log.warning(
            outcome,
            reason=reason,
            stage=stage.value,
            status=letter.http_status,
            attempts=letter.attempts,
        )
        return outcome

    async def _write(self, write: ChangelogWrite | None) -> None:
        if write is not None:
            await self._d.changelog.write(write.partition, write.key, write.value)

    def _record(
        self,
        record: Record,
        event_id: str,
        action: str,
        order_id: str,
        outcome: str,
        status: int | None,
        attempts: int,
        reason: str,
    ) -> None:
        self._d.deliveries.add(
            Delivery(
                at=self._d.wall_clock().timestamp(),
                partition=record.partition,
                offset=record.offset,
                event_id=event_id,
                action=action,
                order_id=order_id,
                outcome=outcome,
                status=status,
                attempts=attempts,
                reason=reason,
            )
        )


def _failure_message(decision: Decision, outcome: ButtonOutcome) -> str:
    """``http_503 after retries: <Button's message>``: the last failure, not only the verdict."""
    detail = outcome.message or outcome.kind.value
    return f"{decision.cause} after retries: {detail}" if decision.cause else detail


def _replay_of_first_dead_letter(record: Record) -> bool:
    """A replayed record that was dead-lettered for itself, not parked behind another."""
    replayed = parked = False
    for name, value in record.headers:
        if name == H_REPLAYED:
            replayed = True
        elif name == H_REPLAYED_PARKED:
            parked = value == b"true"
    return replayed and not parked


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _key_hash(key: bytes | None) -> str | None:
    """Log a stable short hash of the key, never the user id itself."""
    return None if key is None else hashlib.sha256(key).hexdigest()[:12]
