"""The service's topics: what it creates, and which existing topics it refuses or warns about."""

from __future__ import annotations

from consumer.domain.topics import (
    TopicPlan,
    TopicProblem,
    TopicState,
    created_topic_configs,
    topic_problems,
)

PLAN = TopicPlan(
    max_message_bytes=1_048_588,
    dlq_retention_ms=30 * 86_400_000,
    profile_max_compaction_lag_ms=7 * 86_400_000,
    profile_record_bytes=262_144 + 4_096,
)
SOURCE = TopicState("events", 6, 3, {})


def fit() -> tuple[TopicState, TopicState]:
    dlq_config, changelog_config = created_topic_configs(PLAN, replication=3)
    return (
        TopicState("events.profiles", 6, 3, changelog_config),
        TopicState("events.dlq", 6, 3, dlq_config),
    )


def fatal(problems: list[TopicProblem]) -> list[str]:
    return [str(p) for p in problems if p.fatal]


def test_the_topics_the_service_creates_pass_its_own_checks() -> None:
    """Created with explicit settings, the DLQ and changelog raise no problem at all."""
    changelog, dlq = fit()
    assert topic_problems(SOURCE, changelog, dlq, PLAN) == []


def test_created_topics_have_explicit_settings() -> None:
    """Retention, timestamps, compaction bound, size limit and min.insync.replicas are set."""
    dlq, changelog = created_topic_configs(PLAN, replication=3)
    expected = (
        ("LogAppendTime", str(30 * 86_400_000), "delete", "1048588", "2"),
        ("compact", str(7 * 86_400_000), "1048588", "2"),
    )
    actual = (
        (
            dlq["message.timestamp.type"],
            dlq["retention.ms"],
            dlq["cleanup.policy"],
            dlq["max.message.bytes"],
            dlq["min.insync.replicas"],
        ),
        (
            changelog["cleanup.policy"],
            changelog["max.compaction.lag.ms"],
            changelog["max.message.bytes"],
            changelog["min.insync.replicas"],
        ),
    )
    assert expected == actual


def test_a_changelog_that_deletes_cannot_keep_state() -> None:
    """cleanup.policy=delete (or compact,delete) on the changelog is fatal."""
    changelog, dlq = fit()
    for policy in ("delete", "compact,delete"):
        bad = TopicState(changelog.name, 6, 3, {**changelog.config, "cleanup.policy": policy})
        assert len(fatal(topic_problems(SOURCE, bad, dlq, PLAN))) == 1


def test_a_changelog_not_co_partitioned_with_the_input_is_fatal() -> None:
    changelog, dlq = fit()
    bad = TopicState(changelog.name, 3, 3, changelog.config)
    expected = [
        "events.profiles (KAFKA_PROFILE_TOPIC): has 3 partitions but events has 6; the profile "
        "changelog must be co-partitioned with the input: stop the service, give "
        "events.profiles 6 partitions too, then start it (README: Changing the input's "
        "partition count)"
    ]
    assert expected == fatal(topic_problems(SOURCE, bad, dlq, PLAN))


def test_a_changelog_too_small_for_a_profile_at_its_cap_is_fatal() -> None:
    """A profile that grows to MAPPING_MAX_PROFILE_BYTES could not be written: the service
    would stop on that user's record at every start. Refused at start instead, naming both
    numbers (a user trial ran with max.message.bytes 1500 and crash-looped)."""
    changelog, dlq = fit()
    small = TopicState(changelog.name, 6, 3, {**changelog.config, "max.message.bytes": "1500"})
    expected = [
        "events.profiles (KAFKA_PROFILE_TOPIC): max.message.bytes is 1500, below the largest "
        "profile record (266240 bytes: MAPPING_MAX_PROFILE_BYTES and a margin for the key and "
        "headers): a profile that grows to its cap could not be written and the service would "
        "stop on it; raise the topic's max.message.bytes or lower MAPPING_MAX_PROFILE_BYTES"
    ]
    assert expected == fatal(topic_problems(SOURCE, small, dlq, PLAN))
    enough = TopicState(changelog.name, 6, 3, {**changelog.config, "max.message.bytes": "266240"})
    assert fatal(topic_problems(SOURCE, enough, dlq, PLAN)) == []


