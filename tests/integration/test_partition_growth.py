"""A topic that gains a partition while a reader of it runs, and a partition it lacks:
``PartitionReader.watermarks`` (the restore's first step) and ``KafkaSource.lag`` (the lag
read's admin client and consumer) against a real broker.

The reader's metadata is made stale by construction: it is read (``partitions``) before the
partition is added, and librdkafka refreshes a known topic's metadata only every
``topic.metadata.refresh.interval.ms`` (5 minutes), so the partition stays unknown to it unless
the reader asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from consumer.adapters.kafka import KafkaSource
from consumer.adapters.kafka_reader import PartitionReader
from consumer.errors import BrokerError
from consumer.ports import PartitionLag
from consumer.settings import Settings

pytestmark = pytest.mark.broker


def settings_for(bootstrap: str) -> Settings:
    return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap}, require_api_key=False)


def add_partitions(bootstrap: str, topic: str, total: int) -> None:
    """Give ``topic`` ``total`` partitions and wait until the brokers report each leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_partitions([NewPartitions(topic, total)])[topic].result(timeout=60)
    deadline = time.monotonic() + 60
    while True:
        info = admin.list_topics(topic, timeout=10).topics[topic]
        if len(info.partitions) == total and all(p.leader >= 0 for p in info.partitions.values()):
            return
        assert time.monotonic() < deadline, f"{topic}: no leader for {total} partitions in 60 s"
        time.sleep(0.05)


def test_a_partition_added_after_the_reader_read_its_metadata_is_found(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """The changelog was given partition 2 after the reader learnt it had 2: the reader asks
    the brokers again and reads the new partition's ends (0, 0), instead of answering
    ``_UNKNOWN_PARTITION`` from its cached metadata until the deadline (before: the restore
    failed 120 s later with "Local: Unknown partition" for a partition that existed)."""
    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=2)
    with PartitionReader(settings.kafka.reader_config(unique_name("reader")), topic) as reader:
        assert reader.partitions() == [0, 1]
        add_partitions(kafka_bootstrap, topic, 3)
        marks = reader.watermarks([2], time.monotonic() + 20)
    assert marks == {2: (0, 0)}


def test_a_partition_the_topic_lacks_is_a_broker_error_naming_it_and_the_topic(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A partition the topic does not have, still missing at the deadline, fails with a
    ``BrokerError`` naming the topic and the partition (before: librdkafka's bare
    ``KafkaException``, which ``run`` reported as a Kafka error at KAFKA_BOOTSTRAP_SERVERS)."""
    settings = settings_for(kafka_bootstrap)
    topic = make_topic(partitions=2)
    with (
        PartitionReader(settings.kafka.reader_config(unique_name("reader")), topic) as reader,
        pytest.raises(BrokerError) as raised,
    ):
        reader.watermarks([0, 2], time.monotonic() + 1)
    message = str(raised.value)
    assert f"{topic} partition 2" in message, message
    assert "has 2 partitions" in message, message


def test_a_partition_added_after_the_lag_read_learnt_the_topic_is_read_by_the_next_read(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """The input was given partition 2 after the lag read's clients learnt it had 2 (a read of
    partitions 0 and 1: the end offsets by the admin client, the log start offsets of a group
    that has committed nothing by the reads' consumer). Before, both answered from their
    cached metadata for five minutes: the admin client ``_UNKNOWN_PARTITION`` (``_NOENT``, "No
    leaders found", for a request of the new partition alone), the consumer
    ``_UNKNOWN_PARTITION``; so the member that was assigned the new partition reported the
    brokers unreachable (``/readyz`` false) meanwhile. Now the read after a failed one (the
    worker asks again a second later) reads all three."""
    topic = make_topic(partitions=2)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": unique_name("group"),
    }
    settings = Settings.from_env(env, require_api_key=False)
    source = KafkaSource(
        settings.kafka.consumer_config(), topic, admin_config=settings.kafka.admin_config()
    )

    async def scenario() -> tuple[dict[int, PartitionLag], list[dict[int, PartitionLag] | str]]:
        try:
            before = await source.lag([0, 1])
            await asyncio.to_thread(add_partitions, kafka_bootstrap, topic, 3)
            reads: list[dict[int, PartitionLag] | str] = []
            for _ in range(2):
                try:
                    reads.append(await source.lag([0, 1, 2]))
                except BrokerError as exc:
                    reads.append(str(exc))
            return before, reads
        finally:
            await source.close()

    before, reads = asyncio.run(scenario())
    empty = PartitionLag(committed=0, end=0, start=0, high_watermark=0)
    assert before == {0: empty, 1: empty}
    assert reads[-1] == {0: empty, 1: empty, 2: empty}, reads
