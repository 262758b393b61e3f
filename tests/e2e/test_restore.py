"""The profile restore runs beside the poll loop: a large changelog is restored while the service
keeps polling and stays live, and no record is processed before its partition's profiles are
back. Real broker, the sandbox, the service in this process.

The restore is held by construction: the service's restore-progress report blocks on its first
batch until the test lets it go, so "a restore in progress" lasts exactly as long as the test
needs to observe it, whatever the machine's speed.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.adapters.kafka_producer import AckingProducer
from consumer.bootstrap import mapping_config
from consumer.commands import produce_events
from consumer.domain import mapping
from consumer.domain.profile import expires_at_ms
from consumer.domain.profile_codec import encode_profile
from consumer.engine.profile_memory import TRAIN_AFTER
from consumer.sandbox.testing import SandboxHandle
from consumer.settings import Settings
from tests.e2e.harness import ServiceRunner, wait_for_committed, wait_until
from tests.e2e.test_reliability_process import _app_open, _server_purchase

PARTITIONS = 3
FILLER_PROFILES = 60_000
"""Profiles of other users in the changelog: many batches of the restore's reader."""
DISTINCT_FILLER = TRAIN_AFTER + 1000
"""Filler profiles with identifiers of their own (the rest repeat one value): the store trains
its dictionary on the first ``TRAIN_AFTER`` values restored, so the test's users' profiles,
written after every filler, are held compressed and their purchases read them back."""


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _fill_changelog(settings: Settings, users: dict[str, tuple[str, str]]) -> int:
    """Write each user's profile after an app open (token and IDFA) and ``FILLER_PROFILES``
    other profiles to the changelog, round robin over its partitions; the users' own profiles
    go to the partition their purchases will be read from (the default partitioner's choice is
    not needed: the test's users are written to every partition)."""
    config = mapping_config(settings)
    now = datetime.now(UTC)
    when = now - timedelta(minutes=30)

    def value(user: str, token: str, idfa: str) -> bytes:
        _result, profile = mapping.process(_app_open(user, token, idfa, when), None, config, now)
        assert profile is not None
        return encode_profile(profile, expires_at_ms(profile, config.retention))

    filler = value("filler", "srctok-filler", str(uuid.uuid4()).upper())
    distinct = [
        value(f"filler-{i}", f"srctok-{uuid.uuid4().hex[:16]}", str(uuid.uuid4()).upper())
        for i in range(DISTINCT_FILLER)
    ]
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    try:
        for i in range(FILLER_PROFILES):
            key = f"filler-{i}".encode()
            producer.send_nowait(
                settings.kafka.profile_topic,
                key,
                distinct[i] if i < DISTINCT_FILLER else filler,
                partition=i % PARTITIONS,
            )
        for user, (token, idfa) in users.items():
            for partition in range(PARTITIONS):
                producer.send_nowait(
                    settings.kafka.profile_topic,
                    user.encode(),
                    value(user, token, idfa),
                    partition=partition,
                )
        assert producer.settle(120.0) == 0, "the changelog was not written"
    finally:
        producer.close()
    return FILLER_PROFILES + len(users) * PARTITIONS


class _HeldRestore:
    """Wraps the telemetry's restore progress: the first report blocks until ``release``."""

    def __init__(self, runner: ServiceRunner) -> None:
        telemetry = runner.service.telemetry
        self._report = telemetry.restore_progress
        self.holding = threading.Event()
        self._released = threading.Event()
        telemetry.restore_progress = self._progress  # type: ignore[method-assign]

    def _progress(self, *args: Any, **kwargs: Any) -> None:
        self.holding.set()
        if not self._released.wait(300.0):
            raise AssertionError("the held restore was never released")
        self._report(*args, **kwargs)

    def release(self) -> None:
        self._released.set()


def test_a_large_changelog_is_restored_while_the_loop_polls_and_healthz_stays_live(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    service_settings: Callable[..., Settings],
    sandbox: SandboxHandle,
) -> None:
    """While the restore of a large changelog is held mid-way: the poll loop keeps polling,
    ``/healthz`` answers 200, every partition counts as restoring, and no purchase reaches
    Button although they wait in the input topic. Once it is released, every purchase is
    delivered with the token and device id from its restored profile (held compressed: see
    ``DISTINCT_FILLER``)."""
    topic = make_topic(partitions=PARTITIONS, prefix="restore")
    changelog = make_topic(
        partitions=PARTITIONS, config={"cleanup.policy": "compact"}, prefix="restore-profiles"
    )
    settings = service_settings(topic, KAFKA_PROFILE_TOPIC=changelog)
    run = uuid.uuid4().hex[:8]
    users = {
        f"restore-{run}-{i}": (f"srctok-{uuid.uuid4().hex[:16]}", str(uuid.uuid4()).upper())
        for i in range(12)
    }
    written = _fill_changelog(settings, users)
    when = datetime.now(UTC) - timedelta(minutes=5)
    orders = {f"{user}-order": user for user in users}
    produce_events(
        settings,
        [_server_purchase(user, order, when) for order, user in orders.items()],
        partitions=PARTITIONS,
    )

    runner = ServiceRunner(settings)
    held = _HeldRestore(runner)
    runner.start()
    try:
        assert held.holding.wait(120.0), "the restore never started"
        health = runner.service.health
        port = runner.service.admin.port if runner.service.admin is not None else 0
        polls = []

        def polled_again() -> bool:
            polls.append(health.last_poll)
            return len(set(polls)) >= 5

        # The restore is held: the loop must poll on regardless (before, the restore ran inside
        # the poll, so the last poll stayed where it was until the restore ended).
        wait_until(polled_again, 60, message="the poll loop stopped during the restore")
        assert _healthz(port) == 200
        assert runner.metric("button_consumer_restoring_partitions") == PARTITIONS
        assert sandbox.orders() == [], "nothing is processed before its profiles are back"
        held.release()

        wait_for_committed(kafka_bootstrap, settings.kafka.group_id, topic, PARTITIONS, 120)
        assert _healthz(port) == 200
        assert runner.metric("button_consumer_restored_records_total") == written
        assert runner.metric("button_consumer_restoring_partitions") == 0
        for order_id, user in orders.items():
            order = sandbox.order(order_id)
            assert order is not None, order_id
            token, idfa = users[user]
            assert order["object"]["btn_ref"] == token, order
            assert order["object"]["customer"]["device_id"] == idfa, order
    finally:
        held.release()
        runner.stop()
