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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from consumer.adapters.kafka import message_headers
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
    """Replay the matching dead letters present when the command starts, then stop."""
    dlq = settings.kafka.dlq_topic
    reader = Consumer(settings.kafka.reader_config(group_id))
    producer = None if dry_run else Producer(settings.kafka.producer_config())
    report = ReplayReport()
    pacing = _Rate(rate)
    try:
        ends = _ends(reader, dlq, from_group=remember)
        total = sum(end - start for start, end in ends.values())
        reader.assign([TopicPartition(dlq, p, start) for p, (start, _) in ends.items()])
        for message in _until_end(reader, {p: end for p, (_, end) in ends.items()}):
            report.read += 1
            headers = message_headers(message)
            text = header_map(headers)
            if not selection.matches(text):
                report.skipped += 1
            else:
                position = f"{message.partition()}:{message.offset()}"
                target_topic = text.get(H_TOPIC) or settings.kafka.topic
                target_partition = _int(text.get(H_PARTITION))
                if dry_run:
                    _describe(out, message, text, target_topic, target_partition)
                else:
                    assert producer is not None
                    pacing.wait()
                    _produce(producer, target_topic, target_partition, message, headers, position)
                report.replayed += 1
            if progress:
                _progress(report.read, total)
        if producer is not None and producer.flush(60.0):
            raise BrokerError("replayed records were not all acknowledged; nothing committed")
        if producer is not None and remember and ends:
            reader.commit(
                offsets=[TopicPartition(dlq, p, end) for p, (_, end) in ends.items()],
                asynchronous=False,
            )
    finally:
        reader.close()
        if producer is not None:
            producer.close()
        if progress:
            sys.stderr.write("\n")
    return report


def _ends(reader: Consumer, topic: str, *, from_group: bool) -> dict[int, tuple[int, int]]:
    """Per DLQ partition: where this group stands and where the topic ends now."""
    metadata = reader.list_topics(topic, timeout=30.0)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise BrokerError(f"dead-letter topic {topic} not found")
    partitions = sorted(info.partitions)
    committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=30.0)
    ends: dict[int, tuple[int, int]] = {}
    for tp in committed:
        low, high = reader.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30.0)
        start = tp.offset if from_group and tp.offset >= 0 else low
        if high > start:
            ends[tp.partition] = (start, high)
    return ends


def _until_end(reader: Consumer, ends: dict[int, int]) -> Iterator[Message]:
    pending = set(ends)
    while pending:
        for message in reader.consume(num_messages=500, timeout=1.0):
            err = message.error()
            partition = message.partition() or 0
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                elif err.fatal():
                    raise BrokerError(err.str())
                continue
            offset = message.offset() or 0
            if offset < ends[partition]:
                yield message
            if offset + 1 >= ends[partition]:
                pending.discard(partition)


def _produce(
    producer: Producer,
    topic: str,
    partition: int | None,
    message: Message,
    headers: list[tuple[str, bytes]],
    position: str,
) -> None:
    kwargs: dict[str, Any] = {
        "key": message.key(),
        "value": message.value(),
        "headers": replay_headers(headers, position),
    }
    if partition is not None:
        kwargs["partition"] = partition
    while True:
        try:
            producer.produce(topic, **kwargs)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


def _describe(
    out: TextIO, message: Message, text: dict[str, str], topic: str, partition: int | None
) -> None:
    line = {
        "dlq": f"{message.partition()}:{message.offset()}",
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
