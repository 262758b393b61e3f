"""A real three-broker Apache Kafka cluster (KRaft) for the broker-failure tests.

One controller JVM (the quorum's only voter, so that losing brokers never loses the metadata
quorum) and ``brokers`` broker JVMs, from the same Maven jars as `LocalKafka`
(`consumer.devtools.localkafka`), on 127.0.0.1 in a fresh temp directory. The cluster's defaults
are a production's: replication factor 3, ``min.insync.replicas=2``, the group offsets topic
replicated three times. Brokers are stopped and started one by one (`stop_broker` with SIGTERM,
a controlled shutdown, or SIGKILL; `start_broker` on the same port and data), and the admin API
answers the questions a rolling restart asks: each partition's leader and ISR, the group's
coordinator.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient

from consumer.devtools._proc import (
    ToolError,
    free_port,
    port_open,
    require_tool,
    spawn,
    stop_process,
    tail,
    wait_until,
)
from consumer.devtools.localkafka import _cluster_id, kafka_classpath

CONTROLLER_ID = 100
"""The controller's ``node.id``; brokers are 1..n."""

_SHARED = {
    "controller.listener.names": "CONTROLLER",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "num.partitions": "3",
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": "3",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "share.coordinator.state.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "2",
    "auto.leader.rebalance.enable": "false",
}
"""Every node's settings: a production cluster's replication, small thread pools. Automatic
preferred-leader rebalancing is off so that a test moves leaders itself, when it chooses."""


def _props(settings: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in settings.items())


