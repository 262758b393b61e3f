"""The operator commands beside ``run``: ``map``, ``produce-sample``, ``test-event``, ``check``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TextIO

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.kafka import AckingProducer, ensure_topics
from consumer.bootstrap import mapping_config
from consumer.domain.event_forms import event_to_json
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
from consumer.samples import generate, past_start
from consumer.settings import (
    ButtonSettings,
    DeliverySettings,
    KafkaSettings,
    SchemaSettings,
    Settings,
    diagnose,
)


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


def produce_sample(
    users: int,
    seed: int,
    partitions: int,
    *,
    rate: float | None = None,
    duration: float | None = None,
    invalid_ratio: float = 0.0,
) -> int:
    """``produce-sample``: realistic events keyed by user, optionally paced, some invalid.

    Without ``rate`` and ``duration``: every event of ``users`` users, as fast as the broker
    takes them. With ``rate``: at most that many events per second. With ``duration``: new users
    keep coming (the next seed's) until that many seconds have passed. ``invalid_ratio`` of the
    records are made undecodable (no magic byte, or the Avro body cut short), so the DLQ path
    shows too. Progress goes to stderr.
    """
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate: must be positive, not {rate}")
    if duration is not None and duration <= 0:
        raise ConfigError(f"--duration: must be positive, not {duration}")
    if not 0.0 <= invalid_ratio <= 1.0:
        raise ConfigError(f"--invalid-ratio: must be between 0 and 1, not {invalid_ratio}")
    settings = Settings.from_env(require_api_key=False)
    topic = settings.kafka.topic
    ensure_topics(settings.kafka.admin_config(), {topic: {}}, partitions=partitions)
    encoder = build_encoder(
        Path(settings.schema.dir),
        settings.schema.registry_url,
        settings.schema.registry_config(),
        topic=topic,
    )
    producer = AckingProducer(settings.kafka.producer_config())
    rng = random.Random(seed)  # noqa: S311 - which samples to corrupt, not a secret
    progress = Progress(sys.stderr, rate=rate, duration=duration)
    sent = invalid = 0
    started = time.monotonic()
    producer.start()
    try:
        for event in _sample_events(users, seed, endless=duration is not None):
            if rate is not None:
                # Pacing, not synchronisation: record n leaves no earlier than n / rate seconds.
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if duration is not None and time.monotonic() - started >= duration:
                break
            value = encoder.encode_event(event)
            if rng.random() < invalid_ratio:
                value = corrupt(value, rng)
                invalid += 1
            producer.send_nowait(topic, event.user_key.encode(), value)
            sent += 1
            progress.update(sent, invalid, time.monotonic() - started)
        unacknowledged = producer.settle(60.0)
    finally:
        producer.close()
    progress.done(sent, invalid, time.monotonic() - started)
    if unacknowledged:
        raise ConsumerError(
            f"{unacknowledged} of {sent} events were not acknowledged by the broker"
        )
    whose = f"{users} users" if duration is None else f"batches of {users} users"
    print(f"produced {sent} events ({invalid} invalid) of {whose} to {topic}")
    return 0


def _sample_events(users: int, seed: int, *, endless: bool) -> Iterator[CommerceEvent]:
    """The events of ``users`` users; when ``endless``, then those of the next seeds, forever."""
    batch = 0
    while True:
        # Recent events, all in the past: retention counts from now, future ones teach nothing.
        start = past_start(datetime.now(UTC))
        yield from (e for _, e in generate(users, seed + batch, start=start))
        if not endless:
            return
        batch += 1


def corrupt(value: bytes, rng: random.Random) -> bytes:
    """An undecodable copy of an encoded record: framed with a schema id no registry has
    (``unknown_schema``), or its body cut short (``truncated`` / ``invalid_avro``)."""
    if rng.random() < 0.5:
        body = value[5:] if value[:1] == b"\x00" else value
        return b"\x00\x7f\xff\xff\xff" + body
    return value[: max(6, len(value) // 3)]


class Progress:
    """Progress of ``produce-sample`` on a stream: redrawn in place on a terminal, else one line
    every ``every`` seconds."""

    def __init__(
        self, out: TextIO, *, rate: float | None, duration: float | None, every: float = 5.0
    ) -> None:
        self._out = out
        self._tty = out.isatty()
        self._rate = rate
        self._duration = duration
        self._every = every
        self._next = 0.0 if self._tty else every

    def line(self, sent: int, invalid: int, elapsed: float) -> str:
        """``12,000 events (600 invalid) in 60.0 s, 200/s[, target 200/s][, 60 s of 3600 s]``."""
        speed = sent / elapsed if elapsed > 0 else 0.0
        text = f"{sent:,} events ({invalid:,} invalid) in {elapsed:.1f} s, {speed:,.0f}/s"
        if self._rate is not None:
            text += f", target {self._rate:,.0f}/s"
        if self._duration is not None:
            text += f", {min(elapsed, self._duration):.0f} s of {self._duration:.0f} s"
        return text

    def update(self, sent: int, invalid: int, elapsed: float) -> None:
        if elapsed < self._next:
            return
        self._next = elapsed + (0.2 if self._tty else self._every)
        end = "\r" if self._tty else "\n"
        print(self.line(sent, invalid, elapsed), end=end, file=self._out, flush=True)

    def done(self, sent: int, invalid: int, elapsed: float) -> None:
        if self._tty:
            print(self.line(sent, invalid, elapsed), file=self._out, flush=True)


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


def run_test_event(args: Any, environ: Mapping[str, str] | None = None) -> int:
    """``test-event``: one purchase, to see it reach Button through a deployment.

    Without ``--admin`` the purchase is produced to the input topic (the whole path: Kafka, the
    consumer, Button). With ``--admin URL`` it is posted to that instance's ``POST /test-event``
    (decode, enrichment and mapping there; with ``--send`` also Button), and the answer printed.

    Returns:
        0 on success; 1 when the instance answers with an error status or cannot be reached.

    Raises:
        ConfigError: ``--total`` is not a decimal amount, or ``--admin`` without a token in
            ``ADMIN_TEST_EVENT_TOKEN``.
    """
    try:
        total = Decimal(args.total)
    except InvalidOperation:
        raise ConfigError(f"--total: not a decimal amount: {args.total!r}") from None
    if getattr(args, "admin", None):
        env = os.environ if environ is None else environ
        token = env.get("ADMIN_TEST_EVENT_TOKEN", "")
        if not token:
            raise ConfigError("ADMIN_TEST_EVENT_TOKEN: required with --admin (the bearer token)")
        event = _test_purchase(args, total)
        return _post_test_event(args.admin, token, event_to_json(event), send=args.send)
    settings = Settings.from_env(require_api_key=False)
    event = _test_purchase(args, total)
    produce_events(settings, [event], partitions=1)
    print(f"produced purchase {args.order_id} ({total} {args.currency}) for user {args.user}")
    return 0


def _test_purchase(args: Any, total: Decimal) -> CommerceEvent:
    return CommerceEvent(
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


def _post_test_event(admin: str, token: str, event: dict[str, Any], *, send: bool) -> int:
    """POST ``event`` to ``admin``/test-event; print the answer; 0 unless it is an error."""
    url = admin.rstrip("/") + "/test-event" + ("?send=true" if send else "")
    request = urllib.request.Request(  # noqa: S310 - an operator-given http(s) URL
        url,
        data=json.dumps(event).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30.0) as response:  # noqa: S310
            status, body = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        print(f"FAIL  {url}: {exc}", file=sys.stderr)
        return 1
    print(body)
    if status >= 400:
        print(f"FAIL  {url} answered {status}", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class Finding:
    """One line of ``check``: its status, the setting it is about, and what was found."""

    status: Literal["ok", "fail", "warn", "skip"]
    setting: str
    message: str


def check(
    *, as_json: bool = False, timeout: float = 10.0, environ: Mapping[str, str] | None = None
) -> int:
    """``check``: every problem of the configuration at once, each naming its setting.

    Settings (all invalid variables, not just the first), Kafka (reachable, authorized, topics,
    their partitions, co-partitioning, cleanup policy and retention, the group), the schema
    registry (credentials, the writer schema's compatibility with the reader) and Button (a
    harmless read of an unknown order: 404 means the key is accepted, 401 not). Connectivity is
    checked for every section whose settings are valid. librdkafka's own log lines are captured,
    never printed raw.

    Returns:
        0 when nothing failed (warnings allowed), else 1.
    """
    sections, problems = diagnose(environ)
    findings = [Finding("fail" if p.fatal else "warn", p.variable, p.message) for p in problems]
    if not any(p.fatal for p in problems):
        findings.insert(0, Finding("ok", "settings", "every setting is valid"))
    kafka, schema = sections["kafka"], sections["schema"]
    button, delivery = sections["button"], sections["delivery"]
    if isinstance(kafka, KafkaSettings):
        findings.extend(_check_kafka(kafka, timeout))
    else:
        findings.append(
            Finding("skip", "KAFKA_BOOTSTRAP_SERVERS", "Kafka not checked: fix the settings above")
        )
    if isinstance(schema, SchemaSettings) and schema.registry_url is not None:
        topic = kafka.topic if isinstance(kafka, KafkaSettings) else "commerce-events"
        findings.extend(_check_registry(schema, topic, timeout))
    if isinstance(delivery, DeliverySettings) and delivery.dry_run:
        findings.append(Finding("skip", "BUTTON_API_KEY", "Button not checked: DELIVERY_DRY_RUN"))
    elif isinstance(button, ButtonSettings) and button.api_key is not None:
        findings.append(asyncio.run(_check_button(button)))
    else:
        findings.append(
            Finding("skip", "BUTTON_API_KEY", "Button not checked: fix the settings above")
        )
    failed = any(f.status == "fail" for f in findings)
    if as_json:
        document = {"ok": not failed, "checks": [dataclasses.asdict(f) for f in findings]}
        print(json.dumps(document, indent=2))
    else:
        for f in findings:
            print(f"{f.status.upper():<5} {f.setting}: {f.message}")
    return 1 if failed else 0


class _LibrdkafkaLog(logging.Handler):
    """Keeps librdkafka's log lines (handed over through the client's ``logger``) for the
    report instead of letting them reach the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def last(self) -> str:
        """The last line, without librdkafka's ``[thrd:...]:`` prefix."""
        return re.sub(r"^\[thrd:[^\]]*\]: ", "", self.lines[-1]) if self.lines else ""


