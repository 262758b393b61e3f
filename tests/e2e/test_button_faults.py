"""Faults on Button's side end to end (issue 11): a proxy's 403 page, one order's 403, rate
limits with long ``Retry-After``s, an outage longer than the retry budget, a dry run then live.

The service runs in a thread against the real broker and the sandbox; the expected final state
comes from the pure mapping (``expected_orders``) and is read back from the sandbox. Every fault
lasts until the test ends it (a one-hour outage on the sandbox's clock, cleared by the test once
the state it wants has been observed), every wait has a deadline and a message, and the budgets
and caps are small settings, so each phase holds by construction and the tests stay short.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from consumer.commands import produce_events
from consumer.domain.deadletter import H_ORDER_ID, H_REASON, H_STATUS
from consumer.domain.events import EventType
from tests.e2e.harness import (
    ServiceProcess,
    assert_sandbox_matches,
    committed_offsets,
    end_offsets,
    expected_orders,
    headers_of,
    past_events,
    read_all,
    stop_when_done,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

PARTITIONS = 3
PAUSED = "button_consumer_partitions_paused"
AUTH_PAUSED = "button_consumer_auth_paused"
BREAKER_OPEN = "button_consumer_breaker_open"
ASSIGNED = "button_consumer_partitions_assigned"
RECEIVED = "button_consumer_records_received_total"
HOUR = 3600


def _done(runner, settings) -> None:
    kafka = settings.kafka
    stop_when_done(runner, kafka.bootstrap_servers, kafka.group_id, kafka.topic, PARTITIONS)


def _all_delivered(sandbox, expected, message: str) -> None:
    sandbox.wait_for(
        lambda: set(expected) <= {o["order_id"] for o in sandbox.orders()},
        timeout=60,
        message=message,
    )


def _fault_count(sandbox, label: str) -> int:
    return int(sandbox.stats()["faults"].get(label, 0))


def test_a_proxy_answering_403_html_to_everything_holds_refunds_until_button_is_back(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Orders delivered; then every request is answered 403 with an HTML page while their
    refunds and cancels arrive: none is marked done (offsets held, nothing dead-lettered, the
    service paused behind the auth gate). Once Button answers again every order ends in its
    right state."""
    topic = make_topic(partitions=PARTITIONS, prefix="proxy403")
    settings = service_settings(topic, DELIVERY_AUTH_PROBE_INTERVAL_SECONDS="0.2")
    events = past_events(20, seed=31)
    buys = [e for e in events if e.event_type is not EventType.REFUND]
    refunds = [e for e in events if e.event_type is EventType.REFUND]
    expected = expected_orders(buys + refunds, settings)
    later = [o for o in expected.values() if len(o.actions) > 1]
    assert later, "the sample set has refunds of delivered orders"
    runner = start_service(settings)
    produce_events(settings, buys, partitions=PARTITIONS)
    _all_delivered(sandbox, expected, "the orders were not delivered before the 403s")
    before = wait_for_committed(kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS)

    sandbox.set_faults({"outage": {"seconds": HOUR, "status": 403, "body": "html"}})
    produce_events(settings, refunds, partitions=PARTITIONS)
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    wait_until(
        lambda: runner.metric(AUTH_PAUSED) == 1 and _fault_count(sandbox, "outage_403") >= 3,
        timeout=30,
        message="the service did not pause on the proxy's 403 page",
    )
    probes = _fault_count(sandbox, "outage_403")
    wait_until(
        lambda: _fault_count(sandbox, "outage_403") >= probes + 3,
        timeout=30,
        message="the service stopped probing behind the 403s",
    )
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS)
    held = [p for p in ends if ends[p] > before[p]]
    assert all(committed[p] < ends[p] for p in held), (committed, ends)
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    for order in later:
        applied = [r for r in sandbox.requests_for(order.order_id) if r["status"] == 200]
        assert len(applied) == 1, (order.order_id, applied)  # only its create

    sandbox.clear_faults()
    sandbox.wait_for(
        lambda: all((sandbox.order(o.order_id) or {}).get("status") == o.status for o in later),
        timeout=60,
        message="the refunds and cancels did not reach Button after the 403s",
    )
    _done(runner, settings)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert_sandbox_matches(sandbox, expected)


