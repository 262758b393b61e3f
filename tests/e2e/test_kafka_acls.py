"""The Kafka ACLs each command needs, against a broker that enforces them (README "Kafka ACLs").

One secured broker for the module: SASL/PLAIN and KRaft's ``StandardAuthorizer``, nothing
allowed without an ACL (``allow.everyone.if.no.acl.found=false``), a super user for the test's
own clients. Each test runs the commands as a principal of its own, granted exactly the ACLs
the README's ``kafka-acls.sh`` commands list (parsed from it), or those minus one to see what
the service says without it: it must stop or fail naming the resource and the operation, never
hang, never commit past a record it did not finish.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
)
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType
from confluent_kafka.cimpl import NewTopic

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.topics import RESTORE_GROUP_ID, restore_partitions
from consumer.devtools.localkafka import LocalKafka, SaslSecurity
from consumer.errors import BrokerError
from consumer.samples import read_jsonl
from consumer.sandbox.testing import SandboxHandle
from consumer.settings import Settings
from tests.e2e.harness import ServiceProcess, wait_until

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CLI = Path(sys.executable).parent / "button-consumer"
SUPER_USER = "admin"
PRINCIPALS = [f"svc-{n:02d}" for n in range(40)]
KEDA = "keda"
USERS = {SUPER_USER: "admin-secret", KEDA: "keda-secret", **{p: f"{p}-secret" for p in PRINCIPALS}}
BROKER_START_TIMEOUT = 180.0
"""Seconds the module's broker may take to answer (a cold Maven resolution included)."""
_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
EXIT_TIMEOUT = 90.0
"""Seconds a command refused by the brokers may take to say so and exit (never a hang)."""


# --- the documented ACLs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Acl:
    """One ACL of the README: ``operation`` (Kafka's name) on ``resource`` (``topic`` or
    ``group``) named by ``name``, a README placeholder such as ``$KAFKA_TOPIC``."""

    principal: str
    resource: str
    name: str
    operation: str

    def binding(self, principals: Mapping[str, str], names: Mapping[str, str]) -> AclBinding:
        """The ACL for ``principals[self.principal]`` on the resource ``names`` gives."""
        return AclBinding(
            ResourceType.TOPIC if self.resource == "topic" else ResourceType.GROUP,
            names[self.name],
            ResourcePatternType.LITERAL,
            f"User:{principals[self.principal]}",
            "*",
            AclOperation[re.sub(r"(?<!^)(?=[A-Z])", "_", self.operation).upper()],
            AclPermissionType.ALLOW,
        )


