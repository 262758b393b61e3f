"""Readiness that follows the group's membership (``Telemetry.in_group``) against the order in
which the Kafka thread and the event loop run.

``Worker.on_lost`` (the Kafka thread) reports the member out of its group at once, then asks
the loop to cancel the lost partitions' restores. A restore whose read had just ended is
completed on the loop before that cancel reaches it, and its ``_restored`` reports the member in
its group again, for partitions it no longer owns. Nothing cleared that until the group handed
it an assignment (which a coordinator that cannot write refuses for as long as that lasts), so
the loss's work on the loop now ends by reporting the member out again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from tests.fakes import DEADLINE
from tests.unit.test_worker import Harness, run


class _RecordingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor (``asyncio.to_thread``), keeping every future it hands out,
    so a test can tell when a worker thread's result has been handed to the loop."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted: list[concurrent.futures.Future[Any]] = []

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self.submitted.append(future)
        return future


def test_a_restore_ending_as_its_partition_is_lost_leaves_the_member_out_of_its_group() -> None:
    """The restore of partition 1 has read its changelog (its result is on its way to the
    loop) when the member loses the partition: the member owns nothing, and must not be
    reported in its group."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        executor = _RecordingExecutor()
        loop.set_default_executor(executor)
        h = Harness(assign=())
        left_group = threading.Event()
        record_in_group = h.telemetry.in_group

        def in_group(member: bool) -> None:
            record_in_group(member)
            if not member:
                left_group.set()

        h.telemetry.in_group = in_group  # type: ignore[method-assign]
        async with h.running():
            h.held_restores.add(1)
            await asyncio.wait_for(h.source.assign([1]), DEADLINE)
            await h.source.until(lambda: [1] in h.restored)
            (restore,) = [f for f in executor.submitted if not f.done()]
            # The loop's thread is held from here to the next await: what the threads hand
            # to it meanwhile runs afterwards, in the order it was handed over.
            handed_over = threading.Event()
            h.release_restore()
            restore.add_done_callback(lambda _f: handed_over.set())
            assert handed_over.wait(DEADLINE)  # the restore's result is queued on the loop
            kafka_thread = threading.Thread(target=h.worker.on_lost, args=([1],))
            kafka_thread.start()
            assert left_group.wait(DEADLINE)  # on_lost has said so, its revoke is on its way
            await asyncio.to_thread(kafka_thread.join, DEADLINE)
            assert not kafka_thread.is_alive()
            await h.source.passes(2)
            owned: object = (h.worker.restoring, h.dropped[-1:])
            assert owned == (frozenset(), [[1]])
            assert h.telemetry.named("in_group")[-1] == (False,)

    run(scenario)
