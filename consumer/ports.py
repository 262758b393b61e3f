"""The ports: what the engine needs from the outside world, as small protocols.

The engine (``consumer.engine``) talks to Kafka, the schema registry, Button, the dead-letter
topic, the profile changelog, metrics, probes and the live delivery log only through these
protocols; the adapters (``consumer.adapters``) implement them, and ``consumer.bootstrap`` plugs
one into the other. Neither side imports the other: this module sits between them, above the
domain, so that the values crossing the boundary (``Record``, ``Delivery``) have one definition
both sides share. Unit tests of the engine use fakes of these protocols (``tests/fakes.py``).

Layers (enforced by import-linter in ``make lint``)::

    bootstrap, cli, commands, replay         composition root and commands
        engine            adapters           siblings: neither imports the other
                  ports                      this module
                  domain                     pure: no I/O, no clock, no globals
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from consumer.domain.button import ButtonRequest
from consumer.domain.deadletter import DeadLetter
from consumer.domain.events import CommerceEvent
from consumer.domain.outcomes import ButtonOutcome
from consumer.domain.triage import InertEvent

Headers = list[tuple[str, bytes]]
"""Kafka record headers as (name, value) pairs, in order (names may repeat)."""


@dataclass(slots=True)
class RecordScope:
    """The record a task is handling, for the lines it logs (``CURRENT_RECORD``).

    Set by the engine once per record; the logging adapter adds ``partition``, ``offset``,
    ``key`` (a short hash, never the user id) and ``event_id`` to each line written while it is
    set. A field of the same name passed to the log call wins.
    """

    partition: int
    offset: int
    key: bytes | None
    event_id: str | None = None
    """Set once the record is decoded and mapped."""


CURRENT_RECORD: ContextVar[RecordScope | None] = ContextVar("current_record", default=None)
"""The record the running task handles, or ``None``. One ``set`` per record costs less than
binding each field to structlog's context variables, and the key is hashed only when a line is
written."""


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed record, detached from the Kafka client's message object.

    Attributes:
        topic: the topic it was read from.
        partition: its partition number.
        offset: its offset in that partition.
        key: the key bytes (``None``: no key, hence no ordering and no profile).
        value: the value bytes (``None``: a tombstone).
        timestamp_ms: the record's timestamp in milliseconds since the epoch, if it has one.
        headers: its headers.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """Where the group stands on one partition (``Source.lag``).

    Attributes:
        committed: the group's committed offset, the next record to process (0 when none).
        end: the partition's end offset at the broker (the last stable offset under
            read_committed).
        start: where the lag counts from while the group has committed nothing on the
            partition: where it starts reading (the first offset this member was handed
            since the assignment, else the partition's log start offset under
            ``auto.offset.reset=earliest``, its end under ``latest``); ``None`` once an
            offset is committed (the lag counts from ``committed``).
        high_watermark: the partition's high watermark at the broker (the offset after its
            last record, read_uncommitted), read after ``end``; ``None`` when not read. Under
            read_committed it is past ``end`` while another producer's transaction is open
            on the partition: the records from its first one on cannot be read yet.
    """

    committed: int
    end: int
    start: int | None = None
    high_watermark: int | None = None

    @property
    def records(self) -> int:
        """Records not committed yet (never below 0): from ``start`` while nothing is
        committed, else from ``committed``, to ``end``."""
        return max(self.end - (self.committed if self.start is None else self.start), 0)

    @property
    def behind_open_transaction(self) -> int:
        """Records written after the last stable offset (``high_watermark - end``, never
        below 0; 0 when the high watermark was not read): held behind an open transaction,
        they cannot be read until it is committed or aborted, and ``records`` does not count
        them."""
        if self.high_watermark is None:
            return 0
        return max(self.high_watermark - self.end, 0)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One finished record, as the live delivery log shows it (redacted: ids, no PII).

    Attributes:
        at: when it finished, seconds since the epoch.
        partition, offset: where it was read.
        event_id: the event's own id (empty when it could not be decoded).
        action: ``create``, ``update``, ``cancel``, ``skip``, ``reject``, ``read`` (a refund
            whose order was to be read from Button and was not: a dry run, parked, the read
            failed) or ``none`` (nothing mapped).
        order_id: the order it concerns (empty for non-order events).
        outcome: ``delivered``, ``skipped``, ``dry_run``, ``dead_lettered`` or ``parked``.
        status: Button's HTTP status of the last attempt, if a request was sent.
        attempts: requests sent for it.
        reason: the failure-policy reason (``ok``, ``http_400``, ``parked``...).
        event_type: the event's type (``PURCHASE``, ``REFUND``...; empty when not decoded).
    """

    at: float
    partition: int
    offset: int
    event_id: str
    action: str
    order_id: str
    outcome: str
    status: int | None
    attempts: int
    reason: str
    event_type: str = ""


