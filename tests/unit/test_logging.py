"""Logging: librdkafka's own lines come out through structlog, in the configured format."""

from __future__ import annotations

import io
import json
import time

import structlog
from confluent_kafka import Producer

from consumer.adapters.logging import configure_logging
from consumer.ports import CURRENT_RECORD, RecordScope
from consumer.settings import Settings


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
