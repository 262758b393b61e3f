"""A real single-node Apache Kafka broker (KRaft) for tests, the demo and CI, without Docker.

The broker comes from Maven Central: `infra/kafka/pom.xml` pins `kafka_2.13` and a logging
backend, Maven resolves the runtime classpath once (cached under `.cache/kafka/`, keyed by the
POM's hash; the jars stay in Maven's local repository), and each broker gets a freshly formatted
KRaft log directory in a temp dir and free ports on 127.0.0.1.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def _server_properties(data_dir: Path, broker_port: int, controller_port: int) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static one-voter quorum: the storage is formatted without --standalone.
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "kraft"),
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
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class LocalKafka(LocalJvmService):
    """One combined broker+controller on 127.0.0.1, in a fresh temp directory.

    Use as `with LocalKafka() as kafka: kafka.bootstrap_servers`. An owned broker (the default)
    is killed when its owner exits, is interrupted, or is SIGKILLed. A `detached` broker runs
    in its own session and outlives this process (the `up` command); stop it by pid.
    """

    NAME = "Kafka broker"
    LOG_NAME = "broker.log"

    def __init__(
        self,
        *,
        heap_mb: int = 512,
        jvm_options: Sequence[str] = (),
        start_timeout: float = 120.0,
        stop_timeout: float = 15.0,
        detached: bool = False,
    ) -> None:
        super().__init__(
            heap_mb=heap_mb,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            detached=detached,
        )
        self.jvm_options = tuple(jvm_options)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return self.bootstrap_servers

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
        `bootstrap_servers` and find their topics, records and committed offsets again. Returns
        once the broker answers a metadata request (within `start_timeout`). On failure the
        broker is stopped and its directory removed, as `start` does.
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

    def _launch(self, java: str, classpath: str) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix="localkafka-"))
        self._data_dir = data_dir
        self._port = free_port()
        controller_port = free_port()
        config = data_dir / "server.properties"
        config.write_text(_server_properties(data_dir, self._port, controller_port))
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
                _cluster_id(),
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
                "formatting KRaft storage failed:\n" + (formatted.stdout + formatted.stderr)
            )
        self._spawn(java, classpath)

    def _spawn(self, java: str, classpath: str) -> None:
        """Start the JVM on the formatted data directory and its `server.properties`."""
        data_dir = self.data_dir
        config = data_dir / "server.properties"
        command = [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
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
        self._proc = spawn(command, log_path=self.log_path, cwd=data_dir, detached=self.detached)

    def _wait_for_leaders(self, deadline: float) -> None:
        """After a restart: wait until every partition of every topic has a leader again.

        The broker answers metadata requests before it has loaded its logs; until then clients
        get NOT_LEADER_FOR_PARTITION. A restarted broker is ready when its old data is.
        """
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
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

        def exited() -> bool:
            return proc.poll() is not None

        wait_until(lambda: exited() or port_open(port), timeout=deadline - time.monotonic())
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        while not exited() and time.monotonic() < deadline:
            try:
                metadata = admin.list_topics(timeout=2.0)
            except KafkaException:
                continue
            if metadata.brokers:
                return
            time.sleep(0.1)
        log = tail(self.log_path)
        if exited():
            if _BIND_CLASH.search(log):
                raise _PortClashError
            raise ToolError(
                f"Kafka broker exited with code {proc.returncode} during start-up; "
                f"log tail ({self.log_path}):\n{log}"
            )
        raise ToolError(
            f"Kafka broker on {self.bootstrap_servers} did not answer a metadata request within "
            f"{self.start_timeout:.0f}s; log tail ({self.log_path}):\n{log}"
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
