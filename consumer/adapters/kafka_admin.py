"""Topics as the admin API sees them: their partition counts, replication and settings
(``describe_topics``), their creation with explicit settings (``ensure_topics``), and what the
brokers' authorizer lets this principal do on a topic or a group (``topic_operations``,
``group_operations``, ``may_create_topic``)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import (
    KafkaError,
    KafkaException,
    TopicCollection,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from consumer.domain.acls import AclNeed, AclReport, MissingAcl, create_missing, missing_acls
from consumer.domain.topics import TopicState
from consumer.errors import BrokerError, BrokersUnreachableError

log = structlog.get_logger("consumer.kafka")


AdminSource = Mapping[str, Any] | AdminClient
"""Admin client properties (``KafkaSettings.admin_config()``), or a client made of them."""


BROKER_ANSWER_TIMEOUT = 10.0
"""Seconds an operator command waits for a first broker to answer (``await_brokers``)."""

_PROBE_WAIT = 0.25
"""Seconds of one metadata request of ``await_brokers``, between looks at the client's errors."""


def await_brokers(
    config: Mapping[str, Any], servers: str, timeout: float | None = None
) -> AdminClient:
    """An admin client of ``config`` once a broker has answered a metadata request; for an
    operator command, which should say at once that Kafka is unreachable instead of waiting
    out librdkafka's 30 s metadata timeout.

    Every bootstrap broker refused the connection or could not be resolved (librdkafka's
    ``_ALL_BROKERS_DOWN``, reported after the first attempt at each): given up on at once;
    brokers that take connections but do not answer: at ``timeout`` seconds.

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()`` (an ``error_cb`` of
            its own is replaced).
        servers: the bootstrap servers, to name in the message.
        timeout: seconds to wait for an answer; ``None``: ``BROKER_ANSWER_TIMEOUT``.

    Returns:
        the client, which answered (its later calls need no new connection).

    Raises:
        BrokersUnreachableError: no broker answered; ``Kafka error at SERVERS
            (KAFKA_BOOTSTRAP_SERVERS):`` and librdkafka's last complaint, or the deadline.
        KafkaException: librdkafka refused a property (the command line names its variable).
    """
    complaints: list[KafkaError] = []
    properties: dict[str, Any] = dict(config)
    properties["error_cb"] = complaints.append
    admin = AdminClient(properties)
    timeout = BROKER_ANSWER_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=max(min(_PROBE_WAIT, deadline - time.monotonic()), 0.01))
        except KafkaException:
            pass
        else:
            return admin
        admin.poll(0)  # serves error_cb
        codes = {error.code() for error in complaints}
        detail = next(
            (e.str() for e in reversed(complaints) if e.code() != KafkaError._ALL_BROKERS_DOWN),
            "every broker is down",
        )
        del complaints[:-1]  # a refused broker is retried every few milliseconds
        if KafkaError._ALL_BROKERS_DOWN in codes:
            raise BrokersUnreachableError(servers, detail)
        if time.monotonic() >= deadline:
            raise BrokersUnreachableError(
                servers, f"no broker answered a metadata request within {timeout:g} s"
            )


def admin_client(config: AdminSource) -> AdminClient:
    """A client for ``config``, or ``config`` itself when it is one already.

    A series of admin calls (the start-up's topic checks) shares one client, so it waits for one
    connection: a new client's first request waits for its own (about 50 ms against a local
    broker). Creating a client does no network I/O.
    """
    return config if isinstance(config, AdminClient) else AdminClient(dict(config))


