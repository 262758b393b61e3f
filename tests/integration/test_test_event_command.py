"""``button-consumer test-event`` (without ``--admin``) against the real local broker."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from consumer.commands import run_test_event
from consumer.errors import TopicError
from tests.e2e.harness import read_all

pytestmark = pytest.mark.broker


def _args(order_id: str) -> argparse.Namespace:
    return argparse.Namespace(
        admin=None,
        order_id=order_id,
        total="12.34",
        currency="USD",
        user="test-user",
        btn_ref="",
        send=False,
    )


def _topics(bootstrap: str) -> set[str]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def test_a_test_event_to_a_topic_that_does_not_exist_is_refused_and_creates_nothing(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelt KAFKA_TOPIC is named, not created (by the command or by a broker that
    creates topics on first use), and nothing is reported as produced."""
    missing = unique_name("no-such-input")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", missing)

    with pytest.raises(TopicError, match=f"KAFKA_TOPIC: topic '{missing}' does not exist"):
        run_test_event(_args("ORD-TEST-MISSING"))

    assert missing not in _topics(kafka_bootstrap)


def test_a_test_event_is_produced_to_the_input_topic(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = make_topic(partitions=3, prefix="test-event")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", topic)

    assert run_test_event(_args("ORD-TEST-1")) == 0

    assert [m.key() for m in read_all(kafka_bootstrap, topic)] == [b"test-user"]
