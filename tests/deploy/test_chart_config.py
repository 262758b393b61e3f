"""The chart's ``config:``: it takes exactly what the service would accept and run with in a pod.

What the pod runs with is decided here from the service itself (``consumer.settings``) and from
what the templates render, not from the schema's lists, so a schema that drifts from either
fails.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, Producer

from consumer.devtools.chart_schema import CHART_OWNED, POD_REFUSED
from consumer.errors import ConfigError
from consumer.settings import (
    _SECTIONS,
    Settings,
    boolean_variable_names,
    diagnose,
    guaranteed_kafka_values,
    kafka_passthrough,
    passthrough_variable,
    refused_kafka_properties,
    secret_variable_names,
    unknown_variables,
    variable_names,
)
from tests.deploy.conftest import CHART, REQUIRED, HelmFailedError, by_kind, render

PASSTHROUGH = "KAFKA_CONFIG_"
# Parts of the librdkafka properties whose values are credentials (README: a ConfigMap is no
# place for them). ``ssl.key.location`` is a path, not the key.
CREDENTIALS = (
    "password",
    "passphrase",
    "secret",
    "token",
    "user.info",
    "ssl.key.pem",
    "private.key.pem",
    "oauthbearer.config",
)


@cache
def chart_owned() -> frozenset[str]:
    """The variables the templates set themselves, every optional one on: the ConfigMap's own
    keys (not those of values.yaml's ``config:``) and the container's ``env``."""
    kinds = by_kind(
        render(
            *REQUIRED,
            "schemaRegistry.url=http://registry:8081",
            "schemaRegistry.existingSecret=registry-auth",
            "staticMembership.enabled=true",
        )
    )
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["config"]
    container = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    configmap = set(kinds["ConfigMap"]["data"]) - set(defaults)
    return frozenset(configmap | {e["name"] for e in container["env"]})


def _defaults() -> dict[str, str]:
    """Every typed setting with its default as a string (empty when it has none: unset)."""
    values: dict[str, str] = {}
    for section in _SECTIONS.values():
        prefix = str(section.model_config.get("env_prefix", ""))
        for field, info in section.model_fields.items():
            if field == "config":
                continue
            default = info.get_default(call_default_factory=False)
            values[prefix + field.upper()] = "" if default is None else str(default)
    return values


def _pod_runs_with(name: str, value: str) -> bool:
    """Whether a pod of the chart runs with ``config.<name>: <value>``, by the service's rules:
    not a variable the chart sets itself, nor a secret or a credential property (a ConfigMap is
    no place for them), nor one a pod cannot run with (``POD_REFUSED``: ADMIN_HOST, a batch
    run's idle stop); a setting the service
    reads, or a ``KAFKA_CONFIG_*`` property it passes through (upper case, as the chart's keys
    are)."""
    if name in chart_owned() or name in secret_variable_names() or name in POD_REFUSED:
        return False
    if name.startswith(PASSTHROUGH) and len(name) > len(PASSTHROUGH) and name.isupper():
        prop = name[len(PASSTHROUGH) :].lower().replace("__", "\0").replace("_", ".")
        if any(part in prop.replace("\0", "_") for part in CREDENTIALS):
            return False  # kafka.existingSecret, not a ConfigMap
        try:
            config = kafka_passthrough({name: value})
        except ConfigError:
            return False
        return _librdkafka_takes(config)
    return name in variable_names() and _service_takes(name, value)


def _service_takes(name: str, value: str) -> bool:
    """Whether the service takes ``value`` for the typed setting ``name`` (``diagnose`` finds
    no fatal problem naming it; one of another setting it needs, such as the token that
    ``ADMIN_TEST_EVENT_ENABLED`` asks for, comes from a Secret)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", name: value}
    return not any(p.fatal and p.variable == name for p in diagnose(env)[1])


def _librdkafka_takes(config: dict[str, str]) -> bool:
    """Whether librdkafka's clients are created with ``config`` (as the pod creates its own at
    start, and exits 2 when one is refused): a producer and a consumer, without a broker."""
    try:
        Producer(dict(config))
        Consumer({**config, "group.id": "chart-config"}).close()
    except (KafkaException, TypeError, ValueError):
        return False  # no such property, or a callback's (set through the API only)
    return True


def _names(key: str, message: str) -> bool:
    """Whether helm's schema error names ``key``: a refused or unknown name (``'KEY'``), or a
    refused value (at ``'/config/KEY'``)."""
    return f"'{key}'" in message or f"/config/{key}'" in message


def _render_config(tmp_path: Path, config: dict[str, str], *sets: str) -> list[dict[str, Any]]:
    values = tmp_path / "config-values.yaml"
    # Every value double-quoted: helm's YAML reads a bare `y` or `n` as a boolean (PyYAML's
    # does not, so it leaves them bare), where config: takes strings.
    values.write_text(yaml.safe_dump({"config": config}, default_style='"'), encoding="utf-8")
    return render(*REQUIRED, *sets, values_files=[values])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # The service logs unknown_setting (did you mean DELIVERY_DRY_RUN?) and runs live.
        ("DELIVERY_DRYRUN", "true"),
        # The service exits 2: set with KAFKA_GROUP_INSTANCE_ID, or reserved, or weakening.
        ("KAFKA_CONFIG_GROUP_INSTANCE_ID", "pod-0"),
        ("KAFKA_CONFIG_ACKS", "1"),
        ("KAFKA_CONFIG_GROUP_ID", "orders"),
        # The service exits 2: librdkafka has no such property (a misspelling, the Java client's
        # names for fetch.wait.max.ms and a producer's memory), or one set through its API only.
        ("KAFKA_CONFIG_FETCH_MAX_BYTESS", "1048576"),
        ("KAFKA_CONFIG_FETCH_MAX_WAIT_MS", "100"),
        ("KAFKA_CONFIG_BUFFER_MEMORY", "33554432"),
        ("KAFKA_CONFIG_ERROR__CB", "x"),
        # The service answers on loopback only: the kubelet's probes fail.
        ("ADMIN_HOST", "127.0.0.1"),
        # The service stops when idle: Kubernetes restarts it, again and again.
        ("DELIVERY_STOP_WHEN_IDLE_SECONDS", "30"),
    ],
)
def test_a_config_key_the_pod_cannot_run_with_fails_the_render_naming_it(
    key: str, value: str
) -> None:
    """The tester's `helm template ... --set-string config.<key>=<value>`: the render fails and
    helm's message names the key, instead of a pod that runs live or crash-loops."""
    with pytest.raises(HelmFailedError) as failed:
        render(
            "kafka.bootstrapServers=k:9092",
            "button.existingSecret=button-api-key",
            set_strings=[f"config.{key}={value}"],
        )
    assert _names(key, str(failed.value))
    assert not _pod_runs_with(key, value)


