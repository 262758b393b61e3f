"""The Grafana dashboard of button-consumer, as code (Grafana's grafana-foundation-sdk).

``python -m consumer.devtools.dashboard`` writes ``deploy/grafana/button-consumer.json``; the
JSON is committed, and ``tests/unit/test_dashboard.py`` checks that regenerating gives the same
bytes. ``PANELS`` is the one list of panels and queries: the live monitoring test
(``tests/e2e/test_monitoring.py``) evaluates every query against Prometheus and draws the
preview from it. Queries filter on the ``namespace`` and ``pod`` variables; panel links point to
the README's runbook (``$runbook_url``, a dashboard setting).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "button-consumer.json"
UID = "button-consumer"
SEL = 'namespace=~"$namespace", pod=~"$pod"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """One panel: title, kind (timeseries, stat, state), unit, queries, runbook anchor."""

    title: str
    kind: str
    unit: str
    queries: tuple[Query, ...]
    runbook: str = ""
    description: str = ""
    width: int = 8
    preview: bool = False
    """Drawn in the README's preview picture."""
    extra: dict[str, str] = field(default_factory=dict)
    no_value: str = ""
    """What a stat panel shows when its query returns no series (Grafana's "No data")."""


def _q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


PANELS: tuple[PanelSpec, ...] = (
    PanelSpec(
        "Records finished per second by outcome",
        "timeseries",
        "ops",
        (
            _q(
                f"sum by (outcome) (rate(button_consumer_records_finished_total{{{SEL}}}[{RATE}]))",
                "{{outcome}}",
            ),
        ),
        runbook="buttonconsumerdeadletters",
        description="Records finished per second, every record read, orders or not: delivered "
        "to Button, skipped on purpose (a view, a development event, an order already "
        "cancelled), dry run, dead-lettered, parked.",
        preview=True,
    ),
    PanelSpec(
        "Button requests by status class",
        "timeseries",
        "reqps",
        (
            _q(
                "sum by (status_class) (rate(button_consumer_button_requests_total"
                f"{{{SEL}}}[{RATE}]))",
                "{{status_class}}",
            ),
        ),
        runbook="buttonconsumerbuttonerrors",
        description="Attempts against Button per second; none = no answer (timeout, "
        "connection error).",
        preview=True,
    ),
    PanelSpec(
        "Button latency",
        "timeseries",
        "s",
        tuple(
            _q(
                f"histogram_quantile({q}, sum by (le) (rate("
                f"button_consumer_button_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ),
        runbook="buttonconsumerbuttonerrors",
        preview=True,
    ),
    PanelSpec(
        "Consumer lag per partition",
        "timeseries",
        "short",
        (
            _q(
                f"sum by (pod, partition) (button_consumer_consumer_lag_records{{{SEL}}})",
                "{{pod}} p{{partition}}",
            ),
            _q(f"sum(button_consumer_consumer_lag_sum_records{{{SEL}}})", "total"),
        ),
        runbook="buttonconsumerlaggrowing",
        preview=True,
    ),
    PanelSpec(
        "Records behind an open transaction",
        "timeseries",
        "short",
        (
            _q(
                "sum by (pod, partition) "
                f"(button_consumer_records_behind_open_transaction{{{SEL}}})",
                "{{pod}} p{{partition}}",
            ),
        ),
        runbook="buttonconsumerlaststableoffsetstuck",
        description="High watermark minus last stable offset: records written after another "
        "producer's open transaction, which the consumer (read_committed) cannot read until "
        "it ends. Not in the lag; above 0 for minutes while the lag is 0, the partition waits.",
    ),
    PanelSpec(
        "Freshness: event age at delivery",
        "timeseries",
        "s",
        tuple(
            _q(
                f"histogram_quantile({q}, sum by (le) (rate("
                f"button_consumer_event_age_seconds_bucket{{{SEL}}}[{RATE}])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95)
        ),
        runbook="buttonconsumerfreshnessovertarget",
        preview=True,
    ),
    PanelSpec(
        "Time since Button last answered",
        "stat",
        "s",
        (
            # The gauge is 0 before the first success and in a dry run: `> 0` drops it, so
            # the panel reads "never" instead of time() - 0 (about 56 years).
            _q(
                f"time() - max(button_consumer_button_last_success_timestamp_seconds{{{SEL}}} > 0)",
                "seconds",
            ),
        ),
        runbook="buttonconsumerbuttonerrors",
        description="Seconds since Button's last expected answer; never: no success yet (or a "
        "dry run, which sends nothing).",
        no_value="never",
    ),
    PanelSpec(
        "In flight and concurrency limit",
        "timeseries",
        "short",
        (
            _q(f"sum(button_consumer_in_flight_records{{{SEL}}})", "records in flight"),
            _q(f"sum(button_consumer_concurrency_limit{{{SEL}}})", "concurrency limit"),
        ),
        runbook="buttonconsumernoprogress",
    ),
    PanelSpec(
        "Dead letters by reason",
        "timeseries",
        "short",
        (
            _q(
                f"sum by (reason) (increase(button_consumer_dead_letters_total{{{SEL}}}[{RATE}]))",
                "{{reason}}",
            ),
            _q(
                f"sum(increase(button_consumer_dead_letter_write_failures_total{{{SEL}}}[{RATE}]))",
                "write failures",
            ),
            _q(
                f"sum(increase(button_consumer_orders_parked_total{{{SEL}}}[{RATE}]))",
                "orders parked",
            ),
            _q(
                f"sum(increase(button_consumer_held_refunds_discarded_total{{{SEL}}}[{RATE}]))",
                "held refunds discarded",
            ),
        ),
        runbook="buttonconsumerdeadletters",
        preview=True,
    ),
    PanelSpec(
        "Outcomes by event type and reason",
        "timeseries",
        "ops",
        (
            _q(
                "sum by (event_type, outcome, reason) (rate(button_consumer_outcomes_total"
                f"{{{SEL}}}[{RATE}]))",
                "{{event_type}} {{outcome}} {{reason}}",
            ),
        ),
        runbook="buttonconsumerdeadletters",
    ),
    PanelSpec(
        "Attribution tokens dropped",
        "timeseries",
        "ops",
        (
            _q(
                "sum by (source, problem) (rate(button_consumer_btn_ref_dropped_total"
                f"{{{SEL}}}[{RATE}]))",
                "{{source}} {{problem}}",
            ),
        ),
        runbook="from-events-to-button-requests",
        description=(
            "Values events carried where a Button token goes that cannot be one (a placeholder"
            " such as undefined or null, empty, too long, not URL-safe): dropped, never sent."
            " Rising: the app or tag sends junk for a missing token, and orders go unattributed."
        ),
    ),
    PanelSpec(
        "Inputs dropped (products without a price, advertising ids that are not UUIDs)",
        "timeseries",
        "ops",
        (
            _q(
                "sum by (field, problem) (rate(button_consumer_inputs_dropped_total"
                f"{{{SEL}}}[{RATE}]))",
                "{{field}} {{problem}}",
            ),
        ),
        runbook="from-events-to-button-requests",
        description=(
            "What events carried that Button is not sent and the profile does not learn: a"
            " purchase's product without a price (its order goes without line items), an"
            " advertising id that is not a UUID (opt-out, truncated). Rising: the feed sends"
            " products without prices or junk ids."
        ),
    ),
    PanelSpec(
        "Records keyed against the contract (no key, key not the user_key)",
        "timeseries",
        "ops",
        (
            _q(
                "sum by (problem) (rate(button_consumer_record_key_problems_total"
                f"{{{SEL}}}[{RATE}]))",
                "{{problem}}",
            ),
        ),
        runbook="buttonconsumerrecordkeynotuserkey",
        description=(
            "Decoded records whose Kafka key is not their event's user_key (a producer keying"
            " by the order id) or that have no key: their events are kept in another profile"
            " than their user's. Above 0: fix the producer's key."
        ),
    ),
    PanelSpec(
        "Paused (auth, backpressure, breaker)",
        "state",
        "short",
        (_q(f"max by (reason) (button_consumer_paused{{{SEL}}})", "{{reason}}"),),
        runbook="buttonconsumerauthpaused",
        description="1 while consumption is paused for the reason.",
        preview=True,
    ),
    PanelSpec(
        "Ready and Kafka reachable",
        "state",
        "short",
        (
            _q(f"min by (pod) (button_consumer_ready{{{SEL}}})", "{{pod}} ready"),
            _q(
                f"min by (pod) (button_consumer_broker_reachable{{{SEL}}})",
                "{{pod}} Kafka reachable",
            ),
        ),
        runbook="buttonconsumerkafkaunreachable",
        description="1 while the pod is ready, exactly as /readyz answers; and while its last "
        "read of the group's offsets from the brokers was answered.",
    ),
    PanelSpec(
        "Profile restore",
        "timeseries",
        "short",
        (
            _q(f"sum(button_consumer_restoring_partitions{{{SEL}}})", "partitions restoring"),
            _q(
                f"sum(rate(button_consumer_restored_records_total{{{SEL}}}[{RATE}]))",
                "records restored / s",
            ),
            _q(
                f"sum by (when) (increase(button_consumer_changelog_repairs_total{{{SEL}}}"
                f"[{RATE}]))",
                "changelog keys repaired ({{when}})",
            ),
        ),
        runbook="buttonconsumernoprogress",
    ),
    PanelSpec(
        "Changelog write latency",
        "timeseries",
        "s",
        (
            _q(
                "histogram_quantile(0.95, sum by (le) (rate("
                f"button_consumer_changelog_write_seconds_bucket{{{SEL}}}[{RATE}])))",
                "p95",
            ),
        ),
        runbook="buttonconsumernoprogress",
    ),
    PanelSpec(
        "Consumers up and versions",
        "stat",
        "short",
        (
            _q(
                f"count by (version, librdkafka) (button_consumer_build_info{{{SEL}}})",
                "{{version}} (librdkafka {{librdkafka}})",
            ),
        ),
        runbook="buttonconsumerdown",
    ),
)


def build_dashboard() -> object:
    """The dashboard, built with the SDK's typed builders (validated by its types)."""
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import (
        dashboard,
        prometheus,
        stat,
        statetimeline,
        timeseries,
    )
    from grafana_foundation_sdk.models.common import LegendPlacement
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

    datasource = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (
        dashboard.Dashboard("button-consumer")
        .uid(UID)
        .description("Orders from Kafka to Button's Order API: flow, Button, lag, freshness, DLQ.")
        .tags(["button-consumer", "kafka"])
        .time("now-3h", "now")
        .refresh("30s")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("namespace")
            .label("Namespace")
            .datasource(datasource)
            .query("label_values(button_consumer_build_info, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
        .with_variable(
            dashboard.QueryVariable("pod")
            .label("Pod")
            .datasource(datasource)
            .query('label_values(button_consumer_build_info{namespace=~"$namespace"}, pod)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            .multi(True)
        )
        .with_variable(
            dashboard.TextBoxVariable("runbook_url")
            .label("Runbook (README URL)")
            .default_value("README.md")
        )
    )
    for spec in PANELS:
        panel: Any  # three builder types with the same chainable methods
        if spec.kind == "stat":
            panel = stat.Panel()
        elif spec.kind == "state":
            panel = statetimeline.Panel()
        else:
            panel = timeseries.Panel().legend(
                common_builders.VizLegendOptions()
                .show_legend(True)
                .placement(LegendPlacement.BOTTOM)
            )
        builder = (
            panel.title(spec.title)
            .datasource(datasource)
            .unit(spec.unit)
            .span(spec.width)
            .height(8)
        )
        if spec.description:
            builder = builder.description(spec.description)
        if spec.no_value:
            builder = builder.no_value(spec.no_value)
        if spec.runbook:
            builder = builder.links(
                [dashboard.DashboardLink("Runbook").url(f"${{runbook_url}}#{spec.runbook}")]
            )
        for index, query in enumerate(spec.queries):
            builder = builder.with_target(
                prometheus.Dataquery()
                .expr(query.expr)
                .legend_format(query.legend)
                .ref_id(chr(ord("A") + index))
            )
        board = board.with_panel(builder)
    return board.build()


def render() -> str:
    """The dashboard JSON, as committed (sorted keys, two-space indent, final newline)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return JSONEncoder(sort_keys=True, indent=2).encode(build_dashboard()) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args == ["--check"]:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(
                f"{OUTPUT.name} is stale: run python -m consumer.devtools.dashboard",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    json.loads(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
