"""The service on a three-broker cluster (replication factor 3, ``min.insync.replicas=2``) while
brokers fail: what its users and operators meet, observed at the cluster, at Button (the
sandbox) and on ``/readyz``, never only in the service's own beliefs.

The cluster is `tests.e2e.cluster.LocalCluster`: a KRaft controller and three brokers from the
project's Maven jars. ``python -m tests.e2e.broker_drill`` runs the longer drill (a rolling
restart, a SIGKILL, two brokers down) under a steady stream and prints its timeline.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.cimpl import NewTopic

from consumer.bootstrap import topic_plan
from consumer.commands import produce_events
from consumer.devtools._proc import free_port
from consumer.domain.topics import created_topic_configs
from consumer.sandbox.testing import SandboxHandle, run_sandbox
from consumer.settings import Settings
from tests.e2e.cluster import LocalCluster
from tests.e2e.harness import (
    ServiceProcess,
    end_offsets,
    log_events,
    past_events,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

API_KEY = "sk-e2e-cluster"
PARTITIONS = 3


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as started:
        yield started


@pytest.fixture
def cluster_sandbox() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=(API_KEY,), mode="process") as handle:
        yield handle


@pytest.fixture
def service_processes() -> Iterator[list[ServiceProcess]]:
    processes: list[ServiceProcess] = []
    yield processes
    for process in processes:
        process.kill()


def _get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return -1, str(exc)


def _metric(port: int, name: str) -> float | None:
    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_member_fenced_by_a_cluster_below_min_isr_is_not_ready_while_records_wait(
    cluster: LocalCluster,
    cluster_sandbox: SandboxHandle,
    service_processes: list[ServiceProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Two of the three brokers die (SIGKILL) under a busy service. The survivor leads
    every partition, but below ``min.insync.replicas=2`` the group coordinator cannot write
    ``__consumer_offsets``: the member's heartbeats time out and, after its session, its
    partitions are lost. A batch whose Button requests were held until the brokers died
    finished, but its offsets could not be committed: its records wait in the input, and no
    member consumes them until the brokers return. An operator must see that: ``/readyz``
    false, or a lag above 0, within a minute of the loss. (Before, ``/readyz`` answered 200
    and the lag said 0 for the whole minute: nothing reset the member's readiness on a loss.)
    ``/readyz`` now says why: the member is out of its group (``assigned`` false) from the
    loss until the group hands it an assignment again.
    """
    sandbox = cluster_sandbox
    bootstrap = cluster.bootstrap_servers
    topic, group = unique_name("cluster"), unique_name("group")
    cluster.admin().create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(60)
    wait_until(lambda: cluster.fully_replicated([topic]), 60, message="input not replicated")
    admin_port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "KAFKA_CREATE_TOPICS": "true",
        "BUTTON_API_KEY": API_KEY,
        "BUTTON_BASE_URL": sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env)
    produce_events(settings, past_events(40, seed=3), partitions=PARTITIONS, create=False)
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log).start()
    service_processes.append(service)
    first = wait_for_committed(bootstrap, group, topic, PARTITIONS, timeout=120)
    assert _get(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200

    # Work outstanding when the brokers die, as under a steady stream: the sandbox holds every
    # request of a second batch until the two brokers are gone, then its records finish, and
    # their profile writes and offset commits meet a cluster below min.insync.replicas.
    with sandbox.holding(hold_all=True):
        produce_events(settings, past_events(40, seed=5), partitions=PARTITIONS, create=False)
        sandbox.wait_parked(timeout=60)
        ends = end_offsets(bootstrap, topic, PARTITIONS)
        for broker in (1, 2):
            cluster.stop_broker(broker, kill=True)
        wait_until(lambda: cluster.live_brokers() == [3], 60, message="brokers 1, 2 not fenced")
    # The member's session expires at the coordinator (45 s) after its heartbeats stop
    # being answered; the service logs the loss.
    wait_until(
        lambda: log_events(log, "partitions_lost") or not service.alive(),
        240,
        interval=1.0,
        message="the member never lost its partitions",
    )
    assert service.alive(), service.log_tail()

    # The second batch waits, uncommitted, in the input: its records finished at Button only
    # after the two brokers died, and below min.insync.replicas no offset commit is written
    # (nor does any high watermark advance: no record arrives meanwhile).
    waiting = sum(ends.values()) - sum(first.values())
    assert waiting > 0

    # Within a minute an operator's signals must say it: not ready, or records waiting.
    seen: list[tuple[int, float | None]] = []
    said = ""
    reachable: list[float | None] = []

    def operator_warned() -> bool:
        nonlocal said
        status, said = _get(f"http://127.0.0.1:{admin_port}/readyz")
        lag = _metric(admin_port, "button_consumer_consumer_lag_sum_records")
        seen.append((status, lag))
        reachable.append(_metric(admin_port, "button_consumer_broker_reachable"))
        return status != 200 or (lag is not None and lag > 0)

    started = time.monotonic()
    try:
        wait_until(operator_warned, 60, interval=1.0)
    except TimeoutError:
        pytest.fail(
            f"for {time.monotonic() - started:.0f} s /readyz and the lag said all is well "
            f"(last (status, lag) {seen[-3:]}) while {waiting} records waited uncommitted "
            f"(committed {first}, end {ends}) and the member owned no partition "
            f"(partitions_lost at {log_events(log, 'partitions_lost')[-1]['timestamp']})"
        )
    # For the right reason: the member is out of its group (it owns nothing since the loss).
    assert json.loads(said)["assigned"] is False, f"{said}; broker_reachable {reachable}"
    lost_at = log_events(log, "partitions_lost")[-1]["timestamp"]
    assert all(a["timestamp"] < lost_at for a in log_events(log, "partitions_assigned")), (
        "the group took the member back"
    )


LAG_INTERVAL = 5.0
"""The service's lag read comes every 5 s (``WorkerOptions.lag_interval``)."""


def _fresh_end_offset(bootstrap: str, topic: str) -> int | None:
    """``topic`` [0]'s end offset by a new admin client (no cached metadata), ``None`` when it
    cannot be read."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    futures = admin.list_offsets({TopicPartition(topic, 0): latest}, request_timeout=5)
    try:
        offset = int(futures[TopicPartition(topic, 0)].result(timeout=10).offset)
    except KafkaException:
        return None
    return offset if offset >= 0 else None


def test_readiness_comes_back_with_the_leader_of_a_partition_that_had_none(
    cluster: LocalCluster,
    cluster_sandbox: SandboxHandle,
    service_processes: list[ServiceProcess],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """A pod starts while its input's only partition has no leader (its one replica's broker
    is down), and the broker comes back. The lag read's admin client, born then, cached
    metadata without a leader for the partition, and librdkafka's admin client does not ask
    again: every ListOffsets failed at once, ``_NOENT`` "No leaders found", so
    ``broker_reachable`` and ``/readyz`` stayed false long after the cluster had the leader
    back (until librdkafka's own metadata refresh, ``topic.metadata.refresh.interval.ms``, five
    minutes by default; 65 s in a three-broker trial of rolling restarts). Readiness must come
    back within a few lag reads of the leader.

    The states are held by construction: the input's one replica is on broker 1, so stopping
    it leaves the partition leaderless; the group's coordinator is another broker, so the
    committed-offsets read answers meanwhile and the failing read is the end offsets'; the
    changelog and DLQ have three replicas, so the restore ends without broker 1; the service
    starts after the stop, so its admin client's first metadata has no leader.
    """
    bootstrap = cluster.bootstrap_servers
    topic = unique_name("leaderless")
    group = unique_name("group")
    # A group whose coordinator is not broker 1: its committed offsets stay readable.
    while cluster.coordinator(group) in (1, -1):
        group = unique_name("group")
    admin_port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "BUTTON_API_KEY": API_KEY,
        "BUTTON_BASE_URL": cluster_sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env)
    dlq_config, changelog_config = created_topic_configs(topic_plan(settings), 3)
    created = cluster.admin().create_topics(
        [
            NewTopic(topic, 1, replica_assignment=[[1]]),
            NewTopic(settings.kafka.dlq_topic, 1, 3, config=dlq_config),
            NewTopic(settings.kafka.profile_topic, 1, 3, config=changelog_config),
        ]
    )
    for future in created.values():
        future.result(60)
    replicated = [settings.kafka.dlq_topic, settings.kafka.profile_topic]
    wait_until(
        lambda: (
            cluster.partitions(topic).get(0, (-1,))[0] == 1 and cluster.fully_replicated(replicated)
        ),
        60,
        message="topics not ready",
    )
    # A group with history: its lag counts from its committed offset.
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        committer.close()

    cluster.stop_broker(1)
    wait_until(
        lambda: cluster.partitions(topic).get(0, (0,))[0] == -1,
        60,
        message="the input partition kept a leader",
    )
    assert cluster.coordinator(group) not in (1, -1)
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log).start()
    service_processes.append(service)
    said: dict[str, object] = {}

    def only_the_brokers_unanswered() -> bool:
        status, text = _get(f"http://127.0.0.1:{admin_port}/readyz")
        said.update(json.loads(text) if status in (200, 503) else {"status": status})
        return (
            said.get("assigned") is True
            and said.get("restoring") == 0
            and said.get("broker_reachable") is False
        ) or not service.alive()

    wait_until(
        only_the_brokers_unanswered,
        120,
        interval=0.5,
        message=f"the service's lag read never failed on the leaderless partition: {said}",
    )
    assert service.alive(), service.log_tail()

    cluster.start_broker(1)
    # The cluster has the leader back: a client of the test's own, new, reads the partition.
    wait_until(
        lambda: (
            cluster.partitions(topic).get(0, (-1,))[0] == 1
            and _fresh_end_offset(bootstrap, topic) == 0
        ),
        60,
        interval=0.5,
        message="the input partition has no leader again",
    )
    back = time.monotonic()
    # The next lag read (within one interval), its retry a second later, and the read's own
    # timeouts (5 s each, while broker 1 accepts connections before it serves).
    bound = 3 * LAG_INTERVAL + 10.0
    try:
        wait_until(
            lambda: _get(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200,
            bound,
            interval=0.5,
        )
    except TimeoutError:
        unreachable = [e["error"] for e in log_events(log, "broker_unreachable")]
        pytest.fail(
            f"{time.monotonic() - back:.0f} s after the cluster had the leader back (a new "
            f"client read the partition), /readyz still said "
            f"{_get(f'http://127.0.0.1:{admin_port}/readyz')}; the service's lag read failed "
            f"with {unreachable}"
        )
    assert _metric(admin_port, "button_consumer_broker_reachable") == 1.0
    assert _metric(admin_port, "button_consumer_consumer_lag_sum_records") == 0.0
