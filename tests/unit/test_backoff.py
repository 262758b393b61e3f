"""Backoff delays are capped, fully jittered, and never shorter than Retry-After."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.domain.backoff import Backoff


class FixedRandom:
    """A random source that always returns the same draw."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (500, 10.0)],
)
def test_ceiling_doubles_until_the_cap(attempt: int, ceiling: float) -> None:
    """The ceiling is base * 2**(attempt - 1), capped, and huge attempts do not overflow."""
    assert ceiling == Backoff(base=0.5, cap=10.0).ceiling(attempt)


def test_full_jitter_scales_the_draw_by_the_ceiling() -> None:
    """Full jitter: delay = draw * ceiling, so a draw of 0.25 waits a quarter of the ceiling."""
    assert Backoff(base=1.0, cap=60.0).delay(3, FixedRandom(0.25)) == 1.0


def test_retry_after_is_a_floor() -> None:
    """A server's Retry-After wins when it is longer than the jittered delay, even above the cap."""
    assert Backoff(base=1.0, cap=5.0).delay(2, FixedRandom(0.5), retry_after=120.0) == 120.0


def test_jitter_wins_when_longer_than_retry_after() -> None:
    """Retry-After is a minimum, not an exact time."""
    assert Backoff(base=1.0, cap=60.0).delay(4, FixedRandom(0.5), retry_after=1.0) == 4.0


def test_invalid_configuration_is_refused() -> None:
    """A cap below the base is a configuration error."""
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(base=2.0, cap=1.0)


def test_attempts_start_at_one() -> None:
    """Attempt 0 does not exist."""
    with pytest.raises(ValueError, match="start at 1"):
        Backoff().ceiling(0)


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_delay_stays_within_zero_and_the_ceiling(attempt: int, seed: int) -> None:
    """Whatever the attempt and draw, 0 <= delay < min(cap, base * 2**(attempt - 1))."""
    backoff = Backoff(base=0.2, cap=30.0)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.0 <= delay < backoff.ceiling(attempt)