def documented_acls() -> dict[str, list[Acl]]:
    """The README's ``kafka-acls.sh`` commands (section "Kafka ACLs"), by the comment above
    them (``run and check``, ``replay-dlq, besides those of run``...)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Kafka ACLs\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    groups: dict[str, list[Acl]] = {}
    label = ""
    for line in block.splitlines():
        if line.startswith("# "):
            label = line[2:].split(",")[0].strip()
            continue
        if not line.startswith("$ACLS "):
            continue
        principal = re.search(r'--allow-principal "User:\$(\w+)"', line)
        resource = re.search(r'--(topic|group) "(\$[\w-]+)"', line)
        assert principal, f"README: no --allow-principal in: {line}"
        assert resource, f"README: no --topic or --group in: {line}"
        for operation in re.findall(r"--operation (\w+)", line):
            groups.setdefault(label, []).append(
                Acl(principal[1], resource[1], resource[2], operation)
            )
    return groups


RUN = "run and check"
CREATE = "run with KAFKA_CREATE_TOPICS=true"
REPLAY = "replay-dlq"
SCALER = "KEDA's scaler"


# --- the broker, principals and names ------------------------------------------------------


@pytest.fixture(scope="module")
def secured_kafka() -> Iterator[LocalKafka]:
    """One SASL/PLAIN broker enforcing ACLs for the module; started once, within a deadline.
    A broker that cannot start fails the tests with the reason: they never skip."""
    kafka = LocalKafka(
        security=SaslSecurity(USERS, super_user=SUPER_USER), start_timeout=BROKER_START_TIMEOUT
    )
    try:
        kafka.start()
    except Exception as exc:
        pytest.fail(f"no secured Kafka broker: {type(exc).__name__}: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()


_free_principals = iter(PRINCIPALS)


@pytest.fixture
def principal() -> str:
    """A SASL user no test has granted anything yet."""
    return next(_free_principals)


@dataclass
class Deployment:
    """One deployment's names on the secured broker, and the principal it runs as."""

    kafka: LocalKafka
    principal: str
    sandbox: SandboxHandle
    tmp: Path
    names: dict[str, str]
    _admin: AdminClient | None = None

    @property
    def topic(self) -> str:
        return self.names["$KAFKA_TOPIC"]

    @property
    def dlq(self) -> str:
        return self.names["$KAFKA_DLQ_TOPIC"]

    @property
    def changelog(self) -> str:
        return self.names["$KAFKA_PROFILE_TOPIC"]

    @property
    def group(self) -> str:
        return self.names["$KAFKA_GROUP_ID"]

    def admin(self) -> AdminClient:
        """The super user's admin client (one per deployment: its futures need it alive)."""
        if self._admin is None:
            self._admin = AdminClient(self.kafka.client_config())
        return self._admin

    def grant(self, acls: list[Acl]) -> None:
        """Create ``acls`` (as the super user), for this deployment's principal and KEDA's."""
        principals = {"PRINCIPAL": self.principal, "KEDA_PRINCIPAL": KEDA}
        bindings = [acl.binding(principals, self.names) for acl in acls]
        for future in self.admin().create_acls(bindings, request_timeout=30).values():
            future.result(timeout=30)

    def revoke(self, acls: list[Acl]) -> None:
        """Delete ``acls`` (as the super user); returns once the brokers' authorizer has them
        no more (the principal's describe of each topic no longer lists the operation)."""
        principals = {"PRINCIPAL": self.principal, "KEDA_PRINCIPAL": KEDA}
        filters = [
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                b.permission_type,
            )
            for b in (acl.binding(principals, self.names) for acl in acls)
        ]  # fmt: skip
        for future in self.admin().delete_acls(filters, request_timeout=30).values():
            future.result(timeout=30)
        own = AdminClient(self.kafka.client_config(self.principal))

        def gone() -> bool:
            for acl in acls:
                name = self.names[acl.name]
                futures = own.describe_topics(
                    TopicCollection([name]), include_authorized_operations=True
                )
                try:
                    allowed = futures[name].result(timeout=30).authorized_operations or []
                except KafkaException:
                    continue  # not even described any more
                if acl.operation.upper() in {op.name.replace("_", "") for op in allowed}:
                    return False
            return True

        wait_until(gone, 30, message="the revoked ACLs are still in force")

    def create_topics(self, *, service_topics: bool = True) -> None:
        """The input topic and (``service_topics``) the DLQ and changelog, as an admin would."""
        topics = [NewTopic(self.topic, num_partitions=1, replication_factor=1)]
        if service_topics:
            topics += [
                NewTopic(self.dlq, 1, 1, config={"message.timestamp.type": "LogAppendTime"}),
                NewTopic(
                    self.changelog,
                    1,
                    1,
                    config={"cleanup.policy": "compact", "max.compaction.lag.ms": "604800000"},
                ),
            ]
        for future in self.admin().create_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)

    def env(self, **overrides: str) -> dict[str, str]:
        """The service's environment, authenticating as the principal."""
        security = {k: str(v) for k, v in self.kafka.client_config(self.principal).items()}
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "KAFKA_CONFIG_SECURITY_PROTOCOL": security["security.protocol"],
            "KAFKA_CONFIG_SASL_MECHANISM": security["sasl.mechanism"],
            "KAFKA_CONFIG_SASL_USERNAME": security["sasl.username"],
            "KAFKA_CONFIG_SASL_PASSWORD": security["sasl.password"],
            "KAFKA_TOPIC": self.topic,
            "KAFKA_GROUP_ID": self.group,
            "KAFKA_DLQ_TOPIC": self.dlq,
            "KAFKA_PROFILE_TOPIC": self.changelog,
            "KAFKA_CREATE_TOPICS": "false",
            "BUTTON_API_KEY": self.sandbox.api_key,
            "BUTTON_BASE_URL": self.sandbox.base_url,
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": "0",
            "DELIVERY_RETRY_BASE_DELAY_SECONDS": "0.05",
            "DELIVERY_RETRY_MAX_DELAY_SECONDS": "1",
            "LOG_LEVEL": "info",
            **overrides,
        }

    def service(self, name: str, **overrides: str) -> ServiceProcess:
        """``button-consumer run`` as the principal, started; its output in ``tmp``."""
        return ServiceProcess(self.env(**overrides), self.tmp / f"{name}.log").start()

    def command(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        """``button-consumer ARGS`` as the principal, to its end (bounded)."""
        base = ServiceProcess(self.env(**overrides), self.tmp / "unused.log").env
        return subprocess.run(
            [str(CLI), *args],
            env=base,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
            check=False,
            cwd=REPO,
        )

    def produce_purchase(self, order_id: str) -> None:
        """A purchase of ``order_id``, keyed by a user of its own (as the super user)."""
        event = next(
            read_jsonl(
                [
                    json.dumps(
                        {
                            "event_id": f"event-{order_id}",
                            "event_type": "PURCHASE",
                            "event_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "user_key": f"user-{order_id}",
                            "commerce": {
                                "action": "PURCHASE",
                                "transaction_id": order_id,
                                "currency_code": "EUR",
                                "total_amount": "5.00",
                            },
                        }
                    )
                ]
            )
        )
        encoder = build_encoder(REPO / "schemas", None, {}, topic=self.topic)
        self.produce(event.user_key.encode(), encoder.encode_event(event))

    def produce(self, key: bytes, value: bytes) -> None:
        producer = Producer({**self.kafka.client_config(), "acks": "all"})
        producer.produce(self.topic, key=key, value=value)
        assert producer.flush(30) == 0, "the record was not acknowledged"

    def committed(self, group: str | None = None, topic: str | None = None) -> int:
        """The group's committed offset on partition 0 of the input (-1001: none)."""
        reader = Consumer({**self.kafka.client_config(), "group.id": group or self.group})
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    [tp] = reader.committed([TopicPartition(topic or self.topic, 0)], timeout=30)
                    return int(tp.offset)
                except KafkaException as exc:
                    # The group's coordinator is found or loaded on first use: asked again.
                    moving = exc.args[0].code() in _COORDINATOR_MOVING
                    if not moving or time.monotonic() >= deadline:
                        raise
                time.sleep(0.2)
        finally:
            reader.close()

    def end(self, topic: str) -> int:
        """The end offset of partition 0 of ``topic``."""
        reader = Consumer({**self.kafka.client_config(), "group.id": "acl-test-ends"})
        try:
            return int(reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1])
        finally:
            reader.close()


