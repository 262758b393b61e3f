"""The run loop: back-pressure, the auth pause, finished offsets, rebalances, idle stop, failures.

The real ``Dispatcher``, ``Watermarks`` and ``AuthGate`` run under the ``Worker``; the source,
telemetry and pipeline are fakes (``tests/fakes.py``). Each record stays in flight until the
test finishes it, so every "in flight" state holds by construction. Waits are for a condition
(``FakeSource.until``) or for the loop to make full passes (``FakeSource.passes``), each bounded
by a deadline; rebalance callbacks run on the fake source's own thread, as with Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.engine.authgate import AuthGate
from consumer.engine.concurrency import PauseGate
from consumer.engine.dispatcher import Dispatcher
from consumer.engine.restore import RestoreCancel
from consumer.engine.watermark import Watermarks
from consumer.engine.worker import RunStats, Worker, WorkerOptions
from consumer.errors import BrokerError, ConsumerError, DeadLetterError
from consumer.ports import Record
from tests.fakes import (
    DEADLINE,
    FakeClock,
    FakeSource,
    HeldPipeline,
    RecordingTelemetry,
    make_record,
)

NEVER = 3_600.0
"""A timeout no test reaches (the test's own deadline fails it first)."""

UNKNOWN_SCHEMA = b"\x00\x00\x00\x00\x07avro"
"""A value whose writer schema the registry must be asked for."""


def options(**overrides: Any) -> WorkerOptions:
    base: dict[str, Any] = {
        "poll_timeout": 0.01,
        "read_retry_delay": 0.0,
        "revoke_timeout": NEVER,
        "shutdown_timeout": NEVER,
    }
    return WorkerOptions(**(base | overrides))


@dataclass
class Harness:
    """A worker over a fake source, a held pipeline and the real dispatcher, marks and gate."""

    assign: tuple[int, ...] = (0,)
    opts: WorkerOptions = field(default_factory=options)
    max_in_flight_per_partition: int = 500
    max_in_flight: int = 1_000
    max_commit_distance: int = 100_000
    pipeline: Any = None
    clock: FakeClock | None = None
    flow_clock: FakeClock | None = None
    """The dispatcher's clock for its flow measurements (``None``: static low marks)."""
    housekeeping: Callable[[], Coroutine[Any, Any, None]] | None = None
    side_failure: BaseException | None = None
    """What the component beside the loop (the changelog watch) reports as its failure."""

    def __post_init__(self) -> None:
        self.source = FakeSource(assign=self.assign)
        if self.pipeline is None:
            self.pipeline = HeldPipeline()
        self.watermarks = Watermarks()
        self.dispatcher = Dispatcher(
            max_in_flight_per_partition=self.max_in_flight_per_partition,
            max_in_flight=self.max_in_flight,
            max_commit_distance=self.max_commit_distance,
            watermarks=self.watermarks,
            clock=None if self.flow_clock is None else self.flow_clock.monotonic,
        )
        self.gate = AuthGate(probe_interval=NEVER)
        self.breaker = PauseGate()
        self.telemetry = RecordingTelemetry()
        self.restored: list[list[int]] = []
        self.restores_ended: list[list[int]] = []
        self.dropped: list[list[int]] = []
        self.held_restores: set[int] = set()
        """Partitions whose restore waits until ``release_restore`` (or its cancellation)."""
        self.cancel_ignored = False
        """Held restores ignore their cancellation too (a changelog read stuck in a call)."""
        self._restore_released = threading.Event()
        self.restore_error: BaseException | None = None
        self.worker = Worker(
            source=self.source,
            pipeline=self.pipeline,
            dispatcher=self.dispatcher,
            watermarks=self.watermarks,
            gate=self.gate,
            restore=self._restore,
            drop=self.dropped.append,
            telemetry=self.telemetry,
            options=self.opts,
            settle_writes=self._settle_writes,
            housekeeping=self.housekeeping,
            monotonic=time.monotonic if self.clock is None else self.clock.monotonic,
            breaker=self.breaker,
            side_failure=lambda: self.side_failure,
        )

    @property
    def held(self) -> HeldPipeline:
        assert isinstance(self.pipeline, HeldPipeline)
        return self.pipeline

    def _settle_writes(self, partitions: list[int], timeout: float) -> int:
        self.source.actions.append(("settle_writes", (partitions, timeout)))
        return 0

    def _restore(self, partitions: list[int], cancel: RestoreCancel) -> int:
        # Runs on a thread of its own, as the changelog read does.
        self.restored.append(partitions)
        if self.held_restores & set(partitions):
            deadline = time.monotonic() + DEADLINE
            while not self._restore_released.wait(0.005):
                if not self.cancel_ignored and all(cancel.cancelled(p) for p in partitions):
                    break
                assert time.monotonic() < deadline, "a held restore was never released"
        self.restores_ended.append(partitions)
        if self.restore_error is not None:
            raise self.restore_error
        return 0

    def release_restore(self) -> None:
        self._restore_released.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[asyncio.Task[RunStats]]:
        """Run the worker until the block ends; yields once the initial assignment is applied.

        On the way out it stops the worker and finishes every held record, so a failed test
        never leaves work behind.
        """
        task = asyncio.create_task(self.worker.run())
        try:
            await self.source.until(lambda: self.source.assigned == set(self.assign))
            await self.source.until(lambda: not self.worker.restoring)
            await self.source.passes()
            yield task
        finally:
            self.worker.stop()
            if isinstance(self.pipeline, HeldPipeline):
                self.pipeline.release_all()
            self.release_restore()
            if not task.done():
                await asyncio.wait_for(task, DEADLINE)

    def records(self, partition: int, *offsets: int, key: bytes | None = None) -> list[Record]:
        """Records of ``partition`` at ``offsets``, each on its own key unless ``key`` is given."""
        records = [make_record(partition, o, key) for o in offsets]
        self.source.add(*records)
        return records


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


# --- back-pressure -----------------------------------------------------------------------------


def test_a_partition_with_full_lanes_pauses_and_resumes_at_half() -> None:
    """At max_in_flight_per_partition in flight the partition pauses; at half it resumes. The
    log says which partitions each change paused and resumed (the first: the restored
    partition starts fetching)."""

    async def scenario() -> None:
        h = Harness(opts=options(max_poll_records=4), max_in_flight_per_partition=4)
        with capture_logs() as logs:
            await _pause_and_resume(h)
        changes = [
            (e["event"], e["partitions"], e["paused"])
            for e in logs
            if e["event"] in {"partitions_paused", "partitions_resumed"}
        ]
        assert changes == [
            ("partitions_resumed", [0], []),  # restored: fetching starts
            ("partitions_paused", [0], [0]),
            ("partitions_resumed", [0], []),
        ]

    async def _pause_and_resume(h: Harness) -> None:
        async with h.running():
            mark = len(h.source.actions)
            h.records(0, 0, 1, 2, 3, 4)
            await h.source.until(lambda: 0 in h.source.paused)
            await h.source.passes()
            expected: object = ([(0, 0), (0, 1), (0, 2), (0, 3)], 1)
            actual = (h.held.started, h.source.pending(0))
            assert expected == actual
            h.held.finish(0, 0)
            await h.source.until(lambda: h.dispatcher.in_flight(0) == 3)
            await h.source.passes()
            assert 0 in h.source.paused, "3 in flight: above the resume mark (2)"
            h.held.finish(0, 1)
            await h.source.until(lambda: len(h.held.started) == 5)
            await h.source.passes()
            expected = [("pause", [0]), ("resume", [0])]
            assert expected == [a for a in h.source.actions[mark:] if a[0] in {"pause", "resume"}]

    run(scenario)


def test_intake_resumes_before_the_pipeline_runs_dry() -> None:
    """Draining at 20 records/s with a 0.5 s refill, a partition paused at 10 in flight resumes
    at 8 (not at half), and its next records are fetched before its lanes are empty."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(
            opts=options(max_poll_records=10), max_in_flight_per_partition=10, flow_clock=clock
        )
        async with h.running():
            h.records(0, *range(30))
            await h.source.until(lambda: 0 in h.source.paused)
            await h.source.passes()
            assert len(h.held.started) == 10
            h.held.finish(0, 0)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.dispatcher.in_flight(0) == 8)
            clock.advance(0.1)
            await h.source.until(lambda: h.source.handed[0] > 10)
            assert h.held.finished == [(0, 0), (0, 1)], "fetched again with 8 still in flight"

    run(scenario)


def test_a_partition_below_its_mark_keeps_fetching_while_a_full_one_is_paused() -> None:
    """Per-partition pause: partition 0 full and paused, partition 1 still receives records."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1), opts=options(max_poll_records=4), max_in_flight_per_partition=4)
        async with h.running():
            h.records(0, *range(6))
            await h.source.until(lambda: h.source.paused == {0})
            h.records(1, 0, 1, 2)
            await h.source.until(lambda: h.source.handed.get(1, 0) == 3)
            assert (h.source.paused, h.source.handed[0]) == ({0}, 4)

    run(scenario)


def test_records_received_while_paused_stay_within_the_bound_plus_one_poll_batch() -> None:
    """With low marks just under the high ones (fast drain), intake flaps at the bound, yet
    the records in flight never exceed max_in_flight plus one poll batch."""

    async def scenario() -> None:
        clock, batch, bound = FakeClock(), 4, 6
        h = Harness(
            assign=(0, 1),
            opts=options(max_poll_records=batch),
            max_in_flight=bound,
            max_in_flight_per_partition=100,
            flow_clock=clock,
        )
        async with h.running():
            h.records(0, *range(40))
            h.records(1, *range(40))
            await h.source.until(lambda: h.source.paused == {0, 1})
            for _ in range(30):
                running = h.held.running()
                h.held.finish(*running[0])
                clock.advance(0.1)
                await h.source.passes()
            received = sum(h.source.handed.values())
            assert received > bound + batch, "intake went on"
            assert max(h.telemetry.in_flight_counts) <= bound + batch

    run(scenario)


def test_a_stuck_record_pauses_its_partition_at_the_commit_distance_bound() -> None:
    """Finished records behind one unfinished record count: at max_commit_distance the
    partition pauses although little is in flight, and resumes once the record finishes."""

    async def scenario() -> None:
        h = Harness(opts=options(max_poll_records=4), max_commit_distance=4)
        async with h.running():
            h.records(0, 0, 1, 2, 3, 4, 5)
            await h.source.until(lambda: len(h.held.started) == 4)
            for offset in (1, 2, 3):
                h.held.finish(0, offset)
            await h.source.until(lambda: h.dispatcher.in_flight(0) == 1)
            await h.source.passes(3)
            expected: object = (4, {0}, 0)
            actual: object = (h.source.handed[0], h.source.paused, h.source.highest_position(0))
            assert expected == actual
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.handed[0] == 6)

    run(scenario)


