"""The composition root refuses settings it cannot run safely."""

from __future__ import annotations

import asyncio
import gc

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from consumer import bootstrap
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.http_transport import TransportRequest, TransportResponse
from consumer.bootstrap import (
    _Priority,
    build,
    concurrency_limiter,
    freeze_startup_heap,
    hold_while_closed,
)
from consumer.domain.button_wire import create_request
from consumer.engine.concurrency import PauseGate
from consumer.errors import BrokerError, ConfigError
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


class CappingTransport:
    """A transport that says it caps its requests, and keeps what it is asked to do."""

    def __init__(self) -> None:
        self.holds: list[bool] = []
        self.sent: list[TransportRequest] = []

    async def send(self, request: TransportRequest) -> TransportResponse:
        self.sent.append(request)
        return TransportResponse(200, {}, b'{"meta": {"status": "ok"}}')

    def set_concurrency(self, limit: int | None) -> bool:
        return True

    def hold(self, held: bool) -> bool:
        self.holds.append(held)
        return True

    async def aclose(self) -> None:
        return None


def test_the_waiting_requests_are_held_while_either_gate_is_closed() -> None:
    """The auth gate and the circuit breaker each hold what waits in the transport; it goes
    again only once both are open."""
    transport = CappingTransport()
    gate, breaker = PauseGate(), PauseGate()
    hold_while_closed(ButtonClient("sk-x", transport=transport), gate, breaker)

    gate.close("http_401")
    breaker.close("http_429")
    gate.open()
    breaker.open()

    assert transport.holds == [True, True, True, False]


def test_an_operators_test_event_is_sent_with_priority() -> None:
    """``POST /test-event`` with send goes out at once, ahead of the requests waiting in the
    transport and whatever holds them (the gates may be closed: that is when one tests)."""
    transport = CappingTransport()
    tester = _Priority(ButtonClient("sk-x", transport=transport))

    outcome = asyncio.run(tester.send(create_request("ORD-1", {"order_id": "ORD-1"})))

    assert outcome.ok
    assert [request.priority for request in transport.sent] == [True]


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


def test_brokers_that_do_not_answer_at_start_are_named_by_their_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run`` against a closed port stops with a ``BrokerError`` (logged as
    ``stopped_on_error``) naming the address and KAFKA_BOOTSTRAP_SERVERS, not with
    librdkafka's raw exception."""
    monkeypatch.setattr(bootstrap, "METADATA_TIMEOUT", 1.0)
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DELIVERY_DRY_RUN": "true"}
    )

    with pytest.raises(BrokerError) as raised:
        bootstrap.prepare_topics(settings, create=True)

    assert str(raised.value).startswith(
        "cannot reach Kafka at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS) within 1 s: "
    )


def test_a_misspelt_setting_is_a_warning_when_the_service_starts() -> None:
    """``run`` with KAFKA_TOPICS (no setting) logs it, with check's hint, rather than quietly
    keeping KAFKA_TOPIC's default."""
    with capture_logs() as logs:
        bootstrap.warn_unknown_variables(
            {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "KAFKA_TOPICS": "orders", "HOME": "/root"}
        )

    assert [(e["event"], e["variable"], e["problem"]) for e in logs] == [
        (
            "unknown_setting",
            "KAFKA_TOPICS",
            "is not a setting of this service (did you mean KAFKA_TOPIC?)",
        )
    ]


def test_a_revoke_deadline_shorter_than_a_request_is_logged_when_the_service_starts() -> None:
    """``run`` logs what ``check`` warns about (``setting_warning``), and goes on."""
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "DELIVERY_REVOKE_TIMEOUT_SECONDS": "10"},
        require_api_key=False,
    )
    with capture_logs() as logs:
        bootstrap.warn_risky_settings(settings)

    assert [(e["event"], e["variable"]) for e in logs] == [
        ("setting_warning", "DELIVERY_REVOKE_TIMEOUT_SECONDS")
    ]


def test_every_reader_field_has_its_missing_field_counter_from_the_start() -> None:
    """writer_schema_missing_fields_total exists at 0 for each top-level field of the reader
    schema once the service is built, so its alert (ButtonConsumerWriterSchemaMissingFields)
    sees the first count as an increase and has a series before any."""
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "DELIVERY_DRY_RUN": "true"})
    registry = CollectorRegistry()

    build(settings, registry)

    name = "button_consumer_writer_schema_missing_fields_total"
    assert registry.get_sample_value(name, {"field": "btn_ref"}) == 0.0
    assert registry.get_sample_value(name, {"field": "commerce"}) == 0.0
