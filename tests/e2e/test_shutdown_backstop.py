"""The process exits within S + 3 s of SIGTERM even when a shutdown step never ends.

Each step of the shutdown has its own limit, but a thread the service cannot interrupt (a
changelog restore blocked in librdkafka while the broker does not answer, up to its 120 s stall
bound) kept the process alive: the interpreter waits for it at exit. The backstop logs what was
still running and exits with status 124 at S + 3 s.

The restore is held by construction: the service runs in a process of its own (an exit is what
is tested), started through a launcher whose restore-progress report blocks for good on the
first batch, so the restore is in progress at SIGTERM and never ends, whatever the machine's
speed. Real broker, real ``button-consumer run`` code, real SIGTERM.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.sandbox.testing import SandboxHandle
from tests.e2e.harness import log_events, sigterm_at

pytestmark = pytest.mark.broker

SHUTDOWN = 2.0
"""DELIVERY_SHUTDOWN_TIMEOUT_SECONDS (S): the backstop fires S + 3 s after SIGTERM."""
BACKSTOP_STATUS = 124

LAUNCHER = """\
import threading
import sys

from consumer.adapters import telemetry


def held(self, *args, **kwargs):
    # The restore's first batch: say so, then never return (a restore that cannot end).
    print('{"event": "restore_held"}', flush=True)
    threading.Event().wait()


telemetry.ServiceTelemetry.restore_progress = held

from consumer.cli import main

raise SystemExit(main(["run"]))
"""


def test_a_shutdown_that_cannot_end_is_cut_at_s_plus_3_seconds(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    sandbox: SandboxHandle,
    tmp_path: Path,
) -> None:
    """SIGTERM while the profile restore is held mid-way: the process exits with status 124
    within S + 3 s (not before), after a ``shutdown_backstop`` line that names the restore's
    thread still running."""
    topic = make_topic(partitions=1, prefix="backstop")
    changelog = make_topic(
        partitions=1, config={"cleanup.policy": "compact"}, prefix="backstop-profiles"
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(changelog, key=b"user-1", value=None, partition=0)  # one batch to restore
    assert producer.flush(30) == 0

    launcher = tmp_path / "held_restore.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    ended = sigterm_at(
        launcher,
        kafka_bootstrap=kafka_bootstrap,
        topic=topic,
        changelog=changelog,
        group=f"{topic}-group",
        sandbox=sandbox,
        shutdown_s=SHUTDOWN,
        log=tmp_path / "service.log",
        ready_event="restore_held",
    )
    code, took, tail = ended.code, ended.took, ended.tail

    assert code is not None, f"still running {took:.1f} s after SIGTERM (S = {SHUTDOWN}):\n{tail}"
    assert (code, SHUTDOWN + 3 <= took <= SHUTDOWN + 3 + 1.5) == (BACKSTOP_STATUS, True), (
        f"exit {code} after {took:.1f} s:\n{tail}"
    )
    [backstop] = log_events(tmp_path / "service.log", "shutdown_backstop")
    assert backstop["seconds"] == SHUTDOWN + 3
    running = json.dumps(backstop["running"])
    assert "restore_partitions" in running, backstop
