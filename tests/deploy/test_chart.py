"""The Helm chart, rendered offline: valid manifests, a strict values schema, rules kept."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.errors import ConfigError
from consumer.settings import ClientConfig, Settings, setting_warnings, variable_names
from tests.deploy.conftest import (
    API_VERSIONS,
    CHART,
    KUBE_VERSION,
    REQUIRED,
    ROOT,
    HelmFailedError,
    by_kind,
    helm_binary,
    render,
    validate_manifest,
)

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint_strict_passes(values: Path) -> None:
    """`helm lint --strict` accepts the chart with each of its CI values files."""
    done = subprocess.run(
        [
            helm_binary(),
            "lint",
            "--strict",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "-f",
            str(values),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_pinned_helm_renders_the_chart_without_kube_version() -> None:
    """`make helm` builds helm with its default Kubernetes version set to KUBE_VERSION (helm's own
    release build sets it with -ldflags; `go install` alone leaves v1.20.0, below the chart's
    kubeVersion, so a plain `helm template` would fail)."""
    done = subprocess.run(
        [helm_binary(), "template", "release", str(CHART), *(f"--set={s}" for s in REQUIRED)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_every_rendered_manifest_is_valid(values: Path) -> None:
    """Each manifest of each CI scenario passes its Kubernetes or custom resource schema."""
    docs = render(values_files=[values])
    assert docs
    for doc in docs:
        validate_manifest(doc)


def test_the_default_values_render_valid_manifests(chart) -> None:
    """With only the required values, the release renders and validates."""
    for doc in chart():
        validate_manifest(doc)


def test_the_readmes_helm_install_renders_valid_manifests() -> None:
    """The README's quick-start `helm install` line, with its `--set` and `--set-string` values,
    is one the chart accepts (helm's `--set` makes `true` a boolean: a setting must be a
    string), and it renders a dry run."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("helm install "))
    command = [lines[first]]
    while command[-1].endswith("\\"):
        command.append(lines[first + len(command)])
    words = " ".join(line.removesuffix("\\") for line in command).split()
    pairs: dict[str, list[str]] = {"--set": [], "--set-string": []}
    for flag, value in itertools.pairwise(words):
        if flag in pairs:
            pairs[flag].append(value)

    docs = render(*pairs["--set"], set_strings=pairs["--set-string"])

    for doc in docs:
        validate_manifest(doc)
    assert by_kind(docs)["ConfigMap"]["data"]["DELIVERY_DRY_RUN"] == "true"


def test_the_validation_catches_a_broken_manifest(chart) -> None:
    """The validator is not a no-op: a wrong type inside a rendered manifest fails it."""
    kinds = by_kind(chart("keda.enabled=true"))
    kinds["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "soon"
    kinds["ScaledObject"]["spec"]["maxReplicaCount"] = "many"
    with pytest.raises(AssertionError):
        validate_manifest(kinds["StatefulSet"])
    with pytest.raises(AssertionError):
        validate_manifest(kinds["ScaledObject"])


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["replicaCount=two"], "replicaCount"),
        (["kafka.bogus=1"], "additional properties 'bogus' not allowed"),
        (["keda.lagThreshold=lots"], "lagThreshold"),
        (["metrics.serviceMonitor.interval=often"], "interval"),
        (["image.digest=latest"], "digest"),
        (["config.BUTTON_API_KEY=sk-live"], "invalid propertyName 'BUTTON_API_KEY'"),
        (
            ["config.ADMIN_TEST_EVENT_TOKEN=a-token-of-16-chars"],
            "invalid propertyName 'ADMIN_TEST_EVENT_TOKEN'",
        ),
        (
            ["config.KAFKA_CONFIG_SASL_PASSWORD=p"],
            "invalid propertyName 'KAFKA_CONFIG_SASL_PASSWORD'",
        ),
        (["config.DELIVERY_SHUTDOWN_TIMEOUT_SECONDS=99"], "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS"),
        (["config.DELIVERY_MAX_IN_FLIGHT=1000"], "config"),  # a number, not a string
        (["kafka.groupProtocol=eager"], "groupProtocol"),
        (["networkPolicy.kafka.ports[0]=kafka"], "ports"),
        (
            ["kafka.partitions=4", "keda.enabled=true", "keda.maxReplicaCount=8"],
            "keda.maxReplicaCount (8) exceeds kafka.partitions (4)",
        ),
        (["kafka.partitions=2", "replicaCount=3"], "replicaCount (3) exceeds kafka.partitions (2)"),
        (["kafka.bootstrapServers="], "kafka.bootstrapServers is required"),
        (["button.existingSecret="], "button.existingSecret is required"),
    ],
)
def test_a_broken_value_fails_the_render(chart, sets: list[str], message: str) -> None:
    """values.schema.json and the templates' checks refuse wrong types, unknown keys, bad caps."""
    with pytest.raises(HelmFailedError) as failed:
        chart(*sets)
    assert message in str(failed.value)


