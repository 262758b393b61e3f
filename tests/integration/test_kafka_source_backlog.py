"""``KafkaSource.backlog`` and ``KafkaSource.lag`` against a real broker: records not handed out
yet, and records not committed yet, per partition.

The worker's idle stop (``DELIVERY_STOP_WHEN_IDLE_SECONDS``) asks it before stopping, so it must
count what waits in Kafka before the first record is consumed, while consuming, and nothing for
a new group that starts at the end of the topic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.adapters.kafka import KafkaSource
from consumer.adapters.kafka_admin import ensure_topics
from consumer.adapters.kafka_producer import AckingProducer
from consumer.devtools.localkafka import LocalKafka
from consumer.errors import BrokerError
from consumer.ports import PartitionLag, Record
from consumer.settings import Settings

pytestmark = pytest.mark.broker

DEADLINE = 30.0


class Listener:
    def __init__(self) -> None:
        self.assigned: list[int] = []

    def on_assign(self, partitions: list[int]) -> None:
        self.assigned.extend(partitions)

    def on_revoke(self, partitions: list[int]) -> None:
        pass

    def on_lost(self, partitions: list[int]) -> None:
        pass


def _settings(bootstrap: str, topic: str, group: str, reset: str) -> Settings:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_AUTO_OFFSET_RESET": reset,
    }
    return Settings.from_env(env, require_api_key=False)


def _produce(settings: Settings, topic: str, count: int) -> None:
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    try:
        for i in range(count):
            producer.send_nowait(topic, b"k", str(i).encode(), partition=0)
        assert producer.settle(30.0) == 0
    finally:
        producer.close()


async def _take(source: KafkaSource, listener: Listener, count: int) -> None:
    """Poll until the partition is assigned and ``count`` records were handed out."""
    taken = 0
    deadline = time.monotonic() + DEADLINE
    while not listener.assigned or taken < count:
        assert time.monotonic() < deadline, f"assigned {listener.assigned}, {taken} of {count}"
        taken += len(await source.poll(max(count - taken, 1), 0.2))
    assert (listener.assigned, taken) == ([0], count)


async def _pause_then_produce(
    source: KafkaSource, settings: Settings, topic: str, count: int
) -> None:
    """Pause partition 0, poll until the fetch in flight at the pause has come back (nothing is
    handed out meanwhile), then produce ``count`` records to it: the source's cached high
    watermark is then behind the end by ``count``."""
    await source.pause([0])
    for _ in range(5):
        assert await source.poll(10, 0.2) == []
    await asyncio.to_thread(_produce, settings, topic, count)


def test_backlog_counts_what_waits_in_kafka_before_and_while_consuming(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 5)

    async def scenario() -> list[dict[int, int]]:
        source = KafkaSource(settings.kafka.consumer_config(), topic)
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 2)
            partway = await source.backlog([0])
            await _take(source, listener, 3)
            drained = await source.backlog([0])
            return [partway, drained]
        finally:
            await source.close()

    assert asyncio.run(scenario()) == [{0: 3}, {0: 0}]


def test_backlog_is_empty_for_a_new_group_that_starts_at_the_end(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "latest")
    _produce(settings, topic, 5)

    async def scenario() -> dict[int, int]:
        source = KafkaSource(settings.kafka.consumer_config(), topic)
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 0)
            return await source.backlog([0])
        finally:
            await source.close()

    assert asyncio.run(scenario()) == {0: 0}


@pytest.mark.parametrize("ends_from", ["admin", "consumer"])
def test_lag_counts_the_records_that_arrive_while_the_partition_is_paused(
    ends_from: str,
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
) -> None:
    """A paused partition's lag grows with what is produced during the pause: an auth pause or
    an open circuit breaker pauses every partition, and the lag is what tells how much waits.

    librdkafka's cached high watermark comes with fetch responses, and a paused partition is
    not fetched: it stays where the pause left it. The lag reads the end offset from the
    broker (with an admin client, as the service does, or else with the consumer)."""
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 5)
    admin = settings.kafka.admin_config() if ends_from == "admin" else None

    async def scenario() -> tuple[dict[int, PartitionLag], ...]:
        source = KafkaSource(settings.kafka.consumer_config(), topic, admin_config=admin)
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 5)
            uncommitted = await source.lag([0])  # the group has committed nothing yet
            await source.commit({0: 5})
            caught_up = await source.lag([0])
            await _pause_then_produce(source, settings, topic, 7)
            paused = await source.lag([0])
            await source.resume([0])
            await _take(source, listener, 7)
            await source.commit({0: 12})
            return uncommitted, caught_up, paused, await source.lag([0])
        finally:
            await source.close()

    # The admin client also reads the high watermark (no transaction here: the end).
    high: Callable[[int], int | None] = (lambda end: end) if admin else (lambda _end: None)
    assert asyncio.run(scenario()) == (
        {0: PartitionLag(0, 5, start=0, high_watermark=high(5))},  # nothing committed yet
        {0: PartitionLag(5, 5, high_watermark=high(5))},
        {0: PartitionLag(5, 12, high_watermark=high(12))},
        {0: PartitionLag(12, 12, high_watermark=high(12))},
    )


def test_backlog_counts_what_arrives_while_the_partition_is_paused(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """The backlog reads the end offset from the broker, as the lag does: the high watermark
    librdkafka cached stays where the partition's last fetch left it."""
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 5)

    async def scenario() -> tuple[dict[int, int], dict[int, int]]:
        source = KafkaSource(
            settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
        )
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 5)
            drained = await source.backlog([0])
            await _pause_then_produce(source, settings, topic, 4)
            return drained, await source.backlog([0])
        finally:
            await source.close()

    assert asyncio.run(scenario()) == ({0: 0}, {0: 4})


