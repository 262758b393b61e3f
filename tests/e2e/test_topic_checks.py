"""Topics checked at start: a changelog that cannot keep state is refused with a clear error."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from structlog.testing import capture_logs

from consumer import checks
from consumer.bootstrap import prepare_topics, validate_topics
from consumer.errors import TopicError
from consumer.sandbox.testing import SandboxHandle
from consumer.settings import Settings
from tests.e2e.harness import ServiceRunner, produce_raw

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
    with pytest.raises(TopicError, match=r"cleanup.policy is 'delete'"):
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
    with pytest.raises(TopicError, match="co-partitioned"):
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
    with pytest.raises(TopicError, match=r"KAFKA_DLQ_TOPIC.*cleanup.policy is 'compact'"):
        runner.stop(timeout=60)


@pytest.mark.parametrize(
    ("changelog_policy", "dlq_policy"),
    [
        ("compact", "delete"),
        ("compact,delete", "delete"),
        ("delete", "delete"),
        ("compact", "compact"),
        ("compact", "compact,delete"),
    ],
)
def test_check_and_run_agree_on_cleanup_policies(
    changelog_policy: str,
    dlq_policy: str,
    make_topic: Callable[..., str],
    kafka_bootstrap: str,
    sandbox: SandboxHandle,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``check`` fails a topic's setting exactly when ``run`` refuses that topic (one rule)."""
    topic = make_topic(partitions=2, prefix="agree")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": f"{topic}-group",
        "KAFKA_PROFILE_TOPIC": make_topic(2, {"cleanup.policy": changelog_policy}, prefix="cl"),
        "KAFKA_DLQ_TOPIC": make_topic(2, {"cleanup.policy": dlq_policy}, prefix="dlq"),
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
    }
    checks.check(as_json=True, timeout=10.0, environ=env)
    document = json.loads(capsys.readouterr().out)
    check_fails = {c["setting"] for c in document["checks"] if c["status"] == "fail"}
    run_refuses = {p.setting for p in validate_topics(Settings.from_env(env)) if p.fatal}
    topic_settings = {"KAFKA_TOPIC", "KAFKA_PROFILE_TOPIC", "KAFKA_DLQ_TOPIC"}
    assert check_fails & topic_settings == run_refuses
    expected = {"KAFKA_PROFILE_TOPIC"} if changelog_policy != "compact" else set()
    expected |= {"KAFKA_DLQ_TOPIC"} if "compact" in dlq_policy else set()
    assert run_refuses == expected


def test_a_lost_changelog_is_not_recreated_for_a_group_with_committed_offsets(
    make_topic, service_settings, kafka_bootstrap
):
    """The changelog is gone (deleted while the service was stopped) but the group has
    committed offsets on the input: an empty changelog would restore no profile and skip every
    later refund as ``refund_held``. ``run`` refuses, naming KAFKA_PROFILE_TOPIC and the group,
    and creates nothing."""
    topic = make_topic(partitions=2, prefix="lost")
    settings = service_settings(topic)
    group = settings.kafka.group_id
    produce_raw(kafka_bootstrap, topic, [(b"user-1", b"\x07", 0)])
    committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        committer.close()

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    runner = ServiceRunner(settings).start()
    try:
        with pytest.raises(TopicError) as refused:
            runner.stop(timeout=60)
        message = str(refused.value)
        assert "KAFKA_PROFILE_TOPIC" in message
        assert group in message
        assert "create" in message  # how to proceed on purpose
        assert settings.kafka.profile_topic not in admin.list_topics(timeout=10).topics
    finally:
        names = [settings.kafka.profile_topic, settings.kafka.dlq_topic]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


def test_a_new_groups_changelog_and_dlq_are_created_and_logged(
    make_topic, service_settings, kafka_bootstrap
):
    """A group without committed offsets gets its changelog and DLQ created at start, each
    creation logged at info."""
    topic = make_topic(partitions=2, prefix="new")
    settings = service_settings(topic)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created = (settings.kafka.profile_topic, settings.kafka.dlq_topic)
    try:
        with capture_logs() as logs:
            prepare_topics(settings, create=True)
        listed = admin.list_topics(timeout=10).topics
        assert all(name in listed for name in created)
        logged = {e["topic"] for e in logs if e["event"] == "topic_created"}
        assert logged == set(created)
        assert {e["log_level"] for e in logs if e["event"] == "topic_created"} == {"info"}
    finally:
        for future in admin.delete_topics(list(created), operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


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
