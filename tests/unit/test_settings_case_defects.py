"""A setting's name in another letter case is refused at start, never ignored.

``Settings.from_env`` reads variables by their exact upper-case name, and the near-miss rule
(``diagnose``/``unknown_variables``) only looked at names starting with a setting's upper-case
prefix: ``delivery_dry_run=true`` was neither read as DELIVERY_DRY_RUN nor refused, and the run
was live, sending real orders, without a word. Every name whose upper-case form starts with a
setting's prefix (``KAFKA_``, ``KAFKA_CONFIG_``, ``BUTTON_``, ...) but is written in another
case is now refused (``run`` and every other command exit 2, ``check`` fails it), naming the
variable and the right name; other lower-case variables (``http_proxy``) are none of its
business.
"""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from consumer.settings import Settings, diagnose

LIVE = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "BUTTON_API_KEY": "sk-live-0123456789abcdef"}
UPPER_CASE_ONLY = "setting names are upper case: one in another letter case is refused, not read"


@pytest.mark.parametrize("variable", ["delivery_dry_run", "Delivery_Dry_Run"])
def test_a_dry_run_asked_for_in_another_letter_case_is_never_a_silent_live_run(
    variable: str,
) -> None:
    """Either the run is a dry run, or the start is refused naming the variable."""
    refusal = ""
    try:
        dry_run = Settings.from_env({**LIVE, variable: "true"}).delivery.dry_run
    except ConfigError as refused:
        refusal, dry_run = str(refused), False
    assert dry_run or variable in refusal


@pytest.mark.parametrize(
    ("variable", "right", "extra"),
    [
        ("delivery_dry_run", "DELIVERY_DRY_RUN", {}),
        ("Delivery_Dry_Run", "DELIVERY_DRY_RUN", {}),
        ("DELIVERY_dry_run", "DELIVERY_DRY_RUN", {}),
        # The same value under both names is refused too: two names for one setting.
        ("delivery_dry_run", "DELIVERY_DRY_RUN", {"DELIVERY_DRY_RUN": "true"}),
        ("button_api_key", "BUTTON_API_KEY", {}),
        ("kafka_topic", "KAFKA_TOPIC", {}),
        ("schema_registry_url", "SCHEMA_REGISTRY_URL", {}),
        ("mapping_max_orders_per_profile", "MAPPING_MAX_ORDERS_PER_PROFILE", {}),
        ("admin_port", "ADMIN_PORT", {}),
        ("log_level", "LOG_LEVEL", {}),
        # librdkafka's properties: the variable that sets the property, in upper case.
        ("kafka_config_sasl_mechanism", "KAFKA_CONFIG_SASL_MECHANISM", {}),
        ("KAFKA_CONFIG_sasl_mechanism", "KAFKA_CONFIG_SASL_MECHANISM", {}),
        ("KAFKA_CONFIG_sasl.mechanism", "KAFKA_CONFIG_SASL_MECHANISM", {}),
        ("kafka_config_log__level", "KAFKA_CONFIG_LOG__LEVEL", {}),
        # A setting's prefix but no setting in any case: the closest setting, as for a typo.
        ("log_levle", "LOG_LEVEL", {}),
    ],
)
def test_a_setting_in_another_letter_case_is_refused_naming_the_right_name(
    variable: str, right: str, extra: dict[str, str]
) -> None:
    """Every section's names and ``KAFKA_CONFIG_*``: exit 2 at start (``ConfigError``) with
    one line naming the variable and the name to use; ``check`` fails it (``diagnose``)."""
    env = {**LIVE, **extra, variable: "PLAIN"}

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)

    message = f"is not a setting of this service (did you mean {right}?): {UPPER_CASE_ONLY}"
    assert str(raised.value) == f"{variable}: {message}"
    problems = diagnose(env)[1]
    assert [(p.variable, p.message, p.fatal) for p in problems] == [(variable, message, True)]


def test_a_name_in_another_letter_case_is_refused_beside_invalid_settings() -> None:
    """With another setting invalid too, the refusal names both, as ``check`` does."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**LIVE, "LOG_LEVEL": "verbose", "delivery_dry_run": "true"})

    refusal = str(raised.value)
    named = "delivery_dry_run: is not a setting of this service (did you mean DELIVERY_DRY_RUN?)"
    assert "LOG_LEVEL: " in refusal
    assert named in refusal


@pytest.mark.parametrize(
    "variable",
    ["http_proxy", "no_proxy", "https_proxy", "home", "path", "kafka", "logname", "lc_all"],
)
def test_other_lower_case_variables_are_no_concern_of_the_service(variable: str) -> None:
    """A lower-case variable whose upper-case form has no setting's prefix starts as before,
    without a warning."""
    env = {**LIVE, variable: "true"}

    assert Settings.from_env(env).delivery.dry_run is False
    assert diagnose(env)[1] == []
