"""A real single-node Apache Kafka broker (KRaft) for tests, the demo and CI, without Docker.

The broker comes from Maven Central: `infra/kafka/pom.xml` pins `kafka_2.13` and a logging
backend, Maven resolves the runtime classpath once (cached under `.cache/kafka/`, keyed by the
POM's hash; the jars stay in Maven's local repository), and each broker gets a freshly formatted
KRaft log directory in a temp dir and free ports on 127.0.0.1.

By default one JVM is both broker and controller (KRaft combined mode). In isolated mode
(`LocalKafka(kraft_mode="isolated")`) the controller runs in a JVM of its own, the quorum's only
voter, and the broker in another: a test can stop the broker (SIGSTOP) while the controller
keeps running, so the controller fences it once its session (`broker.session.timeout.ms`)
expires. `LocalKafka.fencing_changes` reads the controller's fencing decisions from its
metadata log (`consumer.devtools.kraftlog`), in either mode.

A secured broker (`LocalKafka(security=SaslSecurity(...))`, combined mode) listens on
SASL_PLAINTEXT (or, given `BrokerTls`, SASL_SSL: SASL/PLAIN over TLS) with SASL/PLAIN users of
its own and enforces ACLs with KRaft's `StandardAuthorizer`
(`allow.everyone.if.no.acl.found=false`): one super user, which is also the broker's own
principal, and every other user allowed nothing until granted. `client_config()` gives a
client's properties for any of its users.

Python API: `LocalKafka` (a context manager). A broker it starts dies with its owner, even when
the owner is SIGKILLed. CLI (`python -m consumer.devtools.localkafka`):

    up       start a detached broker (state in .run/kafka/); last line KAFKA_BOOTSTRAP_SERVERS=...
    down     stop it and remove its data
    status   show it; exit 1 when none is running
    run      a broker in the foreground until Ctrl-C or SIGTERM
    fetch    resolve the classpath only (warms the cache)
"""

from __future__ import annotations

import atexit
import base64
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from consumer.devtools._proc import (
    LocalJvmService,
    ToolError,
    cache_dir,
    file_lock,
    free_port,
    port_open,
    repo_root,
    require_tool,
    run_maven,
    serve_foreground,
    service_cli,
    sha256_of,
    spawn,
    stop_process,
    tail,
    wait_until,
)
from consumer.devtools.kraftlog import METADATA_PARTITION, FencingChange, fencing_changes

KAFKA_POM = repo_root() / "infra" / "kafka" / "pom.xml"
DEFAULT_STATE_DIR = repo_root() / ".run" / "kafka"
ENV_VAR = "KAFKA_BOOTSTRAP_SERVERS"
_LABEL = "local Kafka"
_BIND_CLASH = re.compile(r"BindException|Address already in use")
_START_ATTEMPTS = 3


def kafka_classpath(pom: Path = KAFKA_POM) -> str:
    """The broker's runtime classpath, resolved by Maven on first use and cached by POM hash."""
    cache = cache_dir("kafka")
    cached = cache / f"classpath-{sha256_of(pom)[:16]}.txt"
    with file_lock(cache / ".lock"):
        classpath = _read_classpath(cached)
        if classpath is None:
            partial = cached.with_suffix(f".{os.getpid()}.partial")
            run_maven(
                [
                    "dependency:build-classpath",
                    "-DincludeScope=runtime",
                    f"-Dmdep.outputFile={partial}",
                ],
                pom=pom,
            )
            partial.replace(cached)
            classpath = _read_classpath(cached)
        if classpath is None:
            raise ToolError(f"Maven produced an unusable classpath in {cached}")
        return classpath


def _read_classpath(path: Path) -> str | None:
    """The cached classpath, or None when absent or when a jar has left the Maven repository."""
    try:
        classpath = path.read_text().strip()
    except OSError:
        return None
    jars = classpath.split(os.pathsep)
    if not classpath or not all(Path(jar).is_file() for jar in jars):
        return None
    return classpath