class FinishedRecord(NamedTuple):
    """A record finished without a task (an inert view or open), for ``finished_together``.

    Attributes:
        delivery: its live-log entry (``outcome``, ``reason``, where it was read...).
        key: its Kafka key, for the scope of the line it may log (hashed there, never logged).
        event_age: seconds from its event time to when it finished, if known.
    """

    delivery: Delivery
    key: bytes | None
    event_age: float | None


class RebalanceListener(Protocol):
    """Receives a consumer group's rebalance callbacks, with partition numbers.

    The callbacks run on the source's own thread, inside ``Source.poll``; they may block (to
    drain in-flight work and commit) but must not call the source's async methods.
    """

    def on_assign(self, partitions: list[int]) -> None: ...

    def on_revoke(self, partitions: list[int]) -> None: ...

    def on_lost(self, partitions: list[int]) -> None: ...


class Source(Protocol):
    """The input topic, read by a consumer group, offsets stored by hand (DESIGN, 1).

    ``store`` marks offsets for the periodic commit; ``commit``/``commit_now`` commit at once.
    Offsets are *next* offsets (the last finished record's offset + 1), as Kafka commits them.
    """

    topic: str

    async def start(self, listener: RebalanceListener) -> None:
        """Join the group and subscribe; ``listener`` gets every rebalance from then on."""
        ...

    async def poll(self, max_records: int, wait: float) -> list[Record]:
        """Up to ``max_records`` records: those ready, at once; only when none is ready, the
        first to arrive within ``wait`` seconds (and what came with it), else none."""
        ...

    def ends_reached(self) -> dict[int, int]:
        """The partitions whose end the fetcher reached in the polls since the last call, each
        with the next offset it would fetch there (past transaction markers and aborted
        records, which are never handed out under read_committed); taken once."""
        ...

    def offsets_reset(self) -> set[int]:
        """The partitions whose fetch position the Kafka client reset by ``auto.offset.reset``
        (its position was out of range: the input topic deleted and created again, its log
        truncated or fallen out of retention) in the polls since the last call; taken once. The
        records it hands out from there on may lie at offsets it handed out before."""
        ...

    async def store(self, offsets: dict[int, int], *, commit: bool = False) -> None:
        """Store ``offsets`` for the periodic commit; with ``commit``, also commit every stored
        offset now (those stored earlier too: ``offsets`` may be empty), without waiting for the
        broker (a failed commit is left to the next)."""
        ...

    async def commit(self, offsets: dict[int, int]) -> None: ...

    def commit_now(self, offsets: dict[int, int]) -> None:
        """Commit synchronously; only from a rebalance callback (the source's own thread)."""
        ...

    def store_now(self, offsets: dict[int, int]) -> None:
        """Store offsets synchronously; only from a rebalance callback (the source's thread)."""
        ...

    def pause_now(self, partitions: Sequence[int]) -> None:
        """Pause synchronously; only from a rebalance callback (the source's own thread).

        In ``on_assign`` the new partitions are already assigned, and not paused: Kafka does not
        carry a pause to a partition this member did not own, so the listener pauses what it
        does not want fetched yet.
        """
        ...

    async def pause(self, partitions: Sequence[int]) -> None: ...

    async def resume(self, partitions: Sequence[int]) -> None: ...

    async def lag(self, partitions: Sequence[int]) -> dict[int, PartitionLag]:
        """Each partition's committed offset, end offset and high watermark, asked of the
        brokers (a paused partition's too). Raises ``BrokerError`` when unknown."""
        ...

    async def backlog(self, partitions: Sequence[int]) -> dict[int, int]:
        """Records of each partition not handed out yet: its end offset at the broker minus
        the position (the committed offset before the first record). Raises ``BrokerError``
        when unknown."""
        ...

    async def reach(self) -> None:
        """Ask the brokers what a member owning no partition still depends on: the input
        topic's metadata and the group's committed offsets (its coordinator), so that the
        brokers' silence is seen without a partition to read. Raises ``BrokerError`` when
        unanswered."""
        ...

    async def close(self) -> None:
        """Leave the group (its revocation commits what is finished) and release the client."""
        ...


