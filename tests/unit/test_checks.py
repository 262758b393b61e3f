"""``check``'s wording of what it found (the checks themselves run against the real broker in
``tests/integration/test_check.py``)."""

from __future__ import annotations

import pytest

from consumer.checks import Finding, _group_finding
from consumer.settings import KafkaSettings


@pytest.mark.parametrize(
    ("state", "members", "message"),
    [
        # Kafka describes a group it does not know (or has forgotten) as dead, with no members.
        ("dead", 0, "group shop-button: new (starts at earliest)"),
        ("empty", 0, "group shop-button: empty, 0 members"),
        ("stable", 3, "group shop-button: stable, 3 members"),
    ],
)
def test_a_group_kafka_describes_as_dead_is_new(state: str, members: int, message: str) -> None:
    kafka = KafkaSettings.model_validate({"bootstrap_servers": "k:9092", "group_id": "shop-button"})

    assert _group_finding(kafka, state, members) == Finding("ok", "KAFKA_GROUP_ID", message)