def _quiet_admin(kafka: KafkaSettings) -> tuple[AdminClient, _LibrdkafkaLog]:
    log = _LibrdkafkaLog()
    logger = logging.getLogger(f"button_consumer.check.librdkafka.{id(log)}")
    logger.propagate = False
    logger.handlers = [log]
    logger.setLevel(logging.DEBUG)
    config = dict(kafka.admin_config())
    config["logger"] = logger
    config.setdefault("error_cb", lambda err: log.lines.append(str(err.str())))
    return AdminClient(config), log


def _check_kafka(k: KafkaSettings, timeout: float) -> list[Finding]:
    admin, log = _quiet_admin(k)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a diagnosis
        admin.poll(0)
        detail = log.last() or _kafka_error_text(exc)
        return [
            Finding(
                "fail",
                "KAFKA_BOOTSTRAP_SERVERS",
                f"cannot reach Kafka at {k.bootstrap_servers} within {timeout:.0f} s ({detail}); "
                "check the address, and KAFKA_CONFIG_SECURITY_PROTOCOL / SASL settings",
            )
        ]
    out = [
        Finding(
            "ok", "KAFKA_BOOTSTRAP_SERVERS", f"Kafka reachable ({len(metadata.brokers)} brokers)"
        )
    ]
    counts: dict[str, int] = {}
    variables = {
        k.topic: "KAFKA_TOPIC",
        k.dlq_topic: "KAFKA_DLQ_TOPIC",
        k.profile_topic: "KAFKA_PROFILE_TOPIC",
    }
    for name, variable in variables.items():
        topic = metadata.topics.get(name)
        error = None if topic is None else topic.error
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            out.append(
                Finding("fail", variable, f"topic {name}: not authorized (ACLs for this principal)")
            )
        elif topic is None or error is not None:
            will = k.create_topics and name != k.topic
            status: Literal["ok", "fail"] = "ok" if will else "fail"
            out.append(
                Finding(
                    status,
                    variable,
                    f"topic {name}: missing" + (" (created at start)" if will else ""),
                )
            )
        else:
            counts[name] = len(topic.partitions)
            out.append(Finding("ok", variable, f"topic {name}: {counts[name]} partitions"))
    if k.topic in counts and k.profile_topic in counts:
        if counts[k.topic] == counts[k.profile_topic]:
            out.append(Finding("ok", "KAFKA_PROFILE_TOPIC", "co-partitioned with the input topic"))
        else:
            out.append(
                Finding(
                    "fail",
                    "KAFKA_PROFILE_TOPIC",
                    f"{counts[k.profile_topic]} partitions, the input topic {counts[k.topic]}: "
                    "profiles must be co-partitioned with the input",
                )
            )
    out.extend(_check_topic_configs(admin, k, [n for n in variables if n in counts], timeout))
    out.append(_check_group(admin, k, timeout))
    return out


