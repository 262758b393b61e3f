"""Topic creation as the start-up uses it: created topics are visible before it goes on.

The fault was seen against the real broker (the e2e rebalance test's service refused to start:
"the profile changelog topic does not exist", right after it created it): a broker answers
CreateTopics before its metadata cache lists the topic, and the start-up's check fell into that
window under load. The window is too short to hold by construction against a real broker, so
this test scripts librdkafka's own admin client (a subclass answering from memory, pointed at a
closed port) to hold it: the adapter's wait is what is tested, not Kafka.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._metadata import ClusterMetadata, PartitionMetadata, TopicMetadata

from consumer.adapters.kafka_admin import describe_topics, ensure_topics
from consumer.errors import BrokerError


def _topic(name: str, partitions: int) -> TopicMetadata:
    topic = TopicMetadata()
    topic.topic = name
    for number in range(partitions):
        partition = PartitionMetadata()
        partition.id, partition.replicas = number, [1]
        topic.partitions[number] = partition
    return topic


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class LaggingAdmin(AdminClient):
    """Creates topics at once, but its metadata lists a created topic only after ``lag`` more
    metadata requests (a broker whose metadata cache has not caught up yet)."""

    def __init__(self, existing: dict[str, int], lag: int) -> None:
        super().__init__({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
        self.topics = dict(existing)
        self.hidden: dict[str, int] = {}
        self.lag = lag
        self.metadata_requests = 0

    def list_topics(self, *args: Any, **kwargs: Any) -> ClusterMetadata:
        self.metadata_requests += 1
        metadata = ClusterMetadata()
        for name, count in self.topics.items():
            left = self.hidden.get(name, 0)
            if left > 0:
                self.hidden[name] = left - 1
                continue
            metadata.topics[name] = _topic(name, count)
        return metadata

    def create_topics(  # type: ignore[override]
        self, new_topics: list[Any], **kwargs: Any
    ) -> dict[str, Future[Any]]:
        for topic in new_topics:
            self.topics[topic.topic] = topic.num_partitions
            self.hidden[topic.topic] = self.lag
        return {topic.topic: _done(None) for topic in new_topics}

    def describe_configs(  # type: ignore[override]
        self, resources: list[Any], **kwargs: Any
    ) -> dict[Any, Future[Any]]:
        return {resource: _done({}) for resource in resources}


def test_created_topics_are_listed_by_the_metadata_before_ensure_topics_returns() -> None:
    """The check that follows the creation sees the topics it just created."""
    admin = LaggingAdmin({"events": 3}, lag=3)

    created = ensure_topics(admin, {"events.profiles": {}, "events.dlq": {}}, partitions=3)

    states = describe_topics(admin, ["events.profiles", "events.dlq"])
    assert (created, [s.partitions for s in states.values()]) == (
        ["events.profiles", "events.dlq"],
        [3, 3],
    )


def test_a_topic_the_metadata_never_lists_fails_with_its_name() -> None:
    """A creation the brokers never show is an error naming the topic, not a wait forever."""
    admin = LaggingAdmin({"events": 3}, lag=1_000_000)

    with pytest.raises(BrokerError, match=r"events\.dlq"):
        ensure_topics(admin, {"events.dlq": {}}, partitions=3, timeout=0.3)