def test_store_with_commit_commits_the_stored_offsets_without_the_periodic_commit(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``store(..., commit=True)`` (the worker's, once nothing is left in flight) commits at
    once: the periodic commit is switched off here, so only that commit can reach the group."""
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 5)
    config = settings.kafka.consumer_config()
    config["enable.auto.commit"] = False

    async def scenario() -> tuple[int, int]:
        source = KafkaSource(config, topic)
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 5)
            await source.store({0: 3})
            await source.store({0: 5}, commit=True)
            deadline = time.monotonic() + DEADLINE
            while (lag := (await source.lag([0]))[0]).committed != 5:
                assert time.monotonic() < deadline, f"committed {lag.committed}, not 5"
                await asyncio.sleep(0.05)  # polling the group's committed offset, bounded
            return lag.committed, lag.end
        finally:
            await source.close()

    assert asyncio.run(scenario()) == (5, 5)


@pytest.fixture(scope="module")
def stoppable_kafka() -> Iterator[LocalKafka]:
    """A broker of this module alone: it is stopped (SIGSTOP), which the session's must not be."""
    with LocalKafka() as kafka:
        yield kafka


def _pause_during_a_read(
    kafka: LocalKafka,
    settings: Settings,
    topic: str,
    consumed: int,
    read: Callable[[KafkaSource], Awaitable[object]],
) -> tuple[bool, str]:
    """Consume (and commit) ``consumed`` records of partition 0, stop the broker (SIGSTOP: its
    connections stay open and silent, so a read can only end by its own timeout), start
    ``read``, ask for a pause, and tell whether the read was still waiting when the pause
    returned, with the read's outcome once the broker is back."""

    async def scenario() -> tuple[bool, str]:
        source = KafkaSource(
            settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
        )
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, consumed)
            if consumed:
                await source.commit({0: consumed})
            os.kill(kafka.pid, signal.SIGSTOP)
            try:
                task = asyncio.ensure_future(read(source))
                await asyncio.sleep(0)  # the read starts: its first step asks for the offsets
                await source.pause([0])  # librdkafka pauses locally: no broker involved
                waiting = not task.done()
            finally:
                os.kill(kafka.pid, signal.SIGCONT)
            try:
                outcome = repr(await task)
            except BrokerError as exc:
                outcome = f"BrokerError: {exc}"
            return waiting, outcome
        finally:
            await source.close()

    return asyncio.run(scenario())


def test_a_lag_read_waiting_for_a_broker_leaves_the_consumers_thread_to_the_poll_loop(
    stoppable_kafka: LocalKafka, unique_name: Callable[[str], str]
) -> None:
    """While the group coordinator does not answer (a broker restarting or away), a lag read
    waits out its timeout (5 s). Every other call of the consumer (poll, store, pause, resume)
    runs on the one Kafka thread: a lag read that waited there held them all that long, once
    per lag interval (5 s), while the partitions' leaders may well be up. The read goes through
    clients of its own, on a thread of its own: a pause asked for meanwhile returns while the
    read still waits."""
    topic = unique_name("topic")
    settings = _settings(stoppable_kafka.bootstrap_servers, topic, unique_name("group"), "earliest")
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=1)
    _produce(settings, topic, 3)
    waiting, outcome = _pause_during_a_read(
        stoppable_kafka, settings, topic, 3, lambda source: source.lag([0])
    )
    assert waiting, f"the pause waited for the lag read to end ({outcome})"


