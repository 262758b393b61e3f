"""``button-consumer replay-dlq``: send dead-lettered records back through the service, in order.

A replayed record goes back to the input topic, to the *partition it came from* (read from its
``__connect.errors.partition`` header, so the profile of its user is there, whatever partitioner
the original producer used), with its original key, value and headers, plus
``button.replayed`` (where it was in the DLQ) and ``button.replayed.parked``. The service then
processes it like any record: Button treats a repeated create as a conflict (done) and the
profile remembers applied refunds, so replaying twice is harmless. A replayed record that was
*not* itself parked releases its order from parking; the records parked behind it follow it in
the same order they were dead-lettered, because the DLQ is keyed like the input. With
``--release-keys``, a replayed record that still cannot be decoded releases its key instead of
parking it again (``button.replayed.release``): bytes that never decode must not hold the
user's orders for good.

A filter (``--reason``, ``--order-id``, ``--since``/``--until``) never releases an order
without the records parked behind it: a parked dead letter that follows a first dead letter the
run replays is replayed after it, selected or not (``ReplayReport.followers`` counts every
dead letter replayed after the first one it follows, as a whole-DLQ replay counts them); one
the filter selects whose first dead letter the run read but does not
replay is *held* (left in the DLQ, counted in ``ReplayReport.held``), since replayed alone it
would only be parked again (``_Leaders``).

Progress is remembered by a consumer group on the DLQ when the whole DLQ is replayed (or when
``--group-id`` is given): the next run starts after the last replayed record. A filtered replay
without ``--group-id`` reads the whole DLQ and remembers nothing, so records it filtered out stay
available to a later replay. ``--dry-run`` lists what would be replayed and writes nothing.

Only what was replayed is remembered: the group is committed, per DLQ partition, up to the
first dead letter the run did not replay, whichever the cause: its write failed (the command
exits 1 naming each such one, so a rerun, once the cause is fixed, starts at it), it was held
back, or the filter left it out. A filtered run under ``--group-id`` therefore never hides a dead
letter from a later run of that group, whatever that run's filter: the group is the DLQ's
progress, not the filter's; what the filtered run replayed after the first one it left is read
(and replayed) again by the later run, which is harmless (DESIGN, 2), and keeps the first dead
letters there for the parked records behind them to follow (``_Leaders``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TextIO, cast

from consumer.adapters.kafka_admin import await_brokers, judge_acl_needs
from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.kafka_reader import PartitionReader
from consumer.domain.acls import replay_acl_needs
from consumer.domain.deadletter import (
    H_DEAD_LETTERED_AT,
    H_KEY_RELEASED,
    H_ORDER_ID,
    H_PARKED,
    H_PARKS_ORDER,
    H_PARTITION,
    H_REASON,
    H_REPLAYED,
    H_REPLAYED_PARKED,
    H_REPLAYED_PARKS_ORDER,
    H_REPLAYED_REASON,
    H_REPLAYED_RELEASE,
    H_REPLAYED_STAGE,
    H_STAGE,
    H_TOPIC,
    Stage,
    header_map,
    strip_own_headers,
)
from consumer.domain.events import stripped_id
from consumer.domain.wording import counted
from consumer.errors import AuthorizationError, BrokerError, ConfigError, TopicError
from consumer.ports import Headers, Record
from consumer.settings import Settings


def order_of(headers: Mapping[str, str]) -> str:
    """The order id a dead letter's headers name, without surrounding whitespace."""
    return stripped_id(headers.get(H_ORDER_ID, ""))


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which dead letters to replay; an empty criterion matches everything."""

    reasons: frozenset[str] = frozenset()
    order_ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def __post_init__(self) -> None:
        # One order id rule with the service (``events.stripped_id``): ``--order-id " B5 "``
        # is B5, and a dead letter an earlier release wrote with a padded id is B5's too.
        object.__setattr__(self, "order_ids", frozenset(map(stripped_id, self.order_ids)))

    def filters(self) -> bool:
        """Whether any criterion is set (without one, every dead letter matches)."""
        return bool(
            self.reasons or self.order_ids or self.since_ms is not None or self.until_ms is not None
        )

    def matches(self, headers: dict[str, str]) -> bool:
        if self.reasons and headers.get(H_REASON, "") not in self.reasons:
            return False
        if self.order_ids and order_of(headers) not in self.order_ids:
            return False
        at = _int(headers.get(H_DEAD_LETTERED_AT))
        if self.since_ms is not None and (at is None or at < self.since_ms):
            return False
        return not (self.until_ms is not None and (at is None or at >= self.until_ms))


@dataclass(frozen=True, slots=True)
class ReplayFailure:
    """A dead letter that was not replayed: its DLQ partition and offset, and why."""

    partition: int
    offset: int
    error: str

    def __str__(self) -> str:
        return f"dead letter {self.partition}:{self.offset} not replayed: {self.error}"


@dataclass(slots=True)
class ReplayReport:
    """What one run did. ``replayed`` counts acknowledged records; ``failures`` are sorted by
    DLQ partition and offset; ``committed`` is what the DLQ group now stands at (partition ->
    next offset), empty when nothing was committed."""

    read: int = 0
    replayed: int = 0
    skipped: int = 0
    failures: list[ReplayFailure] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    """Every dead letter read, by its ``button.reason`` (filtered out or not)."""
    followers: int = 0
    """Of ``replayed``: parked dead letters replayed after the first dead letter of their order
    (or key) that this run replayed (``_Leaders``), whether the filter selected them or not
    (without a filter, every such one; with one, also those it brought along)."""
    held: int = 0
    """Parked dead letters the filter selected but that were not replayed: the first dead
    letter of their order (or key) was read and not selected, so they would be parked again."""
    held_behind: dict[str, int] = field(default_factory=dict)
    """``held`` by the reason of the first dead letter they are parked behind."""
    targets: set[tuple[str, int | None]] = field(default_factory=set)
    """The topics and partitions replayed records were written (or, dry, would be written) to;
    ``None``: the producer's partitioner chose."""
    lagging: dict[int, int] = field(default_factory=dict)
    """Partitions of the input topic written to, with the records the service's group had not
    consumed when the replay started (``input_lag``): it reads those first."""
    lag_group: str = ""
    """The service's group whose lag ``lagging`` is."""
    lag_error: str | None = None
    """Why that lag could not be read, if it could not."""
    orders: dict[str, int] = field(default_factory=dict)
    """Dead letters read of each ``--order-id`` value (filtered out or not)."""
    selected_values: set[tuple[str, str]] = field(default_factory=set)
    """The ``("reason", R)`` and ``("order", O)`` filter values that a dead letter the filter
    selected carries (``unmatched``)."""

    def note(self, text: Mapping[str, str], selection: ReplayFilter, *, selected: bool) -> None:
        """Count a dead letter read: its reason, its order when the filter names it, and the
        filter values it matched when ``selected``."""
        reason, order_id = text.get(H_REASON, ""), order_of(text)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if order_id in selection.order_ids:
            self.orders[order_id] = self.orders.get(order_id, 0) + 1
        if selected:
            if reason in selection.reasons:
                self.selected_values.add(("reason", reason))
            if order_id in selection.order_ids:
                self.selected_values.add(("order", order_id))

    def unmatched(self, selection: ReplayFilter) -> list[str]:
        """A line for each ``--reason`` and ``--order-id`` value that selected no dead letter:
        none read has it (a typo? the reasons there are are named), or the other filters left
        out every one that has it."""
        present = ", ".join(f"{r} ({n})" for r, n in sorted(self.reasons.items())) or "none"
        lines = []
        for reason in sorted(selection.reasons):
            if reason not in self.reasons:
                lines.append(
                    f"--reason {reason}: no dead letter has it; the reasons read: {present}"
                )
            elif ("reason", reason) not in self.selected_values:
                lines.append(
                    f"--reason {reason}: the other filters select none of its "
                    f"{counted(self.reasons[reason], 'dead letter')}"
                )
        for order_id in sorted(selection.order_ids):
            if order_id not in self.orders:
                lines.append(f"--order-id {order_id}: no dead letter has it")
            elif ("order", order_id) not in self.selected_values:
                lines.append(
                    f"--order-id {order_id}: the other filters select none of its "
                    f"{counted(self.orders[order_id], 'dead letter')}"
                )
        return lines

    def complete(self, selection: ReplayFilter) -> bool:
        """Whether the selection was replayed whole (a dry run: would be): every record
        acknowledged, no selected dead letter held back, every ``--reason`` and ``--order-id``
        value selected one. ``replay-dlq`` exits 1 otherwise."""
        return not (self.failures or self.held or self.unmatched(selection))


