"""The input topic given a partition while the service runs, its changelog not: the member
assigned the new partition stops at once, naming the mismatch as ``run`` and ``check`` do at
start, instead of restoring a changelog partition that does not exist for 120 s (while
``/readyz`` said ready and the partition's records waited in no lag gauge) and then crashing
with a Kafka error that blamed KAFKA_BOOTSTRAP_SERVERS.

Real broker, ``button-consumer run`` as a process. The group notices the new partition at its
next metadata refresh (every second here, ``KAFKA_CONFIG_TOPIC_METADATA_REFRESH_INTERVAL_MS``),
so the assignment follows the ``create_partitions`` by construction, not by a wait.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.sandbox.testing import SandboxHandle
from tests.e2e.harness import (
    ServiceProcess,
    committed_offsets,
    log_events,
    produce_raw,
    wait_until,
)
from tests.integration.test_partition_growth import add_partitions

pytestmark = pytest.mark.broker


def test_an_input_partition_the_changelog_lacks_stops_the_service_naming_the_mismatch(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    tmp_path: Path,
) -> None:
    topic = make_topic(partitions=2, prefix="growth")
    changelog = f"{topic}.profiles"
    group = unique_name("group")
    log = tmp_path / "service.log"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": changelog,
        "KAFKA_CREATE_TOPICS": "true",
        "KAFKA_CONFIG_TOPIC_METADATA_REFRESH_INTERVAL_MS": "1000",
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "10",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    service = ServiceProcess(env, log).start()
    try:
        wait_until(
            lambda: (
                sorted(p for e in log_events(log, "partitions_restored") for p in e["partitions"])
                == [0, 1]
                or not service.alive()
            ),
            120,
            message="the service did not restore partitions 0 and 1",
        )
        assert service.alive(), service.log_tail()

        add_partitions(kafka_bootstrap, topic, 3)
        produce_raw(kafka_bootstrap, topic, [(b"user-on-p2", b"not read", 2)])

        # Before: the restore of partition 2 waited 120 s for a changelog partition that did
        # not exist, then the process exited on "Local: Unknown partition".
        wait_until(lambda: not service.alive(), 90, message="the service kept running")
    finally:
        code = service.terminate()

    assert code == 1, service.log_tail()
    stopped = log_events(log, "stopped_on_error")
    assert len(stopped) == 1, service.log_tail()
    error = stopped[0]["error"]
    assert (
        f"{changelog} (KAFKA_PROFILE_TOPIC): has 2 partitions but {topic} has 3; the profile "
        f"changelog must be co-partitioned with the input: stop the service, give {changelog} "
        "3 partitions too, then start it"
    ) in error, error
    assert stopped[0]["exc_type"] == "TopicError"
    assert "KAFKA_BOOTSTRAP_SERVERS" not in log.read_text(encoding="utf-8")
    # Nothing of partition 2 was processed without its profiles.
    assert committed_offsets(kafka_bootstrap, group, topic, 3)[2] < 0