@pytest.fixture
def deployment(
    secured_kafka: LocalKafka, principal: str, sandbox: SandboxHandle, tmp_path: Path
) -> Deployment:
    tag = uuid.uuid4().hex[:10]
    topic = f"acl-{tag}"
    names = {
        "$KAFKA_TOPIC": topic,
        "$KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "$KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "$KAFKA_GROUP_ID": f"group-{tag}",
        "$KAFKA_GROUP_ID-replay": f"group-{tag}-replay",
    }
    return Deployment(secured_kafka, principal, sandbox, tmp_path, names)


def service_acls(*labels: str) -> list[Acl]:
    """The README's ACLs of the commands ``labels`` for the service's principal."""
    documented = documented_acls()
    return [acl for label in labels for acl in documented[label] if acl.principal == "PRINCIPAL"]


def without(acls: list[Acl], resource: str, name: str, operation: str) -> list[Acl]:
    """``acls`` less one, which must be among them."""
    dropped = [a for a in acls if (a.resource, a.name, a.operation) == (resource, name, operation)]
    assert dropped, f"the README grants no {operation} on {resource} {name}"
    return [a for a in acls if a not in dropped]


def exit_status(service: ServiceProcess, timeout: float = EXIT_TIMEOUT) -> int:
    """The status ``service`` exits with by itself; a service still running at ``timeout``
    (a hang) is stopped and fails the test with its log."""
    deadline = time.monotonic() + timeout
    while service.alive():
        if time.monotonic() >= deadline:
            service.terminate()
            pytest.fail(f"run neither stopped nor failed in {timeout:g} s:\n{service.log_tail()}")
        time.sleep(0.1)
    return service.terminate()