def test_a_403_on_one_orders_create_dead_letters_it_and_the_rest_flows(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """Button refuses one order's create (403) while the key is accepted: that record is
    dead-lettered ``http_403``, every other order is delivered and every partition commits to
    its end."""
    topic = make_topic(partitions=PARTITIONS, prefix="one403")
    settings = service_settings(topic, DELIVERY_AUTH_PROBE_INTERVAL_SECONDS="0.2")
    events = past_events(15, seed=32)
    expected = expected_orders(events, settings)
    refused = sorted(expected)[0]
    sandbox.set_faults(
        {"rules": [{"order_id": refused, "operation": "create", "fail_first": HOUR, "status": 403}]}
    )
    produce_events(settings, events, partitions=PARTITIONS)
    runner = start_service(settings)

    rest = {k: v for k, v in expected.items() if k != refused}
    _all_delivered(sandbox, rest, "the other orders were not delivered")
    ends = wait_for_committed(kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS)
    _done(runner, settings)

    letters = [headers_of(m) for m in read_all(kafka_bootstrap, settings.kafka.dlq_topic)]
    assert letters, "the refused create was not dead-lettered"
    first = letters[0]
    assert (first[H_ORDER_ID], first[H_REASON], first[H_STATUS]) == (refused, "http_403", "403")
    assert {h[H_ORDER_ID] for h in letters} == {refused}
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS) == ends
    assert sandbox.order(refused) is None
    assert_sandbox_matches(sandbox, rest)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_rate_limit_with_a_long_retry_after_pauses_intake_and_dead_letters_nothing(
    form, kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """429 on every request with ``Retry-After`` 60 s (or an HTTP date ten minutes ahead), far
    beyond a 1 s retry budget: the breaker opens and pauses intake (records produced meanwhile
    are not read), nothing is dead-lettered or parked, and after the episode everything is
    delivered."""
    topic = make_topic(partitions=PARTITIONS, prefix=f"ratelimit-{form}")
    settings = service_settings(
        topic,
        DELIVERY_RETRY_MAX_ELAPSED_SECONDS="1",
        DELIVERY_RETRY_MAX_ATTEMPTS="3",
        DELIVERY_RETRY_AFTER_MAX_SECONDS="0.3",
        DELIVERY_BREAKER_PROBE_INTERVAL_SECONDS="0.3",
    )
    first, meanwhile = past_events(12, seed=33), past_events(8, seed=133)
    expected = expected_orders(first + meanwhile, settings)
    seconds = 60 if form == "seconds" else 600
    runner = start_service(settings)
    wait_until(lambda: runner.metric(ASSIGNED) == PARTITIONS, 30, message="no assignment")
    sandbox.set_faults(
        {
            "outage": {"seconds": HOUR, "status": 429},
            "retry_after": {"seconds": seconds, "format": form},
        }
    )
    produce_events(settings, first, partitions=PARTITIONS)
    wait_until(
        lambda: (
            runner.metric(BREAKER_OPEN, {"reason": "http_429"}) == 1
            and runner.metric(PAUSED) == PARTITIONS
        ),
        timeout=30,
        message="the breaker did not open and pause every partition on the 429s",
    )
    received = runner.metric(RECEIVED, {"topic": topic})
    produce_events(settings, meanwhile, partitions=PARTITIONS)
    answered = _fault_count(sandbox, "outage_429")
    # Several probes later (each answered 429 again) the breaker still holds intake: nothing
    # produced while it was open has been read, nothing dead-lettered, nothing committed past.
    wait_until(
        lambda: _fault_count(sandbox, "outage_429") >= answered + 3,
        timeout=30,
        message="the breaker stopped probing",
    )
    assert runner.metric(RECEIVED, {"topic": topic}) == received
    assert runner.metric(BREAKER_OPEN, {"reason": "http_429"}) == 1
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    committed = committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS)
    assert all(committed[p] < ends[p] for p in ends if ends[p]), (committed, ends)

    sandbox.clear_faults()
    _all_delivered(sandbox, expected, "not every order was delivered after the rate limit")
    _done(runner, settings)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert runner.metric("button_consumer_orders_parked_total") == 0
    assert_sandbox_matches(sandbox, expected)