def _kafka_error_text(exc: Exception) -> str:
    if exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return f"{type(exc).__name__}: {exc}"


_WEEK_MS = 7 * 24 * 3600 * 1000


def _check_topic_configs(
    admin: AdminClient, k: KafkaSettings, names: list[str], timeout: float
) -> list[Finding]:
    """Cleanup policy and retention: the changelog compacted, the DLQ and input deleted."""
    if not names:
        return []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    out: list[Finding] = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        name = resource.name
        variable = {k.topic: "KAFKA_TOPIC", k.dlq_topic: "KAFKA_DLQ_TOPIC"}.get(
            name, "KAFKA_PROFILE_TOPIC"
        )
        try:
            entries = future.result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append(
                Finding(
                    "warn",
                    variable,
                    f"topic {name}: configuration not readable ({_kafka_error_text(exc)})",
                )
            )
            continue
        policy = str(entries["cleanup.policy"].value) if "cleanup.policy" in entries else "delete"
        retention = int(entries["retention.ms"].value) if "retention.ms" in entries else -1
        kept = "forever" if retention < 0 else f"{retention / 86_400_000:g} days"
        if name == k.profile_topic:
            ok = "compact" in policy
            out.append(
                Finding(
                    "ok" if ok else "fail",
                    variable,
                    f"topic {name}: cleanup.policy={policy}"
                    + ("" if ok else ": the profile changelog must be compacted"),
                )
            )
        elif name == k.dlq_topic:
            if "compact" in policy:
                out.append(
                    Finding(
                        "fail",
                        variable,
                        f"topic {name}: cleanup.policy={policy}: compaction would drop "
                        "dead letters of the same key",
                    )
                )
            elif 0 <= retention < _WEEK_MS:
                out.append(
                    Finding(
                        "warn",
                        variable,
                        f"topic {name}: dead letters kept {kept}: less than a week to replay them",
                    )
                )
            else:
                out.append(
                    Finding(
                        "ok", variable, f"topic {name}: cleanup.policy={policy}, retention {kept}"
                    )
                )
        else:
            status: Literal["ok", "warn"] = "warn" if "compact" in policy else "ok"
            note = ": compaction keeps one event per user" if status == "warn" else ""
            out.append(
                Finding(
                    status,
                    variable,
                    f"topic {name}: cleanup.policy={policy}, retention {kept}{note}",
                )
            )
    return out