def test_every_setting_the_pod_runs_with_is_accepted_together(tmp_path: Path) -> None:
    """Every typed setting the chart does not set itself (its default, as a string) and
    ``KAFKA_CONFIG_*`` properties, the guaranteed ones at the values the service accepts: the
    render passes, and the ConfigMap passes the service's validation with no unknown name."""
    typed = {
        name: value
        for name, value in _defaults().items()
        if name not in chart_owned()
        and name not in secret_variable_names()
        and name not in POD_REFUSED
    }
    passthrough = {
        "KAFKA_CONFIG_SECURITY_PROTOCOL": "PLAINTEXT",
        "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT_ID": "client",
        "KAFKA_CONFIG_LOG__LEVEL": "6",
        "KAFKA_CONFIG_LINGER_MS": "10",
        "KAFKA_CONFIG_SSL_KEY_LOCATION": "/etc/kafka/client.key",
        "KAFKA_CONFIG_ACKS": "all",
        "KAFKA_CONFIG_ENABLE_IDEMPOTENCE": "True",
        "KAFKA_CONFIG_ISOLATION_LEVEL": " read_committed",
    }
    assert set(typed) >= {"DELIVERY_DRY_RUN", "DELIVERY_MAX_IN_FLIGHT", "LOG_FORMAT"}

    data = by_kind(_render_config(tmp_path, {**typed, **passthrough}))["ConfigMap"]["data"]

    assert data.items() >= {**typed, **passthrough}.items()
    settings = Settings.from_env({**data, "BUTTON_API_KEY": "from-the-secret"})
    assert settings.kafka.config["acks"] == "all"
    assert unknown_variables(data) == []
    assert _librdkafka_takes(settings.kafka.config)


