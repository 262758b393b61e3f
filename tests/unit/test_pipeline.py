"""One record from bytes to finished: delivery, retries, the auth gate, parking and dead letters.

Every port is a hand-written fake (decoder, processor, changelog, Button, dead-letter sink); the
retry policy, limiter, auth gate, metrics and live log are the real ones, driven by a fake clock
whose ``sleep`` records each delay and advances time instead of waiting. The restart tests use
the real ``ProfileProcessor``, restored from what the first pipeline wrote to the changelog.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from consumer.adapters.admin import DeliveryLog, Health
from consumer.adapters.logging import configure_logging
from consumer.adapters.metrics import Metrics
from consumer.adapters.telemetry import ServiceTelemetry
from consumer.domain.attribution import DroppedToken, TokenProblem, TokenSource
from consumer.domain.button import (
    Action,
    ButtonRequest,
    DiscardedRefund,
    DroppedInput,
    Reject,
    Send,
    Skip,
)
from consumer.domain.deadletter import (
    DeadLetter,
    dead_letter_headers,
    header_map,
    replays_parking_letter,
)
from consumer.domain.event_forms import event_from_record, event_to_record
from consumer.domain.events import (
    MAX_KEY_BYTES,
    CommerceData,
    CommerceEvent,
    EventType,
    Product,
    ProductAction,
)
from consumer.domain.mapping import MappingConfig
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.domain.policy import RetryPolicy
from consumer.domain.profile import expires_at_ms
from consumer.domain.profile_codec import encode_profile
from consumer.domain.triage import InertEvent
from consumer.engine.authgate import AuthGate
from consumer.engine.breaker import CircuitBreaker
from consumer.engine.concurrency import AdaptiveLimiter, TokenBucket
from consumer.engine.parking import KEY_PARKED, Parking, ParkingCheck, ParkingLot
from consumer.engine.pipeline import (
    KEY_PROBLEM_LOG_INTERVAL,
    ParkingPort,
    Pipeline,
    PipelineDeps,
    Processed,
    Processor,
)
from consumer.engine.processor import ProfileProcessor
from consumer.engine.profiles import ChangelogWrite, ProfileStore
from consumer.errors import (
    DeadLetterError,
    DecodeError,
    RecordTooLargeError,
    SchemaNotFoundYetError,
    SchemaRegistryUnavailableError,
    UnknownSchemaError,
)
from consumer.ports import Record
from consumer.replay import replay_headers

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
SEED = 20260105
PROBE_INTERVAL = 5.0
ORDER = "ORD-1"
DEADLINE = 30.0
"""Seconds a test waits for a state that holds by construction (a bound, not a timing)."""

EVENT = CommerceEvent(
    event_id="evt-1",
    event_type=EventType.PURCHASE,
    event_time=T0 - timedelta(seconds=5),
    user_key="user-1",
    commerce=CommerceData(
        action=ProductAction.PURCHASE,
        transaction_id=ORDER,
        currency_code="USD",
        total_amount=Decimal("10.00"),
    ),
)

OK = ButtonOutcome(OutcomeKind.SUCCESS, 200, elapsed=0.01, from_button=True)
NOT_FOUND = ButtonOutcome(OutcomeKind.NOT_FOUND, 404, "Order not found", from_button=True)
"""Button's answer to the probe (a read of an unknown order) when it accepts the key."""
FORBIDDEN_HTML = ButtonOutcome(OutcomeKind.FORBIDDEN, 403, "HTTP 403", excerpt="<html>Denied")
"""A 403 page of a proxy, WAF or CDN in front of Button."""
FORBIDDEN_BUTTON = ButtonOutcome(
    OutcomeKind.FORBIDDEN, 403, "Forbidden", excerpt='{"meta":{"status":"error"}}', from_button=True
)
"""Button's own 403 that does not say "finalized"."""
CONFLICT = ButtonOutcome(OutcomeKind.CONFLICT, 409, "Order already exists")
INVALID = ButtonOutcome(
    OutcomeKind.INVALID, 400, "order_id is invalid", excerpt='{"meta":{"status":"error"}}'
)
UNAVAILABLE = ButtonOutcome(OutcomeKind.SERVER_ERROR, 503, "Service Unavailable")
UNAUTHORIZED = ButtonOutcome(OutcomeKind.UNAUTHORIZED, 401, "Invalid API key")
TIMEOUT = ButtonOutcome(OutcomeKind.TIMEOUT, None, "read timeout")


# --- fakes at the ports ------------------------------------------------------------------------