def describe_topics(
    config: AdminSource, names: Sequence[str], timeout: float = 30.0
) -> dict[str, TopicState]:
    """Partition count, replica count and effective configuration of each topic.

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()``, or a client.
        names: the topics; one that does not exist is described with 0 partitions.

    Raises:
        BrokerError: the cluster's metadata or a topic's configuration could not be read.
    """
    admin = admin_client(config)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot read the cluster's topics: {exc}") from exc
    states: dict[str, TopicState] = {}
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None or not topic.partitions:
            states[name] = TopicState(name)
            continue
        first = topic.partitions[min(topic.partitions)]
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            entries = admin.describe_configs([resource])[resource].result(timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot read the configuration of {name}: {exc}") from exc
        settings = {key: str(entry.value) for key, entry in entries.items()}
        states[name] = TopicState(name, len(topic.partitions), len(first.replicas), settings)
    return states


def topic_exists(config: AdminSource, name: str, timeout: float = 30.0) -> bool:
    """Whether topic ``name`` exists with partitions, from the cluster's metadata.

    A metadata failure is librdkafka's own, as from ``ensure_topics``: the command line names
    it by ``KAFKA_BOOTSTRAP_SERVERS`` (``consumer.cli``), for ``test-event`` as for
    ``produce-sample``.

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()``, or a client.
        timeout: seconds to wait for the metadata.

    Raises:
        KafkaException: the cluster's metadata could not be read within ``timeout``.
    """
    topic = admin_client(config).list_topics(timeout=timeout).topics.get(name)
    return topic is not None and topic.error is None and bool(topic.partitions)


def ensure_topics(
    config: AdminSource,
    topics: dict[str, dict[str, str]],
    partitions: int | None = None,
    timeout: float = 30.0,
    replication: int = -1,
) -> list[str]:
    """Create the topics that do not exist yet (the profile changelog is compacted), each
    creation logged at info (``topic_created``); return the names created.

    Args:
        config: admin client properties, ``KafkaSettings.admin_config()``, or a client.
        topics: name -> topic configuration of each topic wanted.
        partitions: partition count of created topics; defaults to the partition count of the
            first existing topic of ``topics``, else 1.
        replication: replica count of created topics (-1: the broker's default).

    Returns once the cluster's metadata lists the created topics, so a check that follows
    finds them.

    Raises:
        BrokerError: a topic could not be created, or is not listed within ``timeout``.
        KafkaException: the cluster's metadata could not be read.
    """
    admin = admin_client(config)
    metadata = admin.list_topics(timeout=timeout)
    existing = metadata.topics
    count = partitions
    if count is None:
        for name in topics:
            if name in existing and existing[name].error is None:
                count = len(existing[name].partitions)
                break
    count = count or 1
    missing = [
        NewTopic(name, num_partitions=count, replication_factor=replication, config=cfg)
        for name, cfg in topics.items()
        if name not in existing
    ]
    if not missing:
        return []
    created: list[str] = []
    for name, fut in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
            continue
        created.append(name)
        log.info(
            "topic_created",
            topic=name,
            partitions=count,
            replication=replication,
            config=dict(topics[name]),
        )
    _wait_listed(admin, created, timeout)
    return created


def _wait_listed(admin: AdminClient, names: Sequence[str], timeout: float) -> None:
    """Return once the cluster's metadata lists every topic of ``names`` with its partitions.

    A broker answers CreateTopics once the controller committed the topics; its metadata cache
    catches up a moment later, and a check made in between (the start-up's, right after the
    creation) would find them missing.

    Raises:
        BrokerError: a topic is still not listed after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    missing = list(names)
    while missing:
        metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1))
        missing = [
            name
            for name in missing
            if (topic := metadata.topics.get(name)) is None
            or topic.error is not None
            or not topic.partitions
        ]
        if not missing:
            return
        if time.monotonic() + delay > deadline:
            raise BrokerError(
                f"created {', '.join(missing)}, but the brokers' metadata does not list "
                f"it after {timeout:g} s"
            )
        time.sleep(delay)  # the brokers' metadata catching up: a bounded, backed-off poll
        delay = min(delay * 2, 0.5)


@dataclass(frozen=True, slots=True)
class TopicAccess:
    """What the brokers say about a topic for this principal.

    Attributes:
        exists: the topic exists (False also when the principal may not know: see
            ``allowed``).
        allowed: the operations the principal may perform on it, by Kafka's names (``Read``,
            ``DescribeConfigs``...); empty when the brokers refuse even to describe it
            (TOPIC_AUTHORIZATION_FAILED, which Kafka answers for a topic that exists or not);
            None when they did not say (no authorized operations in the answer, or no topic).
    """

    exists: bool
    allowed: frozenset[str] | None


def operation_name(operation: Any) -> str:  # confluent_kafka AclOperation
    """Kafka's name of an ``AclOperation`` (``DESCRIBE_CONFIGS`` -> ``DescribeConfigs``)."""
    return "".join(word.capitalize() for word in str(operation.name).split("_"))


def _operations(operations: Any) -> frozenset[str] | None:
    if operations is None:
        return None
    return frozenset(operation_name(op) for op in operations)


