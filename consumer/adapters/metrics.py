"""Prometheus metrics of the service, created against an injected registry.

Labels stay bounded: topic, partition, action, outcome, status class, event type, reason (each
from a fixed set in the code). Never a key, order or event id. The README's metric table lists
every metric here; ``tests/unit/test_telemetry.py`` (``test_the_readme_lists_every_metric``)
checks that it does, exactly.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

import consumer
from consumer.domain.button import DROPPED_INPUT_KINDS
from consumer.domain.events import KEY_PROBLEMS

NAMESPACE = "button_consumer"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_AGE_BUCKETS = (0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
_RESTORE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""A restore reads a partition's changelog from its start: seconds for a small one, many
minutes for a large one (the troubleshooting table reads them apart)."""
_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

FINISHED_OUTCOMES = ("delivered", "skipped", "dry_run", "dead_lettered", "parked")
"""Every outcome a record can finish with; their counters exist from the start (at 0), so a
rate or an alert over them has a series before the first record of that outcome."""

PAUSE_REASONS = ("auth", "backpressure", "breaker")
"""Why consumption can be paused: Button refuses the key, too much in flight, a circuit breaker
(``paused{reason="breaker"}`` is for a breaker gate to report into; 0 until one does)."""

DISCARD_REASONS = (
    "refund_item_not_in_order",
    "refund_exceeds_quantity",
    "refund_exceeds_total",
    "refund_currency_mismatch",
    "refund_amount_unknown",
    "refund_raises_total",
    "order_expired",
    "order_evicted",
    "profile_capped",
)
"""Why a held refund is discarded (``held_refunds_discarded_total{reason}``), the common ones
(what it would be rejected with, or how its order left the profile before its purchase came);
their counters exist from the start (at 0), so the alert over them has a series before the
first discard. Another reason the mapping gives (``invalid_amount``, ``total_out_of_range``)
gets its series when it first happens."""

REPAIR_TRIGGERS = ("restore", "watch")
"""What found a former owner's late changelog write that its owner wrote again
(``changelog_repairs_total{when}``); the counters exist from the start (at 0)."""