class GroupOffsets(Protocol):
    """Where a group stands in a topic (``PartitionReader``, in that group)."""

    def partitions(self, timeout: float = ...) -> list[int]: ...

    def watermarks(
        self, partitions: Iterable[int], deadline: float
    ) -> dict[int, tuple[int, int]]: ...

    def committed(
        self, partitions: Iterable[int], timeout: float = ...
    ) -> dict[int, int | None]: ...


class DeadLetterReader(GroupOffsets, Protocol):
    """What a replay reads the DLQ with (``PartitionReader``, in the replay's group)."""

    topic: str

    def read(
        self, ranges: Mapping[int, tuple[int, int]], deadline: float | None = None
    ) -> Iterator[Record]: ...

    def commit(self, offsets: Mapping[int, int]) -> None: ...


def input_lag(reader: GroupOffsets) -> dict[int, int]:
    """Per partition, the records after the reader's group's committed offset (every record
    when it committed nothing: it will read them all); partitions without any are left out."""
    partitions = reader.partitions()
    committed = reader.committed(partitions)
    lag = {}
    for p, (low, high) in reader.watermarks(partitions, time.monotonic() + 30.0).items():
        stand = committed.get(p)
        behind = high - (low if stand is None else max(stand, low))
        if behind > 0:
            lag[p] = behind
    return lag


