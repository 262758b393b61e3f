"""The gate every request passes while Button rejects the API key.

A 401 (or an authentication 403) means every request will fail the same way: dead-lettering the
stream would be wrong. The gate closes; requests wait at it instead of being sent; one request at
a time probes Button every ``probe_interval`` seconds (any waiting request takes over if the
probing one is cancelled, e.g. by a revocation);
the first answer that is not an authentication failure opens the gate again. The worker pauses
all partitions while it is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consumer.engine.concurrency import PauseGate


class AuthGate(PauseGate):
    """A ``PauseGate`` closed on an auth failure, with one caller at a time probing Button."""

    def __init__(
        self,
        probe_interval: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__()
        self._probe_interval = probe_interval
        self._sleep = sleep
        self._probing = False

    @property
    def closed(self) -> bool:
        return not self.is_open

    def close(self, reason: str = "button_auth") -> bool:
        return super().close(reason)

    async def admit(self) -> None:
        """Return when a request may be sent: the gate is open, or it is this caller's probe."""
        while not self.is_open:
            if not self._probing:
                self._probing = True
                try:
                    await self._sleep(self._probe_interval)
                finally:
                    self._probing = False
                return
            try:
                await asyncio.wait_for(self.wait_open(), timeout=self._probe_interval)
            except TimeoutError:
                continue
