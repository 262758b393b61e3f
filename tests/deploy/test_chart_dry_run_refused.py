"""A `config.DELIVERY_DRY_RUN` the service refuses fails the render, with or without KEDA.

The README's deployment table: "a value the service would refuse fails the render". The chart
read the value only where it needed the answer: the API-key guard (skipped once
`button.existingSecret` is set: the template's `and` stopped at its first empty argument) and
KEDA's consumer group. With the Quickstart's values (an existing Secret, no KEDA) `maybe`
rendered into the ConfigMap, and every pod then stopped at start with a configuration error.
Now the schema refuses it (the pattern of every boolean setting, generated from the settings),
and the template judges it on every render too, whatever the other values.
"""

from __future__ import annotations

import pytest

from consumer.errors import ConfigError
from consumer.settings import Settings
from tests.deploy.conftest import HelmFailedError, render

QUICKSTART = (
    "kafka.bootstrapServers=kafka-0.kafka:9092",
    "kafka.partitions=12",
    "button.existingSecret=button-api-key",
    "image.repository=registry.example.com/button-consumer",
    "image.tag=0.1.0",
)
REFUSED = ["maybe", "2", "enabled"]


def _refused_by_the_service(value: str) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", "DELIVERY_DRY_RUN": value}
    with pytest.raises(ConfigError):
        Settings.from_env(env)


@pytest.mark.parametrize("value", REFUSED)
def test_a_dry_run_value_the_service_refuses_fails_the_quickstart_render(value: str) -> None:
    """The service refuses the value (exit 2 at start); the render must refuse it too, naming
    the key, rather than ship a ConfigMap holding it (observed: it rendered
    `DELIVERY_DRY_RUN: "maybe"`)."""
    _refused_by_the_service(value)

    with pytest.raises(HelmFailedError, match=r"/config/DELIVERY_DRY_RUN'"):
        render(*QUICKSTART, set_strings=[f"config.DELIVERY_DRY_RUN={value}"])


@pytest.mark.parametrize("value", REFUSED)
def test_the_template_judges_the_dry_run_whatever_the_other_values(value: str) -> None:
    """Without the schema (`--skip-schema-validation`) the template's own judgement still runs
    with the Quickstart's values: it does not hang on `button.existingSecret` being empty or
    KEDA being on (observed: the render passed)."""
    _refused_by_the_service(value)

    with pytest.raises(HelmFailedError, match=r"config\.DELIVERY_DRY_RUN .* is not a boolean"):
        render(
            *QUICKSTART,
            set_strings=[f"config.DELIVERY_DRY_RUN={value}"],
            flags=["--skip-schema-validation"],
        )
