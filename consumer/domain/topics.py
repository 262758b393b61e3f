"""The topics the service needs, and what makes an existing topic unfit (DESIGN, 1 and 7).

Pure: the Kafka adapter describes the topics (``TopicState``), this module says what the service
creates (``created_topic_configs``) and what is wrong with what exists (``topic_problems``). A
*fatal* problem means the service cannot keep its guarantees (a changelog that deletes profiles or
is not co-partitioned, a compacted dead-letter topic, a topic that is missing): ``run`` refuses
to start with every fatal problem in its message. Others are warnings: logged at start and
reported by ``check``. ``topic_problems`` is the one judge ``run`` and ``check`` both apply
(through ``consumer.bootstrap.judge_topics``): every refusal of ``run`` is a failure of ``check``
and every warning ``run`` logs (``topic_unfit``) a warning of ``check``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from consumer.domain.wording import counted

NO_LIMIT_MS = 9_223_372_036_854_775_807
"""Kafka's "never" for ``max.compaction.lag.ms`` (its default)."""

WEEK_MS = 7 * 24 * 3600 * 1000
"""Below this ``retention.ms`` the DLQ leaves too little time to replay its dead letters."""


@dataclass(frozen=True, slots=True)
class TopicState:
    """What the cluster says about one topic.

    Attributes:
        name: the topic.
        partitions: its partition count; 0 when the topic does not exist.
        replication: the replica count of its first partition (0 when it does not exist).
        config: its effective configuration (topic overrides and broker defaults).
    """

    name: str
    partitions: int = 0
    replication: int = 0
    config: Mapping[str, str] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.partitions > 0


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """The settings the service's own topics get (from ``KAFKA_*``)."""

    max_message_bytes: int
    dlq_retention_ms: int
    profile_max_compaction_lag_ms: int
    profile_record_bytes: int = 0
    """The largest changelog record: ``MAPPING_MAX_PROFILE_BYTES`` and the record's margin for
    its key and headers (0: not checked)."""


@dataclass(frozen=True, slots=True)
class TopicProblem:
    """One thing wrong with a topic; ``fatal``: the service must not run with it."""

    topic: str
    fatal: bool
    message: str
    setting: str = ""
    """The variable that names the topic (``KAFKA_DLQ_TOPIC``, ...)."""

    def __str__(self) -> str:
        where = f"{self.topic} ({self.setting})" if self.setting else self.topic
        return f"{where}: {self.message}"


def _policies(policy: str) -> frozenset[str]:
    return frozenset(p.strip() for p in policy.split(",") if p.strip())


def changelog_policy_problem(policy: str) -> str | None:
    """Why a profile changelog with this ``cleanup.policy`` cannot keep state (None: it can).

    Only ``compact`` alone keeps every user's latest profile; ``delete`` (alone or beside
    ``compact``) deletes profiles, parked orders and applied refunds after the retention.
    """
    if _policies(policy) == {"compact"}:
        return None
    return (
        f"cleanup.policy is {policy!r}; the profile changelog must be 'compact' only, or "
        "profiles (parked orders, applied refunds) are deleted and cannot be restored"
    )


def dlq_policy_problem(policy: str) -> str | None:
    """Why a dead-letter topic with this ``cleanup.policy`` loses dead letters (None: fit).

    Dead letters carry their source record's key, the user's: compaction keeps only a user's
    last one, so a dead-lettered order behind a later dead letter of its user (its parked
    refund) is lost, and ``replay-dlq`` can never deliver it.
    """
    if "compact" not in _policies(policy):
        return None
    return (
        f"cleanup.policy is {policy!r}; the dead-letter topic must not be compacted: dead "
        "letters carry their user's key, so compaction keeps only each user's last one and "
        "replay-dlq cannot deliver the others; use cleanup.policy=delete"
    )


def created_topic_configs(plan: TopicPlan, replication: int) -> tuple[dict[str, str], ...]:
    """The configurations of the dead-letter topic and the profile changelog, in that order.

    Args:
        plan: the service's topic settings.
        replication: the replica count they are created with (the input topic's), which sets
            ``min.insync.replicas`` to 2 from 3 replicas, so ``acks=all`` means two copies.
    """
    common = {"max.message.bytes": str(plan.max_message_bytes)}
    if replication >= 3:
        common["min.insync.replicas"] = "2"
    dlq = {
        **common,
        "cleanup.policy": "delete",
        "retention.ms": str(plan.dlq_retention_ms),
        # Dead letters keep the source timestamp; retention must count from the dead-lettering,
        # or a dead letter of an old record could be deleted at once.
        "message.timestamp.type": "LogAppendTime",
    }
    changelog = {
        **common,
        "cleanup.policy": "compact",
        # Superseded profile values (raw advertising IDs) are compacted away within this bound.
        "max.compaction.lag.ms": str(plan.profile_max_compaction_lag_ms),
        "segment.ms": str(min(plan.profile_max_compaction_lag_ms, 86_400_000)),
    }
    return dlq, changelog