class FakeClock:
    """Monotonic and wall time that move only when the code under test sleeps."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 1_000.0 + self.elapsed

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)

    def wall_seconds(self) -> float:
        return self.wall().timestamp()

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.elapsed += delay
        await asyncio.sleep(0)  # a real sleep lets other records run: so does this one


class FakeDecoder:
    """Returns the scripted events or raises the scripted errors, then ``EVENT``."""

    def __init__(self, *script: CommerceEvent | InertEvent | Exception) -> None:
        self.script = list(script)
        self.calls = 0

    def decode_event(self, value: bytes) -> CommerceEvent:
        step = self.decode_triaged(value)
        assert isinstance(step, CommerceEvent)
        return step

    def decode_triaged_at_hand(self, value: bytes) -> CommerceEvent | InertEvent | None:
        return self.decode_triaged(value)

    async def decode_triaged_async(self, value: bytes) -> CommerceEvent | InertEvent:
        return self.decode_triaged(value)

    def decode_triaged(self, value: bytes) -> CommerceEvent | InertEvent:
        self.calls += 1
        step = self.script.pop(0) if self.script else EVENT
        if isinstance(step, Exception):
            raise step
        return step


class FakeProcessor:
    """Returns the scripted ``Processed`` results in turn (the last one repeats); also parking.

    Parking is a dict of order id -> first reason; ``park`` and a release (the replay of an
    order's first dead letter, seen by ``check``) return a changelog record
    ``parked:<order ids>`` for a keyed record, nothing for a keyless one.
    """

    def __init__(self, *script: Processed) -> None:
        self.script = list(script)
        self.calls: list[tuple[int, bytes | None, CommerceEvent]] = []
        self.parked: dict[str, str] = {}
        self.parking_calls: list[tuple[str, bytes | None, str]] = []

    def process(
        self,
        partition: int,
        key: bytes | None,
        event: CommerceEvent,
        now: datetime,
        lookup: Any = None,
    ) -> Processed:
        self.calls.append((partition, key, event))
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def apply(self, partition: int, key: bytes, processed: Processed) -> ChangelogWrite | None:
        """The scripted profile bytes (``updated``) as the changelog record, if it changed."""
        if not processed.profile_changed:
            return None
        value = processed.updated
        assert value is None or isinstance(value, bytes)
        return ChangelogWrite(partition, key, value)

    def check(self, record: Record, order_id: str, now: datetime) -> ParkingCheck:
        if not order_id:
            return ParkingCheck()
        if replays_parking_letter(record.headers):
            self.parking_calls.append(("release", record.key, order_id))
            self.parked.pop(order_id, None)
            return ParkingCheck(None, self._write(record.partition, record.key))
        return ParkingCheck(self.parked.get(order_id))

    def park(
        self, partition: int, key: bytes | None, order_id: str, reason: str, now: datetime
    ) -> ChangelogWrite | None:
        self.parking_calls.append(("park", key, order_id))
        self.parked.setdefault(order_id, reason)
        return self._write(partition, key)

    def key_parked(self, partition: int, key: bytes, now: datetime) -> bool:
        return KEY_PARKED in self.parked

    def release_key(
        self, partition: int, key: bytes, *, reason: str | None = None
    ) -> ChangelogWrite | None:
        self.parking_calls.append(("release_key", key, ""))
        if reason is not None and self.parked.get("") not in (None, reason):
            return None  # parked behind another record's reason: not this one's to release
        self.parked.pop("", None)
        return self._write(partition, key)

    def _write(self, partition: int, key: bytes | None) -> ChangelogWrite | None:
        if key is None:
            return None
        return ChangelogWrite(partition, key, ("parked:" + ",".join(self.parked)).encode())


class FakeChangelog:
    """Queues each write when ``write`` is called (as the port says) and returns its
    acknowledgement: ``hold`` keeps it back until set; ``fail`` makes the broker refuse it."""

    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.written: list[ChangelogWrite] = []
        self.on_write: Any = None
        self.fail = False
        self.hold: asyncio.Event | None = None
        self.acknowledged: list[ChangelogWrite] = []

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> asyncio.Future[None]:
        if self.on_write is not None:
            self.on_write()
        write = ChangelogWrite(partition, key, value, epoch=epoch)
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.fail:
            self.calls.append(("changelog", partition, key, value))
            self.written.append(write)
        report = asyncio.get_running_loop().create_task(self._acknowledge(write, ack))
        # An abandoned acknowledgement is never reported (as the producer's future is skipped).
        ack.add_done_callback(lambda done: report.cancel() if done.cancelled() else None)
        return ack

    async def _acknowledge(self, write: ChangelogWrite, ack: asyncio.Future[None]) -> None:
        await asyncio.sleep(0)  # the delivery report comes later, from the producer's thread
        if self.hold is not None:
            await self.hold.wait()
        if ack.done():  # abandoned by its record
            return
        if self.fail:
            ack.set_exception(RuntimeError("changelog: message timed out"))
            return
        self.acknowledged.append(write)
        ack.set_result(None)


class FakeButton:
    """Answers with the scripted outcomes in order; records each request and the gate's state.

    ``probe()`` is the record-independent probe: it answers the scripted ``probes`` in order,
    then ``NOT_FOUND`` (Button accepts the key).
    """

    def __init__(self, calls: list[tuple[Any, ...]], gate: AuthGate) -> None:
        self.calls = calls
        self.gate = gate
        self.outcomes: list[ButtonOutcome] = []
        self.probes: list[ButtonOutcome] = []
        self.probed = 0
        self.sent: list[ButtonRequest] = []
        self.gate_closed_at_send: list[bool] = []
        self.on_send: Any = None
        self.reads: list[ButtonOutcome] = []
        self.read_ids: list[str] = []

    async def probe(self) -> ButtonOutcome:
        self.probed += 1
        self.calls.append(("probe",))
        return self.probes.pop(0) if self.probes else NOT_FOUND

    async def send(self, request: ButtonRequest) -> ButtonOutcome:
        if not self.outcomes:
            raise AssertionError(f"unexpected request to Button: {request}")
        self.sent.append(request)
        if self.on_send is not None:
            self.on_send()
        self.gate_closed_at_send.append(self.gate.closed)
        self.calls.append(("button", request.action.value, request.order_id))
        return self.outcomes.pop(0)

    async def get(self, order_id: str) -> ButtonOutcome:
        if not self.reads:
            raise AssertionError(f"unexpected read of order {order_id}")
        self.read_ids.append(order_id)
        self.calls.append(("read", order_id))
        return self.reads.pop(0)


class FakeDeadLetters:
    def __init__(self, calls: list[tuple[Any, ...]]) -> None:
        self.calls = calls
        self.written: list[tuple[Record, DeadLetter]] = []

    async def write(self, record: Record, letter: DeadLetter) -> None:
        self.calls.append(("dead_letter", letter.reason))
        self.written.append((record, letter))


class SizeLimitedDeadLetters(FakeDeadLetters):
    """Refuses records over ``limit`` bytes of value (and of key, with ``keys``) as the
    producer does (too large: certain)."""

    def __init__(self, calls: list[tuple[Any, ...]], limit: int, *, keys: bool = False) -> None:
        super().__init__(calls)
        self.limit = limit
        self.keys = keys

    async def write(self, record: Record, letter: DeadLetter) -> None:
        size = len(record.value or b"") + (len(record.key or b"") if self.keys else 0)
        if size > self.limit:
            raise RecordTooLargeError(size, "Broker: Message size too large")
        await super().write(record, letter)


class BrokenDeadLetters:
    async def write(self, record: Record, letter: DeadLetter) -> None:
        raise RuntimeError("broker down: message timed out")


@dataclass
class Harness:
    """A pipeline wired to fakes, and the fakes to inspect afterwards."""

    clock: FakeClock = field(default_factory=FakeClock)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    decoder: FakeDecoder = field(default_factory=FakeDecoder)
    processor: FakeProcessor = field(default_factory=lambda: FakeProcessor(processed()))
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=3))
    rate: TokenBucket | None = None
    dry_run: bool = False
    real_processor: ProfileProcessor | None = None

    breaker_threshold: int = 100
    stop_gate: Any = None

    def __post_init__(self) -> None:
        self.button = FakeButton(self.calls, AuthGate(PROBE_INTERVAL))
        self.gate = self.button.gate = self.auth_gate(PROBE_INTERVAL)
        self.breaker = CircuitBreaker(
            failure_threshold=self.breaker_threshold,
            probe_interval=PROBE_INTERVAL,
            policy=self.retry,
            probe=self.button.probe,
            sleep=self.clock.sleep,
            clock=self.clock.monotonic,
        )
        self.changelog = FakeChangelog(self.calls)
        self.dead_letters: FakeDeadLetters | BrokenDeadLetters = FakeDeadLetters(self.calls)
        self.metrics = Metrics.create(CollectorRegistry())
        self.deliveries = DeliveryLog(10)

    def auth_gate(self, interval: float) -> AuthGate:
        """An auth gate probing with the fake Button, on the fake clock."""
        return AuthGate(interval, self.button.probe, self.clock.sleep, self.clock.monotonic)

    def deps(self) -> PipelineDeps:
        processor: Processor = self.processor
        parking: ParkingPort = self.processor
        if self.real_processor is not None:
            processor = self.real_processor
            parking = Parking(
                self.real_processor.store,
                max_orders_per_profile=MappingConfig().max_orders_per_profile,
                keyless=ParkingLot(clock=self.clock.monotonic),
            )
        return PipelineDeps(
            decoder=self.decoder,
            processor=processor,
            parking=parking,
            changelog=self.changelog,
            button=self.button,
            dead_letters=self.dead_letters,
            retry=self.retry,
            rng=random.Random(SEED),
            limiter=AdaptiveLimiter(clock=self.clock.monotonic),
            rate=self.rate,
            gate=self.gate,
            breaker=self.breaker,
            telemetry=ServiceTelemetry(self.metrics, Health(), self.deliveries),
            wall_clock=self.clock.wall,
            monotonic=self.clock.monotonic,
            sleep=self.clock.sleep,
            dry_run=self.dry_run,
            **({} if self.stop_gate is None else {"stop_gate": self.stop_gate}),
        )

    def answer(self, *outcomes: ButtonOutcome) -> Harness:
        self.button.outcomes.extend(outcomes)
        return self

    def handle(self, *records: Record) -> list[str]:
        pipeline = Pipeline(self.deps())

        async def scenario() -> list[str]:
            return [await pipeline.handle(r) for r in records]

        return asyncio.run(scenario())

    @property
    def letters(self) -> list[DeadLetter]:
        assert isinstance(self.dead_letters, FakeDeadLetters)
        return [letter for _, letter in self.dead_letters.written]

    def dlq_headers(self, index: int = 0) -> dict[str, str]:
        """The headers the Kafka DLQ adapter writes for the index-th dead letter."""
        assert isinstance(self.dead_letters, FakeDeadLetters)
        record, letter = self.dead_letters.written[index]
        return header_map(dead_letter_headers(letter, record.headers))

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"button_consumer_{name}", labels)
        return 0.0 if value is None else value

    def last_delivery(self) -> dict[str, Any]:
        return self.deliveries.recent(1)[0]


def request(action: Action = Action.CREATE, order_id: str = ORDER) -> ButtonRequest:
    if action is Action.CREATE:
        return ButtonRequest(action, "POST", "/v1/order", order_id, {"order_id": order_id})
    method = "DELETE" if action is Action.CANCEL else "POST"
    return ButtonRequest(action, method, f"/v1/order/{order_id}", order_id, {})


def processed(
    result: Send | Skip | Reject | None = None,
    *,
    order_id: str = ORDER,
    event_id: str = "evt-1",
    profile_changed: bool = False,
    profile_value: bytes | None = None,
) -> Processed:
    return Processed(
        result=Send(request(order_id=order_id)) if result is None else result,
        event_id=event_id,
        event_time_ms=T0_MS - 5_000,
        order_id=order_id,
        profile_changed=profile_changed,
        updated=profile_value,
    )


def record(
    offset: int = 17,
    *,
    key: bytes | None = b"user-1",
    value: bytes | None = b"\x00avro",
    headers: list[tuple[str, bytes]] | None = None,
) -> Record:
    return Record(
        topic="commerce-events",
        partition=2,
        offset=offset,
        key=key,
        value=value,
        timestamp_ms=T0_MS,
        headers=headers or [],
    )


def replayed(offset: int, *, parked: bool, release: bool = False) -> Record:
    flag = b"true" if parked else b"false"
    headers = [("button.replayed", b"0:5"), ("button.replayed.parked", flag)]
    if release:
        headers.append(("button.replayed.release", b"true"))
    return record(offset, headers=headers)


RELEASED_IN_ORDER = [(Action.CREATE, "ORD-9"), (Action.CREATE, ORDER), (Action.CANCEL, ORDER)]
"""What reaches Button once a key's head (another order, ORD-9) and then the order parked behind
the key are replayed: the head's create, then the order's create before its cancel."""


# --- delivered ---------------------------------------------------------------------------------


def test_success_delivers_the_request_once() -> None:
    """A 2xx answer finishes the record as delivered after exactly one request."""
    h = Harness().answer(OK)

    outcomes = h.handle(record())

    assert (["delivered"], [request()], []) == (outcomes, h.button.sent, h.letters)


def test_delivered_record_is_shown_in_the_live_log() -> None:
    """The live log gets one redacted line with the action, order, status and attempts."""
    h = Harness().answer(OK)

    h.handle(record())

    expected = {
        "partition": 2,
        "offset": 17,
        "event_id": "evt-1",
        "action": "create",
        "order_id": ORDER,
        "outcome": "delivered",
        "status": 200,
        "attempts": 1,
        "reason": "ok",
    }
    actual = h.last_delivery()
    assert expected == {k: actual[k] for k in expected}


def test_delivered_record_is_counted_by_outcome_and_request() -> None:
    """records_finished{delivered} and button_requests{create,success,2xx} count the record."""
    h = Harness().answer(OK)

    h.handle(record())

    expected = (1.0, 1.0)
    actual = (
        h.sample("records_finished_total", outcome="delivered"),
        h.sample("button_requests_total", action="create", outcome="success", status_class="2xx"),
    )
    assert expected == actual


def test_event_age_is_observed_when_the_record_finishes() -> None:
    """The event-age histogram gets the time from event time to finish (5 s here)."""
    h = Harness().answer(OK)

    h.handle(record())

    expected = (1.0, 5.0)
    actual = (h.sample("event_age_seconds_count"), h.sample("event_age_seconds_sum"))
    assert expected == actual


class StoppingAfter:
    """A ``StopGate`` whose partition is revoked once ``sent`` requests went out; records
    held at it wait until the test abandons them."""

    def __init__(self, sent: list[ButtonRequest], after: int) -> None:
        self._sent, self._after = sent, after
        self.held = asyncio.Event()

    def stopping(self, partition: int) -> bool:
        return len(self._sent) >= self._after

    async def hold_if_stopping(self, partition: int) -> None:
        if self.stopping(partition):
            self.held.set()
            await asyncio.get_running_loop().create_future()


def test_a_record_of_a_revoked_partition_sends_no_new_request() -> None:
    """Its first request answered 503, the record would retry; its partition is revoked
    meanwhile: the retry is not sent (it could still be in flight at the revoke deadline, be
    abandoned, and be applied by Button after the next owner's newer requests). The record
    waits, unfinished, until it is abandoned; its concurrency permit is not held meanwhile."""
    h = Harness().answer(UNAVAILABLE, OK)
    gate = h.stop_gate = StoppingAfter(h.button.sent, 1)
    deps = h.deps()

    async def scenario() -> None:
        task = asyncio.create_task(Pipeline(deps).handle(record()))
        await asyncio.wait_for(gate.held.wait(), 5.0)
        assert deps.limiter.in_flight == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())

    assert (
        len(h.button.sent),
        h.letters,
        h.sample("records_finished_total", outcome="delivered"),
    ) == (
        1,
        [],
        0.0,
    )


def test_conflict_on_create_means_delivered() -> None:
    """409 on a create: the order already exists at Button, so the record is done."""
    h = Harness().answer(CONFLICT)

    outcomes = h.handle(record())

    assert (
        outcomes,
        h.last_delivery()["reason"],
        h.letters,
    ) == (["delivered"], "order_exists", [])


def follow_up_send(order_id: str = ORDER) -> Send:
    """A create carrying the update of the same state, sent when the create is answered 409."""
    return Send(request(order_id=order_id), follow_up=request(Action.UPDATE, order_id))


def test_conflict_on_create_sends_its_follow_up_update() -> None:
    """Issue 9: 409 on a create carrying a follow-up: the update of the same full state is sent
    next, and its answer (200) finishes the record; metrics and the live log count it."""
    h = Harness(processor=FakeProcessor(processed(follow_up_send()))).answer(CONFLICT, OK)

    outcomes = h.handle(record())

    delivery = h.last_delivery()
    assert (outcomes, h.button.sent, h.letters) == (
        ["delivered"],
        [request(), request(Action.UPDATE)],
        [],
    )
    assert (delivery["action"], delivery["reason"], delivery["status"]) == ("update", "ok", 200)
    counted = (
        h.sample("button_requests_total", action="create", outcome="conflict", status_class="4xx"),
        h.sample("button_requests_total", action="update", outcome="success", status_class="2xx"),
        h.sample("records_finished_total", outcome="delivered"),
    )
    assert counted == (1.0, 1.0, 1.0)


def test_follow_up_update_is_retried_within_its_budget() -> None:
    """The follow-up goes through the same retry path: a 503 is retried, then accepted."""
    h = Harness(processor=FakeProcessor(processed(follow_up_send()))).answer(
        CONFLICT, UNAVAILABLE, OK
    )

    outcomes = h.handle(record())

    assert (outcomes, [r.action for r in h.button.sent], len(h.clock.sleeps)) == (
        ["delivered"],
        [Action.CREATE, Action.UPDATE, Action.UPDATE],
        1,
    )


def test_follow_up_update_refused_dead_letters_the_record() -> None:
    """The follow-up's answer decides the record: a 400 on the update dead-letters it as an
    update (the order is parked), never as a create counted done."""
    h = Harness(processor=FakeProcessor(processed(follow_up_send()))).answer(CONFLICT, INVALID)

    outcomes = h.handle(record())

    letter = h.letters[0]
    assert (outcomes, letter.reason, letter.action, letter.http_status) == (
        ["dead_lettered"],
        "http_400",
        "update",
        400,
    )


DELETED = ButtonOutcome(
    OutcomeKind.SUCCESS, 200, object={"order_id": ORDER, "status": "deleted"}, from_button=True
)
"""Button's answer to a read of an order it holds deleted (cancelled for good)."""


def test_follow_up_update_of_a_deleted_order_reads_it_and_is_done() -> None:
    """Create 409, its update 404: Button holds the order deleted (a cancel that reached Button
    before a crash, replayed in front of it). The order is read, found deleted, and the record
    is done (``order_deleted``): nothing is dead-lettered, nothing parked, one warning logged."""
    h = Harness(processor=FakeProcessor(processed(follow_up_send()))).answer(CONFLICT, NOT_FOUND)
    h.button.reads.append(DELETED)

    with capture_logs() as logs:
        outcomes = h.handle(record())

    delivery = h.last_delivery()
    assert (outcomes, h.button.read_ids, h.letters) == (["delivered"], [ORDER], [])
    assert (delivery["action"], delivery["reason"], delivery["status"]) == (
        "update",
        "order_deleted",
        404,
    )
    assert [e["reason"] for e in logs if e["event"] == "done_without_change"] == ["order_deleted"]
    read = h.sample("button_requests_total", action="read", outcome="success", status_class="2xx")
    assert read == 1.0


def test_a_junk_token_the_event_carried_is_counted_and_logged() -> None:
    """Each value dropped where a token goes (``Processed.dropped_tokens``) is counted by source
    and problem and logged (a placeholder by value), so a merchant sees that the app sends junk;
    the record itself goes on as mapped."""
    dropped = (
        DroppedToken(TokenSource.EXPLICIT, TokenProblem.PLACEHOLDER, "undefined"),
        DroppedToken(TokenSource.URL, TokenProblem.NOT_URL_SAFE),
    )
    h = Harness(processor=FakeProcessor(replace(processed(), dropped_tokens=dropped))).answer(OK)

    with capture_logs() as logs:
        outcomes = h.handle(record())

    assert outcomes == ["delivered"]
    lines = [
        (e["source"], e["problem"], e.get("value")) for e in logs if e["event"] == "btn_ref_dropped"
    ]
    assert lines == [("explicit", "placeholder", "undefined"), ("url", "not_url_safe", None)]
    counted = [
        h.sample("btn_ref_dropped_total", source="explicit", problem="placeholder"),
        h.sample("btn_ref_dropped_total", source="url", problem="not_url_safe"),
    ]
    assert counted == [1.0, 1.0]


@pytest.mark.parametrize(
    ("read", "seen"),
    [
        (NOT_FOUND, "Order not found"),
        (
            ButtonOutcome(OutcomeKind.SUCCESS, 200, object={"status": "open"}, from_button=True),
            "status open",
        ),
    ],
)
def test_update_answered_404_of_an_order_not_deleted_is_dead_lettered(read, seen) -> None:
    """An update answered 404 whose order Button does not hold deleted (unknown to it, or in
    another status) is dead-lettered as the update's 404, what the read found named."""
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE))))).answer(NOT_FOUND)
    h.button.reads.append(read)

    outcomes = h.handle(record())

    letter = h.letters[0]
    assert (outcomes, letter.reason, letter.action, letter.http_status) == (
        ["dead_lettered"],
        "http_404",
        "update",
        404,
    )
    assert letter.message == f"Order not found (the order read: {seen})"


def test_a_read_that_fails_is_retried_with_the_update_within_its_budget() -> None:
    """A read that times out tells nothing about the order: it is retried like a failed
    attempt of the update (one backoff), which is sent again and its order read again."""
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE))))).answer(
        NOT_FOUND, NOT_FOUND
    )
    h.button.reads.extend([TIMEOUT, DELETED])

    outcomes = h.handle(record())

    assert (outcomes, h.last_delivery()["reason"], len(h.clock.sleeps), h.letters) == (
        ["delivered"],
        "order_deleted",
        1,
        [],
    )
    assert [c for c in h.calls if c[0] in ("button", "read")] == [
        ("button", "update", ORDER),
        ("read", ORDER),
        ("button", "update", ORDER),
        ("read", ORDER),
    ]


def test_a_read_refused_closes_the_auth_gate_and_nothing_is_dead_lettered() -> None:
    """A read answered 401 is the key's refusal, as for any request: the auth gate closes (a
    probe decides when it opens), then the update is sent again and its order read again."""
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE))))).answer(
        NOT_FOUND, NOT_FOUND
    )
    h.button.reads.extend([UNAUTHORIZED, DELETED])

    outcomes = h.handle(record())

    assert (outcomes, h.last_delivery()["reason"], h.letters) == (
        ["delivered"],
        "order_deleted",
        [],
    )
    assert [c for c in h.calls if c[0] in ("button", "read", "probe")] == [
        ("button", "update", ORDER),
        ("read", ORDER),
        ("probe",),
        ("button", "update", ORDER),
        ("read", ORDER),
    ]


def test_the_read_waits_while_the_auth_gate_is_closed() -> None:
    """The gate closes while the update is out (another record's 401): the read is sent only
    once a probe has opened it again, like any request."""
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE))))).answer(NOT_FOUND)
    h.button.reads.append(DELETED)
    h.button.on_send = h.gate.close

    outcomes = h.handle(record())

    assert outcomes == ["delivered"]
    assert [c for c in h.calls if c[0] in ("button", "read", "probe")] == [
        ("button", "update", ORDER),
        ("probe",),
        ("read", ORDER),
    ]


def test_a_404_page_from_in_front_of_button_reads_nothing_and_finishes_nothing() -> None:
    """A 404 that is not Button's envelope (a proxy's or ingress's page) says nothing about
    the order: an update or a cancel answered with it is dead-lettered, nothing read."""
    page = ButtonOutcome(OutcomeKind.NOT_FOUND, 404, "HTTP 404", excerpt="<html>Not Found")
    for action in (Action.UPDATE, Action.CANCEL):
        h = Harness(processor=FakeProcessor(processed(Send(request(action))))).answer(page)

        outcomes = h.handle(record())

        assert (outcomes, h.letters[0].reason, h.button.read_ids) == (
            ["dead_lettered"],
            "http_404",
            [],
        )


