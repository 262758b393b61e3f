"""The gate every request passes while Button rejects the API key.

A 401 (or an authentication 403) means every request will fail the same way: dead-lettering the
stream would be wrong. The gate closes; requests wait at it instead of being sent; one request at
a time probes Button every ``probe_interval`` seconds; the first answer that is not an
authentication failure opens the gate again. The worker pauses all partitions while it is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class AuthGate:
    """Open by default; ``close()`` on an auth failure, ``open()`` when Button answers again."""

    def __init__(
        self,
        probe_interval: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._opened = asyncio.Event()
        self._opened.set()
        self._probe_interval = probe_interval
        self._sleep = sleep
        self._probing = False

    @property
    def closed(self) -> bool:
        return not self._opened.is_set()

    def close(self) -> None:
        self._opened.clear()

    def open(self) -> None:
        self._opened.set()

    async def admit(self) -> None:
        """Return when a request may be sent: the gate is open, or it is this caller's probe."""
        while not self._opened.is_set():
            if not self._probing:
                self._probing = True
                try:
                    await self._sleep(self._probe_interval)
                finally:
                    self._probing = False
                return
            try:
                await asyncio.wait_for(self._opened.wait(), timeout=self._probe_interval)
            except TimeoutError:
                continue