def test_a_backlog_read_waiting_for_a_broker_leaves_the_consumers_thread_to_the_poll_loop(
    stoppable_kafka: LocalKafka, unique_name: Callable[[str], str]
) -> None:
    """The backlog (asked by the idle stop) of a group that has consumed nothing yet starts at
    its committed offsets, which only the group coordinator knows: while it does not answer, the
    read waits out its timeout (5 s), and on the Kafka thread it held every poll and pause
    behind it. It runs on a thread of its own: a pause asked for meanwhile returns while the
    read still waits."""
    topic = unique_name("topic")
    settings = _settings(stoppable_kafka.bootstrap_servers, topic, unique_name("group"), "earliest")
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=1)
    waiting, outcome = _pause_during_a_read(
        stoppable_kafka, settings, topic, 0, lambda source: source.backlog([0])
    )
    assert waiting, f"the pause waited for the backlog read to end ({outcome})"


LAG_ACROSS_A_STOP = """
import asyncio, os, signal, sys, time
from consumer.adapters.kafka import KafkaSource
from consumer.errors import BrokerError
from tests.integration.test_kafka_source_backlog import Listener, _settings, _take

bootstrap, topic, group, broker = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
settings = _settings(bootstrap, topic, group, "earliest")

async def main() -> None:
    source = KafkaSource(
        settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
    )
    listener = Listener()
    await source.start(listener)
    try:
        await _take(source, listener, 3)
        await source.commit({0: 3})
        os.kill(broker, signal.SIGSTOP)
        try:
            await source.lag([0])
            print("stopped: read", flush=True)
        except BrokerError as exc:
            print("stopped: BrokerError", flush=True)
            print(exc, file=sys.stderr)
        finally:
            os.kill(broker, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while True:
            try:
                lag = (await source.lag([0]))[0]
                break
            except BrokerError:
                assert time.monotonic() < deadline, "no lag read after the broker came back"
        print(f"resumed: {lag.committed} {lag.end}", flush=True)
    finally:
        await source.close()

asyncio.run(main())
"""


def test_a_lag_read_that_times_out_on_a_stopped_broker_leaves_the_process_running(
    stoppable_kafka: LocalKafka, unique_name: Callable[[str], str]
) -> None:
    """A lag read is asked while the broker does not answer, and waits out its timeout; the
    broker comes back and the next read answers. librdkafka's coordinator-bound admin requests
    (ListConsumerGroupOffsets, DescribeConsumerGroups) abort the process on this path
    (``rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0' failed``, librdkafka
    #4605, unfixed in 2.16): the committed offsets are read by the consumer instead. In a child
    process, so that an abort is this test's failure and not the end of the test run."""
    bootstrap = stoppable_kafka.bootstrap_servers
    topic = unique_name("topic")
    settings = _settings(bootstrap, topic, unique_name("group"), "earliest")
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=1)
    _produce(settings, topic, 3)
    args = [bootstrap, topic, unique_name("group"), str(stoppable_kafka.pid)]
    try:
        done = subprocess.run(
            [sys.executable, "-c", LAG_ACROSS_A_STOP, *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        os.kill(stoppable_kafka.pid, signal.SIGCONT)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("stopped", "resumed"))]
    assert (done.returncode, lines) == (
        0,
        ["stopped: BrokerError", "resumed: 3 3"],
    ), done.stderr[-2000:]


def test_backlog_counts_records_behind_a_transaction_still_open(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Another producer's transaction is open: under read_committed nothing past its first
    record can be read (the last stable offset stops there), yet records wait behind it and
    will be readable once it commits (or is aborted, at the latest after its timeout). The
    idle stop must not take them for drained: the backlog runs to the high watermark."""
    from confluent_kafka import Producer

    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 3)
    open_txn = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("txn")}
    )
    open_txn.init_transactions(30)
    open_txn.begin_transaction()
    open_txn.produce(topic, key=b"k", value=b"in-flight", partition=0)
    assert open_txn.flush(30) == 0
    _produce(settings, topic, 4)

    async def scenario() -> dict[int, int]:
        source = KafkaSource(
            settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
        )
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 3)
            return await source.backlog([0])
        finally:
            await source.close()

    try:
        assert asyncio.run(scenario()) == {0: 5}
    finally:
        open_txn.abort_transaction(30)


def test_lag_before_the_first_commit_counts_from_where_a_latest_group_starts(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A new group under ``auto.offset.reset=latest`` starts at the partition's end: the
    records produced before it joined are never its backlog. Until its first commit (none on
    a quiet partition: an offset is committed only once a record is finished) its lag counts
    from where it started reading, not from offset 0: the lag alerts and KEDA saw the whole
    partition as a backlog."""
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "latest")
    _produce(settings, topic, 5)

    async def scenario() -> tuple[dict[int, PartitionLag], dict[int, PartitionLag]]:
        source = KafkaSource(
            settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
        )
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 0)
            joined = await source.lag([0])
            await asyncio.to_thread(_produce, settings, topic, 3)
            await _take(source, listener, 3)  # handed out, not finished: nothing committed
            return joined, await source.lag([0])
        finally:
            await source.close()

    joined, consuming = asyncio.run(scenario())
    assert {p: lag.records for p, lag in joined.items()} == {0: 0}
    assert {p: lag.records for p, lag in consuming.items()} == {0: 3}
    assert consuming[0].committed == 0  # the group has committed nothing