def lost_changelog_problem(
    changelog: str, group: str, topic: str, committed: Sequence[int], partitions: int
) -> str | None:
    """Why a missing changelog must not be created for this group (None: it may be).

    ``committed``: the partitions of the input ``topic`` on which ``group`` has committed an
    offset. A group that has consumed kept its profiles (remembered tokens, order ledgers with
    applied refunds, parked orders) in a changelog that is gone (deleted, or
    ``KAFKA_PROFILE_TOPIC`` changed): an empty one would restore nothing while the group goes on
    after the records that built them, so every later partial refund of an order it sent would
    be held as unknown (``refund_held``) and Button keep the total from before it.
    """
    if not committed:
        return None
    return (
        f"the profile changelog {changelog!r} does not exist, but consumer group {group!r} "
        f"(KAFKA_GROUP_ID) has committed offsets on {topic!r} (partitions {sorted(committed)}): "
        "its profiles were in that changelog, and starting with an empty one would treat every "
        "later refund of an order it already sent as unknown. It is not created automatically "
        f"for a group that has consumed. To go on on purpose, either create {changelog!r} "
        f"yourself (cleanup.policy=compact, {counted(partitions, 'partition')}, as README "
        "'Topics' lists), "
        "accepting that every profile starts empty, or use a new KAFKA_GROUP_ID (it starts at "
        "KAFKA_AUTO_OFFSET_RESET)"
    )


def topic_problems(
    source: TopicState,
    changelog: TopicState,
    dlq: TopicState,
    plan: TopicPlan,
    *,
    create: bool = False,
) -> list[TopicProblem]:
    """What is wrong with the input topic, the profile changelog and the dead-letter topic.

    ``create`` (``KAFKA_CREATE_TOPICS``): a missing DLQ or changelog is created at start with
    ``created_topic_configs`` (the input's partitions and replicas), so it is judged as that
    topic; with the input missing too, only the input is refused (``run`` stops there). A
    missing changelog of a group that has consumed is refused apart
    (``lost_changelog_problem``).

    Fatal: a missing topic; a changelog whose ``cleanup.policy`` is not exactly ``compact``
    (``delete`` loses profiles, parked orders and applied refunds after the retention) or whose
    partition count differs from the input's (co-partitioning, DESIGN 7); a dead-letter topic
    whose ``cleanup.policy`` includes ``compact`` (it keeps one dead letter per user).
    Warnings: a record limit below the producers', fewer replicas than the input, a dead-letter
    topic whose retention counts from the source timestamp or keeps dead letters less than a
    week, a changelog that keeps superseded values without a bound, and a compacted input.
    """
    if create and source.exists:
        dlq_config, changelog_config = created_topic_configs(plan, source.replication)
        if not dlq.exists:
            dlq = TopicState(dlq.name, source.partitions, source.replication, dlq_config)
        if not changelog.exists:
            changelog = TopicState(
                changelog.name, source.partitions, source.replication, changelog_config
            )
    problems: list[TopicProblem] = []
    for state, role, setting in (
        (source, "input", "KAFKA_TOPIC"),
        (changelog, "profile changelog", "KAFKA_PROFILE_TOPIC"),
        (dlq, "DLQ", "KAFKA_DLQ_TOPIC"),
    ):
        if not state.exists and not (create and state is not source):
            problems.append(
                TopicProblem(state.name, True, f"the {role} topic does not exist", setting)
            )
    if source.exists and "compact" in _policies(source.config.get("cleanup.policy", "delete")):
        problems.append(
            TopicProblem(
                source.name,
                False,
                f"cleanup.policy is {source.config['cleanup.policy']!r}: compaction keeps only "
                "each user's latest event, so events the service has not read yet may be lost",
                "KAFKA_TOPIC",
            )
        )
    problems.extend(_changelog_problems(source, changelog, plan))
    problems.extend(_dlq_problems(dlq))
    for state, setting in ((changelog, "KAFKA_PROFILE_TOPIC"), (dlq, "KAFKA_DLQ_TOPIC")):
        if not state.exists:
            continue
        limit = int(state.config.get("max.message.bytes", str(plan.max_message_bytes)))
        if limit < plan.max_message_bytes:
            problems.append(
                TopicProblem(
                    state.name,
                    False,
                    f"max.message.bytes is {limit}, below KAFKA_MAX_MESSAGE_BYTES "
                    f"({plan.max_message_bytes}): larger records are refused by the broker",
                    setting,
                )
            )
        if source.exists and state.replication < source.replication:
            problems.append(
                TopicProblem(
                    state.name,
                    False,
                    f"has {state.replication} replicas, fewer than {source.name} "
                    f"({source.replication})",
                    setting,
                )
            )
    return problems


