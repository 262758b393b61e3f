"""How long to wait before retrying a request Button could not take right now.

Capped exponential backoff with *full jitter* (a uniform draw in ``[0, min(cap, base * 2**n))``)
spreads the retries of many records that failed together, so an outage does not end in a
synchronized stampede. ``Retry-After`` from a 429 or 503 is a *minimum*: the server asked us not
to come back sooner, so the delay is ``max(retry_after, jittered)``. It is not capped by ``cap``
(the retry policy's elapsed-time budget decides whether waiting that long is still worth it), and
a herd told the same ``Retry-After`` is held back by the adaptive concurrency limiter, not here.

Randomness is injected (anything with ``random() -> float`` in ``[0, 1)``, e.g. ``random.Random``)
so tests are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RandomSource(Protocol):
    """The one method of ``random.Random`` the engine uses."""

    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    Attributes:
        base: ceiling of the first retry's delay, in seconds.
        cap: largest ceiling, in seconds; the ceiling doubles per attempt until it reaches this.
    """

    base: float = 0.2
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt numbers start at 1")
        # Cap the exponent first so huge attempt numbers cannot overflow a float.
        exponent = min(attempt - 1, 62)
        return min(self.cap, self.base * float(2**exponent))

    def delay(self, attempt: int, rng: RandomSource, *, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``: full jitter, ``retry_after`` a floor.

        >>> import random
        >>> Backoff(base=1.0, cap=8.0).delay(10, random.Random(0), retry_after=20.0)
        20.0
        """
        jittered = rng.random() * self.ceiling(attempt)
        if retry_after is not None and retry_after > jittered:
            return retry_after
        return jittered
