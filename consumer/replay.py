"""``button-consumer replay-dlq``: send dead-lettered records back through the service, in order.

A replayed record goes back to the input topic, to the *partition it came from* (read from its
``__connect.errors.partition`` header, so the profile of its user is there, whatever partitioner
the original producer used), with its original key, value and headers, plus
``button.replayed`` (where it was in the DLQ) and ``button.replayed.parked``. The service then
processes it like any record: Button treats a repeated create as a conflict (done) and the
profile remembers applied refunds, so replaying twice is harmless. A replayed record that was
*not* itself parked releases its order from parking; the records parked behind it follow it in
the same order they were dead-lettered, because the DLQ is keyed like the input.

Progress is remembered by a consumer group on the DLQ when the whole DLQ is replayed (or when
``--group-id`` is given): the next run starts after the last replayed record. A filtered replay
without ``--group-id`` reads the whole DLQ and remembers nothing, so records it filtered out stay
available to a later replay. ``--dry-run`` lists what would be replayed and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from consumer.adapters.kafka import AckingProducer, PartitionReader
from consumer.domain.deadletter import (
    H_DEAD_LETTERED_AT,
    H_ORDER_ID,
    H_PARKED,
    H_PARTITION,
    H_REASON,
    H_REPLAYED,
    H_REPLAYED_PARKED,
    H_TOPIC,
    header_map,
    strip_own_headers,
)
from consumer.errors import BrokerError, ConfigError
from consumer.ports import Record
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


@dataclass(slots=True)
class ReplayReport:
    read: int = 0
    replayed: int = 0
    skipped: int = 0


def replay_headers(
    message_headers: list[tuple[str, bytes]], dlq_position: str
) -> list[tuple[str, bytes]]:
    """The headers a replayed record carries: the source's own, plus where it came from."""
    text = header_map(message_headers)
    kept = strip_own_headers(message_headers)
    return [
        *kept,
        (H_REPLAYED, dlq_position.encode()),
        (H_REPLAYED_PARKED, (text.get(H_PARKED) or "false").encode()),
    ]


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
) -> ReplayReport:
    """Replay the matching dead letters present when the command starts, then stop.

    Raises:
        BrokerError: the DLQ does not exist, reading it failed, or a replayed record was not
            acknowledged (then no progress is committed).
    """
    dlq = settings.kafka.dlq_topic
    producer = None if dry_run else AckingProducer(settings.kafka.producer_config())
    if producer is not None:
        producer.start()
    report = ReplayReport()
    pacing = _Rate(rate)
    try:
        with PartitionReader(settings.kafka.reader_config(group_id), dlq) as reader:
            ranges = _ranges(reader, from_group=remember)
            total = sum(end - start for start, end in ranges.values())
            for record in reader.read(ranges):
                report.read += 1
                text = header_map(record.headers)
                if not selection.matches(text):
                    report.skipped += 1
                else:
                    position = f"{record.partition}:{record.offset}"
                    target_topic = text.get(H_TOPIC) or settings.kafka.topic
                    target_partition = _int(text.get(H_PARTITION))
                    if producer is None:
                        _describe(out, record, text, target_topic, target_partition)
                    else:
                        pacing.wait()
                        producer.send_nowait(
                            target_topic,
                            record.key,
                            record.value,
                            headers=replay_headers(record.headers, position),
                            partition=target_partition,
                        )
                    report.replayed += 1
                if progress:
                    _progress(report.read, total)
            if producer is not None and producer.settle(60.0):
                raise BrokerError("replayed records were not all acknowledged; nothing committed")
            if producer is not None and remember:
                reader.commit({p: end for p, (_, end) in ranges.items()})
    finally:
        if producer is not None:
            producer.close()
        if progress:
            sys.stderr.write("\n")
    return report


def _ranges(reader: PartitionReader, *, from_group: bool) -> dict[int, tuple[int, int]]:
    """Per DLQ partition with records to read: where this group stands, where the topic ends."""
    try:
        partitions = reader.partitions()
    except BrokerError:
        raise BrokerError(f"dead-letter topic {reader.topic} not found") from None
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
    )
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"read {report.read} dead letters, {verb} {report.replayed}, "
        f"left {report.skipped} (filtered out)",
        file=sys.stderr,
    )
    return 0
