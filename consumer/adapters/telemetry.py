"""The engine's telemetry port on Prometheus metrics, the probes' state and the delivery log.

The engine reports what happened in its own words (``ports.Telemetry``); this adapter turns each
report into metric updates (``Metrics``), the state ``/healthz`` and ``/readyz`` read (``Health``)
and the ``/deliveries`` ring (``DeliveryLog``), so the engine knows nothing of Prometheus.
"""

from __future__ import annotations

from consumer.adapters.admin import DeliveryLog, Health
from consumer.adapters.metrics import Metrics
from consumer.ports import Delivery


class ServiceTelemetry:
    """Implements ``consumer.ports.Telemetry``."""

    def __init__(self, metrics: Metrics, health: Health, deliveries: DeliveryLog) -> None:
        self.metrics = metrics
        self.health = health
        self.deliveries = deliveries

    def started(self) -> None:
        self.health.started = True
        self.metrics.ready.set(1)

    def stopping(self) -> None:
        self.health.stopping = True
        self.metrics.ready.set(0)

    def polled(self, at: float) -> None:
        self.health.last_poll = at

    def records_received(self, topic: str, count: int) -> None:
        self.metrics.records_received.labels(topic).inc(count)

    def in_flight(self, count: int) -> None:
        self.metrics.in_flight.set(count)

    def partitions(self, assigned: int, paused: int) -> None:
        self.metrics.partitions_assigned.set(assigned)
        self.metrics.partitions_paused.set(paused)

    def auth_paused(self, paused: bool) -> None:
        self.health.auth_paused = paused
        self.metrics.auth_paused.set(1 if paused else 0)

    def rebalance(self, kind: str) -> None:
        self.metrics.rebalances.labels(kind).inc()

    def profiles_restored(self, seconds: float) -> None:
        self.metrics.profile_restore_seconds.observe(seconds)

    def profiles_held(self, count: int) -> None:
        self.metrics.profiles.set(count)

    def lag(self, partition: int, records: int) -> None:
        self.metrics.consumer_lag.labels(str(partition)).set(records)

    def decode_failed(self, reason: str) -> None:
        self.metrics.decode_failures.labels(reason).inc()

    def writer_schema_missing_field(self, field: str) -> None:
        self.metrics.writer_schema_missing_fields.labels(field).inc()

    def button_attempt(self, action: str, outcome: str, seconds: float, limit: int) -> None:
        self.metrics.button_requests.labels(action, outcome).inc()
        self.metrics.button_latency.labels(action).observe(seconds)
        self.metrics.concurrency_limit.set(limit)

    def retry_scheduled(self, outcome: str) -> None:
        self.metrics.retries.labels(outcome).inc()

    def dead_lettered(self, reason: str) -> None:
        self.metrics.dead_letters.labels(reason).inc()

    def finished(self, outcome: str, event_age: float | None) -> None:
        self.metrics.records_finished.labels(outcome).inc()
        if event_age is not None:
            self.metrics.event_age.observe(max(event_age, 0.0))

    def delivery(self, delivery: Delivery) -> None:
        self.deliveries.add(delivery)
