"""Renders the Helm chart's ``config:`` schema (``values.schema.json``) from the settings.

``config:`` takes, as strings, what the service would accept and run with in the pod: every
setting of ``consumer.settings`` but those the chart sets itself from typed values
(``CHART_OWNED``), the secrets (``SecretStr`` settings: a ConfigMap is no place for them) and
those the pod cannot run with (``POD_REFUSED``); and the ``KAFKA_CONFIG_<PROPERTY>`` of every
property librdkafka takes as a value (``settable_kafka_properties``: the vendored list of the
bundled librdkafka) but those the service refuses (``refused_kafka_properties``), a credential,
or a value that weakens at-least-once delivery. A boolean setting (``DELIVERY_DRY_RUN``...)
takes only the values the service reads as true or false (``BOOLEAN_WORDS``) or empty. Any
other name, or another value of a boolean setting, fails
``helm template``/``helm install`` with the name in helm's message, instead of being ignored by
the service or stopping the pod at start (a misspelt or unknown librdkafka property).

The lists come from ``consumer.settings``, so the chart cannot drift from the service:
``tests/unit/test_chart_schema.py`` checks the schema's copy, and ``tests/deploy`` checks
``CHART_OWNED`` against what the templates render. Usage::

    python -m consumer.devtools.chart_schema            # print the config schema
    python -m consumer.devtools.chart_schema --write    # rewrite it in values.schema.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from consumer.settings import (
    BOOLEAN_WORDS,
    boolean_variable_names,
    guaranteed_kafka_values,
    passthrough_variable,
    refused_kafka_properties,
    secret_variable_names,
    settable_kafka_properties,
    variable_names,
)

SCHEMA = Path(__file__).resolve().parents[2] / "deploy/helm/button-consumer/values.schema.json"

CHART_OWNED: dict[str, str] = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrapServers",
    "KAFKA_TOPIC": "kafka.topic",
    "KAFKA_GROUP_ID": "kafka.groupId",
    "KAFKA_DLQ_TOPIC": "kafka.dlqTopic",
    "KAFKA_PROFILE_TOPIC": "kafka.profileTopic",
    "KAFKA_GROUP_PROTOCOL": "kafka.groupProtocol",
    "KAFKA_AUTO_OFFSET_RESET": "kafka.autoOffsetReset",
    "KAFKA_GROUP_INSTANCE_ID": "staticMembership.enabled (the pod's name)",
    "SCHEMA_REGISTRY_URL": "schemaRegistry.url",
    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "schemaRegistry.existingSecret",
    "BUTTON_API_KEY": "button.existingSecret",
    "BUTTON_BASE_URL": "button.baseUrl",
    "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "shutdown.timeoutSeconds",
    "ADMIN_PORT": "admin.port",
}
"""The variables the templates set from typed values (the ConfigMap's own keys and the
container's ``env``), with the value that sets each."""

POD_REFUSED: dict[str, str] = {
    "ADMIN_HOST": "the kubelet's probes and Prometheus reach the admin server at the pod's "
    "address: it listens on every interface (0.0.0.0)",
    "DELIVERY_STOP_WHEN_IDLE_SECONDS": "a batch run's setting (demo, bench): a pod that stops when "
    "idle is restarted by Kubernetes, again and again",
}
"""Settings the service accepts but a pod of the chart cannot run with, and why."""

KAFKA_CREDENTIALS = (
    "^KAFKA_CONFIG_.*(PASSWORD|PASSPHRASE|SECRET|USER_INFO|SSL_KEY_PEM|PRIVATE_KEY_PEM"
    "|OAUTHBEARER_CONFIG|TOKEN)"
)
"""librdkafka properties whose values are credentials: ``kafka.existingSecret``, not a
ConfigMap."""

# ASCII white space: the service compares a guaranteed property's value stripped (``str.strip``,
# which also removes Unicode spaces; the chart refuses a value padded with those, harmlessly).
_SPACE = r"\t\n\v\f\r "


def accepted_settings() -> list[str]:
    """The typed settings ``config:`` takes, in name order."""
    refused = set(CHART_OWNED) | set(POD_REFUSED) | secret_variable_names()
    return sorted(variable_names() - refused)


def passthrough_names() -> list[str]:
    """The ``KAFKA_CONFIG_*`` variables ``config:`` takes as any string, in name order: every
    property librdkafka takes as a value, but those the service refuses or guards and the
    credentials."""
    refused = set(refused_kafka_properties()) | set(guaranteed_kafka_values())
    credential = re.compile(KAFKA_CREDENTIALS)
    variables = (
        passthrough_variable(prop) for prop in settable_kafka_properties() if prop not in refused
    )
    return sorted(v for v in variables if credential.match(v) is None)


def refused_names() -> list[str]:
    """The names ``config:`` refuses by name (``invalid propertyName``), in name order: the
    settings the chart owns, the secrets, those the pod cannot run with, and the
    ``KAFKA_CONFIG_*`` variable of every property the service refuses."""
    names = set(CHART_OWNED) | set(POD_REFUSED) | secret_variable_names()
    names.update(passthrough_variable(prop) for prop in refused_kafka_properties())
    return sorted(names)


def _any_case(word: str) -> str:
    """A regular expression matching ``word`` in any case (as ``str.lower`` compares)."""
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\" + c if c in ".+*?()[]{}|^$\\" else c)
        for c in word
    )