# librdkafka's properties whose values are credentials: the chart refuses them in ``config``
# (a ConfigMap), and the service hides them when it prints its client configuration.
CREDENTIAL_PROPERTIES = (
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.keystore.password",
)


@pytest.mark.parametrize("prop", CREDENTIAL_PROPERTIES)
def test_a_credential_is_refused_in_the_configmap_and_hidden_by_the_service(
    chart, prop: str
) -> None:
    """Every librdkafka credential property: ``config.KAFKA_CONFIG_*`` refuses it (it would
    land in a ConfigMap: use ``kafka.existingSecret``), and the service's configuration repr
    hides its value."""
    variable = "KAFKA_CONFIG_" + prop.upper().replace(".", "_")
    with pytest.raises(HelmFailedError) as failed:
        chart(f"config.{variable}=s3cr3t")
    assert f"invalid propertyName '{variable}'" in str(failed.value)
    assert "s3cr3t" not in repr(ClientConfig({prop: "s3cr3t"}))


def test_a_custom_resource_without_its_api_is_refused() -> None:
    """KEDA on, but the cluster has no KEDA API: the render fails instead of dropping it."""
    with pytest.raises(HelmFailedError, match=re.escape("keda.sh/v1alpha1")):
        render(
            "kafka.bootstrapServers=k:9092",
            "button.existingSecret=s",
            "keda.enabled=true",
            api_versions=[a for a in API_VERSIONS if not a.startswith("keda")],
        )


def test_static_membership_is_a_statefulset_named_by_the_pod() -> None:
    """Static membership renders a StatefulSet whose instance id is the stable pod name."""
    kinds = by_kind(render("kafka.bootstrapServers=k:9092", "button.existingSecret=s"))
    assert "Deployment" not in kinds
    sts = kinds["StatefulSet"]
    assert sts["spec"]["serviceName"] == kinds["Service"]["metadata"]["name"]
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_GROUP_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }


def test_without_static_membership_a_deployment_sets_no_instance_id(chart) -> None:
    """A Deployment's pod names change every rollout: no static membership there."""
    kinds = by_kind(chart("staticMembership.enabled=false"))
    assert "StatefulSet" not in kinds
    assert "Service" not in kinds
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    assert "KAFKA_GROUP_INSTANCE_ID" not in names
    assert "KAFKA_GROUP_INSTANCE_ID" not in kinds["ConfigMap"]["data"]


def _shutdown_budget(timeout: float) -> float:
    """How long the service may take to exit after SIGTERM: the whole split budget (drain,
    commit, close, flush: DeliverySettings.shutdown_budget), then the producer thread's join
    (2 s, AckingProducer.close) and the process's exit (0.5 s)."""
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
            "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": str(timeout),
            "DELIVERY_DRY_RUN": "true",
        }
    )
    return settings.delivery.shutdown_budget().total + 2.5


