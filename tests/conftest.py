"""Fixtures every test tier shares: a real Kafka broker, a schema registry, unique topics.

The broker is, in order: `KAFKA_BOOTSTRAP_SERVERS` when set; a testcontainers broker when a
Docker engine answers; else the project's local KRaft broker from Maven Central jars
(`consumer.devtools.localkafka`). When none can be had the test fails with the reasons: broker
tests never skip. Both services start lazily, once per session, only for tests that ask.
Fixtures for one tier belong in that tier's own conftest.py.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from hypothesis import HealthCheck, settings

# Property tests must not depend on the machine's speed: no per-example deadline and no "too
# slow" health check (a loaded CI machine trips both). Under CI the examples are derived from
# the test itself (derandomize), so a run is repeatable; locally they are random, to keep
# searching.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci",
    parent=settings.get_profile("default"),
    derandomize=True,
    database=None,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.9.0"


def _docker_answers() -> str | None:
    """None when a Docker engine answers a ping, else why not (cheap: a short timeout)."""
    # A refused probe can leave a socket for the garbage collector; keep that quiet here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # type: ignore[import-untyped]

            client = docker.from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:
            return f"no Docker engine ({type(exc).__name__}: {exc})"
        finally:
            gc.collect()
    return None


def _obtain_broker(stack: contextlib.ExitStack) -> str:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return configured
    reasons: list[str] = []
    no_docker = _docker_answers()
    if no_docker is None:
        try:
            from testcontainers.community.kafka import KafkaContainer

            container = stack.enter_context(KafkaContainer(_TESTCONTAINERS_IMAGE).with_kraft())
            return str(container.get_bootstrap_server())
        except Exception as exc:
            reasons.append(f"testcontainers: {type(exc).__name__}: {exc}")
    else:
        reasons.append(no_docker)
    try:
        from consumer.devtools.localkafka import LocalKafka

        return stack.enter_context(LocalKafka()).bootstrap_servers
    except Exception as exc:
        reasons.append(f"local Maven broker: {type(exc).__name__}: {exc}")
    pytest.fail("no Kafka broker for the tests:\n- " + "\n- ".join(reasons), pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """bootstrap.servers of a real broker, shared by the whole session."""
    with contextlib.ExitStack() as stack:
        yield _obtain_broker(stack)


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """A Confluent-compatible schema registry URL: `SCHEMA_REGISTRY_URL`, else a local one."""
    configured = os.environ.get("SCHEMA_REGISTRY_URL")
    if configured:
        yield configured
        return
    from consumer.devtools.registry import LocalRegistry

    try:
        registry = LocalRegistry().start()
    except Exception as exc:
        pytest.fail(f"no schema registry for the tests: {exc}", pytrace=False)
    with registry:
        yield registry.url


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """`unique_name("orders")` -> "orders-<12 hex>": names that never collide across runs."""

    def make(prefix: str = "test") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def make_topic(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """`make_topic(partitions=1, config=None) -> name`: a fresh topic, ready to use.

    Returns once every partition has a leader; the topics are deleted after the test.
    """
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(
        partitions: int = 1, config: dict[str, str] | None = None, *, prefix: str = "topic"
    ) -> str:
        name = unique_name(prefix)
        topic = NewTopic(
            name, num_partitions=partitions, replication_factor=-1, config=dict(config or {})
        )
        admin.create_topics([topic], operation_timeout=30)[name].result(timeout=60)
        created.append(name)
        _wait_for_leaders(admin, name, partitions, timeout=30.0)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


def _wait_for_leaders(admin: AdminClient, topic: str, partitions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic=topic, timeout=5).topics.get(topic)
        if (
            metadata is not None
            and metadata.error is None
            and len(metadata.partitions) == partitions
            and all(p.leader >= 0 for p in metadata.partitions.values())
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"topic {topic} has no leader for every partition after {timeout}s")