def lagging(
    lag: Mapping[int, int], targets: Iterable[tuple[str, int | None]], topic: str
) -> dict[int, int]:
    """The partitions of ``topic`` among ``targets`` that had ``lag`` (a target without a
    partition may be any of them)."""
    written = {p for t, p in targets if t == topic}
    if None in written:
        return dict(lag)
    return {p: n for p, n in lag.items() if p in written}


def _service_lag(settings: Settings) -> tuple[dict[int, int], str | None]:
    """The lag of the service's group (``KAFKA_GROUP_ID``) on the input topic, or why it could
    not be read. Read with a reader that only asks the group's committed offsets: it joins no
    group and commits nothing."""
    try:
        with PartitionReader(
            settings.kafka.reader_config(settings.kafka.group_id), settings.kafka.topic
        ) as reader:
            return input_lag(reader), None
    except Exception as exc:  # noqa: BLE001 - reported, not raised: it only feeds a warning
        return {}, str(exc) or type(exc).__name__


class ReplayProducer(Protocol):
    """What a replay writes with (``AckingProducer``)."""

    def send_nowait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
        tag: Hashable | None = None,
    ) -> None: ...

    def settle(self, timeout: float) -> int: ...

    def undelivered(self) -> dict[Hashable, str]: ...


@dataclass(frozen=True, slots=True)
class _Leader:
    """A first dead letter read (not parked): where it is, its reason, whether it is replayed."""

    position: str
    reason: str
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Choice:
    """What a replay does with one dead letter (``_Leaders.choose``)."""

    replay: bool
    selected: bool
    """The filter selected it."""
    follows: str | None = None
    """The DLQ position of the replayed first dead letter it is parked behind."""
    held_behind: str | None = None
    """Held back (not replayed although selected): the reason of the first dead letter it
    is parked behind, read and not replayed."""


