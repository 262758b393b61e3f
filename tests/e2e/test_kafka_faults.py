"""Faults on the Kafka side, end to end against the real broker and the Button sandbox.

- a member that takes over partitions it never owned while Button refuses the key (401) or is
  down (503), after a member left or joined, fetches nothing from them (intake measured by
  records received, not by the paused gauge);
- records too large for the dead-letter topic are dead-lettered as references, and every record
  before and after them is delivered;
- a committed offset that fell out of retention is reset visibly (log line, counter).
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from structlog.testing import capture_logs

from consumer.commands import produce_events
from consumer.domain.deadletter import H_ORIGINAL_SIZE, H_REASON
from tests.e2e.harness import (
    IN_FLIGHT,
    ServiceRunner,
    assert_sandbox_matches,
    committed_offsets,
    end_offsets,
    expected_orders,
    first_request_offsets,
    headers_of,
    past_events,
    read_all,
    stop_when_done,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

RECEIVED = "button_consumer_records_received_total"
ASSIGNED = "button_consumer_partitions_assigned"
PAUSED = "button_consumer_partitions_paused"
PAUSED_BY = "button_consumer_paused"
OFFSET_RESETS = "button_consumer_offset_resets_total"
MAX_IN_FLIGHT = 20
POLL_BATCH = 500  # WorkerOptions.max_poll_records
HOUR = 3600


def _paused_on(cause: str, runner: ServiceRunner) -> bool:
    reason = "auth" if cause == "401" else "breaker"
    return runner.metric(PAUSED_BY, {"reason": reason}) == 1


@pytest.mark.parametrize("change", ["leaves", "joins"])
@pytest.mark.parametrize("cause", ["401", "503"])
def test_partitions_taken_over_while_button_refuses_are_not_fetched(
    cause, change, kafka_bootstrap, make_topic, service_settings, sandbox, unique_name
):
    """Every member full and paused because Button refuses the key (401) or is down (503, the
    circuit breaker open); then a member leaves (the other takes partitions it never owned) or
    joins (it gets partitions another member held): no member receives more than MAX_IN_FLIGHT
    plus one poll batch while paused, nothing is committed past a record that waits for Button,
    and once Button answers again everything is delivered, once, in order."""
    partitions = 4
    topic = make_topic(partitions=partitions, prefix=f"takeover{cause}{change}")
    group = unique_name("group")
    overrides = {
        "KAFKA_GROUP_ID": group,
        "DELIVERY_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "DELIVERY_AUTH_PROBE_INTERVAL_SECONDS": "0.2",
        # 503 without Retry-After: retried, and the breaker opens on the outage.
        "DELIVERY_RETRY_MAX_ATTEMPTS": "1000",
        "DELIVERY_RETRY_MAX_ELAPSED_SECONDS": "3600",
        "DELIVERY_RETRY_MAX_DELAY_SECONDS": "0.2",
        "DELIVERY_BREAKER_FAILURE_THRESHOLD": "5",
        "DELIVERY_BREAKER_PROBE_INTERVAL_SECONDS": "0.2",
    }
    settings = service_settings(topic, **overrides)
    events = past_events(250, seed=21)
    expected = expected_orders(events, settings)
    if cause == "401":
        sandbox.set_api_keys([])
    else:
        sandbox.set_faults({"outage": {"seconds": HOUR, "status": 503}})

    first = ServiceRunner(service_settings(topic, **overrides)).start()
    runners = [first]
    try:
        if change == "leaves":
            runners.append(ServiceRunner(service_settings(topic, **overrides)).start())
        # The group settles before any record exists, so no member fetches a batch for
        # partitions it then gives up (whose abandoned work would let it fetch again to probe).
        share = partitions // len(runners)
        wait_until(
            lambda: all(r.metric(ASSIGNED) == share for r in runners),
            timeout=60,
            message="the members did not share the partitions",
        )
        produce_events(settings, events, partitions=partitions)
        ends = end_offsets(kafka_bootstrap, topic, partitions)
        assert sum(ends.values()) > 2 * (MAX_IN_FLIGHT + POLL_BATCH), "backlog too small to tell"
        wait_until(
            lambda: all(_paused_on(cause, r) for r in runners),
            timeout=60,
            message="a member did not pause while Button refused",
        )
        # Each member got full (one batch, over MAX_IN_FLIGHT) before it paused.
        before = [r.metric(RECEIVED, {"topic": topic}) for r in runners]
        assert all(received <= MAX_IN_FLIGHT + POLL_BATCH for received in before), before
        if change == "leaves":
            runners[1].stop()
            members = [first]
        else:
            runners.append(ServiceRunner(service_settings(topic, **overrides)).start())
            members = runners
        wait_until(
            lambda: all(r.metric(ASSIGNED) == partitions // len(members) for r in members),
            timeout=60,
            message="the partitions did not move",
        )
        wait_until(
            lambda: all(_paused_on(cause, r) for r in members),
            timeout=60,
            message="a member did not pause after the rebalance",
        )
        # Let them run paused: at least three more requests (probes) that Button refuses.
        requests = sandbox.stats()["requests"]
        sandbox.wait_for(
            lambda: sandbox.stats()["requests"] >= requests + 3,
            timeout=30,
            interval=0.1,
            message="the members stopped probing Button",
        )
        # Received while the group was paused (a joiner: all it received). A member whose
        # in-flight records all went with revoked partitions fetches one batch to probe with.
        during = [
            r.metric(RECEIVED, {"topic": topic}) - (before[i] if i < len(before) else 0)
            for i, r in enumerate(runners)
        ]
        assert all(received <= MAX_IN_FLIGHT + POLL_BATCH for received in during), during
        assert all(r.metric(PAUSED) == r.metric(ASSIGNED) for r in members)
        assert sandbox.orders() == []
        limits = first_request_offsets(kafka_bootstrap, settings, events, partitions)
        committed = committed_offsets(kafka_bootstrap, group, topic, partitions)
        assert all(committed[p] <= limits[p] for p in range(partitions)), (committed, limits)

        if cause == "401":
            sandbox.set_api_keys([sandbox.api_key])
        else:
            sandbox.clear_faults()
        sandbox.wait_for(
            lambda: set(expected) <= {o["order_id"] for o in sandbox.orders()},
            timeout=90,
            message="not every order reached Button once it answered again",
        )
        wait_for_committed(kafka_bootstrap, group, topic, partitions, 90)
        for runner in members:
            wait_until(lambda r=runner: r.metric(IN_FLIGHT) == 0, 30, message="still in flight")
    finally:
        for runner in runners:
            runner.stop()
    assert committed_offsets(kafka_bootstrap, group, topic, partitions) == ends
    assert read_all(kafka_bootstrap, settings.kafka.dlq_topic) == []
    assert_sandbox_matches(sandbox, expected)


def test_records_too_large_are_dead_lettered_and_everything_around_them_delivered(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """A 990 KiB record (over librdkafka's default limit, under the broker's) is dead-lettered
    whole; a 1.5 MB one (accepted by its topic, over KAFKA_MAX_MESSAGE_BYTES) as a too_large
    reference; the service never stops and delivers the records before and after them."""
    topic = make_topic(partitions=1, prefix="toolarge", config={"max.message.bytes": "2000000"})
    settings = service_settings(topic)
    before, after = past_events(6, seed=31), past_events(6, seed=32)
    expected = expected_orders(before + after, settings)
    produce_events(settings, before, partitions=1)
    big = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000})
    for key, size in ((b"big-990k", 990 * 1024), (b"big-1500k", 1_500_000)):
        big.produce(topic, key=key, value=b"\x07" * size, partition=0)
    assert big.flush(30) == 0
    produce_events(settings, after, partitions=1)
    ends = end_offsets(kafka_bootstrap, topic, 1)

    runner = start_service(settings)
    stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 1, 90)

    letters = read_all(kafka_bootstrap, settings.kafka.dlq_topic)
    shapes = sorted(
        (
            m.key(),
            len(m.value() or b""),
            headers_of(m)[H_REASON],
            headers_of(m).get(H_ORIGINAL_SIZE),
        )
        for m in letters
    )
    assert [s[0] for s in shapes] == [b"big-1500k", b"big-990k"]
    assert shapes[0][1:] == (0, "too_large", str(1_500_000))
    assert shapes[1][1] == 990 * 1024
    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 1) == ends
    assert_sandbox_matches(sandbox, expected)


def test_a_committed_offset_below_the_log_start_is_reset_visibly(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """The group's committed offset fell out of retention (the records behind it are deleted):
    auto.offset.reset starts the partition at the log start, which is logged as a warning with
    the topic, partition and offset, and counted; the records from the log start on are all
    delivered."""
    topic = make_topic(partitions=2, prefix="offreset")
    settings = service_settings(topic)
    group = settings.kafka.group_id
    lost, kept = past_events(8, seed=41), past_events(8, seed=42)
    produce_events(settings, lost, partitions=2)
    log_start = end_offsets(kafka_bootstrap, topic, 2)
    assert all(end > 1 for end in log_start.values()), log_start
    committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    committer.close()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, log_start[0])]).values():
        future.result(30)
    for future in admin.delete_records([TopicPartition(topic, 1, log_start[1])]).values():
        future.result(30)
    produce_events(settings, kept, partitions=2)
    expected = expected_orders(kept, settings)

    with capture_logs() as logs:
        runner = start_service(settings)
        ends = stop_when_done(runner, kafka_bootstrap, group, topic, 2, 90)

    resets = [e for e in logs if e["event"] == "kafka_offset_reset"]
    assert [
        (e["log_level"], e["topic"], e["partition"], e["offset"], e["reset_to"]) for e in resets
    ] == [("warning", topic, 0, 1, "earliest")]
    assert runner.metric(OFFSET_RESETS, {"reset_to": "earliest"}) == 1
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == ends
    assert_sandbox_matches(sandbox, expected)