@pytest.mark.parametrize("timeout", [1, 20, 300])
def test_the_grace_period_outlasts_the_shutdown_budget(chart, timeout: int) -> None:
    """terminationGracePeriodSeconds > the service's worst-case shutdown, for any timeout."""
    kinds = by_kind(chart(f"shutdown.timeoutSeconds={timeout}", "shutdown.marginSeconds=1"))
    pod = kinds["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > _shutdown_budget(timeout)
    assert kinds["ConfigMap"]["data"]["DELIVERY_SHUTDOWN_TIMEOUT_SECONDS"] == str(timeout)


def test_the_configmap_holds_only_settings_the_service_reads(chart) -> None:
    """Every ConfigMap key is a setting, and together they pass the service's validation."""
    data = by_kind(chart("schemaRegistry.url=http://registry:8081"))["ConfigMap"]["data"]
    assert set(data) <= variable_names()
    settings = Settings.from_env({**data, "BUTTON_API_KEY": "from-the-secret"})
    assert settings.admin.port == 9400
    assert settings.delivery.shutdown_timeout_seconds == 50
    assert setting_warnings(settings) == []  # the chart's defaults cover a whole request


def test_the_api_key_comes_from_the_existing_secret_only(chart) -> None:
    """The key is a secretKeyRef to the named Secret; the chart renders no Secret of its own."""
    kinds = by_kind(chart("button.existingSecret=my-key", "button.existingSecretKey=token"))
    assert "Secret" not in kinds
    assert "BUTTON_API_KEY" not in kinds["ConfigMap"]["data"]
    env = {
        e["name"]: e
        for e in kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["BUTTON_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "my-key", "key": "token"}
    }


def test_the_kafka_secret_is_loaded_whole(chart) -> None:
    """kafka.existingSecret is an envFrom: every key of it (KAFKA_CONFIG_*, and
    ADMIN_TEST_EVENT_TOKEN, which the README puts there) becomes a variable of the same name."""
    pod = by_kind(chart("kafka.existingSecret=kafka-sasl"))["StatefulSet"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {"secretRef": {"name": "kafka-sasl"}} in container["envFrom"]
    assert all("prefix" not in source for source in container["envFrom"])


def test_the_pod_is_locked_down(chart) -> None:
    """Non-root, read-only root filesystem, no capabilities, no service account token."""
    pod = by_kind(chart())["StatefulSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }


def test_keda_scales_on_lag_capped_at_the_partitions(chart) -> None:
    """The ScaledObject targets the workload, caps at the partition count, skips stuck lag."""
    kinds = by_kind(chart("keda.enabled=true", "kafka.partitions=6"))
    spec = kinds["ScaledObject"]["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": kinds["StatefulSet"]["metadata"]["name"],
    }
    assert spec["maxReplicaCount"] == 6
    trigger = spec["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["excludePersistentLag"] == "true"
    assert trigger["metadata"]["consumerGroup"] == "button-consumer"
    assert trigger["metadata"]["offsetResetPolicy"] == "earliest"
    assert "replicas" not in kinds["StatefulSet"]["spec"]  # KEDA owns the count


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "live"])
def test_keda_watches_the_consumer_group_the_pods_consume_in(chart, dry_run: bool) -> None:
    """KEDA's scaler reads the lag of the group the service joins: under DELIVERY_DRY_RUN that
    is `<groupId>-dry-run` (consumer/settings.py), whose lag the live group's does not show."""
    dry = ["config.DELIVERY_DRY_RUN=true"] if dry_run else []
    kinds = by_kind(chart("keda.enabled=true", "kafka.groupId=orders", set_strings=dry))
    service = Settings.from_env({**kinds["ConfigMap"]["data"], "BUTTON_API_KEY": "k"})

    group = kinds["ScaledObject"]["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    assert group == service.kafka.group_id
    assert group == ("orders-dry-run" if dry_run else "orders")


DRY_RUN_SPELLINGS = [
    *("true", "True", "TRUE", "tRuE", "1", "yes", "YES", "on", "On", "y", "Y", "t", "T"),
    *("false", "False", "0", "no", "off", "OFF", "n", "f", "F", ""),
    *(" true", "true ", "2", "01", "truee", "enabled"),
]


def _service_dry_run(value: str) -> bool | None:
    """The service's reading of DELIVERY_DRY_RUN=value: on, off, or refused (None)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", "DELIVERY_DRY_RUN": value}
    try:
        return Settings.from_env(env).delivery.dry_run
    except ConfigError:
        return None


@pytest.mark.parametrize("value", DRY_RUN_SPELLINGS, ids=repr)
def test_the_chart_reads_delivery_dry_run_as_the_service_does(value: str) -> None:
    """Every spelling the service takes as on (pydantic's bool: true/1/yes/on/y/t in any case)
    is a dry run for the chart too (no API key needed, KEDA on the -dry-run group); every one it
    takes as off needs the key; one the service refuses, the chart refuses: its schema first,
    and the template's own reading without the schema."""
    dry = [f"config.DELIVERY_DRY_RUN={value}"]
    base = ("kafka.bootstrapServers=k:9092", "keda.enabled=true")
    expected = _service_dry_run(value)

    if expected is None:
        with pytest.raises(HelmFailedError, match=r"/config/DELIVERY_DRY_RUN'"):
            render(*base, "button.existingSecret=s", set_strings=dry)
        with pytest.raises(HelmFailedError, match=r"config\.DELIVERY_DRY_RUN .* is not a boolean"):
            render(
                *base,
                "button.existingSecret=s",
                set_strings=dry,
                flags=["--skip-schema-validation"],
            )
        return
    if expected:
        kinds = by_kind(render(*base, set_strings=dry))  # no API key needed
    else:
        with pytest.raises(HelmFailedError, match=re.escape("button.existingSecret is required")):
            render(*base, set_strings=dry)
        kinds = by_kind(render(*base, "button.existingSecret=s", set_strings=dry))
    group = kinds["ScaledObject"]["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    assert group == ("button-consumer-dry-run" if expected else "button-consumer")


def test_the_prometheus_rule_is_the_shared_rules_file(chart) -> None:
    """The PrometheusRule carries deploy/prometheus's rules, the file compose's Prometheus loads."""
    rule = by_kind(chart("metrics.prometheusRule.enabled=true"))["PrometheusRule"]
    shared = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "button-consumer.rules.yaml").read_text(encoding="utf-8")
    )
    assert rule["spec"]["groups"] == shared["groups"]


def _alerts(rule: dict[str, Any]) -> list[str]:
    return [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


@pytest.mark.parametrize(
    ("sets", "absent_kept"),
    [
        ([], True),
        (["keda.enabled=true", "keda.minReplicaCount=1"], True),
        (["keda.minReplicaCount=0"], True),  # KEDA off: replicaCount pods always run
        (["keda.enabled=true", "keda.minReplicaCount=0"], False),
    ],
)
def test_no_consumer_up_alerts_unless_keda_may_scale_to_zero(
    chart, sets: list[str], absent_kept: bool
) -> None:
    """ButtonConsumerAbsent (no consumer target up) is in the PrometheusRule, except where KEDA
    may scale the workload to zero: there no consumer is the normal idle state. Every other
    rule is the shared file's."""
    rule = by_kind(chart("metrics.prometheusRule.enabled=true", *sets))["PrometheusRule"]
    shared = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "button-consumer.rules.yaml").read_text(encoding="utf-8")
    )
    expected = [a for a in _alerts({"spec": shared}) if absent_kept or a != "ButtonConsumerAbsent"]

    assert "ButtonConsumerAbsent" in _alerts({"spec": shared})
    assert _alerts(rule) == expected


def test_the_pod_monitor_scrapes_the_admin_port(chart) -> None:
    """The PodMonitor selects this release's pods and scrapes /metrics on the admin port."""
    kinds = by_kind(chart("metrics.podMonitor.enabled=true"))
    endpoint = kinds["PodMonitor"]["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("admin", "/metrics")
    pod_labels = kinds["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert kinds["PodMonitor"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("static", [True, False], ids=["statefulset", "deployment"])
def test_the_service_monitor_scrapes_the_admin_port_of_every_pod(chart, static: bool) -> None:
    """ServiceMonitor -> the headless Service (also without static membership) -> the pods'
    admin port, not-ready pods included (a pod paused on a refused key keeps its metrics)."""
    kinds = by_kind(
        chart("metrics.serviceMonitor.enabled=true", f"staticMembership.enabled={static}")
    )
    workload = kinds["StatefulSet" if static else "Deployment"]
    monitor, service = kinds["ServiceMonitor"], kinds["Service"]
    for doc in (monitor, service):
        validate_manifest(doc)
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("admin", "/metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["targetPort"]) == ("admin", "admin")
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "admin", "containerPort": 9400, "protocol": "TCP"} in container["ports"]
    assert "PodMonitor" not in kinds


TARGET_LABEL = ("monitored_service", "button-consumer")
"""The label the alert rules select the service's targets by (not the job, which the release's
name makes: the Prometheus Operator names it <namespace>/<monitor name>)."""


def _target_label_relabelings(endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    name, value = TARGET_LABEL
    return [
        r
        for r in endpoint.get("relabelings", [])
        if r.get("targetLabel") == name
        and r.get("replacement") == value
        and r.get("action", "replace").lower() == "replace"
        and not r.get("sourceLabels")
    ]


def test_the_alert_rules_select_targets_by_the_fixed_label_not_the_job() -> None:
    """The rules that read `up` or process metrics select `monitored_service="button-consumer"`
    and never the job's name, which a user picks (fullnameOverride, nameOverride, a release)."""
    name, value = TARGET_LABEL
    shared = yaml.safe_load(
        (ROOT / "deploy" / "prometheus" / "button-consumer.rules.yaml").read_text(encoding="utf-8")
    )
    exprs = {r["alert"]: r["expr"] for group in shared["groups"] for r in group["rules"]}
    for alert in ("ButtonConsumerDown", "ButtonConsumerAbsent", "ButtonConsumerCrashLooping"):
        assert f'{name}="{value}"' in exprs[alert], (alert, exprs[alert])
    for alert, expr in exprs.items():
        assert "job=" not in expr.replace(" ", ""), (alert, expr)


@pytest.mark.parametrize(
    "names",
    [
        [],
        ["fullnameOverride=orders"],
        ["nameOverride=payments"],
        ["fullnameOverride=x", "nameOverride=y"],
    ],
    ids=["default", "fullnameOverride", "nameOverride", "both"],
)
@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
def test_the_monitors_give_every_target_the_label_the_rules_select(
    chart, kind: str, names: list[str]
) -> None:
    """Whatever the release is named (the operator's job is <namespace>/<name>), the PodMonitor or
    ServiceMonitor sets the fixed target label the alert rules select, on every endpoint."""
    key = "podMonitor" if kind == "PodMonitor" else "serviceMonitor"
    kinds = by_kind(chart(f"metrics.{key}.enabled=true", *names))
    monitor = kinds[kind]
    validate_manifest(monitor)
    endpoints = monitor["spec"]["podMetricsEndpoints" if kind == "PodMonitor" else "endpoints"]
    assert endpoints
    for endpoint in endpoints:
        assert len(_target_label_relabelings(endpoint)) == 1, endpoint
    if "fullnameOverride=orders" in names:
        assert monitor["metadata"]["name"] == "orders"


def test_a_pod_monitor_and_a_service_monitor_together_are_refused(chart) -> None:
    """Both would scrape every pod twice (every alert's series doubled): the render fails."""
    with pytest.raises(HelmFailedError, match="enable one"):
        chart("metrics.podMonitor.enabled=true", "metrics.serviceMonitor.enabled=true")


def test_a_service_monitor_without_its_api_is_refused() -> None:
    """ServiceMonitor on, no Prometheus Operator API: a message, not a silently missing object."""
    with pytest.raises(HelmFailedError, match=re.escape("monitoring.coreos.com/v1/ServiceMonitor")):
        render(
            *REQUIRED,
            "metrics.serviceMonitor.enabled=true",
            api_versions=[a for a in API_VERSIONS if not a.endswith("ServiceMonitor")],
        )


def test_the_network_policy_allows_only_kafka_registry_dns_and_button(chart) -> None:
    """Egress: DNS, Kafka's ports, the registry's when one is set, HTTPS to Button."""

    def egress_ports(*sets: str) -> set[int]:
        policy = by_kind(chart(*sets))["NetworkPolicy"]
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}

    assert egress_ports() == {53, 9092, 443}
    assert egress_ports("schemaRegistry.url=http://r:8081") == {53, 9092, 8081, 443}


def _kafka_and_registry_ports(chart, *sets: str) -> tuple[set[int], set[int]]:
    """The ports of the NetworkPolicy's kafka and registry egress rules (empty: no rule)."""
    policy = by_kind(chart(*sets))["NetworkPolicy"]
    validate_manifest(policy)
    rules = policy["spec"]["egress"]
    kafka = {p["port"] for p in rules[1]["ports"]}
    registry = {p["port"] for p in rules[2]["ports"]} if len(rules) == 4 else set()
    return kafka, registry


@pytest.mark.parametrize(
    ("sets", "kafka", "registry"),
    [
        (["kafka.bootstrapServers=k:9093"], {9093}, set()),
        (["kafka.bootstrapServers=b-1:9094\\,b-2:9094\\, b-3:9096"], {9094, 9096}, set()),
        (["kafka.bootstrapServers=kafka"], {9092}, set()),  # librdkafka's default port
        (["kafka.bootstrapServers=[fd00::1]:9095"], {9095}, set()),
        (["schemaRegistry.url=http://registry:8085"], {9092}, {8085}),
        (["schemaRegistry.url=https://psrc-1.eu-west-1.aws.confluent.cloud"], {9092}, {443}),
        (["schemaRegistry.url=http://registry"], {9092}, {80}),
        (["schemaRegistry.url=https://r:8443/path"], {9092}, {8443}),
        # Ports the user sets are the ports, whatever the addresses say.
        (
            [
                "kafka.bootstrapServers=k:9093",
                "networkPolicy.kafka.ports={9092,9093}",
                "schemaRegistry.url=https://r",
                "networkPolicy.registry.ports={8081}",
            ],
            {9092, 9093},
            {8081},
        ),
    ],
)
def test_the_network_policy_derives_kafka_and_registry_ports_from_their_addresses(
    chart, sets: list[str], kafka: set[int], registry: set[int]
) -> None:
    """Egress to Kafka opens every distinct port of kafka.bootstrapServers (9092 for a server
    without one), and to the registry the port of schemaRegistry.url or its scheme's default;
    the ports were fixed at 9092 and 8081, so a k:9093 bootstrap rendered a policy that blocked
    the brokers."""
    assert _kafka_and_registry_ports(chart, *sets) == (kafka, registry)


def test_dns_egress_reaches_kube_dns_and_nodelocal_dns_and_can_be_widened(chart) -> None:
    """DNS egress by default: kube-dns' pods and NodeLocal DNSCache's link-local address
    (169.254.20.10), port 53; networkPolicy.dns.to/ports open another resolver, such as
    OpenShift's (namespace openshift-dns, port 5353 behind the Service's 53)."""

    def dns_rule(*sets: str) -> dict[str, Any]:
        policy = by_kind(chart(*sets))["NetworkPolicy"]
        validate_manifest(policy)
        rules: list[dict[str, Any]] = [
            r
            for r in policy["spec"]["egress"]
            if {"port": 53, "protocol": "UDP"} in r["ports"]
            or {"port": 5353, "protocol": "UDP"} in r["ports"]
        ]
        assert len(rules) == 1, policy["spec"]["egress"]
        return rules[0]

    default = dns_rule()
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in default["to"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
        for peer in default["to"]
    )
    openshift = dns_rule(
        "networkPolicy.dns.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=openshift-dns",
        "networkPolicy.dns.ports={53,5353}",
    )
    assert {p["port"] for p in openshift["ports"]} == {53, 5353}
    assert {p["protocol"] for p in openshift["ports"]} == {"UDP", "TCP"}
    assert openshift["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}}}
    ]


@pytest.mark.parametrize(
    ("sets", "set_strings", "refused"),
    [
        (["kafka.existingSecret=kafka-sasl"], [], True),
        ([], ["config.KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL"], True),
        ([], ["config.KAFKA_CONFIG_SECURITY_PROTOCOL=ssl"], True),
        ([], ["config.KAFKA_CONFIG_SECURITY_PROTOCOL=PLAINTEXT"], False),
        ([], [], False),
        (["kafka.existingSecret=kafka-sasl", "keda.authenticationRef=kafka-keda"], [], False),
    ],
)
def test_keda_without_authentication_is_refused_when_the_pods_authenticate(
    chart, sets: list[str], set_strings: list[str], refused: bool
) -> None:
    """The pods take SASL/TLS from kafka.existingSecret or KAFKA_CONFIG_SECURITY_PROTOCOL, but
    KEDA's scaler has a Kafka client of its own: without keda.authenticationRef (a
    TriggerAuthentication) it connects unauthenticated and never reads the lag."""
    if refused:
        with pytest.raises(HelmFailedError, match=re.escape("keda.authenticationRef")):
            chart("keda.enabled=true", *sets, set_strings=set_strings)
        return
    kinds = by_kind(chart("keda.enabled=true", *sets, set_strings=set_strings))
    trigger = kinds["ScaledObject"]["spec"]["triggers"][0]
    assert ("authenticationRef" in trigger) == any("authenticationRef" in s for s in sets)


def test_the_everything_on_example_authenticates_keda() -> None:
    """ci/statefulset-keda-values.yaml takes SASL from a Secret: KEDA names its authentication."""
    values = yaml.safe_load((CHART / "ci" / "statefulset-keda-values.yaml").read_text())
    assert values["kafka"]["existingSecret"]
    trigger = by_kind(render(values_files=[CHART / "ci" / "statefulset-keda-values.yaml"]))[
        "ScaledObject"
    ]["spec"]["triggers"][0]
    assert trigger["authenticationRef"] == {"name": values["keda"]["authenticationRef"]}


LONG_NAME = "merchant-production-orders-button-consumer-eu-west-1a"  # 53 characters


def test_a_statefulset_name_over_52_characters_fails_the_render_naming_the_limit() -> None:
    """A StatefulSet's pods carry controller-revision-hash=<name>-<hash of up to 10 characters>,
    a label value of at most 63: over 52 characters Kubernetes creates no pod
    (kubernetes/kubernetes#64023). The chart rendered it, and the validators passed it."""
    assert len(LONG_NAME) == 53
    with pytest.raises(HelmFailedError) as failed:
        render(*REQUIRED, f"fullnameOverride={LONG_NAME}")
    message = str(failed.value)
    assert all(part in message for part in ("52 a StatefulSet", LONG_NAME, "fullnameOverride"))


def test_a_statefulset_name_of_52_characters_and_a_longer_deployment_name_render() -> None:
    """52 is the limit, and only a StatefulSet's: a Deployment's pods carry no such label."""
    (sts,) = [
        d
        for d in render(*REQUIRED, f"fullnameOverride={LONG_NAME[:52]}")
        if d["kind"] == "StatefulSet"
    ]
    assert sts["metadata"]["name"] == LONG_NAME[:52]
    docs = render(*REQUIRED, f"fullnameOverride={LONG_NAME}", "staticMembership.enabled=false")
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"] == [LONG_NAME]
