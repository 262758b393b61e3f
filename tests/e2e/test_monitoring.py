"""The dashboard and the alert rules, proven against the real service.

A real Prometheus (Debian's package; ``make test`` installs it) scrapes ``button-consumer run``
against the real broker and the Button sandbox while sample traffic, records carrying secrets and
personal data, a poison record and a Button outage flow. Then every dashboard query and every
alert expression is evaluated through Prometheus' HTTP API (an error or an empty answer fails),
the dead-letter and outage (circuit breaker) alerts are seen to fire and to resolve, a preview
of the dashboard is drawn from ``query_range``, and every output (logs, /metrics, /deliveries,
DLQ headers) is searched for the secrets and personal data.

The alert rules are the deployed file with its windows shortened (``[10m]`` -> ``[20s]``, a
process age ``< 600`` -> ``< 20``, ``for: 5m`` -> ``for: 2s``), and Prometheus scrapes and
evaluates every second, so the alerts change state within seconds. Each state is made by the
test (the poison record, the sandbox's outage switched on and off), and every wait has a
deadline and a message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer.commands import produce_events
from consumer.devtools.dashboard import PANELS, PanelSpec
from consumer.domain.event_forms import event_from_json
from consumer.samples import generate_events, past_start
from consumer.sandbox.testing import SandboxHandle, run_sandbox
from consumer.settings import Settings
from tests.e2e.harness import ServiceProcess, produce_raw, read_all, wait_until

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "button-consumer.rules.yaml"
PREVIEW = ROOT / "docs" / "dashboard-preview.png"
WINDOW = "20s"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

API_KEY = "sk-monitoring-7f3c9a1e5b2d4c6a"
LEAKED_KEY = "sk-live-4b8e2f6a9c1d3e5f7a9b"
EMAIL = "Jane.Leak.Monitor@Example.com"
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GAID = "38400000-8cf0-11bd-b23e-10b96e4ef00d"
SECRETS = (API_KEY, LEAKED_KEY, EMAIL, EMAIL.lower(), IDFA, IDFA.lower(), GAID)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 10.0) -> Any:
    with _DIRECT.open(url, timeout=timeout) as response:
        return json.loads(response.read())


def get_text(url: str) -> str:
    with _DIRECT.open(url, timeout=10) as response:
        return str(response.read().decode())


def shorten(text: str) -> str:
    """The deployed rules with test-sized windows and pending periods (the event alerts' age
    of a process, ``time() - process_start_time_seconds < 600``, is a window too)."""
    text = re.sub(r"\[\d+[smh]\]", f"[{WINDOW}]", text)
    text = re.sub(r"(time\(\) - process_start_time_seconds < )\d+", rf"\g<1>{WINDOW[:-1]}", text)
    return re.sub(r"^(\s+)for: \S+$", r"\1for: 2s", text, flags=re.MULTILINE)


def panel_expr(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", WINDOW)
        .replace('"$namespace"', '".*"')
        .replace('"$pod"', '".*"')
    )


class Prometheus:
    """A real Prometheus on loopback, scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, (
            "prometheus is not on PATH: run `python -m consumer.devtools.prereqs --monitoring`"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "rules.yaml").write_text(shorten(RULES.read_text()))
        (workdir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [rules.yaml]\n"
            "scrape_configs:\n"
            # A job named as a user might (the rules select the target by the relabelled
            # monitored_service label, the one line the README asks a scrape config to add).
            "  - job_name: orders\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
            "    relabel_configs:\n"
            "      - {target_label: monitored_service, replacement: button-consumer}\n"
        )
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self._proc.poll() is None, self.log_path.read_text()[-2000:]
            try:
                return get_text(self.url + "/-/ready").startswith("Prometheus")
            except OSError:
                return False

        wait_until(ready, 60, interval=0.2, message="Prometheus did not become ready in 60 s")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; fails on any error."""
        doc = get_json(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert doc["status"] == "success", (expr, doc)
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": start, "end": end, "step": 1}
        doc = get_json(self.url + "/api/v1/query_range?" + urllib.parse.urlencode(params))
        assert doc["status"] == "success", (expr, doc)
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def firing(self) -> set[str]:
        doc = get_json(self.url + "/api/v1/alerts")
        return {a["labels"]["alertname"] for a in doc["data"]["alerts"] if a["state"] == "firing"}

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture
def sandbox_with_key() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=(API_KEY,)) as handle:
        yield handle


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        prom = Prometheus(tmp_path, target)
        started.append(prom)
        prom.wait_ready()
        return prom

    yield start
    for prom in started:
        prom.stop()


def pii_events(prefix: str) -> list[Any]:
    """Purchases carrying an email, raw advertising IDs and an API key in custom attributes;
    one of them has an unknown currency, so it is dead-lettered with all of that inside, and
    one a placeholder token (``undefined``)."""
    events = []
    for n, currency in enumerate(("USD", "USD", "ZZZ")):
        events.append(
            event_from_json(
                {
                    "event_id": f"{prefix}-pii-{n}",
                    "event_type": "PURCHASE",
                    "event_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "user_key": f"{prefix}-user-{n}",
                    "user_identities": {"email": EMAIL, "customer_id": f"cust-{n}"},
                    "device_info": {"ios_advertising_id": IDFA, "android_advertising_id": GAID},
                    "custom_attributes": {"api_key": LEAKED_KEY, "note": EMAIL},
                    # The second one's app sends a placeholder for a missing token (dropped,
                    # counted: the attribution panel's series).
                    "btn_ref": "undefined" if n == 1 else "srctok-0123456789abcdef",
                    "commerce": {
                        "action": "PURCHASE",
                        "transaction_id": f"{prefix}-PII-{n}",
                        "currency_code": currency,
                        "total_amount": "19.99",
                    },
                }
            )
        )
    return events


def purchases(prefix: str, count: int) -> list[Any]:
    return [
        event_from_json(
            {
                "event_id": f"{prefix}-{n}",
                "event_type": "PURCHASE",
                "event_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "user_key": f"{prefix}-u{n}",
                "commerce": {
                    "action": "PURCHASE",
                    "transaction_id": f"{prefix}-O{n}",
                    "currency_code": "EUR",
                    "total_amount": "5.00",
                },
            }
        )
        for n in range(count)
    ]


def wait_alert(prom: Prometheus, name: str, firing: bool, timeout: float = 90) -> None:
    state = "fire" if firing else "resolve"
    wait_until(
        lambda: (name in prom.firing()) == firing,
        timeout,
        interval=0.25,
        message=f"alert {name} did not {state} within {timeout} s (firing: {prom.firing()})",
    )


def test_dashboard_and_alerts_work_against_the_live_service(
    kafka_bootstrap, make_topic, unique_name, sandbox_with_key, prometheus_for, tmp_path
):
    """Every panel and alert expression answers with series; DLQ and outage alerts fire and
    resolve; no output carries the API key, an email or an advertising ID."""
    sandbox = sandbox_with_key
    topic = make_topic(partitions=3, prefix="monitoring")
    admin_port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": unique_name("group"),
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "BUTTON_API_KEY": API_KEY,
        "BUTTON_BASE_URL": sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
        "DELIVERY_RETRY_BASE_DELAY_SECONDS": "0.05",
        "DELIVERY_RETRY_MAX_DELAY_SECONDS": "0.5",
        "DELIVERY_RETRY_MAX_ATTEMPTS": "100000",
        "DELIVERY_RETRY_MAX_ELAPSED_SECONDS": "3600",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "10",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
        "LOG_SUCCESS_SAMPLE_RATE": "1",
    }
    settings = Settings.from_env(env)
    admin = f"http://127.0.0.1:{admin_port}"
    service = ServiceProcess(env, tmp_path / "service.log").start()
    prom = prometheus_for(f"127.0.0.1:{admin_port}")
    started = time.time()
    try:
        wait_until(
            lambda: prom.query('up{monitored_service="button-consumer"} == 1'),
            60,
            interval=0.25,
            message=f"Prometheus never scraped the consumer: {service.log_tail()}",
        )

        # Sample traffic, records carrying secrets, and a poison record.
        sample = list(generate_events(60, seed=5, start=past_start(datetime.now(UTC))))
        produce_events(settings, sample + pii_events("m"), partitions=3)
        produce_raw(kafka_bootstrap, topic, [(b"poison", b"\x07not avro at all", 0)])
        wait_alert(prom, "ButtonConsumerDeadLetters", firing=True)
        # The event alerts' second arm (a counter above 0 of a process started within the
        # window: an event before the first scrape) joins the counter to the target's
        # process_start_time_seconds on (job, instance): that join matches on a real scrape.
        assert prom.query(
            'button_consumer_records_finished_total{outcome="dead_lettered"} > 0'
            " and on (job, instance) (time() - process_start_time_seconds < 600)"
        ), "the dead-letter counter does not join its target's process_start_time_seconds"

        # A Button outage while orders keep coming: their failures open the circuit breaker,
        # which pauses intake until a probe is answered; nothing is dead-lettered. The breaker
        # stays open for as long as the test keeps the outage on, so the alert's state holds by
        # construction (the error-ratio alert need not fire: behind an open breaker no order
        # request is sent).
        sandbox.set_faults({"outage": {"seconds": 3600, "status": 503}})
        outage = purchases("outage", 5)
        produce_events(settings, outage, partitions=3)
        wait_alert(prom, "ButtonConsumerBreakerOpen", firing=True)
        sandbox.clear_faults()
        sandbox.wait_for(
            lambda: (
                {e.commerce.transaction_id for e in outage}
                <= {o["order_id"] for o in sandbox.orders()}
            ),
            timeout=60,
            message="orders held back by the outage did not reach Button after it",
        )
        wait_alert(prom, "ButtonConsumerBreakerOpen", firing=False)
        wait_alert(prom, "ButtonConsumerDeadLetters", firing=False)

        # Every panel query answers with at least one series.
        for spec in PANELS:
            for query in spec.queries:
                expr = panel_expr(query.expr)
                assert prom.query(expr), f"panel {spec.title!r}: no series for {expr}"

        # Every alert expression evaluates, and every metric it reads has series.
        rules = shorten(RULES.read_text())
        exprs = re.findall(r"expr: \|\n((?:\s{10}.*\n)+)|expr: (.*)\n", rules)
        assert len(exprs) == rules.count("- alert:")
        for block, line in exprs:
            expr = (block or line).strip()
            prom.query(expr)
            for name in set(re.findall(r"\b(?:button_consumer_[a-z_]+|up)\b(?=[{\[ )])", expr)):
                assert prom.query(f"count({name})"), f"alert reads {name}, which has no series"

        # The target is found by its relabelled monitored_service label, not the job's name.
        assert "ButtonConsumerAbsent" not in prom.firing()
        assert prom.query('up{job="orders", monitored_service="button-consumer"} == 1')

        draw_preview(prom, started, time.time(), tmp_path / "preview.png")

        # No output carries a secret or personal data.
        metrics_text = get_text(admin + "/metrics")
        deliveries = get_text(admin + "/deliveries?limit=1000")
        assert json.loads(deliveries)["deliveries"], "the live log is empty"
        dead = read_all(kafka_bootstrap, settings.kafka.dlq_topic)
        assert len(dead) >= 2, "the poison record and the ZZZ purchase are dead letters"
        headers = "\n".join(
            f"{k}={(v or b'').decode(errors='replace')}" for m in dead for k, v in m.headers() or []
        )
    finally:
        service.terminate()
    logs = (tmp_path / "service.log").read_text()
    assert '"event": "record"' in logs
    for name, text in (
        ("logs", logs),
        ("/metrics", metrics_text),
        ("/deliveries", deliveries),
        ("DLQ headers", headers),
    ):
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} appears in {name}"


def fill_legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's ``{{label}}`` legend template with a series' labels."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: labels.get(m.group(1), ""), template)


def draw_preview(prom: Prometheus, start: float, end: float, out: Path) -> None:
    """The dashboard's main panels over the run, from query_range; copied to docs/ when
    UPDATE_DASHBOARD_PREVIEW=1 (the committed picture in the README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs: list[PanelSpec] = [p for p in PANELS if p.preview]
    cols = 2
    rows = (len(specs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3 * rows), squeeze=False)
    for ax, spec in zip(axes.flat, specs, strict=False):
        for query in spec.queries:
            for series in prom.query_range(panel_expr(query.expr), start, end):
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                legend = fill_legend(query.legend, series["metric"])
                ax.plot([p[0] for p in points], [p[1] for p in points], label=legend.strip())
        ax.set_title(spec.title, fontsize=10)
        ax.set_xlabel("seconds into the run", fontsize=8)
        ax.set_ylabel(spec.unit, fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(specs) :]:
        ax.set_visible(False)
    fig.suptitle("button-consumer: traffic, a poison record, a Button outage (live run)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    assert out.stat().st_size > 10_000, "the preview is empty"
    if os.environ.get("UPDATE_DASHBOARD_PREVIEW") == "1":
        shutil.copyfile(out, PREVIEW)
