"""Logging: librdkafka's own lines come out through structlog, in the configured format."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
import structlog
from confluent_kafka import Producer

from consumer.adapters.logging import configure_logging, quiet_librdkafka
from consumer.ports import CURRENT_RECORD, RecordScope
from consumer.settings import KAFKA_LOGGER, Settings


def test_librdkafka_log_lines_become_structured_json_lines() -> None:
    """A producer that cannot connect logs FAIL through structlog, not raw ``%3|`` lines."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    # Port 1 on loopback refuses at once: librdkafka logs a FAIL line on its first poll.
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, require_api_key=False)
    producer = Producer(settings.kafka.producer_config())
    deadline = time.monotonic() + 20
    lines: list[dict[str, str]] = []
    try:
        while not lines:
            assert time.monotonic() < deadline, "librdkafka logged nothing within 20 s"
            producer.poll(0.2)
            lines = [json.loads(text) for text in out.getvalue().splitlines() if text]
    finally:
        structlog.reset_defaults()

    first = lines[0]
    assert (first["event"], first["facility"]) == ("librdkafka", "FAIL")
    assert first["client"].startswith("rdkafka#producer")
    assert "Connection refused" in first["message"]
    assert {"level", "timestamp"} <= set(first)


def test_console_format_renders_key_values_not_json() -> None:
    """The console renderer (a terminal) writes readable key=value lines."""
    out = io.StringIO()
    configure_logging("info", "console", stream=out)
    try:
        structlog.get_logger("t").info("record", outcome="delivered")
    finally:
        structlog.reset_defaults()

    text = out.getvalue()
    assert "record" in text
    assert "outcome" in text
    assert not text.lstrip().startswith("{")


def test_a_cached_logger_keeps_its_level_and_context() -> None:
    """With ``cache`` (the service), a logger bound once still filters by level and still adds
    the handled record's context to each line."""
    out = io.StringIO()
    configure_logging("info", "json", stream=out, cache=True)
    try:
        logger = structlog.get_logger("t-cached")
        scope = CURRENT_RECORD.set(RecordScope(2, 41, None))
        try:
            logger.debug("dropped")
            logger.info("first")
            logger.info("second", outcome="delivered")
        finally:
            CURRENT_RECORD.reset(scope)
        logger.info("after")
        assert structlog.get_config()["cache_logger_on_first_use"] is True
    finally:
        structlog.reset_defaults()

    lines = [json.loads(text) for text in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["first", "second", "after"]
    assert [(line.get("partition"), line.get("offset")) for line in lines] == [
        (2, 41),
        (2, 41),
        (None, None),
    ]
    assert lines[1]["outcome"] == "delivered"


@pytest.fixture
def kafka_logger() -> Iterator[logging.Logger]:
    """The librdkafka logger, put back as it was after the test."""
    kafka = logging.getLogger(KAFKA_LOGGER)
    handlers, level, propagate = list(kafka.handlers), kafka.level, kafka.propagate
    yield kafka
    kafka.handlers[:] = handlers
    kafka.setLevel(level)
    kafka.propagate = propagate


def test_an_operator_command_shows_each_librdkafka_complaint_once(
    kafka_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay-dlq`` against brokers that refuse connections got one raw line per attempt
    (over a thousand in 30 s). Through ``quiet_librdkafka`` each distinct complaint reaches
    stderr once (the same text with other numbers is the same complaint); debug lines none."""
    quiet_librdkafka()
    kafka = kafka_logger
    refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    for after in (0, 1, 0, 3):
        kafka.error("%s [%s] %s", "FAIL", "rdkafka#consumer-2", f"{refused} (after {after}ms)")
    kafka.warning("%s [%s] %s", "GETPID", "rdkafka#producer-1", "Coordinator load in progress")
    kafka.debug("%s [%s] %s", "BROKER", "rdkafka#consumer-2", "chatter")

    assert capsys.readouterr().err.splitlines() == [
        f"librdkafka: FAIL {refused} (after 0ms)",
        "librdkafka: GETPID Coordinator load in progress",
    ]
