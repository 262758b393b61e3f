"""The circuit breaker: a pause of all intake while Button pushes back or is down.

Two things open it (the failure policy decides both, ``consumer.domain.policy``):

- back-pressure: a 429 or 503 with ``Retry-After`` (verdict ``BREAK``): open for the capped
  ``Retry-After``, so no request is sent until Button said it may be;
- an outage: ``failure_threshold`` failed attempts in a row (5xx, 429, timeouts, connection
  errors, unreadable bodies; any answer of Button's resets the count) of at least two different
  records, or a retry budget running out while the count says Button fails for other records
  too (``BREAK`` with ``button_unavailable``): open for a probe interval. One record failing
  alone (Button refuses that order with a 500) is not an outage: it is dead-lettered when its
  budget runs out.

While it is open no request is sent: records wait at it (their retry budget does not run), the
worker pauses every partition, and once the wait is over one waiter probes Button with the same
record-independent request as the auth gate. It closes again (requests flow) on an accepted
probe; otherwise it stays open for the probe's capped ``Retry-After`` or another interval.

In ``PauseGate`` terms "open" means requests flow: ``is_open`` is the circuit *closed*.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

from consumer.domain.outcomes import ButtonOutcome
from consumer.domain.policy import BUTTON_UNAVAILABLE, RetryPolicy, breaker_signal, breaker_wait
from consumer.engine.authgate import ProbeFn, ProbingGate, no_probe


class CircuitBreaker(ProbingGate):
    """Counts failures across all requests and pauses them all while Button cannot take them.

    Args:
        failure_threshold: failed attempts in a row that open it.
        probe_interval: seconds between probes while it is open.
        policy: the retry policy (its ``Retry-After`` cap applies to a probe's answer).
        probe: sends the record-independent probe.
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        probe_interval: float,
        policy: RetryPolicy,
        probe: ProbeFn = no_probe,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        super().__init__(probe_interval, probe, sleep, clock)
        self._threshold = failure_threshold
        self._policy = policy
        self._failures = 0
        self._sources: set[Hashable] = set()  # records in the failure streak (two are enough)

    def failing(self, source: Hashable) -> bool:
        """Button fails for others than ``source`` too: the breaker is open, or the failure
        streak reached the threshold with another record in it (the policy's ``outage``)."""
        others = bool(self._sources - {source})
        return self.closed or (self._failures >= self._threshold and others)

    def observe(self, outcome: ButtonOutcome, source: Hashable) -> bool:
        """Count one attempt of record ``source``. Returns ``True`` when it opened the breaker."""
        signal = breaker_signal(outcome)
        if signal is False:
            self._reset()
        elif signal:
            self._failures += 1
            if len(self._sources) < 2:
                self._sources.add(source)
            if self._failures >= self._threshold and len(self._sources) > 1 and self.is_open:
                return self.close(BUTTON_UNAVAILABLE)
        return False

    def _reset(self) -> None:
        self._failures = 0
        self._sources.clear()

    def _judge(self, outcome: ButtonOutcome) -> None:
        wait = breaker_wait(outcome, interval=self._probe_interval, policy=self._policy)
        if wait is None:
            self._reset()
            self.open()
        else:
            self._until = self._clock() + wait
