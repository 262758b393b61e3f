"""The engine's telemetry port on Prometheus metrics, the probes' state, the delivery log and
the one summary log line per record.

The engine reports what happened in its own words (``ports.Telemetry``); this adapter turns each
report into metric updates (``Metrics``), the state ``/healthz`` and ``/readyz`` read (``Health``),
the ``/deliveries`` ring (``DeliveryLog``) and the ``record`` log line, so the engine knows
nothing of Prometheus or of sampling. ``TimedChangelog`` measures changelog writes around the
real changelog without the engine knowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import structlog

from consumer.adapters.admin import DeliveryLog, Health
from consumer.adapters.metrics import (
    FINISHED_OUTCOMES,
    OFFSET_RESET_TARGETS,
    REPAIR_TRIGGERS,
    Metrics,
)
from consumer.domain.policy import BREAKER_REASONS
from consumer.ports import (
    CURRENT_RECORD,
    Changelog,
    Delivery,
    FinishedRecord,
    PartitionLag,
    RecordScope,
)

log = structlog.get_logger("consumer.record")
progress_log = structlog.get_logger("consumer.restore")

SUCCESSES = frozenset({"delivered", "skipped", "dry_run"})
"""Outcomes whose summary lines are sampled (``LOG_SUCCESS_SAMPLE_RATE``); the others always log."""

AGED = frozenset({"delivered", "dry_run"})
"""Outcomes whose event age is observed (``button_consumer_event_age_seconds``): what reached
Button (or, in a dry run, would have). Skipped views and opens are most of the traffic and would
hide orders stuck in retries; a dead letter's age says when it gave up, not when it arrived."""

_ANSWERED = frozenset({"success", "conflict", "not_found"})
"""Button outcomes that show Button working: a 2xx, and a 409 or 404 in Button's own JSON
envelope (a 404 page of a proxy or an ingress in front of Button shows nothing of the kind)."""

_LABEL = re.compile(r"[A-Za-z0-9_]{1,48}")


def _label(value: str, empty: str = "none") -> str:
    """A label value from the engine's vocabulary; anything else collapses to ``other``, so a
    label can never carry an id or free text."""
    if not value:
        return empty
    return value if _LABEL.fullmatch(value) else "other"


def status_class(status: int | None) -> str:
    """``2xx``, ``4xx``, ``5xx``... of an HTTP status; ``none`` when no answer came."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


class Sampler:
    """Keeps a deterministic share ``rate`` (0..1) of the calls: every 1/rate-th one."""

    def __init__(self, rate: float) -> None:
        self._rate = min(max(rate, 0.0), 1.0)
        self._credit = 1.0 - self._rate if self._rate > 0 else 0.0  # the first call is kept

    def keep(self) -> bool:
        self._credit += self._rate
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False


SENT_ACTIONS = ("create", "update", "cancel")
"""The Button actions a record is delivered with (``RunTally.sent``: each from the start at 0)."""


class RunTally:
    """What the records finished since the start came to, for the ``stopped`` line.

    ``outcomes``: records finished, by outcome (each of ``FINISHED_OUTCOMES`` from 0).
    ``sent``: of those delivered (in a dry run: finished ``dry_run``, the requests that would
    have been sent), how many by the action of the record's request (``create``, ``update``,
    ``cancel``; a create answered 409 and followed by its update counts as that update, the
    request that finished the record). Records
    finish on the event loop: no lock.
    """

    __slots__ = ("outcomes", "sent")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = dict.fromkeys(FINISHED_OUTCOMES, 0)
        self.sent: dict[str, int] = dict.fromkeys(SENT_ACTIONS, 0)

    def add(self, outcome: str, action: str) -> None:
        """Count one record finished with ``outcome`` after the mapping's ``action``."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome in AGED:
            self.sent[action] = self.sent.get(action, 0) + 1

    def merge(self, outcomes: Mapping[str, int], sent: Mapping[str, int]) -> None:
        """Count records finished together: how many by outcome, and of those ``sent`` (an
        outcome of ``AGED``) how many by action."""
        for outcome, count in outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        for action, count in sent.items():
            self.sent[action] = self.sent.get(action, 0) + count

    def as_fields(self, *, dry_run: bool) -> dict[str, dict[str, int]]:
        """The ``stopped`` line's fields: ``outcomes``, and ``sent`` (``would_send`` in a dry
        run: nothing was sent)."""
        return {
            "outcomes": dict(self.outcomes),
            "would_send" if dry_run else "sent": dict(self.sent),
        }


