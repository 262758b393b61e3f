"""The run loop: poll, hand records to key-ordered lanes, store finished offsets, never block.

One asyncio loop runs everything but Kafka I/O, which runs on the source's own thread. The loop
is short on purpose; each step is a named collaborator:

- ``Source.poll`` fetches records (rebalance callbacks run inside it, on the Kafka thread);
- every record is tracked in the ``Watermarks`` and submitted to the ``Dispatcher`` whose job is
  ``Pipeline.handle``; the job finishing marks the offset finished;
- the loop stores the committable offsets, pauses partitions whose lanes are full (and all of
  them while Button rejects the API key), and resumes them when they drain;
- on revoke, the revoked partitions' in-flight work is finished (or abandoned at the deadline)
  and their finished offsets committed synchronously; on assign, the new partitions are paused
  before their first fetch and their profiles restored from the changelog beside the loop
  (``consumer.engine.restore``: polling goes on, a revoke cancels the restore); once restored,
  a partition joins the assigned ones and the next back-pressure pass resumes it unless it is
  wanted paused;
- on stop (SIGTERM), fetching stops, in-flight work gets ``shutdown_timeout`` to finish, what
  is finished is committed, and the consumer leaves the group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from consumer.domain.events import CommerceEvent
from consumer.domain.triage import InertEvent
from consumer.engine.authgate import AuthGate
from consumer.engine.concurrency import PauseGate
from consumer.engine.dispatcher import Dispatcher, Job
from consumer.engine.restore import RestoreFn, Restores
from consumer.engine.watermark import Watermarks
from consumer.errors import ConsumerError
from consumer.ports import PartitionLag, Record, RecordHandler, Source, Telemetry

log = structlog.get_logger("consumer.worker")
T = TypeVar("T")

DropFn = Callable[[list[int]], None]
SettleFn = Callable[[list[int], float], int]
"""Waits up to the given seconds for the producer's writes (changelog, dead letters) of the
records of the given input partitions, not for its other writes; returns how many of them are
still unacknowledged."""


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    max_poll_records: int = 500
    poll_timeout: float = 0.1
    shutdown_timeout: float = 20.0
    revoke_timeout: float = 15.0
    stop_when_idle: float | None = None
    lag_interval: float = 5.0
    drain_commit_interval: float = 0.1
    """Seconds between two commits on drain at least (``_store_finished``); Kafka Streams
    commits every 0.1 s under exactly-once."""
    housekeeping_interval: float = 300.0
    settle_timeout: float = 10.0
    """Seconds a revoke or loss waits for its partitions' writes (``SettleFn``)."""
    read_retry_delay: float = 1.0
    """Seconds before a failed lag read is asked again (``_read_brokers``): a client told
    NOT_COORDINATOR finds the group's new coordinator meanwhile (asked again at once, the
    read failed the same way 8 ms later)."""


@dataclass(slots=True)
class RunStats:
    """What one run did, for the demo summary and the tests.

    ``received``: records the Kafka client handed out, ``redelivered`` among them those it handed
    out again (at or below an offset this assignment already received) and the worker dropped.
    """

    received: int = 0
    redelivered: int = 0
    started_at: float = 0.0
    stopped_at: float = 0.0


