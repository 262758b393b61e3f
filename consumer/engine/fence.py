"""Repairs of the changelog fence while a partition is owned (DESIGN, 7).

A former owner stalled past its session timeout can deliver its queued profile writes at any
time, also long after the new owner's restore: such a record lands in the changelog after the
owner's own record of its key, and compaction keeps the last record of a key. The changelog
watch (``consumer.adapters.changelog_watch``) reads the owned partitions from where their
restore ended, on a thread of its own, and reports each record stamped with an epoch below the
owner's; ``LateWriteRepair`` then writes the key again, on the event loop and through the
store, so the repair is ordered with the owner's own writes of that key (the changelog keeps
one partition's writes in the order they were queued) and carries the profile held now.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import structlog

from consumer.engine.profiles import ProfileStore
from consumer.ports import Changelog, Telemetry

log = structlog.get_logger("consumer.profiles")


class LateWriteRepair:
    """Writes a key of an owned changelog partition again after a former owner's late record
    of it landed there.

    ``found`` may be called from any thread (the watch's); the repair itself runs on the event
    loop ``attach`` named, in one step: the check that the partition is still held with an
    epoch above the late record's, and the queuing of the write (the held value stamped with
    the owner's epoch, or a stamped tombstone when no profile of the key is held:
    ``ProfileStore.repair``). Each repair the changelog acknowledged is counted
    (``changelog_repaired("watch", 1)``) and logged (warning ``changelog_fenced_write_repaired``);
    a write the broker refuses is logged only (``changelog_repair_failed``): the next restore of
    the partition fences the late record and repairs the key again.

    Args:
        store: the profiles of the owned partitions.
        changelog: where the repairs go.
        telemetry: where repairs are counted.
    """

    def __init__(self, store: ProfileStore, changelog: Changelog, telemetry: Telemetry) -> None:
        self._store = store
        self._changelog = changelog
        self._telemetry = telemetry
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop repairs run on (the service's, once it runs)."""
        self._loop = loop

    def found(self, partition: int, key: bytes, epoch: int) -> None:
        """A record of ``key`` stamped with ``epoch`` (0: none) landed in ``partition``; any
        thread. Handed to the loop; ignored before ``attach`` or once the loop is closed."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the service stopped
            loop.call_soon_threadsafe(self._repair, partition, key, epoch)

    def _repair(self, partition: int, key: bytes, epoch: int) -> None:
        owner = self._store.epoch(partition)
        if epoch >= owner:
            # Not held any more (0), this owner's own record, or a newer owner's: this member
            # is the former owner then, and its revocation is on its way.
            return
        write = self._store.repair(partition, key)
        if write is None:
            return
        ack = asyncio.ensure_future(
            self._changelog.write(partition, key, write.value, epoch=write.epoch)
        )
        ack.add_done_callback(
            functools.partial(
                self._acknowledged,
                partition=partition,
                owner=owner,
                late=epoch,
                tombstone=write.value is None,
            )
        )

    def _acknowledged(
        self, ack: asyncio.Future[Any], *, partition: int, owner: int, late: int, tombstone: bool
    ) -> None:
        """The repair's write is settled: counted and logged once the changelog acknowledged
        it; a refused one is logged ``changelog_repair_failed`` only."""
        if ack.cancelled():
            return
        error = ack.exception()
        if error is not None:
            log.warning("changelog_repair_failed", partition=partition, error=str(error))
            return
        self._telemetry.changelog_repaired("watch", 1)
        log.warning(
            "changelog_fenced_write_repaired",
            partition=partition,
            epoch=owner,
            late_epoch=late,
            keys=1,
            when="watch",
            tombstone=tombstone,
        )
