"""The telemetry adapter: what each engine report does to the metrics, probes and logs."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from hashlib import sha256
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from consumer.adapters.admin import DeliveryLog, Health
from consumer.adapters.logging import add_record_scope
from consumer.adapters.metrics import NAMESPACE, Metrics
from consumer.adapters.telemetry import (
    RestoreReport,
    Sampler,
    ServiceTelemetry,
    TimedChangelog,
    status_class,
)
from consumer.domain.profile import Profile, Retention, Stamped
from consumer.engine.profiles import ProfileStore
from consumer.ports import CURRENT_RECORD, Delivery, FinishedRecord, PartitionLag, RecordScope

DAY = 86_400_000
README = Path(__file__).resolve().parents[2] / "README.md"


def telemetry(rate: float = 1.0, now: float = 1_700_000_000.0) -> ServiceTelemetry:
    return ServiceTelemetry(
        Metrics.create(CollectorRegistry()),
        Health(),
        DeliveryLog(10),
        success_sample_rate=rate,
        wall_clock=lambda: now,
    )


def sample(t: ServiceTelemetry, name: str, **labels: str) -> float | None:
    return t.metrics.registry.get_sample_value(f"{NAMESPACE}_{name}", labels)


def delivery(outcome: str = "delivered", reason: str = "ok", event_type: str = "PURCHASE"):
    return Delivery(
        at=1.0,
        partition=0,
        offset=1,
        event_id="evt-1",
        action="create",
        order_id="ORD-1",
        outcome=outcome,
        status=200,
        attempts=1,
        reason=reason,
        event_type=event_type,
    )


@pytest.mark.parametrize(
    ("status", "expected"), [(200, "2xx"), (202, "2xx"), (409, "4xx"), (503, "5xx"), (None, "none")]
)
def test_status_class_groups_http_statuses(status, expected) -> None:
    """Button's answers are counted by status class; no answer is ``none``."""
    assert expected == status_class(status)


def test_build_info_names_version_python_and_librdkafka() -> None:
    """build_info is 1 with the three versions as labels."""
    samples = [
        s
        for metric in telemetry().metrics.registry.collect()
        for s in metric.samples
        if s.name == f"{NAMESPACE}_build_info"
    ]
    assert [s.value for s in samples] == [1.0]
    assert {"version", "python", "librdkafka"} == set(samples[0].labels)


def test_finished_outcomes_and_pause_reasons_exist_from_the_start() -> None:
    """Alerts and rates over them have a series before the first event of each kind."""
    t = telemetry()

    assert sample(t, "records_finished_total", outcome="dead_lettered") == 0.0
    assert sample(t, "paused", reason="breaker") == 0.0


def test_every_kind_of_dropped_input_exists_from_the_start() -> None:
    """The dashboard's *Inputs dropped* panel has a series before the first product without a
    price or junk advertising id: every kind the mapping reports exists at 0."""
    t = telemetry()

    assert [
        sample(t, "inputs_dropped_total", field=field, problem=problem)
        for field, problem in (
            ("line_items", "product_without_price"),
            ("ios_advertising_id", "not_uuid"),
            ("android_advertising_id", "not_uuid"),
        )
    ] == [0.0, 0.0, 0.0]


def test_only_buttons_own_404_shows_button_working() -> None:
    """A 404 page of a proxy or an ingress in front of Button leaves the last-success time
    alone; Button's own 404 (its JSON envelope) stamps it."""
    t = telemetry(now=1234.0)
    t.button_attempt("cancel", "not_found", 0.1, 4, 404)
    assert sample(t, "button_last_success_timestamp_seconds") == 0.0

    t.button_attempt("cancel", "not_found", 0.1, 4, 404, from_button=True)

    assert sample(t, "button_last_success_timestamp_seconds") == 1234.0


def test_button_attempt_counts_by_action_outcome_and_status_class() -> None:
    """A 503 counts under 5xx; a success also stamps the last-success time."""
    t = telemetry(now=1234.0)
    t.button_attempt("create", "server_error", 0.1, 4, 503)
    assert sample(t, "button_last_success_timestamp_seconds") == 0.0

    t.button_attempt("create", "success", 0.1, 4, 201)

    assert (
        sample(
            t, "button_requests_total", action="create", outcome="server_error", status_class="5xx"
        )
        == 1.0
    )
    assert sample(t, "button_last_success_timestamp_seconds") == 1234.0


