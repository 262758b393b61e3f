"""Topics checked at start: a changelog that cannot keep state is refused with a clear error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.bootstrap import validate_topics
from consumer.errors import ConfigError
from consumer.settings import Settings
from tests.e2e.harness import ServiceRunner

pytestmark = pytest.mark.broker


def test_a_changelog_with_the_delete_policy_is_refused_at_start(
    make_topic, service_settings, extra_topics
):
    """A pre-created changelog with cleanup.policy=delete stops the service before it consumes."""
    topic = make_topic(partitions=2, prefix="fit")
    settings = service_settings(topic)
    changelog = settings.kafka.profile_topic
    extra_topics(settings, changelog, partitions=2, config={"cleanup.policy": "delete"})

    runner = ServiceRunner(settings).start()
    with pytest.raises(ConfigError, match=r"cleanup.policy is 'delete'"):
        runner.stop(timeout=60)


def test_a_changelog_with_another_partition_count_is_refused_without_topic_creation(
    make_topic, service_settings, extra_topics
):
    """With KAFKA_CREATE_TOPICS=false a changelog of 1 partition for a 2-partition input is
    refused; validate_topics (for ``check``) reports the same problem."""
    topic = make_topic(partitions=2, prefix="fit")
    settings = service_settings(topic, KAFKA_CREATE_TOPICS="false")
    extra_topics(
        settings, settings.kafka.profile_topic, partitions=1, config={"cleanup.policy": "compact"}
    )
    extra_topics(settings, settings.kafka.dlq_topic, partitions=2, config={})

    fatal = [str(p) for p in validate_topics(settings) if p.fatal]
    assert len(fatal) == 1
    assert "co-partitioned" in fatal[0]
    runner = ServiceRunner(settings).start()
    with pytest.raises(ConfigError, match="co-partitioned"):
        runner.stop(timeout=60)


def test_a_compacted_dlq_is_refused_at_start(make_topic, service_settings, extra_topics):
    """A pre-created DLQ with cleanup.policy=compact stops the service before it consumes:
    dead letters carry the user's key, so compaction would keep only a user's last one."""
    topic = make_topic(partitions=2, prefix="fit")
    settings = service_settings(topic)
    extra_topics(
        settings, settings.kafka.dlq_topic, partitions=2, config={"cleanup.policy": "compact"}
    )

    runner = ServiceRunner(settings).start()
    with pytest.raises(ConfigError, match=r"KAFKA_DLQ_TOPIC.*cleanup.policy is 'compact'"):
        runner.stop(timeout=60)


@pytest.fixture
def extra_topics() -> Iterator[Callable[..., None]]:
    """``extra_topics(settings, name, partitions=, config=)``: create a topic, deleted after."""
    created: list[tuple[AdminClient, str]] = []

    def create(settings: Settings, name: str, *, partitions: int, config: dict[str, str]) -> None:
        admin = AdminClient(dict(settings.kafka.admin_config()))
        topic = NewTopic(name, num_partitions=partitions, replication_factor=-1, config=config)
        admin.create_topics([topic], operation_timeout=30)[name].result(timeout=60)
        created.append((admin, name))

    yield create
    for admin, name in created:
        for future in admin.delete_topics([name], operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