def topic_operations(admin: AdminClient, name: str, timeout: float = 30.0) -> TopicAccess:
    """Whether topic ``name`` exists and what this principal may do on it (a Metadata request
    with the topic's authorized operations, KIP-430).

    Raises:
        BrokerError: the brokers did not answer, or answered another error.
    """
    futures = admin.describe_topics(
        TopicCollection([name]), include_authorized_operations=True, request_timeout=timeout
    )
    try:
        description = futures[name].result(timeout=timeout)
    except TimeoutError as exc:
        raise BrokerError(f"cannot describe topic {name} within {timeout:g} s") from exc
    except KafkaException as exc:
        code = _code(exc)
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return TopicAccess(exists=False, allowed=frozenset())
        if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return TopicAccess(exists=False, allowed=None)
        raise BrokerError(f"cannot describe topic {name}: {exc}") from exc
    return TopicAccess(exists=True, allowed=_operations(description.authorized_operations))


def group_operations(
    admin: AdminClient, group: str, timeout: float = 30.0
) -> frozenset[str] | None:
    """What this principal may do on consumer group ``group`` (a DescribeGroups request with
    the group's authorized operations, KIP-430; Kafka answers them for a group with no member
    or offsets too): empty when the brokers refuse to describe it
    (GROUP_AUTHORIZATION_FAILED), None when they did not say.

    A coordinator that moves or is still loading the group's offsets partition (a broker just
    started) is asked again, with a backoff, until ``timeout``.

    Raises:
        BrokerError: the brokers did not answer, or answered another error.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        left = max(deadline - time.monotonic(), 0.1)
        futures = admin.describe_consumer_groups(
            [group], include_authorized_operations=True, request_timeout=left
        )
        try:
            description = futures[group].result(timeout=left)
        except TimeoutError as exc:
            raise BrokerError(f"cannot describe group {group} within {timeout:g} s") from exc
        except KafkaException as exc:
            code = _code(exc)
            if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
                return frozenset()
            if code not in _COORDINATOR_MOVING or time.monotonic() + delay >= deadline:
                raise BrokerError(f"cannot describe group {group}: {exc}") from exc
            time.sleep(delay)  # the coordinator loading: a bounded, backed-off retry
            delay = min(delay * 2, 1.0)
            continue
        return _operations(description.authorized_operations)


_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
"""A group's coordinator moving or loading: librdkafka's admin client gives these up at once."""


def may_create_topic(admin: AdminClient, name: str, timeout: float = 30.0) -> bool:
    """Whether the brokers would let this principal create topic ``name``: a CreateTopics
    request that only validates (nothing is created). Only an authorization refusal is a no;
    any other answer (the topic exists, a policy of the cluster) is left to the creation.

    Raises:
        BrokerError: the brokers did not answer.
    """
    topic = NewTopic(name, num_partitions=1, replication_factor=-1)
    futures = admin.create_topics([topic], request_timeout=timeout, validate_only=True)
    try:
        futures[name].result(timeout=timeout)
    except TimeoutError as exc:
        raise BrokerError(f"cannot ask whether topic {name} may be created: {exc}") from exc
    except KafkaException as exc:
        code = _code(exc)
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return False
        if code in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT):
            raise BrokerError(f"cannot ask whether topic {name} may be created: {exc}") from exc
    return True


def _code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def judge_acl_needs(
    admin: AdminClient,
    needs: Sequence[AclNeed],
    creatable: Collection[str] = (),
    timeout: float = 30.0,
) -> AclReport:
    """Which ACLs of ``needs`` the brokers say this principal lacks
    (``consumer.domain.acls.missing_acls`` over ``topic_operations`` and ``group_operations``).

    A topic that does not exist is judged only when it is in ``creatable`` (``Create``: a
    validate-only CreateTopics); otherwise its absence is for the topic checks to report.

    Raises:
        BrokerError: the brokers did not answer.
    """
    missing: list[MissingAcl] = []
    hidden: set[str] = set()
    for need in needs:
        if need.resource == "group":
            missing += missing_acls(need, group_operations(admin, need.name, timeout))
            continue
        access = topic_operations(admin, need.name, timeout)
        if access.allowed == frozenset():
            hidden.add(need.name)
        if access.exists or access.allowed == frozenset():
            missing += missing_acls(need, access.allowed)
        absent = not access.exists and need.name in creatable
        if absent and not may_create_topic(admin, need.name, timeout):
            missing.append(create_missing(need.name, need.setting))
    return AclReport(missing, frozenset(hidden))