def test_everything_pauses_while_the_auth_gate_is_closed() -> None:
    """A closed auth gate pauses every assigned partition while a record (the prober) is in
    flight; opening it resumes them."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1))
        async with h.running():
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            mark = len(h.source.actions)
            h.gate.close()
            await h.source.until(lambda: h.source.paused == {0, 1})
            h.records(0, 1)
            h.records(1, 0)
            await h.source.passes(2)
            expected: object = ([(0, 0)], (1, 1), (True,))
            actual: object = (
                h.held.started,
                (h.source.pending(0), h.source.pending(1)),
                h.telemetry.named("auth_paused")[-1],
            )
            assert expected == actual
            h.gate.open()
            await h.source.until(lambda: len(h.held.started) == 3)
            await h.source.passes()
            expected = ([("pause", [0, 1]), ("resume", [0, 1])], (False,))
            actual = (
                [a for a in h.source.actions[mark:] if a[0] in {"pause", "resume"}],
                h.telemetry.named("auth_paused")[-1],
            )
            assert expected == actual

    run(scenario)


def test_everything_pauses_while_the_circuit_breaker_holds_requests() -> None:
    """While the breaker is open (Button pushes back or is down) every partition pauses and
    nothing new is fetched while a record waits at it (that record probes Button); the
    breaker's state and reason are reported; when it closes the partitions resume."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1))
        async with h.running():
            h.records(1, 0)  # in flight: it waits at the breaker and probes Button
            await h.source.until(lambda: h.held.started == [(1, 0)])
            h.breaker.close("http_429")
            await h.source.until(lambda: h.source.paused == {0, 1})
            h.records(0, 0)
            await h.source.passes(2)
            held = (h.held.started, h.source.pending(0), h.telemetry.named("breaker")[-1])
            assert held == ([(1, 0)], 1, (True, "http_429"))
            h.breaker.open()
            await h.source.until(lambda: len(h.held.started) == 2)
            await h.source.passes()
            assert (h.source.paused, h.telemetry.named("breaker")[-1]) == (set(), (False, ""))

    run(scenario)


