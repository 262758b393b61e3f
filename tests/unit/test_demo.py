"""The demo's verdict: every sample purchase at the sandbox, every event read once."""

from __future__ import annotations

from consumer.devtools.demo import verdict
from consumer.engine.worker import RunStats


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
