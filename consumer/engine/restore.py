"""Profile restores beside the poll loop: one job per assignment, cancelled by a revoke.

A newly assigned partition stays paused until its profiles are back from the changelog (DESIGN,
7). The restore reads the changelog on a thread of its own, so the poll loop keeps polling (the
group keeps the member, ``/healthz`` stays live, the other partitions keep flowing) however long
a large changelog takes. ``Restores`` is the loop's bookkeeping of those jobs:

- ``start`` (loop thread) runs the restore of an assignment's partitions on a worker thread;
  when it has read them (and written their fence), ``on_ready`` gets the partitions and the
  loop starts fetching them;
- ``cancel`` (a revoke or a loss of a restoring partition) tells the job to stop reading that
  partition and waits, bounded, for the job to end: the partition is then neither fenced nor
  made ready, and the profiles read so far are dropped;
- a restore that fails keeps its error in ``failure``: the loop stops with it (a partition is
  never processed without its profiles);
- a partition assigned again while a cancelled job of it still runs is restored only after
  that job has ended, so the two never write the same partition of the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import structlog

log = structlog.get_logger("consumer.restore")


class RestoreCancel:
    """The partitions of one restore job that must stop (revoked or lost); thread-safe.

    The loop cancels; the restore, on its own thread, asks ``cancelled`` between batches and
    skips (and stops reading) a cancelled partition.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled: frozenset[int] = frozenset()

    def cancel(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self._cancelled = self._cancelled | frozenset(partitions)

    def cancelled(self, partition: int) -> bool:
        return partition in self._cancelled

    @contextlib.contextmanager
    def holding(self, partition: int) -> Iterator[bool]:
        """Hold off the cancellation of ``partition`` while the block runs; yield whether it
        is still live (not cancelled). A ``cancel`` made meanwhile waits for the block, so the
        restore's last steps for a partition (install, claim, fence, repairs, watch) happen
        whole while it is owned, or not at all: a partition is never both cancelled and
        fenced. Keep the block short: the revoke waits for it."""
        with self._lock:
            yield partition not in self._cancelled

    def snapshot(self) -> frozenset[int]:
        """Every cancelled partition so far (a consistent copy)."""
        return self._cancelled


RestoreFn = Callable[[list[int], RestoreCancel], int]
"""Restores the profiles of partitions and writes their fences, blocking (run on a thread);
returns the changelog records read. It skips a partition once ``cancel`` names it (and writes no
fence for it). Raises on a failure to read or fence."""


class _Job:
    __slots__ = ("cancel", "partitions", "task")

    def __init__(self, partitions: list[int]) -> None:
        self.partitions = partitions
        self.cancel = RestoreCancel()
        self.task: asyncio.Task[None] | None = None

    @property
    def live(self) -> set[int]:
        cancelled = self.cancel.snapshot()
        return {p for p in self.partitions if p not in cancelled}


class Restores:
    """The restore jobs of one worker; every method runs on the event loop's thread.

    Args:
        restore: the blocking restore (``RestoreFn``), run on a worker thread.
        drop: forgets the profiles of partitions (those of a cancelled restore).
        on_ready: called on the loop with the partitions whose restore completed.
        monotonic: the clock of the restore's duration (seconds).
    """

    def __init__(
        self,
        restore: RestoreFn,
        drop: Callable[[list[int]], None],
        on_ready: Callable[[list[int], int, float], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._restore = restore
        self._drop = drop
        self._on_ready = on_ready
        self._now = monotonic
        self._jobs: set[_Job] = set()
        self.failure: BaseException | None = None
        """The error of a restore that failed: the loop stops with it."""

    @property
    def restoring(self) -> frozenset[int]:
        """Partitions whose restore is running and not cancelled (their records wait)."""
        return frozenset(p for job in self._jobs for p in job.live)

    def start(self, partitions: list[int]) -> None:
        """Restore ``partitions`` beside the loop; ``on_ready`` follows when they are back."""
        if not partitions:
            return
        earlier = [
            job.task
            for job in self._jobs
            if job.task is not None and set(job.partitions) & set(partitions)
        ]
        job = _Job(list(partitions))
        self._jobs.add(job)
        job.task = asyncio.create_task(self._run(job, earlier))

    async def _run(self, job: _Job, earlier: list[asyncio.Task[None]]) -> None:
        try:
            if earlier:
                # A cancelled job of the same partition may still be writing the store.
                await asyncio.wait(earlier)
            started = self._now()
            try:
                read = await asyncio.to_thread(self._restore, job.partitions, job.cancel)
            except Exception as exc:  # noqa: BLE001 - kept for the loop, which stops with it
                if job.live:
                    self.failure = exc
                    log.error("restore_failed", partitions=job.partitions, error=str(exc))
                return
            finally:
                cancelled = sorted(set(job.partitions) - job.live)
                if cancelled:
                    # Read up to the cancellation, possibly after the revoke dropped them.
                    self._drop(cancelled)
            ready = sorted(job.live)
            if ready:
                self._on_ready(ready, read, self._now() - started)
        finally:
            self._jobs.discard(job)

    async def cancel(self, partitions: Iterable[int], wait: float) -> None:
        """Stop restoring ``partitions``; wait up to ``wait`` seconds for their jobs to end."""
        wanted = set(partitions)
        tasks = []
        for job in self._jobs:
            if wanted & set(job.partitions):
                job.cancel.cancel(wanted & set(job.partitions))
                if job.task is not None:
                    tasks.append(job.task)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=wait)
            if pending:
                log.warning("restore_cancel_pending", partitions=sorted(wanted))

    async def close(self, wait: float) -> None:
        """Cancel every restore (the worker stops)."""
        await self.cancel({p for job in self._jobs for p in job.partitions}, wait)
