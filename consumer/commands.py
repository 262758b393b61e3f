"""The operator commands beside ``run``: ``map``, ``produce-sample``, ``test-event`` (``check`` is
in ``consumer.checks``)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.kafka_admin import (
    await_brokers,
    describe_topics,
    ensure_topics,
    topic_exists,
)
from consumer.adapters.kafka_producer import AckingProducer
from consumer.bootstrap import mapping_config
from consumer.domain.attribution import MAX_BTN_REF_LENGTH, TokenProblem, btn_ref_problem
from consumer.domain.button import Reject
from consumer.domain.event_forms import amount_from_text, event_to_json
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventReason,
    EventType,
    Platform,
    ProductAction,
)
from consumer.domain.mapping import MappingConfig, process
from consumer.domain.wording import counted
from consumer.errors import ConfigError, ConsumerError, InvalidEventError, TopicError
from consumer.mapcmd import run_map
from consumer.samples import generate, past_start
from consumer.settings import Settings, refuse_unwanted_variables


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
    if path == "-":
        return run_map(sys.stdin, sys.stdout, config, moment)
    try:
        lines = Path(path).open(encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with lines:
        return run_map(lines, sys.stdout, config, moment)


def _offline_env() -> dict[str, str]:
    """``map`` needs no Kafka: give the required bootstrap servers a placeholder if unset."""
    import os

    env = dict(os.environ)
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", "unused:9092")
    return env


SAMPLE_PARTITIONS = 3
"""The partition count of the topic ``produce-sample`` creates without ``--partitions``."""


def produce_sample(
    users: int,
    seed: int,
    partitions: int | None = None,
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

    ``partitions``: of the topic when it is created (default ``SAMPLE_PARTITIONS``). A topic
    that exists is used as it is; when its partition count is not ``partitions``, a warning on
    stderr says so and gives its count (the command never changes a topic).
    """
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"--rate: must be a finite number above 0, not {rate}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ConfigError(f"--duration: must be a finite number above 0, not {duration}")
    if users < 1 or (partitions is not None and partitions < 1):
        raise ConfigError(
            f"--users and --partitions: must be at least 1, not {users}, {partitions}"
        )
    if not 0.0 <= invalid_ratio <= 1.0:
        raise ConfigError(f"--invalid-ratio: must be between 0 and 1, not {invalid_ratio}")
    settings = Settings.from_env(require_api_key=False)
    topic = settings.kafka.topic
    admin = await_brokers(settings.kafka.admin_config(), settings.kafka.bootstrap_servers)
    existing = describe_topics(admin, [topic])[topic].partitions
    if existing and partitions is not None and existing != partitions:
        print(
            f"button-consumer: warning: --partitions {partitions} not applied: topic {topic} "
            f"exists already, with {counted(existing, 'partition')} (produce-sample creates a "
            "topic, never changes one)",
            file=sys.stderr,
        )
    ensure_topics(admin, {topic: {}}, partitions=partitions or SAMPLE_PARTITIONS)
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
            f"{unacknowledged} of {counted(sent, 'event')} not acknowledged by the broker"
        )
    whose = counted(users, "user")
    whose = whose if duration is None else f"batches of {whose}"
    print(f"produced {counted(sent, 'event')} ({invalid} invalid) of {whose} to {topic}")
    return 0


def _sample_events(users: int, seed: int, *, endless: bool) -> Iterator[CommerceEvent]:
    """The events of ``users`` users of ``seed``; when ``endless``, then those of new users,
    batch after batch, forever. Batch ``n`` > 0 is generated from a seed derived from
    ``(seed, n)`` (``_batch_seed``), not ``seed + n``: a neighbouring ``--seed`` would repeat
    a batch's users and orders, re-sending them."""
    batch = 0
    while True:
        # Recent events, all in the past: retention counts from now, future ones teach nothing.
        start = past_start(datetime.now(UTC))
        yield from (e for _, e in generate(users, _batch_seed(seed, batch), start=start))
        if not endless:
            return
        batch += 1