def test_with_the_auth_gate_closed_and_nothing_in_flight_one_batch_is_fetched_to_probe() -> None:
    """Only a record in flight probes whether Button accepts the key again: when none is left
    (its partition was revoked), one poll batch is fetched, then everything pauses again."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1), opts=options(max_poll_records=2))
        async with h.running():
            h.gate.close()
            await h.source.until(lambda: h.telemetry.named("auth_paused")[-1] == (True,))
            await h.source.passes()
            h.records(0, 0, 1, 2)
            h.records(1, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 2)
            await h.source.until(lambda: h.source.paused == {0, 1})
            await h.source.passes(3)
            assert sum(h.source.handed.values()) == 2

    run(scenario)


def test_a_partition_assigned_while_the_auth_gate_is_closed_receives_nothing() -> None:
    """A partition newly assigned during the auth pause is paused before its first fetch."""

    async def scenario() -> None:
        h = Harness(assign=(0,))
        async with h.running():
            h.records(0, 0)  # in flight: it probes Button while the gate is closed
            await h.source.until(lambda: h.held.started == [(0, 0)])
            h.gate.close()
            await h.source.until(lambda: h.source.paused == {0})
            h.records(1, 0, 1, 2)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.passes(3)
            expected: object = (0, [(0, 0)], {0, 1})
            actual: object = (h.source.handed.get(1, 0), h.held.started, h.source.paused)
            assert expected == actual
            h.gate.open()
            await h.source.until(lambda: len(h.held.started) == 4)
            assert h.source.handed[1] == 3

    run(scenario)


def test_a_partition_assigned_while_the_total_bound_is_reached_receives_nothing() -> None:
    """With max_in_flight records in flight, a newly assigned partition stays paused."""

    async def scenario() -> None:
        h = Harness(assign=(0,), max_in_flight_per_partition=10, max_in_flight=2)
        async with h.running():
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 2)
            await h.source.until(lambda: h.source.paused == {0})
            h.records(1, 0, 1, 2)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.passes(3)
            expected: object = (0, {0, 1})
            actual: object = (h.source.handed.get(1, 0), h.source.paused)
            assert expected == actual
            h.held.finish(0, 0)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.source.handed.get(1, 0) == 3)

    run(scenario)


# --- finished offsets --------------------------------------------------------------------------


def test_only_finished_offsets_are_stored() -> None:
    """Record 1 finishing first stores nothing past 0; all finished stores 3 (the next offset)."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.watermarks.in_flight(0) == 2)
            await h.source.passes()
            expected: object = 0
            actual: object = h.source.highest_position(0)
            assert expected == actual
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 2)
            h.held.finish(0, 2)
            await h.source.until(lambda: h.source.last_stored(0) == 3)
            expected = [0, 2, 3]
            actual = h.source.stored[0]
            assert expected == actual

    run(scenario)


def test_the_end_of_a_partition_past_its_last_record_is_stored_once_every_record_finished() -> None:
    """A transactional producer's commit marker (offset 2 here, after records 0 and 1) is never
    handed out: once both records are finished, the partition's end (3) is stored and
    committed, not the last record's offset + 1, so the group's lag drains to 0. Not before:
    an unfinished record holds it."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 0, 1)
            h.source.log_ends[0] = 3
            await h.source.until(lambda: h.held.started == [(0, 0), (0, 1)])
            h.held.finish(0, 1)
            await h.source.passes(2)
            assert h.source.highest_position(0) == 0
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 3)
            assert h.source.actions_named("commit_stored") == [("commit_stored", {0: 3})]

    run(scenario)


def test_inert_records_are_finished_as_they_arrive_without_a_task() -> None:
    """A view or open that can change nothing needs neither its key's lane nor Button: it is
    finished in the poll loop as it arrives, also behind a held record of its own key, and its
    offset is stored once every offset below it is finished. A poll batch's inert records are
    reported together, in one call."""

    async def scenario() -> None:
        pipeline = HeldPipeline(inert={(0, 1), (0, 2), (0, 4)})
        h = Harness(pipeline=pipeline)
        async with h.running():
            h.source.add(
                make_record(0, 0, b"user-a"),
                make_record(0, 1, b"user-a"),  # inert, behind the held offset 0 of its key
                make_record(0, 2, b"user-b"),  # inert
                make_record(0, 3, b"user-c"),
                make_record(0, 4, b"user-a"),  # inert
            )
            await h.source.until(lambda: len(pipeline.finished_inert) == 3)
            await h.source.passes()
            expected: object = ([(0, 0), (0, 3)], [(0, 1), (0, 2), (0, 4)], [3], 2, 2)
            actual: object = (
                pipeline.started,
                pipeline.finished_inert,
                pipeline.inert_batches,
                h.dispatcher.active_lanes,
                h.dispatcher.total_in_flight(),
            )
            assert expected == actual
            pipeline.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 3)
            pipeline.finish(0, 3)
            await h.source.until(lambda: h.source.last_stored(0) == 5)
            expected = [0, 3, 5]
            actual = h.source.stored[0]
            assert expected == actual

    run(scenario)


def test_a_record_waiting_for_the_schema_registry_holds_only_its_key_and_offset() -> None:
    """While the registry is away its record waits; other keys flow, the stored offset holds."""

    class RegistryOutage:
        """Records of an unknown schema wait for the registry; the others finish at once."""

        def __init__(self) -> None:
            self.registry_up = asyncio.Event()
            self.handled: list[int] = []

        def triage(self, record: Record) -> None:
            return None  # everything takes the full path

        async def handle(self, record: Record, event: object = None) -> str:
            if record.value == UNKNOWN_SCHEMA:
                await self.registry_up.wait()
            self.handled.append(record.offset)
            return "delivered"

    async def scenario() -> None:
        pipeline = RegistryOutage()
        h = Harness(pipeline=pipeline)
        async with h.running():
            h.source.add(
                make_record(0, 0, b"user-a", UNKNOWN_SCHEMA),
                make_record(0, 1, b"user-b"),
                make_record(0, 2, b"user-a"),  # same key: must wait behind offset 0
                make_record(0, 3, b"user-c"),
            )
            await h.source.until(lambda: pipeline.handled == [1, 3])
            await h.source.passes()
            expected: object = ([1, 3], 0)
            actual: object = (pipeline.handled, h.source.highest_position(0))
            assert expected == actual
            pipeline.registry_up.set()
            await h.source.until(lambda: h.source.last_stored(0) == 4)
            expected = [1, 3, 0, 2]
            actual = pipeline.handled
            assert expected == actual

    run(scenario)


def test_records_handed_out_again_below_the_received_position_are_dropped() -> None:
    """The Kafka client can rewind a partition after a pause and resume (librdkafka restarts the
    fetch where the assignment started) and hand out offsets this assignment already received:
    those are dropped and counted, never handled twice; the loop goes on and the records after
    them flow and are committed once."""

    async def scenario() -> None:
        h = Harness()
        async with h.running() as task:
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 0)
            h.records(0, 0, 1, 2, 3)  # rewound to 0: 0, 1 and 2 again, then the new 3
            await h.source.until(lambda: len(h.held.started) == 4 or task.done())
            await h.source.passes()
            assert not task.done(), "the loop stopped on a redelivered offset"
            expected: object = ([(0, 0), (0, 1), (0, 2), (0, 3)], [(0, 3)], (7, 3))
            actual: object = (
                h.held.started,
                h.telemetry.named("records_redelivered"),
                (h.worker.stats.received, h.worker.stats.redelivered),
            )
            assert expected == actual
            for offset in (1, 2, 3):
                h.held.finish(0, offset)
            await h.source.until(lambda: h.source.last_stored(0) == 4)
            expected = [0, 1, 4]
            actual = h.source.stored[0]
            assert expected == actual

    run(scenario)


def test_a_partition_started_over_is_logged_as_part_of_starting_not_as_a_warning() -> None:
    """librdkafka (2.16) starts a partition without a committed offset over at its first offset
    once more when a resume overtook its lookup of ``auto.offset.reset``'s offset (a new
    group's first run): the records handed out again from the assignment's first offset on,
    in as many batches as the refetch takes, are dropped and counted like any, and logged at
    info (``from_start``), never as a warning."""

    async def scenario() -> None:
        h = Harness()
        with capture_logs() as logs:
            async with h.running():
                h.records(0, 5, 6, 7, 8)
                await h.source.until(lambda: len(h.held.started) == 4)
                h.records(0, 5, 6)  # started over at the first offset received
                await h.source.until(lambda: h.worker.stats.redelivered == 2)
                h.records(0, 7, 8, 9)  # the same refetch, then the new 9
                await h.source.until(lambda: len(h.held.started) == 5)
        lines = [
            (e["log_level"], e["first"], e["last"], e["from_start"])
            for e in logs
            if e["event"] == "records_redelivered"
        ]
        assert lines == [("info", 5, 6, True), ("info", 7, 8, True)]
        assert (h.worker.stats.received, h.worker.stats.redelivered) == (9, 4)

    run(scenario)


def test_a_partition_rewound_elsewhere_than_its_start_is_a_warning() -> None:
    """Records handed out again from an offset after the assignment's first one are no part of
    starting (librdkafka's truncation detection moves a position back without a line of its
    own): dropped, counted and logged as a warning."""

    async def scenario() -> None:
        h = Harness()
        with capture_logs() as logs:
            async with h.running():
                h.records(0, 5, 6, 7, 8)
                await h.source.until(lambda: len(h.held.started) == 4)
                h.records(0, 7, 8)
                await h.source.until(lambda: h.worker.stats.redelivered == 2)
        lines = [
            (e["log_level"], e["first"], e["last"], e["from_start"])
            for e in logs
            if e["event"] == "records_redelivered"
        ]
        assert lines == [("warning", 7, 8, False)]

    run(scenario)


def test_records_below_the_received_position_after_an_offset_reset_are_new() -> None:
    """After the Kafka client reset a partition's fetch position (``offsets_reset``: the input
    topic deleted and created again, its offsets start at 0 again), the records at or below
    the offset already received are new: handled, not dropped. The commit position waits for
    the earlier records still in flight, then follows the new offsets (below the old ones); a
    record handed out again after that is dropped as before."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 10, 11, 12)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 10)
            await h.source.until(lambda: h.source.last_stored(0) == 11)
            h.source.reset_offsets(0)
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 5)
            h.held.finish(0, 0)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.held.finished[-1] == (0, 1))
            await h.source.passes()
            expected: object = ([10, 11], [])  # held: 11 and 12 of the earlier offsets in flight
            actual: object = (h.source.stored[0], h.telemetry.named("records_redelivered"))
            assert expected == actual
            h.held.finish(0, 11)
            h.held.finish(0, 12)
            await h.source.until(lambda: h.source.last_stored(0) == 2)
            h.records(0, 1, 2)  # 1 handed out again, 2 new
            await h.source.until(lambda: len(h.held.started) == 6)
            await h.source.passes()
            expected = ([(0, 10), (0, 11), (0, 12), (0, 0), (0, 1), (0, 2)], [(0, 1)], [10, 11, 2])
            actual = (
                h.held.started,
                h.telemetry.named("records_redelivered"),
                h.source.stored[0],
            )
            assert expected == actual

    run(scenario)