class RecordHandler(Protocol):
    """Takes one record to *finished* (DESIGN, 1): ``consumer.engine.pipeline.Pipeline``.

    Returns the outcome's name once the record is finished; raises only when it must not be
    considered finished (the dead-letter or changelog topic cannot be written).
    """

    async def handle(self, record: Record, event: CommerceEvent | None = None) -> str:
        """``event``: the record's value, already decoded by ``triage`` (not decoded again)."""
        ...

    def triage(self, record: Record) -> CommerceEvent | InertEvent | None:
        """Decode the value at once if that needs no I/O: the event, an ``InertEvent`` (finish
        it with ``finish_inert``: it needs no task), or ``None`` (``handle`` decodes it, waits
        for the registry or dead-letters it). Changes nothing and reports nothing."""
        ...

    def finish_inert(self, inert: Sequence[tuple[Record, InertEvent]]) -> None:
        """Finish inert records (``triage``: each record with its ``InertEvent``) as skipped,
        together: their telemetry and live-log lines, in one report for the batch."""
        ...


class Decoder(Protocol):
    """Record value bytes -> commerce event.

    Raises ``DecodeError`` (dead letter) for bytes that can never decode, and
    ``SchemaRegistryUnavailableError`` (wait and decode again) when the registry cannot answer.
    """

    def decode_event(self, value: bytes) -> CommerceEvent: ...

    def decode_triaged(self, value: bytes) -> CommerceEvent | InertEvent:
        """``decode_event``, except that an event that can change nothing (a plain view or
        open: ``consumer.domain.triage``) comes back as an ``InertEvent``, unvalidated."""
        ...

    def decode_triaged_at_hand(self, value: bytes) -> CommerceEvent | InertEvent | None:
        """``decode_triaged`` without asking the schema registry: ``None`` when the value's
        writer schema is not already known. Never blocks on I/O (the poll loop calls it)."""
        ...

    async def decode_triaged_async(self, value: bytes) -> CommerceEvent | InertEvent:
        """``decode_triaged`` for the event loop: a writer schema that must be asked of the
        registry is looked up off the loop's thread while the caller awaits it (a known one
        costs no thread hop); the loop, the admin server and a shutdown never wait for it."""
        ...


class ButtonPort(Protocol):
    """Button's Order API. Never raises for an HTTP or network failure: it returns an outcome."""

    async def send(self, request: ButtonRequest) -> ButtonOutcome: ...

    async def get(self, order_id: str) -> ButtonOutcome:
        """``GET /v1/order/{order_id}``: the order as Button holds it (``outcome.object``,
        with its ``status``: ``open``, ``finalized`` or ``deleted``)."""
        ...


class Changelog(Protocol):
    """The compacted profile changelog.

    ``write`` queues its record (``None``: a tombstone) before it returns and returns the
    broker's acknowledgement to await, which raises ``BrokerError`` when the write is refused.
    The writes of one partition are written in the order they were queued (an idempotent
    producer keeps that order), so a caller may send a record's request to Button before the
    acknowledgement arrives and await it afterwards (DESIGN, 7).

    ``epoch`` is the writer's epoch of the partition (``ChangelogWrite.epoch``; 0: none): a
    tombstone carries it in the ``button.epoch`` header (``consumer.domain.profile_epoch``), a
    value in its own envelope already.
    """

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> Awaitable[object]: ...


class DeadLetterSink(Protocol):
    """The dead-letter topic; returns once the write is acknowledged, raises if it cannot be."""

    async def write(self, record: Record, letter: DeadLetter) -> None: ...


