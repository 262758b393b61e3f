"""Key-ordered, bounded, concurrent delivery: one lane per busy key (DESIGN, 3).

Events of one user must reach Button in offset order, but one slow or retrying user must not hold
up everyone else. The dispatcher gives each Kafka key a *lane*: a FIFO of records run one at a
time, while lanes of different keys run concurrently. Lanes are created when a key gets work and
end when their queue is empty, so thousands of idle keys cost nothing. This is the Parallel
Consumer model ("key order") on asyncio.

Contract with the poll loop, which must never block:

- ``submit(partition, offset, key, job)`` never blocks and never rejects for lack of room: the
  bounds are signals, not walls, because a polled batch must go somewhere. It starts or extends
  the key's lane. ``job`` is an async callable doing the record's whole delivery (map, send with
  retries, DLQ) and returning once the record is *finished*.
- Offsets: either the dispatcher owns them (pass ``watermarks=``: ``submit`` tracks the offset,
  a returning job finishes it, and ``revoke`` reports and forgets the final positions), or the
  caller does both itself (``watermarks=None``, the default). Never both: tracking twice raises.
- After each poll, ``saturated_partitions(assigned)`` is the set of partitions to keep paused
  (a state, not a delta; pause what is new in it, resume what left it). Each bound has a high
  and a low mark: a partition is saturated from ``max_in_flight_per_partition`` records in
  flight (queued or running) until it drains to its low mark, so the consumer does not flap;
  every partition is saturated from ``max_in_flight`` in total (until the total drains to its
  low mark) and while the ``PauseGate`` is closed. With ``watermarks``, a partition is also
  saturated while the distance from its committable offset to its newest tracked offset
  reaches ``max_commit_distance`` (until it falls to ``resume_ratio`` of it): one stuck record
  then bounds what a crash replays, although the records behind it finished.
- The low marks keep the pipeline fed: a resumed partition's records arrive only after a
  fetch's round trip (the *refill* time), so the low mark must still hold what drains
  meanwhile. Given a ``clock``, the dispatcher measures both: the drain rate (records in flight
  finished per second, per partition and in total; not those of ``finish_now``, which never
  were in flight) and the refill time (from a partition's resume to its next record). A low mark
  is then ``max(resume_ratio x high, 2 x rate x refill)``, at most ``high - 1``. Without a
  clock it is ``resume_ratio x high``.

A job that raises is a bug or a "stop consuming" condition (DLQ unavailable: DESIGN, 4): the
dispatcher records the first such error, starts nothing more, and the loop sees it through
``failure`` or ``raise_if_failed()``. The record's offset is never finished, so nothing is lost.

Keys: records with the same ``(partition, key)`` are ordered. A ``None`` key has no ordering
contract in Kafka, so each such record gets its own lane.

Shutdown and rebalance: ``drain(grace)`` waits for everything in flight, then cancels what is
left; ``revoke(partitions, grace)`` drops queued records of those partitions, waits for running
ones, cancels the rest, and returns each partition's final committable offset for the revoke
callback to commit. Abandoned records are simply not finished: the next owner gets them again.
Jobs must therefore be safe to cancel and to repeat (every Button call is: DESIGN, 2).

All methods must be called from the event loop thread that runs the lanes.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field

from consumer.engine.concurrency import PauseGate
from consumer.engine.watermark import Watermarks

Job = Callable[[], Awaitable[None]]
"""Delivers one record and returns when it is finished. Must be cancellable and idempotent."""

FinishedHook = Callable[[int, int], None]
"""Called with (partition, offset) after a record finished and its offset was marked."""

Clock = Callable[[], float]
"""A monotonic clock in seconds (``time.monotonic`` in production, a fake in tests)."""

COVER_FACTOR = 2.0
"""A low mark holds this many refill times' worth of draining (margin for a slower fetch)."""
RATE_INTERVAL = 0.1
"""Seconds between drain-rate samples (taken in ``saturated_partitions``)."""
SMOOTHING = 0.3
"""EWMA weight of a new drain-rate or refill sample."""
MAX_REFILL = 2.0
"""A record later than this after a resume is new traffic, not a refill: not sampled."""


@dataclass(frozen=True, slots=True)
class RevokeReport:
    """The outcome of a revocation.

    Attributes:
        committable: the final committable offset of each revoked partition (``None`` when
            nothing was tracked there); commit these before giving the partitions up. Empty
            when the dispatcher does not own the watermarks.
        finished: records of those partitions that finished while the revocation waited.
        abandoned: records dropped unstarted or cancelled; the next owner processes them again.
    """

    committable: dict[int, int | None]
    finished: int
    abandoned: int


