"""Prometheus metrics of the service, created against an injected registry.

Labels stay bounded: topic, partition, action, outcome, reason. Never a key, order or event id.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "button_consumer"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_AGE_BUCKETS = (0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


@dataclass(frozen=True, slots=True)
class Metrics:
    """Every metric the service exports. Build with ``Metrics.create(registry)``."""

    registry: CollectorRegistry
    records_received: Counter
    records_finished: Counter
    decode_failures: Counter
    writer_schema_missing_fields: Counter
    button_requests: Counter
    button_latency: Histogram
    retries: Counter
    dead_letters: Counter
    event_age: Histogram
    in_flight: Gauge
    concurrency_limit: Gauge
    partitions_assigned: Gauge
    partitions_paused: Gauge
    auth_paused: Gauge
    consumer_lag: Gauge
    rebalances: Counter
    profiles: Gauge
    profile_restore_seconds: Histogram
    ready: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        reg = registry if registry is not None else CollectorRegistry()
        ns = NAMESPACE
        return cls(
            registry=reg,
            records_received=Counter(
                "records_received",
                "Records read from the input topic.",
                ["topic"],
                namespace=ns,
                registry=reg,
            ),
            records_finished=Counter(
                "records_finished",
                "Records finished, by outcome: delivered, skipped, dead_lettered, parked, dry_run.",
                ["outcome"],
                namespace=ns,
                registry=reg,
            ),
            decode_failures=Counter(
                "decode_failures",
                "Records that could not be decoded, by reason.",
                ["reason"],
                namespace=ns,
                registry=reg,
            ),
            writer_schema_missing_fields=Counter(
                "writer_schema_missing_fields",
                "Writer schemas first seen without a field the reader schema has, by field.",
                ["field"],
                namespace=ns,
                registry=reg,
            ),
            button_requests=Counter(
                "button_requests",
                "Attempts against Button's Order API, by action and outcome.",
                ["action", "outcome"],
                namespace=ns,
                registry=reg,
            ),
            button_latency=Histogram(
                "button_request_duration_seconds",
                "Duration of one attempt against Button.",
                ["action"],
                namespace=ns,
                registry=reg,
                buckets=_LATENCY_BUCKETS,
            ),
            retries=Counter(
                "retries",
                "Attempts scheduled again, by outcome that caused them.",
                ["outcome"],
                namespace=ns,
                registry=reg,
            ),
            dead_letters=Counter(
                "dead_letters",
                "Records written to the dead-letter topic, by reason.",
                ["reason"],
                namespace=ns,
                registry=reg,
            ),
            event_age=Histogram(
                "event_age_seconds",
                "From event time to its record being finished.",
                namespace=ns,
                registry=reg,
                buckets=_AGE_BUCKETS,
            ),
            in_flight=Gauge(
                "in_flight_records",
                "Records read but not yet finished.",
                namespace=ns,
                registry=reg,
            ),
            concurrency_limit=Gauge(
                "concurrency_limit",
                "Current adaptive limit of requests in flight to Button.",
                namespace=ns,
                registry=reg,
            ),
            partitions_assigned=Gauge(
                "partitions_assigned",
                "Input partitions assigned to this consumer.",
                namespace=ns,
                registry=reg,
            ),
            partitions_paused=Gauge(
                "partitions_paused",
                "Input partitions paused for backpressure or auth failure.",
                namespace=ns,
                registry=reg,
            ),
            auth_paused=Gauge(
                "auth_paused",
                "1 while Button rejects the API key and consumption is paused.",
                namespace=ns,
                registry=reg,
            ),
            consumer_lag=Gauge(
                "consumer_lag_records",
                "High watermark minus committed position, per partition.",
                ["partition"],
                namespace=ns,
                registry=reg,
            ),
            rebalances=Counter(
                "rebalances",
                "Partition assignments and revocations.",
                ["kind"],
                namespace=ns,
                registry=reg,
            ),
            profiles=Gauge(
                "profiles",
                "User profiles held in memory.",
                namespace=ns,
                registry=reg,
            ),
            profile_restore_seconds=Histogram(
                "profile_restore_seconds",
                "Time to restore a partition's profiles.",
                namespace=ns,
                registry=reg,
            ),
            ready=Gauge("ready", "1 when the consumer is ready.", namespace=ns, registry=reg),
        )