def test_an_offset_reset_in_the_middle_of_a_batch_restarts_the_partition_there() -> None:
    """Records fetched before the reset (above the offsets received) and after it (from the new
    start) can come in one poll: the earlier offsets are handled as such, and the partition
    restarts at the first record below them."""

    async def scenario() -> None:
        h = Harness()
        async with h.running() as task:
            h.records(0, 10, 11)
            await h.source.until(lambda: len(h.held.started) == 2)
            h.source.reset_offsets(0)
            h.records(0, 12, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 5 or task.done())
            assert not task.done(), "the loop stopped on the batch"
            for offset in (10, 11, 12, 0, 1):
                h.held.finish(0, offset)
            await h.source.until(lambda: h.source.last_stored(0) == 2)
            expected: object = ([(0, 10), (0, 11), (0, 12), (0, 0), (0, 1)], [])
            actual: object = (h.held.started, h.telemetry.named("records_redelivered"))
            assert expected == actual

    run(scenario)


def test_an_end_met_in_the_pass_that_restarts_a_partition_is_not_committed() -> None:
    """The fetcher may report the end it reached before the reset (31 here) in the poll that
    hands out the records from the new start: applied to the new offsets, it would commit 31
    once they finished, past the new records still to come."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 30)
            await h.source.until(lambda: len(h.held.started) == 1)
            h.held.finish(0, 30)
            await h.source.until(lambda: h.source.last_stored(0) == 31)
            h.source.reset_offsets(0)
            h.source.log_ends[0] = 31
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 0)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.source.last_stored(0) == 2)
            await h.source.passes(2)
            expected = [30, 31, 0, 2]
            actual = h.source.stored[0]
            assert expected == actual

    run(scenario)


# --- rebalances --------------------------------------------------------------------------------


# --- restore beside the loop ------------------------------------------------------------------


def test_the_loop_keeps_polling_while_a_restore_runs_and_its_partition_waits_for_it() -> None:
    """A partition's restore runs beside the poll loop: polling (hence liveness and the other
    partitions' records) goes on, and none of the partition's records is fetched or processed
    before its restore has completed."""

    async def scenario() -> None:
        h = Harness(assign=(0,))
        async with h.running():
            h.held_restores.add(1)
            h.records(1, 0, 1)
            assigned = h.source.assign([1])
            await h.source.until(lambda: [1] in h.restored)
            await asyncio.wait_for(assigned, DEADLINE)  # the callback does not wait for it
            await h.source.passes(3)  # the loop polls while the restore is held
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            await h.source.passes(2)
            expected: object = ({1}, 0, [(0, 0)], {1}, [[0]])
            actual: object = (
                h.worker.restoring,
                h.source.handed.get(1, 0),
                h.held.started,
                h.source.paused,
                h.restores_ended,
            )
            assert expected == actual
            h.release_restore()
            await h.source.until(lambda: len(h.held.started) == 3)
            assert sorted(h.held.started) == [(0, 0), (1, 0), (1, 1)]
            assert h.worker.restoring == frozenset()

    run(scenario)


def test_a_partition_revoked_while_its_restore_runs_is_cancelled_and_never_processed() -> None:
    """Revoke (or loss) during the restore cancels it: the revoke does not wait for the whole
    restore, nothing of the partition is processed or committed, and its profiles are
    dropped."""

    async def scenario() -> None:
        h = Harness(assign=(0,))
        async with h.running():
            h.held_restores.add(1)
            h.records(1, 0)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.until(lambda: [1] in h.restored)
            await asyncio.wait_for(h.source.revoke([1]), DEADLINE)
            await h.source.passes(2)
            expected: object = ([[0], [1]], [[1], [1]], 0, [], frozenset(), [])
            actual: object = (
                h.restores_ended,
                h.dropped,
                h.source.handed.get(1, 0),
                h.held.started,
                h.worker.restoring,
                [a for a in h.source.actions_named("commit_now") if 1 in a[1]],
            )
            assert expected == actual
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])

    run(scenario)


def test_a_partition_lost_while_its_restore_runs_is_cancelled() -> None:
    async def scenario() -> None:
        h = Harness(assign=(0,))
        async with h.running():
            h.held_restores.add(1)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.until(lambda: [1] in h.restored)
            await asyncio.wait_for(h.source.lose([1]), DEADLINE)
            expected: object = ([[0], [1]], [[1], [1]], frozenset())
            assert expected == (h.restores_ended, h.dropped, h.worker.restoring)

    run(scenario)


def test_a_failed_restore_stops_the_loop_with_its_error() -> None:
    """A restore that fails (the changelog cannot be read) stops the service, as an error in
    the assignment callback did: a partition is never processed without its profiles."""

    async def scenario() -> None:
        h = Harness(assign=(0,))
        async with h.running() as task:
            h.restore_error = ConsumerError("changelog unreadable")
            h.records(1, 0)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            with pytest.raises(ConsumerError, match="changelog unreadable"):
                await asyncio.wait_for(task, DEADLINE)
            assert h.source.handed.get(1, 0) == 0

    run(scenario)


def test_revoke_waits_for_in_flight_work_then_commits_and_drops() -> None:
    """Revoke drops queued records, waits for running ones, commits the finished offset, drops."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1))
        async with h.running():
            h.source.add(
                make_record(0, 0, b"a"),
                make_record(0, 1, b"b"),
                make_record(0, 2, b"a"),  # queued behind offset 0
                make_record(1, 0, b"c"),
            )
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.watermarks.in_flight(0) == 2)
            revoked = h.source.revoke([0])
            # The revocation has begun once the queued record is dropped; it cannot end
            # before offset 0 finishes.
            await h.source.until(lambda: h.dispatcher.in_flight(0) == 1)
            expected: object = (False, [], [])
            actual: object = (revoked.done(), h.source.actions_named("commit_now"), h.dropped)
            assert expected == actual
            h.held.finish(0, 0)
            await asyncio.wait_for(revoked, DEADLINE)
            expected = ([("commit_now", {0: 2})], [[0]], [(0, 0), (0, 1), (1, 0)])
            actual = (h.source.actions_named("commit_now"), h.dropped, sorted(h.held.started))
            assert expected == actual
            h.held.finish(1, 0)
            await h.source.until(lambda: h.source.last_stored(1) == 1)

    run(scenario)