def _check_group(admin: AdminClient, k: KafkaSettings, timeout: float) -> Finding:
    """The consumer group can be described (authorized); its state."""
    try:
        description = admin.describe_consumer_groups([k.group_id], request_timeout=timeout)[
            k.group_id
        ].result(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return Finding(
                "fail",
                "KAFKA_GROUP_ID",
                f"group {k.group_id}: not authorized (ACLs for this principal)",
            )
        if error is not None and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return Finding(
                "ok", "KAFKA_GROUP_ID", f"group {k.group_id}: new (starts at {k.auto_offset_reset})"
            )
        return Finding(
            "warn",
            "KAFKA_GROUP_ID",
            f"group {k.group_id}: not described ({_kafka_error_text(exc)})",
        )
    state = str(getattr(description.state, "name", description.state)).lower()
    return Finding(
        "ok", "KAFKA_GROUP_ID", f"group {k.group_id}: {state}, {len(description.members)} members"
    )


def _check_registry(schema: SchemaSettings, topic: str, timeout: float) -> list[Finding]:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    config = schema.registry_config()
    assert config is not None  # guarded by the caller: registry_url is set
    client = SchemaRegistryClient({**config, "timeout": int(timeout), "max.retries": 0})
    try:
        return _check_registry_with(client, config["url"], topic, Path(schema.dir))
    finally:
        client.close()


def _check_registry_with(client: Any, url: str, topic: str, schema_dir: Path) -> list[Finding]:
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        subjects = client.get_subjects()
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            return [
                Finding(
                    "fail",
                    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO",
                    f"registry {url} refused the credentials (HTTP {exc.http_status_code})",
                )
            ]
        return [
            Finding(
                "fail",
                "SCHEMA_REGISTRY_URL",
                f"registry {url}: HTTP {exc.http_status_code} {exc.error_message}",
            )
        ]
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [
            Finding(
                "fail",
                "SCHEMA_REGISTRY_URL",
                f"registry {url} unreachable ({type(exc).__name__}: {exc})",
            )
        ]
    out = [
        Finding("ok", "SCHEMA_REGISTRY_URL", f"registry {url} reachable ({len(subjects)} subjects)")
    ]
    subject = f"{topic}-value"
    if subject not in subjects:
        out.append(
            Finding(
                "warn",
                "SCHEMA_REGISTRY_URL",
                f"subject {subject} not registered yet (producers register it)",
            )
        )
        return out
    reader = (schema_dir / "commerce_event.avsc").read_text(encoding="utf-8")
    try:
        compatible = client.test_compatibility(subject, Schema(reader, "AVRO"))
    except SchemaRegistryError as exc:
        out.append(
            Finding(
                "warn",
                "SCHEMA_DIR",
                f"compatibility of {subject} not tested "
                f"(HTTP {exc.http_status_code} {exc.error_message})",
            )
        )
        return out
    if compatible:
        out.append(
            Finding("ok", "SCHEMA_DIR", f"the reader schema reads {subject}'s latest writer schema")
        )
    else:
        out.append(
            Finding(
                "fail",
                "SCHEMA_DIR",
                f"the reader schema is not compatible with {subject}'s latest writer schema",
            )
        )
    return out


async def _check_button(button: ButtonSettings) -> Finding:
    base = button.base_url
    async with ButtonClient.from_settings(button) as client:
        outcome = await client.get(f"button-consumer-check-{uuid.uuid4().hex[:12]}")
    if outcome.kind in (OutcomeKind.NOT_FOUND, OutcomeKind.SUCCESS):
        return Finding("ok", "BUTTON_API_KEY", f"Button {base} accepts the API key")
    if outcome.kind in (OutcomeKind.UNAUTHORIZED, OutcomeKind.FORBIDDEN):
        return Finding(
            "fail", "BUTTON_API_KEY", f"Button {base} refused the API key (HTTP {outcome.status})"
        )
    detail = f"{outcome.kind.value} {outcome.message}".rstrip()
    return Finding("fail", "BUTTON_BASE_URL", f"Button {base}: {detail}")