class Worker:
    """Consumes the input topic until ``stop()``; see the module docstring.

    It is the source's ``RebalanceListener``: ``run`` starts the source with itself.
    ``side_failure`` reports the error of a component beside the loop (the changelog watch:
    ``None`` while it runs); the loop stops with it, as with a failed restore.
    ``settle_writes`` waits, on a revoke or loss, for the revoked partitions' writes only.
    """

    def __init__(
        self,
        source: Source,
        pipeline: RecordHandler,
        dispatcher: Dispatcher,
        watermarks: Watermarks,
        gate: AuthGate,
        restore: RestoreFn,
        drop: DropFn,
        telemetry: Telemetry,
        options: WorkerOptions,
        housekeeping: Callable[[], Coroutine[Any, Any, None]] | None = None,
        settle_writes: SettleFn | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        breaker: PauseGate | None = None,
        side_failure: Callable[[], BaseException | None] = lambda: None,
    ) -> None:
        self._housekeeping = housekeeping
        self._side_failure = side_failure
        self._breaker = breaker
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._settle_writes = settle_writes
        self._source = source
        self._pipeline = pipeline
        self._dispatcher = dispatcher
        self._watermarks = watermarks
        self._gate = gate
        self._restore = restore
        self._drop = drop
        self._telemetry = telemetry
        self._opt = options
        self._now = monotonic
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assigned: set[int] = set()
        """Partitions owned and restored (a restoring one is in ``_restores``)."""
        self._paused: set[int] = set()
        self._reset: set[int] = set()
        """Partitions the Kafka client reset (``Source.offsets_reset``) after records were
        tracked there: their next record at or below the highest one received is new
        (``_drop_redelivered``)."""
        self._restarted: set[int] = set()
        """Partitions restarted by the records of this loop pass (``_reach_ends``)."""
        self._first_received: dict[int, int] = {}
        """Per partition, the first offset received since its assignment (or its restart)."""
        self._started_over: set[int] = set()
        """Partitions handed out again from their first offset on (``_drop_redelivered``),
        until a record beyond the highest one received comes."""
        self._restores = Restores(restore, drop, self._restored, monotonic)
        self._last_record = 0.0
        """Monotonic time of the last polled record or assignment (for ``stop_when_idle``)."""
        self._drain_committed = -math.inf
        """Monotonic time of the last commit on drain (``_store_finished``)."""
        self._commit_owed = False
        """Offsets were stored since the last commit on drain (``_store_finished``)."""
        self._broker_reachable = True
        """The last lag read was answered (``_report_lag``: its failures are logged once)."""
        self._closing: dict[int, int] | None = None
        """Set when the shutdown closes the source: the offsets its commit committed."""
        self.stats = RunStats()

    def stop(self) -> None:
        """Ask the loop to stop (safe from a signal handler on the loop's thread)."""
        self._stop.set()

    @property
    def restoring(self) -> frozenset[int]:
        """Partitions assigned whose profiles are being restored (their records wait)."""
        return self._restores.restoring

    # -- rebalance callbacks: Kafka thread --------------------------------------------------

    def on_assign(self, partitions: list[int]) -> None:
        # Force the state: a new partition is paused before it is ever fetched (librdkafka
        # starts a partition this member never owned unpaused, whatever the loop believes), so
        # nothing is read during the restore, during an auth pause or while the total bound is
        # reached. Only scheduled here: the restore runs beside the poll loop, which must keep
        # polling (a restore inside this callback would stop it for as long as it reads).
        self._source.pause_now(partitions)
        self._call_in_loop(self._assigned_in_loop, partitions)
        self._telemetry.rebalance("assign")
        log.info("partitions_assigned", partitions=partitions, restoring=partitions)

    def on_revoke(self, partitions: list[int]) -> None:
        try:
            offsets = self._call_in_loop(self._revoke_in_loop, partitions, True)
        except ConsumerError as exc:
            # The loop is gone (the process is being torn down): nothing to wait for; what is
            # not committed is processed again by the next owner.
            log.warning("revoke_without_loop", error=str(exc), partitions=partitions)
            offsets = {}
        if self._closing is not None:
            self._revoked_on_close(partitions, offsets, self._closing)
            return
        # Abandoned jobs may have left changelog or dead-letter writes in the producer: wait
        # for these partitions' writes (only theirs: the kept partitions' lanes go on writing)
        # before the commit and before the next owner starts. Then store the final offsets
        # before committing them: librdkafka commits a removed partition's stored offset after
        # this callback, which must not be an older one.
        self._settle_partitions(partitions)
        committed = offsets
        try:
            self._source.store_now(offsets)
            self._source.commit_now(offsets)
        except Exception as exc:  # noqa: BLE001 - logged; the next owner replays (harmless)
            # E.g. a coordinator that is away. Raising here would escape poll() and crash the
            # process for a commit whose only cost is replays.
            log.warning("revoke_commit_failed", error=str(exc), offsets=offsets)
            committed = {}
        self._drop(partitions)
        self._telemetry.rebalance("revoke")
        log.info(
            "partitions_revoked",
            partitions=partitions,
            committed=committed,
            uncommitted={p: o for p, o in offsets.items() if p not in committed},
        )

    def _revoked_on_close(
        self, partitions: list[int], offsets: dict[int, int], committed: dict[int, int]
    ) -> None:
        """The revocation ``close`` triggers, within the close's budget: the shutdown drained,
        committed what finished (``committed``, empty when that commit failed) and will flush
        the producer in its own phase. A synchronous commit here cannot be bounded (only this
        thread can complete it, inside the callback), and it waited 35 s on a coordinator that
        did not answer: offsets the shutdown did not commit are stored, for librdkafka's own
        commit as it leaves the group, and logged as uncommitted (their records are
        processed again)."""
        uncommitted = {p: o for p, o in offsets.items() if committed.get(p) != o}
        try:
            if uncommitted:
                self._source.store_now(uncommitted)
        except Exception as exc:  # noqa: BLE001 - logged; the next owner replays (harmless)
            log.warning("revoke_store_failed", error=str(exc), offsets=uncommitted)
        self._drop(partitions)
        self._telemetry.rebalance("revoke")
        log.info(
            "partitions_revoked",
            partitions=partitions,
            committed={p: o for p, o in offsets.items() if p not in uncommitted},
            uncommitted=uncommitted,
        )

    def on_lost(self, partitions: list[int]) -> None:
        # Out of its group at once: it owns nothing and consumes nothing until the group takes
        # it back (an assignment), which a coordinator that cannot write (a cluster below
        # min.insync.replicas) refuses for as long as that lasts.
        self._telemetry.in_group(False)
        try:
            self._call_in_loop(self._lost_in_loop, partitions)
        except ConsumerError as exc:
            log.warning("lost_without_loop", error=str(exc), partitions=partitions)
        self._settle_partitions(partitions)
        self._drop(partitions)
        self._telemetry.rebalance("lost")
        log.warning("partitions_lost", partitions=partitions)

    def _settle_partitions(self, partitions: list[int]) -> None:
        """Wait for the writes of ``partitions``' records, bounded; log those left unanswered
        (their records are unfinished: nothing of them is committed)."""
        if self._settle_writes is None:
            return
        left = self._settle_writes(partitions, self._opt.settle_timeout)
        if left:
            log.warning("revoke_flush_incomplete", partitions=partitions, outstanding=left)

    def _call_in_loop(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn`` on the event loop from the Kafka thread and wait for it (bounded)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise ConsumerError("rebalance callback outside the run loop")
        future = asyncio.run_coroutine_threadsafe(fn(*args), loop)
        try:
            return future.result(timeout=self._opt.revoke_timeout + 10.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ConsumerError("the event loop did not answer a rebalance callback") from None

    async def _assigned_in_loop(self, partitions: list[int]) -> None:
        # Idle time counts from the assignment: new partitions have not been fetched yet.
        self._last_record = self._now()
        # Not reported yet: the first report makes the service ready (``/readyz``), which it
        # is once a partition's profiles are back, as before the restore left this callback.
        self._restores.start(partitions)
        if not partitions:
            # An empty assignment (more members than partitions; the classic protocol calls
            # back with it): in the group, with nothing to restore.
            self._telemetry.in_group(True)

    def _restored(self, partitions: list[int], records: int, seconds: float) -> None:
        """On the loop: the restore of ``partitions`` is complete (their fence written)."""
        self._assigned.update(partitions)
        self._last_record = self._now()
        # on_assign paused them on the Kafka thread: the next back-pressure pass resumes those
        # not saturated (and keeps every one paused while the auth gate is closed).
        self._paused.update(partitions)
        self._report_partitions()
        self._telemetry.in_group(True)
        self._telemetry.profiles_restored(seconds)
        log.info(
            "partitions_restored", partitions=partitions, records=records, seconds=round(seconds, 3)
        )

    async def _lost_in_loop(self, partitions: list[int]) -> None:
        """A loss, on the loop: the partitions dropped as a revoke without a commit, then the
        member reported out of its group again. ``on_lost`` said so on the Kafka thread at once,
        but a restore whose read ended just before the loss may have been completed on the loop
        since (its cancel had not reached the loop yet), reporting the member in its group for
        partitions it no longer owns; the loop's last word on a loss is that it is out."""
        await self._revoke_in_loop(partitions, False)
        self._telemetry.in_group(False)

    async def _revoke_in_loop(self, partitions: list[int], commit: bool) -> dict[int, int]:
        # A revoked partition's running records get revoke_timeout to finish; a lost one's are
        # abandoned at once: another member may own it already, so nothing more of it may reach
        # Button or be committed from here.
        # One deadline for both steps: the Kafka thread waits for this callback only so long
        # (``_call_in_loop``), and giving up on it midway would leave the partitions' records
        # running on a member that no longer owns them.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._opt.revoke_timeout
        # A partition still restoring has nothing to finish or commit: stop its restore.
        await self._restores.cancel(partitions, self._opt.revoke_timeout)
        # On close, the shutdown's drain had the records' time already.
        grace = max(deadline - loop.time(), 0.0) if commit and self._closing is None else 0.0
        report = await self._dispatcher.revoke(partitions, grace)
        offsets = {p: o for p, o in report.committable.items() if commit and o is not None}
        if report.abandoned:
            log.warning("revoke_abandoned", partitions=partitions, abandoned=report.abandoned)
        self._assigned.difference_update(partitions)
        self._paused.difference_update(partitions)
        self._reset.difference_update(partitions)
        self._report_partitions()
        self._update_in_flight()
        return offsets

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> RunStats:
        """Run until stopped; raise if a record could not be finished (never drop one)."""
        self._loop = asyncio.get_running_loop()
        self.stats.started_at = self._now()
        await self._source.start(self)
        self._telemetry.started()
        self._last_record = self._now()
        last_lag = 0.0
        last_housekeeping = self._now()
        try:
            while (
                not self._stop.is_set()
                and self._dispatcher.failure is None
                and self._restores.failure is None
                and self._side_failure() is None
            ):
                records = await self._source.poll(
                    self._opt.max_poll_records, self._opt.poll_timeout
                )
                now = self._now()
                self._telemetry.polled(now)
                self._note_resets()
                if records:
                    self._last_record = now
                    self._submit(records)
                self._reach_ends()
                await self._store_finished()
                await self._apply_backpressure()
                if now - last_lag >= self._opt.lag_interval and (
                    self._lag_task is None or self._lag_task.done()
                ):
                    # Beside the loop, never awaited by it: while a coordinator or a leader
                    # does not answer, the read waits out its timeouts (seconds), and polling,
                    # storing finished offsets and pausing must go on meanwhile.
                    last_lag = now
                    self._lag_task = asyncio.create_task(self._report_lag())
                if (
                    self._housekeeping is not None
                    and now - last_housekeeping >= self._opt.housekeeping_interval
                    and (self._housekeeping_task is None or self._housekeeping_task.done())
                ):
                    # Beside the loop, never awaited by it: a storm of expired profiles must not
                    # stop polling (the group would drop the member, liveness kill the pod).
                    last_housekeeping = now
                    self._housekeeping_task = asyncio.create_task(
                        self._run_housekeeping(self._housekeeping)
                    )
                if await self._idle_long_enough(now):
                    log.info("idle_stop", idle_seconds=round(now - self._last_record, 1))
                    break
        finally:
            await self._shutdown()
        failure = self._dispatcher.failure or self._restores.failure or self._side_failure()
        if failure is not None:
            raise failure
        return self.stats

    @staticmethod
    async def _run_housekeeping(job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await job()
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.warning("housekeeping_failed", error=str(exc), exc_type=type(exc).__name__)

    def _submit(self, records: list[Record]) -> None:
        """Hand each record to its key's lane, except inert ones (a view or open that can
        change nothing: ``consumer.domain.triage``), finished here at once, without a task, and
        reported together once the batch is handed out (``RecordHandler.finish_inert``).

        Each value is decoded here when that needs no I/O, and the lane's job gets the result.
        An inert record needs neither its key's order nor Button: finishing it before earlier
        records of its key changes nothing they do, and its offset is committed only once every
        offset below it is finished (``Watermarks``).
        """
        self.stats.received += len(records)
        self._telemetry.records_received(self._source.topic, len(records))
        pipeline, dispatcher = self._pipeline, self._dispatcher
        inert: list[tuple[Record, InertEvent]] = []
        kept, restarts = self._drop_redelivered(records)
        for record in kept:
            if restarts and restarts.get(record.partition) is record:
                self._restart(record, restarts)
            decoded = pipeline.triage(record)
            if isinstance(decoded, InertEvent):
                if dispatcher.finish_now(record.partition, record.offset):
                    inert.append((record, decoded))
                continue
            dispatcher.submit(
                record.partition, record.offset, record.key, self._job(record, decoded)
            )
        if inert:  # reported together, before any offset of theirs can be stored
            pipeline.finish_inert(inert)
        self._update_in_flight()

    def _reach_ends(self) -> None:
        """Partition ends the fetcher reached (after the records of the same polls, which are
        tracked by now, with nothing awaited in between): the offsets between a partition's
        last record and its end are transaction markers or aborted records, never handed out,
        and the end is committed once the records before it are finished
        (``Dispatcher.reach_end``)."""
        restarted, self._restarted = self._restarted, set()
        for partition, end in self._source.ends_reached().items():
            # An end of a partition that restarted in this pass may be one the fetcher reached
            # before its offset reset, past the new offsets: the next one will do.
            if partition in self._assigned and partition not in restarted:
                self._dispatcher.reach_end(partition, end)

    def _note_resets(self) -> None:
        """Partitions the Kafka client reset by ``auto.offset.reset`` in the last poll
        (``Source.offsets_reset``): those with records tracked may go back to offsets received
        already (``_drop_redelivered``). A reset before any record (the committed offset out of
        range at assignment) starts where nothing was received: nothing to note."""
        for partition in self._source.offsets_reset():
            if self._watermarks.last_tracked(partition) is not None:
                self._reset.add(partition)

    def _drop_redelivered(self, records: list[Record]) -> tuple[list[Record], dict[int, Record]]:
        """``records`` without those at or below the highest offset already received from their
        partition since it was assigned, unless the Kafka client reset that partition's fetch
        position since: then such a record is new, and the partition restarts there. Returns the
        records kept and, per partition that restarts, the kept record it restarts at (the
        records before it in the batch still belong to the earlier offsets).

        librdkafka (2.16) can hand records out again: for a partition without a committed
        offset (a new group's first run) it looks up ``auto.offset.reset``'s offset; a resume
        during that lookup (the restore's, as the partition's profiles are back) starts a
        second one, and the first one's answer, outdated by the resume, re-arms librdkafka's
        offset-query timer (0.5 s), which then resets the fetch to the partition's start again:
        what was fetched meanwhile is handed out a second time. Handling them again would break
        the per-partition offset order the commit position rests on (``Watermarks``), so they
        are dropped, counted and logged once per partition and batch: at info when the records
        handed out again start at the first offset received since the assignment (this start
        over, a part of starting: ``from_start``), as a warning otherwise. (Giving such
        partitions an explicit start at assignment avoids the lookup, but needs a call to the
        group coordinator inside the rebalance callback, which made a leaving member overrun
        its close budget; a seek before the resume starts a lookup of its own, as racy.) That
        reset is a lookup librdkafka logs at debug level only: it never reaches
        ``Source.offsets_reset``.

        An offset reset because the position was out of range does (``kafka_offset_reset``):
        the input topic deleted and created again under the service (its offsets start at 0
        again), or its log truncated below the position. (librdkafka's KIP-320 truncation
        detection seeks back without a warning line: records after such a seek are still
        dropped here.) The records from the new position on
        are new even at offsets received before: the first record of such a partition at or
        below the highest offset received restarts the partition's offsets
        (``Dispatcher.restart``; logged as ``partition_restarted``): it and the records after
        it are processed, the records of the earlier offsets still in flight finish in their
        lanes (a key's records keep their order), and the partition's commit position is held
        until they have, then follows the new offsets (below the old ones).
        """
        highest: dict[int, int | None] = {}
        dropped: dict[int, list[int]] = {}
        from_start: dict[int, bool] = {}
        restarts: dict[int, Record] = {}
        kept: list[Record] = []
        started_over = self._started_over
        for record in records:
            partition = record.partition
            if partition not in highest:
                highest[partition] = self._watermarks.last_tracked(partition)
            last = highest[partition]
            if last is not None and record.offset <= last:
                if partition not in self._reset:
                    if partition not in dropped:
                        from_start[partition] = partition in started_over or (
                            record.offset == self._first_received.get(partition)
                        )
                        if from_start[partition]:
                            started_over.add(partition)
                    dropped.setdefault(partition, []).append(record.offset)
                    continue
                self._reset.discard(partition)
                restarts[partition] = record
                self._first_received[partition] = record.offset
            elif last is None:
                self._first_received[partition] = record.offset
            if started_over:
                started_over.discard(partition)  # caught up: a record beyond those received
            highest[partition] = record.offset
            kept.append(record)
        for partition, offsets in dropped.items():
            self.stats.redelivered += len(offsets)
            self._telemetry.records_redelivered(partition, len(offsets))
            start = from_start[partition]
            (log.info if start else log.warning)(
                "records_redelivered",
                partition=partition,
                first=offsets[0],
                last=offsets[-1],
                count=len(offsets),
                received_up_to=self._watermarks.last_tracked(partition),
                from_start=start,
            )
        return kept, restarts

    def _restart(self, record: Record, restarts: dict[int, Record]) -> None:
        """Restart ``record``'s partition at it (``_drop_redelivered``), once the records of the
        batch before it are tracked."""
        partition = record.partition
        received = self._watermarks.last_tracked(partition)
        del restarts[partition]
        self._restarted.add(partition)
        self._dispatcher.restart(partition)
        log.warning(
            "partition_restarted",
            partition=partition,
            offset=record.offset,
            received_up_to=received,
            earlier_in_flight=self._watermarks.in_flight(partition),
        )

    def _job(self, record: Record, event: CommerceEvent | None = None) -> Job:
        async def job() -> None:
            # An exception here (the DLQ cannot be written) leaves the offset unfinished; the
            # dispatcher records it and the loop stops consuming.
            await self._pipeline.handle(record, event)

        return job

    async def _idle_long_enough(self, now: float) -> bool:
        """``stop_when_idle`` reached: the idle clock counts only while nothing waits.

        A paused partition, or records still in Kafka (behind the partition's end offset at the
        broker: a restore that just ended has not fetched yet), restart the clock; records in
        flight hold the stop. So a run never stops with records left to deliver.
        """
        limit = self._opt.stop_when_idle
        if limit is None or not self._assigned:
            return False
        if self._paused or self._restores.restoring:
            self._last_record = now
            return False
        if now - self._last_record < limit or self._watermarks.total_in_flight() > 0:
            return False
        try:
            backlog = await self._source.backlog(sorted(self._assigned))
        except ConsumerError:
            backlog = {-1: 1}  # unknown: not provably drained
        if any(count > 0 for count in backlog.values()):
            self._last_record = now
            return False
        return True

    async def _store_finished(self) -> None:
        """Store the offsets finished records advanced; once nothing is in flight any more,
        commit them at once: the periodic commit (every second) would leave the end of a burst
        uncommitted (lag that is not there, a longer replay after a crash) for up to a second.
        Under load records stay in flight, and the periodic commit alone sends offsets. At low
        traffic every record drains the pipeline: at most one such commit per
        ``drain_commit_interval``, so that commits do not follow the records' rate; a drain
        within it is committed by the first loop pass after it (a pass comes at least every
        ``poll_timeout``), unless records are in flight again by then."""
        advanced = self._watermarks.take_advanced()
        self._commit_owed = self._commit_owed or bool(advanced)
        commit = False
        if self._commit_owed and self._dispatcher.total_in_flight() == 0:
            now = self._now()
            if now - self._drain_committed >= self._opt.drain_commit_interval:
                self._drain_committed = now
                self._commit_owed = False
                commit = True
        if advanced or commit:
            await self._source.store(advanced, commit=commit)
        self._update_in_flight()

    def _update_in_flight(self) -> None:
        # The dispatcher is the one owner of the count (records a revocation or the shutdown
        # deadline drops are never "finished", so no other tally stays exact).
        self._telemetry.in_flight(self._dispatcher.total_in_flight())

    def _report_partitions(self) -> None:
        # A restoring partition is assigned and paused (it is not fetched until restored).
        restoring = self._restores.restoring
        self._telemetry.partitions(len(self._assigned | restoring), len(self._paused | restoring))

    async def _apply_backpressure(self) -> None:
        # Every partition pauses while any gate is closed: the auth gate (Button refuses the
        # key) or the circuit breaker (Button pushes back or is down).
        breaker = self._breaker
        held = breaker is not None and not breaker.is_open
        if self._gate.closed or held:
            wanted = set(self._assigned)
            if self._dispatcher.total_in_flight() == 0:
                # Only a record in flight probes whether Button accepts the key again; with none
                # left (revoked with its partition), fetch one batch to probe with, then pause.
                wanted = set()
        else:
            wanted = set(self._dispatcher.saturated_partitions(self._assigned)) & self._assigned
        self._telemetry.auth_paused(self._gate.closed)
        if breaker is not None:
            self._telemetry.breaker(held, breaker.reason)
        self._telemetry.paused("backpressure", bool(wanted) and not (self._gate.closed or held))
        to_pause = wanted - self._paused
        to_resume = self._paused - wanted
        if to_pause:
            await self._source.pause(sorted(to_pause))
            self._paused |= to_pause
        if to_resume:
            await self._source.resume(sorted(to_resume))
            self._paused -= to_resume
        if to_pause or to_resume:
            self._report_partitions()
        # What changed, and every partition paused after it (``paused``).
        for event, changed in (("partitions_paused", to_pause), ("partitions_resumed", to_resume)):
            if changed:
                log.info(
                    event,
                    partitions=sorted(changed),
                    paused=sorted(self._paused),
                    auth=self._gate.closed,
                    held=held,
                )

    async def _report_lag(self) -> None:
        """Read and report the lag (a task beside the loop; the next one starts only after) of
        every partition owned: restored ones and those being restored, whose records wait all
        the restore long (a backlog the lag alerts must see). Owning none, the brokers are asked
        all the same (``Source.reach``), so ``broker_reachable`` says whether they answer."""
        owned = sorted(self._owned())
        try:
            answer = await self._read_brokers(owned)
        except ConsumerError as exc:
            # Not ready until a read is answered again: the next one comes at the next interval.
            if self._broker_reachable:
                log.warning("broker_unreachable", error=str(exc))
            self._broker_reachable = False
            self._telemetry.broker_reachable(False)
            return
        except Exception as exc:  # noqa: BLE001 - a task nobody awaits: say it, read again later
            log.warning("lag_read_failed", error=str(exc), exc_type=type(exc).__name__)
            return
        if not self._broker_reachable:
            log.info("broker_reachable")
        self._broker_reachable = True
        self._telemetry.broker_reachable(True)
        # A rebalance may have revoked partitions while the read waited: not theirs to report.
        now_owned = self._owned()
        self._telemetry.lags({p: answer[p] for p in answer if p in now_owned})

    async def _read_brokers(self, owned: list[int]) -> dict[int, PartitionLag]:
        """``Source.lag`` of ``owned``; ``Source.reach`` (and no lag) when it is empty; a read that
        fails while the brokers answered is asked again once, ``read_retry_delay`` later: a
        broker of a rolling restart answers one with a stale leadership (FENCED_LEADER_EPOCH,
        cleared for the next read), and the group's coordinator moves (NOT_COORDINATOR) or one
        killed lets it time out while its partitions move on. Raises the second failure's
        ``ConsumerError``."""
        for attempt in (1, 2):
            try:
                if owned:
                    return await self._source.lag(owned)
                await self._source.reach()
                return {}
            except ConsumerError as exc:
                if attempt == 2 or not self._broker_reachable:
                    raise
                log.info("broker_read_retried", error=str(exc))
                await asyncio.sleep(self._opt.read_retry_delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _owned(self) -> set[int]:
        """Partitions assigned to this member: restored, or being restored."""
        return self._assigned | self._restores.restoring

    async def _shutdown(self) -> None:
        self._telemetry.stopping()
        running = [
            task
            for task in (self._housekeeping_task, self._lag_task)
            if task is not None and not task.done()
        ]
        self._housekeeping_task = self._lag_task = None
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        await self._restores.close(self._opt.revoke_timeout)
        if self._assigned:
            await self._source.pause(sorted(self._assigned))
        drained = await self._dispatcher.drain(self._opt.shutdown_timeout)
        if not drained:
            log.warning("shutdown_deadline", unfinished=self._watermarks.total_in_flight())
        # Every position, not only those advanced since the last store: the commits on drain
        # are asynchronous, and the revocation that close() triggers relies on this one (it
        # does not commit what this committed: ``_revoked_on_close``).
        finished = self._watermarks.take_advanced()
        positions = {
            p: offset
            for p in sorted(self._watermarks.partitions & self._assigned)
            if (offset := self._watermarks.committable(p)) is not None
        }
        committed: dict[int, int] = {}
        if finished or positions:
            try:
                if finished:
                    await self._source.store(finished)
                if positions:
                    await self._source.commit(positions)
                committed = positions
            except ConsumerError as exc:
                # Bounded (the commit's share of the budget); not committed: processed again.
                log.warning("shutdown_commit_failed", error=str(exc), offsets=positions)
        self._update_in_flight()
        self._closing = committed
        await self._source.close()
        self.stats.stopped_at = self._now()
