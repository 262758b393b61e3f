"""The chart's ``config:`` schema is generated from the settings; the chart's copy is current."""

from __future__ import annotations

import re

import pytest

from consumer.devtools import chart_schema
from consumer.errors import ConfigError
from consumer.settings import (
    boolean_variable_names,
    diagnose,
    guaranteed_kafka_values,
    kafka_passthrough,
    passthrough_variable,
    refused_kafka_properties,
    secret_variable_names,
    variable_names,
)


def test_the_charts_schema_is_generated_from_the_settings() -> None:
    """values.schema.json holds exactly what ``chart_schema`` renders from consumer/settings.py
    today (``python -m consumer.devtools.chart_schema --write`` after changing a setting)."""
    text = chart_schema.SCHEMA.read_text(encoding="utf-8")
    assert chart_schema.render(text) == text


def test_config_takes_every_setting_but_the_owned_the_secret_and_admin_host() -> None:
    """The typed names ``config:`` takes and those it refuses cover every setting once."""
    accepted = set(chart_schema.accepted_settings())
    refused = set(chart_schema.refused_names())
    assert accepted | (refused & variable_names()) == variable_names()
    assert not accepted & refused
    assert secret_variable_names() == {
        "BUTTON_API_KEY",
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
        "ADMIN_TEST_EVENT_TOKEN",
    }
    assert {"ADMIN_HOST", "ADMIN_PORT", "KAFKA_GROUP_INSTANCE_ID"} <= refused
    assert {"DELIVERY_DRY_RUN", "ADMIN_RECENT_DELIVERIES", "LOG_FORMAT"} <= accepted


@pytest.mark.parametrize("prop", sorted(refused_kafka_properties()))
def test_each_refused_property_is_refused_by_its_variable(prop: str) -> None:
    """The variable the schema refuses for a property is the one the service reads it from
    (and refuses)."""
    variable = passthrough_variable(prop)
    assert variable in chart_schema.refused_names()
    with pytest.raises(ConfigError, match=re.escape(f"{variable}: {prop}")):
        kafka_passthrough({variable: "x"})


def test_a_variable_names_its_property_with_underscores_doubled() -> None:
    """``passthrough_variable`` is the inverse of the service's reading of a variable."""
    variable = passthrough_variable("log_level")
    assert variable == "KAFKA_CONFIG_LOG__LEVEL"
    assert kafka_passthrough({variable: "6"}) == {"log_level": "6"}


SPELLINGS = (
    *("all", "ALL", "All", " all", "all ", "\tall\n", "-1", " -1 ", "1", "0", "-11", "alll"),
    *("true", "TRUE", " True ", "false", "1", "yes", "truee"),
    *("read_committed", "READ_COMMITTED", " read_committed", "read_uncommitted", "readXcommitted"),
    *("", " "),
)


@pytest.mark.parametrize("prop", sorted(guaranteed_kafka_values()))
@pytest.mark.parametrize("value", SPELLINGS, ids=repr)
def test_a_guaranteed_propertys_pattern_accepts_what_the_service_accepts(
    prop: str, value: str
) -> None:
    """``acks``, ``enable.idempotence``, ``isolation.level``: the schema's pattern matches a
    value exactly when the service takes it (any case, white space around it)."""
    variable = passthrough_variable(prop)
    pattern = chart_schema.config_schema()["properties"][variable]["pattern"]
    try:
        kafka_passthrough({variable: value})
    except ConfigError:
        accepted = False
    else:
        accepted = True
    assert (re.search(pattern, value) is not None) == accepted


BOOLEAN_SPELLINGS = (
    *("true", "True", "TRUE", "tRuE", "1", "yes", "YES", "on", "On", "y", "Y", "t", "T"),
    *("false", "False", "0", "no", "off", "OFF", "n", "f", "F", ""),
    *(" true", "true ", "\ttrue", " ", "2", "01", "1.0", "-1", "truee", "enabled", "maybe"),
    *("nope", "ye", "of", "tru", "ﬁ", "İ"),
)
"""(A value ending in a newline is left to tests/deploy: Python's ``$`` matches before it,
the schema's, helm's, does not.)"""


@pytest.mark.parametrize("variable", sorted(boolean_variable_names()))
@pytest.mark.parametrize("value", BOOLEAN_SPELLINGS, ids=repr)
def test_a_boolean_settings_pattern_accepts_what_the_service_accepts(
    variable: str, value: str
) -> None:
    """DELIVERY_DRY_RUN and every other boolean setting ``config:`` takes: the schema's pattern
    matches a value exactly when the service reads it (as true or false, or empty: unset)
    rather than refusing it at start (the chart let `maybe` through to a crash-looping pod)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", variable: value}
    refused = any(p.fatal and p.variable == variable for p in diagnose(env)[1])
    pattern = chart_schema.config_schema()["properties"][variable]["pattern"]
    assert (re.search(pattern, value) is not None) == (not refused)


def test_every_boolean_setting_config_takes_has_the_pattern() -> None:
    """No boolean setting ``config:`` takes is left as any string."""
    properties = chart_schema.config_schema()["properties"]
    booleans = boolean_variable_names() & set(chart_schema.accepted_settings())
    assert "DELIVERY_DRY_RUN" in booleans
    assert all("pattern" in properties[name] for name in booleans)