def test_lags_set_every_partition_and_the_sum_and_forget_revoked_partitions() -> None:
    """A partition no longer reported has no lag, committed-offset or open-transaction series;
    the sum covers the reported ones."""
    t = telemetry()
    t.lags({0: PartitionLag(10, 15, high_watermark=16), 1: PartitionLag(20, 27)})

    t.lags({1: PartitionLag(24, 27, high_watermark=27)})

    assert (
        sample(t, "consumer_lag_records", partition="0"),
        sample(t, "committed_offset", partition="0"),
        sample(t, "records_behind_open_transaction", partition="0"),
        sample(t, "consumer_lag_records", partition="1"),
        sample(t, "committed_offset", partition="1"),
        sample(t, "records_behind_open_transaction", partition="1"),
        sample(t, "consumer_lag_sum_records"),
    ) == (None, None, None, 3.0, 24.0, 0.0, 3.0)


def test_records_behind_an_open_transaction_are_a_gauge_of_their_own_not_lag() -> None:
    """Caught up to the last stable offset (76) with the high watermark at 81: lag 0, 5
    records held behind an open transaction."""
    t = telemetry()
    t.lags({1: PartitionLag(76, 76, high_watermark=81)})

    assert (
        sample(t, "consumer_lag_records", partition="1"),
        sample(t, "records_behind_open_transaction", partition="1"),
    ) == (0.0, 5.0)


def test_auth_pause_sets_the_generic_pause_gauge_and_readiness() -> None:
    """paused{reason="auth"} follows the auth gate, and /readyz reads the same state."""
    t = telemetry()

    t.auth_paused(True)

    assert (sample(t, "paused", reason="auth"), t.health.auth_paused) == (1.0, True)


def test_delivery_counts_outcomes_by_event_type_and_reason() -> None:
    """outcomes_total carries the event type and the policy's reason."""
    t = telemetry()

    t.delivery(delivery("dead_lettered", "http_400", "REFUND"))

    assert (
        sample(t, "outcomes_total", outcome="dead_lettered", event_type="REFUND", reason="http_400")
        == 1.0
    )


def test_label_values_outside_the_vocabulary_collapse_to_other() -> None:
    """A reason that is not a plain identifier can never become a label value."""
    t = telemetry()

    t.delivery(delivery("dead_lettered", "user@example.com", ""))

    assert (
        sample(t, "outcomes_total", outcome="dead_lettered", event_type="undecoded", reason="other")
        == 1.0
    )


def test_successes_are_sampled_and_failures_always_logged() -> None:
    """At a 25% rate, 1 of 4 delivered records logs a line; every dead letter does."""
    t = telemetry(rate=0.25)
    with capture_logs() as logs:
        for _ in range(4):
            t.delivery(delivery())
        t.delivery(delivery("dead_lettered", "http_400"))

    outcomes = [(e["event"], e["log_level"], e["outcome"]) for e in logs]
    assert outcomes == [("record", "info", "delivered"), ("record", "warning", "dead_lettered")]


def _inert(offset: int, event_type: str = "PAGE_VIEW", reason: str = "profile_only"):
    return Delivery(
        at=2.0,
        partition=3,
        offset=offset,
        event_id=f"view-{offset}",
        action="skip",
        order_id="",
        outcome="skipped",
        status=None,
        attempts=0,
        reason=reason,
        event_type=event_type,
    )


def _exposition(t: ServiceTelemetry) -> list[tuple[str, list[tuple[str, str]], float]]:
    """The service's own samples: not their creation times, nor the process's (CPU, memory),
    which move between two reads."""
    return sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for metric in t.metrics.registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created") and not s.name.startswith("process_")
    )