def test_revoke_settles_its_writes_then_stores_then_commits_the_final_offsets() -> None:
    """The revoked partition's writes (abandoned jobs') are waited for, and the final offsets
    stored before the commit
    (librdkafka commits a removed partition's stored offset afterwards: it must not be older)."""

    async def scenario() -> None:
        h = Harness(opts=options(revoke_timeout=0.05))
        async with h.running():
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            h.held.finish(0, 1)  # finished, but the loop may not have stored 2 yet
            await asyncio.wait_for(h.source.revoke([0]), DEADLINE)
            tail = h.source.actions_named("settle_writes", "store_now", "commit_now")
            expected: object = [
                ("settle_writes", ([0], 10.0)),
                ("store_now", {0: 2}),
                ("commit_now", {0: 2}),
            ]
            assert expected == tail[-3:]

    run(scenario)


def test_lost_partitions_settle_their_writes() -> None:
    """A lost partition's cancelled writes are waited for (its own only), not left queued."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            await asyncio.wait_for(h.source.lose([0]), DEADLINE)
            expected: object = ([("settle_writes", ([0], 10.0))], [])
            actual: object = (
                h.source.actions_named("settle_writes"),
                h.source.actions_named("store_now", "commit_now"),
            )
            assert expected == actual

    run(scenario)


def test_revoke_at_the_deadline_abandons_and_commits_below_the_unfinished() -> None:
    """Past revoke_timeout unfinished work is cancelled; the commit stops at the lowest one."""

    async def scenario() -> None:
        h = Harness(opts=options(revoke_timeout=0.05))
        async with h.running():
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 0)
            h.held.finish(0, 2)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            await asyncio.wait_for(h.source.revoke([0]), DEADLINE)
            expected = ([("commit_now", {0: 1})], [(0, 1)], [[0]])
            actual = (h.source.actions_named("commit_now"), h.held.cancelled, h.dropped)
            assert expected == actual

    run(scenario)


def test_a_restore_that_ignores_its_cancel_uses_up_the_revoke_deadline_not_a_second_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The restore cancel and the running records' grace share one ``revoke_timeout``: the Kafka
    thread waits for the callback only ``revoke_timeout`` + 10 s, and giving up midway would
    leave the partition's records running on a member that no longer owns it. A restore stuck
    past the deadline leaves the records no grace: they are abandoned at once."""

    async def scenario() -> None:
        timeout = 0.2
        h = Harness(opts=options(revoke_timeout=timeout))
        graces: list[float] = []
        revoke = h.dispatcher.revoke

        async def recording_revoke(partitions: Any, grace: float) -> Any:
            graces.append(grace)
            return await revoke(partitions, grace)

        monkeypatch.setattr(h.dispatcher, "revoke", recording_revoke)
        async with h.running():
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            h.held_restores.add(1)
            h.cancel_ignored = True
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.until(lambda: [1] in h.restored)
            await asyncio.wait_for(h.source.revoke([0, 1]), DEADLINE)
            assert len(graces) == 1
            assert graces[0] < timeout / 2, f"grace {graces[0]} s after the restore used it up"
            assert h.held.cancelled == [(0, 0)]

    run(scenario)


def test_lost_partitions_are_dropped_without_commit() -> None:
    """Lost partitions commit nothing, are dropped, and their unfinished work is abandoned."""

    async def scenario() -> None:
        h = Harness(opts=options(revoke_timeout=0.05))
        async with h.running():
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 2)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.watermarks.in_flight(0) == 1)
            await asyncio.wait_for(h.source.lose([0]), DEADLINE)
            await h.source.passes()
            expected: tuple[Any, ...] = ([], [[0]], [(0, 0)], [0], ("lost",))
            actual = (
                h.source.actions_named("commit", "commit_now"),
                h.dropped,
                h.held.cancelled,
                h.source.stored[0],
                h.telemetry.named("rebalance")[-1],
            )
            assert expected == actual

    run(scenario)


