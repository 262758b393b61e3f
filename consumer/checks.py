"""``button-consumer check``: every configuration problem at once, each naming its setting.

Apart from the other operator commands because it is the largest (settings, Kafka with topics,
their configuration and the group, the registry with its compatibility check, and Button), and
operators read it on its own: it is what they run before ``run``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from consumer.adapters.button_client import ButtonClient
from consumer.adapters.kafka import kafka_error_text
from consumer.adapters.kafka_admin import await_brokers
from consumer.adapters.kafka_reader import PartitionReader, committed_partitions
from consumer.bootstrap import judge_acls, judge_topics, kafka_topic_plan
from consumer.domain.acls import AclReport
from consumer.domain.outcomes import OutcomeKind
from consumer.domain.topics import TopicProblem, lost_changelog_problem
from consumer.domain.wording import counted
from consumer.errors import BrokerError, BrokersUnreachableError
from consumer.settings import (
    ButtonSettings,
    DeliverySettings,
    KafkaSettings,
    MappingSettings,
    SchemaSettings,
    diagnose,
    kafka_property_problem,
)


@dataclass(frozen=True)
class Finding:
    """One line of ``check``: its status, the setting it is about, and what was found."""

    status: Literal["ok", "fail", "warn", "skip"]
    setting: str
    message: str


def check(
    *, as_json: bool = False, timeout: float = 10.0, environ: Mapping[str, str] | None = None
) -> int:
    """``check``: every problem of the configuration at once, each naming its setting.

    Settings (all invalid variables, not just the first), Kafka (reachable, authorized, topics
    and their partitions, every problem of the topics as ``run`` judges them at start with
    ``consumer.bootstrap.judge_topics``: a refusal fails, a warning warns; the group), the schema
    registry (credentials, the writer schema's compatibility with the reader) and Button (a
    harmless read of an unknown order: 404 means the key is accepted, 401 not). Connectivity is
    checked for every section whose settings are valid. librdkafka's own log lines are captured,
    never printed raw.

    Returns:
        0 when nothing failed (warnings allowed), else 1.
    """
    sections, problems = diagnose(environ)
    findings = [Finding("fail" if p.fatal else "warn", p.variable, p.message) for p in problems]
    if not any(p.fatal for p in problems):
        findings.insert(0, Finding("ok", "settings", "every setting is valid"))
    kafka, schema = sections["kafka"], sections["schema"]
    button, delivery = sections["button"], sections["delivery"]
    if isinstance(kafka, KafkaSettings):
        mapping = sections["mapping"]
        # MAPPING_ settings invalid (failed above): the largest profile record is unknown.
        profile = mapping.max_profile_bytes if isinstance(mapping, MappingSettings) else 0
        findings.extend(_check_kafka(kafka, profile, timeout, environ))
    else:
        findings.append(
            Finding("skip", "KAFKA_BOOTSTRAP_SERVERS", "Kafka not checked: fix the settings above")
        )
    if isinstance(schema, SchemaSettings) and schema.registry_url is not None:
        topic = kafka.topic if isinstance(kafka, KafkaSettings) else "commerce-events"
        findings.extend(_check_registry(schema, topic, timeout))
    if isinstance(delivery, DeliverySettings) and delivery.dry_run:
        findings.append(Finding("skip", "BUTTON_API_KEY", "Button not checked: DELIVERY_DRY_RUN"))
    elif isinstance(button, ButtonSettings) and button.api_key is not None:
        findings.append(asyncio.run(_check_button(button)))
    else:
        findings.append(
            Finding("skip", "BUTTON_API_KEY", "Button not checked: fix the settings above")
        )
    failed = any(f.status == "fail" for f in findings)
    if as_json:
        document = {"ok": not failed, "checks": [dataclasses.asdict(f) for f in findings]}
        print(json.dumps(document, indent=2))
    else:
        for f in findings:
            print(f"{f.status.upper():<5} {f.setting}: {f.message}")
    return 1 if failed else 0


class _LibrdkafkaLog(logging.Handler):
    """Keeps librdkafka's log lines (handed over through the client's ``logger``) for the
    report instead of letting them reach the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def last(self) -> str:
        """The last line, without librdkafka's ``[thrd:...]:`` prefix."""
        return re.sub(r"^\[thrd:[^\]]*\]: ", "", self.lines[-1]) if self.lines else ""


def _quiet_admin(kafka: KafkaSettings, timeout: float) -> tuple[AdminClient, _LibrdkafkaLog]:
    """An admin client whose librdkafka lines are kept, not printed, once a broker answered
    (``await_brokers``: brokers that all refuse end the wait at once, not at ``timeout``).

    Raises:
        BrokersUnreachableError: no broker answered.
        KafkaException: librdkafka refused a property.
    """
    log = _LibrdkafkaLog()
    logger = logging.getLogger(f"button_consumer.check.librdkafka.{id(log)}")
    logger.propagate = False
    logger.handlers = [log]
    logger.setLevel(logging.DEBUG)
    config = dict(kafka.admin_config())
    config["logger"] = logger
    return await_brokers(config, kafka.bootstrap_servers, timeout), log