def test_created_order_sends_no_follow_up() -> None:
    """A create answered 200 is done: the follow-up is sent only after a 409."""
    h = Harness(processor=FakeProcessor(processed(follow_up_send()))).answer(OK)

    outcomes = h.handle(record())

    assert (outcomes, h.button.sent) == (["delivered"], [request()])


@pytest.mark.parametrize(
    ("action", "answer", "reason"),
    [
        (Action.CANCEL, NOT_FOUND, "order_gone"),
        (
            Action.UPDATE,
            ButtonOutcome(OutcomeKind.FORBIDDEN, 403, "Order is finalized", from_button=True),
            "order_finalized",
        ),
    ],
)
def test_answers_meaning_already_done_finish_the_record(action, answer, reason) -> None:
    """404 on a cancel and 403 "finalized" on an update leave nothing to do: delivered."""
    h = Harness(processor=FakeProcessor(processed(Send(request(action))))).answer(answer)

    outcomes = h.handle(record())

    assert (["delivered"], reason, []) == (outcomes, h.last_delivery()["reason"], h.letters)


def test_a_finalized_order_is_logged_as_done_without_change() -> None:
    """A done-but-unusual answer (order finalized) is worth one warning line."""
    finalized = ButtonOutcome(OutcomeKind.FORBIDDEN, 403, "Order is finalized", from_button=True)
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE))))).answer(finalized)

    with capture_logs() as logs:
        h.handle(record())

    expected = [{"event": "done_without_change", "reason": "order_finalized", "status": 403}]
    actual = [
        {k: e[k] for k in ("event", "reason", "status")}
        for e in logs
        if e["event"] == "done_without_change"
    ]
    assert expected == actual


# --- retries -----------------------------------------------------------------------------------


def test_server_error_is_retried_after_a_jittered_delay_then_delivered() -> None:
    """503 then 200: one retry after a full-jitter delay below the first ceiling, then done."""
    h = Harness().answer(UNAVAILABLE, OK)

    outcomes = h.handle(record())

    expected_delay = random.Random(SEED).random() * RetryPolicy().base_delay
    assert (["delivered"], [expected_delay], 2) == (outcomes, h.clock.sleeps, len(h.button.sent))


def test_each_retry_is_counted_by_the_outcome_that_caused_it() -> None:
    """Two 503s before success count two retries labelled server_error."""
    h = Harness().answer(UNAVAILABLE, UNAVAILABLE, OK)

    h.handle(record())

    assert h.sample("retries_total", outcome="server_error") == 2.0


def test_retry_after_is_honoured_as_the_minimum_delay() -> None:
    """A 429 with Retry-After: 7 waits 7 s (above any jitter) before the next attempt."""
    rate_limited = ButtonOutcome(OutcomeKind.RATE_LIMITED, 429, "slow down", retry_after=7.0)
    h = Harness().answer(rate_limited, OK)

    outcomes = h.handle(record())

    assert (outcomes, h.clock.sleeps) == (["delivered"], [7.0])


def test_retries_exhausted_dead_letters_the_record_with_attempt_context() -> None:
    """Three 500s with max_attempts=3: DLQ reason retries_exhausted, with attempts and times."""
    busy = replace(UNAVAILABLE, status=500, retry_after=1.0, excerpt="Service Unavailable")
    h = Harness().answer(busy, busy, busy)

    outcomes = h.handle(record())

    headers = h.dlq_headers()
    expected = {
        "__connect.errors.stage": "TASK_PUT",
        "__connect.errors.exception.class.name": "ButtonServerError",
        "__connect.errors.exception.message": "http_500 after retries: Service Unavailable",
        "__connect.errors.offset": "17",
        "button.reason": "retries_exhausted",
        "button.action": "create",
        "button.order.id": ORDER,
        "button.http.status": "500",
        "button.response.excerpt": "Service Unavailable",
        "button.attempts": "3",
        "button.first.attempt.ms": str(T0_MS),
        "button.last.attempt.ms": str(T0_MS + 2_000),
        "button.parked": "false",
    }
    assert outcomes == ["dead_lettered"]
    assert expected == {k: headers.get(k) for k in expected}


def test_retries_exhausted_parks_the_order() -> None:
    """After the dead letter, the order is parked with the reason retries_exhausted."""
    h = Harness().answer(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)

    h.handle(record())

    assert h.processor.parked == {ORDER: "retries_exhausted"}


def test_retry_deadline_dead_letters_when_the_next_wait_would_exceed_it() -> None:
    """A 500 whose next wait (its Retry-After a minimum) would pass the elapsed-time budget
    ends retries at once: retry_deadline. (A 429 or 503 with Retry-After opens the breaker.)"""
    h = Harness(retry=RetryPolicy(max_attempts=8, max_elapsed=10.0))
    h.answer(replace(UNAVAILABLE, status=500, retry_after=20.0))

    outcomes = h.handle(record())

    assert (
        outcomes,
        h.letters[0].reason,
        h.clock.sleeps,
    ) == (["dead_lettered"], "retry_deadline", [])


def test_dead_letter_is_counted_by_reason() -> None:
    """dead_letters{reason} and records_finished{dead_lettered} count the dead letter."""
    h = Harness().answer(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)

    h.handle(record())

    expected = (1.0, 1.0)
    actual = (
        h.sample("dead_letters_total", reason="retries_exhausted"),
        h.sample("records_finished_total", outcome="dead_lettered"),
    )
    assert expected == actual


# --- parking -----------------------------------------------------------------------------------


def test_later_event_of_a_parked_order_is_parked_without_a_request() -> None:
    """After the create was dead-lettered, the update goes to the DLQ marked parked, unsent."""
    h = Harness(
        processor=FakeProcessor(
            processed(),
            processed(Send(request(Action.UPDATE)), event_id="evt-2"),
        )
    ).answer(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)

    outcomes = h.handle(record(17), record(18))

    headers = h.dlq_headers(1)
    expected = {
        "button.reason": "parked",
        "button.parked": "true",
        "button.action": "update",
        "button.event.id": "evt-2",
        "__connect.errors.offset": "18",
        "__connect.errors.exception.class.name": "Parked",
    }
    assert outcomes == ["dead_lettered", "parked"]
    assert [r.action for r in h.button.sent] == [Action.CREATE] * 3
    assert expected == {k: headers.get(k) for k in expected}


def test_parked_record_message_names_the_first_reason() -> None:
    """The parked dead letter says which dead letter it waits behind."""
    h = Harness()
    h.processor.parked[ORDER] = "http_400"

    h.handle(record())

    expected = f"order {ORDER} is parked behind a dead letter (http_400)"
    assert expected == h.letters[0].message


def test_parked_records_are_counted_as_parked() -> None:
    """records_finished{parked} and dead_letters{parked} count a parked record."""
    h = Harness()
    h.processor.parked[ORDER] = "http_400"

    h.handle(record())

    expected = (1.0, 1.0, 0.0)
    actual = (
        h.sample("records_finished_total", outcome="parked"),
        h.sample("dead_letters_total", reason="parked"),
        h.sample("records_finished_total", outcome="dead_lettered"),
    )
    assert expected == actual


def test_replay_of_the_first_dead_letter_releases_the_order_and_sends_it() -> None:
    """A replayed record not itself parked unparks its order and reaches Button."""
    h = Harness().answer(OK)
    h.processor.parked[ORDER] = "retries_exhausted"

    outcomes = h.handle(replayed(40, parked=False))

    assert (outcomes, len(h.button.sent), h.processor.parked.get(ORDER)) == (["delivered"], 1, None)


def test_replay_of_a_parked_follower_stays_parked_while_its_order_is() -> None:
    """A replayed record that was parked does not release its order on its own."""
    h = Harness()
    h.processor.parked[ORDER] = "retries_exhausted"

    outcomes = h.handle(replayed(41, parked=True))

    assert (outcomes, h.button.sent) == (["parked"], [])


def test_replayed_head_then_follower_are_both_sent_in_order() -> None:
    """Redriving the head and then its parked follower sends create, then update."""
    h = Harness(
        processor=FakeProcessor(
            processed(), processed(Send(request(Action.UPDATE)), event_id="evt-2")
        )
    ).answer(OK, OK)
    h.processor.parked[ORDER] = "retries_exhausted"

    outcomes = h.handle(replayed(40, parked=False), replayed(41, parked=True))

    assert outcomes == ["delivered", "delivered"]
    assert [r.action for r in h.button.sent] == [Action.CREATE, Action.UPDATE]


def test_replayed_first_dead_letter_that_is_now_skipped_still_releases_its_order() -> None:
    """Releasing does not depend on the replayed record becoming a request again."""
    h = Harness(
        processor=FakeProcessor(
            processed(Skip("order_already_cancelled")),
            processed(Send(request(Action.CANCEL)), event_id="evt-2"),
        )
    ).answer(OK)
    h.processor.parked[ORDER] = "http_400"

    outcomes = h.handle(replayed(40, parked=False), replayed(41, parked=True))

    assert outcomes == ["skipped", "delivered"]
    assert [r.action for r in h.button.sent] == [Action.CANCEL]


# --- parking is written to the profile changelog ------------------------------------------------


def test_a_dead_letter_parks_its_order_in_the_changelog_before_the_record_finishes() -> None:
    """Dead letter acknowledged, then the park written, and only then the record is finished."""
    h = Harness().answer(INVALID)
    at_park_write: list[tuple[float, int]] = []
    h.changelog.on_write = lambda: at_park_write.append(
        (h.sample("records_finished_total", outcome="dead_lettered"), len(h.deliveries.recent(10)))
    )

    outcomes = h.handle(record())

    assert outcomes == ["dead_lettered"]
    assert h.calls == [
        ("button", "create", ORDER),
        ("dead_letter", "http_400"),
        ("changelog", 2, b"user-1", f"parked:{ORDER}".encode()),
    ]
    assert at_park_write == [(0.0, 0)], "the record counted as finished before its park"


def test_a_park_that_cannot_be_written_leaves_the_record_unfinished() -> None:
    """If the changelog refuses the park, handle raises: the offset is never stored."""
    h = Harness().answer(INVALID)
    h.changelog.fail = True

    with pytest.raises(RuntimeError, match="changelog"):
        h.handle(record())

    assert (
        h.sample("records_finished_total", outcome="dead_lettered"),
        h.deliveries.recent(10),
    ) == (0.0, [])


def test_a_parked_record_refreshes_its_orders_parking_and_keeps_the_first_reason() -> None:
    """A follower's dead letter parks the order again (its retention restarts), same reason."""
    h = Harness()
    h.processor.parked[ORDER] = "http_400"

    h.handle(record())

    assert h.calls == [
        ("dead_letter", "parked"),
        ("changelog", 2, b"user-1", f"parked:{ORDER}".encode()),
    ]
    assert h.processor.parked == {ORDER: "http_400"}


def test_replay_of_the_first_dead_letter_writes_the_release_before_sending() -> None:
    """The release is in the changelog before Button sees the replayed record."""
    h = Harness().answer(OK)
    h.processor.parked[ORDER] = "http_400"

    h.handle(replayed(40, parked=False))

    assert h.calls == [("changelog", 2, b"user-1", b"parked:"), ("button", "create", ORDER)]


def test_a_keyless_record_is_parked_without_a_changelog_write() -> None:
    """No key, no profile: the processor parks it in memory and there is nothing to write."""
    h = Harness().answer(INVALID)

    h.handle(record(key=None))

    assert h.processor.parking_calls == [("park", None, ORDER)]
    assert [c for c in h.calls if c[0] == "changelog"] == []


REFUND = CommerceEvent(
    event_id="evt-2",
    event_type=EventType.REFUND,
    event_time=T0 - timedelta(seconds=1),
    user_key="user-1",
    commerce=CommerceData(action=ProductAction.REFUND, transaction_id=ORDER),
)


def restored_processor(*earlier: Harness) -> ProfileProcessor:
    """A new ``ProfileProcessor`` whose store is restored from the earlier changelog writes."""
    config = MappingConfig()
    store = ProfileStore(config.retention)
    for harness in earlier:
        for write in harness.changelog.written:
            store.restore(write.partition, write.key, write.value)
    return ProfileProcessor(store, config)


def test_a_parked_order_stays_parked_after_a_restart() -> None:
    """Create of X refused (400); after a restart the full refund of X is parked, not sent."""
    first = Harness(decoder=FakeDecoder(EVENT), real_processor=restored_processor()).answer(INVALID)
    assert first.handle(record(17)) == ["dead_lettered"]

    restarted = Harness(decoder=FakeDecoder(REFUND), real_processor=restored_processor(first))
    outcomes = restarted.handle(record(18))

    assert (outcomes, restarted.button.sent) == (["parked"], [])
    expected = f"order {ORDER} is parked behind a dead letter (http_400)"
    assert restarted.letters[0].message == expected


def test_a_replay_after_a_restart_sends_create_then_cancel() -> None:
    """The replayed create releases X (durably) and its parked refund follows it, in order."""
    first = Harness(decoder=FakeDecoder(EVENT), real_processor=restored_processor()).answer(INVALID)
    first.handle(record(17))
    second = Harness(decoder=FakeDecoder(REFUND), real_processor=restored_processor(first))
    second.handle(record(18))

    third = Harness(
        decoder=FakeDecoder(EVENT, REFUND), real_processor=restored_processor(first, second)
    ).answer(OK, OK)
    outcomes = third.handle(replayed(40, parked=False), replayed(41, parked=True))

    assert outcomes == ["delivered", "delivered"]
    assert [r.action for r in third.button.sent] == [Action.CREATE, Action.CANCEL]
    after = restored_processor(first, second, third).store.get(2, b"user-1")
    assert after is not None
    assert after.parked == ()


# --- a partial refund of an order the profile does not know: read from Button --------------------

PARTIAL = CommerceEvent(
    event_id="evt-3",
    event_type=EventType.REFUND,
    event_time=T0 - timedelta(seconds=2),
    user_key="user-1",
    commerce=CommerceData(
        action=ProductAction.REFUND,
        transaction_id=ORDER,
        currency_code="USD",
        total_amount=Decimal("2.50"),
    ),
)
"""A refund of 2.50 of an order this service never saw (a previous integration created it)."""


def at_button(**changes: Any) -> ButtonOutcome:
    """Button's answer to the read of ``ORDER``, as the sandbox gives it (open, 10.00)."""
    obj: dict[str, Any] = {
        "button_order_id": "btnorder-0123456789abcdef",
        "order_id": ORDER,
        "btn_ref": None,
        "line_items": [],
        "total": 1000,
        "currency": "USD",
        "purchase_date": "2026-01-04T08:00:00Z",
        "status": "open",
        "finalization_date": "2026-02-04T08:00:00Z",
    }
    obj.update(changes)
    return ButtonOutcome(OutcomeKind.SUCCESS, 200, object=obj, from_button=True)


