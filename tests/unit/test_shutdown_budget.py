"""One shutdown budget, split explicitly, shorter than the grace period the manifests give."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumer.bootstrap import build
from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "button-consumer.yaml"
HELM = ROOT / "deploy" / "helm"
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


def test_the_kubernetes_grace_period_outlasts_the_shutdown_budget() -> None:
    """The manifest's terminationGracePeriodSeconds exceeds its DELIVERY_SHUTDOWN_TIMEOUT_SECONDS
    (or the default) plus the margin, so a SIGTERM never ends in a SIGKILL mid-commit."""
    text = MANIFEST.read_text(encoding="utf-8")
    default = Settings.from_env(BASE).delivery.shutdown_timeout_seconds
    grace = _number(r"terminationGracePeriodSeconds:\s*(\d+)", text)
    budget = _number(r'DELIVERY_SHUTDOWN_TIMEOUT_SECONDS:\s*"?(\d+(?:\.\d+)?)', text, default)

    assert budget + CLOSE_MARGIN_S < grace, (budget, grace)
    assert default + CLOSE_MARGIN_S < grace, "the default budget must fit the manifest too"


def test_a_helm_chart_if_present_also_outlasts_the_budget() -> None:
    """Every terminationGracePeriodSeconds under deploy/helm (values or templates) exceeds the
    default budget plus the margin; without a chart there is nothing to check."""
    default = Settings.from_env(BASE).delivery.shutdown_timeout_seconds
    files = sorted(HELM.rglob("*.yaml")) if HELM.is_dir() else []
    pattern = r"terminationGracePeriodSeconds:\s*(\d+)"
    graces = [float(m) for path in files for m in re.findall(pattern, path.read_text("utf-8"))]

    assert all(default + CLOSE_MARGIN_S < grace for grace in graces), graces