def test_lost_partitions_abandon_in_flight_work_at_once() -> None:
    """A lost partition's running record is cancelled without waiting for revoke_timeout."""

    async def scenario() -> None:
        h = Harness()  # revoke_timeout: NEVER
        async with h.running():
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            await asyncio.wait_for(h.source.lose([0]), DEADLINE)
            expected = ([(0, 0)], [[0]])
            actual = (h.held.cancelled, h.dropped)
            assert expected == actual

    run(scenario)


# --- housekeeping --------------------------------------------------------------------------------


def test_housekeeping_runs_beside_the_poll_loop_and_is_cancelled_at_stop() -> None:
    """Profile expiry that takes long (a storm of tombstones) never stops polling."""

    async def scenario() -> None:
        clock = FakeClock()
        started = asyncio.Event()
        cancelled: list[bool] = []

        async def slow_housekeeping() -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # never ends by itself
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        h = Harness(
            opts=options(housekeeping_interval=60.0), clock=clock, housekeeping=slow_housekeeping
        )
        async with h.running():
            clock.advance(61.0)
            await asyncio.wait_for(started.wait(), DEADLINE)
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            clock.advance(61.0)
            await h.source.passes(2)  # still running: not started a second time
        assert cancelled == [True]

    run(scenario)


# --- committing when drained ---------------------------------------------------------------------