def unknown_order_harness(*earlier: Harness, event: CommerceEvent = PARTIAL, **kw: Any) -> Harness:
    """A pipeline with the real mapping and profile store, restored from ``earlier``."""
    return Harness(decoder=FakeDecoder(event), real_processor=restored_processor(*earlier), **kw)


def test_a_partial_refund_of_an_order_the_profile_does_not_know_updates_buttons_order() -> None:
    """The order is read from Button (open, 10.00), adopted, and the refund's update (7.50)
    sent; the adopted order is queued to the changelog before the update."""
    h = unknown_order_harness().answer(OK)
    h.button.reads.append(at_button())

    outcomes = h.handle(record())

    assert outcomes == ["delivered"]
    assert [c[0] for c in h.calls if c[0] in ("read", "changelog", "button")] == [
        "read",
        "changelog",
        "button",
    ]
    sent = h.button.sent[0]
    assert (sent.action, sent.body) == (
        Action.UPDATE,
        {
            "order_id": ORDER,
            "total": 750,
            "currency": "USD",
            "purchase_date": "2026-01-04T08:00:00Z",
        },
    )
    assert h.sample("button_requests_total", action="read", outcome="success", status_class="2xx")


def test_an_adopted_order_is_sent_only_once_its_changelog_write_is_acknowledged() -> None:
    """Button's state is the adopted order's base, and it already holds the refund once the
    update is applied: sent before the profile (which records the refund) is written, a write
    that fails or a crash replays the record against Button's reduced state and refunds it
    again. So the write is acknowledged first; refused, nothing is sent and the record stays
    unfinished (the worker stops, as for any unwritable changelog)."""
    h = unknown_order_harness().answer(OK)
    h.button.reads.append(at_button())
    h.changelog.fail = True

    with pytest.raises(RuntimeError, match="changelog"):
        h.handle(record())

    assert (h.button.read_ids, h.button.sent) == ([ORDER], [])


def test_a_replay_of_an_adopted_refund_reads_nothing_and_sends_the_same_state() -> None:
    """The changelog holds the adopted order: the refund replayed after a restart maps without
    a read (the fake Button refuses one) to the same update."""
    first = unknown_order_harness().answer(OK)
    first.button.reads.append(at_button())
    first.handle(record(17))

    again = unknown_order_harness(first).answer(OK)
    outcomes = again.handle(record(17))

    assert (outcomes, again.button.read_ids) == (["delivered"], [])
    assert again.button.sent[0].body == first.button.sent[0].body


def test_a_refund_of_an_order_button_does_not_know_is_held_then_applied_to_its_purchase() -> None:
    """Button answers 404 in its envelope: the refund is held (``refund_held``), nothing sent;
    the purchase arriving later is created with the refund applied."""
    first = unknown_order_harness()
    first.button.reads.append(NOT_FOUND)

    outcomes = first.handle(record(17))

    assert (outcomes, first.button.read_ids, first.button.sent) == (["skipped"], [ORDER], [])
    assert first.last_delivery()["reason"] == "refund_held"
    later = unknown_order_harness(first, event=EVENT).answer(OK)
    assert later.handle(record(18)) == ["delivered"]
    created = later.button.sent[0]
    assert created.body is not None
    assert (created.action, created.body["total"]) == (Action.CREATE, 750)


def test_a_held_refund_is_logged_with_its_order_and_event_and_counted() -> None:
    """A refund held for its purchase is visible: ``refund_held`` at info with the order id and
    the event id, and ``refunds_held_total`` counts it (the ``order_read`` line before it says
    only that Button answered 404)."""
    h = unknown_order_harness()
    h.button.reads.append(NOT_FOUND)

    with capture_logs() as logs:
        outcomes = h.handle(record(17))

    assert outcomes == ["skipped"]
    held = [
        (e["log_level"], e["order_id"], e["event_id"]) for e in logs if e["event"] == "refund_held"
    ]
    assert held == [("info", ORDER, PARTIAL.event_id)]
    assert h.sample("refunds_held_total") == 1.0


def test_a_dry_run_counts_and_logs_the_refund_it_holds_without_a_read() -> None:
    """A dry run holds the refund without reading the order: it is held all the same."""
    h = unknown_order_harness(dry_run=True)

    with capture_logs() as logs:
        h.handle(record())

    assert [e["order_id"] for e in logs if e["event"] == "refund_held"] == [ORDER]
    assert h.sample("refunds_held_total") == 1.0


EUR_PARTIAL = replace(
    PARTIAL,
    commerce=CommerceData(
        action=ProductAction.REFUND,
        transaction_id=ORDER,
        currency_code="EUR",
        total_amount=Decimal("2.50"),
    ),
)
"""``PARTIAL`` in EUR: it cannot apply to ``EVENT``, a purchase in USD."""


def test_a_held_refund_the_purchase_cannot_take_is_a_warning_and_counted_by_reason() -> None:
    """The purchase arrives after a held refund that does not fit it (EUR against USD): the
    order is created at its full total, and the discarded refund is not silent: a warning
    ``held_refund_discarded`` names the order, the refund's event id and the reason, and
    ``held_refunds_discarded_total{reason}`` counts it."""
    first = unknown_order_harness(event=EUR_PARTIAL)
    first.button.reads.append(NOT_FOUND)
    assert first.handle(record(17)) == ["skipped"]
    later = unknown_order_harness(first, event=EVENT).answer(OK)

    with capture_logs() as logs:
        outcomes = later.handle(record(18))

    assert outcomes == ["delivered"]
    created = later.button.sent[0]
    assert created.body is not None
    assert (created.action, created.body["total"]) == (Action.CREATE, 1000)
    warnings = [
        (e["log_level"], e["order_id"], e["refund_event_id"], e["reason"], e["detail"])
        for e in logs
        if e["event"] == "held_refund_discarded"
    ]
    assert warnings == [
        ("warning", ORDER, "evt-3", "refund_currency_mismatch", "refund in EUR, order in USD")
    ]
    assert later.sample("held_refunds_discarded_total", reason="refund_currency_mismatch") == 1.0
    assert later.sample("refunds_held_total") == 0.0


def test_a_held_refund_that_fits_its_purchase_is_neither_a_warning_nor_counted() -> None:
    """The held 2.50 fits the 10.00 purchase: applied (7.50), nothing discarded."""
    first = unknown_order_harness()
    first.button.reads.append(NOT_FOUND)
    first.handle(record(17))
    later = unknown_order_harness(first, event=EVENT).answer(OK)

    with capture_logs() as logs:
        later.handle(record(18))

    assert [e for e in logs if e["event"] == "held_refund_discarded"] == []
    assert later.sample("held_refunds_discarded_total", reason="refund_currency_mismatch") == 0.0


def test_a_held_refund_whose_order_expires_is_a_warning_and_counted() -> None:
    """The refund held for its purchase (Button answered 404) waits in the profile; the purchase
    never comes and the order expires (the order retention after its last event). The user's
    next event, another order, drops it: the warning ``held_refund_discarded`` and
    ``held_refunds_discarded_total{reason="order_expired"}`` report the refund, which used to
    vanish uncounted; the profile written no longer holds it."""
    first = unknown_order_harness()
    first.button.reads.append(NOT_FOUND)
    assert first.handle(record(17)) == ["skipped"]
    expired = MappingConfig().order_retention + timedelta(days=1)
    assert EVENT.commerce is not None
    other = replace(
        EVENT,
        event_id="evt-9",
        event_time=T0 + expired,
        commerce=replace(EVENT.commerce, transaction_id="ORD-2"),
    )
    later = unknown_order_harness(first, event=other).answer(OK)
    later.clock.elapsed = expired.total_seconds()

    with capture_logs() as logs:
        outcomes = later.handle(record(18))

    assert outcomes == ["delivered"]
    warnings = [
        (e["log_level"], e["order_id"], e["refund_event_id"], e["reason"])
        for e in logs
        if e["event"] == "held_refund_discarded"
    ]
    assert warnings == [("warning", ORDER, "evt-3", "order_expired")]
    assert later.sample("held_refunds_discarded_total", reason="order_expired") == 1.0
    written = later.changelog.written[-1]
    restored = ProfileStore(MappingConfig().retention)
    restored.restore(written.partition, written.key, written.value)
    profile = restored.get(written.partition, written.key)
    assert profile is not None
    assert (profile.order(ORDER), profile.order("ORD-2") is not None) == (None, True)


def test_a_parked_purchase_reports_no_discarded_refund() -> None:
    """A parked record moves no ledger: what its mapping would discard is not discarded (its
    replay maps it again and reports then)."""
    discarded = (DiscardedRefund("evt-3", "refund_currency_mismatch", "refund in EUR"),)
    h = Harness(
        processor=FakeProcessor(replace(processed(), discarded_refunds=discarded)),
    )
    h.processor.parked[ORDER] = "http_400"

    with capture_logs() as logs:
        outcomes = h.handle(record())

    assert outcomes == ["parked"]
    assert [e for e in logs if e["event"] == "held_refund_discarded"] == []
    assert h.sample("held_refunds_discarded_total", reason="refund_currency_mismatch") == 0.0


def test_a_refund_of_an_order_button_holds_deleted_is_skipped_as_already_cancelled() -> None:
    """Button holds the order deleted: nothing to change, nothing sent, remembered cancelled."""
    h = unknown_order_harness()
    h.button.reads.append(DELETED)

    outcomes = h.handle(record())

    assert (outcomes, h.button.sent, h.last_delivery()["reason"]) == (
        ["skipped"],
        [],
        "order_already_cancelled",
    )
    stored = restored_processor(h).store.get(2, b"user-1")
    assert stored is not None
    assert stored.order(ORDER).status.value == "cancelled"  # type: ignore[union-attr]


def test_a_read_of_the_refunds_order_that_times_out_is_retried_within_the_budget() -> None:
    """A timed-out read tells nothing: retried after a backoff, then the update is sent."""
    h = unknown_order_harness().answer(OK)
    h.button.reads.extend([TIMEOUT, at_button()])

    outcomes = h.handle(record())

    assert (outcomes, len(h.clock.sleeps), h.letters) == (["delivered"], 1, [])
    assert [c for c in h.calls if c[0] in ("button", "read")] == [
        ("read", ORDER),
        ("read", ORDER),
        ("button", "update", ORDER),
    ]


def test_a_read_of_the_refunds_order_refused_closes_the_auth_gate_then_reads_again() -> None:
    """A 401 on the read is the key's refusal: the gate closes, a probe reopens it, and the
    order is read again; nothing is dead-lettered."""
    h = unknown_order_harness().answer(OK)
    h.button.reads.extend([UNAUTHORIZED, at_button()])

    outcomes = h.handle(record())

    assert (outcomes, h.letters) == (["delivered"], [])
    assert [c for c in h.calls if c[0] in ("button", "read", "probe")] == [
        ("read", ORDER),
        ("probe",),
        ("read", ORDER),
        ("button", "update", ORDER),
    ]


def test_a_read_of_the_refunds_order_failing_past_the_budget_is_dead_lettered_naming_it() -> None:
    """Every read answered 503: after the budget (3 attempts) the refund is dead-lettered
    (``retries_exhausted``), its message naming the read and Button's answer, and its order
    parked; no change of the profile but the parking."""
    h = unknown_order_harness()
    h.button.reads.extend([UNAVAILABLE] * 3)

    outcomes = h.handle(record())

    letter = h.letters[0]
    assert (outcomes, letter.reason, letter.action, letter.http_status, letter.attempts) == (
        ["dead_lettered"],
        "retries_exhausted",
        "read",
        503,
        3,
    )
    assert letter.message == "reading the order: http_503 after retries: Service Unavailable"
    stored = restored_processor(h).store.get(2, b"user-1")
    assert stored is not None
    assert ([p.order_id for p in stored.parked], stored.order(ORDER)) == ([ORDER], None)


def test_an_order_button_holds_in_a_shape_it_cannot_adopt_is_dead_lettered_naming_the_field() -> (
    None
):
    """Button's order has a line the service cannot carry: the refund is dead-lettered
    (``order_not_adoptable``, map stage) with the field named. Decided by Button's order and the
    event alone, it changed nothing: it parks nothing, and nothing of the user is stored."""
    h = unknown_order_harness()
    lines = [{"identifier": "SKU-A", "total": 1000, "upc": "0123456789012"}]
    h.button.reads.append(at_button(line_items=lines))

    outcomes = h.handle(record())

    letter = h.letters[0]
    assert (outcomes, letter.reason, letter.stage.name, h.button.sent) == (
        ["dead_lettered"],
        "order_not_adoptable",
        "MAP",
        [],
    )
    assert letter.message.startswith("line_items[0].upc: ")
    assert restored_processor(h).store.get(2, b"user-1") is None


def test_a_partial_refund_of_a_parked_order_follows_its_dead_letter_without_a_read() -> None:
    """Button refused the purchase's create (its order parked): the partial refund of the order
    is parked behind it (as the update it maps to), nothing read, so the replay of the create
    brings it along."""
    first = unknown_order_harness(event=EVENT).answer(INVALID)
    assert first.handle(record(17)) == ["dead_lettered"]

    h = unknown_order_harness(first)
    outcomes = h.handle(record(18))

    assert (outcomes, h.button.read_ids, h.letters[0].reason, h.letters[0].action) == (
        ["parked"],
        [],
        "parked",
        "update",
    )


def test_a_dry_run_holds_the_refund_without_reading_the_order() -> None:
    """A dry run sends nothing to Button, not even the read: the refund is held as before."""
    h = unknown_order_harness(dry_run=True)

    with capture_logs() as logs:
        outcomes = h.handle(record())

    assert (outcomes, h.button.read_ids, h.last_delivery()["reason"]) == (
        ["skipped"],
        [],
        "refund_held",
    )
    assert [e["event"] for e in logs if e.get("reason") == "dry_run"] == ["order_not_read"]
    stored = restored_processor(h).store.get(2, b"user-1")
    assert stored is not None
    assert stored.order(ORDER).status.value == "pending"  # type: ignore[union-attr]


# --- dead letters without retries ---------------------------------------------------------------


