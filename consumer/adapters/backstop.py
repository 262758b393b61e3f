"""The shutdown's backstop: the process ends within its bound of a stop signal, whatever hangs.

Each step of the shutdown holds to its own share of ``DELIVERY_SHUTDOWN_TIMEOUT_SECONDS`` (S),
but a thread the service cannot interrupt outlives them: a changelog restore blocked in
librdkafka while the broker does not answer (up to its 120 s stall bound), or any call that
never returns. The interpreter waits for such a thread at exit, so the promise "exit within
S + 3 s of SIGTERM" needs one guard over the whole: armed by the first stop signal, it logs
what is still running (``shutdown_backstop``: each thread with the service's frames it is in),
flushes stdout and stderr and ends the process with ``os._exit(BACKSTOP_STATUS)``. Nothing is
lost: an offset not committed means its records are processed again by the next owner.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("consumer")

BACKSTOP_STATUS = 124
"""The exit status of a shutdown cut by the backstop (as ``timeout(1)`` reports a command it
had to stop)."""

_PACKAGE = str(Path(__file__).resolve().parents[1])


def _where(frame: FrameType | None, limit: int = 6) -> list[str]:
    """The service's frames a thread is in, outermost first (``module.function:line``); the
    innermost frame whatever its module when none is the service's."""
    ours: list[str] = []
    innermost = frame
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(_PACKAGE):
            module = frame.f_globals.get("__name__", "?")
            ours.append(f"{module}.{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    if not ours and innermost is not None:
        code = innermost.f_code
        ours.append(f"{Path(code.co_filename).name}.{code.co_name}:{innermost.f_lineno}")
    return list(reversed(ours))[-limit:]


def running_threads(exclude: int | None = None) -> list[dict[str, Any]]:
    """Every live thread but ``exclude`` (an ident): its name, whether it is a daemon, and
    where it is (``_where``)."""
    frames = sys._current_frames()
    threads = []
    for thread in threading.enumerate():
        if thread.ident is None or thread.ident == exclude:
            continue
        threads.append(
            {
                "name": thread.name,
                "daemon": thread.daemon,
                "at": _where(frames.get(thread.ident)),
            }
        )
    return threads


class ShutdownBackstop:
    """Ends the process ``seconds`` after ``arm()`` unless it has exited by then.

    Args:
        seconds: the bound, from the stop signal (S + 3 for ``run``).
        exit: ends the process with a status (``os._exit``: no cleanup, no thread joined).
        monotonic: the clock the log's ``waited`` is measured on.
    """

    def __init__(
        self,
        seconds: float,
        exit: Callable[[int], object] = os._exit,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self._exit = exit
        self._now = monotonic
        self._timer: threading.Timer | None = None
        self._armed_at = 0.0

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self) -> None:
        """Start the countdown (from the first call: a second signal does not extend it)."""
        if self._timer is not None:
            return
        self._armed_at = self._now()
        timer = threading.Timer(self.seconds, self._fire)
        timer.name = "shutdown-backstop"
        timer.daemon = True  # never what keeps the process alive
        self._timer = timer
        timer.start()

    def _fire(self) -> None:
        try:
            log.error(
                "shutdown_backstop",
                seconds=self.seconds,
                waited=round(self._now() - self._armed_at, 3),
                status=BACKSTOP_STATUS,
                running=running_threads(exclude=threading.get_ident()),
            )
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # closed or broken: exit anyway
                    stream.flush()
            self._exit(BACKSTOP_STATUS)