def test_records_finished_together_report_as_one_by_one() -> None:
    """A batch of inert records (``finished_together``) leaves the metrics, the live log and
    the sampled summary lines as ``finished`` and ``delivery`` for each would, and each line
    names its own record: partition, offset, key hash and event id from the record's scope."""
    batch = [
        FinishedRecord(_inert(10), b"user-a", 0.5),
        FinishedRecord(_inert(11, "APP_OPEN"), b"user-b", 7.0),
        FinishedRecord(_inert(12, "SCREEN_VIEW", "not_an_order"), None, None),
        FinishedRecord(_inert(13), b"user-c", -1.0),
    ]
    one_by_one, together = telemetry(rate=0.5), telemetry(rate=0.5)
    with capture_logs(processors=[add_record_scope]) as expected_lines:
        for item in batch:
            scope = CURRENT_RECORD.set(
                RecordScope(3, item.delivery.offset, item.key, item.delivery.event_id)
            )
            one_by_one.finished(item.delivery.outcome, item.event_age)
            one_by_one.delivery(item.delivery)
            CURRENT_RECORD.reset(scope)
    with capture_logs(processors=[add_record_scope]) as lines:
        together.finished_together(batch)

    assert _exposition(together) == _exposition(one_by_one)
    assert together.deliveries.recent(10) == one_by_one.deliveries.recent(10)
    assert lines == expected_lines
    assert [(e["offset"], e.get("key"), e["event_id"]) for e in lines] == [
        (10, sha256(b"user-a").hexdigest()[:12], "view-10"),
        (12, None, "view-12"),
    ]


def test_the_run_tally_counts_records_by_outcome_and_what_they_sent_by_action() -> None:
    """Every finished record, one by one or together, is in the run's tally (the ``stopped``
    line's): by outcome, and, when it was delivered or would have been in a dry run, by the
    action of its request; a skip, a dead letter or a parked record sent nothing."""
    t = telemetry(rate=0.0)
    for outcome, action in [
        ("delivered", "create"),
        ("dry_run", "create"),
        ("dry_run", "cancel"),
        ("dead_lettered", "update"),
        ("parked", "update"),
        ("skipped", "skip"),
    ]:
        t.delivery(replace(delivery(outcome), action=action))
    t.finished_together([FinishedRecord(_inert(10), b"user-a", 0.5)])

    assert t.tally.as_fields(dry_run=True) == {
        "outcomes": {"delivered": 1, "skipped": 2, "dry_run": 2, "dead_lettered": 1, "parked": 1},
        "would_send": {"create": 2, "update": 0, "cancel": 1},
    }
    assert set(t.tally.as_fields(dry_run=False)) == {"outcomes", "sent"}


@pytest.mark.parametrize(("rate", "kept"), [(0.0, 0), (0.01, 1), (0.5, 50), (1.0, 100)])
def test_sampler_keeps_its_share_deterministically(rate, kept) -> None:
    """Out of 100 calls the sampler keeps rate x 100 of them."""
    sampler = Sampler(rate)

    assert kept == sum(sampler.keep() for _ in range(100))


def test_the_profiles_gauge_reads_the_store_at_each_scrape() -> None:
    """``button_consumer_profiles`` follows every write, delete and drop of the store it
    counts, with no report in between (it was set only at restores, sweeps and drops)."""
    t = telemetry()
    store = ProfileStore(Retention(btn_ref_ms=DAY, device_id_ms=DAY, order_ms=DAY))
    t.count_profiles(store.__len__)
    seen = [sample(t, "profiles")]
    store.put(0, b"a", Profile(idfas=(Stamped("IDFA-A", 1_000),)))
    store.put(1, b"b", Profile(idfas=(Stamped("IDFA-B", 1_000),)))
    seen.append(sample(t, "profiles"))
    store.put(0, b"a", Profile())  # emptied: deleted
    seen.append(sample(t, "profiles"))
    store.drop_partition(1)
    seen.append(sample(t, "profiles"))

    assert seen == [0.0, 2.0, 1.0, 0.0]


def test_restore_progress_and_changelog_latency_are_reported() -> None:
    """Restoring partitions shows as in progress with the records left per partition, then
    done; changelog writes are timed."""
    t = telemetry()
    t.restore_started(2)
    RestoreReport([3, 4], t).batch(3, 500, 1_200)
    during = (
        sample(t, "restoring_partitions"),
        sample(t, "restore_remaining_records", partition="3"),
    )
    t.restore_finished([3, 4])

    class Inner:
        async def write(
            self, partition: int, key: bytes, value: bytes | None, *, epoch: int
        ) -> None:
            return None

    clock = iter([10.0, 10.25])

    async def write_one() -> None:
        await TimedChangelog(Inner(), t, monotonic=lambda: next(clock)).write(
            0, b"k", b"v", epoch=0
        )

    asyncio.run(write_one())

    assert (
        during,
        sample(t, "restoring_partitions"),
        sample(t, "restored_records_total"),
    ) == ((2.0, 1_200.0), 0.0, 500.0)
    assert sample(t, "restore_remaining_records", partition="3") is None
    assert sample(t, "changelog_write_seconds_sum") == 0.25