@dataclass(slots=True, eq=False)
class _Item:
    partition: int
    offset: int
    epoch: int
    job: Job
    generation: int = 0  # the sequence of the partition's offsets it belongs to (``restart``)
    retired: bool = False


@dataclass(slots=True, eq=False)
class _Lane:
    queue: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    running: _Item | None = None  # the head, while its job runs
    abandoned: bool = False  # cancelled by revoke or drain, detached from the lane table


class Dispatcher:
    """Runs jobs in per-key order, concurrently across keys, within in-flight bounds.

    Args:
        max_in_flight_per_partition: records of one partition queued or running before it pauses.
        max_in_flight: records in total before every partition pauses.
        max_commit_distance: offsets from a partition's committable offset to its newest
            tracked one before it pauses (only with ``watermarks``).
        resume_ratio: a paused partition resumes at or below this fraction of its bound (the
            least the low marks are; with ``clock`` they rise to cover a refill).
        watermarks: the commit positions to track and finish; ``None``: the caller does it.
        on_finished: called after each finished record, e.g. for metrics.
        gate: the global pause gate (401/403); lanes wait at it before starting each record.
        clock: measures drain rate and refill time for the low marks; ``None``: static marks.
        refill_seconds: the refill time assumed until one is measured.
    """

    def __init__(
        self,
        *,
        max_in_flight_per_partition: int = 500,
        max_in_flight: int = 1000,
        max_commit_distance: int = 100_000,
        resume_ratio: float = 0.5,
        watermarks: Watermarks | None = None,
        on_finished: FinishedHook | None = None,
        gate: PauseGate | None = None,
        clock: Clock | None = None,
        refill_seconds: float = 0.5,
    ) -> None:
        if max_in_flight_per_partition < 1 or max_in_flight < 1 or max_commit_distance < 1:
            raise ValueError("in-flight bounds must be at least 1")
        if not 0 <= resume_ratio < 1:
            raise ValueError("resume_ratio must be in [0, 1)")
        self._high_partition = max_in_flight_per_partition
        self._high_total = max_in_flight
        self._low_partition = math.floor(max_in_flight_per_partition * resume_ratio)
        self._low_total = math.floor(max_in_flight * resume_ratio)
        self._high_distance = max_commit_distance
        self._low_distance = math.floor(max_commit_distance * resume_ratio)
        self._far: set[int] = set()
        self.watermarks = watermarks
        self.gate = gate if gate is not None else PauseGate()
        self._on_finished = on_finished
        self._lanes: dict[tuple[int, Hashable], _Lane] = {}
        self._counts: dict[int, int] = {}
        self._total = 0
        self._epochs: dict[int, int] = {}
        self._revoking: set[int] = set()
        # Running records of each stopping partition held at ``hold_if_stopping`` (no request
        # in flight): a revoke or a drain does not wait for them.
        self._stopped: dict[int, int] = {}
        self._saturated: set[int] = set()
        self._full = False
        self._closed = False
        self._failure: BaseException | None = None
        self._progress = asyncio.Event()
        self._finished_count = 0
        # Flow measurements for the low marks (only with a clock).
        self._clock = clock
        self._refill = refill_seconds
        self._rate_at = clock() if clock is not None else 0.0
        self._rate_total = 0.0
        self._rates: dict[int, float] = {}
        self._done: dict[int, int] = {}  # records finished per partition since the last sample
        self._done_total = 0
        self._held: frozenset[int] = frozenset()  # what the previous call kept paused
        self._resumed_at: dict[int, float] = {}

    # -- submitting ------------------------------------------------------------------------

    def submit(self, partition: int, offset: int, key: Hashable | None, job: Job) -> bool:
        """Queue a record behind earlier records of its key and return at once.

        Returns:
            ``True`` when accepted. ``False`` when the partition is being revoked, or the
            dispatcher is draining or has failed: the record is not tracked, so its offset is
            never stored and it will be consumed again.

        Raises:
            ValueError: ``offset`` is not above the last offset submitted for ``partition``.
        """
        if not self._admit(partition, offset):
            return False
        generation = 0 if self.watermarks is None else self.watermarks.generation(partition)
        item = _Item(partition, offset, self._epochs.get(partition, 0), job, generation)
        lane_id: tuple[int, Hashable] = (partition, object() if key is None else key)
        lane = self._lanes.get(lane_id)
        if lane is None:
            lane = self._lanes[lane_id] = _Lane()
        lane.queue.append(item)
        self._counts[partition] = self._counts.get(partition, 0) + 1
        self._total += 1
        if lane.task is None:
            lane.task = asyncio.get_running_loop().create_task(self._run_lane(lane_id, lane))
        return True

    def finish_now(self, partition: int, offset: int) -> bool:
        """Track a record that needs no job and finish it at once (an inert record).

        Returns ``False``, like ``submit``, when the partition is being revoked or the
        dispatcher is draining or has failed: the record is then not tracked (consumed again).

        Raises:
            ValueError: ``offset`` is not above the last offset submitted for ``partition``.
        """
        if not self._admit(partition, offset):
            return False
        # Not in the drain rate: the low marks cover the records in flight, which it never was.
        self._count_finished(partition, offset, in_flight=False)
        return True

    def reach_end(self, partition: int, end: int) -> bool:
        """The fetcher reached ``partition``'s end at ``end``, past every record it handed out
        (``Source.ends_reached``): once they are finished, ``end`` is committable
        (``PartitionWatermark.reach``). Refused (``False``), like ``submit``, when the
        partition is being revoked or the dispatcher is draining or has failed: records it
        refused lie below that end, and must be consumed again."""
        if not self._accepting(partition):
            return False
        if self.watermarks is not None:
            self.watermarks.reach(partition, end)
        return True

    def restart(self, partition: int) -> None:
        """The Kafka client moved ``partition``'s fetch position back (an offset reset): the
        offsets submitted from now on start a new sequence, which may repeat earlier ones
        (``Watermarks.restart``). Records of the earlier sequence keep their lanes, so a key's
        records still reach their job in the order they were submitted; while any of them is
        unfinished, the partition has no committable offset."""
        if self.watermarks is not None:
            self.watermarks.restart(partition)

    def _accepting(self, partition: int) -> bool:
        return not self._closed and self._failure is None and partition not in self._revoking

    def _admit(self, partition: int, offset: int) -> bool:
        """Accept a record of ``partition`` (``submit``, ``finish_now``): track its offset and
        note a refill; ``False`` while the partition is revoked or the dispatcher is closed or
        has failed."""
        if not self._accepting(partition):
            return False
        if self.watermarks is not None:
            self.watermarks.track(partition, offset)
        if self._resumed_at:
            self._note_refill(partition)
        return True

    # -- capacity and backpressure -----------------------------------------------------------

    def in_flight(self, partition: int) -> int:
        """Records of ``partition`` queued or running."""
        return self._counts.get(partition, 0)

    def total_in_flight(self) -> int:
        """Records queued or running across every partition."""
        return self._total

    @property
    def active_lanes(self) -> int:
        """Keys with work queued or running (each has one task)."""
        return len(self._lanes)

    @property
    def finished_count(self) -> int:
        """Records finished since the dispatcher was created."""
        return self._finished_count

    def has_capacity(self, partition: int) -> bool:
        """Whether another record of ``partition`` fits under every bound right now."""
        return (
            self.gate.is_open
            and self._counts.get(partition, 0) < self._high_partition
            and self._total < self._high_total
        )

    @property
    def refill_seconds(self) -> float:
        """The refill time the low marks cover: measured (EWMA), or the assumed one."""
        return self._refill

    def low_marks(self, partition: int) -> tuple[int, int]:
        """The current low marks: (of ``partition``, of the total), in records."""
        return (
            self._low_mark(self._low_partition, self._high_partition, self._rates.get(partition)),
            self._low_mark(self._low_total, self._high_total, self._rate_total),
        )

    def saturated_partitions(self, assigned: Iterable[int] = ()) -> frozenset[int]:
        """Partitions the poll loop should keep paused now (see the module docstring).

        Args:
            assigned: the loop's current assignment, so that partitions with nothing in flight
                are paused too when the total bound is reached or the gate is closed.
        """
        self._sample_rates()
        if self._total >= self._high_total:
            self._full = True
        elif self._total <= self._low_mark(self._low_total, self._high_total, self._rate_total):
            self._full = False
        self._update_saturated()
        self._update_far()
        if self._full or not self.gate.is_open:
            held = frozenset(self._counts.keys() | set(assigned))
        else:
            held = frozenset(self._saturated | self._far)
        self._note_resumed(held)
        return held

    def _update_saturated(self) -> None:
        for partition, count in self._counts.items():
            if partition in self._saturated:
                low = self._low_mark(
                    self._low_partition, self._high_partition, self._rates.get(partition)
                )
                if count <= low:
                    self._saturated.discard(partition)
            elif count >= self._high_partition:
                self._saturated.add(partition)

    def _update_far(self) -> None:
        if self.watermarks is None:
            return
        for partition in self.watermarks.partitions:
            span = self.watermarks.span(partition)
            if partition in self._far:
                if span <= self._low_distance:
                    self._far.discard(partition)
            elif span >= self._high_distance:
                self._far.add(partition)
        self._far &= self.watermarks.partitions

    # -- flow measurements (low marks) ---------------------------------------------------------

    def _low_mark(self, floor: int, high: int, rate: float | None) -> int:
        """``max(floor, COVER_FACTOR x rate x refill)``, at most ``high - 1``."""
        if self._clock is None or not rate:
            return floor
        cover = math.ceil(rate * self._refill * COVER_FACTOR)
        return max(floor, min(high - 1, cover))

    def _sample_rates(self) -> None:
        """Every ``RATE_INTERVAL``: records finished per second, per partition and in total."""
        if self._clock is None:
            return
        now = self._clock()
        elapsed = now - self._rate_at
        if elapsed < RATE_INTERVAL:
            return
        self._rate_at = now
        self._rate_total = _smooth(self._rate_total, self._done_total / elapsed)
        for partition in self._rates.keys() | self._done.keys():
            rate = self._done.get(partition, 0) / elapsed
            self._rates[partition] = _smooth(self._rates.get(partition, 0.0), rate)
        self._done.clear()
        self._done_total = 0

    def _note_resumed(self, held: frozenset[int]) -> None:
        if self._clock is not None and self._held != held:
            resumed = self._held - held
            if resumed:
                now = self._clock()
                for partition in resumed:
                    self._resumed_at[partition] = now
            for partition in held:
                self._resumed_at.pop(partition, None)
        self._held = held

    def _note_refill(self, partition: int) -> None:
        """The first record of ``partition`` since its resume: a refill-time sample."""
        resumed = self._resumed_at.pop(partition, None)
        if resumed is None or self._clock is None:
            return
        seconds = self._clock() - resumed
        if seconds <= MAX_REFILL:
            self._refill = _smooth(self._refill, seconds)

    # -- global pause (bad API key) ------------------------------------------------------------

    def pause(self, reason: str) -> bool:
        """Hold every lane before its next record (running records continue). ``True`` if new."""
        return self.gate.close(reason)

    def resume(self) -> bool:
        """Let lanes start records again. ``True`` if the dispatcher was paused."""
        return self.gate.open()

    # -- failure -----------------------------------------------------------------------------

    @property
    def failure(self) -> BaseException | None:
        """The first exception a job raised; once set, no new record starts."""
        return self._failure

    def raise_if_failed(self) -> None:
        """Re-raise the first job failure, if any (call it from the poll loop)."""
        if self._failure is not None:
            raise self._failure

    # -- shutdown and rebalance ----------------------------------------------------------------

    async def drain(self, grace: float) -> bool:
        """Stop accepting work, wait up to ``grace`` seconds for everything in flight, then
        cancel what is left. Returns ``True`` if every record finished.

        ``grace`` is not a timeout on the call: after it, the remaining work is cancelled and
        awaited, so the call returns only when no lane task is left.
        """
        self._closed = True
        await self._wait_until(lambda: self._total <= sum(self._stopped.values()), grace)
        finished = self._total == 0
        if not finished:
            await self._abandon(lambda partition: True)
        return finished

    def stopping(self, partition: int) -> bool:
        """``partition`` is being revoked, or the dispatcher drains (``hold_if_stopping``)."""
        return self._closed or partition in self._revoking

    async def hold_if_stopping(self, partition: int) -> None:
        """Called by a record before it sends a request to Button: while its partition is
        revoked, or the dispatcher drains, it waits here until it is abandoned (cancelled), and
        the revoke or drain no longer waits for it. Returns at once otherwise.

        The grace of a revoke or a drain is for requests already in flight. One started during
        it could still be in flight at its end and be abandoned, while Button may apply it
        after the next owner's newer requests for the same order (an update carries the whole
        state of the order): the record is left unfinished instead, for the next owner.
        """
        if not self.stopping(partition):
            return
        self._stopped[partition] = self._stopped.get(partition, 0) + 1
        self._progress.set()
        try:
            await asyncio.get_running_loop().create_future()  # never set: only cancelled
        finally:
            self._stopped[partition] = self._stopped.get(partition, 1) - 1

    def _settled(self, partition: int) -> bool:
        """Every running record of ``partition`` finished or held (``hold_if_stopping``)."""
        return self._counts.get(partition, 0) <= self._stopped.get(partition, 0)

    async def revoke(self, partitions: Collection[int], grace: float) -> RevokeReport:
        """Give up ``partitions``: drop their queued records, wait up to ``grace`` seconds for
        their running records (not for those held before a request: ``hold_if_stopping``),
        cancel the rest, and return their final committable offsets.
        """
        revoked = set(partitions)
        self._revoking |= revoked
        try:
            abandoned = self._drop_queued(revoked)
            running = sum(self._counts.get(p, 0) for p in revoked)
            await self._wait_until(lambda: all(self._settled(p) for p in revoked), grace)
            # Nothing was added meanwhile (submit refuses revoking partitions), so the drop in
            # the count is exactly what finished.
            finished = running - sum(self._counts.get(p, 0) for p in revoked)
            abandoned += await self._abandon(lambda partition: partition in revoked)
            committable: dict[int, int | None] = {}
            for partition in revoked:
                if self.watermarks is not None:
                    committable[partition] = self.watermarks.forget(partition)
                self._epochs[partition] = self._epochs.get(partition, 0) + 1
                self._counts.pop(partition, None)
                self._saturated.discard(partition)
                self._far.discard(partition)
                self._rates.pop(partition, None)
                self._done.pop(partition, None)
                self._resumed_at.pop(partition, None)
                self._stopped.pop(partition, None)
        finally:
            self._revoking -= revoked
        return RevokeReport(committable, finished, abandoned)

    # -- internals -------------------------------------------------------------------------------

    async def _run_lane(self, lane_id: tuple[int, Hashable], lane: _Lane) -> None:
        queue = lane.queue
        try:
            while queue and self._failure is None:
                if not self.gate.is_open:
                    await self.gate.wait_open()
                    continue  # the lane may have been revoked or failed meanwhile
                item = lane.running = queue[0]
                await item.job()
                lane.running = None
                queue.popleft()
                self._finish(item)
        except asyncio.CancelledError:
            if not lane.abandoned:
                raise
        except Exception as exc:  # noqa: BLE001 (a raising job stops all: never drop a record)
            if self._failure is None:
                self._failure = exc
            self._progress.set()
        finally:
            lane.task = None
            lane.running = None
            # After a failure a lane keeps its unfinished records, for ``drain`` to account.
            if not queue and self._lanes.get(lane_id) is lane:
                del self._lanes[lane_id]

    def _finish(self, item: _Item) -> None:
        if item.retired:
            return
        self._retire(item)
        if item.epoch != self._epochs.get(item.partition, 0):
            return  # a record of an earlier assignment of this partition
        self._count_finished(item.partition, item.offset, generation=item.generation)

    def _count_finished(
        self, partition: int, offset: int, *, in_flight: bool = True, generation: int | None = None
    ) -> None:
        self._finished_count += 1
        if in_flight and self._clock is not None:
            self._done[partition] = self._done.get(partition, 0) + 1
            self._done_total += 1
        if self.watermarks is not None:
            self.watermarks.finish(partition, offset, generation)
        if self._on_finished is not None:
            self._on_finished(partition, offset)

    def _retire(self, item: _Item) -> None:
        item.retired = True
        self._counts[item.partition] = self._counts.get(item.partition, 0) - 1
        self._total -= 1
        self._progress.set()

    def _drop_queued(self, partitions: set[int]) -> int:
        """Retire every record of ``partitions`` that has not started. Returns how many."""
        dropped = 0
        for (partition, _), lane in self._lanes.items():
            if partition not in partitions:
                continue
            running = lane.running
            for item in lane.queue:
                if item is not running:
                    self._retire(item)
                    dropped += 1
            lane.queue.clear()
            if running is not None:
                lane.queue.append(running)
        return dropped

    async def _abandon(self, chosen: Callable[[int], bool]) -> int:
        """Detach and cancel the lanes of chosen partitions; retire what they held."""
        abandoned = 0
        tasks: list[asyncio.Task[None]] = []
        for lane_id, lane in list(self._lanes.items()):
            if not chosen(lane_id[0]):
                continue
            del self._lanes[lane_id]
            lane.abandoned = True
            for item in lane.queue:
                if not item.retired:
                    self._retire(item)
                    abandoned += 1
            if lane.task is not None:
                lane.task.cancel()
                tasks.append(lane.task)
        if tasks:
            await asyncio.wait(tasks)
        return abandoned

    async def _wait_until(self, done: Callable[[], bool], grace: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while not done() and self._failure is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._progress.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
            except TimeoutError:
                break
        return done()


def _smooth(previous: float, sample: float) -> float:
    """EWMA step (``SMOOTHING``); the first sample (previous 0) is taken as it is."""
    return sample if previous <= 0 else previous + SMOOTHING * (sample - previous)