@dataclass(slots=True)
class _Leaders:
    """The first dead letters read so far, to tell a parked dead letter's fate (DESIGN, 5).

    A dead letter that is not parked parks its order (``button.order.id``) or, when it could not
    be decoded (decode stage, no order), its whole key, unless it says it parked nothing
    (``button.parks.order: false``: a mapping rejection, an invalid event), when it is no first
    dead letter for anything to follow; each later record of that order (of that
    key) is dead-lettered parked behind it, with the same key, so in the same DLQ partition. A
    parked dead letter *follows* the latest first dead letter of its order under its key, and
    the latest one of its key: when this run replays either, it is replayed too, after it (a
    filter must not release an order without what is parked behind it). When the run read
    some and replays none, it is *held*: replayed alone it would only be parked again. When the
    run read none (an earlier run replayed it, or it is gone), it is replayed if selected.

    Records without a key are parked by order id alone and spread over the DLQ's partitions:
    theirs are tracked across partitions, best effort (they are not ordered anyway).
    """

    orders: dict[tuple[int | None, bytes | None, str], _Leader] = field(default_factory=dict)
    keys: dict[tuple[int | None, bytes | None], _Leader] = field(default_factory=dict)

    @staticmethod
    def _scope(record: Record) -> int | None:
        return None if record.key is None else record.partition

    def note(self, record: Record, text: Mapping[str, str], *, replayed: bool) -> None:
        """Remember ``record``, a dead letter that is not parked, as the latest first one of its
        order (or, undecodable, of its key)."""
        leader = _Leader(f"{record.partition}:{record.offset}", text.get(H_REASON, ""), replayed)
        scope = self._scope(record)
        order_id = text.get(H_ORDER_ID, "")
        if order_id:
            self.orders[(scope, record.key, order_id)] = leader
        elif record.key is not None and text.get(H_STAGE) == Stage.DECODE.value:
            self.keys[(scope, record.key)] = leader  # no key, no key parking

    def choose(self, record: Record, text: Mapping[str, str], *, selected: bool) -> _Choice:
        """Whether ``record`` is replayed, ``selected`` by the filter or not (see the class).
        A first dead letter is remembered as replayed when selected."""
        if text.get(H_PARKED) != "true":
            if text.get(H_PARKS_ORDER) != "false":
                self.note(record, text, replayed=selected)
            # else it parked nothing (a rejection, an invalid event): nothing follows it.
            return _Choice(replay=selected, selected=selected)
        behind = self.of(record, text)
        replayed = [leader.position for leader in behind if leader.replayed]
        if replayed:
            return _Choice(replay=True, selected=selected, follows=replayed[0])
        if behind and selected:
            return _Choice(replay=False, selected=True, held_behind=behind[0].reason)
        return _Choice(replay=selected, selected=selected)

    def of(self, record: Record, text: Mapping[str, str]) -> list[_Leader]:
        """The first dead letters read that the parked ``record`` is parked behind."""
        scope = self._scope(record)
        order_id = text.get(H_ORDER_ID, "")
        found = [self.orders.get((scope, record.key, order_id)) if order_id else None]
        found.append(self.keys.get((scope, record.key)))
        return [leader for leader in found if leader is not None]


