"""End-to-end fixtures: the service, in this process, against the real broker and the sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from consumer.sandbox.testing import SandboxHandle, run_sandbox
from consumer.settings import Settings
from tests.e2e.harness import ServiceRunner


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=("sk-e2e",)) as handle:
        yield handle


@pytest.fixture
def service_settings(
    kafka_bootstrap: str, unique_name: Callable[[str], str], sandbox: SandboxHandle
) -> Callable[..., Settings]:
    """``service_settings(topic, **overrides)``: settings for one test, unique group and topics."""

    def make(topic: str, **overrides: str) -> Settings:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": unique_name("group"),
            "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
            "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
            "BUTTON_API_KEY": sandbox.api_key,
            "BUTTON_BASE_URL": sandbox.base_url,
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": "0",
            "DELIVERY_RETRY_BASE_DELAY_SECONDS": "0.05",
            "DELIVERY_RETRY_MAX_DELAY_SECONDS": "1",
            "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "10",
            "LOG_LEVEL": "warning",
            **overrides,
        }
        return Settings.from_env(env)

    return make


@pytest.fixture
def start_service() -> Iterator[Callable[[Settings], ServiceRunner]]:
    runners: list[ServiceRunner] = []

    def start(settings: Settings) -> ServiceRunner:
        runner = ServiceRunner(settings).start()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.stop()