_EXAMPLES = {f"BUTTON_APPLICATION_ID_{p}": "app-0123abcd" for p in ("IOS", "ANDROID", "WEB")}
"""A value the service takes for a setting without a default, where ``1`` is not one."""


def _candidates() -> list[tuple[str, str]]:
    """Every setting, every boolean one at values the service takes and refuses, the
    ``KAFKA_CONFIG_*`` variable of every property the service refuses or guards, and names the
    service does not read (misspellings, Kubernetes' service
    variables), each with a value."""
    names = [(name, value or _EXAMPLES.get(name, "1")) for name, value in _defaults().items()]
    names.sort()
    names += [(passthrough_variable(prop), "x") for prop in refused_kafka_properties()]
    for prop, accepted in guaranteed_kafka_values().items():
        names += [(passthrough_variable(prop), value) for value in sorted(accepted)]
        names += [(passthrough_variable(prop), value.upper()) for value in sorted(accepted)]
        names += [(passthrough_variable(prop), value) for value in ("1", "0", "false", "none")]
    for name in sorted(boolean_variable_names()):
        # The service reads a boolean as pydantic does: these it takes, these it refuses.
        names += [(name, value) for value in ("TRUE", "Off", "y", "0", "")]
        names += [(name, value) for value in ("maybe", "2", "enabled", " true", "on\n", "01")]
    names += [
        ("DELIVERY_DRYRUN", "true"),
        ("DELIVERY_DRY_RUNS", "true"),
        ("KAFKA_TOPICS", "orders"),
        ("ADMIN_HOSTS", "0.0.0.0"),
        ("LOG_LEVELS", "debug"),
        ("KAFKA_PORT", "tcp://10.0.0.1:9092"),
        ("KAFKA_CONFIG_", "x"),
        ("KAFKA_CONFIG_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_CONFIG_SASL_PASSWORD", "p"),
        ("KAFKA_CONFIG_METADATA_MAX_AGE_MS", "60000"),
        ("KAFKA_CONFIG_LOG__LEVEL", "6"),
        ("KAFKA_CONFIG_MAX_POLL_RECORDS", "500"),
        ("KAFKA_CONFIG_FETCH_MAX_BYTESS", "1048576"),
        ("KAFKA_CONFIG_SECURITY_PROTOCAL", "SASL_SSL"),
        ("KAFKA_CONFIG_KEY_DESERIALIZER", "x"),
        ("KAFKA_CONFIG_LOGGER", "x"),
        ("KAFKA_CONFIG_STATS__CB", "x"),
        ("KAFKA_CONFIG_SSL__CA", "x"),
    ]
    return names


def test_config_accepts_a_name_exactly_when_the_pod_runs_with_it(tmp_path: Path) -> None:
    """Each candidate alone in ``config:``: the render passes exactly when the pod would run
    with it; a refusal names the key."""
    disagreements: list[str] = []
    for name, value in _candidates():
        expected = _pod_runs_with(name, value)
        try:
            _render_config(tmp_path, {name: value})
        except HelmFailedError as failed:
            if expected:
                disagreements.append(f"{name}={value!r} refused: {failed}")
            elif not _names(name, str(failed)):
                disagreements.append(f"{name}={value!r} refused without naming it: {failed}")
        else:
            if not expected:
                disagreements.append(f"{name}={value!r} accepted")
    assert disagreements == []


def test_the_templates_set_exactly_the_variables_the_schema_calls_owned() -> None:
    """The schema's generator lists the variables the chart sets itself; the templates agree."""
    assert set(CHART_OWNED) == chart_owned()