def test_bad_request_is_dead_lettered_at_once() -> None:
    """400: one attempt, no retry, DLQ reason http_400 with Button's excerpt."""
    h = Harness().answer(INVALID)

    outcomes = h.handle(record())

    headers = h.dlq_headers()
    expected = {
        "button.reason": "http_400",
        "button.http.status": "400",
        "button.attempts": "1",
        "button.response.excerpt": '{"meta":{"status":"error"}}',
        "__connect.errors.exception.class.name": "ButtonInvalid",
        "__connect.errors.exception.message": "order_id is invalid",
    }
    assert (outcomes, h.clock.sleeps, len(h.button.sent)) == (["dead_lettered"], [], 1)
    assert expected == {k: headers.get(k) for k in expected}


def test_dead_letter_keeps_the_source_record_and_its_headers() -> None:
    """The sink gets the source record itself (key, value, headers) to copy to the DLQ."""
    h = Harness().answer(INVALID)
    source = record(headers=[("trace-id", b"t-1")])

    h.handle(source)

    assert isinstance(h.dead_letters, FakeDeadLetters)
    written, _ = h.dead_letters.written[0]
    assert source == written
    assert dead_letter_headers(h.letters[0], written.headers)[0] == ("trace-id", b"t-1")


def test_decode_error_is_dead_lettered_at_the_value_converter_stage() -> None:
    """Undecodable bytes: DLQ stage VALUE_CONVERTER with the decoder's reason, nothing mapped."""
    h = Harness(decoder=FakeDecoder(DecodeError("invalid_field", "event_id must be a string")))

    outcomes = h.handle(record())

    headers = h.dlq_headers()
    expected = {
        "__connect.errors.stage": "VALUE_CONVERTER",
        "__connect.errors.exception.class.name": "DecodeError",
        "__connect.errors.exception.message": "event_id must be a string",
        "button.reason": "invalid_field",
        "button.attempts": "0",
    }
    assert (outcomes, h.processor.calls, h.button.sent) == (["dead_lettered"], [], [])
    assert expected == {k: headers.get(k) for k in expected}


def test_decode_failures_are_counted_by_reason() -> None:
    """decode_failures{reason} counts an unknown schema under its own reason."""
    h = Harness(decoder=FakeDecoder(UnknownSchemaError("unknown_schema_id", "schema id 99")))

    h.handle(record())

    assert h.sample("decode_failures_total", reason="unknown_schema_id") == 1.0


def test_tombstone_value_is_dead_lettered_without_decoding() -> None:
    """A record with no value is a decode failure (null_value), the decoder is not asked."""
    h = Harness()

    outcomes = h.handle(record(value=None))

    assert (
        outcomes,
        h.letters[0].reason,
        h.decoder.calls,
    ) == (["dead_lettered"], "null_value", 0)


def test_schema_registry_outage_is_retried_not_dead_lettered() -> None:
    """While the registry is unreachable the decode waits (0.5 s, then 1 s) and tries again."""
    outage = SchemaRegistryUnavailableError("registry: connection refused")
    h = Harness(decoder=FakeDecoder(outage, outage)).answer(OK)

    outcomes = h.handle(record())

    assert (outcomes, h.clock.sleeps, h.letters) == (["delivered"], [0.5, 1.0], [])
    assert (
        h.metrics.registry.get_sample_value("button_consumer_schema_registry_unavailable_total")
        == 2
    )


def test_reject_is_dead_lettered_at_the_transformation_stage() -> None:
    """A mapping reject: DLQ stage TRANSFORMATION, class MappingError, its detail as message."""
    rejected = Reject("unknown_currency", "currency 'XXX' has no minor unit")
    h = Harness(processor=FakeProcessor(processed(rejected)))

    outcomes = h.handle(record())

    headers = h.dlq_headers()
    expected = {
        "__connect.errors.stage": "TRANSFORMATION",
        "__connect.errors.exception.class.name": "MappingError",
        "__connect.errors.exception.message": "currency 'XXX' has no minor unit",
        "button.reason": "unknown_currency",
        "button.action": "reject",
        "button.order.id": ORDER,
    }
    assert (outcomes, h.button.sent) == (["dead_lettered"], [])
    assert expected == {k: headers.get(k) for k in expected}


def test_reject_parks_nothing() -> None:
    """A rejected event of order X changed nothing (profile, Button): X is not parked, and its
    dead letter says it parked nothing (DESIGN, 5)."""
    h = Harness(processor=FakeProcessor(processed(Reject("negative_total"))))

    h.handle(record())

    assert (h.processor.parking_calls, h.letters[0].parks_order) == ([], False)


def test_reject_without_an_order_id_parks_nothing() -> None:
    """A reject for an event with no order id (missing_order_id) has no order to park."""
    h = Harness(processor=FakeProcessor(processed(Reject("missing_order_id"), order_id="")))

    h.handle(record())

    assert (h.processor.parked, h.processor.parking_calls) == ({}, [])


def test_dead_letter_sink_failure_raises_dead_letter_error() -> None:
    """When the DLQ write fails the record is not finished: DeadLetterError stops the worker."""
    h = Harness().answer(INVALID)
    h.dead_letters = BrokenDeadLetters()

    with pytest.raises(DeadLetterError, match="broker down"):
        h.handle(record())


def test_dead_letter_sink_failure_does_not_count_the_record_as_finished() -> None:
    """No finished-record metric and no live-log line for a dead letter that was not written."""
    h = Harness().answer(INVALID)
    h.dead_letters = BrokenDeadLetters()

    with pytest.raises(DeadLetterError):
        h.handle(record())

    assert (
        h.sample("records_finished_total", outcome="dead_lettered"),
        h.deliveries.recent(10),
    ) == (0.0, [])


# --- skip, dry run, profile ---------------------------------------------------------------------


def test_skip_finishes_the_record_without_a_request() -> None:
    """An event that is not for Button is finished as skipped, with its reason in the live log."""
    h = Harness(processor=FakeProcessor(processed(Skip("profile_only"), order_id="")))

    outcomes = h.handle(record())

    assert (
        outcomes,
        h.button.sent,
        h.letters,
        h.last_delivery()["reason"],
    ) == (["skipped"], [], [], "profile_only")


def test_dry_run_sends_nothing() -> None:
    """With dry_run the request is built but never sent; the outcome is dry_run."""
    h = Harness(dry_run=True)

    outcomes = h.handle(record())

    assert (outcomes, h.button.sent, h.letters) == (["dry_run"], [], [])


def test_profile_change_is_queued_to_the_changelog_before_the_button_call() -> None:
    """The changelog record is queued before Button is asked (writes keep their order)."""
    h = Harness(
        processor=FakeProcessor(processed(profile_changed=True, profile_value=b"\x01profile"))
    ).answer(OK)

    h.handle(record())

    expected = [("changelog", 2, b"user-1", b"\x01profile"), ("button", "create", ORDER)]
    assert expected == h.calls


def test_the_button_call_does_not_wait_for_the_changelog_acknowledgement() -> None:
    """Button is asked while the profile's changelog write is still unacknowledged, and the
    record is finished (its offset may be stored) only once the acknowledgement arrives."""
    h = Harness(
        processor=FakeProcessor(processed(profile_changed=True, profile_value=b"\x01profile"))
    ).answer(OK)
    sent = asyncio.Event()
    h.button.on_send = sent.set

    async def scenario() -> tuple[bool, list[ChangelogWrite], str]:
        h.changelog.hold = asyncio.Event()
        handling = asyncio.create_task(Pipeline(h.deps()).handle(record()))
        await asyncio.wait_for(sent.wait(), timeout=DEADLINE)
        for _ in range(20):  # let the record run as far as it can without the acknowledgement
            await asyncio.sleep(0)
        finished_early = handling.done()
        acknowledged_at_send = list(h.changelog.acknowledged)
        h.changelog.hold.set()
        return finished_early, acknowledged_at_send, await handling

    assert asyncio.run(scenario()) == (False, [], "delivered")
    assert h.changelog.acknowledged == [ChangelogWrite(2, b"user-1", b"\x01profile")]


def test_a_record_cancelled_while_its_changelog_write_is_unacknowledged_leaves_nothing() -> None:
    """A revoke cancels the record while it waits for the acknowledgement: the record is not
    finished and the write's waiting is cancelled with it (no task is left behind)."""
    h = Harness(
        processor=FakeProcessor(processed(profile_changed=True, profile_value=b"\x01profile"))
    ).answer(OK)

    async def scenario() -> tuple[bool, int]:
        h.changelog.hold = asyncio.Event()
        handling = asyncio.create_task(Pipeline(h.deps()).handle(record()))
        for _ in range(20):
            await asyncio.sleep(0)
        handling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handling
        for _ in range(5):
            await asyncio.sleep(0)
        return handling.cancelled(), len(asyncio.all_tasks()) - 1

    assert asyncio.run(scenario()) == (True, 0)
    assert (len(h.button.sent), h.changelog.acknowledged) == (1, [])


def test_a_changelog_write_refused_after_button_accepted_leaves_the_record_unfinished() -> None:
    """The send went out (Button accepted it) but the profile's changelog write failed: handle
    raises, so the offset is never stored and the worker stops; a restart replays the record
    and sends the same state again (idempotent, DESIGN 2)."""
    h = Harness(
        processor=FakeProcessor(processed(profile_changed=True, profile_value=b"\x01profile"))
    ).answer(OK)
    h.changelog.fail = True

    with pytest.raises(RuntimeError, match="changelog"):
        h.handle(record())

    assert (h.button.sent, h.sample("records_finished_total", outcome="delivered")) == (
        [request()],
        0.0,
    )


def test_the_park_write_follows_the_acknowledged_profile_write() -> None:
    """A record that changed the profile and is then dead-lettered: the park is written only
    after the profile's own write is acknowledged, so the park is the key's last value."""
    h = Harness(
        processor=FakeProcessor(processed(profile_changed=True, profile_value=b"\x01profile"))
    ).answer(INVALID)
    acknowledged_at_park: list[list[ChangelogWrite]] = []
    h.changelog.on_write = lambda: acknowledged_at_park.append(list(h.changelog.acknowledged))

    assert h.handle(record()) == ["dead_lettered"]

    assert [w.value for w in h.changelog.written] == [b"\x01profile", f"parked:{ORDER}".encode()]
    assert acknowledged_at_park[1] == [ChangelogWrite(2, b"user-1", b"\x01profile")]


def test_emptied_profile_writes_a_tombstone() -> None:
    """A profile change to nothing writes None (a tombstone) under the record's key."""
    h = Harness(
        processor=FakeProcessor(
            processed(Skip("profile_only"), profile_changed=True, profile_value=None)
        )
    )

    h.handle(record())

    assert h.calls == [("changelog", 2, b"user-1", None)]


def test_a_tombstone_is_written_with_its_writers_epoch() -> None:
    """The changelog write carries the epoch of the processor's write (``ChangelogWrite.epoch``):
    a tombstone has no envelope, so the changelog stamps it in a header (DESIGN, 7)."""

    class Stamped(FakeProcessor):
        def apply(self, partition: int, key: bytes, processed: Processed) -> ChangelogWrite | None:
            write = super().apply(partition, key, processed)
            return None if write is None else replace(write, epoch=3)

    h = Harness(
        processor=Stamped(processed(Skip("profile_only"), profile_changed=True, profile_value=None))
    )

    h.handle(record())

    assert h.changelog.written == [ChangelogWrite(2, b"user-1", None, epoch=3)]


def test_unchanged_profile_writes_nothing_to_the_changelog() -> None:
    """No profile change, no changelog write."""
    h = Harness().answer(OK)

    h.handle(record())

    assert h.calls == [("button", "create", ORDER)]


def test_record_without_key_writes_no_changelog() -> None:
    """Without a key there is no profile to store, whatever the processor says."""
    h = Harness(
        processor=FakeProcessor(processed(profile_changed=True, profile_value=b"\x01profile"))
    ).answer(OK)

    h.handle(record(key=None))

    assert h.calls == [("button", "create", ORDER)]


def test_an_inert_event_is_skipped_without_the_profile_or_a_changelog_write() -> None:
    """A view that can change nothing (triaged by the decoder) is finished as skipped at once:
    no profile read, no changelog write, nothing sent; the live log shows it."""
    view = InertEvent("evt-view", EventType.PAGE_VIEW, T0_MS - 5_000, Skip("profile_only"))
    h = Harness(decoder=FakeDecoder(view))

    outcomes = h.handle(record())

    assert (outcomes, h.processor.calls, h.calls) == (["skipped"], [], [])
    shown = h.last_delivery()
    assert (shown["event_id"], shown["reason"], shown["action"]) == (
        "evt-view",
        "profile_only",
        "skip",
    )


def test_a_poll_batchs_inert_records_are_finished_in_one_report() -> None:
    """``finish_inert`` finishes a batch of inert records together: each is skipped with its
    own event id, type, reason and position in the live log, counted, and its event age
    observed, with nothing read, written or sent."""
    views = [
        (
            record(5, key=b"user-a"),
            InertEvent("evt-5", EventType.PAGE_VIEW, T0_MS - 2_000, Skip("profile_only")),
        ),
        (
            record(6, key=b"user-b"),
            InertEvent("evt-6", EventType.APP_OPEN, T0_MS - 500, Skip("profile_only")),
        ),
        (
            record(7, key=None),
            InertEvent("evt-7", EventType.SCREEN_VIEW, T0_MS, Skip("not_an_order")),
        ),
    ]
    h = Harness()

    Pipeline(h.deps()).finish_inert(views)

    shown = [
        (d["offset"], d["event_id"], d["event_type"], d["reason"], d["action"], d["outcome"])
        for d in reversed(h.deliveries.recent(10))
    ]
    assert shown == [
        (5, "evt-5", "PAGE_VIEW", "profile_only", "skip", "skipped"),
        (6, "evt-6", "APP_OPEN", "profile_only", "skip", "skipped"),
        (7, "evt-7", "SCREEN_VIEW", "not_an_order", "skip", "skipped"),
    ]
    assert (
        h.sample("records_finished_total", outcome="skipped"),
        h.sample("event_age_seconds_count"),
        h.sample("event_age_seconds_sum"),
        h.processor.calls,
        h.calls,
    ) == (3.0, 0.0, 0.0, [], [])


def test_a_view_that_teaches_nothing_writes_nothing_with_the_real_processor() -> None:
    """The full path too: a page view without a token or device id leaves the profile as it
    is, so nothing is written to the changelog."""
    view = replace(
        EVENT, event_type=EventType.PAGE_VIEW, commerce=None, page_url="https://x.example/p"
    )
    store = ProfileStore(MappingConfig().retention)
    h = Harness(decoder=FakeDecoder(view), real_processor=ProfileProcessor(store, MappingConfig()))

    assert (h.handle(record()), h.calls) == (["skipped"], [])


