"""The shutdown's backstop: one countdown from the first stop signal, then a logged exit."""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from consumer.adapters.backstop import BACKSTOP_STATUS, ShutdownBackstop


def test_the_backstop_logs_what_runs_and_exits_with_its_status() -> None:
    """Armed twice (a second SIGTERM), it fires once: a ``shutdown_backstop`` line naming the
    threads still running (this test's own among them), then the exit with status 124."""
    exited: list[int] = []
    done = threading.Event()

    def exit_(status: int) -> None:
        exited.append(status)
        done.set()

    backstop = ShutdownBackstop(0.01, exit=exit_)
    with capture_logs() as logs:
        backstop.arm()
        backstop.arm()
        assert done.wait(10.0), "the backstop never fired"

    assert exited == [BACKSTOP_STATUS]
    [line] = [entry for entry in logs if entry["event"] == "shutdown_backstop"]
    assert (line["seconds"], line["status"], line["log_level"]) == (0.01, 124, "error")
    names = {thread["name"] for thread in line["running"]}
    assert threading.current_thread().name in names
    assert "shutdown-backstop" not in names
