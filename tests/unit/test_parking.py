"""The in-memory parking of keyless records: park, keep the first reason, expire, bound."""

from __future__ import annotations

import pytest

from consumer.engine.parking import ParkingLot

DAY = 24 * 3600.0


class FakeClock:
    """Wall time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_unparked_order_is_not_parked() -> None:
    """An order with no dead letter is not parked."""
    parked = ParkingLot(clock=FakeClock())
    assert parked.get("o-1") is None
    assert "o-1" not in parked


def test_a_parked_order_carries_its_reason() -> None:
    """After a dead letter the order is parked with its reason; other orders are not."""
    parked = ParkingLot(clock=FakeClock())
    assert parked.park("o-1", "http_400") is True
    entry = parked.get("o-1")
    assert entry is not None
    assert entry.reason == "http_400"
    assert parked.get("o-2") is None


def test_parking_twice_keeps_the_first_reason() -> None:
    """The reason of the first dead letter is the one the operator needs."""
    parked = ParkingLot(clock=FakeClock())
    parked.park("o-1", "http_400")
    assert parked.park("o-1", "parked") is False
    entry = parked.get("o-1")
    assert entry is not None
    assert entry.reason == "http_400"


def test_release_unparks() -> None:
    """A replayed first dead letter releases the order: its next events go to Button again."""
    parked = ParkingLot(clock=FakeClock())
    parked.park("o-1", "http_400")
    assert parked.release("o-1") is True
    assert parked.release("o-1") is False
    assert parked.get("o-1") is None


def test_entries_expire_after_ttl_since_last_park() -> None:
    """An order not parked again for ttl is forgotten; parking it again refreshes it."""
    clock = FakeClock()
    parked = ParkingLot(clock=clock, ttl=10 * DAY)
    parked.park("o-1", "http_400")
    parked.park("o-2", "http_400")
    clock.now += 6 * DAY
    parked.park("o-2", "parked")
    clock.now += 5 * DAY
    assert ("o-1" in parked, "o-2" in parked) == (False, True)


def test_size_is_bounded_and_evictions_counted() -> None:
    """Beyond max_orders, the least recently parked order is evicted."""
    parked = ParkingLot(clock=FakeClock(), max_orders=2)
    parked.park("a", "x")
    parked.park("b", "x")
    parked.park("a", "x")
    parked.park("c", "x")
    assert ("a" in parked, "b" in parked, "c" in parked) == (True, False, True)
    assert (len(parked), parked.evicted) == (2, 1)


def test_invalid_bounds_are_refused() -> None:
    """A zero ttl would park nothing."""
    with pytest.raises(ValueError, match="ttl"):
        ParkingLot(clock=FakeClock(), ttl=0)
