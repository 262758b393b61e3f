"""The operator commands beside ``run``: ``map``, ``produce-sample``, ``test-event``, ``check``."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.kafka import AckingProducer, ensure_topics
from consumer.adapters.logging import configure_logging
from consumer.bootstrap import mapping_config
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    ProductAction,
)
from consumer.domain.outcomes import OutcomeKind
from consumer.errors import ConfigError, ConsumerError
from consumer.mapcmd import run_map
from consumer.samples import generate
from consumer.settings import Settings


def map_command(path: str, now: str | None) -> int:
    """``map``: JSON lines in (file or stdin), one JSON line per event out. Offline."""
    settings = Settings.from_env(_offline_env(), require_api_key=False)
    moment = None
    if now is not None:
        try:
            moment = datetime.fromisoformat(now.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--now: not an ISO-8601 time: {now!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    config = mapping_config(settings)
    try:
        if path == "-":
            return run_map(sys.stdin, sys.stdout, config, moment)
        try:
            lines = Path(path).open(encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        with lines:
            return run_map(lines, sys.stdout, config, moment)
    except BrokenPipeError:
        # The reader of our output went away (``| head``): not an error of ours.
        sys.stderr.close()
        return 0


def _offline_env() -> dict[str, str]:
    """``map`` needs no Kafka: give the required bootstrap servers a placeholder if unset."""
    import os

    env = dict(os.environ)
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", "unused:9092")
    return env


def produce_sample(users: int, seed: int, partitions: int) -> int:
    """``produce-sample``: realistic events of ``users`` users, keyed by user."""
    settings = Settings.from_env(require_api_key=False)
    # Recent events: profile retention (the attribution window) counts from now.
    start = datetime.now(UTC) - timedelta(hours=7)
    events = (e for _, e in generate(users, seed, start=start))
    count = produce_events(settings, events, partitions)
    print(f"produced {count} events of {users} users to {settings.kafka.topic}")
    return 0


def produce_events(settings: Settings, events: Any, partitions: int = 3) -> int:
    """Encode and produce events to the input topic (created if missing); returns the count.

    With SCHEMA_REGISTRY_URL the schema is registered first (wire format), else plain Avro.

    Raises:
        ConsumerError: not every event was acknowledged by the broker.
        ConfigError, SchemaRegistryUnavailableError: the registry refused the schema, or could
            not be reached.
    """
    topic = settings.kafka.topic
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=partitions)
    encoder = build_encoder(
        Path(settings.schema.dir),
        settings.schema.registry_url,
        settings.schema.registry_config(),
        topic=topic,
    )
    producer = AckingProducer(settings.kafka.producer_config())
    producer.start()
    count = 0
    try:
        for event in events:
            producer.send_nowait(topic, event.user_key.encode(), encoder.encode_event(event))
            count += 1
        unacknowledged = producer.settle(60.0)
    finally:
        producer.close()
    if unacknowledged:
        raise ConsumerError("not every event was acknowledged by the broker")
    return count


def test_event(args: Any) -> int:
    """``test-event``: one purchase, to see it reach Button through a deployment."""
    settings = Settings.from_env(require_api_key=False)
    try:
        total = Decimal(args.total)
    except InvalidOperation:
        raise ConfigError(f"--total: not a decimal amount: {args.total!r}") from None
    event = CommerceEvent(
        event_id=f"test-{uuid.uuid4()}",
        event_type=EventType.PURCHASE,
        event_time=datetime.now(UTC),
        user_key=args.user,
        platform=Platform.SERVER,
        btn_ref=args.btn_ref or None,
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=args.order_id,
            currency_code=args.currency.upper(),
            total_amount=total,
        ),
    )
    produce_events(settings, [event], partitions=1)
    print(f"produced purchase {args.order_id} ({total} {args.currency}) for user {args.user}")
    return 0


def check() -> int:
    """``check``: settings valid, topics reachable and co-partitioned, registry and Button up."""
    settings = Settings.from_env()
    # librdkafka's complaints (e.g. connection refused) as structured lines on stderr, apart
    # from the report on stdout.
    configure_logging(settings.log.level, settings.log.format, stream=sys.stderr)
    results: list[tuple[bool, str]] = [(True, "settings: valid")]
    results.extend(_check_kafka(settings))
    registry = settings.schema.registry_config()
    if registry is not None:
        results.append(_check_registry(registry))
    if not settings.delivery.dry_run:
        results.append(asyncio.run(_check_button(settings)))
    for ok, text in results:
        print(("ok    " if ok else "FAIL  ") + text)
    return 0 if all(ok for ok, _ in results) else 1


def _check_kafka(settings: Settings) -> list[tuple[bool, str]]:
    k = settings.kafka
    try:
        metadata = AdminClient(settings.kafka.admin_config()).list_topics(timeout=15.0)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a diagnosis
        return [(False, f"kafka {k.bootstrap_servers}: {exc}")]
    out: list[tuple[bool, str]] = [(True, f"kafka {k.bootstrap_servers}: reachable")]
    counts: dict[str, int] = {}
    for name in (k.topic, k.dlq_topic, k.profile_topic):
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            will = k.create_topics and name != k.topic
            out.append((will, f"topic {name}: missing" + (" (created at start)" if will else "")))
        else:
            counts[name] = len(topic.partitions)
            out.append((True, f"topic {name}: {counts[name]} partitions"))
    if k.topic in counts and k.profile_topic in counts:
        same = counts[k.topic] == counts[k.profile_topic]
        out.append((same, "profile changelog co-partitioned with the input: " + str(same).lower()))
    return out


def _check_registry(config: dict[str, Any]) -> tuple[bool, str]:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    url = config["url"]
    try:
        subjects = SchemaRegistryClient(dict(config)).get_subjects()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return False, f"schema registry {url}: {exc}"
    return True, f"schema registry {url}: {len(subjects)} subjects"


async def _check_button(settings: Settings) -> tuple[bool, str]:
    base = settings.button.base_url
    async with ButtonClient.from_settings(settings.button) as client:
        outcome = await client.get(f"button-consumer-check-{uuid.uuid4().hex[:12]}")
    if outcome.kind in (OutcomeKind.NOT_FOUND, OutcomeKind.SUCCESS):
        return True, f"button {base}: API key accepted"
    if outcome.kind in (OutcomeKind.UNAUTHORIZED, OutcomeKind.FORBIDDEN):
        return False, f"button {base}: API key refused (HTTP {outcome.status})"
    return False, f"button {base}: {outcome.kind.value} {outcome.message}".rstrip()
