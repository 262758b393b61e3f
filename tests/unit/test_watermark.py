"""The commit position never passes an unfinished record, whatever order records finish in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.engine.watermark import PartitionWatermark, Watermarks


def test_nothing_tracked_means_nothing_to_commit() -> None:
    """A fresh partition has no committable offset."""
    assert PartitionWatermark().committable() is None


def test_committable_is_lowest_unfinished_offset() -> None:
    """Finishing a higher offset first does not move the position past the lower one."""
    mark = PartitionWatermark()
    for offset in (10, 11, 12):
        mark.track(offset)
    mark.finish(11)
    assert mark.committable() == 10
    mark.finish(10)
    assert mark.committable() == 12
    mark.finish(12)
    assert mark.committable() == 13


def test_gaps_in_offsets_are_respected() -> None:
    """Compacted topics skip offsets: the position jumps to the next tracked offset, not +1."""
    mark = PartitionWatermark()
    for offset in (5, 9, 40):
        mark.track(offset)
    mark.finish(5)
    assert mark.committable() == 9
    mark.finish(9)
    assert mark.committable() == 40


def test_in_flight_counts_unfinished_records() -> None:
    """Finished records waiting behind an unfinished one are not in flight."""
    mark = PartitionWatermark()
    for offset in range(4):
        mark.track(offset)
    mark.finish(2)
    mark.finish(3)
    assert mark.in_flight == 2


def test_offsets_must_increase() -> None:
    """Tracking an offset at or below the last one is a bug in the caller."""
    mark = PartitionWatermark()
    mark.track(3)
    with pytest.raises(ValueError, match="must increase"):
        mark.track(3)


@pytest.mark.parametrize("offset", [1, 2, 9])  # finished already, in a gap, never seen
def test_finishing_an_offset_not_in_flight_is_an_error(offset: int) -> None:
    """Unknown or already finished offsets are refused loudly, never silently."""
    mark = PartitionWatermark()
    mark.track(1)
    mark.track(3)
    mark.finish(1)
    with pytest.raises(ValueError, match="not in flight"):
        mark.finish(offset)


def test_watermarks_take_advanced_reports_each_move_once() -> None:
    """The loop stores only offsets that moved since it last asked."""
    marks = Watermarks()
    marks.track(0, 100)
    marks.track(1, 7)
    assert marks.take_advanced() == {0: 100, 1: 7}
    assert marks.take_advanced() == {}
    marks.finish(0, 100)
    assert marks.take_advanced() == {0: 101}


def test_late_finish_after_forget_is_ignored() -> None:
    """A record abandoned at revocation cannot move a later assignment of its partition."""
    marks = Watermarks()
    marks.track(0, 5)
    marks.track(0, 6)
    marks.finish(0, 6)
    assert marks.forget(0) == 5
    assert marks.finish(0, 5) is False
    marks.track(0, 5)
    assert marks.committable(0) == 5
    assert marks.in_flight(0) == 1


def test_last_tracked_is_the_highest_offset_received_since_the_assignment() -> None:
    """The worker drops records the Kafka client hands out again at or below it."""
    marks = Watermarks()
    assert marks.last_tracked(0) is None
    marks.track(0, 3)
    marks.track(0, 7)
    marks.finish(0, 3)
    marks.finish(0, 7)
    assert (marks.last_tracked(0), marks.last_tracked(1)) == (7, None)
    marks.forget(0)  # revoked: a new assignment starts from its committed offset
    assert marks.last_tracked(0) is None


def test_a_restart_holds_the_position_until_the_earlier_offsets_finish_then_follows_the_new() -> (
    None
):
    """After an offset reset the offsets start again below those tracked (the topic recreated):
    the new sequence may repeat an offset still in flight in the earlier one, each finishes in
    its own sequence, and the position moves back to the new sequence's only once the earlier
    one has no record in flight."""
    marks = Watermarks()
    for offset in (5, 6, 7):
        marks.track(0, offset)
    marks.finish(0, 5)
    assert marks.take_advanced() == {0: 6}
    earlier = marks.generation(0)
    marks.restart(0)
    assert (marks.last_tracked(0), marks.committable(0)) == (None, None)
    for offset in (6, 7):  # the same offsets as two records of the earlier sequence in flight
        marks.track(0, offset)
    marks.finish(0, 6, marks.generation(0))
    marks.finish(0, 7, marks.generation(0))
    assert (marks.in_flight(0), marks.total_in_flight(), marks.committable(0)) == (2, 2, None)
    assert marks.take_advanced() == {}
    marks.finish(0, 6, earlier)
    assert marks.committable(0) is None
    marks.finish(0, 7, earlier)
    assert (marks.committable(0), marks.take_advanced(), marks.in_flight(0)) == (8, {0: 8}, 0)
    with pytest.raises(ValueError, match="not in flight"):
        marks.finish(0, 7, marks.generation(0))
    assert marks.finish(0, 7, earlier) is False  # that sequence is gone


def test_a_restart_with_nothing_in_flight_moves_the_position_back_at_once() -> None:
    marks = Watermarks()
    marks.track(0, 30)
    marks.finish(0, 30)
    assert marks.take_advanced() == {0: 31}
    marks.restart(0)
    marks.track(0, 0)
    assert marks.take_advanced() == {0: 0}
    marks.finish(0, 0, marks.generation(0))
    assert (marks.take_advanced(), marks.forget(0)) == ({0: 1}, 1)


def test_forget_while_earlier_offsets_are_in_flight_commits_nothing() -> None:
    """A revocation before the earlier sequence finished: no offset is safe to commit."""
    marks = Watermarks()
    marks.track(0, 9)
    marks.restart(0)
    marks.track(0, 0)
    marks.finish(0, 0, marks.generation(0))
    assert (marks.forget(0), marks.total_in_flight()) == (None, 0)


def test_watermarks_count_in_flight_per_partition_and_total() -> None:
    """Backpressure reads in-flight counts per partition and across partitions."""
    marks = Watermarks()
    for offset in range(3):
        marks.track(0, offset)
    marks.track(1, 0)
    marks.finish(0, 1)
    assert (marks.in_flight(0), marks.in_flight(1), marks.in_flight(2)) == (2, 1, 0)
    assert marks.total_in_flight() == 3


def test_hundred_thousand_in_flight_finish_in_reverse() -> None:
    """The worst order for the head (reverse) still settles in one sweep."""
    mark = PartitionWatermark()
    for offset in range(100_000):
        mark.track(offset)
    for offset in range(99_999, 0, -1):
        mark.finish(offset)
    assert mark.committable() == 0
    mark.finish(0)
    assert mark.committable() == 100_000
    assert mark.in_flight == 0


@st.composite
def _offsets_and_completion_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60))
    start = draw(st.integers(min_value=0, max_value=1_000))
    offsets: list[int] = []
    position = start
    for gap in gaps:
        offsets.append(position)
        position += gap
    order = draw(st.permutations(range(len(offsets))))
    return offsets, list(order)


@given(_offsets_and_completion_order(), st.data())
def test_committable_is_min_unfinished_and_monotone(
    case: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    """For any interleaving of tracking and completion, committable == min(unfinished)."""
    offsets, order = case
    mark = PartitionWatermark()
    tracked: list[int] = []
    unfinished: set[int] = set()
    previous: int | None = None
    to_track = list(offsets)
    to_finish = [offsets[i] for i in order]
    while to_track or to_finish:
        # Only offsets already tracked can finish; interleave both steps at random.
        finishable = [o for o in to_finish if o in unfinished]
        if to_track and (not finishable or data.draw(st.booleans())):
            offset = to_track.pop(0)
            mark.track(offset)
            tracked.append(offset)
            unfinished.add(offset)
        else:
            offset = finishable[0]
            to_finish.remove(offset)
            mark.finish(offset)
            unfinished.discard(offset)
        expected = min(unfinished) if unfinished else tracked[-1] + 1
        actual = mark.committable()
        assert expected == actual
        assert actual is not None
        assert previous is None or actual >= previous
        assert mark.in_flight == len(unfinished)
        previous = actual


def test_an_end_reached_past_the_last_record_is_committable_once_everything_finished() -> None:
    """A transactional producer's commit marker (and an aborted transaction's records and
    marker) follow the last record: none is handed out under read_committed. The end the
    fetcher reached is committable once the records before it are finished, not before."""
    mark = PartitionWatermark()
    for offset in (10, 11, 12):
        mark.track(offset)
    mark.reach(16)
    mark.finish(12)
    mark.finish(11)
    assert mark.committable() == 10
    mark.finish(10)
    assert mark.committable() == 16


def test_an_end_reached_before_anything_was_handed_out_is_committable() -> None:
    """A group whose committed offset rests on a commit marker: the partition's end is at once
    committable."""
    mark = PartitionWatermark()
    mark.reach(33)
    assert mark.committable() == 33


@pytest.mark.parametrize("end", [12, 13])
def test_an_end_at_or_below_the_next_offset_changes_nothing(end: int) -> None:
    mark = PartitionWatermark()
    for offset in (10, 11, 12):
        mark.track(offset)
        mark.finish(offset)
    mark.reach(end)
    assert mark.committable() == 13


def test_a_record_after_an_end_reached_supersedes_it() -> None:
    """Records written after the end was reached: the position follows them, unfinished or
    finished, and never falls back to the old end."""
    mark = PartitionWatermark()
    mark.track(10)
    mark.finish(10)
    mark.reach(14)
    mark.track(14)
    assert mark.committable() == 14
    mark.track(15)
    mark.finish(14)
    mark.finish(15)
    assert mark.committable() == 16


def test_watermarks_reach_makes_a_tracker_for_an_owned_partition() -> None:
    """``take_advanced`` reports an end reached in a partition nothing was handed out of."""
    marks = Watermarks()
    marks.reach(3, 33)
    assert marks.take_advanced() == {3: 33}
    assert marks.take_advanced() == {}


@given(_offsets_and_completion_order(), st.data())
def test_an_end_reached_never_passes_an_unfinished_record(
    case: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    """Ends reached anywhere between the records (each beyond the last one handed out, as
    librdkafka reports them) leave committable at the lowest unfinished offset, and monotone."""
    offsets, order = case
    mark = PartitionWatermark()
    unfinished: set[int] = set()
    previous: int | None = None
    last: int | None = None
    to_track = list(offsets)
    to_finish = [offsets[i] for i in order]
    while to_track or to_finish:
        step = data.draw(st.sampled_from(["track", "finish", "reach"]))
        finishable = [o for o in to_finish if o in unfinished]
        if step == "reach":
            floor = 0 if last is None else last + 1
            ceiling = to_track[0] if to_track else floor + 5
            if ceiling < floor:
                continue
            mark.reach(data.draw(st.integers(floor, ceiling)))
        elif to_track and (step == "track" or not finishable):
            last = to_track.pop(0)
            mark.track(last)
            unfinished.add(last)
        elif finishable:
            offset = finishable[0]
            to_finish.remove(offset)
            mark.finish(offset)
            unfinished.discard(offset)
        actual = mark.committable()
        if unfinished:
            assert actual == min(unfinished)
        if actual is not None:
            assert previous is None or actual >= previous
            assert not to_track or actual <= to_track[0]
            previous = actual