def test_lag_before_the_first_commit_counts_from_the_start_of_the_partition(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Under ``auto.offset.reset=earliest`` a group without a commit starts at the partition's
    log start offset, which retention (or DeleteRecords) moves past 0: the records below it
    are gone and are no backlog."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 5)
    admin = AdminClient(settings.kafka.admin_config())
    for future in admin.delete_records([TopicPartition(topic, 0, 3)]).values():
        assert future.result(timeout=DEADLINE).low_watermark == 3  # the log start offset is now 3

    async def scenario() -> dict[int, PartitionLag]:
        source = KafkaSource(
            settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
        )
        listener = Listener()
        await source.start(listener)
        try:
            return await source.lag([0])  # nothing polled: nothing handed out yet
        finally:
            await source.close()

    lag = asyncio.run(scenario())
    assert {p: lag.records for p, lag in lag.items()} == {0: 2}


def test_lag_reports_the_records_held_behind_a_transaction_still_open(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Another producer's transaction is open and a plain producer writes after it: under
    read_committed the group cannot read past the transaction's first record (the last stable
    offset stops there) until the transaction commits or is aborted (at the latest after its
    ``transaction.timeout.ms``; never, for a hanging transaction). The lag counts what the
    group can read and has not committed, 0 here, so it showed nothing of the stall: the lag
    read also reports the high watermark, and the records held between the two."""
    from confluent_kafka import Producer

    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 3)
    open_txn = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("txn")}
    )
    open_txn.init_transactions(30)
    open_txn.begin_transaction()
    open_txn.produce(topic, key=b"k", value=b"in-flight", partition=0)  # offset 3
    assert open_txn.flush(30) == 0
    _produce(settings, topic, 4)  # offsets 4..7, behind the open transaction

    async def scenario() -> tuple[PartitionLag, list[Record]]:
        source = KafkaSource(
            settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
        )
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 3)
            await source.commit({0: 3})
            beyond = await source.poll(10, 0.5)  # nothing past the last stable offset
            return (await source.lag([0]))[0], beyond
        finally:
            await source.close()

    try:
        lag, beyond = asyncio.run(scenario())
    finally:
        open_txn.abort_transaction(30)
    assert beyond == []
    assert (lag.committed, lag.end, lag.records) == (3, 3, 0)  # the lag keeps its meaning
    assert (lag.high_watermark, lag.behind_open_transaction) == (8, 5)


def test_storing_offsets_of_partitions_this_member_does_not_own_does_not_raise(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A store that races a revoke names a partition the member no longer owns, alone or beside
    one it still owns. librdkafka (2.16) refuses a store with ``_STATE`` only when none of its
    offsets could be stored, and marks an unknown partition ``_UNKNOWN_PARTITION`` per partition,
    which confluent-kafka does not raise: ``store`` must not raise, and the owned partition's
    offset must reach the group's commit."""
    topic = make_topic(partitions=1)
    settings = _settings(kafka_bootstrap, topic, unique_name("group"), "earliest")
    _produce(settings, topic, 3)
    not_owned = 7  # a partition the topic does not have, as one revoked is not owned

    async def scenario() -> None:
        source = KafkaSource(settings.kafka.consumer_config(), topic)
        listener = Listener()
        await source.start(listener)
        try:
            await _take(source, listener, 3)
            await source.store({not_owned: 1})
            await source.store({0: 2, not_owned: 1}, commit=True)
        finally:
            await source.close()

    asyncio.run(scenario())
    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": settings.kafka.group_id})
    try:
        committed = reader.committed([TopicPartition(topic, 0)], timeout=DEADLINE)
    finally:
        reader.close()
    assert committed[0].offset == 2


def test_reach_asks_the_brokers_and_fails_when_none_answers(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``reach`` (what a member owning no partition asks instead of a lag) is answered by a
    running broker, and raises ``BrokerError`` within its timeouts when no broker answers."""
    topic = make_topic(partitions=2)
    group = unique_name("group")
    settings = _settings(kafka_bootstrap, topic, group, "earliest")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        nowhere = _settings(f"127.0.0.1:{closed.getsockname()[1]}", topic, group, "earliest")

    async def scenario() -> str:
        answered = KafkaSource(settings.kafka.consumer_config(), topic)
        silent = KafkaSource(nowhere.kafka.consumer_config(), topic)
        try:
            await answered.reach()
            started = time.monotonic()
            with pytest.raises(BrokerError) as raised:
                await silent.reach()
            assert time.monotonic() - started < 3 * 5.0
            return str(raised.value)
        finally:
            await answered.close()
            await silent.close()

    assert "metadata" in asyncio.run(scenario())