def test_the_processor_gets_the_partition_key_and_decoded_event() -> None:
    """The profile is looked up by (partition, key) of the record, with the decoded event."""
    h = Harness().answer(OK)

    h.handle(record())

    assert h.processor.calls == [(2, b"user-1", EVENT)]


# --- the auth gate ------------------------------------------------------------------------------


def test_unauthorized_closes_the_gate_then_a_probe_succeeds_and_reopens_it() -> None:
    """401: the gate closes; after one probe interval the record-independent probe is accepted
    (Button's 404 for an unknown order), the gate opens and the record is sent again."""
    h = Harness().answer(UNAUTHORIZED, OK)

    outcomes = h.handle(record())

    assert (
        outcomes,
        h.clock.sleeps,
        h.button.probed,
        h.button.gate_closed_at_send,
        h.gate.closed,
    ) == (["delivered"], [PROBE_INTERVAL], 1, [False, False], False)


def test_an_unauthorized_attempt_does_not_use_up_the_retry_budget() -> None:
    """With max_attempts=2, 401 then 503 then 200 is delivered in two counted attempts."""
    h = Harness(retry=RetryPolicy(max_attempts=2)).answer(UNAUTHORIZED, UNAVAILABLE, OK)

    outcomes = h.handle(record())

    assert (outcomes, h.last_delivery()["attempts"], h.letters) == (["delivered"], 2, [])


def test_time_paused_at_the_gate_does_not_count_toward_the_retry_deadline() -> None:
    """A 60 s auth pause does not spend a 10 s elapsed budget: the 503 after it is retried."""
    h = Harness(retry=RetryPolicy(max_attempts=8, max_elapsed=10.0))
    h.gate = h.button.gate = h.auth_gate(60.0)
    h.answer(UNAUTHORIZED, UNAVAILABLE, OK)

    outcomes = h.handle(record())

    assert (outcomes, h.letters) == (["delivered"], [])


def test_a_timed_out_probe_keeps_the_gate_closed() -> None:
    """A probe that times out proves nothing about the key: the next probe waits again."""
    h = Harness().answer(UNAUTHORIZED, OK)
    h.button.probes = [TIMEOUT]

    outcomes = h.handle(record())

    assert outcomes == ["delivered"]
    assert (h.button.probed, h.button.gate_closed_at_send) == (2, [False, False])
    assert h.clock.sleeps == [PROBE_INTERVAL, PROBE_INTERVAL]


def test_auth_failure_and_recovery_are_logged_once_each() -> None:
    """One button_auth_failed error when the gate closes, one button_auth_recovered on reopen."""
    h = Harness().answer(UNAUTHORIZED, OK)
    h.button.probes = [UNAUTHORIZED]

    with capture_logs() as logs:
        h.handle(record())

    events = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("button_auth")]
    assert events == [("button_auth_failed", "error"), ("button_auth_recovered", "info")]


def test_retry_is_logged_with_status_and_attempt() -> None:
    """Each retry logs one "retrying" line with the status and the attempt number."""
    h = Harness().answer(replace(UNAVAILABLE, status=500, retry_after=2.0), OK)

    with capture_logs() as logs:
        h.handle(record())

    retrying = [e for e in logs if e["event"] == "retrying"]
    expected = [{"status": 500, "outcome": "server_error", "attempt": 1, "delay": 2.0}]
    assert expected == [
        {k: e[k] for k in ("status", "outcome", "attempt", "delay")} for e in retrying
    ]


# --- rate limit ---------------------------------------------------------------------------------


def test_rate_limit_waits_with_the_injected_sleep() -> None:
    """At 1 request/s with no time passing, the second request waits 1 s on the injected sleep."""
    h = Harness()
    h.rate = TokenBucket(rate=1.0, clock=h.clock.monotonic, burst=1.0)
    h.answer(OK, OK)

    outcomes = h.handle(record(17), record(18))

    assert (outcomes, h.clock.sleeps) == (["delivered", "delivered"], [1.0])


# --- faults on Button's side: 403s that are not Button's, back-pressure, outages ---------------


def test_a_proxy_403_page_on_an_update_is_never_done_and_waits_for_the_probe() -> None:
    """A 403 HTML page (proxy, WAF, CDN) on a refund's update is not "finalized": the gate
    closes, probes answered by the same page keep it closed, and once the probe is accepted the
    update is sent again and delivered."""
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE)))))
    h.answer(FORBIDDEN_HTML, OK)
    h.button.probes = [FORBIDDEN_HTML, FORBIDDEN_HTML]

    outcomes = h.handle(record())

    assert (outcomes, h.last_delivery()["reason"], h.button.probed, h.letters) == (
        ["delivered"],
        "ok",
        3,
        [],
    )
    assert h.button.gate_closed_at_send == [False, False]


def test_a_non_2xx_answer_never_reopens_the_auth_gate() -> None:
    """While the gate is closed, a probe answered 503 or a proxy's 403 leaves it closed; only
    an accepted probe opens it, so the record is sent only after that."""
    h = Harness().answer(UNAUTHORIZED, OK)
    h.button.probes = [UNAVAILABLE, FORBIDDEN_HTML]

    outcomes = h.handle(record())

    assert (outcomes, h.button.probed, h.clock.sleeps) == (["delivered"], 3, [PROBE_INTERVAL] * 3)


def test_a_records_own_403_is_dead_lettered_once_the_probe_accepts_the_key() -> None:
    """Button's 403 on one create: the gate closes, the record-independent probe shows the key
    is accepted, and the record's second 403 is its own: dead letter http_403, gate open."""
    h = Harness().answer(FORBIDDEN_BUTTON, FORBIDDEN_BUTTON)

    outcomes = h.handle(record())

    assert (outcomes, h.letters[0].reason, h.letters[0].http_status, h.gate.closed) == (
        ["dead_lettered"],
        "http_403",
        403,
        False,
    )
    assert h.processor.parked == {ORDER: "http_403"}


def test_retry_after_opens_the_breaker_capped_without_spending_the_budget() -> None:
    """A 429 with Retry-After far beyond the budget (an HTTP-date ten minutes ahead) is
    back-pressure: the breaker opens for the capped delay, the attempts do not count, and the
    record is delivered instead of dead-lettered (retry_deadline)."""
    h = Harness(retry=RetryPolicy(max_attempts=2, max_elapsed=30.0, retry_after_cap=45.0))
    limited = ButtonOutcome(OutcomeKind.RATE_LIMITED, 429, "Too many requests", retry_after=600.0)
    h.answer(limited, limited, limited, OK)

    outcomes = h.handle(record())

    assert (outcomes, h.letters, h.clock.sleeps) == (["delivered"], [], [45.0, 45.0, 45.0])
    assert h.sample("breaker_openings_total", reason="http_429") == 3.0


def test_an_outage_longer_than_the_budget_pauses_instead_of_dead_lettering() -> None:
    """503 without Retry-After for two records, longer than their budget: the failure streak
    of both opens the breaker, their exhausted budgets become a pause, probes keep it open
    while Button fails, and once it answers both are delivered with nothing dead-lettered."""
    h = Harness(retry=RetryPolicy(max_attempts=2), breaker_threshold=3)
    h.answer(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, OK, OK)
    h.button.probes = [UNAVAILABLE, UNAVAILABLE]
    h.processor = FakeProcessor(processed(), processed(order_id="ORD-2"))
    pipeline = Pipeline(h.deps())

    async def scenario() -> list[str]:
        return list(await asyncio.gather(pipeline.handle(record(17)), pipeline.handle(record(18))))

    outcomes = asyncio.run(scenario())

    assert (outcomes, h.letters, h.button.probed) == (["delivered", "delivered"], [], 3)
    assert h.sample("breaker_openings_total", reason="button_unavailable") == 1.0


def test_one_records_failures_alone_are_not_an_outage() -> None:
    """A record that Button answers 500 while nothing else fails exhausts its budget and is
    dead-lettered: one record cannot open the breaker (threshold 2 < 3 attempts)."""
    h = Harness(breaker_threshold=2).answer(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE)

    outcomes = h.handle(record())

    assert (outcomes, h.letters[0].reason, h.button.probed) == (
        ["dead_lettered"],
        "retries_exhausted",
        0,
    )


# --- records too large for the dead-letter topic -------------------------------------------------


def test_a_record_too_large_for_the_dlq_is_dead_lettered_as_a_reference() -> None:
    """A dead letter the DLQ refuses for its size becomes a reference (key, headers, no value)
    with reason too_large, the original reason and size; the order is parked; nothing stops."""
    h = Harness().answer(ButtonOutcome(OutcomeKind.INVALID, 400, "bad total"))
    h.dead_letters = SizeLimitedDeadLetters(h.calls, limit=1_000)
    big = record(value=b"\x00" + b"x" * 5_000, headers=[("trace", b"t" * 100)])

    outcomes = h.handle(big)

    written, letter = h.dead_letters.written[0]
    headers = header_map(dead_letter_headers(letter, written.headers))
    expected: object = (
        ["dead_lettered"],
        (b"user-1", None, []),
        ("too_large", "5001", "commerce-events", "17"),
        {ORDER: "too_large"},
        1.0,
    )
    actual: object = (
        outcomes,
        (written.key, written.value, written.headers),
        (
            headers["button.reason"],
            headers["button.original.size"],
            headers["__connect.errors.topic"],
            headers["__connect.errors.offset"],
        ),
        h.processor.parked,
        h.sample("dead_letters_total", reason="too_large"),
    )
    assert expected == actual
    assert "http_400" in headers["__connect.errors.exception.message"]


def test_a_record_whose_key_is_over_the_key_limit_is_dead_lettered_and_parks_nothing() -> None:
    """A key over ``MAX_KEY_BYTES`` cannot be a profile's key (the changelog record holds the
    key beside a profile of up to MAPPING_MAX_PROFILE_BYTES): the record is dead-lettered
    ``key_too_large`` before it is decoded, whatever its value, and it parks nothing (no
    changelog write under that key); the next record goes on."""
    h = Harness().answer(OK)
    big_key = b"k" * (MAX_KEY_BYTES + 1)

    outcomes = h.handle(record(key=big_key), record(18))

    expected: object = (
        ["dead_lettered", "delivered"],
        "key_too_large",
        "VALUE_CONVERTER",
        f"the record's key is {MAX_KEY_BYTES + 1} bytes",
        {},
        [],
        1,
    )
    actual: object = (
        outcomes,
        h.letters[0].reason,
        h.letters[0].stage.value,
        h.letters[0].message[: len(expected[3])],  # type: ignore[index]
        h.processor.parked,
        [w for w in h.changelog.written if w.key == big_key],
        h.decoder.calls,
    )
    assert expected == actual


def test_a_key_at_the_key_limit_is_a_profile_key() -> None:
    """``MAX_KEY_BYTES`` itself is allowed: the record is delivered."""
    h = Harness().answer(OK)

    assert h.handle(record(key=b"k" * MAX_KEY_BYTES)) == ["delivered"]


def test_a_reference_whose_key_alone_is_too_large_is_written_without_its_key() -> None:
    """A dead letter refused for its size, whose ``too_large`` reference is refused too (the
    key alone is over the DLQ's limit): the reference is written without the key, which
    ``button.original.key.size`` measures; nothing stops (a refused reference used to stop the
    service on this record at every start)."""
    h = Harness()
    h.dead_letters = SizeLimitedDeadLetters(h.calls, limit=2_500, keys=True)
    big_key = b"k" * 3_000

    outcomes = h.handle(record(key=big_key, value=b"\x00" + b"x" * 100))

    written, letter = h.dead_letters.written[0]
    headers = header_map(dead_letter_headers(letter, written.headers))
    expected: object = (["dead_lettered"], (None, None, []), ("too_large", "101", "3000"))
    actual: object = (
        outcomes,
        (written.key, written.value, written.headers),
        (
            headers["button.reason"],
            headers["button.original.size"],
            headers.get("button.original.key.size"),
        ),
    )
    assert expected == actual
    assert "key_too_large" in headers["__connect.errors.exception.message"]


# --- an unknown schema id: transient at first, and the key is parked behind it -------------------


def not_found_yet() -> SchemaNotFoundYetError:
    return SchemaNotFoundYetError("unknown_schema", "schema registry answered 404 for schema id 7")


def test_a_schema_id_the_registry_does_not_know_yet_is_retried() -> None:
    """A registry node that has not replicated a new id answers 404: retried, then decoded."""
    h = Harness(decoder=FakeDecoder(not_found_yet(), not_found_yet())).answer(OK)

    outcomes = h.handle(record())

    assert (outcomes, h.clock.sleeps, h.letters) == (["delivered"], [0.5, 1.0], [])


def test_a_schema_id_still_unknown_after_the_bounded_wait_is_dead_lettered() -> None:
    """The 404 is retried for a bounded time only, then the record goes to the DLQ."""
    h = Harness(decoder=FakeDecoder(*(not_found_yet() for _ in range(20))))

    outcomes = h.handle(record())

    assert outcomes == ["dead_lettered"]
    assert h.letters[0].reason == "unknown_schema"
    assert 0 < sum(h.clock.sleeps) <= 60.0


def test_an_order_record_behind_an_undecodable_record_of_its_key_is_parked() -> None:
    """A key's record dead-lettered before its order is known parks the key: the refund behind
    it follows it to the DLQ instead of reaching Button first."""
    first = Harness(
        decoder=FakeDecoder(UnknownSchemaError("unknown_schema", "schema id 99"), REFUND),
        real_processor=restored_processor(),
    )

    outcomes = first.handle(record(17), record(18))

    assert (outcomes, first.button.sent) == (["dead_lettered", "parked"], [])
    expected = f"order {ORDER} is parked behind an undecodable record of its key (unknown_schema)"
    assert first.letters[1].message == expected
    restarted = Harness(decoder=FakeDecoder(REFUND), real_processor=restored_processor(first))
    assert restarted.handle(record(19)) == ["parked"]


def test_replaying_the_undecodable_record_releases_its_key() -> None:
    """Once the first dead letter decodes on replay, it and the records parked behind it are
    sent in order."""
    first = Harness(
        decoder=FakeDecoder(UnknownSchemaError("unknown_schema", "schema id 99"), REFUND),
        real_processor=restored_processor(),
    )
    first.handle(record(17), record(18))

    replay = Harness(
        decoder=FakeDecoder(EVENT, REFUND), real_processor=restored_processor(first)
    ).answer(OK, OK)
    outcomes = replay.handle(replayed(40, parked=False), replayed(41, parked=True))

    assert outcomes == ["delivered", "delivered"]
    assert [r.action for r in replay.button.sent] == [Action.CREATE, Action.CANCEL]