OFFSET_RESET_TARGETS = ("earliest", "latest", "offset", "other")
"""Where ``auto.offset.reset`` moved a partition; the counters exist from the start (at 0), so
``increase()`` sees the first reset."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """Every metric the service exports. Build with ``Metrics.create(registry)``."""

    registry: CollectorRegistry
    build_info: Gauge
    records_received: Counter
    records_redelivered: Counter
    records_finished: Counter
    outcomes: Counter
    decode_failures: Counter
    writer_schema_missing_fields: Counter
    btn_ref_dropped: Counter
    inputs_dropped: Counter
    record_key_problems: Counter
    refunds_held: Counter
    schema_registry_unavailable: Counter
    held_refunds_discarded: Counter
    changelog_repairs: Counter
    button_requests: Counter
    button_latency: Histogram
    button_last_success: Gauge
    retries: Counter
    dead_letters: Counter
    dead_letter_failures: Counter
    orders_parked: Counter
    event_age: Histogram
    in_flight: Gauge
    concurrency_limit: Gauge
    partitions_assigned: Gauge
    partitions_paused: Gauge
    paused: Gauge
    auth_paused: Gauge
    breaker_open: Gauge
    breaker_openings: Counter
    consumer_lag: Gauge
    consumer_lag_sum: Gauge
    committed_offset: Gauge
    records_behind_open_transaction: Gauge
    rebalances: Counter
    offset_resets: Counter
    profiles: Gauge
    profile_restore_seconds: Histogram
    restoring_partitions: Gauge
    restored_records: Counter
    restore_remaining: Gauge
    changelog_write_seconds: Histogram
    ready: Gauge
    broker_reachable: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        reg = registry if registry is not None else CollectorRegistry()
        # process_start_time_seconds (a crash loop's signal: it changes at every start),
        # process_cpu_seconds_total, process_resident_memory_bytes...: prometheus_client's own.
        ProcessCollector(registry=reg)
        ns = NAMESPACE

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, list(labels), namespace=ns, registry=reg)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, list(labels), namespace=ns, registry=reg)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = ()
        ) -> Histogram:
            return Histogram(
                name,
                doc,
                list(labels),
                namespace=ns,
                registry=reg,
                buckets=buckets or Histogram.DEFAULT_BUCKETS,
            )

        metrics = cls(
            registry=reg,
            build_info=gauge(
                "build_info",
                "Always 1; the labels say what runs: service version, Python, librdkafka.",
                ("version", "python", "librdkafka"),
            ),
            records_received=counter(
                "records_received",
                "Records the Kafka client handed out from the input topic, those it handed out "
                "again included (records_redelivered: dropped, not processed twice).",
                ("topic",),
            ),
            records_redelivered=counter(
                "records_redelivered",
                "Records the Kafka client handed out again below the offset already received "
                "from their partition since its assignment (a rewound fetch): dropped, not "
                "processed twice.",
            ),
            records_finished=counter(
                "records_finished",
                "Records finished, by outcome: delivered, skipped, dead_lettered, parked, dry_run.",
                ("outcome",),
            ),
            outcomes=counter(
                "outcomes",
                "Records finished, by outcome, event type and the failure policy's reason.",
                ("outcome", "event_type", "reason"),
            ),
            writer_schema_missing_fields=counter(
                "writer_schema_missing_fields",
                "Writer schemas first seen without a field the reader schema has, by field.",
                ("field",),
            ),
            btn_ref_dropped=counter(
                "btn_ref_dropped",
                "Values an event carried where a Button token goes that cannot be one (empty, "
                "a placeholder such as undefined or null, over 255 characters, not URL-safe): "
                "dropped, never sent nor remembered. By source and problem.",
                ("source", "problem"),
            ),
            inputs_dropped=counter(
                "inputs_dropped",
                "What events carried that is not sent to Button nor remembered (an order's line "
                "items left out for a product without a price, an advertising id that is not a "
                "UUID). By field and problem.",
                ("field", "problem"),
            ),
            record_key_problems=counter(
                "record_key_problems",
                "Decoded records whose Kafka key breaks the producer contract (every event keyed "
                "by its user_key): no_key (null or empty), key_not_user_key (another key, say "
                "the order id: the event lands in another profile than its user's). By problem.",
                ("problem",),
            ),
            schema_registry_unavailable=counter(
                "schema_registry_unavailable",
                "Writer-schema lookups that could not ask the schema registry (unreachable, "
                "timed out, 5xx, refused credentials): the records waiting for them are retried, "
                "never dead-lettered (log schema_registry_unavailable).",
            ),
            refunds_held=counter(
                "refunds_held",
                "Partial refunds of an order neither the profile nor Button knows, held in the "
                "profile until their purchase arrives (skip refund_held).",
            ),
            held_refunds_discarded=counter(
                "held_refunds_discarded",
                "Refunds an order's ledger held that cannot apply to the order once its purchase "
                "(or Button's order) arrived: the order does not carry them. By the reason the "
                "refund would be rejected with.",
                ("reason",),
            ),
            changelog_repairs=counter(
                "changelog_repairs",
                "Profile changelog keys written again by their partition's owner after a former "
                "owner's late write of them: found fenced by the restore, or landed while owned "
                "(watch).",
                ("when",),
            ),
            decode_failures=counter(
                "decode_failures", "Records that could not be decoded, by reason.", ("reason",)
            ),
            button_requests=counter(
                "button_requests",
                "Attempts against Button's Order API, by action, outcome and HTTP status class "
                "(2xx, 4xx, 5xx, none when no answer came).",
                ("action", "outcome", "status_class"),
            ),
            button_latency=histogram(
                "button_request_duration_seconds",
                "Duration of one attempt against Button.",
                ("action",),
                _LATENCY_BUCKETS,
            ),
            button_last_success=gauge(
                "button_last_success_timestamp_seconds",
                "Unix time of the last request Button answered as expected (a 2xx, or a 409 or "
                "404 in Button's own JSON envelope); 0 before the first.",
            ),
            retries=counter(
                "retries", "Attempts scheduled again, by outcome that caused them.", ("outcome",)
            ),
            dead_letters=counter(
                "dead_letters",
                "Records written to the dead-letter topic (write acknowledged), by reason.",
                ("reason",),
            ),
            dead_letter_failures=counter(
                "dead_letter_write_failures",
                "Dead-letter writes that failed; consumption stops at the first.",
            ),
            orders_parked=counter(
                "orders_parked",
                "Orders parked behind their first dead letter, and keys parked behind an "
                "undecodable record (their orders' later records follow it to the DLQ).",
            ),
            event_age=histogram(
                "event_age_seconds",
                "From event time to Button accepting its request (freshness of orders).",
                buckets=_AGE_BUCKETS,
            ),
            in_flight=gauge("in_flight_records", "Records read but not yet finished."),
            concurrency_limit=gauge(
                "concurrency_limit", "Current adaptive limit of requests in flight to Button."
            ),
            partitions_assigned=gauge(
                "partitions_assigned", "Input partitions assigned to this consumer."
            ),
            partitions_paused=gauge(
                "partitions_paused", "Input partitions paused for backpressure or auth failure."
            ),
            paused=gauge(
                "paused",
                "1 while consumption is paused for the reason: auth (Button refuses the key), "
                "backpressure (too much in flight), breaker (a circuit breaker is open).",
                ("reason",),
            ),
            auth_paused=gauge(
                "auth_paused",
                "1 while Button rejects the API key and consumption is paused "
                '(same as paused{reason="auth"}).',
            ),
            breaker_open=gauge(
                "breaker_open",
                "1 for the reason the circuit breaker holds all intake (Button pushes back or "
                "is down), 0 otherwise.",
                ("reason",),
            ),
            breaker_openings=counter(
                "breaker_openings", "Times the circuit breaker opened, by reason.", ("reason",)
            ),
            consumer_lag=gauge(
                "consumer_lag_records",
                "End offset (asked of the brokers; the last stable offset under "
                "read_committed) minus the group's committed offset, per assigned partition.",
                ("partition",),
            ),
            consumer_lag_sum=gauge(
                "consumer_lag_sum_records",
                "Consumer lag summed over this consumer's assigned partitions.",
            ),
            committed_offset=gauge(
                "committed_offset",
                "The group's committed offset, per assigned partition (read with the lag): "
                "unchanged while the lag is above 0, the partition makes no progress.",
                ("partition",),
            ),
            records_behind_open_transaction=gauge(
                "records_behind_open_transaction",
                "High watermark minus last stable offset, per assigned partition (read with the "
                "lag): records written after another producer's open transaction, which the "
                "consumer (read_committed) cannot read until it ends; not in the lag.",
                ("partition",),
            ),
            rebalances=counter("rebalances", "Partition assignments and revocations.", ("kind",)),
            offset_resets=counter(
                "offset_resets",
                "Partitions moved by auto.offset.reset because their committed offset was out of "
                "range (fell out of retention): the records between were never read.",
                ("reset_to",),
            ),
            profiles=gauge("profiles", "User profiles held in memory."),
            profile_restore_seconds=histogram(
                "profile_restore_seconds",
                "Time to restore a partition's profiles.",
                buckets=_RESTORE_BUCKETS,
            ),
            restoring_partitions=gauge(
                "restoring_partitions",
                "Partitions whose profiles are being restored now (their records wait).",
            ),
            restored_records=counter(
                "restored_records", "Changelog records read while restoring profiles."
            ),
            restore_remaining=gauge(
                "restore_remaining_records",
                "Changelog records left to read before a restoring partition's records flow.",
                ("partition",),
            ),
            changelog_write_seconds=histogram(
                "changelog_write_seconds",
                "From a profile changelog write to its acknowledgement.",
                buckets=_WRITE_BUCKETS,
            ),
            ready=gauge(
                "ready",
                "1 when the consumer is ready, as /readyz answers: running, not stopping, "
                "in its group (not since a loss of its partitions), Button accepts the key, "
                "the broker answers.",
            ),
            broker_reachable=gauge(
                "broker_reachable",
                "1 while the broker answered the last lag read (every few seconds; owning no "
                "partition, the topic's metadata and the group's offsets), 0 from a read that "
                "failed twice in a row until one is answered again.",
            ),
        )
        metrics.build_info.labels(
            consumer.__version__, platform.python_version(), _librdkafka()
        ).set(1)
        for outcome in FINISHED_OUTCOMES:
            metrics.records_finished.labels(outcome)
        for reason in PAUSE_REASONS:
            metrics.paused.labels(reason).set(0)
        for reset_to in OFFSET_RESET_TARGETS:
            metrics.offset_resets.labels(reset_to)
        for reason in DISCARD_REASONS:
            metrics.held_refunds_discarded.labels(reason)
        for when in REPAIR_TRIGGERS:
            metrics.changelog_repairs.labels(when)
        for field, problem in DROPPED_INPUT_KINDS:
            metrics.inputs_dropped.labels(field, problem)
        for problem in KEY_PROBLEMS:
            metrics.record_key_problems.labels(problem)
        return metrics


def _librdkafka() -> str:
    try:
        from confluent_kafka import libversion
    except ImportError:  # pragma: no cover - a dependency of the service
        return "unknown"
    version: str = libversion()[0]
    return version
