"""Fakes of the engine's ports (``consumer.ports``), shared by the unit tests.

- ``FakeSource``: the input topic as per-partition queues of ``Record``s. It honours pause and
  resume, records every store, commit and pause, and runs rebalance callbacks the way the Kafka
  adapter does: from its own thread, inside ``poll``, while the event loop stays free.
- ``RecordingTelemetry``: keeps every call, in order, for assertions.
- ``FakeClock``: a monotonic clock that moves only when the test moves it.

Nothing here sleeps for synchronisation: tests wait for a condition with ``FakeSource.until``
(bounded by a deadline) or for "the loop has made a full pass" with ``FakeSource.passes``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from consumer.domain.events import CommerceEvent, EventType
from consumer.domain.mapping import skip_for
from consumer.domain.profile import Retention
from consumer.domain.profile_epoch import RestoredValue
from consumer.domain.triage import InertEvent
from consumer.engine.profiles import ProfileStore
from consumer.errors import BrokerError
from consumer.ports import (
    Delivery,
    FinishedRecord,
    Headers,
    PartitionLag,
    RebalanceListener,
    Record,
)

DEADLINE = 5.0
"""Seconds any single wait in a test may take before the test fails."""

TOPIC = "commerce-events"


def make_record(
    partition: int,
    offset: int,
    key: bytes | None = None,
    value: bytes | None = b"\x00avro",
    headers: Headers | None = None,
) -> Record:
    """A record of ``TOPIC``; the key defaults to one of its own (``k<partition>-<offset>``)."""
    return Record(
        topic=TOPIC,
        partition=partition,
        offset=offset,
        key=f"k{partition}-{offset}".encode() if key is None else key,
        value=value,
        timestamp_ms=None,
        headers=headers or [],
    )


class FakeClock:
    """A monotonic clock that only moves when the test calls ``advance`` (thread-safe reads)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSource:
    """``consumer.ports.Source`` over in-memory queues, with rebalances the test triggers.

    ``assign``, ``revoke`` and ``lose`` queue a rebalance; the next ``poll`` runs its callback on
    a separate thread (``asyncio.to_thread``), as librdkafka runs them inside ``consume``, and
    the returned future is done once the callback returned. A poll that served a rebalance
    returns no records (the fetch of newly assigned partitions has not happened yet).
    ``close`` leaves the group: the partitions still assigned are revoked through the listener.

    Like the Kafka adapter, an assignment is applied before the listener's ``on_assign`` runs,
    and like librdkafka it does not carry an application's pause to a newly assigned partition:
    it starts fetching unless the listener pauses it (``pause_now``).
    """

    def __init__(self, assign: Sequence[int] = (0,), topic: str = TOPIC) -> None:
        self.topic = topic
        self.queues: dict[int, deque[Record]] = {}
        self.assigned: set[int] = set()
        self.paused: set[int] = set()
        self.actions: list[tuple[str, Any]] = []
        """Every pause, resume, store, commit, commit_now and close, in order."""
        self.stored: dict[int, list[int]] = {}
        """Each partition's stored offsets, in order."""
        self.committed: dict[int, list[int]] = {}
        """Each partition's committed offsets (``commit`` and ``commit_now``), in order."""
        self.handed: dict[int, int] = {}
        """Records handed out by ``poll``, per partition: what the consumer actually received."""
        self.polls = 0
        self.closed = False
        self.unfetched: dict[int, int] = {}
        """Records a test says are in Kafka beyond those queued (not fetchable yet)."""
        self.lag_reads = 0
        """Calls of ``lag`` so far (counted as they start)."""
        self.reach_reads = 0
        """Calls of ``reach`` so far."""
        self.broker_failures = 0
        """The next reads of the brokers (``lag``, ``reach``) that raise ``BrokerError``."""
        self.lag_hold: asyncio.Event | None = None
        """When set to an event, ``lag`` waits for it (a coordinator that does not answer)."""
        self.log_ends: dict[int, int] = {}
        """Where a test says a partition's log ends, past its last queued record (transaction
        markers): a poll that empties the partition's queue reports it (``ends_reached``)."""
        self._ends: dict[int, int] = {}
        self._ends_met: dict[int, set[int]] = {}
        self._resets: set[int] = set()
        self._listener: RebalanceListener | None = None
        self._rebalances: deque[tuple[str, list[int], asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._activity = asyncio.Event()
        self._lock = threading.Lock()
        if assign:
            self.assign(list(assign))

    # -- what the test does ------------------------------------------------------------------

    def add(self, *records: Record) -> None:
        """Append records to their partitions' queues (offsets as given)."""
        for record in records:
            self.queues.setdefault(record.partition, deque()).append(record)
        self._wake.set()

    def assign(self, partitions: list[int]) -> asyncio.Future[None]:
        return self._rebalance("assign", partitions)

    def revoke(self, partitions: list[int]) -> asyncio.Future[None]:
        return self._rebalance("revoke", partitions)

    def lose(self, partitions: list[int]) -> asyncio.Future[None]:
        return self._rebalance("lost", partitions)

    def reset_offsets(self, partition: int) -> None:
        """The Kafka client reset ``partition``'s fetch position (``offsets_reset``): reported
        with the next poll; the test queues the records from the new position (``add``)."""
        self._resets.add(partition)
        self._wake.set()

    def pending(self, partition: int) -> int:
        """Records of ``partition`` not handed out yet."""
        return len(self.queues.get(partition, ()))

    def last_stored(self, partition: int) -> int | None:
        stored = self.stored.get(partition)
        return stored[-1] if stored else None

    def highest_position(self, partition: int) -> int | None:
        """The highest offset of ``partition`` ever stored or committed."""
        seen = self.stored.get(partition, []) + self.committed.get(partition, [])
        return max(seen) if seen else None

    def actions_named(self, *names: str) -> list[tuple[str, Any]]:
        return [action for action in self.actions if action[0] in names]

    async def until(self, condition: Callable[[], bool], deadline: float = DEADLINE) -> None:
        """Return once ``condition()`` holds; fail the test after ``deadline`` seconds.

        Re-checked after every call the worker makes to the source, and at least every 10 ms
        (a rebalance callback blocks the poll loop, yet the condition may change meanwhile).
        """
        async with asyncio.timeout(deadline):
            while not condition():
                self._activity.clear()
                try:
                    async with asyncio.timeout(0.01):
                        await self._activity.wait()
                except TimeoutError:
                    pass

    async def passes(self, count: int = 1) -> None:
        """Return once the loop made ``count`` full passes (poll, store, back-pressure...)
        after this call: the poll after the next one has started."""
        target = self.polls + count + 1
        await self.until(lambda: self.polls >= target)

    # -- consumer.ports.Source ---------------------------------------------------------------

    async def start(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self._note("start", None)

    async def poll(self, max_records: int, wait: float) -> list[Record]:
        self.polls += 1
        self._note_activity()
        if await self._run_rebalances():
            return []
        records = self._take(max_records)
        if records:
            return records
        self._wake.clear()
        try:
            async with asyncio.timeout(wait):
                await self._wake.wait()
        except TimeoutError:
            return []
        if await self._run_rebalances():
            return []
        return self._take(max_records)

    def ends_reached(self) -> dict[int, int]:
        ends, self._ends = self._ends, {}
        return ends

    def offsets_reset(self) -> set[int]:
        resets, self._resets = self._resets, set()
        return resets

    async def store(self, offsets: dict[int, int], *, commit: bool = False) -> None:
        for partition, offset in offsets.items():
            self.stored.setdefault(partition, []).append(offset)
        self._note("store", dict(offsets))
        if commit:
            # As librdkafka's commit() without offsets: every stored offset not committed yet.
            pending = {
                partition: positions[-1]
                for partition, positions in self.stored.items()
                if positions and positions[-1] not in self.committed.get(partition, [])[-1:]
            }
            self._commit("commit_stored", pending)

    async def commit(self, offsets: dict[int, int]) -> None:
        self._commit("commit", offsets)

    def commit_now(self, offsets: dict[int, int]) -> None:
        self._commit("commit_now", offsets)

    def store_now(self, offsets: dict[int, int]) -> None:
        with self._lock:
            for partition, offset in offsets.items():
                self.stored.setdefault(partition, []).append(offset)
            self.actions.append(("store_now", dict(offsets)))

    def pause_now(self, partitions: Sequence[int]) -> None:
        with self._lock:
            self.paused.update(partitions)
            self.actions.append(("pause_now", list(partitions)))

    async def pause(self, partitions: Sequence[int]) -> None:
        self.paused.update(partitions)
        self._note("pause", list(partitions))

    async def resume(self, partitions: Sequence[int]) -> None:
        self.paused.difference_update(partitions)
        self._note("resume", list(partitions))
        self._wake.set()

    async def lag(self, partitions: Sequence[int]) -> dict[int, PartitionLag]:
        self.lag_reads += 1
        self._note_activity()
        if self.lag_hold is not None:
            await self.lag_hold.wait()
        if self.broker_failures:
            self.broker_failures -= 1
            raise BrokerError("the brokers do not answer")
        committed = {p: (self.last_stored(p) or 0) for p in partitions}
        return {p: PartitionLag(committed[p], committed[p] + self.pending(p)) for p in partitions}

    async def backlog(self, partitions: Sequence[int]) -> dict[int, int]:
        return {p: self.pending(p) + self.unfetched.get(p, 0) for p in partitions}

    async def reach(self) -> None:
        self.reach_reads += 1
        if self.broker_failures:
            self.broker_failures -= 1
            raise BrokerError("the brokers do not answer")

    async def close(self) -> None:
        if self._listener is not None and self.assigned:
            partitions = sorted(self.assigned)
            await asyncio.to_thread(self._listener.on_revoke, partitions)
            self.assigned.difference_update(partitions)
        self.closed = True
        self._note("close", None)

    # -- internals ---------------------------------------------------------------------------

    def _rebalance(self, kind: str, partitions: list[int]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rebalances.append((kind, list(partitions), done))
        self._wake.set()
        return done

    async def _run_rebalances(self) -> bool:
        if self._listener is None or not self._rebalances:
            return False
        listener = self._listener
        while self._rebalances:
            kind, partitions, done = self._rebalances.popleft()
            callback = {
                "assign": listener.on_assign,
                "revoke": listener.on_revoke,
                "lost": listener.on_lost,
            }[kind]
            if kind == "assign":
                # Applied before the callback (as the adapter does), and not paused.
                self.assigned.update(partitions)
                self.paused.difference_update(partitions)
            try:
                await asyncio.to_thread(callback, partitions)
            except BaseException as exc:
                if not done.done():
                    done.set_exception(exc)
                raise
            if kind == "assign":
                self.assigned.update(partitions)
            else:
                self.assigned.difference_update(partitions)
            if not done.done():
                done.set_result(None)
            self._note_activity()
        return True

    def _take(self, max_records: int) -> list[Record]:
        records: list[Record] = []
        for partition in sorted(self.assigned - self.paused):
            queue = self.queues.get(partition)
            while queue and len(records) < max_records:
                records.append(queue.popleft())
                self.handed[partition] = self.handed.get(partition, 0) + 1
            end = self.log_ends.get(partition)
            if not queue and end is not None and end not in self._ends_met.get(partition, ()):
                # As librdkafka's partition EOF: once, after the partition's last record.
                self._ends_met.setdefault(partition, set()).add(end)
                self._ends[partition] = end
        return records

    def _commit(self, name: str, offsets: dict[int, int]) -> None:
        with self._lock:
            for partition, offset in offsets.items():
                self.committed.setdefault(partition, []).append(offset)
            self.actions.append((name, dict(offsets)))

    def _note(self, name: str, detail: Any) -> None:
        self.actions.append((name, detail))
        self._note_activity()

    def _note_activity(self) -> None:
        self._activity.set()


class RecordingTelemetry:
    """``consumer.ports.Telemetry`` that keeps every call as ``(method, args)``, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def named(self, method: str) -> list[tuple[Any, ...]]:
        """The arguments of every call to ``method``, in order."""
        return [args for name, args in self.calls if name == method]

    @property
    def in_flight_counts(self) -> list[int]:
        return [args[0] for args in self.named("in_flight")]

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))

    def started(self) -> None:
        self._record("started")

    def stopping(self) -> None:
        self._record("stopping")

    def polled(self, at: float) -> None:
        self._record("polled", at)

    def records_received(self, topic: str, count: int) -> None:
        self._record("records_received", topic, count)

    def records_redelivered(self, partition: int, count: int) -> None:
        self._record("records_redelivered", partition, count)

    def in_flight(self, count: int) -> None:
        self._record("in_flight", count)

    def partitions(self, assigned: int, paused: int) -> None:
        self._record("partitions", assigned, paused)

    def in_group(self, member: bool) -> None:
        self._record("in_group", member)

    def auth_paused(self, paused: bool) -> None:
        self._record("auth_paused", paused)

    def breaker(self, open_: bool, reason: str) -> None:
        self._record("breaker", open_, reason)

    def breaker_opened(self, reason: str) -> None:
        self._record("breaker_opened", reason)

    def rebalance(self, kind: str) -> None:
        self._record("rebalance", kind)

    def profiles_restored(self, seconds: float) -> None:
        self._record("profiles_restored", seconds)

    def lags(self, lags: Mapping[int, PartitionLag]) -> None:
        self._record("lags", {p: lag.records for p, lag in lags.items()})

    def paused(self, reason: str, active: bool) -> None:
        self._record("paused", reason, active)

    def broker_reachable(self, reachable: bool) -> None:
        self._record("broker_reachable", reachable)

    def dead_letter_failed(self) -> None:
        self._record("dead_letter_failed")

    def order_parked(self) -> None:
        self._record("order_parked")

    def decode_failed(self, reason: str) -> None:
        self._record("decode_failed", reason)

    def writer_schema_missing_field(self, field: str) -> None:
        self._record("writer_schema_missing_field", field)

    def btn_ref_dropped(self, source: str, problem: str) -> None:
        self._record("btn_ref_dropped", source, problem)

    def input_dropped(self, field: str, problem: str) -> None:
        self._record("input_dropped", field, problem)

    def record_key_problem(self, problem: str) -> None:
        self._record("record_key_problem", problem)

    def refund_held(self) -> None:
        self._record("refund_held")

    def schema_registry_unavailable(self) -> None:
        self._record("schema_registry_unavailable")

    def held_refund_discarded(self, reason: str) -> None:
        self._record("held_refund_discarded", reason)

    def changelog_repaired(self, when: str, count: int) -> None:
        self._record("changelog_repaired", when, count)

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
        self._record("button_attempt", action, outcome, seconds, limit, status)

    def button_probe(
        self, outcome: str, seconds: float, status: int | None = None, *, from_button: bool = False
    ) -> None:
        self._record("button_probe", outcome, seconds, status, from_button)

    def retry_scheduled(self, outcome: str) -> None:
        self._record("retry_scheduled", outcome)

    def dead_lettered(self, reason: str) -> None:
        self._record("dead_lettered", reason)

    def finished(self, outcome: str, event_age: float | None) -> None:
        self._record("finished", outcome, event_age)

    def delivery(self, delivery: Delivery) -> None:
        self._record("delivery", delivery)

    def finished_together(self, records: Sequence[FinishedRecord]) -> None:
        self._record("finished_together", tuple(records))


class HeldPipeline:
    """Stands in for ``Pipeline``: ``handle(record)`` returns when the test finishes the record.

    Each record waits on its own future, so a record is "in flight" for exactly as long as the
    test decides. ``finish``/``fail`` resolve it; ``release_all`` finishes everything (teardown).
    """

    def __init__(self, inert: Iterable[tuple[int, int]] = ()) -> None:
        self.started: list[tuple[int, int]] = []
        self.finished: list[tuple[int, int]] = []
        self.cancelled: list[tuple[int, int]] = []
        self.inert = set(inert)
        """Positions ``triage`` reports inert: finished by ``finish_inert``, never started."""
        self.finished_inert: list[tuple[int, int]] = []
        self.inert_batches: list[int] = []
        """The size of each ``finish_inert`` call's batch (calls with none are not kept)."""
        self._results: dict[tuple[int, int], asyncio.Future[str]] = {}
        self._released = False

    def triage(self, record: Record) -> InertEvent | None:
        if (record.partition, record.offset) not in self.inert:
            return None
        return InertEvent(
            f"view-{record.offset}", EventType.PAGE_VIEW, 0, skip_for(EventType.PAGE_VIEW)
        )

    def finish_inert(self, inert: Sequence[tuple[Record, InertEvent]]) -> None:
        self.finished_inert.extend((record.partition, record.offset) for record, _ in inert)
        if inert:
            self.inert_batches.append(len(inert))

    async def handle(self, record: Record, event: CommerceEvent | None = None) -> str:
        position = (record.partition, record.offset)
        self.started.append(position)
        try:
            outcome = await self._result(position)
        except asyncio.CancelledError:
            self.cancelled.append(position)
            raise
        self.finished.append(position)
        return outcome

    def finish(self, partition: int, offset: int, outcome: str = "delivered") -> None:
        self._result((partition, offset)).set_result(outcome)

    def fail(self, partition: int, offset: int, error: BaseException) -> None:
        self._result((partition, offset)).set_exception(error)

    def running(self) -> list[tuple[int, int]]:
        """Records started and neither finished nor cancelled."""
        ended = set(self.finished) | set(self.cancelled)
        return [p for p in self.started if p not in ended]

    def release_all(self) -> None:
        """Finish every record, now and from now on (so a test's teardown never waits)."""
        self._released = True
        for future in self._results.values():
            if not future.done():
                future.set_result("delivered")

    def _result(self, position: tuple[int, int]) -> asyncio.Future[str]:
        future = self._results.get(position)
        if future is None:
            future = self._results[position] = asyncio.get_running_loop().create_future()
            if self._released:
                future.set_result("delivered")
        return future


DAY_MS = 86_400_000
RETENTION = Retention(btn_ref_ms=7 * DAY_MS, device_id_ms=30 * DAY_MS, order_ms=60 * DAY_MS)
"""Retention windows for profile-store tests: 7 days of tokens, 30 of device ids, 60 of orders."""


def restored(
    records: Iterable[tuple[bytes, RestoredValue]], retention: Retention = RETENTION
) -> ProfileStore:
    """What a restore of changelog partition 0 holding ``records`` (in offset order) yields: a
    ``PartitionRestore`` applied off the store, then installed (no epoch claimed)."""
    store = ProfileStore(retention)
    restore = store.restoring(0)
    restore.apply(records)
    store.install(restore)
    return store