class ServiceTelemetry:
    """Implements ``consumer.ports.Telemetry``; ``tally`` keeps what the run's records came to
    (``RunTally``)."""

    def __init__(
        self,
        metrics: Metrics,
        health: Health,
        deliveries: DeliveryLog,
        success_sample_rate: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.deliveries = deliveries
        self._successes = Sampler(success_sample_rate)
        self._wall_clock = wall_clock
        self._lag_partitions: set[str] = set()
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._restoring_lock = threading.Lock()
        self.tally = RunTally()
        self._health_changed()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: several run per record, and each
        ``labels`` call takes a lock and builds its key. Bounded, as the label values are."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _health_changed(self) -> None:
        """The gauges of what /readyz answers, after each change of the state it reads: the
        ``ready`` gauge is ``Health.ready()`` (running, not stopping, in its group, Button accepts
        the key, the broker answers), ``broker_reachable`` the last lag read's outcome."""
        self.metrics.ready.set(1 if self.health.ready() else 0)
        self.metrics.broker_reachable.set(1 if self.health.broker_reachable else 0)

    def started(self) -> None:
        self.health.started = True
        self._health_changed()

    def stopping(self) -> None:
        self.health.stopping = True
        self._health_changed()

    def polled(self, at: float) -> None:
        self.health.last_poll = at

    def records_received(self, topic: str, count: int) -> None:
        self._child(self.metrics.records_received, topic).inc(count)

    def records_redelivered(self, partition: int, count: int) -> None:
        """Counted, never by partition (the ``records_redelivered`` log line names it)."""
        self.metrics.records_redelivered.inc(count)

    def in_flight(self, count: int) -> None:
        self.metrics.in_flight.set(count)

    def partitions(self, assigned: int, paused: int) -> None:
        self.metrics.partitions_assigned.set(assigned)
        self.metrics.partitions_paused.set(paused)

    def in_group(self, member: bool) -> None:
        """Readiness follows the group's membership (``Health.assigned``), not the partition
        counts: a member with an empty assignment is in its group, one whose partitions were
        lost is not until the group hands it an assignment again."""
        self.health.assigned = member
        self._health_changed()

    def auth_paused(self, paused: bool) -> None:
        self.health.auth_paused = paused
        self._health_changed()
        self.metrics.auth_paused.set(1 if paused else 0)
        self._child(self.metrics.paused, "auth").set(1 if paused else 0)

    def paused(self, reason: str, active: bool) -> None:
        self._child(self.metrics.paused, _label(reason)).set(1 if active else 0)

    def broker_reachable(self, reachable: bool) -> None:
        self.health.broker_reachable = reachable
        self._health_changed()

    def breaker(self, open_: bool, reason: str) -> None:
        self.paused("breaker", open_)
        for known in BREAKER_REASONS:  # bounded: an unknown reason is not a new series
            self._child(self.metrics.breaker_open, known).set(1 if open_ and reason == known else 0)

    def breaker_opened(self, reason: str) -> None:
        if reason in BREAKER_REASONS:
            self.metrics.breaker_openings.labels(reason).inc()

    def rebalance(self, kind: str) -> None:
        self.metrics.rebalances.labels(kind).inc()

    def profiles_restored(self, seconds: float) -> None:
        self.metrics.profile_restore_seconds.observe(seconds)

    def count_profiles(self, count: Callable[[], int]) -> None:
        """Read ``button_consumer_profiles`` from ``count`` (profiles held now) at each scrape.

        ``count`` must be cheap and safe to call from the scraping thread (the admin server's):
        ``len(ProfileStore)``, a running count kept under the store's lock, is both. Read at
        the scrape, never set at a moment: profiles are learnt by every record, emptied by
        refunds and cancels, installed by restores and dropped with partitions.
        """
        self.metrics.profiles.set_function(count)

    def lags(self, lags: Mapping[int, PartitionLag]) -> None:
        current = {str(p): lag for p, lag in lags.items()}
        for gone in self._lag_partitions - current.keys():
            self.metrics.consumer_lag.remove(gone)
            self.metrics.committed_offset.remove(gone)
            self.metrics.records_behind_open_transaction.remove(gone)
        for partition, lag in current.items():
            self.metrics.consumer_lag.labels(partition).set(lag.records)
            self.metrics.committed_offset.labels(partition).set(lag.committed)
            self.metrics.records_behind_open_transaction.labels(partition).set(
                lag.behind_open_transaction
            )
        self._lag_partitions = set(current)
        self.metrics.consumer_lag_sum.set(sum(lag.records for lag in current.values()))

    def decode_failed(self, reason: str) -> None:
        self._child(self.metrics.decode_failures, _label(reason)).inc()

    def reader_fields(self, names: Sequence[str]) -> None:
        """Create ``writer_schema_missing_fields_total`` at 0 for each reader field ``names``
        (bounded: the reader schema's top-level fields), so that its alert sees the first
        count as an increase and has a series before any."""
        for name in names:
            self.metrics.writer_schema_missing_fields.labels(_label(name))

    def writer_schema_missing_field(self, field: str) -> None:
        self.metrics.writer_schema_missing_fields.labels(_label(field)).inc()

    def btn_ref_dropped(self, source: str, problem: str) -> None:
        self.metrics.btn_ref_dropped.labels(_label(source), _label(problem)).inc()

    def input_dropped(self, field: str, problem: str) -> None:
        self.metrics.inputs_dropped.labels(_label(field), _label(problem)).inc()

    def record_key_problem(self, problem: str) -> None:
        self.metrics.record_key_problems.labels(_label(problem)).inc()

    def refund_held(self) -> None:
        self.metrics.refunds_held.inc()

    def schema_registry_unavailable(self) -> None:
        self.metrics.schema_registry_unavailable.inc()

    def held_refund_discarded(self, reason: str) -> None:
        self.metrics.held_refunds_discarded.labels(_label(reason)).inc()

    def changelog_repaired(self, when: str, count: int) -> None:
        when = when if when in REPAIR_TRIGGERS else "other"
        self.metrics.changelog_repairs.labels(when).inc(count)

    def button_attempt(
        self,
        action: str,
        outcome: str,
        seconds: float,
        limit: int,
        status: int | None = None,
        *,
        from_button: bool = False,
    ) -> None:
        self._count_request(action, outcome, seconds, status, from_button)
        self.metrics.concurrency_limit.set(limit)

    def button_probe(
        self, outcome: str, seconds: float, status: int | None = None, *, from_button: bool = False
    ) -> None:
        """Counted in ``button_requests_total`` as ``action="probe"`` (and timed), so the error
        ratio over Button's requests sees an outage behind an open breaker, when only probes
        go out; the concurrency limit is no probe's business."""
        self._count_request("probe", outcome, seconds, status, from_button)

    def _count_request(
        self, action: str, outcome: str, seconds: float, status: int | None, from_button: bool
    ) -> None:
        """One request to Button: counted by action, outcome and status class, timed, and the
        time of Button's last answer moved when it answered."""
        self._child(self.metrics.button_requests, action, outcome, status_class(status)).inc()
        self._child(self.metrics.button_latency, action).observe(seconds)
        if outcome == "success" or (outcome in _ANSWERED and from_button):
            self.metrics.button_last_success.set(self._wall_clock())

    def retry_scheduled(self, outcome: str) -> None:
        self.metrics.retries.labels(outcome).inc()

    def dead_lettered(self, reason: str) -> None:
        self.metrics.dead_letters.labels(_label(reason)).inc()

    def dead_letter_failed(self) -> None:
        self.metrics.dead_letter_failures.inc()

    def order_parked(self) -> None:
        self.metrics.orders_parked.inc()

    def finished(self, outcome: str, event_age: float | None) -> None:
        self._child(self.metrics.records_finished, outcome).inc()
        if event_age is not None and outcome in AGED:
            self.metrics.event_age.observe(max(event_age, 0.0))

    def delivery(self, delivery: Delivery) -> None:
        """The live log, the outcome counter, the run's tally and the record's one summary
        line."""
        self.deliveries.add(delivery)
        self.tally.add(delivery.outcome, delivery.action)
        self._child(
            self.metrics.outcomes,
            _label(delivery.outcome),
            _label(delivery.event_type, "undecoded"),
            _label(delivery.reason),
        ).inc()
        if delivery.outcome not in SUCCESSES or self._successes.keep():
            self._summary(delivery)

    def finished_together(self, records: Sequence[FinishedRecord]) -> None:
        """``finished`` and ``delivery`` for each record, with one counter update per outcome
        and label set; the summary lines sampled as one by one, each under its record's scope."""
        finished: dict[str, int] = {}
        outcomes: dict[tuple[str, str, str], int] = {}
        sent: dict[str, int] = {}
        observe = self.metrics.event_age.observe
        for delivery, key, age in records:
            finished[delivery.outcome] = finished.get(delivery.outcome, 0) + 1
            labels = (delivery.outcome, delivery.event_type, delivery.reason)
            outcomes[labels] = outcomes.get(labels, 0) + 1
            if delivery.outcome in AGED:
                sent[delivery.action] = sent.get(delivery.action, 0) + 1
                if age is not None:
                    observe(max(age, 0.0))
            self.deliveries.add(delivery)
            if delivery.outcome not in SUCCESSES or self._successes.keep():
                scope = CURRENT_RECORD.set(
                    RecordScope(delivery.partition, delivery.offset, key, delivery.event_id)
                )
                try:
                    self._summary(delivery)
                finally:
                    CURRENT_RECORD.reset(scope)
        for outcome, count in finished.items():
            self._child(self.metrics.records_finished, outcome).inc(count)
        self.tally.merge(finished, sent)
        for (outcome, event_type, reason), count in outcomes.items():
            self._child(
                self.metrics.outcomes,
                _label(outcome),
                _label(event_type, "undecoded"),
                _label(reason),
            ).inc(count)

    @staticmethod
    def _summary(delivery: Delivery) -> None:
        """The record's one summary line (``partition`` and ``offset`` come from its scope)."""
        fields = asdict(delivery)
        del fields["at"], fields["partition"], fields["offset"]  # bound per record already
        if delivery.outcome in SUCCESSES:
            log.info("record", **fields)
        else:
            log.warning("record", **fields)

    # -- reported by the composition root, not the engine ----------------------------------

    def restore_started(self, partitions: int) -> None:
        """A restore of ``partitions`` partitions began (any thread): not ready until it ends."""
        self.metrics.restoring_partitions.inc(partitions)
        with self._restoring_lock:  # restores of two assignments may overlap, on two threads
            self.health.restoring += partitions
            self._health_changed()

    def restore_progress(
        self, records: int = 1, partition: int | None = None, remaining: int | None = None
    ) -> None:
        """``records`` more changelog records read; ``remaining`` left in ``partition``."""
        self.metrics.restored_records.inc(records)
        if partition is not None and remaining is not None:
            self.metrics.restore_remaining.labels(str(partition)).set(remaining)

    def offset_reset(self, partition: int, reset_to: str) -> None:
        """A partition was moved by ``auto.offset.reset`` (``reset_to``: earliest, latest,
        offset): counted by where it went, never by partition."""
        known = reset_to if reset_to in OFFSET_RESET_TARGETS else "other"
        self.metrics.offset_resets.labels(known).inc()

    def restore_finished(self, partitions: list[int]) -> None:
        """The restore of ``partitions`` ended (completed, cancelled or failed; any thread)."""
        self.metrics.restoring_partitions.dec(len(partitions))
        with self._restoring_lock:
            self.health.restoring = max(self.health.restoring - len(partitions), 0)
            self._health_changed()
        for partition in partitions:
            with contextlib.suppress(KeyError):  # nothing was read (an empty partition)
                self.metrics.restore_remaining.remove(str(partition))

    def changelog_written(self, seconds: float) -> None:
        self.metrics.changelog_write_seconds.observe(seconds)


class RestoreReport:
    """Restore progress of one assignment: metrics per batch, a ``restore_progress`` log line
    per partition at most every ``interval`` seconds (called from the restore's thread)."""

    def __init__(
        self,
        partitions: list[int],
        telemetry: ServiceTelemetry,
        interval: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._telemetry = telemetry
        self._interval = interval
        self._now = monotonic
        self._read = dict.fromkeys(partitions, 0)
        self._logged = dict.fromkeys(partitions, monotonic())

    def batch(self, partition: int, records: int, remaining: int) -> None:
        self._telemetry.restore_progress(records, partition, remaining)
        self._read[partition] = self._read.get(partition, 0) + records
        now = self._now()
        if now - self._logged.get(partition, now) >= self._interval:
            self._logged[partition] = now
            progress_log.info(
                "restore_progress",
                partition=partition,
                restored=self._read[partition],
                remaining=remaining,
            )


class TimedChangelog:
    """A ``Changelog`` that reports how long each acknowledged write took."""

    def __init__(
        self,
        inner: Changelog,
        telemetry: ServiceTelemetry,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._telemetry = telemetry
        self._monotonic = monotonic

    def write(
        self, partition: int, key: bytes, value: bytes | None, *, epoch: int
    ) -> asyncio.Future[Any]:
        started = self._monotonic()
        ack = asyncio.ensure_future(self._inner.write(partition, key, value, epoch=epoch))

        def written(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._telemetry.changelog_written(self._monotonic() - started)

        ack.add_done_callback(written)
        return ack
