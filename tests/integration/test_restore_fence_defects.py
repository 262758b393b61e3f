"""The restore's fence and repair at claim against a revoke (DESIGN, 7), with a real broker:
what the changelog topic holds, and what a restore of it yields."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from consumer.adapters.admin import DeliveryLog, Health
from consumer.adapters.changelog_watch import ChangelogWatch
from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.metrics import Metrics
from consumer.adapters.telemetry import ServiceTelemetry
from consumer.adapters.topics import RESTORE_GROUP_ID, changelog_headers, restore_partitions
from consumer.bootstrap import _restorer
from consumer.domain.attribution import ResolvedToken, TokenSource
from consumer.domain.profile import Profile
from consumer.domain.profile_epoch import FENCE_KEY, RestoredValue, fence_value
from consumer.engine.profiles import PartitionRestore, ProfileStore
from consumer.engine.restore import RestoreCancel
from consumer.settings import Settings
from tests.fakes import RETENTION, restored

pytestmark = pytest.mark.broker

NOW_MS = int(datetime.now(UTC).timestamp() * 1000)
KEY = b"user-1"


def _with_token(token: str) -> Profile:
    return Profile(tokens=(ResolvedToken(token, TokenSource.EXPLICIT, NOW_MS - 60_000),))


def _owner(epoch: int) -> ProfileStore:
    """A store that claimed ``epoch`` of partition 0 (its writes are stamped with it)."""
    store = ProfileStore(RETENTION)
    store.restore(0, FENCE_KEY, fence_value(epoch - 1))
    assert store.claim_epoch(0) == epoch
    return store


def _write(settings: Settings, records: list[tuple[bytes, bytes | None, int]]) -> None:
    """Write (key, value, epoch) to partition 0 of the changelog, in order, acknowledged."""
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    try:
        for key, value, epoch in records:
            producer.send_nowait(
                settings.kafka.profile_topic,
                key,
                value,
                changelog_headers(value, epoch),
                partition=0,
            )
        assert producer.settle(30.0) == 0
    finally:
        producer.close()


def _read(settings: Settings, group: str) -> list[tuple[bytes, RestoredValue]]:
    """Every keyed record of partition 0, as a restore applies them."""
    records: list[tuple[bytes, RestoredValue]] = []
    restore_partitions(
        settings.kafka.reader_config(group),
        settings.kafka.profile_topic,
        [0],
        lambda _partition, batch: records.extend(batch),
    )
    return records


def test_a_revoke_at_install_never_lets_the_restore_fence_over_the_next_owner(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """The changelog holds A's fence (epoch 1) and A's profile of the user, B's fence (2) and
    B's newer profile, then A's late write (epoch 1; a restore fences it, and the owner repairs
    the key at claim). Member X restores the partition (``bootstrap._restorer``, on its restore
    thread); just as it installs its read, the partition is revoked (or lost): the revoke
    cancels X's restore, and Y, the next owner, restores the changelog, claims, repairs the
    key and writes the user's newer profile (a purchase it processed).

    Expected: a restore of the changelog holds Y's newer profile. X's install, claim, fence
    and repairs happen whole before the cancel returns (``RestoreCancel.holding``), so Y reads
    X's fence and claims above it, or not at all.
    Before: the restore checked the cancellation only before it read and before the watch's
    ``follow``: X claimed epoch 3 (the same as Y's: both saw 2 last), wrote its fence and
    repaired the key with B's profile, stamped 3, after Y's newer profile; a restore took X's
    record (3 is not below Y's 3), and Y's watch did not report it: Y's profile was overwritten,
    unseen, for good.
    """
    topic = make_topic(partitions=1)
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_PROFILE_TOPIC": topic,
            "KAFKA_TOPIC": make_topic(partitions=1),  # co-partitioned, as the restore checks
        },
        require_api_key=False,
    )
    a, b = _owner(1), _owner(2)
    older = a.write(0, KEY, _with_token("srctok-a"))
    late = a.write(0, KEY, _with_token("srctok-a-late"))
    newer = b.write(0, KEY, _with_token("srctok-b"))
    _write(
        settings,
        [
            (FENCE_KEY, fence_value(1), 1),
            (KEY, older.value, 1),
            (FENCE_KEY, fence_value(2), 2),
            (KEY, newer.value, 2),
            (KEY, late.value, 1),
        ],
    )
    cancel = RestoreCancel()
    y_profile = _with_token("srctok-y")

    def y_takes_over() -> None:
        """Y restores the changelog, claims, fences, repairs, and writes a newer profile."""
        y = ProfileStore(RETENTION)
        y_restore = y.restoring(0)
        for key, value in _read(settings, unique_name("y")):
            y_restore.apply(((key, value),))
        y.install(y_restore)
        epoch = y.claim_epoch(0)
        repairs = y.repairs(0)
        assert [w.key for w in repairs] == [KEY]
        current = y.write(0, KEY, y_profile)
        _write(
            settings,
            [(FENCE_KEY, fence_value(epoch), epoch)]
            + [(w.key, w.value, w.epoch) for w in repairs]
            + [(KEY, current.value, current.epoch)],
        )

    taken_over = threading.Event()

    def lose_and_take_over() -> None:
        """The revoke (or loss) of the partition, then Y's takeover: Y is assigned only once
        X's revoke returned, as the group protocol orders them."""
        cancel.cancel([0])
        y_takes_over()
        taken_over.set()

    revoke = threading.Thread(target=lose_and_take_over)

    class LostAtInstall(ProfileStore):
        """X's store: the partition is revoked just as X installs its read."""

        def install(self, restore: PartitionRestore, *, claim: bool = False) -> int:
            revoke.start()
            # Let the revoke and Y's takeover run to their end first, unless X holds off
            # the cancellation here (``RestoreCancel.holding``: then the revoke waits for X's
            # install, claim and fence, and Y's restore reads X's fence).
            if not cancel._lock.locked():
                assert taken_over.wait(60), "Y's takeover did not end"
            return super().install(restore, claim=claim)

    x = LostAtInstall(RETENTION)
    telemetry = ServiceTelemetry(Metrics.create(CollectorRegistry()), Health(), DeliveryLog(10))
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    watch = ChangelogWatch(
        settings.kafka.reader_config(RESTORE_GROUP_ID), topic, lambda _p, _k, _e: None
    )
    try:
        _restorer(settings, x, producer, telemetry, watch)([0], cancel)
    finally:
        revoke.join(60)
        watch.close()
        producer.close()
    assert taken_over.is_set(), "Y's takeover did not end"

    # X fenced the partition while it owned it, before the revoke returned, or not at all;
    # either way Y's newer profile is the one a restore holds.
    held = restored(_read(settings, unique_name("after"))).get(0, KEY)
    assert held == y_profile
