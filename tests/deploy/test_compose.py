"""docker-compose.yml: valid against the Compose Specification, consistent with the service
and the chart (no Docker engine answers here, so the stack itself is never started)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from consumer.cli import _parser
from consumer.devtools.registry import APICURIO_VERSION, CCOMPAT_PATH
from consumer.settings import Settings, variable_names
from tests.deploy.conftest import CHART, ROOT, by_kind

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
CHART_VALUES: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool is not None
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_compose_file_matches_the_compose_specification() -> None:
    """check-jsonschema's vendored Compose Specification schema accepts the file."""
    done = _check_jsonschema(COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_compose_file_is_refused(tmp_path: Path) -> None:
    """The validation is real: a port given as a mapping of the wrong shape fails it."""
    broken = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    broken["services"]["consumer"]["ports"] = {"admin": 9400}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert _check_jsonschema(path).returncode != 0


def test_the_stack_has_every_piece() -> None:
    """Kafka, a registry, the sandbox, the consumer, a producer, Prometheus and Grafana."""
    assert set(SERVICES) == {
        "kafka",
        "registry",
        "sandbox",
        "consumer",
        "producer",
        "prometheus",
        "grafana",
    }


def test_images_are_the_versions_the_tests_run() -> None:
    """Kafka and the registry are the releases the local tiers run from Maven Central."""
    pom = (ROOT / "infra" / "kafka" / "pom.xml").read_text(encoding="utf-8")
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert kafka_version is not None
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{kafka_version.group(1)}"
    assert SERVICES["registry"]["image"] == f"apicurio/apicurio-registry:{APICURIO_VERSION}"
    for name in ("prometheus", "grafana", "kafka", "registry"):
        assert not SERVICES[name]["image"].endswith(":latest")


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service]["environment"].items()}


@pytest.mark.parametrize("service", ["consumer", "producer"])
def test_service_environment_is_settings_the_service_reads(service: str) -> None:
    """Every variable is a setting, and they pass the service's own validation."""
    env = _env(service)
    assert set(env) <= variable_names()
    Settings.from_env(env, require_api_key=service == "consumer")


def test_the_consumer_reaches_kafka_the_registry_and_the_sandbox_where_they_listen() -> None:
    """Bootstrap servers, registry URL and Button URL name the services and their ports."""
    env = _env("consumer")
    kafka_env = SERVICES["kafka"]["environment"]
    assert (
        f"PLAINTEXT://{env['KAFKA_BOOTSTRAP_SERVERS']}" == kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )
    registry = urlsplit(env["SCHEMA_REGISTRY_URL"])
    assert registry.hostname == "registry"
    assert registry.path == CCOMPAT_PATH
    assert f"{registry.port}:{registry.port}" in SERVICES["registry"]["ports"]
    assert env["SCHEMA_REGISTRY_URL"] == _env("producer")["SCHEMA_REGISTRY_URL"]
    button = urlsplit(env["BUTTON_BASE_URL"])
    sandbox = SERVICES["sandbox"]["command"]
    assert button.hostname == "sandbox"
    assert str(button.port) == sandbox[sandbox.index("--port") + 1]
    assert env["BUTTON_API_KEY"] == sandbox[sandbox.index("--api-key") + 1]


def test_the_admin_port_is_the_one_the_chart_and_prometheus_use() -> None:
    """Published port, ADMIN_PORT, the chart's admin.port and the scrape target agree."""
    port = int(_env("consumer")["ADMIN_PORT"])
    assert port == CHART_VALUES["admin"]["port"]
    assert f"{port}:{port}" in SERVICES["consumer"]["ports"]
    scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text("utf-8"))
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"consumer:{port}"]


def test_topic_group_and_shutdown_match_the_chart(chart) -> None:
    """Topic, group and the grace period are the chart's for the same shutdown timeout."""
    env = _env("consumer")
    assert env["KAFKA_TOPIC"] == CHART_VALUES["kafka"]["topic"]
    assert env["KAFKA_GROUP_ID"] == CHART_VALUES["kafka"]["groupId"]
    timeout = env["DELIVERY_SHUTDOWN_TIMEOUT_SECONDS"]
    pod = by_kind(chart(f"shutdown.timeoutSeconds={timeout}"))["StatefulSet"]["spec"]["template"]
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert SERVICES["consumer"]["stop_grace_period"] == f"{grace}s"


def test_every_mounted_file_exists() -> None:
    """Each bind mount's source is in the repository; the rules and dashboard are mounted."""
    sources = []
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (ROOT / source).exists(), source
            sources.append(source)
    assert "./deploy/prometheus" in sources
    assert "./deploy/grafana" in sources


def test_prometheus_loads_the_rules_file_the_chart_ships() -> None:
    """The rule_files glob picks up the file behind the chart's PrometheusRule."""
    scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text("utf-8"))
    (pattern,) = scrape["rule_files"]
    chart_rules = (CHART / "files" / "button-consumer.rules.yaml").resolve()
    assert chart_rules.parent == (ROOT / "deploy" / "prometheus")
    assert Path(chart_rules.name).match(Path(pattern).name)


@pytest.mark.parametrize("service", ["sandbox", "consumer", "producer"])
def test_the_commands_are_ones_the_cli_accepts(service: str) -> None:
    """Each command of the service image parses with the CLI's own parser."""
    _parser().parse_args(SERVICES[service]["command"])


def test_prometheus_gives_the_consumer_the_label_the_alert_rules_select() -> None:
    """The scrape config sets monitored_service="button-consumer" on the consumer's target: the
    alert rules select it by that label, not by the job's name."""
    scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text("utf-8"))
    (job,) = scrape["scrape_configs"]
    relabel = [
        r
        for r in job.get("relabel_configs", [])
        if r.get("target_label") == "monitored_service" and not r.get("source_labels")
    ]
    assert relabel == [{"target_label": "monitored_service", "replacement": "button-consumer"}]
    rules = (ROOT / "deploy" / "prometheus" / "button-consumer.rules.yaml").read_text("utf-8")
    assert 'up{monitored_service="button-consumer"}' in rules
