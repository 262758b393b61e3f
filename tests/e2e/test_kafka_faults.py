"""Faults on the Kafka side, end to end against the real broker and the Button sandbox.

- a member that takes over partitions it never owned while Button refuses the key (401) or is
  down (503), after a member left or joined, fetches nothing from them (intake measured by
  records received, not by the paused gauge);
- records too large for the dead-letter topic are dead-lettered as references, and every record
  before and after them is delivered;
- a committed offset that fell out of retention is reset visibly (log line, counter);
- the input topic deleted and created again under the running service: its offsets restart
  below those already received, and every record of the new topic is delivered and committed.
"""

from __future__ import annotations

import os
import signal
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from structlog.testing import capture_logs

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.kafka_admin import ensure_topics
from consumer.bootstrap import prepare_topics, topic_plan
from consumer.commands import produce_events
from consumer.domain.button import Action
from consumer.domain.deadletter import H_ORIGINAL_SIZE, H_REASON
from consumer.domain.profile import Profile, Stamped, epoch_ms
from consumer.domain.profile_codec import encode_profile
from consumer.domain.topics import created_topic_configs
from consumer.settings import Settings
from tests.e2e.harness import (
    IN_FLIGHT,
    ServiceProcess,
    ServiceRunner,
    assert_sandbox_converged,
    assert_sandbox_matches,
    committed_offsets,
    delivered_actions,
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
from tests.e2e.test_reliability_process import _TokenUsers

pytestmark = pytest.mark.broker

RECEIVED = "button_consumer_records_received_total"
ASSIGNED = "button_consumer_partitions_assigned"
PAUSED = "button_consumer_partitions_paused"
PAUSED_BY = "button_consumer_paused"
PROFILES = "button_consumer_profiles"
REBALANCES = "button_consumer_rebalances_total"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
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
        # Each member got full (over MAX_IN_FLIGHT) before it paused. How much it fetched
        # before then is not bounded by the pause: until the breaker counts an outage, a
        # member whose records drain (views finish at once) resumes and fetches again, as it
        # should; what the test bounds is what arrives once the gate or the breaker holds.
        before = [r.metric(RECEIVED, {"topic": topic}) for r in runners]
        assert all(received > MAX_IN_FLIGHT for received in before), before
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
        # A member whose in-flight records all went with its revoked partitions resumes to
        # fetch one batch to probe with, and pauses again once it holds it: wait (bounded) for
        # every partition to be paused again, rather than assume the loop got there already.
        wait_until(
            lambda: all(r.metric(PAUSED) == r.metric(ASSIGNED) for r in members),
            timeout=60,
            message="a member did not pause every partition after the rebalance",
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
        wait_until(
            lambda: all(r.metric(IN_FLIGHT) == 0 for r in members),
            timeout=30,
            message="records still in flight",
        )
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


def test_a_transactional_input_is_committed_to_its_end_past_markers_and_aborted_records(
    kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """A producer with transactions (Kafka Streams or Connect exactly-once, Debezium...)
    leaves a commit marker after each transaction, and an aborted transaction leaves its
    records and an abort marker: none is a record the service receives (read_committed). Once
    every record is finished, the group is committed to the partition's end, past them, as
    the Java consumer's position steps over them: no lag of one per partition that never
    drains (false stuck-partition alerts, KEDA counting it). Nothing aborted reaches Button."""
    topic = make_topic(partitions=1, prefix="transactional")
    settings = service_settings(topic)
    kept, aborted = past_events(6, seed=41), past_events(2, seed=42)
    encoder = build_encoder(
        Path(settings.schema.dir),
        settings.schema.registry_url,
        settings.schema.registry_config(),
        topic=topic,
    )
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(60)
    for events in (kept[: len(kept) // 2], kept[len(kept) // 2 :]):
        producer.begin_transaction()
        for event in events:
            producer.produce(topic, key=event.user_key.encode(), value=encoder.encode_event(event))
        producer.commit_transaction(60)
    producer.begin_transaction()
    for event in aborted:
        producer.produce(topic, key=event.user_key.encode(), value=encoder.encode_event(event))
    assert producer.flush(30) == 0
    producer.abort_transaction(60)
    # Two commit markers and one abort marker. The transaction coordinator writes the abort
    # marker after it answered the abort: until then the partition's end (its last stable
    # offset) stays at the aborted transaction's first record.
    expected_end = len(kept) + len(aborted) + 3
    ends = wait_until(
        lambda: (found := end_offsets(kafka_bootstrap, topic, 1))[0] == expected_end and found,
        30,
        message=f"the abort marker was not written: the end is not {expected_end}",
    )

    runner = start_service(settings)
    stop_when_done(runner, kafka_bootstrap, settings.kafka.group_id, topic, 1, 60)

    assert committed_offsets(kafka_bootstrap, settings.kafka.group_id, topic, 1) == ends
    expected = expected_orders(kept, settings)
    assert_sandbox_matches(sandbox, expected)
    never = {e.order_id for e in aborted if e.order_id} - set(expected)
    assert never
    assert all(sandbox.order(order_id) is None for order_id in never)


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
    # A group that consumed has its changelog (a missing one is not created for it: the
    # service would refuse to start with profiles lost).
    prepare_topics(settings, create=True)
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


def _order_ids(events: list[Any]) -> set[str]:
    return {e.order_id for e in events if e.order_id}


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_the_input_topic_recreated_under_the_running_service_is_delivered_from_its_start(
    protocol, kafka_bootstrap, make_topic, service_settings, start_service, sandbox
):
    """The input topic is deleted and created again (same partitions) while the service runs.
    The new topic's offsets lie at or below those the service received from the old one: its
    records are new all the same, and every one reaches Button; the group commits the new topic
    to its end, not past it (the broker deleted the old topic's committed offsets with it).

    What librdkafka (2.16) does: its fetches fail (unknown topic, unknown topic id) until the
    new topic id appears, the fetch at the old position is then out of range, and
    auto.offset.reset moves it to the new log start (``kafka_offset_reset``). Under the classic
    protocol the partitions stay assigned throughout (a topic missing from the metadata is
    given ``topic.metadata.propagation.max.ms`` before it is dropped: an hour here, so the gap
    cannot reach it). Under KIP-848 the coordinator also revokes the old topic's partitions and
    assigns the new one's, before or after that reset; the revocation commits the position
    reached, and a position of the old topic lies past the new topic's end."""
    topic = make_topic(partitions=2, prefix="recreate")
    settings = service_settings(
        topic,
        KAFKA_GROUP_PROTOCOL=protocol,
        KAFKA_CONFIG_TOPIC_METADATA_PROPAGATION_MAX_MS=str(HOUR * 1000),
    )
    group = settings.kafka.group_id
    before, after = past_events(8, seed=61), past_events(3, seed=62)
    assert _order_ids(after)
    assert not _order_ids(after) & _order_ids(before)
    produce_events(settings, before, partitions=2)
    old_ends = end_offsets(kafka_bootstrap, topic, 2)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def listed() -> dict[str, Any]:
        return dict(admin.list_topics(timeout=10).topics)

    with capture_logs() as logs:
        runner = start_service(settings)
        wait_for_committed(kafka_bootstrap, group, topic, 2, 90)
        assert_sandbox_matches(sandbox, expected_orders(before, settings))

        admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
        wait_until(lambda: topic not in listed(), 60, message="the topic is still listed")
        created = NewTopic(topic, num_partitions=2, replication_factor=-1)
        admin.create_topics([created], operation_timeout=30)[topic].result(60)
        wait_until(
            lambda: (
                (m := listed().get(topic)) is not None
                and m.error is None
                and all(p.leader >= 0 for p in m.partitions.values())
            ),
            60,
            message="the new topic has no leaders",
        )
        produce_events(settings, after, partitions=2, create=False)
        new_ends = end_offsets(kafka_bootstrap, topic, 2)
        # Every record of the new topic lies at an offset the service received already.
        assert all(0 < new_ends[p] <= old_ends[p] for p in (0, 1)), (old_ends, new_ends)

        try:
            sandbox.wait_for(
                lambda: _order_ids(after) <= {o["order_id"] for o in sandbox.orders()}, 60
            )
        except TimeoutError:
            dropped = [e for e in logs if e["event"] == "records_redelivered"]
            held = {o["order_id"] for o in sandbox.orders()}
            raise AssertionError(
                f"orders of the new topic never reached Button: "
                f"{sorted(_order_ids(after) - held)}; dropped as handed out again: {dropped}"
            ) from None
        rebalanced = [e for e in logs if e["event"] in ("partitions_revoked", "partitions_lost")]
        ends = stop_when_done(runner, kafka_bootstrap, group, topic, 2, 90)

    resets = {
        (e["partition"], e["offset"], e["reset_to"])
        for e in logs
        if e["event"] == "kafka_offset_reset"
    }
    moved = {(0, old_ends[0], "earliest"), (1, old_ends[1], "earliest")}
    if protocol == "classic":
        assert (resets, rebalanced) == (moved, []), "the partitions were assigned afresh"
    else:  # a revocation while the topic was gone lets the next assignment start afresh
        assert resets <= moved
    assert ends == new_ends
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == new_ends
    assert_sandbox_matches(sandbox, expected_orders(before + after, settings))


def test_a_member_stopped_past_its_session_timeout_writes_nothing_stale_when_continued(
    kafka_bootstrap, make_topic, sandbox, unique_name, tmp_path
):
    """Member A (classic protocol, 6 s session) waits on Button for one order X whose refunds
    are behind its create (the sandbox holds X's requests) and is stopped (SIGSTOP) past its
    session timeout; B takes the partition over and replays X's create (held too). A is
    continued: it learns it lost the partition and gives up its request (the sandbox records it
    abandoned, never applied) before anything is released, so nothing of A's lands after B's
    newer requests. Then, after a restart (profiles restored from the changelog), the rest of
    the refunds: every order ends in its expected state, no refund applied twice."""
    topic = make_topic(partitions=1, prefix="zombie")
    group = unique_name("group")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "KAFKA_GROUP_PROTOCOL": "classic",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_CONFIG_HEARTBEAT_INTERVAL_MS": "500",
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
        # Longer than any hold here: a held request is not timed out and retried meanwhile.
        "BUTTON_READ_TIMEOUT": "900",
        "BUTTON_TOTAL_TIMEOUT": "900",
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_RETRY_BASE_DELAY_SECONDS": "0.05",
        "DELIVERY_RETRY_MAX_DELAY_SECONDS": "1",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "10",
        # Far longer than any wait here: a lost partition's request kept for the revoke grace
        # (instead of abandoned at once) would still be waiting when the test gives up on A.
        "DELIVERY_REVOKE_TIMEOUT_SECONDS": "200",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
    settings = Settings.from_env(env)
    events = past_events(40, seed=51)
    expected = expected_orders(events, settings)
    refunded = [o for o, want in expected.items() if len(want.actions) >= 2]
    assert any(Action.UPDATE in expected[o].actions for o in refunded), "partial refunds"
    assert any(Action.CANCEL in expected[o].actions for o in refunded), "full refunds"
    # X: the order whose refunds come first; the first batch ends with its last event.
    last_event = {
        e.commerce.transaction_id: i for i, e in enumerate(events) if e.commerce is not None
    }
    held = min(refunded, key=lambda o: last_event[o])
    first, rest = events[: last_event[held] + 1], events[last_event[held] + 1 :]
    expected_first = expected_orders(first, settings)
    assert expected_first[held].actions == expected[held].actions
    later = [o for o in refunded if o in expected_first and o != held]
    assert later, "refunds of the first batch's orders come after the restart"
    produce_events(settings, first, partitions=1)
    ends = end_offsets(kafka_bootstrap, topic, 1)

    processes: list[ServiceProcess] = []
    try:
        with sandbox.holding(order_ids=[held]):
            a = ServiceProcess(env, tmp_path / "a.log").start()
            processes.append(a)
            sandbox.wait_parked(held, timeout=60)
            os.kill(a.pid, signal.SIGSTOP)
            b = ServiceProcess(env, tmp_path / "b.log").start()
            processes.append(b)
            # B owns the partition (A's session expired) and replays X's create: held too.
            wait_until(
                lambda: sandbox.hold_state()["parked_by_order"].get(held, 0) >= 2,
                timeout=90,
                interval=0.1,
                message=f"B did not take the partition over: {b.log_tail()}",
            )
            os.kill(a.pid, signal.SIGCONT)
            # A learns it lost the partition and abandons its request, which is never applied.
            wait_until(
                lambda: sandbox.hold_state()["parked_by_order"].get(held, 0) == 1,
                timeout=60,
                interval=0.1,
                message=f"A kept waiting on Button for a lost partition: {a.log_tail()}",
            )
            assert '"partitions_lost"' in a.log_path.read_text(encoding="utf-8")
        wait_for_committed(kafka_bootstrap, group, topic, 1, timeout=90)
        assert all(p.terminate() == 0 for p in processes), b.log_tail()

        history = sandbox.order(held)["history"]
        assert [e["fault"] for e in history].count("hold_abandoned") == 1, history
        assert not [e for e in history if e["status"] == 409], history  # no second create
        assert delivered_actions(sandbox.order(held)) == expected_first[held].actions, history
        assert committed_offsets(kafka_bootstrap, group, topic, 1) == ends
        assert_sandbox_converged(sandbox, expected_first)

        # A restart restores the profiles from the changelog; the rest of the refunds apply
        # to the state B left, once each.
        produce_events(settings, rest, partitions=1)
        c = ServiceProcess(env, tmp_path / "c.log").start()
        processes.append(c)
        wait_for_committed(kafka_bootstrap, group, topic, 1, timeout=90)
        assert c.terminate() == 0, c.log_tail()
    finally:
        for process in processes:
            process.kill()
    assert_sandbox_converged(sandbox, expected)
    assert read_all(kafka_bootstrap, f"{topic}.dlq") == []


STORM = 100_000


def _expired_profile(idfa: str) -> bytes:
    """A changelog value whose every part expired a day ago (epoch 0, unstamped)."""
    long_ago = datetime.now(UTC) - timedelta(days=400)
    profile = Profile(idfas=(Stamped(idfa, epoch_ms(long_ago)),))
    return encode_profile(profile, epoch_ms(datetime.now(UTC) - timedelta(days=1)))


class _Tail:
    """The latest value of each key of a topic, read on from its start as it grows."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._reader = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "tail", "enable.auto.commit": False}
        )
        self._reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._last: dict[bytes, bytes | None] = {}

    def read(self) -> dict[bytes, bytes | None]:
        """Each key's latest value read so far (None: a tombstone), after reading what came."""
        while batch := self._reader.consume(10_000, timeout=0.2):
            for message in batch:
                if message.error() is None:
                    self._last[message.key() or b""] = message.value()
        return self._last

    def close(self) -> None:
        self._reader.close()


def test_an_expiry_storm_keeps_the_member_live_and_erases_no_new_profile(
    kafka_bootstrap, make_topic, service_settings, sandbox
):
    """100,000 profiles in the changelog expired a day ago (downtime, a retention change); some
    of their users come back (an app open with a new token and device id) while the member
    expires the rest: /healthz answers live throughout (polled over HTTP, with a 5 s stall
    limit), the member keeps its partitions (one assignment, no revocation or loss), every
    expired profile gets its tombstone but a returning user's new value is the last of its key,
    and after a restart their purchases carry the new token and device id."""
    partitions = 2
    topic = make_topic(partitions=partitions, prefix="storm")
    settings = service_settings(topic, MAPPING_EXPIRE_INTERVAL_SECONDS="1")
    changelog = settings.kafka.profile_topic
    dlq_config, changelog_config = created_topic_configs(topic_plan(settings), 1)
    ensure_topics(
        settings.kafka.admin_config(),
        {changelog: changelog_config, settings.kafka.dlq_topic: dlq_config},
        partitions=partitions,
        replication=1,
    )
    users = _TokenUsers(20)
    others = [f"storm-{uuid.uuid4().hex[:8]}-{i}" for i in range(STORM - len(users.users))]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 50})
    for i, user in enumerate([*users.users, *others]):
        # The default partitioner, as the input's producer: a user's changelog partition is
        # the partition of their records.
        producer.produce(changelog, key=user.encode(), value=_expired_profile(f"old-{i}"))
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0

    runner = ServiceRunner(settings).start()
    runner.service.health.poll_stall_seconds = 5.0
    live: list[int] = []
    storm_over = threading.Event()
    admin = runner.service.admin
    assert admin is not None

    def probe_health() -> None:
        while not storm_over.is_set():
            url = f"http://127.0.0.1:{admin.port}/healthz"
            try:
                with _DIRECT.open(url, timeout=10) as response:
                    live.append(response.status)
            except urllib.error.HTTPError as exc:
                live.append(exc.code)
            except OSError:
                pass  # not listening yet
            storm_over.wait(0.05)

    prober = threading.Thread(target=probe_health, daemon=True)
    tail = _Tail(kafka_bootstrap, changelog, partitions)
    try:
        wait_until(lambda: runner.metric(ASSIGNED) == partitions, 120, message="no assignment")
        prober.start()
        produce_events(settings, users.app_opens(), partitions=partitions)
        # The storm is over when only the returning users' profiles are held, every expired
        # one's tombstone is in the changelog (the gauge counts the store at once: it reaches
        # the returning users as soon as the scan removed the rest, before their tombstones
        # are written), and the returning users' app opens are committed.
        wait_until(
            lambda: runner.metric(PROFILES) == len(users.users),
            timeout=120,
            interval=0.2,
            message="the expired profiles were not all removed",
        )
        expired = [u.encode() for u in others]

        def tombstoned() -> bool:
            last = tail.read()
            return all(last.get(key, b"") is None for key in expired)

        wait_until(
            tombstoned,
            timeout=120,
            interval=0.2,
            message="the expired profiles' tombstones were not all written",
        )
        wait_for_committed(kafka_bootstrap, settings.kafka.group_id, topic, partitions, 60)
        storm_over.set()
        prober.join(30)
        assert live, "/healthz never answered"
        assert set(live) == {200}, sorted(set(live))
        print(f"storm: {len(live)} /healthz answers, all live")
        assert runner.metric(ASSIGNED) == partitions
        assert runner.metric(REBALANCES, {"kind": "assign"}) == 1
        assert runner.metric(REBALANCES, {"kind": "revoke"}) == 0
        assert runner.metric(REBALANCES, {"kind": "lost"}) == 0
        runner.stop()
    finally:
        storm_over.set()
        runner.stop()
        tail.close()

    last: dict[bytes, bytes | None] = {}
    for message in read_all(kafka_bootstrap, changelog, timeout=120):
        last[message.key()] = message.value()
    returning = {u.encode() for u in users.users}
    assert all(last[key] is not None for key in returning), "a new profile was erased"
    erased = [k for k, v in last.items() if v is None]
    assert len(erased) == len(others), (len(erased), len(others))

    buys, orders = users.purchases("after-storm")
    produce_events(settings, buys, partitions=partitions)
    again = ServiceRunner(settings).start()
    try:
        stop_when_done(again, kafka_bootstrap, settings.kafka.group_id, topic, partitions, 120)
    finally:
        again.stop()
    users.assert_enriched(sandbox, orders)