class Telemetry(Protocol):
    """Metrics, probe state and the live delivery log, in the engine's own words.

    Every method is cheap and never raises; labels are bounded (never a key, order or event id).
    Durations are in seconds.
    """

    def started(self) -> None:
        """The consumer joined its group: live and ready."""
        ...

    def stopping(self) -> None:
        """Shutdown began: not ready any more."""
        ...

    def polled(self, at: float) -> None:
        """The loop polled at monotonic time ``at`` (liveness)."""
        ...

    def records_received(self, topic: str, count: int) -> None: ...

    def records_redelivered(self, partition: int, count: int) -> None:
        """The Kafka client handed out ``count`` records of ``partition`` again, at offsets
        below the highest one received since the assignment: dropped, not processed twice."""
        ...

    def in_flight(self, count: int) -> None:
        """Records read but not yet finished."""
        ...

    def partitions(self, assigned: int, paused: int) -> None: ...

    def in_group(self, member: bool) -> None:
        """Whether this member is in its group: true from an assignment (an empty one too),
        false from a loss of its partitions until the group hands it one again."""
        ...

    def auth_paused(self, paused: bool) -> None:
        """Whether consumption is paused because Button refuses the API key."""
        ...

    def breaker(self, open_: bool, reason: str) -> None:
        """Whether the circuit breaker holds all intake, and why (a policy reason, or empty)."""
        ...

    def breaker_opened(self, reason: str) -> None:
        """The circuit breaker opened for ``reason`` (``http_429``, ``http_503``,
        ``button_unavailable``)."""
        ...

    def paused(self, reason: str, active: bool) -> None:
        """Whether consumption is paused for ``reason`` (``backpressure``, ``breaker``...)."""
        ...

    def broker_reachable(self, reachable: bool) -> None:
        """Whether the last question to the broker (the lag) was answered."""
        ...

    def rebalance(self, kind: str) -> None:
        """``assign``, ``revoke`` or ``lost``."""
        ...

    def profiles_restored(self, seconds: float) -> None: ...

    def lags(self, lags: Mapping[int, PartitionLag]) -> None:
        """The lag and committed offset of every assigned partition (partitions not named have
        none any more)."""
        ...

    def decode_failed(self, reason: str) -> None: ...

    def btn_ref_dropped(self, source: str, problem: str) -> None:
        """An event carried junk where a token goes (``source``: ``explicit``,
        ``integration_attribute``, ``url``; ``problem``: ``empty``, ``placeholder``,
        ``too_long``, ``not_url_safe``): dropped, never sent nor remembered."""
        ...

    def input_dropped(self, field: str, problem: str) -> None:
        """An event carried something the mapping does not send nor remember (``field``:
        ``line_items``; ``problem``: ``product_without_price``; ``DroppedInput``)."""
        ...

    def record_key_problem(self, problem: str) -> None:
        """A decoded record's key breaks the producer contract (``problem``: ``no_key``,
        ``key_not_user_key``; ``consumer.domain.events.key_problem``)."""
        ...

    def refund_held(self) -> None:
        """A partial refund of an order neither the profile nor Button knows was held in the
        profile for its purchase (skip ``refund_held``)."""
        ...

    def schema_registry_unavailable(self) -> None:
        """A record's writer-schema lookup could not ask the registry; the record waits and
        decodes again (``schema_registry_unavailable``)."""
        ...

    def changelog_repaired(self, when: str, count: int) -> None:
        """``count`` changelog keys were written again by their partition's owner, after a
        former owner's late write of them (DESIGN, 7). ``when``: ``restore`` (found fenced by
        the restore, written right after the fence) or ``watch`` (landed while this member
        owned the partition)."""
        ...

    def held_refund_discarded(self, reason: str) -> None:
        """A refund the order's ledger held cannot apply to the order as it now stands (its
        purchase arrived, or Button's order was adopted), or left the profile with its order
        before its purchase came: the order does not carry it. ``reason``: what it would be
        rejected with (``refund_currency_mismatch``, ...), or ``order_expired``,
        ``order_evicted``, ``profile_capped``."""
        ...

    def writer_schema_missing_field(self, field: str) -> None:
        """A writer schema was first seen without this reader field (a reader schema's name)."""
        ...

    def button_attempt(
        self,
        action: str,
        outcome: str,
        seconds: float,
        limit: int,
        status: int | None = None,
        *,
        from_button: bool = False,
    ) -> None:
        """One request to Button ended in ``outcome`` with HTTP ``status`` (``None``: no
        answer); ``limit`` is the concurrency limit now; ``from_button``: the body was Button's
        own JSON envelope (not a page of something in front of it)."""
        ...

    def button_probe(
        self, outcome: str, seconds: float, status: int | None = None, *, from_button: bool = False
    ) -> None:
        """One probe of a closed gate (the auth gate, the circuit breaker) ended in ``outcome``
        with HTTP ``status`` after ``seconds``: a request to Button like the others, sent by no
        record."""
        ...

    def retry_scheduled(self, outcome: str) -> None: ...

    def dead_lettered(self, reason: str) -> None: ...

    def dead_letter_failed(self) -> None:
        """A dead-letter write failed (consumption stops)."""
        ...

    def order_parked(self) -> None:
        """An order was parked behind its first dead letter, or a key (all its orders) behind an
        undecodable record; not again for a parking refreshed by a later dead letter."""
        ...

    def finished(self, outcome: str, event_age: float | None) -> None:
        """A record finished with ``outcome``; ``event_age``: event time to now, if known."""
        ...

    def delivery(self, delivery: Delivery) -> None:
        """Add a finished record to the live delivery log."""
        ...

    def finished_together(self, records: Sequence[FinishedRecord]) -> None:
        """Records finished at once (a poll batch's inert records), in offset order: for each,
        what ``finished`` and ``delivery`` report for one record, any line it logs under its
        own record's scope (``CURRENT_RECORD``)."""
        ...
