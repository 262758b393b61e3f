"""Defects of the restore's fence and repair at claim (DESIGN, 7), against a real broker: what
the changelog topic holds, and what a restore of it yields.

Each test is marked ``xfail(strict=True)``: it fails on the current code, and a fix turns it
into a pass that strict mode reports, so the mark comes off with the fix.
"""

from __future__ import annotations

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
from consumer.domain.profile import Profile, Retention
from consumer.domain.profile_epoch import FENCE_KEY, RestoredValue, fence_value, read_fence
from consumer.engine.profiles import PartitionRestore, ProfileStore
from consumer.engine.restore import RestoreCancel
from consumer.settings import Settings

pytestmark = pytest.mark.broker

DAY = 86_400_000
RETENTION = Retention(btn_ref_ms=7 * DAY, device_id_ms=30 * DAY, order_ms=60 * DAY)
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


def _restored(records: list[tuple[bytes, RestoredValue]]) -> ProfileStore:
    store = ProfileStore(RETENTION)
    restore = store.restoring(0)
    restore.apply(records)
    store.install(restore)
    return store


@pytest.mark.xfail(
    strict=True,
    reason=(
        "defect: a restore cancelled after its read (the partition revoked or lost) still "
        "claims, fences and repairs the partition; its repair, of the next owner's epoch, "
        "overwrites that owner's newer profile unseen"
    ),
)
def test_a_restore_cancelled_after_its_read_writes_no_fence_nor_repair(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """Scenario: the changelog holds A's fence (epoch 1) and A's profile of the user, B's
    fence (2) and B's newer profile, then A's late write (epoch 1; a restore fences it, and
    the owner repairs the key at claim). Member X is assigned the partition and restores it
    (``bootstrap._restorer``, on its restore thread). X's read is complete and installed
    when the partition is lost (or revoked with a restore that outlasts ``revoke_timeout``):
    ``Restores.cancel`` marks it cancelled now. Meanwhile Y, its next owner, restored the
    same changelog (X's fence is not in it yet), claimed epoch 3, repaired the key and
    wrote the user's newer profile (a purchase it processed).

    Expected (``consumer/engine/restore.py``: a cancelled partition "is then neither fenced
    nor made ready"): X writes nothing more to the partition, and a restore of the changelog
    holds Y's newer profile.
    Actual: ``_restorer`` checks the cancellation only before it reads and before ``follow``:
    X still claims epoch 3 (the same as Y's: both saw epoch 2 last), writes its fence and
    repairs the key with the profile its restore holds (B's), stamped 3, after Y's newer
    profile. A restore takes X's record (epoch 3 is not below Y's 3) and Y's watch does not
    report it (not below Y's epoch): Y's newer profile is overwritten, unseen, for good.
    """
    topic = make_topic(partitions=1)
    settings = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_PROFILE_TOPIC": topic},
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

    class LostAtInstall(ProfileStore):
        """X's store: the partition is lost right after X's read was installed."""

        def install(self, restore: PartitionRestore) -> None:
            super().install(restore)
            cancel.cancel([restore.partition])
            y_takes_over()

    x = LostAtInstall(RETENTION)
    telemetry = ServiceTelemetry(Metrics.create(CollectorRegistry()), Health(), DeliveryLog(10))
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    watch = ChangelogWatch(
        settings.kafka.reader_config(RESTORE_GROUP_ID), topic, lambda _p, _k, _e: None
    )
    before = len(_read(settings, unique_name("before")))
    try:
        _restorer(settings, x, producer, telemetry, watch)([0], cancel)
        followed = watch.following
    finally:
        watch.close()
        producer.close()

    records = _read(settings, unique_name("after"))
    after_y = before + 3  # Y's fence, repair and newer profile
    x_wrote = [
        (key, read_fence(value) if key == FENCE_KEY and isinstance(value, bytes) else None)
        for key, value in records[after_y:]
    ]
    assert followed == frozenset()
    held = _restored(records).get(0, KEY)
    assert (x_wrote, held) == ([], y_profile)
