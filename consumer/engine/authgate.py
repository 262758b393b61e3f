"""The gates every request passes while Button cannot take it: the auth gate and its probe.

A 401 (or a 403 that is not Button's "finalized") may mean every request will fail the same way:
dead-lettering the stream would be wrong. The gate closes; requests wait at it instead of being
sent; one waiting caller at a time probes Button every ``probe_interval`` seconds with a request
that depends on no record (the harmless read of an order that does not exist, as ``check``
does), and the failure policy judges the answer (``judge_probe``). Only an accepted probe opens
the gate (or a 2xx of a request already in flight: the pipeline opens it then); another non-2xx
never does. A caller that is cancelled while probing (e.g. by a revocation) hands probing over
to the next waiter. The worker pauses all partitions while the gate is closed.

``ProbingGate`` is the shared mechanism; ``consumer.engine.breaker`` builds the circuit breaker
on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from consumer.domain.outcomes import ButtonOutcome
from consumer.domain.policy import Probe, judge_probe
from consumer.engine.concurrency import PauseGate
from consumer.ports import Telemetry

log = structlog.get_logger("consumer.authgate")

ProbeFn = Callable[[], Awaitable[ButtonOutcome]]
"""Sends the record-independent probe request to Button and returns how it ended."""


def reporting_probe(probe: ProbeFn, telemetry: Telemetry) -> ProbeFn:
    """``probe``, each answer reported as a request to Button (``Telemetry.button_probe``):
    while a gate is closed the probes are the only requests that go out, and what they meet is
    what an operator's error ratio must see."""

    async def reported() -> ButtonOutcome:
        outcome = await probe()
        telemetry.button_probe(
            outcome.kind.value, outcome.elapsed, outcome.status, from_button=outcome.from_button
        )
        return outcome

    return reported


async def no_probe() -> ButtonOutcome:
    raise RuntimeError("this gate was built without a probe")


class ProbingGate(PauseGate):
    """A ``PauseGate`` that, while closed, lets one waiter at a time probe Button.

    ``close(reason, delay)`` keeps it closed for at least ``delay`` seconds (default: the probe
    interval); then one waiter sends the probe and ``_judge`` decides whether the gate opens or
    for how long it stays closed. Every other waiter waits for the gate to open.
    """

    def __init__(
        self,
        probe_interval: float,
        probe: ProbeFn = no_probe,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._probe_interval = probe_interval
        self._probe = probe
        self._sleep = sleep
        self._clock = clock
        self._probing = False
        self._until = 0.0

    @property
    def closed(self) -> bool:
        return not self.is_open

    def close(self, reason: str, delay: float | None = None) -> bool:
        """Close for at least ``delay`` seconds (the probe interval when ``None``); a later
        close never shortens an earlier one. Returns ``True`` if the gate was open."""
        wait = self._probe_interval if delay is None else max(delay, 0.0)
        was_open = self.is_open
        self._until = max(self._until if not was_open else 0.0, self._clock() + wait)
        super().close(reason)
        return was_open

    async def admit(self) -> None:
        """Return when the gate is open, probing Button meanwhile (one waiter at a time)."""
        while not self.is_open:
            if not self._probing:
                self._probing = True
                try:
                    wait = self._until - self._clock()
                    if wait > 0:
                        await self._sleep(wait)
                    if not self.is_open:
                        self._judge(await self._probe())
                finally:
                    self._probing = False
                continue
            try:
                await asyncio.wait_for(self.wait_open(), timeout=self._probe_interval)
            except TimeoutError:
                continue

    def _judge(self, outcome: ButtonOutcome) -> None:
        """Open on an accepted probe; else stay closed for another probe interval."""
        if judge_probe(outcome) is Probe.ACCEPTED:
            self.open()
        else:
            self._until = self._clock() + self._probe_interval


class AuthGate(ProbingGate):
    """Closed while Button may refuse the API key; opens when a probe is accepted."""

    def close(self, reason: str = "button_auth", delay: float | None = None) -> bool:
        return super().close(reason, delay)

    def _judge(self, outcome: ButtonOutcome) -> None:
        super()._judge(outcome)
        if self.is_open:
            log.info("button_auth_recovered", probe_status=outcome.status)
