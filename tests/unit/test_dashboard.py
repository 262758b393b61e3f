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


def test_time_since_button_answered_shows_never_while_the_gauge_is_zero() -> None:
    """Before the first success and in a dry run the last-success gauge is 0: the panel must not
    show time() - 0 (about 56 years). Its query drops a 0 gauge (no series), and the panel reads
    "never" when there is no value. tests/integration/test_alert_rules.py evaluates the query."""
    board = json.loads(render())
    (panel,) = [p for p in board["panels"] if p["title"] == "Time since Button last answered"]
    (target,) = panel["targets"]

    assert "button_consumer_button_last_success_timestamp_seconds" in target["expr"]
    assert re.search(
        r"max\(button_consumer_button_last_success_timestamp_seconds\{.*\} > 0\)", target["expr"]
    ), target["expr"]
    assert panel["fieldConfig"]["defaults"]["noValue"] == "never"