def stopped_on_error(service: ServiceProcess) -> str:
    """The ``error`` of the service's ``stopped_on_error`` line ("" when none)."""
    for line in service.log_path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "stopped_on_error":
                return str(entry.get("error"))
    return ""


def keda_lag(deployment: Deployment) -> dict[int, int]:
    """The group's lag per partition, read as KEDA's Kafka scaler reads it, as its principal:
    the topic's partitions (Metadata), the group's committed offsets (OffsetFetch) and the
    partitions' end offsets (ListOffsets)."""
    admin = AdminClient(deployment.kafka.client_config(KEDA))
    topic = deployment.topic
    partitions = admin.list_topics(topic=topic, timeout=30).topics[topic].partitions
    request = ConsumerGroupTopicPartitions(
        deployment.group, [TopicPartition(topic, p) for p in partitions]
    )
    answer = admin.list_consumer_group_offsets([request])[deployment.group].result(timeout=30)
    committed = {tp.partition: tp.offset for tp in answer.topic_partitions}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    ends = admin.list_offsets({TopicPartition(topic, p): latest for p in partitions})
    lag = {
        tp.partition: future.result(timeout=30).offset - committed[tp.partition]
        for tp, future in ends.items()
    }
    del admin  # after its futures
    return lag


# --- the documented set works ------------------------------------------------------------------


def test_every_command_works_with_exactly_the_documented_acls(deployment):
    """Granted the README's ACLs and nothing else: ``check`` passes; ``run`` delivers a purchase
    and commits past it, dead-letters a refused one to the DLQ; ``replay-dlq`` writes it back
    and ``run`` delivers it; KEDA's principal reads the group's lag."""
    d = deployment
    d.create_topics()
    d.grant(service_acls(RUN, REPLAY) + documented_acls()[SCALER])
    d.sandbox.set_faults(
        {"rules": [{"order_id": "REFUSED", "operation": "create", "fail_first": 1,
                    "action": "status", "status": 400}]}
    )  # fmt: skip
    d.produce_purchase("DELIVERED")
    d.produce_purchase("REFUSED")

    check = d.command("check")
    assert (check.returncode, "FAIL" in check.stdout) == (0, False), check.stdout + check.stderr

    service = d.service("run")
    try:
        wait_until(lambda: d.committed() == 2, 60, message="run did not commit both records")
        assert d.sandbox.order("DELIVERED") is not None
        assert (d.sandbox.order("REFUSED"), d.end(d.dlq)) == (None, 1)
        assert keda_lag(d) == {0: 0}

        replay = d.command("replay-dlq", "--no-progress")
        assert replay.returncode == 0, replay.stdout + replay.stderr
        wait_until(lambda: d.committed() == 3, 60, message="run did not consume the replayed one")
        assert d.sandbox.order("REFUSED") is not None
        assert d.committed(d.names["$KAFKA_GROUP_ID-replay"], d.dlq) == 1
    finally:
        status = service.terminate()
    assert status == 0, service.log_tail()


