"""``produce-sample`` against a real broker: pacing, duration, invalid records, progress."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumer import commands
from consumer.adapters.avro_codec import build_decoder
from consumer.errors import ConfigError, DecodeError

pytestmark = pytest.mark.broker
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _read_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "read", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(values) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=1.0):
                value = message.value()
                if message.error() is None and value is not None:
                    values.append(value)
    finally:
        consumer.close()
    return values


def test_paced_run_with_invalid_records(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At 200/s for 1 s: at most 200 events, and exactly the reported invalid ones undecodable."""
    topic = make_topic(partitions=2)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    monkeypatch.setenv("SCHEMA_DIR", str(SCHEMAS))
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)

    assert commands.produce_sample(5, 11, 2, rate=200, duration=1.0, invalid_ratio=0.25) == 0

    summary = re.search(r"produced (\d+) events \((\d+) invalid\)", capsys.readouterr().out)
    assert summary is not None
    sent, invalid = int(summary.group(1)), int(summary.group(2))
    assert 0 < sent <= 200  # record n leaves no earlier than n / rate seconds
    assert 0 < invalid < sent
    decoder = build_decoder(SCHEMAS)
    undecodable = 0
    for value in _read_all(kafka_bootstrap, topic, 2, sent):
        try:
            decoder.decode(value)
        except DecodeError:
            undecodable += 1
    assert undecodable == invalid


def test_progress_line_names_count_speed_target_and_time() -> None:
    """The progress line a terminal or a log shows."""
    progress = commands.Progress(io.StringIO(), rate=200, duration=3600)
    assert progress.line(12_000, 600, 60.0) == (
        "12,000 events (600 invalid) in 60.0 s, 200/s, target 200/s, 60 s of 3600 s"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "--rate"),
        ({"duration": -1}, "--duration"),
        ({"invalid_ratio": 2}, "--invalid"),
    ],
)
def test_bad_arguments_are_refused_before_connecting(kwargs: dict[str, Any], message: str) -> None:
    """A zero rate, a negative duration or a ratio above 1 is a configuration error."""
    with pytest.raises(ConfigError, match=message):
        commands.produce_sample(1, 1, 1, **kwargs)


def test_progress_line_counts_one_event_in_the_singular() -> None:
    """One event: "1 event", not "1 events"."""
    progress = commands.Progress(io.StringIO(), rate=None, duration=None)
    assert progress.line(1, 0, 1.0) == "1 event (0 invalid) in 1.0 s, 1/s"


@pytest.mark.parametrize(("asked", "warned"), [(3, True), (1, False), (None, False)])
def test_partitions_of_a_topic_that_exists_already_are_its_own_said_on_stderr(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    asked: int | None,
    warned: bool,
) -> None:
    """``--partitions 3`` against a topic that exists with 1 partition: the events are
    produced to the topic as it is (it keeps its 1 partition), and stderr says the option was
    not applied and the topic's own count. The same count, or no ``--partitions``, says
    nothing."""
    topic = make_topic(partitions=1)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    monkeypatch.setenv("SCHEMA_DIR", str(SCHEMAS))
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)

    assert commands.produce_sample(1, 11, asked) == 0

    warning = (
        f"button-consumer: warning: --partitions {asked} not applied: topic {topic} exists "
        "already, with 1 partition (produce-sample creates a topic, never changes one)"
    )
    assert (warning in capsys.readouterr().err) is warned
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(topic, timeout=30)
    assert len(metadata.topics[topic].partitions) == 1
