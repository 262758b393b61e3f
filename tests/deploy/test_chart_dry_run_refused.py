"""A `config.DELIVERY_DRY_RUN` the service refuses fails the render, with or without KEDA.

The README's deployment table: "a value the service would refuse fails the render". The chart
reads the value only where it needs the answer: the API-key guard (skipped once
`button.existingSecret` is set: the template's `and` stops at its first empty argument) and
KEDA's consumer group. With the Quickstart's values (an existing Secret, no KEDA) `maybe`
renders into the ConfigMap, and every pod then stops at start with a configuration error.
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


@pytest.mark.xfail(
    strict=True,
    reason=(
        "the chart judges config.DELIVERY_DRY_RUN only without button.existingSecret or with "
        "KEDA: with the Quickstart's values a refused value renders and the pods crash-loop"
    ),
)
@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_dry_run_value_the_service_refuses_fails_the_quickstart_render(value: str) -> None:
    """The service refuses the value (exit 2 at start); the render must refuse it too, rather
    than ship a ConfigMap holding it (observed: it renders `DELIVERY_DRY_RUN: "maybe"`)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", "DELIVERY_DRY_RUN": value}
    with pytest.raises(ConfigError):
        Settings.from_env(env)

    with pytest.raises(HelmFailedError, match=r"config\.DELIVERY_DRY_RUN .* is not a boolean"):
        render(*QUICKSTART, set_strings=[f"config.DELIVERY_DRY_RUN={value}"])