def test_run_creates_its_topics_with_the_documented_create_acls(deployment):
    """With KAFKA_CREATE_TOPICS=true and the README's ``Create`` ACLs, ``check`` says the
    missing DLQ and changelog are created at start, and ``run`` creates them and delivers."""
    d = deployment
    d.create_topics(service_topics=False)
    d.grant(service_acls(RUN, CREATE))
    d.produce_purchase("CREATED")

    check = d.command("check", KAFKA_CREATE_TOPICS="true")
    assert (check.returncode, "FAIL" in check.stdout) == (0, False), check.stdout + check.stderr
    assert f"topic {d.dlq}: missing (created at start)" in check.stdout

    service = d.service("run", KAFKA_CREATE_TOPICS="true")
    try:
        wait_until(lambda: d.committed() == 1, 60, message="run did not commit the purchase")
        assert d.sandbox.order("CREATED") is not None
        assert (d.end(d.dlq), d.end(d.changelog) > 0) == (0, True)
    finally:
        status = service.terminate()
    assert status == 0, service.log_tail()


# --- what each command says without one of them ------------------------------------------


def test_a_restore_without_read_on_the_changelog_fails_naming_it_instead_of_hanging(deployment):
    """The profile restore of a changelog that holds a profile, by a principal that may not
    read it, raises ``BrokerError`` naming the topic and TOPIC_AUTHORIZATION_FAILED within its
    stall timeout: librdkafka reports the refused fetch again and again, which must not count
    as progress (it did: ``run`` sat in "restoring" without a word until it was stopped)."""
    d = deployment
    d.create_topics()
    admin_producer = Producer(d.kafka.client_config())
    admin_producer.produce(d.changelog, key=b"user-1", value=b"a profile")
    assert admin_producer.flush(30) == 0
    d.grant(without(service_acls(RUN), "topic", "$KAFKA_PROFILE_TOPIC", "Read"))
    settings = Settings.from_env(d.env())
    outcome: list[BaseException | int] = []

    def restore() -> None:
        try:
            outcome.append(
                restore_partitions(
                    settings.kafka.reader_config(RESTORE_GROUP_ID),
                    d.changelog,
                    [0],
                    lambda _partition, _records: None,
                    timeout=5.0,
                )
            )
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    thread = threading.Thread(target=restore, name="restore", daemon=True)
    thread.start()
    thread.join(EXIT_TIMEOUT)
    assert not thread.is_alive(), f"the restore neither read nor failed in {EXIT_TIMEOUT:g} s"
    [error] = outcome
    assert isinstance(error, BrokerError), error
    named = (d.changelog in str(error), "TOPIC_AUTHORIZATION_FAILED" in str(error))
    assert named == (True, True), str(error)


def _ids(label: str) -> list[Any]:
    return [
        pytest.param(acl, id=f"{acl.operation}-{acl.resource}-{acl.name.strip('$')}")
        for acl in service_acls(label)
    ]


def _refused(acl: Acl, names: Mapping[str, str]) -> tuple[str, str]:
    """What the refusal must name: ``<Operation> on <resource> '<name>'``, and Kafka's code."""
    code = "TOPIC" if acl.resource == "topic" else "GROUP"
    return f"{acl.operation} on {acl.resource} '{names[acl.name]}'", f"{code}_AUTHORIZATION_FAILED"