def test_replaying_the_undecodable_record_releases_the_orders_parked_behind_its_key() -> None:
    """The orders of a key parked behind an undecodable record are parked because of the key,
    not of their own: the record that parked each is its order's first dead letter. Replayed
    after the key's head, whatever order the head turns out to be, each is released and sent;
    a record of the order parked behind it follows. (These replays carry no
    ``button.replayed.parks.order``, as an older version's dead letters: each is taken to be
    the one that parked its order, as that version did.)"""
    other = replace(
        EVENT,
        event_id="evt-9",
        commerce=replace(EVENT.commerce, transaction_id="ORD-9") if EVENT.commerce else None,
    )
    first = Harness(
        decoder=FakeDecoder(UnknownSchemaError("unknown_schema", "schema id 99"), EVENT, REFUND),
        real_processor=restored_processor(),
    )
    assert first.handle(record(17), record(18), record(19)) == [
        "dead_lettered",
        "parked",
        "parked",
    ]

    replay = Harness(
        decoder=FakeDecoder(other, EVENT, REFUND), real_processor=restored_processor(first)
    ).answer(OK, OK, OK)
    outcomes = replay.handle(
        replayed(40, parked=False), replayed(41, parked=True), replayed(42, parked=True)
    )

    assert outcomes == ["delivered", "delivered", "delivered"]
    assert [(r.action, r.order_id) for r in replay.button.sent] == RELEASED_IN_ORDER


def test_a_live_record_of_an_order_parked_behind_the_key_waits_for_its_replay() -> None:
    """Once the key is released, an order parked behind it stays parked until its own first
    dead letter is replayed: a live record of it meanwhile is parked too."""
    first = Harness(
        decoder=FakeDecoder(UnknownSchemaError("unknown_schema", "schema id 99"), EVENT),
        real_processor=restored_processor(),
    )
    first.handle(record(17), record(18))
    other = replace(
        EVENT,
        event_id="evt-9",
        commerce=replace(EVENT.commerce, transaction_id="ORD-9") if EVENT.commerce else None,
    )
    replay = Harness(
        decoder=FakeDecoder(other, REFUND), real_processor=restored_processor(first)
    ).answer(OK)

    outcomes = replay.handle(replayed(40, parked=False), record(43))

    assert outcomes == ["delivered", "parked"]


def replay_of(harness: Harness, index: int, offset: int) -> Record:
    """The record ``replay-dlq`` writes back for ``harness``'s index-th dead letter: the headers
    the DLQ adapter wrote for it, turned into a replay's by ``consumer.replay``."""
    assert isinstance(harness.dead_letters, FakeDeadLetters)
    source, letter = harness.dead_letters.written[index]
    headers = dead_letter_headers(letter, source.headers)
    return record(offset, headers=replay_headers(headers, f"0:{index}"))


def _order_parked_behind_an_undecodable_head() -> Harness:
    """A key parked behind an undecodable record (offset 17), then the create (18) and the full
    refund (19) of ``ORDER`` parked behind it: three dead letters, in that order."""
    first = Harness(
        decoder=FakeDecoder(UnknownSchemaError("unknown_schema", "schema id 99"), EVENT, REFUND),
        real_processor=restored_processor(),
    )
    assert first.handle(record(17), record(18), record(19)) == ["dead_lettered", "parked", "parked"]
    return first


def test_the_dead_letter_of_the_record_that_parked_its_order_behind_the_key_says_so() -> None:
    """``button.parks.order``: ``true`` on the order's first record parked behind the key,
    ``false`` on the record of the order parked behind that one, absent on the undecodable
    record's own dead letter (not parked)."""
    first = _order_parked_behind_an_undecodable_head()

    marks = [first.dlq_headers(i).get("button.parks.order") for i in range(3)]

    assert marks == [None, "true", "false"]


OTHER_ORDER = replace(
    EVENT,
    event_id="evt-9",
    commerce=replace(EVENT.commerce, transaction_id="ORD-9") if EVENT.commerce else None,
)


def test_a_later_record_of_an_order_parked_behind_the_key_replayed_first_stays_parked() -> None:
    """Once the key is free, an order parked behind it is released by the replay of the record
    whose dead letter parked it (its create), not by a later record of it replayed alone
    first (its refund): that one is parked again, so the cancel never reaches Button before
    the create; replayed after the create, it is sent."""
    first = _order_parked_behind_an_undecodable_head()
    replay = Harness(
        decoder=FakeDecoder(OTHER_ORDER, REFUND, EVENT, REFUND),
        real_processor=restored_processor(first),
    ).answer(OK, OK, OK)

    assert replay.handle(replay_of(first, 0, 40), replay_of(first, 2, 42)) == [
        "delivered",
        "parked",
    ]
    assert replay.handle(replay_of(first, 1, 41), replay_of(replay, 0, 43)) == [
        "delivered",
        "delivered",
    ]
    assert [(r.action, r.order_id) for r in replay.button.sent] == RELEASED_IN_ORDER


def test_the_record_that_parked_its_order_behind_the_key_keeps_that_role_when_parked_again() -> (
    None
):
    """Replayed while the key is still parked, the create parked behind it goes back to the
    DLQ; its new dead letter still releases the order once the key is free, and the refund
    behind it is not the one that does."""
    first = _order_parked_behind_an_undecodable_head()
    replay = Harness(
        decoder=FakeDecoder(EVENT, OTHER_ORDER, REFUND, EVENT, REFUND),
        real_processor=restored_processor(first),
    ).answer(OK, OK, OK)

    assert replay.handle(replay_of(first, 1, 41)) == ["parked"]
    assert replay.handle(replay_of(first, 0, 40), replay_of(first, 2, 42)) == [
        "delivered",
        "parked",
    ]
    assert replay.handle(replay_of(replay, 0, 43), replay_of(replay, 1, 44)) == [
        "delivered",
        "delivered",
    ]
    assert [(r.action, r.order_id) for r in replay.button.sent] == RELEASED_IN_ORDER


def _parked_behind_truncated_bytes() -> Harness:
    """A key parked behind a record that can never decode (truncated), a refund behind it."""
    first = Harness(
        decoder=FakeDecoder(DecodeError("truncated", "Avro body ends early"), REFUND),
        real_processor=restored_processor(),
    )
    assert first.handle(record(17), record(18)) == ["dead_lettered", "parked"]
    return first


def test_a_replayed_undecodable_record_that_fails_again_parks_its_key_again() -> None:
    """Replayed as usual, a first dead letter that still does not decode parks its key again,
    and the records parked behind it stay parked (in order, for a replay once it is fixed)."""
    first = _parked_behind_truncated_bytes()
    replay = Harness(
        decoder=FakeDecoder(DecodeError("truncated", "Avro body ends early"), REFUND),
        real_processor=restored_processor(first),
    )

    outcomes = replay.handle(replayed(40, parked=False), replayed(41, parked=True))

    assert (outcomes, replay.button.sent) == (["dead_lettered", "parked"], [])
    assert "button.key.released" not in replay.dlq_headers(0)


def test_a_replayed_undecodable_record_asked_to_release_its_key_lets_the_key_go_on() -> None:
    """``replay-dlq --release-keys``: a first dead letter that still does not decode goes back
    to the DLQ with its reason, but its key is released instead of parked again, so the order
    records parked behind it reach Button, and so do the key's later ones."""
    first = _parked_behind_truncated_bytes()
    replay = Harness(
        decoder=FakeDecoder(DecodeError("truncated", "Avro body ends early"), REFUND, REFUND),
        real_processor=restored_processor(first),
    ).answer(OK, OK)

    outcomes = replay.handle(
        replayed(40, parked=False, release=True), replayed(41, parked=True), record(42)
    )

    assert outcomes == ["dead_lettered", "delivered", "delivered"]
    assert (replay.letters[0].reason, replay.letters[0].parked) == ("truncated", False)
    # Its new dead letter says it was given up: any later replay of it asks the same.
    assert replay.dlq_headers(0)["button.key.released"] == "true"
    restarted = Harness(
        decoder=FakeDecoder(REFUND), real_processor=restored_processor(replay)
    ).answer(OK)
    assert restarted.handle(record(43)) == ["delivered"]


def test_a_tombstone_in_the_input_does_not_park_its_key() -> None:
    """A record without a value is dead-lettered (null_value) but parks nothing."""
    h = Harness(decoder=FakeDecoder(REFUND), real_processor=restored_processor()).answer(OK)

    outcomes = h.handle(record(17, value=None), record(18))

    assert outcomes == ["dead_lettered", "delivered"]


# --- dead letters that come from the event's own data park nothing -----------------------------

THREE_A = CommerceEvent(
    event_id="evt-rp-buy",
    event_type=EventType.PURCHASE,
    event_time=T0 - timedelta(minutes=10),
    user_key="user-1",
    commerce=CommerceData(
        action=ProductAction.PURCHASE,
        transaction_id=ORDER,
        currency_code="USD",
        total_amount=Decimal("30.00"),
        products=(Product(id="A", price=Decimal("10.00"), quantity=3),),
    ),
)


def refund_of_a(event_id: str, minutes: int, quantity: int | None) -> CommerceEvent:
    """A refund of ``ORDER``: ``quantity`` units of product A, or the whole order (``None``)."""
    products = () if quantity is None else (Product(id="A", quantity=quantity),)
    return CommerceEvent(
        event_id=event_id,
        event_type=EventType.REFUND,
        event_time=T0 - timedelta(minutes=10 - minutes),
        user_key="user-1",
        commerce=CommerceData(action=ProductAction.REFUND, transaction_id=ORDER, products=products),
    )


def purchase_in(currency: str, event_id: str, order_id: str = ORDER) -> CommerceEvent:
    """A purchase of ``order_id`` in ``currency`` (``XYZ``: the mapping rejects it)."""
    assert THREE_A.commerce is not None
    commerce = replace(THREE_A.commerce, transaction_id=order_id, currency_code=currency)
    return replace(THREE_A, event_id=event_id, commerce=commerce)


def invalid_refund_error() -> DecodeError:
    """What decoding a refund of ``ORDER`` with ``total_amount`` -10.00 raises: its Avro record
    decodes, the event model refuses it (``negative_amount``)."""
    raw = event_to_record(refund_of_a("evt-rp-bad", 2, 1))
    raw["commerce"]["total_amount"] = Decimal("-10.00")
    with pytest.raises(DecodeError) as caught:
        event_from_record(raw)
    return caught.value


def test_a_rejected_refund_does_not_park_the_valid_refunds_after_it() -> None:
    """A refund of 9 units of an order of 3 is rejected by the mapping (it changed nothing, in
    the profile or at Button): the valid refund of 1 unit and the full refund after it are
    sent, and the rejection's dead letter says it parks nothing."""
    h = Harness(
        decoder=FakeDecoder(
            THREE_A,
            refund_of_a("evt-rp-9", 1, 9),
            refund_of_a("evt-rp-1", 2, 1),
            refund_of_a("evt-rp-all", 3, None),
        ),
        real_processor=restored_processor(),
    ).answer(OK, OK, OK)

    outcomes = h.handle(record(17), record(18), record(19), record(20))

    assert outcomes == ["delivered", "dead_lettered", "delivered", "delivered"]
    assert [r.action for r in h.button.sent] == [Action.CREATE, Action.UPDATE, Action.CANCEL]
    assert (h.letters[0].reason, h.letters[0].parked) == ("refund_exceeds_quantity", False)
    assert h.dlq_headers(0).get("button.parks.order") == "false"


def test_a_corrected_purchase_after_a_rejected_one_is_sent() -> None:
    """A purchase in an unknown currency is rejected; the merchant's correction (a new event
    id, in USD) is created at Button instead of waiting behind the rejection."""
    h = Harness(
        decoder=FakeDecoder(purchase_in("XYZ", "evt-rp-xyz"), purchase_in("USD", "evt-rp-usd")),
        real_processor=restored_processor(),
    ).answer(OK)

    outcomes = h.handle(record(17), record(18))

    assert outcomes == ["dead_lettered", "delivered"]
    assert [(r.action, r.order_id) for r in h.button.sent] == [(Action.CREATE, ORDER)]
    assert h.letters[0].reason == "unknown_currency"


def test_the_replay_of_a_rejection_releases_no_order_parked_behind_another_dead_letter() -> None:
    """A rejection parked nothing, so its replay releases nothing: the order, parked since
    (its corrected create refused by Button), stays parked; the replayed rejection waits
    behind that create, parked, and so does a refund of the order."""
    first = Harness(
        decoder=FakeDecoder(purchase_in("XYZ", "evt-rp-xyz"), purchase_in("USD", "evt-rp-usd")),
        real_processor=restored_processor(),
    ).answer(INVALID)
    assert first.handle(record(17), record(18)) == ["dead_lettered", "dead_lettered"]

    again = Harness(
        decoder=FakeDecoder(purchase_in("XYZ", "evt-rp-xyz"), refund_of_a("evt-rp-1", 2, 1)),
        real_processor=restored_processor(first),
    )
    outcomes = again.handle(replay_of(first, 0, 40), record(41))

    assert (outcomes, again.button.sent) == (["parked", "parked"], [])


def test_a_record_of_a_parked_order_is_parked_whatever_the_mapping_says() -> None:
    """While its order is parked, a record's verdict waits for the records ahead of it: a
    refund the mapping would reject now follows the refused create to the DLQ, parked, and
    is decided when it is replayed after it."""
    first = Harness(
        decoder=FakeDecoder(THREE_A, refund_of_a("evt-rp-9", 1, 9)),
        real_processor=restored_processor(),
    ).answer(INVALID)

    outcomes = first.handle(record(17), record(18))

    assert outcomes == ["dead_lettered", "parked"]
    assert (first.letters[1].reason, first.letters[1].parked) == ("parked", True)


def test_an_invalid_event_parks_neither_its_key_nor_its_order() -> None:
    """A refund whose Avro decodes but whose total_amount is negative is dead-lettered at
    decode with its order's and event's ids and the bad value; the user's next order is sent,
    not parked behind the key."""
    other = purchase_in("USD", "evt-rp-w2", order_id="ORD-W2")
    h = Harness(
        decoder=FakeDecoder(THREE_A, invalid_refund_error(), other),
        real_processor=restored_processor(),
    ).answer(OK, OK)

    outcomes = h.handle(record(17), record(18), record(19))

    assert outcomes == ["delivered", "dead_lettered", "delivered"]
    assert [(r.action, r.order_id) for r in h.button.sent] == [
        (Action.CREATE, ORDER),
        (Action.CREATE, "ORD-W2"),
    ]
    headers = h.dlq_headers(0)
    expected = {
        "__connect.errors.stage": "VALUE_CONVERTER",
        "button.reason": "negative_amount",
        "button.order.id": ORDER,
        "button.event.id": "evt-rp-bad",
        "button.parks.order": "false",
    }
    assert expected == {k: headers.get(k) for k in expected}
    assert "-10.00" in headers["__connect.errors.exception.message"]


