"""Which offset of each partition is safe to commit when records finish out of order.

Records of one partition are handed to the dispatcher in offset order but finish in any order
(different keys run concurrently, some retry for minutes). Kafka stores one number per partition,
so the only safe number is the *lowest unfinished offset*: committing it means "everything below
is finished", and a crash replays the unfinished record and anything after it (at-least-once,
DESIGN decision 1). This module computes that number.

Offsets may have gaps (compacted topics, transaction markers), so the tracker never assumes
``offset + 1``: it remembers the offsets it was given. The gap after a partition's last record
(a transaction's commit marker, an aborted transaction's records and marker, none of them handed
out under read_committed) is closed by ``reach``: the fetcher reached the partition's end there,
so once every record is finished that end is committable, as the Java consumer's position steps
over markers (KAFKA-6607); otherwise a partition written by a transactional producer never
shows lag 0. Cost: O(1) amortised per ``track`` and
``finish``; memory is O(records in flight) plus finished records still waiting behind an
unfinished lower one.

A partition's offsets increase for as long as the Kafka client's fetch position only moves
forward. An offset reset can move it back (``auto.offset.reset`` after the input topic was
deleted and created again, or its log truncated): the records from there on are new, at offsets
already tracked. ``restart`` begins a new sequence for the partition; the records of the earlier
one still in flight finish against it (by their ``generation``), and the partition's commit
position is held (``None``) until they are all finished, so that it never passes one of them.

Every method is synchronous and does no I/O; one event-loop thread owns an instance.
"""

from __future__ import annotations

from collections import deque


class PartitionWatermark:
    """The commit position of one partition.

    ``track`` each offset as it is handed out (strictly increasing, gaps allowed), ``finish`` it
    when the record is finished (any order). ``committable()`` is the offset to commit: the lowest
    unfinished offset, or ``last tracked + 1`` when everything is finished, or ``None`` before
    anything was tracked.
    """

    __slots__ = ("_end", "_last", "_order", "_unfinished")

    def __init__(self) -> None:
        # Tracked offsets not yet passed by the watermark, increasing. Invariant: the head, if
        # any, is unfinished, so it is the committable offset. Finished offsets behind an
        # unfinished one wait here until the head finishes.
        self._order: deque[int] = deque()
        self._unfinished: set[int] = set()
        self._last: int | None = None
        # Where the fetcher reached the partition's end, beyond the last tracked offset + 1.
        self._end: int | None = None

    def track(self, offset: int) -> None:
        """Record that ``offset`` was handed out. Offsets must strictly increase.

        Raises:
            ValueError: ``offset`` is not above the last tracked offset.
        """
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} tracked after {self._last}; offsets must increase")
        self._end = None  # a record after an end reached supersedes it (or, below it, belies it)
        self._last = offset
        self._order.append(offset)
        self._unfinished.add(offset)

    def finish(self, offset: int) -> None:
        """Record that the record at ``offset`` is finished (accepted, skipped or dead-lettered).

        Raises:
            ValueError: ``offset`` is not in flight (never tracked, or finished already).
        """
        try:
            self._unfinished.remove(offset)
        except KeyError:
            raise ValueError(f"offset {offset} is not in flight") from None
        order, unfinished = self._order, self._unfinished
        # Each offset is popped once, so this loop is O(1) amortised per finish.
        while order and order[0] not in unfinished:
            order.popleft()

    def reach(self, end: int) -> None:
        """The fetcher reached the partition's end at ``end`` (the next offset it would fetch,
        librdkafka's partition-EOF offset): the offsets from the last tracked one + 1 up to it
        hold nothing to hand out (transaction markers, aborted records), so once every tracked
        record is finished, ``committable()`` is ``end``. An end not beyond the last tracked
        offset says nothing and is ignored."""
        if self._last is None or end > self._last + 1:
            self._end = end if self._end is None else max(self._end, end)

    def committable(self) -> int | None:
        """The offset to commit: no unfinished record lies below it. ``None`` if nothing was
        tracked and no end reached."""
        if self._order:
            return self._order[0]
        if self._end is not None:
            return self._end
        return None if self._last is None else self._last + 1

    @property
    def in_flight(self) -> int:
        """Tracked records not yet finished."""
        return len(self._unfinished)

    @property
    def last_tracked(self) -> int | None:
        """The highest offset tracked so far."""
        return self._last

    @property
    def span(self) -> int:
        """Offsets from the committable one to the newest tracked, both included (0: none
        unfinished): what a crash would replay, finished records behind the head included."""
        if not self._order or self._last is None:
            return 0
        return self._last - self._order[0] + 1


