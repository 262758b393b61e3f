"""Key-ordered dispatch: order per key, concurrency across keys, bounds, drain, revoke, pause.

Jobs are fakes that wait on futures the test resolves, so every interleaving is chosen by the
test; ``settle()`` only lets ready tasks run until they block again (no timing involved).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from consumer.engine.dispatcher import Dispatcher, Job
from consumer.engine.watermark import Watermarks
from tests.fakes import FakeClock

GRACE_NEVER_REACHED = 3_600.0


async def settle() -> None:
    """Let every ready task run until it blocks (a fixed number of scheduler turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


class Jobs:
    """Jobs that start when the dispatcher runs them and finish when the test says so."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.finished: list[tuple[int, int]] = []
        self._gates: dict[tuple[int, int], asyncio.Future[None]] = {}

    def job(self, partition: int, offset: int) -> Job:
        async def run() -> None:
            self.started.append((partition, offset))
            await self._gate(partition, offset)
            self.finished.append((partition, offset))

        return run

    def _gate(self, partition: int, offset: int) -> asyncio.Future[None]:
        gate = self._gates.get((partition, offset))
        if gate is None:
            gate = self._gates[(partition, offset)] = asyncio.get_running_loop().create_future()
        return gate

    def complete(self, partition: int, offset: int) -> None:
        self._gate(partition, offset).set_result(None)

    def running(self) -> list[tuple[int, int]]:
        return [item for item in self.started if item not in self.finished]


def owning(
    max_in_flight: int = 1000, max_in_flight_per_partition: int = 500
) -> tuple[Dispatcher, Watermarks]:
    """A dispatcher that tracks and finishes offsets itself, and its watermarks."""
    marks = Watermarks()
    dispatcher = Dispatcher(
        watermarks=marks,
        max_in_flight=max_in_flight,
        max_in_flight_per_partition=max_in_flight_per_partition,
    )
    return dispatcher, marks


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.parametrize("seed", range(12))
def test_each_key_runs_in_offset_order_whatever_the_completion_order(seed: int) -> None:
    """Random completion order across keys never reorders or overlaps records of one key."""
    rng = random.Random(seed)
    keys = [f"user-{i}" for i in range(5)]
    submitted: dict[str, list[int]] = {key: [] for key in keys}
    key_of: dict[int, str] = {}

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        for offset in range(60):
            key = rng.choice(keys)
            submitted[key].append(offset)
            key_of[offset] = key
            assert dispatcher.submit(0, offset, key, jobs.job(0, offset))
        await settle()
        while jobs.running():
            running_keys = [key_of[offset] for _, offset in jobs.running()]
            assert len(running_keys) == len(set(running_keys)), "two records of one key at once"
            partition, offset = rng.choice(jobs.running())
            jobs.complete(partition, offset)
            await settle()
        for key in keys:
            assert [o for _, o in jobs.started if key_of[o] == key] == submitted[key]
        assert marks.committable(0) == 60
        assert (dispatcher.total_in_flight(), dispatcher.active_lanes) == (0, 0)

    run(scenario)


def test_different_keys_run_concurrently() -> None:
    """Records of different keys start together; a second record of a key waits its turn."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher = Dispatcher()
        for offset, key in enumerate(["a", "b", "c", "a"]):
            dispatcher.submit(0, offset, key, jobs.job(0, offset))
        await settle()
        assert jobs.started == [(0, 0), (0, 1), (0, 2)]
        jobs.complete(0, 0)
        await settle()
        assert jobs.started[-1] == (0, 3)

    run(scenario)


def test_none_keys_are_not_ordered() -> None:
    """Records without a key each get their own lane."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher = Dispatcher()
        for offset in range(3):
            dispatcher.submit(0, offset, None, jobs.job(0, offset))
        await settle()
        assert len(jobs.started) == 3

    run(scenario)


def test_watermark_waits_for_the_slowest_record() -> None:
    """A later record finishing first does not move the commit position past an earlier one."""
    finished: list[tuple[int, int]] = []

    async def scenario() -> None:
        jobs = Jobs()
        marks = Watermarks()
        dispatcher = Dispatcher(watermarks=marks, on_finished=lambda p, o: finished.append((p, o)))
        dispatcher.submit(3, 10, "slow", jobs.job(3, 10))
        dispatcher.submit(3, 11, "fast", jobs.job(3, 11))
        await settle()
        jobs.complete(3, 11)
        await settle()
        assert marks.take_advanced() == {3: 10}
        jobs.complete(3, 10)
        await settle()
        assert marks.take_advanced() == {3: 12}

    run(scenario)
    assert finished == [(3, 11), (3, 10)]


def test_partition_pauses_at_its_bound_and_resumes_below_half() -> None:
    """Hysteresis: saturated at max_in_flight_per_partition, free again at resume_ratio of it."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher = Dispatcher(max_in_flight_per_partition=4, max_in_flight=100)
        for offset in range(4):
            dispatcher.submit(0, offset, f"k{offset}", jobs.job(0, offset))
        dispatcher.submit(1, 0, "k", jobs.job(1, 0))
        assert not dispatcher.has_capacity(0)
        assert dispatcher.has_capacity(1)
        assert dispatcher.saturated_partitions({0, 1}) == {0}
        await settle()
        jobs.complete(0, 0)
        await settle()
        assert dispatcher.saturated_partitions({0, 1}) == {0}, "3 in flight: above resume mark 2"
        jobs.complete(0, 1)
        await settle()
        assert dispatcher.saturated_partitions({0, 1}) == frozenset()

    run(scenario)


def test_a_draining_partition_resumes_while_it_still_holds_a_refills_worth() -> None:
    """The low mark covers a refill: draining at 20 records/s with a 0.5 s refill, a partition
    paused at 10 resumes at 8 in flight (static marks would hold it until 5), so its next
    records arrive before its lanes run dry."""

    async def scenario() -> None:
        jobs, clock = Jobs(), FakeClock()
        dispatcher = Dispatcher(
            max_in_flight_per_partition=10,
            max_in_flight=100,
            clock=clock.monotonic,
            refill_seconds=0.5,
        )
        for offset in range(10):
            dispatcher.submit(0, offset, f"k{offset}", jobs.job(0, offset))
        assert dispatcher.saturated_partitions({0}) == {0}
        await settle()
        jobs.complete(0, 0)
        jobs.complete(0, 1)
        await settle()
        clock.advance(0.1)
        assert dispatcher.saturated_partitions({0}) == frozenset()
        assert (dispatcher.in_flight(0), dispatcher.low_marks(0)) == (8, (9, 50))

    run(scenario)


def test_the_total_low_mark_covers_a_refill_too() -> None:
    """Every partition paused at the total bound resumes once the total drains to a refill's
    worth at the measured rate, not at half."""

    async def scenario() -> None:
        jobs, clock = Jobs(), FakeClock()
        dispatcher = Dispatcher(
            max_in_flight_per_partition=100, max_in_flight=10, clock=clock.monotonic
        )
        for offset in range(10):
            dispatcher.submit(offset % 2, offset, f"k{offset}", jobs.job(offset % 2, offset))
        assert dispatcher.saturated_partitions([0, 1]) == {0, 1}
        await settle()
        jobs.complete(0, 0)
        await settle()
        clock.advance(0.1)
        assert dispatcher.saturated_partitions([0, 1]) == frozenset()
        assert dispatcher.total_in_flight() == 9

    run(scenario)


def test_the_refill_time_is_measured_from_resume_to_the_next_record() -> None:
    """A partition's first record after its resume samples the refill time (EWMA); a record
    much later is new traffic, not a refill, and is not sampled."""

    async def scenario() -> None:
        jobs, clock = Jobs(), FakeClock()
        dispatcher = Dispatcher(
            max_in_flight_per_partition=2, max_in_flight=100, clock=clock.monotonic
        )
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        dispatcher.submit(0, 1, "b", jobs.job(0, 1))
        assert dispatcher.saturated_partitions({0}) == {0}
        await settle()
        jobs.complete(0, 0)
        jobs.complete(0, 1)
        await settle()
        assert dispatcher.saturated_partitions({0}) == frozenset()  # resumed now
        clock.advance(0.05)
        dispatcher.submit(0, 2, "c", jobs.job(0, 2))
        assert dispatcher.refill_seconds == pytest.approx(0.5 + 0.3 * (0.05 - 0.5))
        dispatcher.submit(0, 3, "d", jobs.job(0, 3))
        assert dispatcher.saturated_partitions({0}) == {0}
        await settle()
        jobs.complete(0, 2)
        jobs.complete(0, 3)
        await settle()
        before = dispatcher.refill_seconds
        assert dispatcher.saturated_partitions({0}) == frozenset()
        clock.advance(30.0)
        dispatcher.submit(0, 4, "e", jobs.job(0, 4))
        assert dispatcher.refill_seconds == before
        jobs.complete(0, 4)
        await settle()

    run(scenario)


def test_total_bound_pauses_every_assigned_partition() -> None:
    """At max_in_flight in total, every assigned partition pauses, even idle ones."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher = Dispatcher(max_in_flight_per_partition=10, max_in_flight=3)
        for offset in range(3):
            dispatcher.submit(0, offset, f"k{offset}", jobs.job(0, offset))
        assert dispatcher.saturated_partitions([0, 1, 2]) == {0, 1, 2}
        await settle()
        for offset in range(2):
            jobs.complete(0, offset)
        await settle()
        assert dispatcher.saturated_partitions([0, 1, 2]) == frozenset()

    run(scenario)


def test_global_pause_holds_lanes_without_dropping_work() -> None:
    """While paused (bad key), no new record starts, every partition pauses; resume continues."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher = Dispatcher()
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        await settle()
        assert dispatcher.pause("http_401") is True
        dispatcher.submit(0, 1, "a", jobs.job(0, 1))
        dispatcher.submit(1, 0, "b", jobs.job(1, 0))
        jobs.complete(0, 0)  # the running record still finishes
        await settle()
        assert jobs.started == [(0, 0)]
        assert not dispatcher.has_capacity(2)
        assert dispatcher.saturated_partitions([0, 1, 2]) == {0, 1, 2}
        assert dispatcher.resume() is True
        await settle()
        assert sorted(jobs.started) == [(0, 0), (0, 1), (1, 0)]
        assert dispatcher.saturated_partitions([0, 1, 2]) == frozenset()

    run(scenario)


def test_caller_owned_offsets_are_left_alone() -> None:
    """Without watermarks the dispatcher leaves offsets to the caller; revoke reports none."""

    async def scenario() -> None:
        jobs = Jobs()
        marks = Watermarks()
        dispatcher = Dispatcher()

        def job(offset: int) -> Job:
            inner = jobs.job(0, offset)

            async def run() -> None:
                await inner()
                marks.finish(0, offset)

            return run

        for offset in (7, 8):
            marks.track(0, offset)
            dispatcher.submit(0, offset, "a", job(offset))
        await settle()
        jobs.complete(0, 7)
        await settle()
        report = await dispatcher.revoke([0], 0.0)
        assert (report.committable, report.abandoned) == ({}, 1)
        assert marks.forget(0) == 8

    run(scenario)


def test_drain_waits_for_in_flight_work() -> None:
    """drain() returns True once everything finished, and refuses new work meanwhile."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        dispatcher.submit(0, 1, "a", jobs.job(0, 1))
        drain = asyncio.create_task(dispatcher.drain(GRACE_NEVER_REACHED))
        await settle()
        assert dispatcher.submit(0, 2, "b", jobs.job(0, 2)) is False
        jobs.complete(0, 0)
        await settle()
        jobs.complete(0, 1)
        assert await drain is True
        assert marks.committable(0) == 2

    run(scenario)


def test_drain_past_grace_cancels_and_commits_nothing_unfinished() -> None:
    """Work still running after the grace period is cancelled and left uncommitted."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        dispatcher.submit(0, 1, "a", jobs.job(0, 1))
        dispatcher.submit(0, 2, "b", jobs.job(0, 2))
        await settle()
        jobs.complete(0, 2)
        await settle()
        assert await dispatcher.drain(0.0) is False
        assert (dispatcher.total_in_flight(), dispatcher.active_lanes) == (0, 0)
        assert marks.committable(0) == 0
        assert jobs.started == [(0, 0), (0, 2)]

    run(scenario)


def test_revoke_waits_for_running_drops_queued_and_reports_commit() -> None:
    """Revoke finishes what runs, never starts what queues, and other partitions carry on."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        dispatcher.submit(0, 1, "a", jobs.job(0, 1))  # queued behind offset 0
        dispatcher.submit(1, 0, "b", jobs.job(1, 0))
        await settle()
        revoke = asyncio.create_task(dispatcher.revoke([0], GRACE_NEVER_REACHED))
        await settle()
        assert dispatcher.submit(0, 2, "c", jobs.job(0, 2)) is False
        jobs.complete(0, 0)
        report = await revoke
        assert (report.committable, report.finished, report.abandoned) == ({0: 1}, 1, 1)
        assert (0, 1) not in jobs.started
        jobs.complete(1, 0)
        await settle()
        assert marks.committable(1) == 1
        assert 0 not in marks.partitions

    run(scenario)


def test_revoke_past_grace_abandons_and_ignores_late_results() -> None:
    """A record cancelled at revocation never marks the partition, even if reassigned at once."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        dispatcher.submit(0, 5, "a", jobs.job(0, 5))
        dispatcher.submit(0, 6, "b", jobs.job(0, 6))
        await settle()
        jobs.complete(0, 6)
        await settle()
        report = await dispatcher.revoke([0], 0.0)
        assert (report.committable, report.finished, report.abandoned) == ({0: 5}, 0, 1)
        assert dispatcher.in_flight(0) == 0
        # Reassigned: the partition starts again from the committed offset.
        assert dispatcher.submit(0, 5, "a", jobs.job(0, 50))
        await settle()
        assert marks.committable(0) == 5
        jobs.complete(0, 50)
        await settle()
        assert marks.committable(0) == 6

    run(scenario)


def test_a_raising_job_stops_everything_and_finishes_nothing() -> None:
    """A job error (DLQ down) is reported; its offset is not finished and no record starts."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()

        async def broken() -> None:
            raise RuntimeError("dead-letter topic unavailable")

        dispatcher.submit(0, 0, "a", broken)
        dispatcher.submit(0, 1, "a", jobs.job(0, 1))
        await settle()
        assert isinstance(dispatcher.failure, RuntimeError)
        with pytest.raises(RuntimeError, match="unavailable"):
            dispatcher.raise_if_failed()
        assert dispatcher.submit(0, 2, "b", jobs.job(0, 2)) is False
        assert jobs.started == []
        assert marks.committable(0) == 0
        assert await dispatcher.drain(GRACE_NEVER_REACHED) is False
        assert dispatcher.total_in_flight() == 0

    run(scenario)


def test_thousands_of_keys_leave_no_idle_lanes() -> None:
    """Lanes are created on demand and end when empty: no task per idle key."""

    async def scenario() -> None:
        dispatcher, marks = owning(max_in_flight=10_000, max_in_flight_per_partition=10_000)
        done: list[int] = []

        def job(offset: int) -> Job:
            async def run() -> None:
                done.append(offset)

            return run

        for offset in range(5_000):
            dispatcher.submit(0, offset, f"user-{offset % 2_000}", job(offset))
        assert dispatcher.active_lanes == 2_000
        assert await dispatcher.drain(GRACE_NEVER_REACHED) is True
        assert (len(done), dispatcher.active_lanes) == (5_000, 0)
        assert marks.committable(0) == 5_000

    run(scenario)


def test_invalid_bounds_are_refused() -> None:
    """Zero in flight would never start anything."""
    with pytest.raises(ValueError, match="at least 1"):
        Dispatcher(max_in_flight=0)


def test_a_record_finished_at_once_is_committable_when_the_offsets_below_it_are() -> None:
    """``finish_now`` (an inert record: no job) finishes its offset without a lane; it counts
    as finished, and it is refused, like ``submit``, while its partition is revoked."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        assert dispatcher.finish_now(0, 1) is True
        assert dispatcher.finish_now(1, 0) is True
        await settle()
        expected: object = (0, 1, 1, 1, 2)
        actual: object = (
            marks.committable(0),
            marks.committable(1),
            dispatcher.active_lanes,
            dispatcher.total_in_flight(),
            dispatcher.finished_count,
        )
        assert expected == actual
        jobs.complete(0, 0)
        await settle()
        assert marks.committable(0) == 2
        dispatcher.submit(0, 2, "a", jobs.job(0, 2))
        revoke = asyncio.create_task(dispatcher.revoke([0], GRACE_NEVER_REACHED))
        await settle()
        refused = dispatcher.finish_now(0, 3)  # the revoke waits for offset 2
        jobs.complete(0, 2)
        report = await revoke
        assert (refused, report.committable) == (False, {0: 3})

    run(scenario)


def test_an_end_reached_is_committable_after_the_records_but_refused_while_revoking() -> None:
    """``reach_end`` (a partition's end past transaction markers) is committable once the
    records below it are finished; while its partition is revoked it is refused, like
    ``submit``: a record refused then lies below it and must be consumed again."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))
        assert dispatcher.reach_end(0, 2) is True
        assert marks.committable(0) == 0
        jobs.complete(0, 0)
        await settle()
        assert marks.committable(0) == 2
        dispatcher.submit(0, 2, "a", jobs.job(0, 2))
        revoke = asyncio.create_task(dispatcher.revoke([0], GRACE_NEVER_REACHED))
        await settle()
        refused = (dispatcher.submit(0, 3, "b", jobs.job(0, 3)), dispatcher.reach_end(0, 5))
        jobs.complete(0, 2)
        report = await revoke
        assert (refused, report.committable) == ((False, False), {0: 3})

    run(scenario)


def test_a_revoke_waits_for_requests_in_flight_but_not_for_records_about_to_send_one() -> None:
    """Once its partition is revoked, a record about to send a request waits at
    ``hold_if_stopping`` instead, and the revoke does not wait for it: it is abandoned (not
    finished, its offset not committed) as soon as the records with a request in flight are
    done, long before the deadline. A request started during the grace could still be in
    flight at its end, abandoned while Button may apply it after the next owner's newer ones.
    Another partition's records are not held."""

    async def scenario() -> None:
        jobs = Jobs()
        dispatcher, marks = owning()
        backoffs: dict[tuple[int, int], asyncio.Future[None]] = {}

        def retrying(partition: int, offset: int) -> Job:
            """Backs off until the test ends it, then sends its next request."""

            async def run() -> None:
                backoff = asyncio.get_running_loop().create_future()
                backoffs[(partition, offset)] = backoff
                await backoff
                await dispatcher.hold_if_stopping(partition)
                sent.append((partition, offset))  # the retry's request goes out here

            return run

        sent: list[tuple[int, int]] = []
        dispatcher.submit(0, 0, "a", jobs.job(0, 0))  # a request in flight
        dispatcher.submit(0, 1, "b", retrying(0, 1))
        dispatcher.submit(1, 0, "c", retrying(1, 0))
        await settle()
        revoke = asyncio.create_task(dispatcher.revoke([0], GRACE_NEVER_REACHED))
        await settle()
        for backoff in backoffs.values():
            backoff.set_result(None)
        await settle()
        assert (revoke.done(), sent) == (False, [(1, 0)])
        jobs.complete(0, 0)
        report = await asyncio.wait_for(revoke, 5.0)
        assert (report.finished, report.abandoned, report.committable) == (1, 1, {0: 1})
        assert (sent, marks.committable(1)) == ([(1, 0)], 1)

    run(scenario)


def test_records_finished_at_once_do_not_raise_the_low_marks() -> None:
    """The low marks cover a refill at the rate records *in flight* drain. Records finished at
    once never were in flight: a stream of inert views must not lift a partition's low mark to
    its high mark, which would resume it at once after every pause."""

    async def scenario() -> None:
        clock = FakeClock()
        dispatcher = Dispatcher(
            max_in_flight_per_partition=10,
            max_in_flight=100,
            clock=clock.monotonic,
            refill_seconds=0.5,
        )
        for offset in range(1_000):
            dispatcher.finish_now(0, offset)
        clock.advance(0.1)
        dispatcher.saturated_partitions({0})
        assert (dispatcher.low_marks(0), dispatcher.finished_count) == ((5, 50), 1_000)

    run(scenario)


def test_many_revocations_under_a_button_outage_leave_nothing_behind() -> None:
    """A Button outage: records hang in their requests or wait at the closed gate (an open
    breaker), and the partition is revoked and assigned again, over and over. Each revocation
    abandons them (``_abandon``); nothing of them may stay: no lane, no task, no in-flight
    count, no per-partition entry beyond the partition's own, however many revocations."""
    revocations = 300

    async def scenario() -> None:
        dispatcher, _marks = owning()
        hanging: list[asyncio.Future[None]] = []

        def never_answered() -> Job:
            async def run() -> None:
                answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                hanging.append(answer)
                await answer

            return run

        offset = 0
        for round_ in range(revocations):
            if round_ % 2:
                dispatcher.pause("button_unavailable")  # the breaker opens: the gate closes
            for key in ("a", "b", "c"):
                dispatcher.submit(0, offset, key, never_answered())
                offset += 1
            dispatcher.submit(0, offset, "a", never_answered())  # queued behind a's first
            offset += 1
            await settle()
            report = await dispatcher.revoke([0], 0.0)
            assert report.abandoned == 4
            dispatcher.resume()
        await settle()
        assert dispatcher.total_in_flight() == 0
        assert dispatcher._lanes == {}
        assert {task for task in asyncio.all_tasks() if task is not asyncio.current_task()} == set()
        per_partition = (
            dispatcher._counts,
            dispatcher._stopped,
            dispatcher._rates,
            dispatcher._done,
            dispatcher._resumed_at,
        )
        assert all(len(entries) <= 1 for entries in per_partition), per_partition
        assert dispatcher._epochs == {0: revocations}
        assert all(answer.cancelled() for answer in hanging)

    run(scenario)
