"""The vendored list of librdkafka's properties is the bundled librdkafka's, and the service and
the chart refuse exactly the ``KAFKA_CONFIG_*`` names it does not take."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from consumer.devtools import chart_schema, vendor_librdkafka
from consumer.errors import ConfigError
from consumer.librdkafka_properties import DEDICATED_API, LIBRDKAFKA_VERSION, PROPERTIES
from consumer.settings import (
    guaranteed_kafka_values,
    kafka_passthrough,
    passthrough_variable,
    settable_kafka_properties,
)

NO_SUCH = "No such configuration property"

# A misspelling and the Java client's names (fetch.wait.max.ms is librdkafka's; a producer's
# memory, deserializers).
UNKNOWN = ("fetch.max.bytess", "fetch.max.wait.ms", "buffer.memory", "key.deserializer")


def _librdkafka_refusal(config: dict[str, str]) -> str | None:
    """The error creating a producer, then a consumer, with ``config`` raises, ``None`` when
    both are created (no broker is contacted)."""
    try:
        Producer(dict(config))
        Consumer({**config, "group.id": "properties-test"}).close()
    except (KafkaException, TypeError, ValueError) as exc:
        return str(exc)
    return None


def test_the_vendored_list_is_the_bundled_librdkafkas() -> None:
    """consumer/librdkafka_properties.py is what the installed librdkafka lists today
    (``python -m consumer.devtools.vendor_librdkafka --write`` after a new confluent-kafka)."""
    assert vendor_librdkafka.installed_version() == LIBRDKAFKA_VERSION
    assert vendor_librdkafka.parse(vendor_librdkafka.properties_table()) == PROPERTIES
    text = vendor_librdkafka.MODULE.read_text(encoding="utf-8")
    assert vendor_librdkafka.render(LIBRDKAFKA_VERSION, PROPERTIES) == text


def test_every_settable_vendored_property_is_known_to_librdkafka() -> None:
    """Each property the service and the chart take: librdkafka's clients know its name (a
    value they refuse, ``x`` for a number, is a refusal of the value, not of the name)."""
    refused = {
        prop: error
        for prop in settable_kafka_properties()
        if (error := _librdkafka_refusal({prop: "x"})) is not None and NO_SUCH in error
    }
    assert refused == {}
    assert len(settable_kafka_properties()) > 150


def test_a_callback_property_is_refused_by_the_clients_and_the_service() -> None:
    """Callbacks and pointers (``error_cb``, ``log_cb``, ``opaque``...): a client refuses any
    value for them, so the service refuses their variables by name."""
    dedicated = sorted(prop for prop, kind in PROPERTIES.items() if kind == DEDICATED_API)
    assert {"error_cb", "log_cb", "opaque", "rebalance_cb"} <= set(dedicated)
    for prop in dedicated:
        assert _librdkafka_refusal({prop: "x"}) is not None, prop
        variable = passthrough_variable(prop)
        with pytest.raises(ConfigError, match=re.escape(f"{variable}: {prop} is set through")):
            kafka_passthrough({variable: "x"})


def _config_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(chart_schema.SCHEMA.read_text(encoding="utf-8"))
    return dict(schema["properties"]["config"])


@pytest.mark.parametrize("prop", UNKNOWN)
def test_a_name_librdkafka_does_not_know_is_refused_by_it_the_service_and_the_chart(
    prop: str,
) -> None:
    """librdkafka refuses it when a client is created; the service refuses its variable before
    (naming both), and the chart's ``config:`` schema refuses the key."""
    variable = passthrough_variable(prop)
    error = _librdkafka_refusal({prop: "1"})
    assert error is not None
    assert NO_SUCH in error
    with pytest.raises(ConfigError, match=re.escape(f'{variable}: {NO_SUCH}: "{prop}"')):
        kafka_passthrough({variable: "1"})
    with pytest.raises(jsonschema.ValidationError, match=re.escape(variable)):
        jsonschema.validate({variable: "1"}, _config_schema())


def test_a_misspelling_is_refused_with_the_closest_property() -> None:
    """The refusal suggests the property librdkafka knows (as ``check`` does for settings)."""
    with pytest.raises(ConfigError, match=re.escape("(did you mean fetch.wait.max.ms?)")):
        kafka_passthrough({"KAFKA_CONFIG_FETCH_MAX_WAIT_MS": "100"})


def test_the_chart_takes_every_settable_property_but_the_refused_and_the_credentials() -> None:
    """Each settable property's variable is in the schema's ``config:``, or refused by name
    (the service's own, a typed setting's, a credential)."""
    schema = _config_schema()
    for prop in settable_kafka_properties():
        variable = passthrough_variable(prop)
        if variable in schema["properties"]:
            accepted = guaranteed_kafka_values().get(prop, frozenset({"1"}))
            jsonschema.validate({variable: min(accepted)}, schema)
        else:
            assert variable in chart_schema.refused_names() or re.match(
                chart_schema.KAFKA_CREDENTIALS, variable
            ), variable