@pytest.mark.parametrize("missing", _ids(RUN))
def test_run_without_an_acl_refuses_to_start_naming_it_and_loses_nothing(deployment, missing):
    """Each ACL of ``run`` taken away: ``run`` exits 1 at start naming the operation, the
    resource and Kafka's error code, commits nothing and sends nothing; granted it, the
    waiting purchase is delivered."""
    d = deployment
    d.create_topics()
    d.grant([acl for acl in service_acls(RUN) if acl != missing])
    d.produce_purchase("WAITING")

    refused = d.service("refused")
    status = exit_status(refused)
    error = stopped_on_error(refused)

    named, code = _refused(missing, d.names)
    assert (status, named in error, code in error) == (1, True, True), refused.log_tail()
    assert (d.committed(), d.sandbox.order("WAITING")) == (-1001, None)
    d.grant([missing])
    granted = d.service("granted")
    try:
        wait_until(lambda: d.committed() == 1, 60, message="the purchase was not committed")
        assert d.sandbox.order("WAITING") is not None
    finally:
        assert granted.terminate() == 0, granted.log_tail()


@pytest.mark.parametrize("missing", _ids(CREATE))
def test_run_without_a_create_acl_refuses_to_start_naming_it(deployment, missing):
    """With KAFKA_CREATE_TOPICS=true and a topic to create, each ``Create`` taken away:
    ``run`` exits 1 at start naming ``Create`` and the topic, and commits nothing."""
    d = deployment
    d.create_topics(service_topics=False)
    d.grant([acl for acl in service_acls(RUN, CREATE) if acl != missing])
    d.produce_purchase("WAITING")

    refused = d.service("refused", KAFKA_CREATE_TOPICS="true")
    status = exit_status(refused)
    error = stopped_on_error(refused)

    named, code = _refused(missing, d.names)
    assert (status, named in error, code in error) == (1, True, True), refused.log_tail()
    assert (d.committed(), d.sandbox.order("WAITING")) == (-1001, None)


@pytest.mark.parametrize("missing", _ids(RUN) + _ids(CREATE))
def test_check_fails_each_missing_acl_by_its_variable(deployment, missing):
    """``check`` fails a line for each ACL ``run`` needs and the principal lacks, naming the
    variable, the operation and Kafka's error code: ``run`` would refuse to start on it."""
    d = deployment
    creating = missing in service_acls(CREATE)
    d.create_topics(service_topics=not creating)
    d.grant([acl for acl in service_acls(RUN, CREATE) if acl != missing])

    check = d.command("check", KAFKA_CREATE_TOPICS="true" if creating else "false")

    variable = missing.name.strip("$")
    fails = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    wanted = f"{missing.operation} not allowed for this principal"
    assert check.returncode == 1, check.stdout + check.stderr
    assert [line for line in fails if f"{variable}:" in line and wanted in line], fails


@pytest.mark.parametrize("missing", _ids(REPLAY))
def test_replay_without_an_acl_fails_naming_it_and_replays_nothing(deployment, missing):
    """Each ACL of ``replay-dlq`` taken away: it exits 1 (within its bound) naming the
    operation, the topic or group and Kafka's error code, writes nothing to the input and
    commits nothing."""
    d = deployment
    d.create_topics()
    d.grant(service_acls(RUN))
    d.sandbox.set_faults(
        {"rules": [{"order_id": "REFUSED", "operation": "create", "fail_first": 1,
                    "action": "status", "status": 400}]}
    )  # fmt: skip
    d.produce_purchase("REFUSED")
    service = d.service("run")
    try:
        wait_until(lambda: d.committed() == 1, 60, message="run did not dead-letter the purchase")
    finally:
        assert service.terminate() == 0, service.log_tail()
    assert d.end(d.dlq) == 1
    d.grant([acl for acl in service_acls(REPLAY) if acl != missing])

    replay = d.command("replay-dlq", "--no-progress")

    output = replay.stdout + replay.stderr
    named, code = _refused(missing, d.names)
    assert (replay.returncode, named in output, code in output) == (1, True, True), output
    assert d.end(d.topic) == 1
    assert d.committed(d.names["$KAFKA_GROUP_ID-replay"], d.dlq) == -1001


