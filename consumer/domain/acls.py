"""The Kafka ACLs the service's principal needs, and which of them the brokers say are missing.

Pure: the Kafka adapter asks the brokers what this principal may do on each topic and group
(KIP-430's authorized operations), this module says what ``run`` needs (``service_acl_needs``,
README "Kafka ACLs") and what is missing from what they answered (``missing_acls``). ``run``
refuses to start with every missing ACL in one message and ``check`` fails a line per ACL,
through one judge (``consumer.bootstrap.judge_acls``), so ``check`` fails what ``run`` refuses.
Operations carry Kafka's own names (``Read``, ``Write``, ``DescribeConfigs``, ``Create``), the
ones ``kafka-acls.sh --operation`` takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Resource = Literal["topic", "group"]

_CODES: dict[Resource, str] = {
    "topic": "TOPIC_AUTHORIZATION_FAILED",
    "group": "GROUP_AUTHORIZATION_FAILED",
}


@dataclass(frozen=True, slots=True)
class AclNeed:
    """Operations the principal needs on one resource.

    Attributes:
        resource: ``"topic"`` or ``"group"``.
        name: the topic's or the group's name.
        setting: the variable that names it (``KAFKA_TOPIC``, ``KAFKA_GROUP_ID``...).
        operations: Kafka's names of the operations (``Read``, ``DescribeConfigs``...).
    """

    resource: Resource
    name: str
    setting: str
    operations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MissingAcl:
    """One operation the brokers' authorizer does not allow this principal on a resource."""

    resource: Resource
    name: str
    setting: str
    operation: str

    @property
    def code(self) -> str:
        """The error Kafka answers a request needing it with (``TOPIC_AUTHORIZATION_FAILED``...)."""
        return _CODES[self.resource]

    def __str__(self) -> str:
        return (
            f"{self.operation} on {self.resource} {self.name!r} ({self.setting}) is not allowed "
            f"({self.code})"
        )


def service_acl_needs(
    topic: str, profile_topic: str, dlq_topic: str, group_id: str
) -> list[AclNeed]:
    """What ``run`` needs, and ``check`` asks for: the README's "Kafka ACLs" for ``run``.

    ``Read`` and ``Write`` include ``Describe`` (metadata, offsets); ``DescribeConfigs`` is for
    the topic checks at start; ``Read`` on the group covers joining it, committing and reading
    its offsets (the lag).
    """
    return [
        AclNeed("topic", topic, "KAFKA_TOPIC", ("Read", "DescribeConfigs")),
        AclNeed(
            "topic", profile_topic, "KAFKA_PROFILE_TOPIC", ("Read", "Write", "DescribeConfigs")
        ),
        AclNeed("topic", dlq_topic, "KAFKA_DLQ_TOPIC", ("Write", "DescribeConfigs")),
        AclNeed("group", group_id, "KAFKA_GROUP_ID", ("Read",)),
    ]


def replay_acl_needs(
    dlq_topic: str, topic: str, replay_group: str, group_setting: str, *, write: bool
) -> list[AclNeed]:
    """What ``replay-dlq`` needs besides ``run``'s (README "Kafka ACLs"): ``Read`` on the DLQ,
    ``Read`` on its own group (``group_setting`` names it: ``--group-id``, or
    ``KAFKA_GROUP_ID`` with ``-replay``) and, unless nothing is written (``write``: not a dry
    run), ``Write`` on the input topic."""
    needs = [
        AclNeed("topic", dlq_topic, "KAFKA_DLQ_TOPIC", ("Read",)),
        AclNeed("group", replay_group, group_setting, ("Read",)),
    ]
    if write:
        needs.append(AclNeed("topic", topic, "KAFKA_TOPIC", ("Write",)))
    return needs


@dataclass(frozen=True, slots=True)
class AclReport:
    """What a judge of the ACLs found: each one missing, and the topics the principal may not
    even describe (whether they exist cannot be known: they are not "missing" topics)."""

    missing: list[MissingAcl] = field(default_factory=list)
    hidden: frozenset[str] = frozenset()

    def message(self) -> str:
        """Every missing ACL in one line, for a command that refuses to go on."""
        return 'Kafka ACLs missing for this principal (README "Kafka ACLs"): ' + "; ".join(
            str(m) for m in self.missing
        )


def missing_acls(need: AclNeed, allowed: Iterable[str] | None) -> list[MissingAcl]:
    """The operations of ``need`` not in ``allowed``, in ``need``'s order.

    Args:
        need: what is needed on one resource.
        allowed: the operations the brokers say the principal may perform on it (empty when
            they refuse even to describe it); ``None`` when they did not say (a broker older
            than KIP-430, an authorizer that does not report): nothing is judged missing then,
            the operations fail where they are used.
    """
    if allowed is None:
        return []
    granted = set(allowed)
    return [
        MissingAcl(need.resource, need.name, need.setting, operation)
        for operation in need.operations
        if operation not in granted
    ]


def create_missing(name: str, setting: str) -> MissingAcl:
    """``Create`` on topic ``name``, which ``KAFKA_CREATE_TOPICS`` would create and may not."""
    return MissingAcl("topic", name, setting, "Create")