class Watermarks:
    """Commit positions of every partition this consumer owns.

    Partitions appear on their first ``track``. ``forget`` drops a partition on revocation and
    returns its final committable offset; late ``finish`` calls for a forgotten partition are
    ignored (they return ``False``), so a record abandoned at revocation can never move the
    position of a later assignment of the same partition. ``restart`` begins a new sequence of
    a partition's offsets after an offset reset (see the module docstring).
    """

    __slots__ = ("_earlier", "_generations", "_parts", "_reported")

    def __init__(self) -> None:
        self._parts: dict[int, PartitionWatermark] = {}
        self._reported: dict[int, int] = {}
        # Per partition, the sequences before its last restart that still have records in
        # flight, by generation; and each partition's current generation (0 until a restart).
        self._earlier: dict[int, dict[int, PartitionWatermark]] = {}
        self._generations: dict[int, int] = {}

    def generation(self, partition: int) -> int:
        """The number of ``partition``'s current sequence of offsets (0 until a ``restart``):
        pass it to ``finish`` with a record tracked now."""
        return self._generations.get(partition, 0)

    def restart(self, partition: int) -> None:
        """Begin a new sequence of ``partition``'s offsets: the Kafka client's fetch position
        moved back (an offset reset), and the offsets tracked from now on may repeat earlier
        ones. Records of the earlier sequence still in flight are finished with their
        generation; until they all are, ``committable`` is ``None``."""
        part = self._parts.pop(partition, None)
        generation = self.generation(partition)
        if part is not None and part.in_flight:
            self._earlier.setdefault(partition, {})[generation] = part
        self._generations[partition] = generation + 1

    def track(self, partition: int, offset: int) -> None:
        """Record that ``offset`` of ``partition`` was handed out (see ``PartitionWatermark``)."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = PartitionWatermark()
        part.track(offset)

    def finish(self, partition: int, offset: int, generation: int | None = None) -> bool:
        """Record a finished record, of the sequence ``generation`` (``None``: the current
        one). Returns ``False`` if the partition is not owned (revoked) or that sequence is
        gone.

        Raises:
            ValueError: ``offset`` is not in flight in that sequence.
        """
        if generation is not None and generation != self.generation(partition):
            earlier = self._earlier.get(partition, {})
            part = earlier.get(generation)
            if part is None:
                return False
            part.finish(offset)
            if not part.in_flight:
                del earlier[generation]
                if not earlier:
                    del self._earlier[partition]
            return True
        part = self._parts.get(partition)
        if part is None:
            return False
        part.finish(offset)
        return True

    def reach(self, partition: int, end: int) -> None:
        """The fetcher reached ``partition``'s end at ``end`` (see ``PartitionWatermark.reach``);
        only for a partition this consumer owns (a tracker is made for it if needed)."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = PartitionWatermark()
        part.reach(end)

    def committable(self, partition: int) -> int | None:
        """The offset to commit for ``partition``, or ``None`` if nothing was tracked there
        (since its last ``restart``), or records of an earlier sequence are still in flight."""
        part = self._parts.get(partition)
        if part is None or partition in self._earlier:
            return None
        return part.committable()

    def last_tracked(self, partition: int) -> int | None:
        """The highest offset of ``partition`` handed out since it was assigned or last
        restarted (``None``: none, or the partition is not owned)."""
        part = self._parts.get(partition)
        return None if part is None else part.last_tracked

    def in_flight(self, partition: int) -> int:
        """Unfinished records of ``partition`` (of every sequence)."""
        part = self._parts.get(partition)
        earlier = sum(p.in_flight for p in self._earlier.get(partition, {}).values())
        return earlier + (0 if part is None else part.in_flight)

    def span(self, partition: int) -> int:
        """See ``PartitionWatermark.span``; 0 for a partition without a tracker."""
        part = self._parts.get(partition)
        return 0 if part is None else part.span

    def total_in_flight(self) -> int:
        """Unfinished records across every partition. O(partitions)."""
        earlier = sum(p.in_flight for parts in self._earlier.values() for p in parts.values())
        return earlier + sum(part.in_flight for part in self._parts.values())

    @property
    def partitions(self) -> frozenset[int]:
        """Partitions with a tracker."""
        return frozenset(self._parts)

    def take_advanced(self) -> dict[int, int]:
        """Committable offsets that moved since the previous call: what the loop should store.

        Cheap to call after every poll: O(partitions). Offsets only ever move forward, but
        after a ``restart``, where the new sequence's first one may lie below the last one.
        """
        advanced: dict[int, int] = {}
        for partition in self._parts:
            offset = self.committable(partition)
            if offset is not None and self._reported.get(partition) != offset:
                advanced[partition] = offset
                self._reported[partition] = offset
        return advanced

    def forget(self, partition: int) -> int | None:
        """Drop ``partition`` (revoked) and return its final committable offset, if any (none
        while records of a sequence before its last ``restart`` were unfinished)."""
        offset = self.committable(partition)
        self._parts.pop(partition, None)
        self._earlier.pop(partition, None)
        self._reported.pop(partition, None)
        return offset
