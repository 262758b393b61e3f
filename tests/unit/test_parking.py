"""A dead-lettered event parks its order: later events follow it to the DLQ, not to Button."""

from __future__ import annotations

import pytest

from consumer.engine.parking import ParkedOrder, ParkingLot

DAY = 24 * 3600.0


class FakeClock:
    """Wall time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_unparked_order_is_sent() -> None:
    """An order with no dead letter is not parked."""
    parked = ParkingLot(clock=FakeClock())
    assert parked.follow("o-1") is None
    assert "o-1" not in parked


def test_followers_of_a_parked_order_are_parked_and_counted() -> None:
    """After a dead letter, each later event of the order is parked behind it, same reason."""
    clock = FakeClock()
    parked = ParkingLot(clock=clock)
    assert parked.park("o-1", "http_400") is True
    first = parked.follow("o-1")
    second = parked.follow("o-1")
    assert first is not None
    assert second is not None
    assert (second.reason, second.followers) == ("http_400", 2)
    assert parked.follow("o-2") is None


def test_reason_names_the_first_dead_letter_and_counts_the_follower() -> None:
    """reason() is the pipeline's one call: None means send, else park with this reason."""
    parked = ParkingLot(clock=FakeClock())
    assert parked.reason("o-1") is None
    parked.park("o-1", "http_400")
    assert parked.reason("o-1") == "http_400"
    entry = parked.get("o-1")
    assert entry is not None
    assert entry.followers == 1


def test_parking_twice_keeps_the_first_reason() -> None:
    """The reason of the first dead letter is the one the operator needs."""
    parked = ParkingLot(clock=FakeClock())
    parked.park("o-1", "http_400")
    assert parked.park("o-1", "retries_exhausted") is False
    entry = parked.get("o-1")
    assert entry is not None
    assert entry.reason == "http_400"


def test_release_unparks() -> None:
    """A successful redrive releases the order: its next events go to Button again."""
    parked = ParkingLot(clock=FakeClock())
    parked.park("o-1", "http_400")
    assert parked.release("o-1") is True
    assert parked.release("o-1") is False
    assert parked.follow("o-1") is None


def test_entries_expire_after_ttl_since_last_touch() -> None:
    """An order untouched for ttl is forgotten; a follower refreshes it."""
    clock = FakeClock()
    parked = ParkingLot(clock=clock, ttl=10 * DAY)
    parked.park("o-1", "http_400")
    parked.park("o-2", "http_400")
    clock.now += 6 * DAY
    parked.follow("o-2")
    clock.now += 5 * DAY
    assert ("o-1" in parked, "o-2" in parked) == (False, True)


def test_expire_sweeps_oldest_first() -> None:
    """expire() drops every expired entry and stops at the first live one."""
    clock = FakeClock()
    parked = ParkingLot(clock=clock, ttl=10.0)
    parked.park("a", "x")
    clock.now += 5
    parked.park("b", "x")
    clock.now += 6
    assert parked.expire() == 1
    assert len(parked) == 1


def test_size_is_bounded_and_evictions_counted() -> None:
    """Beyond max_orders, the least recently touched order is evicted."""
    parked = ParkingLot(clock=FakeClock(), max_orders=2)
    parked.park("a", "x")
    parked.park("b", "x")
    parked.follow("a")
    parked.park("c", "x")
    assert ("a" in parked, "b" in parked, "c" in parked) == (True, False, True)
    assert parked.evicted == 1


def test_on_change_reports_parks_followers_and_releases() -> None:
    """The persistence hook sees every change, so the lead can write it to the changelog."""
    seen: list[tuple[str, int | None]] = []
    parked = ParkingLot(
        clock=FakeClock(),
        on_change=lambda order_id, entry: seen.append(
            (order_id, None if entry is None else entry.followers)
        ),
    )
    parked.park("o-1", "http_400")
    parked.follow("o-1")
    parked.release("o-1")
    assert seen == [("o-1", 0), ("o-1", 1), ("o-1", None)]


def test_restore_loads_live_entries_and_skips_expired_ones() -> None:
    """Entries from the durable copy come back; expired ones stay gone."""
    clock = FakeClock()
    parked = ParkingLot(clock=clock, ttl=DAY)
    now = clock.now
    loaded = parked.restore(
        [
            ParkedOrder("live", "http_400", parked_at=now - 100, touched_at=now - 10),
            ParkedOrder("old", "http_400", parked_at=now - 3 * DAY, touched_at=now - 2 * DAY),
        ]
    )
    assert loaded == 1
    assert ("live" in parked, "old" in parked) == (True, False)


def test_invalid_bounds_are_refused() -> None:
    """A zero ttl would park nothing."""
    with pytest.raises(ValueError, match="ttl"):
        ParkingLot(clock=FakeClock(), ttl=0)
