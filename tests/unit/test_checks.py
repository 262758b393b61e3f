"""``check``'s wording of what it found (the checks themselves run against the real broker in
``tests/integration/test_check.py``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.checks import (
    Finding,
    _check_registry_with,
    _check_topic,
    _group_finding,
    retention_text,
)
from consumer.settings import KafkaSettings


@pytest.mark.parametrize(
    ("state", "members", "message"),
    [
        # Kafka describes a group it does not know (or has forgotten) as dead, with no members.
        ("dead", 0, "group shop-button: new (starts at earliest)"),
        ("empty", 0, "group shop-button: empty, 0 members"),
        ("stable", 3, "group shop-button: stable, 3 members"),
        ("stable", 1, "group shop-button: stable, 1 member"),
    ],
)
def test_a_group_kafka_describes_as_dead_is_new(state: str, members: int, message: str) -> None:
    kafka = KafkaSettings.model_validate({"bootstrap_servers": "k:9092", "group_id": "shop-button"})

    assert _group_finding(kafka, state, members) == Finding("ok", "KAFKA_GROUP_ID", message)


@pytest.mark.parametrize(("partitions", "says"), [(1, "1 partition"), (3, "3 partitions")])
def test_a_topics_partitions_are_counted_in_words(partitions: int, says: str) -> None:
    """``check``'s line for a topic that exists: its partition count, singular for one."""
    kafka = KafkaSettings.model_validate({"bootstrap_servers": "k:9092", "topic": "events"})
    topic = SimpleNamespace(error=None, partitions=dict.fromkeys(range(partitions)))
    metadata = SimpleNamespace(topics={"events": topic})

    lines = _check_topic(None, kafka, metadata, "events", "KAFKA_TOPIC", None, 1.0)  # type: ignore[arg-type]

    assert lines == [Finding("ok", "KAFKA_TOPIC", f"topic events: {says}")]


class _Registry:
    """A schema registry client that lists ``subjects``."""

    def __init__(self, subjects: list[str]) -> None:
        self.subjects = subjects

    def get_subjects(self) -> list[str]:
        return self.subjects


@pytest.mark.parametrize(("subjects", "says"), [(["a"], "1 subject"), (["a", "b"], "2 subjects")])
def test_the_registrys_subjects_are_counted_in_words(subjects: list[str], says: str) -> None:
    """``check``'s line for a reachable registry: its subject count, singular for one."""
    client: Any = _Registry(subjects)

    lines = _check_registry_with(client, "http://r", "events", Path("schemas"))

    assert lines[0] == Finding("ok", "SCHEMA_REGISTRY_URL", f"registry http://r reachable ({says})")


@pytest.mark.parametrize(
    ("policy", "retention_ms", "says"),
    [
        ("compact", 604_800_000, "cleanup.policy=compact, no retention by time"),
        ("compact", -1, "cleanup.policy=compact, no retention by time"),
        ("delete", 1_209_600_000, "cleanup.policy=delete, retention 14 days"),
        ("delete", -1, "cleanup.policy=delete, retention forever"),
        ("compact,delete", 259_200_000, "cleanup.policy=compact,delete, retention 3 days"),
        ("delete, compact", 43_200_000, "cleanup.policy=delete, compact, retention 0.5 days"),
    ],
)
def test_a_topics_retention_is_given_only_where_delete_applies(
    policy: str, retention_ms: int, says: str
) -> None:
    """On a compacted-only topic retention.ms deletes nothing: no retention is given (observed:
    the changelog's line said `retention 7 days`); where delete applies, its retention."""
    assert retention_text(policy, retention_ms).startswith(says)
