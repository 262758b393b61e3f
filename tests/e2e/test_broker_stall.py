"""The only broker stalls (SIGSTOP: its connections stay open and silent) and comes back.

- readiness and the offset metrics (committed offset, lag) come back with the broker;
- a SIGTERM while it is stopped ends the process within its budget (S + 3 s), with a log that
  reports as committed only what was, and nothing lost (a restart delivers everything).

The broker is this module's own: stopping the session's broker would stall every other test.
Its controller runs in a process of its own (KRaft isolated mode), which the SIGSTOP leaves
running: the controller fences the silent broker when its session expires, as a cluster's
controllers do, and the test sees the fence in the controller's metadata log before the broker
goes on. (With one process for both, the controller stopped too, and on SIGCONT its session
check raced the broker's next heartbeat: the broker was not always fenced.)
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from consumer.adapters.kafka_admin import ensure_topics
from consumer.commands import produce_events
from consumer.devtools._proc import tail
from consumer.devtools.localkafka import BROKER_ID, LocalKafka
from consumer.sandbox.testing import SandboxHandle
from consumer.settings import Settings
from tests.e2e.harness import (
    ServiceProcess,
    ServiceRunner,
    assert_sandbox_converged,
    committed_offsets,
    expected_orders,
    past_events,
    read_all,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

COMMITTED = "button_consumer_committed_offset"
LAG_SUM = "button_consumer_consumer_lag_sum_records"
READY = "button_consumer_ready"
BROKER_REACHABLE = "button_consumer_broker_reachable"
FENCE_TIMEOUT = 120.0
"""Bounds the wait for the controller to fence the stopped broker: its KRaft session
(``broker.session.timeout.ms``, Kafka's default: 9 s) and the controller's next check of it,
with room for a loaded machine. A broker fenced is unfenced, once it answers, under new leader
epochs."""


@pytest.fixture(scope="module")
def stalled_kafka() -> Iterator[LocalKafka]:
    """A broker of this module alone, stopped (SIGSTOP) as the session's must not be, with its
    controller in a process of its own, which goes on while the broker is stopped."""
    with LocalKafka(kraft_mode="isolated") as kafka:
        yield kafka


def _env(bootstrap: str, topic: str, group: str, sandbox: SandboxHandle) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "KAFKA_CREATE_TOPICS": "true",
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_RETRY_BASE_DELAY_SECONDS": "0.05",
        "DELIVERY_RETRY_MAX_DELAY_SECONDS": "1",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
    }


def _leader_epoch(bootstrap: str, topic: str, partition: int, offset: int) -> int:
    """The leader epoch the broker wrote the record at ``offset`` under."""
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "leader-epoch", "enable.auto.commit": False}
    )
    try:
        reader.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = reader.poll(1.0)
            if message is not None and message.error() is None:
                epoch = message.leader_epoch()
                assert epoch is not None, "the broker reports leader epochs"
                return int(epoch)
        raise TimeoutError(f"{topic} [{partition}] @ {offset} not read within 60 s")
    finally:
        reader.close()


def _probe_epoch(bootstrap: str, topic: str) -> int:
    """The leader epoch under which the broker appends a record to ``topic`` [0] now: one probe
    record is produced (acknowledged) and read back."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    written: list[int] = []

    def delivered(error: object, message: Message) -> None:
        offset = message.offset()
        if error is None and offset is not None:
            written.append(offset)

    producer.produce(topic, value=b"probe", partition=0, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert written, "the probe record was not acknowledged"
    return _leader_epoch(bootstrap, topic, 0, written[0])


def test_readiness_and_offset_metrics_come_back_after_a_stall_that_fenced_the_broker(
    stalled_kafka: LocalKafka,
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    start_service: Callable[[Settings], ServiceRunner],
) -> None:
    """The broker is silent past its KRaft session: the controller fences it and, once it
    answers again, unfences it under new leader epochs. The lag read's admin client kept the
    old epochs and never refreshed them: every ListOffsets was refused (FENCED_LEADER_EPOCH),
    so /readyz said the broker was unreachable for good and the committed-offset and lag
    metrics froze, while consumption went on. Both must come back with the broker, and every
    order reach Button. The controller runs on while the broker is stopped, so the fence holds
    by construction; it is seen in the controller's metadata log before the broker goes on."""
    kafka = stalled_kafka
    bootstrap = kafka.bootstrap_servers
    partitions = 2
    topic = unique_name("stall")
    settings = Settings.from_env(_env(bootstrap, topic, unique_name("group"), sandbox))
    group = settings.kafka.group_id
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=partitions)
    first = past_events(20, seed=7)
    produce_events(settings, first, partitions=partitions)
    runner = start_service(settings)
    health = runner.service.health
    before = wait_for_committed(bootstrap, group, topic, partitions, timeout=120)
    wait_until(
        lambda: (
            health.ready()
            and (runner.metric(READY), runner.metric(BROKER_REACHABLE)) == (1.0, 1.0)
            and all(runner.metric(COMMITTED, {"partition": str(p)}) == o for p, o in before.items())
        ),
        60,
        message="not ready with its committed offsets reported before the stall",
    )
    epoch_before = _leader_epoch(bootstrap, topic, 0, before[0] - 1)
    probe = unique_name("probe")
    ensure_topics(settings.kafka.admin_config(), {probe: {}}, partitions=1)
    probe_before = _probe_epoch(bootstrap, probe)

    os.kill(kafka.pid, signal.SIGSTOP)
    try:
        # Read after the SIGSTOP: any change past these was decided while the broker was silent.
        decided = len(kafka.fencing_changes())
        wait_until(
            lambda: not health.broker_reachable,
            60,
            message="the service did not see the broker go silent",
        )
        # /metrics says what /readyz says (ready stayed 1 on a caught-up consumer): the
        # KafkaUnreachable alert reads broker_reachable.
        assert (runner.metric(READY), runner.metric(BROKER_REACHABLE)) == (0.0, 0.0)
        fence = wait_until(
            lambda: [c for c in kafka.fencing_changes()[decided:] if c.fenced],
            FENCE_TIMEOUT,
            interval=0.2,
            message=(
                f"the controller did not fence the stopped broker within {FENCE_TIMEOUT:.0f} s; "
                f"its log ({kafka.controller_log_path}):\n{tail(kafka.controller_log_path, 15)}"
            ),
        )
    finally:
        os.kill(kafka.pid, signal.SIGCONT)
    assert [c.broker_id for c in fence] == [BROKER_ID]
    # Back from the stall, the broker appends under its old leader epochs until it has applied
    # the controller's fence and unfence (a record produced at once was seen written at epoch
    # 0): the later records are produced once it appends under a new one.
    wait_until(
        lambda: _probe_epoch(bootstrap, probe) > probe_before,
        60,
        interval=0.5,
        message="the broker still appends under its leader epoch of before the fence",
    )

    later = past_events(20, seed=8)
    produce_events(settings, later, partitions=partitions)
    after = wait_for_committed(bootstrap, group, topic, partitions, timeout=120)
    assert all(after[p] > before[p] for p in range(partitions)), "records came after the stall"
    # The fence, seen from the broker's side: the partition's leadership changed during it.
    epoch_after = _leader_epoch(bootstrap, topic, 0, after[0] - 1)
    assert epoch_after > epoch_before, f"leader epoch {epoch_before} -> {epoch_after}"

    def recovered() -> bool:
        return health.ready() and all(
            runner.metric(COMMITTED, {"partition": str(p)}) == o for p, o in after.items()
        )

    try:
        wait_until(recovered, 60, interval=0.5)
    except TimeoutError:
        metrics = {p: runner.metric(COMMITTED, {"partition": str(p)}) for p in after}
        raise AssertionError(
            f"60 s after the broker came back: ready {health.ready()}, broker_reachable "
            f"{health.broker_reachable}, committed_offset {metrics}, group's "
            f"{committed_offsets(bootstrap, group, topic, partitions)}"
        ) from None
    assert runner.metric(LAG_SUM) == 0
    assert_sandbox_converged(sandbox, expected_orders([*first, *later], settings))
    assert read_all(bootstrap, settings.kafka.dlq_topic) == []


SHUTDOWN = 10
"""DELIVERY_SHUTDOWN_TIMEOUT_SECONDS of the SIGTERM test: the process must exit within S + 3 s
(the chart's grace period adds its margin on top)."""


def _events(path: Path, name: str) -> list[dict[str, object]]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    events = []
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                events.append(event)
    return events


def test_sigterm_while_the_broker_is_stopped_exits_within_the_budget(
    stalled_kafka: LocalKafka,
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    start_service: Callable[[Settings], ServiceRunner],
    tmp_path: Path,
) -> None:
    """Records finish at Button while the broker is stopped: their profile changes wait in the
    producer for acknowledgements that cannot come, so the drain ends at its deadline, the
    commits fail, and librdkafka's calls block (its producer close flushes without a bound,
    its consumer close and a commit inside the revocation wait on an absent coordinator).
    The process exited 111 s after SIGTERM with S = 50 (promised: 53), and its last
    ``partitions_revoked`` line reported as committed offsets whose commit had just failed.
    Now: the exit comes within S + 3 s, the log reports those offsets as uncommitted, and a
    restart once the broker is back delivers every order (nothing lost, replays harmless)."""
    kafka = stalled_kafka
    bootstrap = kafka.bootstrap_servers
    partitions = 2
    topic = unique_name("sigterm")
    env = {
        **_env(bootstrap, topic, unique_name("group"), sandbox),
        "LOG_LEVEL": "info",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN),
        # Longer than any hold here: a held request is not retried into the DLQ meanwhile.
        "BUTTON_READ_TIMEOUT": "900",
        "BUTTON_TOTAL_TIMEOUT": "900",
    }
    settings = Settings.from_env(env)
    group = settings.kafka.group_id
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=partitions)
    events = past_events(40, seed=11)
    expected = expected_orders(events, settings)
    produce_events(settings, events, partitions=partitions)
    log_path = tmp_path / "service.log"
    service = ServiceProcess(env, log_path).start()
    try:
        with sandbox.holding(hold_all=True):
            # Every lane's first request waits at Button; the records behind them, fetched
            # already, wait in their lanes (their changes not written yet).
            sandbox.wait_parked(timeout=120)
            os.kill(kafka.pid, signal.SIGSTOP)
            # Counted once answered: the parked ones count when the hold ends.
            answered = int(sandbox.stats()["requests"]) + int(sandbox.hold_state()["parked"])
        # Released with the broker stopped: the answered records' lanes go on, and each
        # request that reaches Button now had its profile change queued first, in a producer
        # that cannot deliver it (by construction, not by timing).
        wait_until(
            lambda: int(sandbox.stats()["requests"]) > answered,
            60,
            message="no record reached Button after the broker stopped",
        )
        assert service.alive(), service.log_tail()
        signalled = time.monotonic()
        code = service.terminate(timeout=SHUTDOWN + 60)
        took = time.monotonic() - signalled
    finally:
        os.kill(kafka.pid, signal.SIGCONT)
    tail = service.log_tail(40)
    assert took <= SHUTDOWN + 3, f"exit {code} after {took:.1f} s, over S + 3 s:\n{tail}"
    revoked = _events(log_path, "partitions_revoked")
    failed = _events(log_path, "shutdown_commit_failed")
    assert failed, f"the shutdown's commit failed (the broker is stopped):\n{tail}"
    claimed = [e["committed"] for e in revoked if e["committed"]]
    assert claimed == [], f"offsets reported committed with the broker stopped: {claimed}"

    # Nothing lost: once the broker answers, a new instance delivers what was not committed.
    runner = start_service(Settings.from_env({**env, "LOG_LEVEL": "warning"}))
    wait_for_committed(bootstrap, group, topic, partitions, timeout=180)
    wait_until(lambda: runner.metric("button_consumer_in_flight_records") == 0, 30)
    runner.stop()
    assert_sandbox_converged(sandbox, expected)
    assert read_all(bootstrap, env["KAFKA_DLQ_TOPIC"]) == []