def test_the_readme_lists_every_metric() -> None:
    """Each exported metric family has a row in the README's metric table, and no row is stale."""
    exported = {
        f"{m.name}_total" if m.type == "counter" else m.name
        for m in Metrics.create(CollectorRegistry()).registry.collect()
    }
    rows = set(
        re.findall(r"^\| `((?:button_consumer|process)_[a-z_]+)`", README.read_text(), re.MULTILINE)
    )
    assert exported == rows


def test_event_age_measures_only_what_reached_button() -> None:
    """Freshness is how late orders reach Button: a skipped view (most of a merchant's
    traffic) or a dead letter would hide orders stuck in retries behind ages of records that
    are never sent. Only delivered records (and, in a dry run, those that would have been
    sent) are observed."""
    t = telemetry(rate=1.0)

    for outcome, age in [
        ("skipped", 5.0),
        ("dead_lettered", 600.0),
        ("parked", 60.0),
        ("delivered", 2.0),
        ("dry_run", 1.0),
    ]:
        t.finished(outcome, age)
    t.finished_together([FinishedRecord(_inert(20), b"user-d", 9.0)])

    registry = t.metrics.registry
    assert (
        registry.get_sample_value("button_consumer_event_age_seconds_count"),
        registry.get_sample_value("button_consumer_event_age_seconds_sum"),
    ) == (2.0, 3.0)


def test_a_long_restore_lands_in_a_bucket_of_its_own() -> None:
    """Restores of a large changelog take minutes (the troubleshooting table reads this
    histogram): a 4-minute one is told apart from a 20-minute one, not both in +Inf."""
    t = telemetry(rate=1.0)
    observe = t.metrics.profile_restore_seconds.observe
    observe(240.0)
    observe(1200.0)

    def at_most(bound: str) -> float | None:
        return t.metrics.registry.get_sample_value(
            "button_consumer_profile_restore_seconds_bucket", {"le": bound}
        )

    assert (at_most("300.0"), at_most("1800.0"), at_most("+Inf")) == (1.0, 2.0, 2.0)


def test_the_ready_gauge_agrees_with_readyz_through_every_change() -> None:
    """``button_consumer_ready`` is what /readyz answers, and ``broker_reachable`` what its body
    says: a caught-up consumer that loses the broker showed ready 1 on /metrics while /readyz
    said false (the gauge followed only the start and the stop)."""
    t = telemetry()

    def state() -> tuple[float | None, float | None]:
        assert sample(t, "ready") == float(t.health.ready())
        return sample(t, "ready"), sample(t, "broker_reachable")

    seen = [state()]
    t.started()
    seen.append(state())
    t.in_group(True)
    seen.append(state())
    t.broker_reachable(False)
    seen.append(state())
    t.broker_reachable(True)
    seen.append(state())
    t.auth_paused(True)
    seen.append(state())
    t.auth_paused(False)
    seen.append(state())
    t.restore_started(2)
    seen.append(state())
    t.restore_started(1)  # a second assignment's restore, beside the first
    t.restore_finished([0, 1])
    seen.append(state())
    t.restore_finished([2])
    seen.append(state())
    t.stopping()
    seen.append(state())

    assert seen == [
        (0.0, 1.0),
        (0.0, 1.0),
        (1.0, 1.0),
        (0.0, 0.0),
        (1.0, 1.0),
        (0.0, 1.0),
        (1.0, 1.0),
        (0.0, 1.0),
        (0.0, 1.0),
        (1.0, 1.0),
        (0.0, 1.0),
    ]


def test_a_member_out_of_its_group_is_not_ready_whatever_its_partitions() -> None:
    """Readiness follows the group's membership (``in_group``): ready from an assignment (an
    empty one too), not ready from a loss until the next one; partition counts change
    nothing. Before, the first partition report made the member assigned for good."""
    t = telemetry()
    t.started()
    t.in_group(True)
    assert (t.health.ready(), sample(t, "ready")) == (True, 1.0)
    t.in_group(False)
    t.partitions(assigned=0, paused=0)
    assert (t.health.ready(), t.health.assigned, sample(t, "ready")) == (False, False, 0.0)
    t.in_group(True)
    assert (t.health.ready(), sample(t, "ready")) == (True, 1.0)
