"""The Grafana dashboard: generated as code, committed, and consistent with the metrics."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry

from consumer.adapters.metrics import Metrics
from consumer.devtools.dashboard import OUTPUT, PANELS, render


def exported_names() -> set[str]:
    names: set[str] = set()
    for metric in Metrics.create(CollectorRegistry()).registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(metric.name + suffix for suffix in suffixes.get(metric.type, ("",)))
    return names


def test_committed_dashboard_is_what_the_generator_writes() -> None:
    """Regenerating gives the committed JSON byte for byte (run the generator after a change)."""
    assert render() == OUTPUT.read_text(encoding="utf-8"), (
        "deploy/grafana/button-consumer.json is stale: python -m consumer.devtools.dashboard"
    )


def test_every_panel_query_uses_exported_metrics_and_the_pod_variables() -> None:
    """No query names a metric the service does not export; each filters namespace and pod."""
    exported = exported_names()
    for spec in PANELS:
        for query in spec.queries:
            used = set(re.findall(r"button_consumer_[a-z_]+", query.expr))
            assert used, query.expr
            assert used <= exported, (spec.title, used - exported)
            assert 'namespace=~"$namespace", pod=~"$pod"' in query.expr, query.expr


def test_dashboard_has_the_variables_and_runbook_links() -> None:
    """Data source, namespace and pod variables; every panel links to a runbook entry."""
    board = json.loads(render())

    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "namespace", "pod", "runbook_url"]
    assert all(p["links"][0]["url"].startswith("${runbook_url}#") for p in board["panels"])
    assert len(PANELS) == len(board["panels"])