def test_finished_offsets_are_committed_at_once_when_nothing_is_left_in_flight() -> None:
    """The periodic commit (every second) would leave the last offsets of a burst uncommitted
    for up to a second: once nothing is in flight, what was stored is committed at once (without
    waiting for the broker). While records are still in flight, storing is enough."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 0, 1)
            await h.source.until(lambda: h.held.started == [(0, 0), (0, 1)])
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            await h.source.passes(2)
            assert h.source.actions_named("commit_stored") == [], "one record is in flight"
            h.held.finish(0, 1)
            await h.source.until(lambda: h.source.last_stored(0) == 2)
            assert h.source.actions_named("commit_stored") == [("commit_stored", {0: 2})]

    run(scenario)


def stored_up_to(h: Harness, offset: int) -> bool:
    return h.source.last_stored(0) == offset


def test_a_drained_commit_comes_at_most_once_per_drain_commit_interval() -> None:
    """At low traffic every record drains the pipeline: a commit per record would write to
    ``__consumer_offsets`` at the rate records arrive. Drains within ``drain_commit_interval``
    (0.1 s, Kafka Streams' commit interval under exactly-once) of the last drained commit only
    store their offsets, and the first loop pass after the interval commits them."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(opts=options(drain_commit_interval=0.1), clock=clock)
        async with h.running():
            for offset in range(3):
                h.records(0, offset)
                await h.source.until(partial(operator.contains, h.held.started, (0, offset)))
                h.held.finish(0, offset)
                await h.source.until(partial(stored_up_to, h, offset + 1))
            await h.source.passes(2)
            assert h.source.actions_named("commit_stored") == [("commit_stored", {0: 1})]
            clock.advance(0.1)
            await h.source.until(lambda: len(h.source.actions_named("commit_stored")) == 2)
            await h.source.passes(2)
            assert h.source.actions_named("commit_stored") == [
                ("commit_stored", {0: 1}),
                ("commit_stored", {0: 3}),
            ]

    run(scenario)


# --- the lag read --------------------------------------------------------------------------------


def test_a_lag_read_that_does_not_answer_never_stops_polling() -> None:
    """The lag read (committed and end offsets from the brokers, every ``lag_interval``) runs
    beside the poll loop: while its group coordinator or a partition leader does not answer,
    records are still fetched and finished offsets stored; one read at a time; cancelled at
    stop."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(opts=options(lag_interval=5.0), clock=clock)
        h.source.lag_hold = asyncio.Event()
        async with h.running():
            clock.advance(5.0)
            await h.source.until(lambda: h.source.lag_reads == 1)
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            clock.advance(5.0)
            await h.source.passes(2)
            assert h.source.lag_reads == 1, "a second read started while the first waits"
            h.source.lag_hold.set()
            await h.source.until(lambda: len(h.telemetry.named("lags")) == 1)
            clock.advance(5.0)
            await h.source.until(lambda: h.source.lag_reads == 2)
            h.source.lag_hold.clear()
            clock.advance(5.0)
            await h.source.until(lambda: h.source.lag_reads == 3)
        # The third read was still waiting at stop: cancelled, the worker stopped.
        assert h.source.closed

    run(scenario)


def test_a_lag_read_that_ends_after_a_revoke_reports_only_what_is_still_assigned() -> None:
    """The read runs beside the loop, so a rebalance may revoke a partition meanwhile: its lag
    is not reported again (its gauge would come back for a partition another member owns)."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(assign=(0, 1), opts=options(lag_interval=5.0), clock=clock)
        h.source.lag_hold = asyncio.Event()
        async with h.running():
            clock.advance(5.0)
            await h.source.until(lambda: h.source.lag_reads == 1)
            await asyncio.wait_for(h.source.revoke([1]), DEADLINE)
            h.source.lag_hold.set()
            await h.source.until(lambda: len(h.telemetry.named("lags")) == 1)
        assert set(h.telemetry.named("lags")[0][0]) == {0}

    run(scenario)


def test_a_partition_being_restored_is_in_the_lag_read_and_its_gauges() -> None:
    """A partition whose restore runs is owned, and its records wait: its lag is read and
    reported with the restored partitions', so the lag alerts see a long restore's backlog.
    Before, only restored partitions were read: a partition stuck restoring (a trial: 120 s,
    75 records waiting) was in no lag gauge and the summed lag said 0."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(assign=(0,), opts=options(lag_interval=5.0), clock=clock)
        async with h.running():
            h.held_restores.add(1)
            h.records(1, 0, 1, 2)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.until(lambda: [1] in h.restored)
            reads = h.source.lag_reads
            await h.source.until(lambda: len(h.telemetry.named("lags")) == reads)
            clock.advance(5.0)
            await h.source.until(lambda: len(h.telemetry.named("lags")) == reads + 1)
            assert h.worker.restoring == frozenset({1}), "the restore is held"
            assert h.telemetry.named("lags")[-1][0] == {0: 0, 1: 3}

    run(scenario)


# --- stop when idle ----------------------------------------------------------------------------


def test_stops_after_stop_when_idle_seconds_without_records() -> None:
    """With partitions assigned and nothing in flight, stop_when_idle seconds of no records stop."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(opts=options(stop_when_idle=30.0), clock=clock)
        async with h.running() as task:
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            clock.advance(29.5)
            await h.source.passes(2)
            assert not task.done(), "29.5 s idle: below the limit"
            clock.advance(0.5)
            stats = await asyncio.wait_for(task, DEADLINE)
            # Committed when the record finished (nothing left in flight), and at the stop.
            expected = (1, True, [1, 1])
            actual = (stats.received, h.source.closed, h.source.committed[0])
            assert expected == actual

    run(scenario)


def test_does_not_stop_when_idle_while_records_are_in_flight() -> None:
    """A record still in flight keeps the worker running however long no record arrived."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(opts=options(stop_when_idle=30.0), clock=clock)
        async with h.running() as task:
            h.records(0, 0)
            await h.source.until(lambda: h.held.started == [(0, 0)])
            clock.advance(300.0)
            await h.source.passes(2)
            assert not task.done()
            h.held.finish(0, 0)
            stats = await asyncio.wait_for(task, DEADLINE)
            expected = (1, [1])
            actual = (stats.received, h.source.stored[0][-1:])
            assert expected == actual

    run(scenario)


def test_does_not_stop_when_idle_before_any_partition_is_assigned() -> None:
    """Without an assignment the worker waits for one, however long that takes."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(assign=(), opts=options(stop_when_idle=30.0), clock=clock)
        async with h.running() as task:
            clock.advance(300.0)
            await h.source.passes(2)
            assert not task.done()

    run(scenario)


def test_idle_time_counts_from_the_assignment() -> None:
    """A late assignment gets stop_when_idle seconds to deliver its first records."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(assign=(), opts=options(stop_when_idle=30.0), clock=clock)
        async with h.running() as task:
            clock.advance(300.0)
            await h.source.passes()
            h.records(0, 0)
            await asyncio.wait_for(h.source.assign([0]), DEADLINE)
            await h.source.until(lambda: task.done() or bool(h.held.started))
            expected = (False, [(0, 0)])
            actual = (task.done(), h.held.started)
            assert expected == actual

    run(scenario)


def test_does_not_stop_when_idle_while_a_paused_partition_holds_records() -> None:
    """A partition held paused (nothing in flight, records waiting in Kafka) longer than
    stop_when_idle does not stop the run: once resumed, everything drains, then it stops."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(opts=options(stop_when_idle=30.0), clock=clock)
        async with h.running() as task:
            h.breaker.close("http_503")
            await h.source.passes()
            h.records(0, *range(10))
            await h.source.passes(2)
            assert h.source.paused == {0}
            clock.advance(300.0)
            await h.source.passes(2)
            assert not task.done(), "stopped with records waiting"
            h.breaker.open()
            await h.source.until(lambda: len(h.held.started) == 10)
            for offset in range(10):
                h.held.finish(0, offset)
            await h.source.until(lambda: h.source.last_stored(0) == 10)
            clock.advance(30.0)
            stats = await asyncio.wait_for(task, DEADLINE)
            expected = (10, 0, 10)
            actual = (stats.received, h.source.pending(0), h.source.highest_position(0))
            assert expected == actual

    run(scenario)


def test_does_not_stop_when_idle_while_records_wait_in_kafka() -> None:
    """Records behind the source's position (the high watermark it knows is ahead) keep the
    run going, e.g. just after a long restore, before the first fetch returned them."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(opts=options(stop_when_idle=30.0), clock=clock)
        async with h.running() as task:
            h.source.unfetched[0] = 5
            clock.advance(300.0)
            await h.source.passes(2)
            assert not task.done()
            h.source.unfetched[0] = 0
            clock.advance(30.0)
            await asyncio.wait_for(task, DEADLINE)

    run(scenario)


# --- failures ----------------------------------------------------------------------------------


def test_a_failing_job_stops_the_loop_and_its_offset_is_never_committed() -> None:
    """A record whose dead letter cannot be written stops run() with that error; 0 stays put."""

    async def scenario() -> None:
        h = Harness()
        async with h.running() as task:
            h.source.add(
                make_record(0, 0, b"a"),
                make_record(0, 1, b"b"),
                make_record(0, 2, b"a"),  # queued behind the failing record
            )
            await h.source.until(lambda: len(h.held.started) == 2)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.watermarks.in_flight(0) == 2)
            h.held.fail(0, 0, DeadLetterError("dead-letter topic: message timed out"))
            with pytest.raises(DeadLetterError, match="message timed out"):
                await asyncio.wait_for(task, DEADLINE)
            expected = (0, [(0, 0), (0, 1)], True)
            actual = (h.source.highest_position(0), h.held.started, h.source.closed)
            assert expected == actual

    run(scenario)


def test_a_failure_beside_the_loop_stops_it_with_that_error_after_its_drain() -> None:
    """The changelog watch died (``side_failure``): the loop stops taking records as for a
    failed restore, drains what is in flight within its shutdown budget, commits it, and run()
    raises the error (the process exits; its pod restarts with a watch instead of running on
    without one). A record polled after the failure is not started."""

    async def scenario() -> None:
        h = Harness()
        async with h.running() as task:
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 2)
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            h.side_failure = RuntimeError("changelog watch: consumer closed")
            await h.source.until(lambda: bool(h.source.actions_named("pause")))  # the shutdown
            h.records(0, 2)
            h.held.finish(0, 1)
            with pytest.raises(RuntimeError, match="changelog watch"):
                await asyncio.wait_for(task, DEADLINE)
            assert (h.source.highest_position(0), h.source.closed, h.held.started) == (
                2,
                True,
                [(0, 0), (0, 1)],
            )

    run(scenario)


# --- telemetry ---------------------------------------------------------------------------------


def test_in_flight_gauge_returns_to_zero_once_every_record_finished() -> None:
    """The worker reports the records in flight, and 0 once each of them finished."""

    async def scenario() -> None:
        h = Harness()
        async with h.running():
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            for offset in (2, 0, 1):
                h.held.finish(0, offset)
            await h.source.until(lambda: h.source.last_stored(0) == 3)
            await h.source.passes()
            counts = h.telemetry.in_flight_counts
            expected = (3, 0)
            actual = (max(counts), counts[-1])
            assert expected == actual

    run(scenario)


def test_in_flight_gauge_returns_to_zero_after_a_revoke_abandons_work() -> None:
    """Records abandoned at revocation never finish, yet the gauge goes back to 0."""

    async def scenario() -> None:
        h = Harness(opts=options(revoke_timeout=0.05))
        async with h.running():
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 2)
            await asyncio.wait_for(h.source.revoke([0]), DEADLINE)
            await h.source.passes()
            counts = h.telemetry.in_flight_counts
            expected = (2, 0, [(0, 0), (0, 1)])
            actual = (max(counts), counts[-1], h.held.cancelled)
            assert expected == actual

    run(scenario)


# --- shutdown ----------------------------------------------------------------------------------


def test_stop_pauses_drains_then_stores_commits_and_closes() -> None:
    """stop() pauses, waits for in-flight work, stores and commits the finished offset, closes."""

    async def scenario() -> None:
        h = Harness()
        async with h.running() as task:
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 0)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            mark = len(h.source.actions)
            h.worker.stop()
            await h.source.until(lambda: ("stopping", ()) in h.telemetry.calls)
            await h.source.until(lambda: h.source.paused == {0})
            expected: object = (False, False)
            actual: object = (task.done(), h.source.closed)
            assert expected == actual
            h.held.finish(0, 1)
            h.held.finish(0, 2)
            stats = await asyncio.wait_for(task, DEADLINE)
            expected = [
                ("pause", [0]),
                ("store", {0: 3}),
                ("commit", {0: 3}),
                # close() leaves the group: its revocation neither flushes (the service's own
                # phase does) nor commits again what the shutdown committed.
                ("close", None),
            ]
            expected = (expected, 3)
            actual = (h.source.actions[mark:], stats.received)
            assert expected == actual

    run(scenario)


def test_a_failed_shutdown_commit_still_closes_and_is_never_logged_as_committed() -> None:
    """The shutdown's commit fails (the coordinator does not answer within the commit's share
    of the budget): the source is still closed, and the revocation close() triggers neither
    waits on a commit of its own (unbounded inside the callback) nor reports as committed
    offsets whose commit failed; it stores them for librdkafka's commit as it leaves."""

    async def scenario() -> None:
        h = Harness()
        async with h.running() as task:
            h.records(0, 0, 1)
            await h.source.until(lambda: len(h.held.started) == 2)
            h.held.finish(0, 0)
            h.held.finish(0, 1)
            await h.source.until(lambda: h.source.last_stored(0) == 2)

            async def refused(offsets: dict[int, int]) -> None:
                raise BrokerError("offset commit did not complete within 1s")

            h.source.commit = refused  # type: ignore[method-assign]
            mark = len(h.source.actions)
            with capture_logs() as logs:
                h.worker.stop()
                await asyncio.wait_for(task, DEADLINE)
        revoked = [e for e in logs if e["event"] == "partitions_revoked"]
        failed = [e["offsets"] for e in logs if e["event"] == "shutdown_commit_failed"]
        expected: object = (
            [("pause", [0]), ("store_now", {0: 2}), ("close", None)],
            [{0: 2}],
            [({}, {0: 2})],
        )
        actual: object = (
            h.source.actions[mark:],
            failed,
            [(e["committed"], e["uncommitted"]) for e in revoked],
        )
        assert expected == actual

    run(scenario)