def replay_headers(
    message_headers: list[tuple[str, bytes]], dlq_position: str, *, release_keys: bool = False
) -> list[tuple[str, bytes]]:
    """The headers a replayed record carries: the source's own, plus where it came from.

    ``button.replayed.stage`` carries the stage it failed at: only a record that failed to
    decode releases its key's parking when it decodes now (``deadletter.releases_parked_key``).
    ``button.replayed.parks.order`` carries a parked dead letter's ``button.parks.order``: of
    an order parked behind its key, only the record that parked it releases it
    (``deadletter.replayed_parks_order``). ``button.replayed.reason`` carries its
    ``button.reason``: a replay releases only a parking with that reason, the one its dead
    letter made (``deadletter.replayed_reason``; an older version wrote a rejection of an
    order already parked behind another dead letter as a first dead letter of its own).

    ``release_keys`` (``--release-keys``): a first dead letter (not parked) also carries
    ``button.replayed.release: true``: if it still does not decode, the service releases its
    key instead of parking it again (``deadletter.releases_key_if_undecodable``). A dead
    letter written when that happened (``button.key.released``) always does, so a later
    replay without the flag does not park the user's key again.
    """
    text = header_map(message_headers)
    kept = strip_own_headers(message_headers)
    parked = text.get(H_PARKED) or "false"
    headers = [*kept, (H_REPLAYED, dlq_position.encode()), (H_REPLAYED_PARKED, parked.encode())]
    stage = text.get(H_STAGE)
    if stage:
        headers.append((H_REPLAYED_STAGE, stage.encode()))
    parks_order = text.get(H_PARKS_ORDER)
    if parks_order:
        headers.append((H_REPLAYED_PARKS_ORDER, parks_order.encode()))
    reason = text.get(H_REASON)
    if reason:
        headers.append((H_REPLAYED_REASON, reason.encode()))
    if (release_keys or text.get(H_KEY_RELEASED) == "true") and parked != "true":
        headers.append((H_REPLAYED_RELEASE, b"true"))
    return headers