def test_dlq_write_taken_away_while_running_stops_run_without_committing_past_the_letter(
    deployment,
):
    """``Write`` on the DLQ revoked while ``run`` runs: the next dead letter cannot be
    written, so ``run`` stops (exit 1) naming the DLQ and the refusal, with the group committed
    up to that record, not past it; granted again, the record is dead-lettered and committed."""
    d = deployment
    d.create_topics()
    acls = service_acls(RUN)
    d.grant(acls)
    d.produce_purchase("BEFORE")
    service = d.service("running")
    wait_until(lambda: d.committed() == 1, 60, message="run did not commit the first purchase")
    [dlq_write] = [a for a in acls if (a.name, a.operation) == ("$KAFKA_DLQ_TOPIC", "Write")]
    d.revoke([dlq_write])

    d.produce(b"user-undecodable", b"not avro")  # dead-lettered at once (it cannot decode)

    status = exit_status(service)
    error = stopped_on_error(service)
    assert (status, d.dlq in error, "Topic authorization failed" in error) == (1, True, True), (
        service.log_tail()
    )
    assert (d.committed(), d.end(d.dlq)) == (1, 0)
    d.grant([dlq_write])
    again = d.service("granted")
    try:
        wait_until(lambda: d.committed() == 2, 60, message="the dead letter was not committed")
        assert d.end(d.dlq) == 1
    finally:
        assert again.terminate() == 0, again.log_tail()


# --- ACLs granted otherwise than the README's literal ones, and credentials refused -----------


def _grant_bindings(d: Deployment, bindings: list[AclBinding]) -> None:
    for future in d.admin().create_acls(bindings, request_timeout=30).values():
        future.result(timeout=30)


@pytest.mark.parametrize("form", ["prefixed-all", "wildcard"])
def test_check_passes_a_principal_granted_by_prefixed_all_or_wildcard_acls(deployment, form):
    """KIP-430's authorized operations are the authorizer's own answer for each resource: a
    principal granted ``All`` on prefixed topics and groups, or the needed operations on
    every topic and group (``*``), lacks nothing, and ``check`` says so."""
    d = deployment
    d.create_topics()
    user = f"User:{d.principal}"
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    allow = AclPermissionType.ALLOW
    if form == "prefixed-all":
        prefix, pattern = d.topic, ResourcePatternType.PREFIXED
        grants = [(topic, prefix, AclOperation.ALL), (group, d.group[:10], AclOperation.ALL)]
    else:
        prefix, pattern = "*", ResourcePatternType.LITERAL
        grants = [
            (topic, prefix, AclOperation.READ),
            (topic, prefix, AclOperation.WRITE),
            (topic, prefix, AclOperation.DESCRIBE_CONFIGS),
            (group, prefix, AclOperation.READ),
        ]
    _grant_bindings(
        d, [AclBinding(rt, name, pattern, user, "*", op, allow) for rt, name, op in grants]
    )

    check = d.command("check")

    fails = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert (check.returncode, fails) == (0, []), check.stdout + check.stderr


@pytest.mark.xfail(
    strict=True,
    reason="run's start (prepare_topics' metadata wait) gives up after 30 s on credentials the "
    "brokers refuse, blaming KAFKA_BOOTSTRAP_SERVERS with 'Broker transport failure' and never "
    "naming the SASL authentication failure (check names it at once)",
)
def test_run_with_a_refused_password_names_the_authentication_failure(deployment):
    """The principal's password is wrong: ``run`` stops with the brokers' reason (SASL
    authentication failed), as ``check`` does, not with an unreachable address."""
    d = deployment
    d.create_topics()
    d.grant(service_acls(RUN))

    check = d.command("check", KAFKA_CONFIG_SASL_PASSWORD="not-the-password")
    service = d.service("run", KAFKA_CONFIG_SASL_PASSWORD="not-the-password")
    status = exit_status(service)
    error = stopped_on_error(service)

    assert "Authentication failed" in check.stdout, check.stdout + check.stderr
    assert status == 1, service.log_tail()
    assert "Authentication failed" in error, error
