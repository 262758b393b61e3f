"""The composition root refuses settings it cannot run safely."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry

from consumer.bootstrap import build, concurrency_limiter, freeze_startup_heap
from consumer.errors import ConfigError
from consumer.settings import Settings


def test_a_live_run_without_an_api_key_is_a_configuration_error() -> None:
    """Settings read without requiring the key (as replay-dlq reads them) cannot build a live
    service: build() never falls back to the dry-run Button, which reports every outcome as
    delivered."""
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092"}, require_api_key=False)

    with pytest.raises(ConfigError) as raised:
        build(settings, CollectorRegistry())

    assert str(raised.value) == "BUTTON_API_KEY is required (or set DELIVERY_DRY_RUN=true)"


def test_a_dry_run_needs_no_api_key() -> None:
    """DELIVERY_DRY_RUN=true builds without a key: nothing is sent to Button."""
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "DELIVERY_DRY_RUN": "true"})

    service = build(settings, CollectorRegistry())

    assert type(service.button).__name__ == "_DryRunButton"


@pytest.mark.parametrize(
    ("extra", "capacity"),
    [
        ({}, 10),  # libcurl's transport caps its requests: 2 more wait ready in it
        ({"BUTTON_HTTP_CLIENT": "aiohttp"}, 8),  # aiohttp's cannot: the limiter bounds them
        ({"DELIVERY_DRY_RUN": "true"}, 8),  # no transport at all
    ],
)
def test_requests_are_ready_beyond_the_limit_only_for_a_transport_that_caps_them(
    extra: dict[str, str], capacity: int
) -> None:
    """Permits beyond the concurrency limit are granted only when the transport itself keeps
    Button's requests in flight to the limit; otherwise Button would see them all."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "BUTTON_API_KEY": "sk-x"}
    settings = Settings.from_env(env | {"DELIVERY_CONCURRENCY_MIN": "8"} | extra)

    limiter = concurrency_limiter(settings.delivery, build(settings, CollectorRegistry()).button)

    assert (limiter.limit, limiter.capacity) == (8, capacity)


def test_the_startup_heap_is_frozen_and_later_objects_are_still_collected() -> None:
    """What exists when the service is built is out of the collector's scans; garbage made
    afterwards (a reference cycle) is still collected."""
    before = gc.get_freeze_count()
    try:
        built = [object() for _ in range(10)]
        frozen = freeze_startup_heap()
        assert frozen >= before + len(built)
        assert frozen == gc.get_freeze_count()

        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
