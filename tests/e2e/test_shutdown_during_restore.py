"""SIGTERM during a long profile restore: the service stops at the restore's next batch, not
after the whole changelog, commits nothing and exits 0.

The restore is long by construction: its changelog partition holds ``BATCHES`` of the restore
reader's batches, and the launcher's restore-progress report holds the first batch until the
restore is cancelled (the worker's stop cancels it), so a SIGTERM always lands mid-restore and
the restore can only read on after the cancellation, whatever the machine's speed. Real broker,
real ``button-consumer run`` code, real SIGTERM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from consumer.sandbox.testing import SandboxHandle
from tests.e2e.harness import committed_offsets, log_events, sigterm_at

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
    group = f"{topic}-group"
    ended = sigterm_at(
        launcher,
        kafka_bootstrap=kafka_bootstrap,
        topic=topic,
        changelog=changelog,
        group=group,
        sandbox=sandbox,
        shutdown_s=SHUTDOWN,
        log=log,
        ready_event="restore_batch",
    )
    code, took, tail = ended.code, ended.took, ended.tail

    assert code == 0, f"exit {code} after {took:.1f} s:\n{tail}"
    batches = log_events(log, "restore_batch")
    after = [b for b in batches[1:] if b["cancelled"]]
    assert len(after) <= 1, f"{len(after)} batches read after the cancellation:\n{tail}"
    assert len(batches) < BATCHES, f"the whole changelog was read: {batches}"
    assert took < SHUTDOWN / 2, f"stopped {took:.1f} s after SIGTERM:\n{tail}"
    assert log_events(log, "partitions_restored") == []
    assert sandbox.orders() == []
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: -1001}  # none
