"""The demo's verdict: every sample purchase at the sandbox, every event read once."""

from __future__ import annotations

import io
import json
import logging

import structlog

from consumer.devtools.demo import configure_demo_logging, verdict
from consumer.engine.worker import RunStats
from consumer.settings import KAFKA_LOGGER


def test_records_the_kafka_client_handed_out_again_are_not_read_twice() -> None:
    """librdkafka can rewind a fresh partition and hand its records out again; the worker drops
    them (``records_redelivered``). A run that read all 1,930 events, and 1,930 of them a second
    time, lost nothing and sent nothing twice: it passes."""
    stats = RunStats(received=3860, redelivered=1930)
    assert verdict(missing=set(), stats=stats, produced=1930) is None


def test_a_missing_purchase_or_an_unread_event_fails_the_demo() -> None:
    assert verdict(missing={"ORD-7"}, stats=RunStats(received=1930), produced=1930) == (
        "FAILED: 1 purchases missing, read 1930/1930"
    )
    assert verdict(missing=set(), stats=RunStats(received=1929), produced=1930) == (
        "FAILED: 0 purchases missing, read 1929/1930"
    )


def test_the_demo_shows_librdkafkas_errors_but_not_its_retried_warnings() -> None:
    """``make demo`` against a broker it has just started: librdkafka warns of what it retries
    (``GETPID ... Coordinator load in progress: retrying``), which came out as a JSON line in
    the middle of the demo's output. The demo's logging leaves librdkafka's warnings out and
    keeps its errors (a broker that refuses connections), each one line through structlog.
    The records are logged as confluent-kafka logs them: ``"%s [%s] %s"``, (facility, client,
    message)."""
    out = io.StringIO()
    configure_demo_logging(out)
    kafka = logging.getLogger(KAFKA_LOGGER)
    try:
        kafka.warning(
            "%s [%s] %s",
            "GETPID",
            "rdkafka#producer-3",
            "[thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:1/1: Broker: "
            "Coordinator load in progress: retrying",
        )
        kafka.error("%s [%s] %s", "FAIL", "rdkafka#producer-3", "Connection refused")
    finally:
        structlog.reset_defaults()

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["facility"], line["level"]) for line in lines] == [("FAIL", "error")]