class _Rate:
    """At most ``per_second`` records per second (simple pacing, injected clock and sleep)."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = clock()
        self._clock = clock
        self._sleep = sleep

    def wait(self) -> None:
        now = self._clock()
        if self._next > now:
            self._sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


def replay(
    settings: Settings,
    selection: ReplayFilter,
    *,
    group_id: str,
    rate: float,
    dry_run: bool,
    out: TextIO,
    progress: bool,
    remember: bool = True,
    release_keys: bool = False,
) -> ReplayReport:
    """Replay the matching dead letters present when the command starts, then stop.

    ``release_keys``: see ``replay_headers``.

    The lag of the service's group on the input topic is read first: a record of a replayed
    order that the service has not consumed yet is read before the replayed one, and parked
    again behind it; the report names the lagging partitions written to (``lagging``), so the
    operator can replay the whole DLQ again once the lag is 0.

    See ``replay_from`` for what is committed when some records are not acknowledged.

    Raises:
        TopicError: the DLQ (``KAFKA_DLQ_TOPIC``) does not exist.
        AuthorizationError: the brokers say this principal lacks an ACL the replay needs
            (``consumer.domain.acls.replay_acl_needs``): each one named, nothing read.
        BrokerError: no broker answered (``await_brokers``: at once when every one refuses,
            naming ``KAFKA_BOOTSTRAP_SERVERS``), or reading the DLQ failed.
    """
    # Kafka unreachable is said at once, not after the clients below each wait out their own
    # metadata timeouts (the lag's, then the reader's: a minute).
    admin = await_brokers(settings.kafka.admin_config(), settings.kafka.bootstrap_servers)
    # Every missing ACL at once, before anything is read or written: without Read on its group
    # the reader's first committed-offsets request only timed out, blamed on the brokers.
    group_setting = (
        "KAFKA_GROUP_ID-replay" if group_id == f"{settings.kafka.group_id}-replay" else "--group-id"
    )
    needs = replay_acl_needs(
        settings.kafka.dlq_topic, settings.kafka.topic, group_id, group_setting, write=not dry_run
    )
    acls = judge_acl_needs(admin, needs)
    if acls.missing:
        raise AuthorizationError(acls.message())
    # Measured before anything is written: what the service reads before the replayed records.
    lag, lag_error = _service_lag(settings)
    producer = None if dry_run else AckingProducer(settings.kafka.producer_config())
    if producer is not None:
        producer.start()
    try:
        with PartitionReader(
            settings.kafka.reader_config(group_id), settings.kafka.dlq_topic
        ) as reader:
            report = replay_from(
                reader,
                producer,
                selection,
                default_topic=settings.kafka.topic,
                pacing=_Rate(rate),
                out=out,
                progress=progress,
                remember=remember,
                release_keys=release_keys,
            )
    finally:
        if producer is not None:
            producer.close()
        if progress:
            sys.stderr.write("\n")
    report.lag_group, report.lag_error = settings.kafka.group_id, lag_error
    report.lagging = lagging(lag, report.targets, settings.kafka.topic)
    return report


def replay_from(
    reader: DeadLetterReader,
    producer: ReplayProducer | None,
    selection: ReplayFilter,
    *,
    default_topic: str,
    pacing: _Rate,
    out: TextIO,
    progress: bool = False,
    remember: bool = True,
    settle_timeout: float = 60.0,
    release_keys: bool = False,
) -> ReplayReport:
    """Replay from ``reader`` with ``producer`` (``None``: describe to ``out`` instead).

    The DLQ group is committed, per DLQ partition, up to the first dead letter that was not
    replayed: not acknowledged, held back, or left out by ``selection`` (it and everything after
    it are read again by the next run), and to the end of the partition when all were: neither a
    failure nor a filter loses a dead letter from a later replay of the group. After
    a record of a DLQ partition cannot even be queued, the rest of that partition is not sent
    (the next run sends them, in order); records already queued after a failed one may have
    been written, and the next run sends them again (harmless, DESIGN, 2). The failures are in
    the report, for the caller to exit non-zero.
    """
    report = ReplayReport()
    ranges = _ranges(reader, from_group=remember)
    total = sum(end - start for start, end in ranges.values())
    first_failed: dict[int, int] = {}
    first_left: dict[int, int] = {}
    """Per DLQ partition, the first dead letter read and not replayed: held back or filtered
    out. The group is never committed past it (``_settle``)."""
    failed: list[ReplayFailure] = []
    leaders = _Leaders()
    follower_tags: set[tuple[int, int]] = set()
    for record in reader.read(ranges):
        report.read += 1
        if progress:
            _progress(report.read, total)
        if record.partition in first_failed:
            continue  # an earlier record of this partition could not be queued: left for later
        text = header_map(record.headers)
        selected = selection.matches(text)
        report.note(text, selection, selected=selected)
        choice = leaders.choose(record, text, selected=selected)
        if not choice.replay:
            first_left.setdefault(record.partition, record.offset)
        if choice.held_behind is not None:
            report.held += 1
            report.held_behind[choice.held_behind] = (
                report.held_behind.get(choice.held_behind, 0) + 1
            )
            continue
        if not choice.replay:
            report.skipped += 1
            continue
        follows = choice.follows is not None
        target_topic = text.get(H_TOPIC) or default_topic
        target_partition = _int(text.get(H_PARTITION))
        report.targets.add((target_topic, target_partition))
        if producer is None:
            _describe(out, record, text, target_topic, target_partition, choice.follows)
            report.replayed += 1
            report.followers += follows
            continue
        pacing.wait()
        try:
            producer.send_nowait(
                target_topic,
                record.key,
                record.value,
                headers=replay_headers(
                    record.headers,
                    f"{record.partition}:{record.offset}",
                    release_keys=release_keys,
                ),
                partition=target_partition,
                tag=(record.partition, record.offset),
            )
        except BrokerError as exc:
            failed.append(ReplayFailure(record.partition, record.offset, str(exc)))
            first_failed[record.partition] = record.offset
        else:
            report.replayed += 1
            if follows:
                report.followers += 1
                follower_tags.add((record.partition, record.offset))
    if producer is None:
        return report
    _settle(
        reader,
        producer,
        report,
        failed,
        ranges,
        first_left,
        follower_tags,
        settle_timeout,
        remember,
    )
    return report


def _settle(
    reader: DeadLetterReader,
    producer: ReplayProducer,
    report: ReplayReport,
    failed: list[ReplayFailure],
    ranges: Mapping[int, tuple[int, int]],
    first_left: Mapping[int, int],
    follower_tags: set[tuple[int, int]],
    settle_timeout: float,
    remember: bool,
) -> None:
    """Wait for the delivery reports, count the failures, commit what was replayed: per DLQ
    partition, up to the first dead letter not acknowledged or ``first_left`` (held back or
    filtered out), whichever comes first."""
    producer.settle(settle_timeout)
    for tag, error in producer.undelivered().items():
        partition, offset = cast("tuple[int, int]", tag)  # the tags queued above
        failed.append(ReplayFailure(partition, offset, error))
        report.replayed -= 1
        report.followers -= tag in follower_tags
    report.failures = sorted(failed, key=lambda f: (f.partition, f.offset))
    stands = {p: min(end, first_left.get(p, end)) for p, (_, end) in ranges.items()}
    for failure in report.failures:
        stands[failure.partition] = min(stands[failure.partition], failure.offset)
    if remember:
        offsets = {p: o for p, o in stands.items() if o > ranges[p][0]}
        reader.commit(offsets)
        report.committed = offsets


def _ranges(reader: DeadLetterReader, *, from_group: bool) -> dict[int, tuple[int, int]]:
    """Per DLQ partition with records to read: where this group stands, where the topic ends."""
    try:
        partitions = reader.partitions()
    except BrokerError:
        raise TopicError(
            f"KAFKA_DLQ_TOPIC: dead-letter topic {reader.topic!r} does not exist (a misspelt "
            "name, or nothing was ever dead-lettered)"
        ) from None
    committed = reader.committed(partitions)
    ranges: dict[int, tuple[int, int]] = {}
    for p, (low, high) in reader.watermarks(partitions, time.monotonic() + 30.0).items():
        stand = committed.get(p)
        start = stand if from_group and stand is not None else low
        if high > start:
            ranges[p] = (start, high)
    return ranges


def _describe(
    out: TextIO,
    record: Record,
    text: dict[str, str],
    topic: str,
    partition: int | None,
    follows: str | None = None,
) -> None:
    line: dict[str, object] = {
        "dlq": f"{record.partition}:{record.offset}",
        "to": f"{topic}:{partition}",
        "reason": text.get(H_REASON, ""),
        "order_id": text.get(H_ORDER_ID, ""),
        "parked": text.get(H_PARKED) == "true",
    }
    if follows is not None:
        line["follows"] = follows
    out.write(json.dumps(line) + "\n")


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width if total <= 0 else min(width, done * width // total)
    sys.stderr.write(f"\rreplay [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stderr.flush()


def _int(value: str | None) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except ValueError:
        return None


def _parse_time(value: str | None, flag: str) -> int | None:
    """``value`` (ISO-8601; no offset means UTC) as epoch milliseconds; ``None`` for no bound.

    Raises:
        ConfigError: ``value`` is not ISO-8601 (the message names ``flag`` and the value).
    """
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag}: not an ISO-8601 time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def summary_lines(report: ReplayReport, selection: ReplayFilter, *, dry_run: bool) -> list[str]:
    """What ``replay-dlq`` tells the operator once it is done (failures apart)."""
    verb = "would replay" if dry_run else "replayed"
    followers = (
        f" ({report.followers} of them parked behind the first dead letter of their order or "
        "key, replayed after it)"
        if report.followers
        else ""
    )
    # Without a filter nothing is filtered out: no "left 0 (filtered out)".
    left = f", left {report.skipped} (filtered out)" if selection.filters() else ""
    lines = [
        f"read {counted(report.read, 'dead letter')}, {verb} {report.replayed}{followers}{left}"
    ]
    if report.held:
        behind = ", ".join(f"{r} ({n})" for r, n in sorted(report.held_behind.items()))
        lines.append(
            f"button-consumer: left {counted(report.held, 'selected parked dead letter')}: "
            f"the first dead letter of {'its' if report.held == 1 else 'their'} order (or key) "
            f"is in the DLQ and not selected ({behind}), so "
            f"{'it' if report.held == 1 else 'they'} would be parked again; select it too "
            f"(it brings {'it' if report.held == 1 else 'them'} along) or replay the whole DLQ"
        )
    lines.extend(f"button-consumer: {line}" for line in report.unmatched(selection))
    if report.lagging:
        behind = ", ".join(f"{p}: {n}" for p, n in sorted(report.lagging.items()))
        lines.append(
            f"button-consumer: warning: group {report.lag_group} had not consumed "
            f"{counted(sum(report.lagging.values()), 'record')} of the partitions written to "
            f"({behind}); "
            "it reads them before the replayed ones, so a later record of a replayed order "
            "among them is dead-lettered again, parked; once the group's lag is 0, run "
            "replay-dlq without filters again (it replays only what was dead-lettered since its "
            "last run)"
        )
    elif report.lag_error is not None and report.replayed:
        lines.append(
            f"button-consumer: could not read the service group's lag ({report.lag_error}): "
            "replay when it is 0, and run replay-dlq without filters again afterwards"
        )
    return lines


def _time_window(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """``--since`` and ``--until`` as epoch milliseconds (``since`` inclusive, ``until``
    exclusive); ``None`` for an absent bound.

    Raises:
        ConfigError: a value is not ISO-8601, or both are given and ``since`` is not before
            ``until``: that window selects no dead letter, a mistake to name rather than a
            replay that quietly selects nothing (the message names both options and values).
    """
    since_ms = _parse_time(since, "--since")
    until_ms = _parse_time(until, "--until")
    if since_ms is not None and until_ms is not None and since_ms >= until_ms:
        raise ConfigError(
            f"--since must be before --until ({since!r} is not before {until!r}): "
            "the window selects no dead letter"
        )
    return since_ms, until_ms


def replay_command(args: argparse.Namespace) -> int:
    """``replay-dlq``: re-deliver the selected dead letters; 0 when all were, else 1
    (``ReplayReport.complete``: a record not acknowledged, a selected dead letter held back, a
    ``--reason`` or ``--order-id`` value that selected none). ``--dry-run`` exits as the
    replay would.

    Raises:
        ConfigError: a bad argument (``--since``/``--until`` not ISO-8601 or an empty or
            inverted window, ``--rate`` not a finite number above 0), checked before anything
            else; or a bad setting.
    """
    since_ms, until_ms = _time_window(args.since, args.until)
    if not (math.isfinite(args.rate) and args.rate > 0):
        raise ConfigError(f"--rate: must be a finite number above 0, not {args.rate}")
    settings = Settings.from_env(require_api_key=False)
    selection = ReplayFilter(
        reasons=frozenset(args.reason),
        order_ids=frozenset(args.order_id),
        since_ms=since_ms,
        until_ms=until_ms,
    )
    report = replay(
        settings,
        selection,
        group_id=args.group_id or f"{settings.kafka.group_id}-replay",
        rate=args.rate,
        dry_run=args.dry_run,
        out=sys.stdout,
        progress=not args.no_progress and sys.stderr.isatty(),
        remember=bool(args.group_id)
        or not (args.reason or args.order_id or args.since or args.until),
        release_keys=args.release_keys,
    )
    for line in summary_lines(report, selection, dry_run=args.dry_run):
        print(line, file=sys.stderr)
    if not report.failures:
        return 0 if report.complete(selection) else 1
    for failure in report.failures:
        print(f"button-consumer: {settings.kafka.dlq_topic} {failure}", file=sys.stderr)
    stands = ", ".join(f"{p}:{o}" for p, o in sorted(report.committed.items())) or "nothing"
    print(
        f"button-consumer: {counted(len(report.failures), 'dead letter')} not replayed; committed "
        f"{stands}; run replay-dlq again once the cause is fixed",
        file=sys.stderr,
    )
    return 1
