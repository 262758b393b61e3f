"""SIGTERM during a long profile restore: the service stops at the restore's next batch, not
after the whole changelog, commits nothing and exits 0.

The restore is long by construction: its changelog partition holds ``BATCHES`` of the restore
reader's batches, and the launcher's restore-progress report holds the first batch until the
restore is cancelled (the worker's stop cancels it), so a SIGTERM always lands mid-restore and
the restore can only read on after the cancellation, whatever the machine's speed. Real broker,
real ``button-consumer run`` code, real SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from consumer.sandbox.testing import SandboxHandle
from tests.e2e.harness import committed_offsets, wait_until

pytestmark = pytest.mark.broker

SHUTDOWN = 20.0
"""DELIVERY_SHUTDOWN_TIMEOUT_SECONDS (S)."""
BATCH = 10_000
"""The restore reader's batch (``KafkaPartitionReader.read_batches``)."""
BATCHES = 8

LAUNCHER = """\
import json
import threading

from consumer.adapters import telemetry
from consumer.engine import restore

cancelled = threading.Event()
cancel = restore.RestoreCancel.cancel


def cancelling(self, partitions):
    cancel(self, partitions)
    cancelled.set()


report = telemetry.ServiceTelemetry.restore_progress
batches = []


def progress(self, records, partition, remaining):
    batches.append(records)
    print(json.dumps({"event": "restore_batch", "records": records, "remaining": remaining,
                      "cancelled": cancelled.is_set()}), flush=True)
    if len(batches) == 1 and not cancelled.wait(120.0):
        raise AssertionError("the restore was never cancelled")
    report(self, records, partition, remaining)


restore.RestoreCancel.cancel = cancelling
telemetry.ServiceTelemetry.restore_progress = progress

from consumer.cli import main

raise SystemExit(main(["run"]))
"""


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            found.append(doc)
    return found


def test_sigterm_during_a_long_restore_stops_at_the_next_batch_and_commits_nothing(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    sandbox: SandboxHandle,
    tmp_path: Path,
) -> None:
    """SIGTERM while the first of ``BATCHES`` restore batches is held: once cancelled, the
    restore reads at most the batch it was fetching, the process exits 0 well within S,
    nothing reaches Button and the group commits nothing (the input's records wait)."""
    topic = make_topic(partitions=1, prefix="restore-stop")
    changelog = make_topic(
        partitions=1, config={"cleanup.policy": "compact"}, prefix="restore-stop-profiles"
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50})
    for i in range(BATCH * BATCHES):  # tombstones: a long read, cheap to apply
        producer.produce(changelog, key=f"user-{i}".encode(), value=None, partition=0)
        if i % 10_000 == 0:
            producer.poll(0)
    for i in range(3):  # input records: never processed before the restore ends
        producer.produce(topic, key=f"buyer-{i}".encode(), value=b"\x00", partition=0)
    assert producer.flush(60) == 0

    launcher = tmp_path / "long_restore.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    log = tmp_path / "service.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DELIVERY_"))}
    group = f"{topic}-group"
    env = {
        **base,
        "PYTHONUNBUFFERED": "1",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}-dlq",
        "KAFKA_PROFILE_TOPIC": changelog,
        "KAFKA_CREATE_TOPICS": "true",
        "BUTTON_BASE_URL": sandbox.base_url,
        "BUTTON_API_KEY": sandbox.api_key,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(launcher)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        wait_until(lambda: bool(_events(log, "restore_batch")) or proc.poll() is not None, 120)
        assert proc.poll() is None, log.read_text(encoding="utf-8")

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(SHUTDOWN + 3 + 15)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])

    assert code == 0, f"exit {code} after {took:.1f} s:\n{tail}"
    batches = _events(log, "restore_batch")
    after = [b for b in batches[1:] if b["cancelled"]]
    assert len(after) <= 1, f"{len(after)} batches read after the cancellation:\n{tail}"
    assert len(batches) < BATCHES, f"the whole changelog was read: {batches}"
    assert took < SHUTDOWN / 2, f"stopped {took:.1f} s after SIGTERM:\n{tail}"
    assert _events(log, "partitions_restored") == []
    assert sandbox.orders() == []
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: -1001}  # none
