"""One shutdown budget, split explicitly; the chart's grace period is checked against it in
``tests/deploy/test_chart.py``."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumer.bootstrap import build
from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "BUTTON_API_KEY": "sk-budget-test"}
CLOSE_MARGIN_S = 2.5
"""Beyond the split: the producer thread's join (2 s) and the process's own exit."""


def _number(pattern: str, text: str, default: float | None = None) -> float:
    match = re.search(pattern, text)
    if match is None:
        assert default is not None, f"{pattern} not found"
        return default
    return float(match.group(1))


def test_the_shutdown_budget_is_split_and_its_parts_sum_to_the_whole() -> None:
    """drain + commit + close + flush == DELIVERY_SHUTDOWN_TIMEOUT_SECONDS, each part > 0."""
    budget = Settings.from_env({**BASE, "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "24"}).delivery
    parts = budget.shutdown_budget()

    assert parts.total == 24.0
    assert min(parts.drain, parts.commit, parts.close, parts.flush) > 0


def test_the_service_uses_the_split_budget() -> None:
    """build() gives the worker the drain share and the consumer the commit and close shares,
    so the worst case is the budget, not drain 20 + commit 15 + close 30 + flush 20 seconds."""
    settings = Settings.from_env({**BASE, "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "20"})
    service = build(settings, CollectorRegistry())
    budget = settings.delivery.shutdown_budget()
    source = service.worker._source

    assert (service.worker._opt.shutdown_timeout, source.commit_timeout, source.close_timeout) == (  # type: ignore[attr-defined]
        budget.drain,
        budget.commit,
        budget.close,
    )