def test_stop_past_shutdown_timeout_commits_only_below_the_unfinished() -> None:
    """Work unfinished at shutdown_timeout is cancelled and never committed."""

    async def scenario() -> None:
        h = Harness(opts=options(shutdown_timeout=0.05))
        async with h.running() as task:
            h.records(0, 0, 1, 2)
            await h.source.until(lambda: len(h.held.started) == 3)
            h.held.finish(0, 0)
            h.held.finish(0, 2)
            await h.source.until(lambda: h.source.last_stored(0) == 1)
            h.worker.stop()
            await asyncio.wait_for(task, DEADLINE)
            expected = ([(0, 1)], 1, 1, True)
            actual = (
                h.held.cancelled,
                h.source.highest_position(0),
                h.source.committed[0][-1],
                h.source.closed,
            )
            assert expected == actual

    run(scenario)


# --- group membership and the brokers' answers ------------------------------------------------


def test_a_loss_puts_the_member_out_of_its_group_until_the_group_assigns_it_again() -> None:
    """A loss (the member fenced: its session expired at the coordinator) leaves the member
    owning nothing and unable to consume until the group takes it back: it is out of its
    group (not ready) until the next assignment. Before, nothing said so: a trial's member,
    fenced by a cluster below min.insync.replicas, answered /readyz 200 for as long as the
    brokers stayed down."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1))
        async with h.running():
            assert h.telemetry.named("in_group")[-1] == (True,)
            await asyncio.wait_for(h.source.lose([0, 1]), DEADLINE)
            assert h.telemetry.named("in_group")[-1] == (False,)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.until(lambda: h.telemetry.named("in_group")[-1] == (True,))

    run(scenario)


def test_a_revoke_keeps_the_member_in_its_group() -> None:
    """A revoke is a rebalance the member takes part in (an eager one revokes everything
    before each assignment): it stays in its group, ready, whatever it keeps."""

    async def scenario() -> None:
        h = Harness(assign=(0, 1))
        async with h.running():
            await asyncio.wait_for(h.source.revoke([0, 1]), DEADLINE)
            await h.source.passes()
        assert False not in {args[0] for args in h.telemetry.named("in_group")}

    run(scenario)


def test_an_empty_assignment_puts_the_member_in_its_group() -> None:
    """With more members than partitions (KEDA past the partition count) a member's
    assignment is empty; the classic protocol still calls the assign callback. Before, only
    a restored partition made the member ready: such a member was never ready."""

    async def scenario() -> None:
        h = Harness(assign=())
        async with h.running():
            await asyncio.wait_for(h.source.assign([]), DEADLINE)
            await h.source.until(lambda: h.telemetry.named("in_group") == [(True,)])

    run(scenario)


def test_a_member_owning_no_partition_still_asks_the_brokers() -> None:
    """A member that owns nothing (an empty assignment, or none since a loss) asks the
    brokers at each lag interval all the same (``Source.reach``), so their silence makes it
    unreachable. Before, the read of no partition returned at once without asking anyone:
    broker_reachable stayed 1 whatever the brokers did."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(assign=(), opts=options(lag_interval=5.0), clock=clock)
        async with h.running():
            await h.source.until(lambda: h.source.reach_reads == 1)
            h.source.broker_failures = 2
            clock.advance(5.0)
            await h.source.until(lambda: h.telemetry.named("broker_reachable")[-1] == (False,))
            clock.advance(5.0)
            await h.source.until(lambda: h.telemetry.named("broker_reachable")[-1] == (True,))
        assert h.source.lag_reads == 0

    run(scenario)


def test_a_read_failing_once_is_asked_again_before_the_brokers_are_unreachable() -> None:
    """A broker of a rolling restart answers a read with a stale leadership (it clears on
    the next read): one failure is read again at once, so /readyz does not flap for each
    broker restarted; two in a row make the brokers unreachable."""

    async def scenario() -> None:
        clock = FakeClock()
        h = Harness(assign=(0,), opts=options(lag_interval=5.0), clock=clock)
        async with h.running():
            await h.source.until(lambda: len(h.telemetry.named("lags")) == 1)
            h.source.broker_failures = 1
            clock.advance(5.0)
            await h.source.until(lambda: len(h.telemetry.named("lags")) == 2)
            assert (False,) not in h.telemetry.named("broker_reachable")
            h.source.broker_failures = 2
            clock.advance(5.0)
            await h.source.until(lambda: (False,) in h.telemetry.named("broker_reachable"))

    run(scenario)
