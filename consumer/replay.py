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

Progress is remembered by a consumer group on the DLQ when the whole DLQ is replayed (or when
``--group-id`` is given): the next run starts after the last replayed record. A filtered replay
without ``--group-id`` reads the whole DLQ and remembers nothing, so records it filtered out stay
available to a later replay. ``--dry-run`` lists what would be replayed and writes nothing.

Only acknowledged records are remembered: the group is committed, per DLQ partition, up to the
first dead letter whose write failed, and the command exits 1 naming each failed one, so a rerun
(once the cause is fixed) starts at it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TextIO, cast

from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.kafka_reader import PartitionReader
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
    H_REPLAYED_RELEASE,
    H_REPLAYED_STAGE,
    H_STAGE,
    H_TOPIC,
    header_map,
    strip_own_headers,
)
from consumer.errors import BrokerError, ConfigError
from consumer.ports import Headers, Record
from consumer.settings import Settings


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which dead letters to replay; an empty criterion matches everything."""

    reasons: frozenset[str] = frozenset()
    order_ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, headers: dict[str, str]) -> bool:
        if self.reasons and headers.get(H_REASON, "") not in self.reasons:
            return False
        if self.order_ids and headers.get(H_ORDER_ID, "") not in self.order_ids:
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

    def unmatched(self, selection: ReplayFilter) -> list[str]:
        """A line for each ``--reason`` that no dead letter read has (a typo?), naming the
        reasons there are."""
        present = ", ".join(f"{r} ({n})" for r, n in sorted(self.reasons.items())) or "none"
        return [
            f"--reason {reason}: no dead letter has it; the reasons read: {present}"
            for reason in sorted(selection.reasons - self.reasons.keys())
        ]


class DeadLetterReader(Protocol):
    """What a replay reads the DLQ with (``PartitionReader``)."""

    topic: str

    def partitions(self, timeout: float = ...) -> list[int]: ...

    def watermarks(
        self, partitions: Iterable[int], deadline: float
    ) -> dict[int, tuple[int, int]]: ...

    def committed(
        self, partitions: Iterable[int], timeout: float = ...
    ) -> dict[int, int | None]: ...

    def read(
        self, ranges: Mapping[int, tuple[int, int]], deadline: float | None = None
    ) -> Iterator[Record]: ...

    def commit(self, offsets: Mapping[int, int]) -> None: ...


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


def replay_headers(
    message_headers: list[tuple[str, bytes]], dlq_position: str, *, release_keys: bool = False
) -> list[tuple[str, bytes]]:
    """The headers a replayed record carries: the source's own, plus where it came from.

    ``button.replayed.stage`` carries the stage it failed at: only a record that failed to
    decode releases its key's parking when it decodes now (``deadletter.releases_parked_key``).
    ``button.replayed.parks.order`` carries a parked dead letter's ``button.parks.order``: of
    an order parked behind its key, only the record that parked it releases it
    (``deadletter.replayed_parks_order``).

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

    See ``replay_from`` for what is committed when some records are not acknowledged.

    Raises:
        ConfigError: the DLQ (``KAFKA_DLQ_TOPIC``) does not exist.
        BrokerError: reading it failed.
    """
    producer = None if dry_run else AckingProducer(settings.kafka.producer_config())
    if producer is not None:
        producer.start()
    try:
        with PartitionReader(
            settings.kafka.reader_config(group_id), settings.kafka.dlq_topic
        ) as reader:
            return replay_from(
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
    acknowledged (it and everything after it are read again by the next run), and to the end of
    the partition when all were: a failure never loses a dead letter from a later replay. After
    a record of a DLQ partition cannot even be queued, the rest of that partition is not sent
    (the next run sends them, in order); records already queued after a failed one may have
    been written, and the next run sends them again (harmless, DESIGN, 2). The failures are in
    the report, for the caller to exit non-zero.
    """
    report = ReplayReport()
    ranges = _ranges(reader, from_group=remember)
    total = sum(end - start for start, end in ranges.values())
    first_failed: dict[int, int] = {}
    failed: list[ReplayFailure] = []
    for record in reader.read(ranges):
        report.read += 1
        if progress:
            _progress(report.read, total)
        if record.partition in first_failed:
            continue  # an earlier record of this partition could not be queued: left for later
        text = header_map(record.headers)
        reason = text.get(H_REASON, "")
        report.reasons[reason] = report.reasons.get(reason, 0) + 1
        if not selection.matches(text):
            report.skipped += 1
            continue
        target_topic = text.get(H_TOPIC) or default_topic
        target_partition = _int(text.get(H_PARTITION))
        if producer is None:
            _describe(out, record, text, target_topic, target_partition)
            report.replayed += 1
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
    if producer is None:
        return report
    producer.settle(settle_timeout)
    for tag, error in producer.undelivered().items():
        partition, offset = cast("tuple[int, int]", tag)  # the tags queued above
        failed.append(ReplayFailure(partition, offset, error))
        report.replayed -= 1
    report.failures = sorted(failed, key=lambda f: (f.partition, f.offset))
    stands = {p: end for p, (_, end) in ranges.items()}
    for failure in report.failures:
        stands[failure.partition] = min(stands[failure.partition], failure.offset)
    if remember:
        offsets = {p: o for p, o in stands.items() if o > ranges[p][0]}
        reader.commit(offsets)
        report.committed = offsets
    return report


def _ranges(reader: DeadLetterReader, *, from_group: bool) -> dict[int, tuple[int, int]]:
    """Per DLQ partition with records to read: where this group stands, where the topic ends."""
    try:
        partitions = reader.partitions()
    except BrokerError:
        raise ConfigError(
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
    out: TextIO, record: Record, text: dict[str, str], topic: str, partition: int | None
) -> None:
    line = {
        "dlq": f"{record.partition}:{record.offset}",
        "to": f"{topic}:{partition}",
        "reason": text.get(H_REASON, ""),
        "order_id": text.get(H_ORDER_ID, ""),
        "parked": text.get(H_PARKED) == "true",
    }
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
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag}: not an ISO-8601 time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def replay_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_api_key=False)
    selection = ReplayFilter(
        reasons=frozenset(args.reason),
        order_ids=frozenset(args.order_id),
        since_ms=_parse_time(args.since, "--since"),
        until_ms=_parse_time(args.until, "--until"),
    )
    if args.rate <= 0:
        raise ConfigError("--rate must be positive")
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
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"read {report.read} dead letters, {verb} {report.replayed}, "
        f"left {report.skipped} (filtered out)",
        file=sys.stderr,
    )
    for line in report.unmatched(selection):
        print(f"button-consumer: {line}", file=sys.stderr)
    if not report.failures:
        return 0
    for failure in report.failures:
        print(f"button-consumer: {settings.kafka.dlq_topic} {failure}", file=sys.stderr)
    stands = ", ".join(f"{p}:{o}" for p, o in sorted(report.committed.items())) or "nothing"
    print(
        f"button-consumer: {len(report.failures)} dead letter(s) not replayed; committed "
        f"{stands}; run replay-dlq again once the cause is fixed",
        file=sys.stderr,
    )
    return 1