class LocalCluster:
    """A KRaft controller and ``brokers`` brokers on 127.0.0.1 (a context manager).

    Every JVM dies with this process (the parent-death signal of `spawn`).
    """

    def __init__(self, brokers: int = 3, *, heap_mb: int = 320, start_timeout: float = 180.0):
        self.count = brokers
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self.data_dir = Path(tempfile.mkdtemp(prefix="localcluster-"))
        self.ports = {b: free_port() for b in range(1, brokers + 1)}
        self.controller_port = free_port()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._controller: subprocess.Popen[bytes] | None = None
        self._java = ""
        self._classpath = ""
        self._admin: AdminClient | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Format every node, start the controller and the brokers; return once all are up."""
        atexit.register(self.stop)
        self._java = require_tool("java")
        self._classpath = kafka_classpath()
        cluster_id = _cluster_id()
        quorum = f"{CONTROLLER_ID}@127.0.0.1:{self.controller_port}"
        configs = {
            "controller": {
                "process.roles": "controller",
                "node.id": str(CONTROLLER_ID),
                "controller.quorum.voters": quorum,
                "listeners": f"CONTROLLER://127.0.0.1:{self.controller_port}",
                "log.dirs": str(self.data_dir / "controller"),
                **_SHARED,
            }
        }
        for broker, port in self.ports.items():
            configs[f"broker{broker}"] = {
                "process.roles": "broker",
                "node.id": str(broker),
                "controller.quorum.voters": quorum,
                "listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "log.dirs": str(self.data_dir / f"broker{broker}"),
                **_SHARED,
            }
        for name, settings in configs.items():
            path = self.data_dir / f"{name}.properties"
            path.write_text(_props(settings))
            self._format(cluster_id, path)
        self._controller = self._spawn("controller", 256)
        for broker in self.ports:
            self._procs[broker] = self._spawn(f"broker{broker}", self.heap_mb)
        deadline = time.monotonic() + self.start_timeout
        wait_until(lambda: len(self.live_brokers()) == self.count, timeout=self.start_timeout)
        if len(self.live_brokers()) != self.count or time.monotonic() > deadline:
            raise ToolError(f"cluster did not come up: {self.tails()}")
        return self

    def stop(self) -> None:
        for broker in list(self._procs):
            stop_process(self._procs.pop(broker), grace=30.0)
        if self._controller is not None:
            stop_process(self._controller, grace=15.0)
            self._controller = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop_broker(self, broker: int, *, kill: bool = False, grace: float = 60.0) -> float:
        """Stop one broker: SIGTERM (a controlled shutdown, SIGKILL after ``grace`` s) or, with
        ``kill``, SIGKILL. Returns the seconds it took to exit."""
        proc = self._procs.pop(broker)
        started = time.monotonic()
        if kill:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        else:
            stop_process(proc, grace=grace)
        return time.monotonic() - started

    def start_broker(self, broker: int) -> None:
        """Start a stopped broker again on its port and data; return once its port answers."""
        if broker in self._procs:
            raise RuntimeError(f"broker {broker} is running")
        proc = self._procs[broker] = self._spawn(f"broker{broker}", self.heap_mb)
        port = self.ports[broker]
        if not wait_until(
            lambda: proc.poll() is not None or port_open(port), timeout=self.start_timeout
        ):
            raise ToolError(f"broker {broker} did not open its port: {self.tails()}")
        if proc.poll() is not None:
            raise ToolError(f"broker {broker} exited: {self.tails()}")

    def running(self) -> list[int]:
        return sorted(b for b, p in self._procs.items() if p.poll() is None)

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def tails(self) -> str:
        return "\n".join(f"--- {n}\n{tail(self.log_path(n), 15)}" for n in self._names())

    def _names(self) -> list[str]:
        return ["controller", *(f"broker{b}" for b in self.ports)]

    def _format(self, cluster_id: str, config: Path) -> None:
        done = subprocess.run(
            [
                *(self._java, "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"),
                *("-cp", self._classpath, "kafka.tools.StorageTool", "format"),
                *("-t", cluster_id, "-c", str(config)),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise ToolError(f"format {config.name}: {done.stdout}{done.stderr}")

    def _spawn(self, name: str, heap_mb: int) -> subprocess.Popen[bytes]:
        command = [
            self._java,
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 128)}m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir / name}-logs",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
            "-cp",
            self._classpath,
            "kafka.Kafka",
            str(self.data_dir / f"{name}.properties"),
        ]
        return spawn(command, log_path=self.log_path(name), cwd=self.data_dir, detached=False)

    # --- what the admin API says ----------------------------------------------------------------

    def admin(self) -> AdminClient:
        """One admin client for the cluster's life (a client per question piles up threads and
        connections until questions time out)."""
        if self._admin is None:
            self._admin = self._new_admin()
        return self._admin

    def _new_admin(self) -> AdminClient:
        # Quiet (errors only, not every refused connection to a stopped broker): the
        # service's own librdkafka log is the one under observation.
        return AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 2})

    def live_brokers(self) -> list[int]:
        """The brokers the cluster's metadata lists (registered and unfenced)."""
        try:
            metadata = self.admin().list_topics(timeout=5)
        except KafkaException:
            return []
        return sorted(metadata.brokers)

    def partitions(self, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
        """``{partition: (leader, replicas, isr)}`` of ``topic`` ({} when unreadable)."""
        try:
            metadata = self.admin().list_topics(topic=topic, timeout=5).topics[topic]
        except (KafkaException, KeyError):
            return {}
        if metadata.error is not None:
            return {}
        return {
            p: (m.leader, list(m.replicas), list(m.isrs)) for p, m in metadata.partitions.items()
        }

    def fully_replicated(self, topics: list[str]) -> bool:
        """Every partition of every topic has a leader and all its replicas in the ISR."""
        for topic in topics:
            parts = self.partitions(topic)
            if not parts:
                return False
            for leader, replicas, isr in parts.values():
                if leader < 0 or sorted(isr) != sorted(replicas):
                    return False
        return True

    def coordinator(self, group: str) -> int:
        """The node id of ``group``'s coordinator: the leader of its ``__consumer_offsets``
        partition (Java's ``abs(group.hashCode()) % partitions``); -1 when unknown."""
        code = 0
        for char in group.encode("utf-16-be").decode("utf-16-be"):
            code = (31 * code + ord(char)) & 0xFFFFFFFF
        if code >= 2**31:
            code -= 2**32
        parts = self.partitions("__consumer_offsets")
        if not parts:
            return -1
        # Kafka's Utils.abs: Integer.MIN_VALUE maps to 0.
        index = 0 if code == -(2**31) else abs(code) % len(parts)
        return parts[index][0]

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in range(partitions)]
        )
        futures = self.admin().list_consumer_group_offsets([request], request_timeout=10)
        result = futures[group].result(timeout=15)
        return {tp.partition: tp.offset for tp in result.topic_partitions}
