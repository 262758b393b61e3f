"""The alert rules read metrics the service exports, and the event alerts' counters exist at 0.

An event alert (``ButtonConsumerDeadLetters``, ``ButtonConsumerDeadLetterWriteFailing``,
``ButtonConsumerOffsetReset``) sees an event either as an increase between two scrapes, which
needs a series at 0 before the event, or as a counter above 0 of a process started within the
window, which needs ``process_start_time_seconds`` on the same target. The promtool tests
(``deploy/prometheus/tests/alerts-test.yaml``) check the expressions; this checks the service's
side of both.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from consumer.adapters.metrics import FINISHED_OUTCOMES, OFFSET_RESET_TARGETS, Metrics
from consumer.domain.events import KEY_PROBLEMS

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "button-consumer.rules.yaml"


def _exprs() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"]: r["expr"] for group in doc["groups"] for r in group["rules"]}


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    Metrics.create(registry)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
    }


def test_every_metric_an_alert_reads_is_exported() -> None:
    """No rule reads a metric the service does not export (``up`` comes from Prometheus); a
    labelled gauge has no sample before its first child, so names come from the families."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    registry = CollectorRegistry()
    Metrics.create(registry)
    exported = {
        metric.name + suffix
        for metric in registry.collect()
        for suffix in suffixes.get(metric.type, ("",))
    }
    for alert, expr in _exprs().items():
        used = set(re.findall(r"\b(?:button_consumer_[a-z_]+|process_[a-z_]+)\b", expr))
        assert used <= exported, (alert, used - exported)


def test_the_event_alerts_join_the_process_start_time() -> None:
    """Each event alert also fires for a counter above 0 of a process started within its
    window: the service exports that start time (prometheus_client's process collector)."""
    assert any(name == "process_start_time_seconds" for name, _ in _samples())
    for alert in (
        "ButtonConsumerDeadLetters",
        "ButtonConsumerDeadLetterWriteFailing",
        "ButtonConsumerOffsetReset",
    ):
        expr = _exprs()[alert]
        assert "increase(" in expr, alert
        assert "and on (job, instance) (time() - process_start_time_seconds <" in expr, alert


def test_the_event_alerts_counters_exist_at_zero_from_the_start() -> None:
    """A scrape before the first event sees 0, so increase() sees the event's step."""
    samples = _samples()
    for outcome in FINISHED_OUTCOMES:
        key = ("button_consumer_records_finished_total", (("outcome", outcome),))
        assert samples.get(key) == 0.0, key
    for target in OFFSET_RESET_TARGETS:
        key = ("button_consumer_offset_resets_total", (("reset_to", target),))
        assert samples.get(key) == 0.0, key
    assert samples.get(("button_consumer_dead_letter_write_failures_total", ())) == 0.0
    for problem in KEY_PROBLEMS:
        key = ("button_consumer_record_key_problems_total", (("problem", problem),))
        assert samples.get(key) == 0.0, key