def _value_pattern(accepted: frozenset[str]) -> str:
    """The values the service accepts for a guaranteed property: one of ``accepted`` in any
    case, with any surrounding white space."""
    words = "|".join(_any_case(word) for word in sorted(accepted))
    return f"^[{_SPACE}]*({words})[{_SPACE}]*$"


def _boolean_pattern() -> str:
    """The values the service takes for a boolean setting: one of ``BOOLEAN_WORDS`` in any
    case, or empty (unset: the default); nothing around it (pydantic strips nothing)."""
    words = "|".join(_any_case(word) for word in sorted(BOOLEAN_WORDS[True] | BOOLEAN_WORDS[False]))
    return f"^({words})?$"


def config_schema() -> dict[str, Any]:
    """The schema of ``config:``."""
    names = accepted_settings() + passthrough_names()
    properties: dict[str, Any] = {name: {"type": "string"} for name in names}
    for name in boolean_variable_names() & set(names):
        properties[name] = {"type": "string", "pattern": _boolean_pattern()}
    for prop, accepted in guaranteed_kafka_values().items():
        properties[passthrough_variable(prop)] = {
            "type": "string",
            "pattern": _value_pattern(accepted),
        }
    return {
        "type": "object",
        "description": (
            "Other settings (README's configuration table), as strings: generated by "
            "`python -m consumer.devtools.chart_schema --write` from consumer/settings.py. "
            "Settings the chart owns, secrets, ADMIN_HOST and the KAFKA_CONFIG_* properties "
            "the service refuses are refused; so is any name the service does not read, "
            "any KAFKA_CONFIG_* property librdkafka does not know, and a boolean setting's "
            "value the service does not read as true or false."
        ),
        "properties": dict(sorted(properties.items())),
        "propertyNames": {
            "not": {"anyOf": [{"enum": refused_names()}, {"pattern": KAFKA_CREDENTIALS}]}
        },
        "additionalProperties": False,
    }


def dump(schema: dict[str, Any]) -> str:
    """``values.schema.json``'s text for ``schema``."""
    return json.dumps(schema, indent=2) + "\n"


def render(text: str) -> str:
    """``values.schema.json``'s ``text`` with its ``config`` schema replaced by
    ``config_schema()``."""
    schema = json.loads(text)
    schema["properties"]["config"] = config_schema()
    return dump(schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write", action="store_true", help="rewrite the config schema in values.schema.json"
    )
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(json.dumps(config_schema(), indent=2) + "\n")
        return 0
    SCHEMA.write_text(render(SCHEMA.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