def _check_kafka(
    k: KafkaSettings,
    max_profile_bytes: int,
    timeout: float,
    environ: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Reachable, then each topic judged by ``run``'s judge (``_check_topic``), the group."""
    try:
        admin, log = _quiet_admin(k, timeout)
    except BrokersUnreachableError as exc:
        return [
            Finding(
                "fail",
                "KAFKA_BOOTSTRAP_SERVERS",
                f"cannot reach Kafka at {k.bootstrap_servers} ({exc.detail}); "
                "check the address, and KAFKA_CONFIG_SECURITY_PROTOCOL / SASL settings",
            )
        ]
    except KafkaException as exc:
        # librdkafka checks the properties only now: a misspelt or refused KAFKA_CONFIG_*.
        text = kafka_error_text(exc)
        problem = kafka_property_problem(text, environ)
        if problem is None:
            return [Finding("fail", "KAFKA_BOOTSTRAP_SERVERS", f"no Kafka client: {text}")]
        return [Finding("fail", problem.variable, problem.message)]
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a diagnosis
        admin.poll(0)
        detail = log.last() or kafka_error_text(exc)
        return [
            Finding(
                "fail",
                "KAFKA_BOOTSTRAP_SERVERS",
                f"cannot reach Kafka at {k.bootstrap_servers} within {timeout:.0f} s ({detail}); "
                "check the address, and KAFKA_CONFIG_SECURITY_PROTOCOL / SASL settings",
            )
        ]
    out = [
        Finding(
            "ok",
            "KAFKA_BOOTSTRAP_SERVERS",
            f"Kafka reachable ({counted(len(metadata.brokers), 'broker')})",
        )
    ]
    try:
        acls = judge_acls(k, admin, timeout)
    except BrokerError as exc:
        out.append(Finding("fail", "KAFKA_BOOTSTRAP_SERVERS", f"ACLs not judged: {exc}"))
        acls = AclReport([], frozenset())
    try:
        problems = judge_topics(k, kafka_topic_plan(k, max_profile_bytes), admin, timeout)
    except BrokerError as exc:
        # run stops on it too (prepare_topics): the topics cannot be judged. A missing ACL
        # (DescribeConfigs) is the reason its own line gives.
        if not acls.missing:
            out.append(Finding("fail", "KAFKA_BOOTSTRAP_SERVERS", f"topics not judged: {exc}"))
        problems = None
    variables = {
        k.topic: "KAFKA_TOPIC",
        k.dlq_topic: "KAFKA_DLQ_TOPIC",
        k.profile_topic: "KAFKA_PROFILE_TOPIC",
    }
    for name, variable in variables.items():
        refused = _acl_lines(acls, "topic", name)
        if name in acls.hidden:
            # Whether it exists cannot be known: the ACL lines say why, not "missing".
            out.extend(refused)
            continue
        out.extend(_check_topic(admin, k, metadata, name, variable, problems, timeout))
        out.extend(refused)
    source = metadata.topics.get(k.topic)
    changelog = metadata.topics.get(k.profile_topic)
    if (
        problems is not None
        and source is not None
        and changelog is not None
        and source.error is None
        and changelog.error is None
        and len(source.partitions) == len(changelog.partitions)
    ):
        out.append(Finding("ok", "KAFKA_PROFILE_TOPIC", "co-partitioned with the input topic"))
    out.extend(_acl_lines(acls, "group", k.group_id) or [_check_group(admin, k, metadata, timeout)])
    return out


def _acl_lines(acls: AclReport, resource: str, name: str) -> list[Finding]:
    """A failure per ACL missing on one topic or group (``run`` refuses to start on each)."""
    return [
        Finding(
            "fail",
            m.setting,
            f"{m.resource} {m.name}: {m.operation} not allowed for this principal ({m.code}); "
            'a Kafka ACL is missing (README "Kafka ACLs")',
        )
        for m in acls.missing
        if (m.resource, m.name) == (resource, name)
    ]


def _check_topic(
    admin: AdminClient,
    k: KafkaSettings,
    metadata: Any,
    name: str,
    variable: str,
    problems: list[TopicProblem] | None,
    timeout: float,
) -> list[Finding]:
    """One topic's lines: whether it exists (or is created at start), then every problem the
    judge ``run`` applies found with it (``consumer.bootstrap.judge_topics``), a refusal as a
    failure and a warning as a warning; its configuration when it has none."""
    topic = metadata.topics.get(name)
    error = None if topic is None else topic.error
    mine = [p for p in problems or [] if p.setting == variable]
    judged = [
        Finding("fail" if p.fatal else "warn", variable, f"topic {name}: {p.message}") for p in mine
    ]
    if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        # The judge sees no such topic ("does not exist"): this line says why.
        return [
            Finding("fail", variable, f"topic {name}: not authorized (ACLs for this principal)")
        ]
    if topic is None or error is not None or not topic.partitions:
        if not k.create_topics or name == k.topic:
            return judged or [Finding("fail", variable, f"topic {name}: missing")]
        if name == k.profile_topic:
            lost = _lost_changelog(admin, k, metadata, timeout)
            if lost is not None:
                return [lost]
        return [Finding("ok", variable, f"topic {name}: missing (created at start)"), *judged]
    out = [Finding("ok", variable, f"topic {name}: {counted(len(topic.partitions), 'partition')}")]
    if problems is not None and not mine:
        out.append(_topic_config_line(admin, name, variable, timeout))
    return out + judged


def _topic_config_line(admin: AdminClient, name: str, variable: str, timeout: float) -> Finding:
    """A fit topic's cleanup policy and retention, for the operator to see."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
    except Exception as exc:  # noqa: BLE001 - reported, not raised; the judge read it already
        return Finding("ok", variable, f"topic {name}: fit ({kafka_error_text(exc)})")
    policy = str(entries["cleanup.policy"].value) if "cleanup.policy" in entries else "delete"
    retention = int(entries["retention.ms"].value) if "retention.ms" in entries else -1
    return Finding("ok", variable, f"topic {name}: {retention_text(policy, retention)}")


def retention_text(policy: str, retention_ms: int) -> str:
    """What a topic keeps, for ``check``'s line: its ``cleanup.policy`` and, where ``delete``
    applies, its ``retention.ms`` in days (``forever`` when negative). Under ``compact`` alone
    retention.ms deletes nothing (compaction keeps each key's latest record), so none is given.
    """
    policies = {p.strip() for p in policy.split(",")}
    if "delete" not in policies:
        return (
            f"cleanup.policy={policy}, no retention by time (compaction keeps each key's latest "
            "record)"
        )
    kept = "forever" if retention_ms < 0 else f"{retention_ms / 86_400_000:g} days"
    return f"cleanup.policy={policy}, retention {kept}"


def _lost_changelog(
    admin: AdminClient, k: KafkaSettings, metadata: Any, timeout: float
) -> Finding | None:
    """The missing changelog's line when ``run`` would refuse to create it: the group has
    committed offsets on the input (``consumer.domain.topics.lost_changelog_problem``, the rule
    ``run`` applies); None when it would be created."""
    source = metadata.topics.get(k.topic)
    if source is None or source.error is not None or not source.partitions:
        return None
    partitions = len(source.partitions)
    try:
        committed = committed_partitions(k.reader_config(k.group_id), k.topic, partitions, timeout)
    except BrokerError as exc:
        return Finding("warn", "KAFKA_PROFILE_TOPIC", f"topic {k.profile_topic}: missing; {exc}")
    problem = lost_changelog_problem(
        k.profile_topic, k.group_id, k.topic, sorted(committed), partitions
    )
    return None if problem is None else Finding("fail", "KAFKA_PROFILE_TOPIC", problem)


def _check_group(admin: AdminClient, k: KafkaSettings, metadata: Any, timeout: float) -> Finding:
    """The consumer group can be described (authorized); its state; a new group over a
    changelog that holds profiles warns (``_changelog_holds_records``)."""
    try:
        description = admin.describe_consumer_groups([k.group_id], request_timeout=timeout)[
            k.group_id
        ].result(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return Finding(
                "fail",
                "KAFKA_GROUP_ID",
                f"group {k.group_id}: not authorized (ACLs for this principal)",
            )
        if error is not None and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return _group_finding(k, "dead", 0, _changelog_holds_records(k, metadata, timeout))
        return Finding(
            "warn",
            "KAFKA_GROUP_ID",
            f"group {k.group_id}: not described ({kafka_error_text(exc)})",
        )
    state = str(getattr(description.state, "name", description.state)).lower()
    members = len(description.members)
    filled = state == "dead" and members == 0 and _changelog_holds_records(k, metadata, timeout)
    return _group_finding(k, state, members, filled)


def _changelog_holds_records(k: KafkaSettings, metadata: Any, timeout: float) -> bool:
    """Whether the profile changelog exists and holds a record in any partition (its ends
    asked of the brokers); ``False`` when it cannot be read (its own line says why)."""
    changelog = metadata.topics.get(k.profile_topic)
    if changelog is None or changelog.error is not None or not changelog.partitions:
        return False
    try:
        with PartitionReader(k.reader_config(k.group_id), k.profile_topic) as reader:
            marks = reader.watermarks(sorted(changelog.partitions), time.monotonic() + timeout)
    except BrokerError:
        return False
    return any(high > low for low, high in marks.values())


def _group_finding(k: KafkaSettings, state: str, members: int, filled: bool = False) -> Finding:
    """The group's line: ``state`` as Kafka names it (lower case), ``members`` in it.

    Kafka describes a group that does not exist (or no longer does: no members, no committed
    offsets) as ``dead``; for the service that is a new group. A new group over a changelog that
    holds profiles (``filled``: another group, or this one before it expired, wrote them) is a
    warning: ``run`` would read the input again from ``auto.offset.reset`` and re-send every
    order it finds there (answered 409, then updated), so a misspelt ``KAFKA_GROUP_ID`` shows.
    """
    if state == "dead" and members == 0 and filled:
        return Finding(
            "warn",
            "KAFKA_GROUP_ID",
            f"group {k.group_id}: new (starts at {k.auto_offset_reset}), but the changelog "
            f"{k.profile_topic} holds profiles: another group (or this one, before its offsets "
            "expired) wrote them. Run would read the input again from "
            f"{k.auto_offset_reset} and re-send each order it finds (Button answers 409, then "
            "the update). Check KAFKA_GROUP_ID for a typo; a new group on purpose may ignore "
            "this",
        )
    if state == "dead" and members == 0:
        return Finding(
            "ok", "KAFKA_GROUP_ID", f"group {k.group_id}: new (starts at {k.auto_offset_reset})"
        )
    return Finding(
        "ok", "KAFKA_GROUP_ID", f"group {k.group_id}: {state}, {counted(members, 'member')}"
    )


def _check_registry(schema: SchemaSettings, topic: str, timeout: float) -> list[Finding]:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    config = schema.registry_config()
    assert config is not None  # guarded by the caller: registry_url is set
    client = SchemaRegistryClient({**config, "timeout": int(timeout), "max.retries": 0})
    try:
        return _check_registry_with(client, config["url"], topic, Path(schema.dir))
    finally:
        client.close()


def _check_registry_with(client: Any, url: str, topic: str, schema_dir: Path) -> list[Finding]:
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        subjects = client.get_subjects()
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            return [
                Finding(
                    "fail",
                    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
                    f"registry {url} refused the credentials (HTTP {exc.http_status_code})",
                )
            ]
        return [
            Finding(
                "fail",
                "SCHEMA_REGISTRY_URL",
                f"registry {url}: HTTP {exc.http_status_code} {exc.error_message}",
            )
        ]
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [
            Finding(
                "fail",
                "SCHEMA_REGISTRY_URL",
                f"registry {url} unreachable ({type(exc).__name__}: {exc})",
            )
        ]
    out = [
        Finding(
            "ok",
            "SCHEMA_REGISTRY_URL",
            f"registry {url} reachable ({counted(len(subjects), 'subject')})",
        )
    ]
    subject = f"{topic}-value"
    if subject not in subjects:
        out.append(
            Finding(
                "warn",
                "SCHEMA_REGISTRY_URL",
                f"subject {subject} not registered yet (producers register it)",
            )
        )
        return out
    reader = (schema_dir / "commerce_event.avsc").read_text(encoding="utf-8")
    try:
        compatible = client.test_compatibility(subject, Schema(reader, "AVRO"))
    except SchemaRegistryError as exc:
        out.append(
            Finding(
                "warn",
                "SCHEMA_DIR",
                f"compatibility of {subject} not tested "
                f"(HTTP {exc.http_status_code} {exc.error_message})",
            )
        )
        return out
    if compatible:
        out.append(
            Finding("ok", "SCHEMA_DIR", f"the reader schema reads {subject}'s latest writer schema")
        )
    else:
        out.append(
            Finding(
                "fail",
                "SCHEMA_DIR",
                f"the reader schema is not compatible with {subject}'s latest writer schema",
            )
        )
    return out


async def _check_button(button: ButtonSettings) -> Finding:
    base = button.base_url
    async with ButtonClient.from_settings(button) as client:
        outcome = await client.get(f"button-consumer-check-{uuid.uuid4().hex[:12]}")
    if outcome.kind in (OutcomeKind.NOT_FOUND, OutcomeKind.SUCCESS):
        return Finding("ok", "BUTTON_API_KEY", f"Button {base} accepts the API key")
    if outcome.kind in (OutcomeKind.UNAUTHORIZED, OutcomeKind.FORBIDDEN):
        return Finding(
            "fail", "BUTTON_API_KEY", f"Button {base} refused the API key (HTTP {outcome.status})"
        )
    detail = f"{outcome.kind.value} {outcome.message}".rstrip()
    return Finding("fail", "BUTTON_BASE_URL", f"Button {base}: {detail}")