def _cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A KRaft cluster id: a base64url UUID without padding, as `StorageTool random-uuid` gives.

    Like Kafka's own ``Uuid.randomUuid``, an id starting with ``-`` is drawn again: the storage
    tool's command line would read it as an option (one id in 64 did, failing the format).
    """
    while True:
        text = base64.urlsafe_b64encode(random_uuid().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


KraftMode = Literal["combined", "isolated"]
"""``combined``: one JVM is broker and controller. ``isolated``: a controller JVM and a broker
JVM (Kafka's names for the two KRaft deployments)."""

CONTROLLER_ID = 1
"""The controller's ``node.id`` (in combined mode, the one node's)."""
BROKER_ID = 2
"""The broker's ``node.id`` in isolated mode (a node id is unique across roles)."""
_CONTROLLER_LOG = "controller.log"

_CLUSTER_SETTINGS = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "4",
}
"""What every node of a one-broker cluster shares: replication factors of one, small defaults."""


def _properties(settings: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


@dataclass(frozen=True)
class BrokerTls:
    """TLS on a secured node's client listener (SASL_SSL): the node's PKCS12 keystore
    (``keystore_path``, ``keystore_password``: its certificate for 127.0.0.1 and key) and the
    CA that signed it (``ca_path``, PEM), which the node trusts for its own inter-broker
    connections and clients are told to trust (``ssl.ca.location``). See
    ``consumer.devtools.testpki``."""

    keystore_path: Path
    keystore_password: str
    ca_path: Path


@dataclass(frozen=True)
class SaslSecurity:
    """A secured combined node: SASL/PLAIN on every listener, and ACLs enforced.

    ``users`` maps each SASL/PLAIN user name to its password (letters, digits, ``-`` and ``_``
    only: they are written into a JAAS line). ``super_user`` is one of them: Kafka's
    ``super.users``, allowed everything; the broker authenticates as it to its own controller
    and listener. Every other user is allowed nothing until an ACL grants it
    (``allow.everyone.if.no.acl.found=false``). With ``tls`` the client listener (also the
    inter-broker one) is SASL_SSL, SASL/PLAIN over TLS with the node's certificate; the
    controller's listener stays SASL_PLAINTEXT.
    """

    users: Mapping[str, str]
    super_user: str
    tls: BrokerTls | None = None

    @property
    def protocol(self) -> str:
        """The client listener's security protocol: ``SASL_SSL`` with ``tls``, else
        ``SASL_PLAINTEXT``."""
        return "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"

    def __post_init__(self) -> None:
        if self.super_user not in self.users:
            raise ValueError(f"the super user {self.super_user!r} is not one of the users")
        for name, password in self.users.items():
            if not _JAAS_SAFE.fullmatch(name) or not _JAAS_SAFE.fullmatch(password):
                raise ValueError(f"user {name!r}: names and passwords must match {_JAAS_SAFE}")

    def jaas(self) -> str:
        """The listeners' ``PlainLoginModule`` line: the broker's own login (the super user)
        and every user's password (``user_<name>``)."""
        own = self.users[self.super_user]
        accounts = " ".join(f'user_{name}="{pw}"' for name, pw in self.users.items())
        return (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{self.super_user}" password="{own}" {accounts};'
        )

    def server_settings(self) -> dict[str, str]:
        """The node's SASL and authorizer properties (its listeners are the caller's)."""
        jaas = self.jaas()
        settings = {
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "sasl.mechanism.controller.protocol": "PLAIN",
            f"listener.name.{self.protocol.lower()}.plain.sasl.jaas.config": jaas,
            "listener.name.controller.plain.sasl.jaas.config": jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{self.super_user}",
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.tls is not None:
            settings |= {
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(self.tls.keystore_path),
                "ssl.keystore.password": self.tls.keystore_password,
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(self.tls.ca_path),
                "ssl.client.auth": "none",
            }
        return settings

    def client_config(self, user: str) -> dict[str, str]:
        """librdkafka's security properties to authenticate as ``user``."""
        config = {
            "security.protocol": self.protocol,
            "sasl.mechanism": "PLAIN",
            "sasl.username": user,
            "sasl.password": self.users[user],
        }
        if self.tls is not None:
            config["ssl.ca.location"] = str(self.tls.ca_path)
        return config


_JAAS_SAFE = re.compile(r"[A-Za-z0-9_-]+")

ClientConfig = dict[str, str | int | float | bool]
"""librdkafka properties, as confluent-kafka's clients take them."""


def _server_properties(
    data_dir: Path,
    broker_port: int,
    controller_port: int,
    security: SaslSecurity | None = None,
) -> str:
    """`server.properties` of the combined node: broker and controller in one process; with
    ``security``, its listeners are SASL_PLAINTEXT (the client one SASL_SSL with TLS) and an
    authorizer enforces ACLs."""
    if security is not None:
        listener = security.protocol
        return _properties(
            {
                "process.roles": "broker,controller",
                "node.id": str(CONTROLLER_ID),
                "controller.quorum.voters": f"{CONTROLLER_ID}@127.0.0.1:{controller_port}",
                "listeners": (
                    f"{listener}://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
                ),
                "advertised.listeners": f"{listener}://127.0.0.1:{broker_port}",
                "controller.listener.names": "CONTROLLER",
                "inter.broker.listener.name": listener,
                "listener.security.protocol.map": (
                    f"CONTROLLER:SASL_PLAINTEXT,{listener}:{listener}"
                ),
                **security.server_settings(),
                "log.dirs": str(data_dir / "kraft"),
                **_CLUSTER_SETTINGS,
            }
        )
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(CONTROLLER_ID),
        # A static one-voter quorum: the storage is formatted without --standalone.
        "controller.quorum.voters": f"{CONTROLLER_ID}@127.0.0.1:{controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "kraft"),
        **_CLUSTER_SETTINGS,
    }
    return _properties(settings)


def _isolated_properties(data_dir: Path, broker_port: int, controller_port: int) -> tuple[str, str]:
    """`(controller.properties, broker.properties)` of isolated mode: two nodes, two processes.

    The controller is the quorum's only voter (static: formatted without --standalone); the
    broker knows it only through ``controller.quorum.voters`` and listens on PLAINTEXT alone.
    """
    quorum = {
        "controller.quorum.voters": f"{CONTROLLER_ID}@127.0.0.1:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    }
    controller = {
        "process.roles": "controller",
        "node.id": str(CONTROLLER_ID),
        **quorum,
        "listeners": f"CONTROLLER://127.0.0.1:{controller_port}",
        "log.dirs": str(data_dir / "controller"),
        **_CLUSTER_SETTINGS,
    }
    broker = {
        "process.roles": "broker",
        "node.id": str(BROKER_ID),
        **quorum,
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "broker"),
        **_CLUSTER_SETTINGS,
    }
    return _properties(controller), _properties(broker)


class LocalKafka(LocalJvmService):
    """One Kafka broker and its KRaft controller on 127.0.0.1, in a fresh temp directory.

    Use as `with LocalKafka() as kafka: kafka.bootstrap_servers`. In the default combined mode
    one JVM is broker and controller. With ``kraft_mode="isolated"`` the controller runs in a
    JVM of its own (`controller_pid`; `pid` is the broker's), so that stopping the broker
    leaves the controller running. An owned broker (the default) is killed, with its controller,
    when its owner exits, is interrupted, or is SIGKILLed. A `detached` broker (combined mode
    only) runs in its own session and outlives this process (the `up` command); stop it by pid.
    """

    NAME = "Kafka broker"
    LOG_NAME = "broker.log"
    CONTROLLER_HEAP_MB = 256
    """The isolated controller's heap: it keeps only the cluster's metadata."""

    def __init__(
        self,
        *,
        heap_mb: int = 512,
        jvm_options: Sequence[str] = (),
        start_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        detached: bool = False,
        kraft_mode: KraftMode = "combined",
        security: SaslSecurity | None = None,
    ) -> None:
        """Nothing starts here; `start` (or ``with``) does.

        Args:
            heap_mb: the broker JVM's maximum heap, in MiB.
            jvm_options: extra JVM options for the broker (and, in isolated mode, the controller).
            start_timeout: seconds `start` and `restart` wait for the broker to answer.
            stop_timeout: seconds each JVM gets after SIGTERM before SIGKILL.
            detached: run in a session of its own and outlive this process.
            kraft_mode: ``"combined"`` (one JVM) or ``"isolated"`` (a controller JVM and a
                broker JVM).
            security: SASL/PLAIN users and enforced ACLs (combined mode); None: PLAINTEXT,
                no authorizer.

        Raises:
            ValueError: a detached broker in isolated mode (`down` stops one recorded pid), or
                a secured one in isolated mode.
        """
        if detached and kraft_mode != "combined":
            raise ValueError("a detached local Kafka runs in combined mode only")
        if security is not None and kraft_mode != "combined":
            raise ValueError("a secured local Kafka runs in combined mode only")
        super().__init__(
            heap_mb=heap_mb,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            detached=detached,
        )
        self.jvm_options = tuple(jvm_options)
        self.kraft_mode: KraftMode = kraft_mode
        self.security = security
        self._controller: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_config(self, user: str | None = None) -> ClientConfig:
        """A librdkafka client's properties for this broker: ``bootstrap.servers`` and, on a
        secured broker, SASL as ``user`` (default: the super user).

        Raises:
            RuntimeError: not started.
            KeyError: ``user`` is not one of a secured broker's users.
            ValueError: ``user`` given for a broker without security.
        """
        config: ClientConfig = {"bootstrap.servers": self.bootstrap_servers}
        if self.security is None:
            if user is not None:
                raise ValueError("this broker has no users: it was started without security")
            return config
        config.update(self.security.client_config(user or self.security.super_user))
        return config

    @property
    def address(self) -> str:
        return self.bootstrap_servers

    @property
    def controller_pid(self) -> int:
        """The pid of the process that runs the controller: `pid` itself in combined mode."""
        if self._controller is not None:
            return self._controller.pid
        return self.pid

    @property
    def controller_log_path(self) -> Path:
        """The controller's log: the broker's own (`log_path`) in combined mode."""
        return self.data_dir / (_CONTROLLER_LOG if self.kraft_mode == "isolated" else self.LOG_NAME)

    @property
    def metadata_log_dir(self) -> Path:
        """The controller's metadata log, the ``__cluster_metadata-0`` partition directory."""
        node = "controller" if self.kraft_mode == "isolated" else "kraft"
        return self.data_dir / node / METADATA_PARTITION

    def fencing_changes(self) -> list[FencingChange]:
        """Every broker fencing and unfencing the controller has written so far, oldest first.

        Read from the controller's metadata log on disk, so it answers while the broker (and, in
        combined mode, the controller with it) is stopped. The list only grows: a change later
        in it was decided later. See `consumer.devtools.kraftlog.fencing_changes`.

        Raises:
            RuntimeError: not started.
            consumer.devtools.kraftlog.MetadataLogError: a record batch it cannot decode.
        """
        return fencing_changes(self.metadata_log_dir)

    def start(self) -> LocalKafka:
        """Resolve, format, start, and return once the broker answers a metadata request."""
        if self._proc is not None:
            return self
        java = require_tool("java")
        classpath = kafka_classpath()
        deadline = time.monotonic() + self.start_timeout
        if not self.detached:
            atexit.register(self.stop)
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._launch(java, classpath)
                self._wait_ready(deadline)
                return self
            except _PortClashError:
                self._discard()
                if attempt == _START_ATTEMPTS:
                    atexit.unregister(self.stop)
                    raise ToolError("Kafka broker: ports kept clashing") from None
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def restart(self) -> LocalKafka:
        """Stop the broker and start it again on the same ports with the same data.

        The JVM gets SIGTERM (a controlled shutdown), SIGKILL after `stop_timeout`; the log
        directory, the cluster id and both ports are kept, so clients reconnect to the same
        `bootstrap_servers` and find their topics, records and committed offsets again. In
        isolated mode only the broker restarts; the controller runs on. Returns once the broker
        answers a metadata request (within `start_timeout`). On failure the broker is stopped
        and its directory removed, as `start` does.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError("LocalKafka is not started")
        self._proc = None
        try:
            stop_process(proc, grace=self.stop_timeout)
            java = require_tool("java")
            classpath = kafka_classpath()
            deadline = time.monotonic() + self.start_timeout
            for attempt in range(1, _START_ATTEMPTS + 1):
                # The ports are fixed now: a clash (a socket still lingering) is waited out.
                try:
                    self._spawn(java, classpath)
                    self._wait_ready(deadline)
                    self._wait_for_leaders(deadline)
                    return self
                except _PortClashError:
                    self._proc = None
                    if attempt == _START_ATTEMPTS or time.monotonic() >= deadline:
                        raise ToolError(
                            f"Kafka broker: port {self.port} stayed busy after the restart"
                        ) from None
                    time.sleep(1.0)
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def _discard(self) -> None:
        # The broker first: its controlled shutdown asks the controller, which must still answer.
        broker, self._proc = self._proc, None
        if broker is not None:
            stop_process(broker, grace=self.stop_timeout)
        controller, self._controller = self._controller, None
        if controller is not None:
            stop_process(controller, grace=self.stop_timeout)
        super()._discard()

    @property
    def _broker_config(self) -> str:
        return "server.properties" if self.kraft_mode == "combined" else "broker.properties"

    def _launch(self, java: str, classpath: str) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="localkafka-"))
        self._data_dir = data_dir
        self._port = free_port()
        controller_port = free_port()
        if self.kraft_mode == "combined":
            configs = {
                "server.properties": _server_properties(
                    data_dir, self._port, controller_port, self.security
                )
            }
        else:
            controller, broker = _isolated_properties(data_dir, self._port, controller_port)
            configs = {"controller.properties": controller, "broker.properties": broker}
        cluster_id = _cluster_id()
        for name, text in configs.items():
            config = data_dir / name
            config.write_text(text)
            self._format(java, classpath, cluster_id, config)
        if self.kraft_mode == "isolated":
            self._controller = self._spawn_node(
                java,
                classpath,
                data_dir / "controller.properties",
                log_path=data_dir / _CONTROLLER_LOG,
                heap_mb=self.CONTROLLER_HEAP_MB,
            )
        self._spawn(java, classpath)

    def _format(self, java: str, classpath: str, cluster_id: str, config: Path) -> None:
        """Format the KRaft storage of the node ``config`` describes (`kafka-storage format`)."""
        formatted = subprocess.run(  # noqa: S603 - fixed executable, arguments built here
            [
                java,
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=max(30.0, self.start_timeout),
            check=False,
        )
        if formatted.returncode != 0:
            raise ToolError(
                f"formatting KRaft storage ({config.name}) failed:\n"
                + (formatted.stdout + formatted.stderr)
            )

    def _spawn(self, java: str, classpath: str) -> None:
        """Start the broker's JVM (the combined node's) on its formatted data directory."""
        self._proc = self._spawn_node(
            java,
            classpath,
            self.data_dir / self._broker_config,
            log_path=self.log_path,
            heap_mb=self.heap_mb,
        )

    def _spawn_node(
        self, java: str, classpath: str, config: Path, *, log_path: Path, heap_mb: int
    ) -> subprocess.Popen[bytes]:
        """Start one KRaft node (`kafka.Kafka <config>`), its output in ``log_path``."""
        data_dir = self.data_dir
        command = [
            java,
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 256)}m",
            # Tuned for start-up and a small footprint on shared CI machines, not throughput:
            # C1 only and the serial collector use about a third less CPU to become ready.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            *self.jvm_options,
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={data_dir}",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        return spawn(command, log_path=log_path, cwd=data_dir, detached=self.detached)

    def _wait_for_leaders(self, deadline: float) -> None:
        """After a restart: wait until every partition of every topic has a leader again.

        The broker answers metadata requests before it has loaded its logs; until then clients
        get NOT_LEADER_FOR_PARTITION. A restarted broker is ready when its old data is.
        """
        admin = AdminClient(self.client_config())
        missing: list[str] = []
        while time.monotonic() < deadline:
            try:
                missing = _leaderless(admin.list_topics(timeout=2.0))
            except KafkaException:
                continue
            if not missing:
                return
            time.sleep(0.1)
        raise ToolError(
            f"Kafka broker on {self.bootstrap_servers}: topics without a leader "
            f"{self.start_timeout:.0f}s after the restart: {sorted(missing)[:5]}"
        )

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        if proc is None:
            raise RuntimeError("_wait_ready before _launch")
        port = self.port
        # In isolated mode the controller's JVM counts too: the broker waits for it forever.
        nodes = {self.log_path: proc}
        if self._controller is not None:
            nodes[self.data_dir / _CONTROLLER_LOG] = self._controller

        def exited() -> list[Path]:
            return [log for log, node in nodes.items() if node.poll() is not None]

        wait_until(lambda: bool(exited()) or port_open(port), timeout=deadline - time.monotonic())
        admin = AdminClient(self.client_config())
        while not exited() and time.monotonic() < deadline:
            try:
                metadata = admin.list_topics(timeout=2.0)
            except KafkaException:
                continue
            if metadata.brokers:
                return
            time.sleep(0.1)
        logs = "\n".join(f"log tail ({log}):\n{tail(log)}" for log in nodes)
        dead = exited()
        if dead:
            if any(_BIND_CLASH.search(tail(log)) for log in dead):
                raise _PortClashError
            codes = ", ".join(f"{log.stem} {nodes[log].returncode}" for log in dead)
            raise ToolError(f"Kafka exited during start-up (exit codes: {codes}); {logs}")
        raise ToolError(
            f"Kafka broker on {self.bootstrap_servers} did not answer a metadata request within "
            f"{self.start_timeout:.0f}s; {logs}"
        )


def _leaderless(metadata: Any) -> list[str]:  # confluent_kafka ClusterMetadata
    """Topics (with a partition) that have no leader, or an error, in ``metadata``."""
    return [
        name
        for name, topic in metadata.topics.items()
        if topic.error is not None or any(p.leader < 0 for p in topic.partitions.values())
    ]


class _PortClashError(Exception):
    """Another process took one of our ports between choosing and binding it."""


# --- CLI -----------------------------------------------------------------------------------


def _run() -> int:
    with LocalKafka() as kafka:
        return serve_foreground("local Kafka", f"{ENV_VAR}={kafka.bootstrap_servers}")


def _fetch() -> int:
    started = time.monotonic()
    classpath = kafka_classpath()
    jars = len(classpath.split(os.pathsep))
    print(f"classpath ready: {jars} jars in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return service_cli(
        argv,
        prog="python -m consumer.devtools.localkafka",
        description="A local single-node Kafka broker from Maven Central jars.",
        label=_LABEL,
        env_var=ENV_VAR,
        default_state_dir=DEFAULT_STATE_DIR,
        detached=lambda: LocalKafka(detached=True),
        run=_run,
        fetch=_fetch,
    )


if __name__ == "__main__":
    sys.exit(main())