def test_an_outage_longer_than_the_retry_budget_pauses_then_delivers_everything(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """503 without ``Retry-After`` on every request for several times a 1 s retry budget: the
    breaker opens (an outage, not the records' fault), nothing is dead-lettered, and once Button
    is back every order is delivered."""
    topic = make_topic(partitions=PARTITIONS, prefix="longoutage")
    budget = 1.0
    settings = service_settings(
        topic,
        DELIVERY_RETRY_MAX_ELAPSED_SECONDS=str(budget),
        DELIVERY_RETRY_MAX_ATTEMPTS="1000",
        DELIVERY_RETRY_MAX_DELAY_SECONDS="0.2",
        DELIVERY_BREAKER_FAILURE_THRESHOLD="5",
        DELIVERY_BREAKER_PROBE_INTERVAL_SECONDS="0.2",
    )
    events = past_events(20, seed=34)
    expected = expected_orders(events, settings)
    runner = start_service(settings)
    wait_until(lambda: runner.metric(ASSIGNED) == PARTITIONS, 30, message="no assignment")
    sandbox.set_faults({"outage": {"seconds": HOUR, "status": 503}})
    produce_events(settings, events, partitions=PARTITIONS)
    wait_until(
        lambda: runner.metric(BREAKER_OPEN, {"reason": "button_unavailable"}) == 1,
        timeout=30,
        message="the breaker did not open during the outage",
    )
    opened = time.monotonic()
    # The outage outlasts the budget three times over, measured from the breaker's opening
    # (every record's first attempt came before it), while probes keep failing.
    wait_until(
        lambda: time.monotonic() - opened > 3 * budget and _fault_count(sandbox, "outage_503") > 0,
        timeout=30,
        message="the outage did not outlast the retry budget",
    )
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert sandbox.orders() == []

    sandbox.clear_faults()
    _all_delivered(sandbox, expected, "not every order was delivered after the outage")
    _done(runner, settings)

    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert_sandbox_matches(sandbox, expected)


def test_a_dry_run_then_live_on_the_default_settings_delivers_every_order(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """A dry run over the events sends nothing and finishes in its own group; the live run with
    the same settings then sends every order."""
    topic = make_topic(partitions=PARTITIONS, prefix="dryrun")
    live = service_settings(topic)
    dry = service_settings(topic, KAFKA_GROUP_ID=live.kafka.group_id, DELIVERY_DRY_RUN="true")
    events = past_events(15, seed=35)
    expected = expected_orders(events, live)
    produce_events(live, events, partitions=PARTITIONS)

    dry_runner = start_service(dry)
    dry_kafka = dry.kafka
    stop_when_done(dry_runner, kafka_bootstrap, dry_kafka.group_id, topic, PARTITIONS, timeout=60)
    assert sandbox.orders() == [], "the dry run sent something"
    assert dry_kafka.group_id != live.kafka.group_id

    runner = start_service(live)
    _all_delivered(sandbox, expected, "the live run after the dry run did not send every order")
    _done(runner, live)
    assert_sandbox_matches(sandbox, expected)


def test_sigterm_while_records_wait_out_a_60_s_retry_after_exits_in_time_and_loses_nothing(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox, tmp_path: Path
):
    """``button-consumer run`` with every request answered 429 ``Retry-After: 60``: SIGTERM
    while records wait at the open breaker exits 0 within the grace period (shutdown budget
    plus the chart's 3 s), commits no record that was not sent; a restart once Button is back
    delivers every order exactly once."""
    topic = make_topic(partitions=PARTITIONS, prefix="sigterm429")
    settings = service_settings(topic, DELIVERY_SHUTDOWN_TIMEOUT_SECONDS="10")
    kafka = settings.kafka
    events = past_events(15, seed=36)
    expected = expected_orders(events, settings)
    sandbox.set_faults(
        {
            "outage": {"seconds": HOUR, "status": 429},
            "retry_after": {"seconds": 60, "format": "seconds"},
        }
    )
    produce_events(settings, events, partitions=PARTITIONS)
    ends = end_offsets(kafka_bootstrap, topic, PARTITIONS)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": kafka.group_id,
        "KAFKA_DLQ_TOPIC": kafka.dlq_topic,
        "KAFKA_PROFILE_TOPIC": kafka.profile_topic,
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "10",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
    }
    process = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        sandbox.wait_for(
            lambda: _fault_count(sandbox, "outage_429") >= 1,
            timeout=60,
            message="no request reached Button's rate limit",
        )
        started = time.monotonic()
        code = process.terminate(timeout=60)
        took = time.monotonic() - started
    finally:
        process.kill()

    assert code == 0, process.log_tail()
    assert took < 10 + 3, f"stopped after {took:.1f} s"
    assert sandbox.orders() == []
    assert read_all(kafka_bootstrap, kafka.dlq_topic) == []
    committed = committed_offsets(kafka_bootstrap, kafka.group_id, topic, PARTITIONS)
    assert any(committed[p] < ends[p] for p in ends), (committed, ends)

    sandbox.clear_faults()
    runner = start_service(settings)
    _all_delivered(sandbox, expected, "the restart did not deliver every order")
    _done(runner, settings)
    assert read_all(kafka_bootstrap, kafka.dlq_topic) == []
    assert_sandbox_matches(sandbox, expected)


def _requests_counted(runner, **labels: str) -> float:
    """``button_requests_total`` summed over the series whose labels include ``labels``."""
    return sum(
        float(s.value)
        for family in runner.service.metrics.registry.collect()
        if family.name == "button_consumer_button_requests"
        for s in family.samples
        if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_hard_outage_counts_the_breakers_probes_as_failed_requests(
    make_topic, service_settings, start_service, sandbox
):
    """Button answers 500 to everything: the breaker opens and probes. Every request the sandbox
    answered 500 is counted in ``button_requests_total``, the probes as ``action="probe"``;
    they were not counted, so the error ratio of ButtonConsumerButtonErrors stopped at the
    failures before the breaker opened and a full outage never fired it."""
    topic = make_topic(partitions=PARTITIONS, prefix="hardoutage")
    settings = service_settings(
        topic,
        DELIVERY_BREAKER_FAILURE_THRESHOLD="5",
        DELIVERY_BREAKER_PROBE_INTERVAL_SECONDS="0.2",
    )
    runner = start_service(settings)
    wait_until(lambda: runner.metric(ASSIGNED) == PARTITIONS, 30, message="no assignment")
    sandbox.set_faults({"error_rates": {"500": 1.0}})
    produce_events(settings, past_events(12, seed=35), partitions=PARTITIONS)
    wait_until(
        lambda: runner.metric(BREAKER_OPEN, {"reason": "button_unavailable"}) == 1,
        timeout=30,
        message="the breaker did not open during the outage",
    )
    opened = _fault_count(sandbox, "500")
    # Several probes answered 500 since the breaker opened, each counted (a probe in flight
    # may be answered but not counted yet: wait for the two to agree).
    wait_until(
        lambda: (
            _fault_count(sandbox, "500") >= opened + 3
            and _requests_counted(runner, status_class="5xx") == _fault_count(sandbox, "500")
        ),
        timeout=30,
        message="the probes answered 500 were not counted as requests",
    )
    probes = _requests_counted(runner, action="probe", outcome="server_error", status_class="5xx")
    assert probes >= 3
    assert runner.metric(BREAKER_OPEN, {"reason": "button_unavailable"}) == 1
    sandbox.clear_faults()