def _batch_seed(seed: int, batch: int) -> int:
    """``seed`` itself for the first batch; for a later one, 64 bits of SHA-256 of
    ``"seed/batch"``, so that no small ``--seed`` a user picks yields the same users."""
    if batch == 0:
        return seed
    digest = hashlib.sha256(f"{seed}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


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
        text = f"{counted(sent, 'event')} ({invalid:,} invalid) in {elapsed:.1f} s, {speed:,.0f}/s"
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


METADATA_TIMEOUT = 30.0
"""Seconds ``produce_events`` waits for the cluster's metadata to see that its topic exists."""


def produce_events(
    settings: Settings, events: Any, partitions: int = 3, *, create: bool = True
) -> int:
    """Encode and produce events to the input topic; returns the count.

    ``create``: create the topic (``partitions``) if missing (the samples, the demo); else a
    missing topic is refused, so a misspelt ``KAFKA_TOPIC`` is named instead of created by a
    broker that creates topics on first use (``test-event`` against a deployment).

    With SCHEMA_REGISTRY_URL the schema is registered first (wire format), else plain Avro.

    Raises:
        TopicError: ``create`` is false and the topic does not exist.
        ConfigError: the registry refused the schema.
        ConsumerError: not every event was acknowledged by the broker (``BrokerError``: no
            broker answered within ``BROKER_ANSWER_TIMEOUT`` or every one is down, naming
            ``KAFKA_BOOTSTRAP_SERVERS``; a topic could not be created).
        KafkaException: the cluster's metadata could not be read (the command line names
            ``KAFKA_BOOTSTRAP_SERVERS``, as for ``produce-sample``).
        SchemaRegistryUnavailableError: the registry could not be reached.
    """
    topic = settings.kafka.topic
    admin = await_brokers(settings.kafka.admin_config(), settings.kafka.bootstrap_servers)
    if create:
        ensure_topics(admin, {topic: {}}, partitions=partitions)
    elif not topic_exists(admin, topic, METADATA_TIMEOUT):
        raise TopicError(f"KAFKA_TOPIC: topic {topic!r} does not exist")
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

    A ``--btn-ref`` the service would drop (``attribution.btn_ref_problem``: a placeholder, an
    organisation id...) is sent as given, with a warning on stderr saying why it will be dropped.

    Returns:
        0 on success; 1 when the instance answers with an error status or cannot be reached.

    Raises:
        ConfigError: an argument makes no valid purchase, checked before anything else: a
            ``--total`` not in plain decimal notation (``"12.34"``; see ``amount_from_text``: no
            ``12_50``, ``1E+2`` or other scripts' digits), negative or finer than the event
            model keeps, a ``--currency`` that is not three letters, an empty ``--order-id`` or
            ``--user`` (the message names the option and its value), or a purchase Button's
            contract refuses (the mapping's ``order_id_not_ascii``, ``order_id_too_long``,
            ``unknown_currency``: it would only be dead-lettered); ``--admin`` not an
            http(s) URL with a host, or without a token in ``ADMIN_TEST_EVENT_TOKEN``; a
            variable every command refuses (``settings.refuse_unwanted_variables``: a setting's
            name in another letter case, a near-miss asking for a dry run).
    """
    try:
        total = amount_from_text(args.total)
    except ValueError:
        raise ConfigError(
            f"--total: not a plain decimal amount like '12.34': {args.total!r}"
        ) from None
    event = _valid_test_purchase(args, total)
    _warn_of_a_dropped_token(args.btn_ref)
    if getattr(args, "admin", None):
        where = urllib.parse.urlsplit(args.admin)
        if where.scheme not in ("http", "https") or not where.hostname:
            raise ConfigError(f"--admin: not an http(s) URL with a host: {args.admin!r}")
        env = os.environ if environ is None else environ
        # It reads one setting, yet refuses what every command refuses (a setting's name in
        # another letter case, ``admin_test_event_token``), as ``check`` fails it.
        refuse_unwanted_variables(env)
        token = env.get("ADMIN_TEST_EVENT_TOKEN", "")
        if not token:
            raise ConfigError("ADMIN_TEST_EVENT_TOKEN: required with --admin (the bearer token)")
        return _post_test_event(args.admin, token, event_to_json(event), send=args.send)
    settings = Settings.from_env(require_api_key=False)
    produce_events(settings, [event], create=False)
    print(f"produced purchase {args.order_id} ({total} {args.currency}) for user {args.user}")
    return 0


_OPTION_OF = {
    EventReason.INVALID_AMOUNT: "total",
    EventReason.NEGATIVE_AMOUNT: "total",
    EventReason.INVALID_CURRENCY: "currency",
    EventReason.MISSING_CURRENCY: "currency",
    EventReason.MISSING_TRANSACTION_ID: "order_id",
    EventReason.EMPTY_FIELD: "user",
    EventReason.KEY_TOO_LARGE: "user",
}
"""The ``test-event`` option behind each way its purchase can be invalid (the event id, time
and action are the command's own, always valid)."""


def _valid_test_purchase(args: Any, total: Decimal) -> CommerceEvent:
    """The purchase ``test-event`` sends.

    Raises:
        ConfigError: the event model refuses it: naming the option, its value and why.
    """
    try:
        event = _test_purchase(args, total)
    except InvalidEventError as exc:
        name = _OPTION_OF.get(EventReason(exc.reason))
        if name is None:
            raise ConfigError(f"the test purchase is not a valid event: {exc}") from None
        option = "--" + name.replace("_", "-")
        raise ConfigError(f"{option} {getattr(args, name)!r}: {exc}") from None
    # What Button's contract refuses (an order id not printable ASCII or over 255 characters,
    # a currency not in ISO 4217) would only be dead-lettered: the mapping says it here.
    result, _profile = process(event, None, MappingConfig(), event.event_time)
    if isinstance(result, Reject):
        name = _MAPPING_OPTION_OF.get(result.reason)
        where = f"--{name.replace('_', '-')} {getattr(args, name)!r}" if name else "the purchase"
        raise ConfigError(f"{where}: Button would refuse it ({result.reason}): {result.detail}")
    return event


_TOKEN_PROBLEM_TEXT = {
    TokenProblem.EMPTY: "empty",
    TokenProblem.PLACEHOLDER: "a placeholder for a missing value, not a token",
    TokenProblem.TOO_LONG: f"over {MAX_BTN_REF_LENGTH} characters",
    TokenProblem.NOT_URL_SAFE: "not URL-safe (only A-Z a-z 0-9 . _ ~ -)",
    TokenProblem.ORGANISATION_ID: "a publisher's organisation id (org-...), not a token",
}
"""Each reason the mapping drops a ``btn_ref`` (``attribution.btn_ref_problem``), in words."""


def _warn_of_a_dropped_token(btn_ref: str | None) -> None:
    """One line on stderr when ``--btn-ref`` is a value the service drops, by the mapping's own
    rule (``attribution.btn_ref_problem`` on the stripped value): the purchase is still valid
    and reaches Button, without that token. ``--btn-ref ''`` asks for no token: no warning."""
    if not btn_ref:
        return
    problem = btn_ref_problem(btn_ref.strip())
    if problem is None:
        return
    print(
        f"button-consumer: warning: --btn-ref {btn_ref!r} is {_TOKEN_PROBLEM_TEXT[problem]}: the "
        "service drops it, so the purchase carries no attribution token of its own",
        file=sys.stderr,
    )


_MAPPING_OPTION_OF = {
    "missing_order_id": "order_id",
    "order_id_not_ascii": "order_id",
    "order_id_too_long": "order_id",
    "unknown_currency": "currency",
    "total_out_of_range": "total",
}
"""The ``test-event`` option behind a mapping rejection of its purchase."""


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