def test_the_replay_of_an_invalid_event_that_parked_its_key_releases_the_key() -> None:
    """An older version parked the key behind a record that failed validation at decode (its
    dead letter has no ``button.parks.order``). Replayed, it fails again and parks nothing:
    the key it parked is released, so the user's next order is sent."""
    h = Harness(
        decoder=FakeDecoder(invalid_refund_error(), THREE_A),
        real_processor=restored_processor(),
    ).answer(OK)
    assert h.real_processor is not None
    older = Parking(
        h.real_processor.store,
        max_orders_per_profile=MappingConfig().max_orders_per_profile,
        keyless=ParkingLot(clock=h.clock.monotonic),
    )
    older.park(2, b"user-1", KEY_PARKED, "negative_amount", T0)
    headers = [
        ("button.replayed", b"0:5"),
        ("button.replayed.parked", b"false"),
        ("button.replayed.stage", b"VALUE_CONVERTER"),
    ]

    outcomes = h.handle(record(40, headers=headers), record(41))

    assert outcomes == ["dead_lettered", "delivered"]


def test_a_refund_held_for_its_purchase_behind_a_parked_key_is_parked_not_lost() -> None:
    """A partial refund of an order not seen yet is held in the profile; behind a parked key
    it cannot be recorded, so it is parked (not finished as skipped and forgotten). Replayed
    once the key is given up, it is held, and the purchase is created at the refunded
    total."""
    first = Harness(
        decoder=FakeDecoder(
            DecodeError("truncated", "Avro body ends early"), refund_of_a("evt-rp-1", 2, 1)
        ),
        real_processor=restored_processor(),
    )
    assert first.handle(record(17), record(18)) == ["dead_lettered", "parked"]

    replay = Harness(
        decoder=FakeDecoder(
            DecodeError("truncated", "Avro body ends early"), refund_of_a("evt-rp-1", 2, 1), THREE_A
        ),
        real_processor=restored_processor(first),
    ).answer(OK)
    replay.button.reads.append(NOT_FOUND)  # the refund's order, read first: Button lacks it too
    outcomes = replay.handle(
        replayed(40, parked=False, release=True), replayed(41, parked=True), record(42)
    )

    assert outcomes == ["dead_lettered", "skipped", "delivered"]
    body = replay.button.sent[0].body
    assert body is not None
    assert (replay.button.sent[0].action, body["total"]) == (Action.CREATE, 2000)


# --- log context -------------------------------------------------------------------------------


def test_log_lines_of_a_record_carry_its_partition_offset_key_hash_and_event_id() -> None:
    """Every line logged while a record is handled names it (the key only as a short hash), and
    a line logged after it names none of it: the context ends with the record."""
    finalized = ButtonOutcome(OutcomeKind.FORBIDDEN, 403, "Order is finalized", from_button=True)
    h = Harness(processor=FakeProcessor(processed(Send(request(Action.UPDATE))))).answer(finalized)
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        h.handle(record(offset=41))
        structlog.get_logger("t").info("after")
    finally:
        structlog.reset_defaults()

    lines = {line["event"]: line for line in map(json.loads, out.getvalue().splitlines())}
    expected = {
        "partition": 2,
        "offset": 41,
        "key": hashlib.sha256(b"user-1").hexdigest()[:12],
        "event_id": "evt-1",
    }
    assert expected == {k: lines["done_without_change"].get(k) for k in expected}
    assert not set(expected) & set(lines["after"])


# --- concurrency permits -------------------------------------------------------------------------


class HeldButton:
    """Button whose answers wait until ``answer`` is set: requests stay in flight meanwhile."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.in_flight = 0

    async def send(self, request: ButtonRequest) -> ButtonOutcome:
        self.in_flight += 1
        await self.answer.wait()
        self.in_flight -= 1
        return OK

    async def get(self, order_id: str) -> ButtonOutcome:
        raise AssertionError(f"unexpected read of order {order_id}")


def test_records_are_mapped_only_as_concurrency_permits_free_up() -> None:
    """A record takes the permit for its first request before it is mapped: while every permit
    is held by a request in flight, the records behind them wait unmapped, so the event loop
    does not prepare a whole poll batch at once while the answers in flight wait behind it."""
    h = Harness()
    deps = h.deps()
    button = deps.button = HeldButton()
    pipeline = Pipeline(deps)
    limit = deps.limiter.limit
    records = [record(offset, key=f"user-{offset}".encode()) for offset in range(limit + 3)]

    async def scenario() -> tuple[int, int, list[str]]:
        running = asyncio.gather(*(pipeline.handle(r) for r in records))
        for _ in range(100):  # a bound, not a timing: each pass lets every task take a step
            await asyncio.sleep(0)
        mapped_while_full = len(h.processor.calls)
        in_flight = button.in_flight
        button.answer.set()
        return mapped_while_full, in_flight, await running

    mapped, in_flight, outcomes = asyncio.run(scenario())

    assert (limit, limit, ["delivered"] * len(records)) == (mapped, in_flight, outcomes)
    assert len(records) == len(h.processor.calls)


def test_a_record_waiting_at_a_closed_gate_holds_no_concurrency_permit() -> None:
    """The permit taken before mapping is given back before the record waits at a gate: records
    held while Button refuses the key do not hold the slots the probe's record needs after."""
    h = Harness().answer(OK)
    probe_answered = asyncio.Event()

    async def held_probe() -> ButtonOutcome:
        await probe_answered.wait()
        return NOT_FOUND  # Button accepts the key again

    h.gate = h.button.gate = AuthGate(PROBE_INTERVAL, held_probe, h.clock.sleep, h.clock.monotonic)
    h.gate.close()
    deps = h.deps()
    pipeline = Pipeline(deps)

    async def scenario() -> tuple[tuple[int, int, int], str]:
        handling = asyncio.create_task(pipeline.handle(record()))
        for _ in range(100):  # a bound, not a timing: each pass lets the task take a step
            await asyncio.sleep(0)
        held = (deps.limiter.in_flight, len(h.processor.calls), len(h.button.sent))
        probe_answered.set()
        return held, await handling

    held, outcome = asyncio.run(scenario())

    assert (held, outcome) == ((0, 1, 0), "delivered")
    assert deps.limiter.in_flight == 0


# --- a park that erases held refunds to the profile's cap in bytes -----------------------------

HELD = CommerceEvent(
    event_id="evt-held",
    event_type=EventType.REFUND,
    event_time=T0 - timedelta(minutes=10),
    user_key="user-1",
    commerce=CommerceData(
        action=ProductAction.REFUND, transaction_id="ORD-H", total_amount=Decimal("2.50")
    ),
)
"""A partial refund of an order the profile does not know: held for its purchase."""


def held_refund_processor(max_bytes: int) -> ProfileProcessor:
    """A real processor whose store holds ``HELD``'s refund (processed before ``EVENT``)."""
    config = MappingConfig()
    proc = ProfileProcessor(ProfileStore(config.retention, max_bytes=max_bytes), config)
    before = T0 - timedelta(minutes=1)
    proc.apply(2, b"user-1", proc.process(2, b"user-1", HELD, before))
    return proc


def test_held_refunds_a_park_erases_to_the_cap_in_bytes_are_counted_and_logged() -> None:
    """The profile fits its cap in bytes with the held refund and ``EVENT``'s order; the park
    of that order after its create's 400 pushes it over, and the order touched longest ago,
    the held refund's, is forgotten with the refund. That refund never reaches Button and has
    no dead letter: the park's write counts and logs it (``held_refund_discarded``,
    ``profile_capped``) as a profile's own write does. It used to vanish uncounted."""
    config = MappingConfig()
    sizing = held_refund_processor(max_bytes=1_000_000)
    sizing.apply(2, b"user-1", sizing.process(2, b"user-1", EVENT, T0))
    fitting = sizing.store.get(2, b"user-1")
    assert fitting is not None
    cap = len(encode_profile(fitting, expires_at_ms(fitting, config.retention)))
    proc = held_refund_processor(max_bytes=cap)
    h = Harness(decoder=FakeDecoder(EVENT), real_processor=proc).answer(INVALID)

    with capture_logs() as logs:
        outcomes = h.handle(record())

    after = proc.store.get(2, b"user-1")
    assert after is not None
    assert (outcomes, proc.store.capped) == (["dead_lettered"], 1)
    assert [o.order_id for o in after.orders] == [ORDER], "the held refund's order is gone"
    assert after.parked_order(ORDER) is not None
    assert [
        (e["log_level"], e["order_id"], e["refund_event_id"], e["reason"])
        for e in logs
        if e["event"] == "held_refund_discarded"
    ] == [("warning", "ORD-H", "evt-held", "profile_capped")]
    assert h.sample("held_refunds_discarded_total", reason="profile_capped") == 1.0


def test_a_key_parked_behind_an_undecodable_record_counts_as_one_parking() -> None:
    """orders_parked_total counts a key parked behind its undecodable record, once (its orders
    are parked with it: their records follow it to the DLQ as ``parked``); it stayed 0 while
    dead_letters_total{reason="parked"} grew. A second undecodable record of the parked key
    refreshes that parking and is no new one."""
    h = Harness(
        decoder=FakeDecoder(
            UnknownSchemaError("unknown_schema", "schema id 99"),
            UnknownSchemaError("unknown_schema", "schema id 99"),
            REFUND,
        ),
        real_processor=restored_processor(),
    )

    outcomes = h.handle(record(17), record(18), record(19))

    assert outcomes == ["dead_lettered", "dead_lettered", "parked"]
    assert h.button.sent == []
    assert [letter.reason for letter in h.letters] == ["unknown_schema", "unknown_schema", "parked"]
    assert h.metrics.registry.get_sample_value("button_consumer_orders_parked_total") == 1.0


def test_what_else_the_mapping_leaves_out_is_counted_and_logged() -> None:
    """Each input the mapping does not send (``Processed.dropped_inputs``: an order's line
    items left out for a product without a price) is counted by field and problem and logged
    with its value; the record itself goes on as mapped."""
    dropped = (DroppedInput("line_items", "product_without_price", "SKU-B"),)
    h = Harness(processor=FakeProcessor(replace(processed(), dropped_inputs=dropped))).answer(OK)

    with capture_logs() as logs:
        outcomes = h.handle(record())

    assert outcomes == ["delivered"]
    lines = [(e["field"], e["problem"], e["value"]) for e in logs if e["event"] == "input_dropped"]
    assert lines == [("line_items", "product_without_price", "SKU-B")]
    counted = h.sample("inputs_dropped_total", field="line_items", problem="product_without_price")
    assert counted == 1.0


# --- the producer's key contract ---------------------------------------------------------------


def json_lines(run: Callable[[], object]) -> list[dict[str, Any]]:
    """The lines ``run`` logs, rendered as the service renders them (JSON, with the record's
    scope: partition, offset, key hash)."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        run()
    finally:
        structlog.reset_defaults()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_record_keyed_by_something_else_than_its_user_key_is_counted_and_logged() -> None:
    """README asks producers to key every event by its ``user_key``: a purchase keyed by its
    order id is held in another profile than its user's (attribution lost, a refund keyed so
    never meets its purchase). Such a record was processed in silence; it is counted
    (``key_not_user_key``) and logged at warning with partition, offset and event id, and the
    key only as its hash (never the user id itself). The record goes on as before."""
    h = Harness().answer(OK)

    outcomes: list[str] = []
    logs = json_lines(lambda: outcomes.extend(h.handle(record(key=b"OKEY-1"))))

    assert outcomes == ["delivered"]
    assert h.sample("record_key_problems_total", problem="key_not_user_key") == 1.0
    assert h.sample("record_key_problems_total", problem="no_key") == 0.0
    lines = [e for e in logs if e["event"] == "record_key_not_user_key"]
    assert [(e["level"], e["partition"], e["offset"], e["event_id"]) for e in lines] == [
        ("warning", 2, 17, "evt-1")
    ]
    assert lines[0]["key"] == hashlib.sha256(b"OKEY-1").hexdigest()[:12]
    assert "OKEY-1" not in json.dumps(lines[0])
    assert "user-1" not in json.dumps(lines[0])


def test_a_record_without_a_key_is_counted_and_logged() -> None:
    """A record without a key (null, or empty) has no profile: counted ``no_key`` and logged."""
    h = Harness().answer(OK, OK)

    outcomes: list[str] = []
    logs = json_lines(lambda: outcomes.extend(h.handle(record(17, key=None), record(18, key=b""))))

    assert outcomes == ["delivered", "delivered"]
    assert h.sample("record_key_problems_total", problem="no_key") == 2.0
    assert [e["offset"] for e in logs if e["event"] == "record_key_not_user_key"] == [17]


def test_a_record_keyed_by_its_user_key_reports_nothing() -> None:
    h = Harness().answer(OK)

    logs = json_lines(lambda: h.handle(record(key=b"user-1")))

    assert h.sample("record_key_problems_total", problem="key_not_user_key") == 0.0
    assert [e for e in logs if e["event"] == "record_key_not_user_key"] == []


def test_the_key_problem_line_is_rate_limited_and_says_how_many_it_left_out() -> None:
    """A misconfigured producer keys every record wrongly: one line per problem and interval
    (``KEY_PROBLEM_LOG_INTERVAL`` seconds), the next one counting the records it left out; the
    counter counts every record."""
    h = Harness().answer(OK, OK, OK, OK, OK)
    pipeline = Pipeline(h.deps())

    async def scenario() -> None:
        for offset in (17, 18, 19):
            await pipeline.handle(record(offset, key=b"OKEY-1"))
        await pipeline.handle(record(20, key=None))
        h.clock.elapsed += KEY_PROBLEM_LOG_INTERVAL
        await pipeline.handle(record(21, key=b"OKEY-1"))

    logs = json_lines(lambda: asyncio.run(scenario()))

    assert h.sample("record_key_problems_total", problem="key_not_user_key") == 4.0
    lines = [e for e in logs if e["event"] == "record_key_not_user_key"]
    assert [(e["offset"], e["problem"], e["suppressed"]) for e in lines] == [
        (17, "key_not_user_key", 0),
        (20, "no_key", 0),
        (21, "key_not_user_key", 2),
    ]