def copartition_problem(
    changelog: str, changelog_partitions: int, source: str, source_partitions: int
) -> TopicProblem | None:
    """The fatal problem of a profile changelog whose partition count is not the input's
    (DESIGN, 7: a user's profile lives in the changelog partition of the input partition its
    records are in), with what to do; ``None`` when the counts match.

    One wording wherever the mismatch is found: at start (``run``, ``check``) and when a
    running member is assigned an input partition the changelog does not have (the input was
    given partitions under it).
    """
    if changelog_partitions == source_partitions:
        return None
    if changelog_partitions < source_partitions:
        fix = (
            f"stop the service, give {changelog} {source_partitions} partitions too, then start it"
        )
    else:
        fix = (
            f"a topic's partitions cannot be removed: stop the service, give {source} "
            f"{changelog_partitions} partitions too, or use a new, empty KAFKA_PROFILE_TOPIC, "
            "then start it"
        )
    return TopicProblem(
        changelog,
        True,
        f"has {counted(changelog_partitions, 'partition')} but {source} has "
        f"{source_partitions}; the profile changelog must be co-partitioned with the input: "
        f"{fix} (README: Changing the input's partition count)",
        "KAFKA_PROFILE_TOPIC",
    )


def _changelog_problems(
    source: TopicState, changelog: TopicState, plan: TopicPlan
) -> list[TopicProblem]:
    """An existing changelog's policy, partitions, record limit and compaction bound
    (``topic_problems``)."""
    problems: list[TopicProblem] = []
    if not changelog.exists:
        return problems
    unfit = changelog_policy_problem(changelog.config.get("cleanup.policy", "delete"))
    if unfit is not None:
        problems.append(TopicProblem(changelog.name, True, unfit, "KAFKA_PROFILE_TOPIC"))
    if source.exists:
        mismatch = copartition_problem(
            changelog.name, changelog.partitions, source.name, source.partitions
        )
        if mismatch is not None:
            problems.append(mismatch)
    limit = int(changelog.config.get("max.message.bytes", str(plan.max_message_bytes)))
    if limit < plan.profile_record_bytes:
        problems.append(
            TopicProblem(
                changelog.name,
                True,
                f"max.message.bytes is {limit}, below the largest profile record "
                f"({plan.profile_record_bytes} bytes: MAPPING_MAX_PROFILE_BYTES and a margin "
                "for the key and headers): a profile that grows to its cap could not be "
                "written and the service would stop on it; raise the topic's "
                "max.message.bytes or lower MAPPING_MAX_PROFILE_BYTES",
                "KAFKA_PROFILE_TOPIC",
            )
        )
    lag = int(changelog.config.get("max.compaction.lag.ms", NO_LIMIT_MS))
    if lag >= NO_LIMIT_MS:
        problems.append(
            TopicProblem(
                changelog.name,
                False,
                "max.compaction.lag.ms is unbounded: superseded profile values (advertising "
                "IDs) may stay in the log indefinitely",
                "KAFKA_PROFILE_TOPIC",
            )
        )
    return problems


def _dlq_problems(dlq: TopicState) -> list[TopicProblem]:
    """An existing dead-letter topic's cleanup policy and timestamps (``topic_problems``)."""
    problems: list[TopicProblem] = []
    if not dlq.exists:
        return problems
    unfit = dlq_policy_problem(dlq.config.get("cleanup.policy", "delete"))
    if unfit is not None:
        problems.append(TopicProblem(dlq.name, True, unfit, "KAFKA_DLQ_TOPIC"))
    retention = int(dlq.config.get("retention.ms", "-1"))
    if retention >= 0 and dlq.config.get("message.timestamp.type") != "LogAppendTime":
        problems.append(
            TopicProblem(
                dlq.name,
                False,
                "message.timestamp.type is not LogAppendTime: dead letters keep the source "
                "timestamp, so retention.ms counts from the event and an old record's dead "
                "letter may be deleted at once",
                "KAFKA_DLQ_TOPIC",
            )
        )
    if 0 <= retention < WEEK_MS:
        problems.append(
            TopicProblem(
                dlq.name,
                False,
                f"dead letters kept {retention / 86_400_000:g} days (retention.ms): less than a "
                "week to replay them",
                "KAFKA_DLQ_TOPIC",
            )
        )
    return problems