def test_missing_topics_are_fatal() -> None:
    problems = topic_problems(
        TopicState("events"), TopicState("events.profiles"), TopicState("events.dlq"), PLAN
    )
    assert len(fatal(problems)) == 3


def test_broker_defaults_only_warn() -> None:
    """Topics with broker defaults and one replica: warnings, nothing fatal but the policy."""
    changelog = TopicState("events.profiles", 6, 1, {"cleanup.policy": "compact"})
    dlq = TopicState("events.dlq", 6, 1, {"retention.ms": "604800000"})
    problems = topic_problems(SOURCE, changelog, dlq, PLAN)
    assert fatal(problems) == []
    assert len(problems) == 4  # compaction bound, DLQ timestamps, replicas x2


def test_the_start_up_checks_share_one_admin_client() -> None:
    """``admin_client`` keeps a client it is given (one connection for a series of admin
    calls) and makes one of properties; making one does no network I/O."""
    from confluent_kafka.admin import AdminClient

    from consumer.adapters.kafka_admin import admin_client

    client = admin_client({"bootstrap.servers": "127.0.0.1:9"})
    assert isinstance(client, AdminClient)
    assert admin_client(client) is client


def test_a_compacted_dlq_is_fatal() -> None:
    """cleanup.policy=compact (alone or with delete) on the DLQ is fatal and names
    KAFKA_DLQ_TOPIC: dead letters share their user's key, compaction keeps only the last."""
    changelog, dlq = fit()
    for policy in ("compact", "compact,delete", "delete, compact"):
        bad = TopicState(dlq.name, 6, 3, {**dlq.config, "cleanup.policy": policy})
        problems = fatal(topic_problems(SOURCE, changelog, bad, PLAN))
        assert len(problems) == 1, policy
        assert "KAFKA_DLQ_TOPIC" in problems[0]
        assert f"cleanup.policy is {policy!r}" in problems[0]


def test_missing_topics_created_at_start_are_judged_as_created() -> None:
    """With KAFKA_CREATE_TOPICS a missing DLQ and changelog are judged as the topics ``run``
    creates (fit: no problem); with the input missing too, only the input is refused, as
    ``run`` stops on it before creating anything."""
    missing = TopicState("events.profiles"), TopicState("events.dlq")
    assert topic_problems(SOURCE, *missing, PLAN, create=True) == []

    problems = topic_problems(TopicState("events"), *missing, PLAN, create=True)
    assert [(p.setting, p.fatal) for p in problems] == [("KAFKA_TOPIC", True)]


def test_a_created_changelog_too_small_for_a_profile_is_refused_before_it_is_created() -> None:
    """The created changelog gets max.message.bytes=KAFKA_MAX_MESSAGE_BYTES: below the largest
    profile record, ``run`` would refuse it right after creating it, so the judge refuses it
    already when it is missing (``check`` fails it)."""
    plan = TopicPlan(
        max_message_bytes=100_000,
        dlq_retention_ms=PLAN.dlq_retention_ms,
        profile_max_compaction_lag_ms=PLAN.profile_max_compaction_lag_ms,
        profile_record_bytes=PLAN.profile_record_bytes,
    )
    problems = topic_problems(
        SOURCE, TopicState("events.profiles"), TopicState("events.dlq"), plan, create=True
    )
    assert [p.setting for p in problems if p.fatal] == ["KAFKA_PROFILE_TOPIC"]
    assert "max.message.bytes is 100000" in fatal(problems)[0]


def test_a_compacted_input_and_a_dlq_kept_less_than_a_week_warn() -> None:
    """Warnings ``run`` logs and ``check`` shows: compaction of the input keeps one event per
    user; a DLQ kept less than a week leaves little time to replay."""
    changelog, dlq = fit()
    source = TopicState("events", 6, 3, {"cleanup.policy": "compact,delete"})
    short = TopicState(dlq.name, 6, 3, {**dlq.config, "retention.ms": str(2 * 86_400_000)})

    problems = topic_problems(source, changelog, short, PLAN)

    assert [(p.setting, p.fatal) for p in problems] == [
        ("KAFKA_TOPIC", False),
        ("KAFKA_DLQ_TOPIC", False),
    ]
    assert "compaction keeps only each user's latest event" in problems[0].message
    assert "dead letters kept 2 days" in problems[1].message
