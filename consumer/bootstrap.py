"""The composition root: the one place that builds and wires every collaborator.

``build(settings)`` constructs and wires the whole object graph without network I/O;
``Service.run()`` only starts it (topics, producer, admin server, the worker's consumer),
consumes until stopped, and closes in order. ``run_service()`` is what ``button-consumer run``
does: settings from the environment, logging, signal handlers, exit code.
"""

from __future__ import annotations

import asyncio
import gc
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from consumer.adapters.admin import AdminServer, DeliveryLog, Health, TestEventFn
from consumer.adapters.avro_codec import (
    LocalDecoder,
    RegistryDecoder,
    build_decoder,
    reader_field_names,
)
from consumer.adapters.backstop import ShutdownBackstop
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.changelog_watch import ChangelogWatch
from consumer.adapters.kafka import KafkaSource, kafka_error_text
from consumer.adapters.kafka_admin import (
    admin_client,
    describe_topics,
    ensure_topics,
    judge_acl_needs,
)
from consumer.adapters.kafka_producer import AckingProducer
from consumer.adapters.kafka_reader import committed_partitions
from consumer.adapters.logging import configure_logging
from consumer.adapters.malloc import fix_mmap_threshold
from consumer.adapters.metrics import Metrics
from consumer.adapters.telemetry import RestoreReport, ServiceTelemetry, TimedChangelog
from consumer.adapters.topics import (
    RESTORE_GROUP_ID,
    KafkaChangelog,
    KafkaDeadLetters,
    changelog_headers,
    restore_partitions,
)
from consumer.domain.acls import AclReport, service_acl_needs
from consumer.domain.button import ButtonRequest
from consumer.domain.mapping import MappingConfig
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.domain.policy import RetryPolicy
from consumer.domain.profile_epoch import FENCE_KEY, RestoredValue, fence_value
from consumer.domain.topics import (
    TopicPlan,
    TopicProblem,
    copartition_problem,
    created_topic_configs,
    lost_changelog_problem,
    topic_problems,
)
from consumer.engine.authgate import AuthGate, reporting_probe
from consumer.engine.breaker import CircuitBreaker
from consumer.engine.concurrency import QUEUE_RATIO, AdaptiveLimiter, PauseGate, TokenBucket
from consumer.engine.dispatcher import Dispatcher
from consumer.engine.fence import LateWriteRepair
from consumer.engine.parking import Parking, ParkingLot
from consumer.engine.pipeline import Pipeline, PipelineDeps
from consumer.engine.processor import ProfileProcessor
from consumer.engine.profiles import ProfileExpiry, ProfileStore
from consumer.engine.restore import RestoreCancel, RestoreFn
from consumer.engine.watermark import Watermarks
from consumer.engine.worker import RunStats, Worker, WorkerOptions
from consumer.errors import (
    AuthorizationError,
    BrokerError,
    ConfigError,
    ConsumerError,
    TopicError,
)
from consumer.mapcmd import map_one
from consumer.ports import ButtonPort
from consumer.settings import (
    RECORD_MARGIN,
    DeliverySettings,
    KafkaSettings,
    Settings,
    setting_warnings,
    unknown_variables,
)

log = structlog.get_logger("consumer")

PROBE_ORDER_ID = "button-consumer-probe-unknown-order"
"""The order the gates' probe reads: it never exists, so Button answers 404 when it takes the
key (the same harmless read ``check`` makes)."""


def mapping_config(settings: Settings) -> MappingConfig:
    """The mapping's configuration, from the MAPPING_ and BUTTON_APPLICATION_ID_ settings."""
    m, b = settings.mapping, settings.button
    app_ids = {
        platform: app_id
        for platform, app_id in (
            ("ios", b.application_id_ios),
            ("android", b.application_id_android),
            ("web", b.application_id_web),
        )
        if app_id
    }
    try:
        return MappingConfig(
            revenue_includes_tax_and_shipping=m.revenue_includes_tax_and_shipping,
            attribution_window=timedelta(hours=m.attribution_window_hours),
            device_id_retention=timedelta(days=m.device_id_retention_days),
            order_retention=timedelta(days=m.order_retention_days),
            drop_when_tracking_refused=m.drop_limited_ad_tracking_ids,
            skip_development_events=m.skip_development_events,
            max_orders_per_profile=m.max_orders_per_profile,
            lag_allowance=timedelta(hours=m.lag_allowance_hours),
            max_future_skew=timedelta(hours=m.max_future_skew_hours),
            max_event_age=timedelta(days=m.max_event_age_days),
            application_ids=app_ids,
        )
    except ValueError as exc:
        raise ConfigError(f"MAPPING_ settings: {exc}") from exc


class _Priority:
    """A ``ButtonPort`` whose requests go out at once, ahead of the pipeline's requests that
    wait in the transport and whatever holds them (``ButtonClient.send``'s ``priority``)."""

    def __init__(self, button: ButtonClient) -> None:
        self._button = button

    async def send(self, request: ButtonRequest) -> ButtonOutcome:
        return await self._button.send(request, priority=True)

    async def get(self, order_id: str) -> ButtonOutcome:
        return await self._button.get(order_id)


def hold_while_closed(button: ButtonClient, *gates: PauseGate) -> None:
    """Hold the requests waiting in ``button``'s transport while any of ``gates`` is closed:
    requests prepared before Button refused the key or asked to slow down wait with the
    others instead of going out (their probes are sent with priority)."""

    def update() -> None:
        button.hold(any(not gate.is_open for gate in gates))

    for gate in gates:
        gate.watch(update)


class _DryRunButton:
    """Stands in for Button in dry-run mode: nothing leaves the process."""

    async def send(self, request: ButtonRequest) -> ButtonOutcome:
        return ButtonOutcome(OutcomeKind.SUCCESS, status=200, from_button=True)

    async def get(self, order_id: str) -> ButtonOutcome:
        return ButtonOutcome(OutcomeKind.SUCCESS, status=200, from_button=True)

    async def aclose(self) -> None:
        return None


@dataclass
class Service:
    """Everything one process runs, wired by ``build``; ``run()`` only starts and stops it."""

    settings: Settings
    telemetry: ServiceTelemetry
    admin: AdminServer | None
    producer: AckingProducer
    decoder: Closeable
    button: ButtonClient | _DryRunButton
    worker: Worker
    create_topics: bool = False
    """Create the DLQ and the changelog before consuming when missing (``KAFKA_CREATE_TOPICS``)."""
    watch: ChangelogWatch | None = None
    """Follows the owned changelog partitions for a former owner's late writes (DESIGN, 7)."""
    repair: LateWriteRepair | None = None
    """Repairs what ``watch`` finds, on the event loop."""
    stats: RunStats = field(default_factory=RunStats)

    @property
    def metrics(self) -> Metrics:
        return self.telemetry.metrics

    @property
    def health(self) -> Health:
        return self.telemetry.health

    @property
    def deliveries(self) -> DeliveryLog:
        return self.telemetry.deliveries

    def stop(self) -> None:
        """Ask the worker to stop (safe from a signal handler on the loop's thread)."""
        self.worker.stop()

    async def run(self) -> RunStats:
        """Start, consume until ``stop()``, then close everything in reverse order."""
        s = self.settings
        await asyncio.to_thread(prepare_topics, s, create=self.create_topics)
        self.producer.start()
        if self.repair is not None:
            self.repair.attach(asyncio.get_running_loop())
        if self.admin is not None:
            await self.admin.start()
        try:
            self.stats = await self.worker.run()
            return self.stats
        finally:
            self._report_stopped()
            if self.watch is not None:
                await asyncio.to_thread(self.watch.close)
            self.producer.close(timeout=s.delivery.shutdown_budget().flush)
            self.decoder.close()
            await self.button.aclose()
            if self.admin is not None:
                await self.admin.stop()

    def _report_stopped(self) -> None:
        """The ``stopped`` line, once the worker has stopped (on its own, asked, or failed):
        the records the Kafka client handed out (``received``; ``redelivered`` among them,
        dropped), what the records finished came to by outcome, and the requests of those
        delivered by action (``sent``; in a dry run ``would_send``, what would have been sent).
        """
        stats = self.worker.stats
        log.info(
            "stopped",
            received=stats.received,
            redelivered=stats.redelivered,
            dry_run=self.settings.delivery.dry_run,
            **self.telemetry.tally.as_fields(dry_run=self.settings.delivery.dry_run),
        )


class Closeable(Protocol):
    def close(self) -> None: ...


def _wall_clock() -> datetime:
    return datetime.now(UTC)


METADATA_TIMEOUT = 30.0
"""Seconds the start-up's first metadata request may wait for the brokers."""


def prepare_topics(settings: Settings, *, create: bool) -> None:
    """Before consuming (blocking): create the DLQ and the changelog when missing (``create``,
    ``KAFKA_CREATE_TOPICS``), co-partitioned with the input and with its replication, then
    refuse topics the service cannot keep its guarantees with. One admin client serves every
    request (one connection to wait for, not one per step).

    A missing changelog is created only for a group that has committed no offset on the input
    (``refuse_a_lost_changelog``). Each creation is logged at info (``topic_created``).

    First of all, the ACLs: every one the service needs that the brokers say is missing stops
    it here (``refuse_missing_acls``), before a restore that could not read the changelog or a
    first dead letter that could not be written.

    Raises:
        AuthorizationError: Kafka ACLs missing for this principal (``refuse_missing_acls``).
        TopicError: the input topic is missing, the changelog is not co-partitioned with it,
            it is missing while the group has committed offsets on the input, or the topics are
            unfit (``refuse_unfit_topics``).
        BrokerError: the topics could not be described or created.
    """
    s = settings
    admin = admin_client(s.kafka.admin_config())
    _await_metadata(admin, s)
    refuse_missing_acls(s.kafka, admin)
    if create:
        count = _partition_count(admin, s)
        k = s.kafka
        states = describe_topics(admin, [k.topic, k.profile_topic])
        source = states[k.topic]
        if not states[k.profile_topic].exists:
            refuse_a_lost_changelog(admin, s, source.partitions)
        dlq, changelog = created_topic_configs(topic_plan(s), source.replication)
        topics = {s.kafka.dlq_topic: dlq, s.kafka.profile_topic: changelog}
        ensure_topics(admin, topics, partitions=count, replication=source.replication)
    refuse_unfit_topics(s, admin)


def judge_acls(kafka: KafkaSettings, admin: AdminClient, timeout: float = 30.0) -> AclReport:
    """The one judge of the principal's ACLs, for ``run`` and ``check`` (README "Kafka ACLs").

    Blocking (admin requests): asks the brokers what this principal may do on the input,
    changelog and DLQ topics and the group (KIP-430's authorized operations) and applies
    ``consumer.domain.acls.missing_acls`` to ``service_acl_needs``. A DLQ or changelog that
    does not exist is judged by whether ``KAFKA_CREATE_TOPICS`` could create it (``Create``);
    without ``KAFKA_CREATE_TOPICS`` its absence is the topic judge's (``judge_topics``).
    Brokers that do not report authorized operations are not judged.

    Raises:
        BrokerError: the brokers did not answer.
    """
    needs = service_acl_needs(kafka.topic, kafka.profile_topic, kafka.dlq_topic, kafka.group_id)
    creatable = (kafka.profile_topic, kafka.dlq_topic) if kafka.create_topics else ()
    return judge_acl_needs(admin, needs, creatable, timeout)


def refuse_missing_acls(kafka: KafkaSettings, admin: AdminClient, timeout: float = 30.0) -> None:
    """Refuse to start when the brokers say an ACL the service needs is missing (``judge_acls``).

    Raises:
        AuthorizationError: every missing ACL in one message.
        BrokerError: the brokers did not answer.
    """
    report = judge_acls(kafka, admin, timeout)
    if report.missing:
        raise AuthorizationError(report.message())


def refuse_a_lost_changelog(admin: AdminClient, settings: Settings, partitions: int) -> None:
    """Refuse to create a missing changelog for a group that has committed offsets on the input.

    Its profiles (remembered tokens, order ledgers with applied refunds, parked orders) were in
    a changelog that is gone (deleted, or ``KAFKA_PROFILE_TOPIC`` changed): an empty one would
    restore nothing while the group goes on past the records that built them, so every later
    partial refund of a known order would be held as unknown (``refund_held``) and Button keep
    the total from before it. A new group (nothing committed) gets its changelog created.

    Raises:
        TopicError: the group has committed offsets on the input topic.
        BrokerError: the group's offsets could not be read.
    """
    k = settings.kafka
    committed = committed_partitions(k.reader_config(k.group_id), k.topic, partitions)
    problem = lost_changelog_problem(
        k.profile_topic, k.group_id, k.topic, sorted(committed), partitions
    )
    if problem is not None:
        raise TopicError(f"KAFKA_PROFILE_TOPIC: {problem}")


def _await_metadata(admin: AdminClient, settings: Settings) -> Any:  # ClusterMetadata
    """The cluster's metadata, once a broker answered.

    Raises:
        BrokerError: the brokers did not answer within ``METADATA_TIMEOUT`` (named by their
            setting).
    """
    try:
        return admin.list_topics(timeout=METADATA_TIMEOUT)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) "
            f"within {METADATA_TIMEOUT:g} s: {kafka_error_text(exc)}"
        ) from exc


def _partition_count(admin: AdminClient, settings: Settings) -> int | None:
    """The input topic's partition count, which the changelog must share (co-partitioning).

    Raises:
        TopicError: the input topic is missing, or the changelog not co-partitioned with it.
        BrokerError: the brokers did not answer within ``METADATA_TIMEOUT`` (named by their
            setting).
    """
    metadata = _await_metadata(admin, settings)
    topic = metadata.topics.get(settings.kafka.topic)
    if topic is None or topic.error is not None:
        raise TopicError(f"KAFKA_TOPIC: topic {settings.kafka.topic!r} does not exist")
    count = len(topic.partitions)
    changelog = metadata.topics.get(settings.kafka.profile_topic)
    if changelog is not None and changelog.error is None:
        mismatch = copartition_problem(
            settings.kafka.profile_topic, len(changelog.partitions), settings.kafka.topic, count
        )
        if mismatch is not None:
            raise TopicError(f"topics unfit for the service: {mismatch}")
    return count


def _test_event(config: MappingConfig, button: ButtonPort, *, dry_run: bool) -> TestEventFn:
    """``POST /test-event``: one event (``map``'s input form) through decode, enrichment and
    mapping, without a profile and without touching the service's state; with ``send``, its
    request goes to Button (nothing leaves the process in dry-run mode) and Button's answer is
    returned. Nothing of it is logged: the caller sees the request, including what it carries."""

    async def run(text: str, send: bool) -> tuple[int, dict[str, Any]]:
        # Judged against the time it arrives, as the consumer judges a record (its event-time
        # checks), not against its own event time.
        result, request = map_one(text, config, datetime.now(UTC))
        answer: dict[str, Any] = {"result": result, "sent": False, "dry_run": dry_run}
        if request is None:
            return (422 if result.get("action") == "reject" else 200), answer
        if send:
            outcome = await button.send(request)
            answer["sent"] = True
            answer["button"] = {
                "outcome": outcome.kind.value,
                "status": outcome.status,
                "message": outcome.message,
                "object": None if outcome.object is None else dict(outcome.object),
                "elapsed_seconds": round(outcome.elapsed, 4),
            }
        return 200, answer

    return run


def topic_plan(settings: Settings) -> TopicPlan:
    """The settings of the topics the service creates, from ``KAFKA_*``."""
    return kafka_topic_plan(settings.kafka, settings.mapping.max_profile_bytes)


def kafka_topic_plan(kafka: KafkaSettings, max_profile_bytes: int) -> TopicPlan:
    """``topic_plan`` from the Kafka settings and ``MAPPING_MAX_PROFILE_BYTES`` alone (``check``
    has them when another section is invalid)."""
    return TopicPlan(
        max_message_bytes=kafka.max_message_bytes,
        dlq_retention_ms=kafka.dlq_retention_ms,
        profile_max_compaction_lag_ms=kafka.profile_max_compaction_lag_ms,
        profile_record_bytes=max_profile_bytes + RECORD_MARGIN,
    )


def judge_topics(
    kafka: KafkaSettings, plan: TopicPlan, admin: AdminClient | None = None, timeout: float = 30.0
) -> list[TopicProblem]:
    """The one judge of the input, changelog and dead-letter topics, for ``run`` and ``check``.

    Blocking (admin requests): describes the three topics (their effective configuration,
    topic overrides and broker defaults) and applies ``consumer.domain.topics.topic_problems``,
    judging a DLQ or changelog that ``KAFKA_CREATE_TOPICS`` creates at start as created. Fatal
    problems make ``run`` refuse to start and ``check`` fail; the others are ``run``'s
    ``topic_unfit`` warnings and ``check``'s warnings. ``admin``: a client to reuse (``None``:
    one made of ``KAFKA_*`` settings); ``timeout``: seconds per request.

    Raises:
        BrokerError: the topics could not be described.
    """
    names = [kafka.topic, kafka.profile_topic, kafka.dlq_topic]
    states = describe_topics(admin or kafka.admin_config(), names, timeout)
    return topic_problems(
        states[kafka.topic],
        states[kafka.profile_topic],
        states[kafka.dlq_topic],
        plan,
        create=kafka.create_topics,
    )


def validate_topics(settings: Settings, admin: AdminClient | None = None) -> list[TopicProblem]:
    """What is wrong with the input, changelog and dead-letter topics (``judge_topics``).

    Raises:
        BrokerError: the topics could not be described.
    """
    return judge_topics(settings.kafka, topic_plan(settings), admin)


def refuse_unfit_topics(settings: Settings, admin: AdminClient | None = None) -> None:
    """Log the topics' warnings; raise if the service cannot keep its guarantees with them.

    Raises:
        TopicError: every fatal problem, in one message.
        BrokerError: the topics could not be described.
    """
    problems = validate_topics(settings, admin)
    for problem in problems:
        if not problem.fatal:
            log.warning(
                "topic_unfit",
                topic=problem.topic,
                setting=problem.setting,
                problem=problem.message,
            )
    fatal = [str(p) for p in problems if p.fatal]
    if fatal:
        raise TopicError("topics unfit for the service: " + "; ".join(fatal))


def _admin_server(s: Settings, telemetry: ServiceTelemetry, test_event: TestEventFn) -> AdminServer:
    """The admin HTTP server; ``POST /test-event`` only when enabled (and then with its token)."""
    token = s.admin.test_event_token
    return AdminServer(
        s.admin.host,
        s.admin.port,
        telemetry.metrics.registry,
        telemetry.health,
        telemetry.deliveries,
        test_event=test_event,
        test_event_token=token.get_secret_value()
        if s.admin.test_event_enabled and token is not None
        else None,
    )


def _decoder(s: Settings, telemetry: ServiceTelemetry) -> RegistryDecoder | LocalDecoder:
    """The record decoder; a writer schema lacking a reader field is logged and counted."""

    def missing_fields(schema_id: int, fields: tuple[str, ...]) -> None:
        # Reading fills them with their defaults: a renamed btn_ref would go unattributed.
        log.warning("writer_schema_missing_fields", schema_id=schema_id, fields=list(fields))
        for name in fields:
            telemetry.writer_schema_missing_field(name)

    telemetry.reader_fields(reader_field_names(Path(s.schema.dir)))
    return build_decoder(
        Path(s.schema.dir),
        s.schema.registry_url,
        s.schema.registry_config(),
        on_missing_fields=missing_fields,
    )


def _retry_policy(d: DeliverySettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=d.retry_max_attempts,
        max_elapsed=d.retry_max_elapsed_seconds,
        base_delay=d.retry_base_delay_seconds,
        max_delay=d.retry_max_delay_seconds,
        retry_after_cap=d.retry_after_max_seconds,
    )


def _restorer(
    s: Settings,
    store: ProfileStore,
    producer: AckingProducer,
    telemetry: ServiceTelemetry,
    watch: ChangelogWatch,
) -> RestoreFn:
    """The worker's restore: read the changelog partitions into ``store``, then fence them,
    repair the keys the restore fenced, and have ``watch`` follow them from where the restore
    ended.

    The restore waits up to DELIVERY_SHUTDOWN_TIMEOUT_SECONDS for the acknowledgement of its own
    fence and repairs only (``AckingProducer.writes``), never for the shared producer's other
    writes; one of its own failed or unanswered raises ``BrokerError``."""

    def restore(partitions: list[int], cancel: RestoreCancel) -> int:
        """On a thread of its own, beside the poll loop (``consumer.engine.restore``)."""
        restores = {p: store.restoring(p) for p in partitions}
        ends: dict[int, int] = {}
        progress = RestoreReport(partitions, telemetry)

        def apply(partition: int, records: list[tuple[bytes, RestoredValue]]) -> None:
            restores[partition].apply(records)

        telemetry.restore_started(len(partitions))
        try:
            read = restore_partitions(
                s.kafka.reader_config(RESTORE_GROUP_ID),
                s.kafka.profile_topic,
                partitions,
                apply,
                cancelled=cancel.cancelled,
                progress=progress.batch,
                ends=ends,
                source=s.kafka.topic,
            )
        finally:
            telemetry.restore_finished(partitions)
        # Install what was read whole, claim this owner's epoch and fence former owners
        # (DESIGN, 7): the epoch is above every one in the partition and written before any
        # record is processed, so a late write of a former owner now carries a lower epoch than
        # this owner's records and is ignored by every later restore. Then write again each key
        # whose record the restore ignored as such a late write, so that the rightful record is
        # the latest of its key again: compaction keeps the last one. All of it while the
        # partition cannot be cancelled: one revoked or lost meanwhile (its job drops whatever
        # it holds of it) is neither installed nor fenced, and no later owner's records are
        # overwritten by this member's.
        repaired = 0
        live: list[int] = []
        # Its own writes, waited for alone: the shared producer's other writes (dead letters,
        # other partitions' profiles) are none of this restore's business.
        writes = producer.writes()
        for partition in partitions:
            with cancel.holding(partition) as owned:
                if not owned:
                    continue
                live.append(partition)
                epoch = store.install(restores.pop(partition), claim=True)
                writes.send_nowait(
                    s.kafka.profile_topic, FENCE_KEY, fence_value(epoch), partition=partition
                )
                repairs = store.repairs(partition)
                for write in repairs:
                    writes.send_nowait(
                        s.kafka.profile_topic,
                        write.key,
                        write.value,
                        changelog_headers(write.value, write.epoch),
                        partition=partition,
                    )
            if repairs:
                repaired += len(repairs)
                log.warning(
                    "changelog_fenced_write_repaired",
                    partition=partition,
                    epoch=epoch,
                    keys=len(repairs),
                    when="restore",
                )
        partitions = live
        if partitions and writes.settle(s.delivery.shutdown_timeout_seconds):
            raise BrokerError(f"the changelog fence of partitions {partitions} was not written")
        if repaired:
            telemetry.changelog_repaired("restore", repaired)
        # From where the restore ended on, a former owner's write landing now is repaired at
        # once (``LateWriteRepair``); a partition revoked meanwhile is stopped by ``drop``.
        for partition in partitions:
            with cancel.holding(partition) as owned:
                if owned:
                    watch.follow(partition, ends.get(partition, 0), store.epoch(partition))
        return read

    return restore


def concurrency_limiter(
    d: DeliverySettings, button: ButtonClient | _DryRunButton
) -> AdaptiveLimiter:
    """The adaptive concurrency limit; with a transport that caps its own requests (libcurl's),
    a quarter of the limit more are prepared and wait in it for a slot (``QUEUE_RATIO``)."""
    low, high = d.concurrency_min, d.concurrency_max
    if isinstance(button, ButtonClient) and button.set_concurrency(low):
        return AdaptiveLimiter(
            clock=time.monotonic,
            min_limit=low,
            max_limit=high,
            queue_ratio=QUEUE_RATIO,
            on_limit=button.set_concurrency,
        )
    return AdaptiveLimiter(clock=time.monotonic, min_limit=low, max_limit=high)


def build(settings: Settings, registry: CollectorRegistry | None = None) -> Service:
    """Construct and wire the whole service; no network I/O happens here.

    Raises:
        ConfigError: a setting is inconsistent (e.g. the mapping's), a schema file is missing, or
            BUTTON_API_KEY is missing outside a dry run (a live run never falls back to the
            dry-run Button, which would report every outcome as delivered).
    """
    s, d = settings, settings.delivery
    if not d.dry_run and s.button.api_key is None:
        raise ConfigError("BUTTON_API_KEY is required (or set DELIVERY_DRY_RUN=true)")
    telemetry = ServiceTelemetry(
        Metrics.create(registry),
        Health(),
        DeliveryLog(s.admin.recent_deliveries),
        success_sample_rate=s.log.success_sample_rate,
    )
    config = mapping_config(s)
    store = ProfileStore(config.retention, max_bytes=s.mapping.max_profile_bytes)
    telemetry.count_profiles(store.__len__)
    processor = ProfileProcessor(store, config)
    parking = Parking(
        store,
        max_orders_per_profile=config.max_orders_per_profile,
        keyless=ParkingLot(clock=time.time),
    )
    button: ButtonClient | _DryRunButton = (
        _DryRunButton() if d.dry_run else ButtonClient.from_settings(s.button)
    )
    # An operator's test event skips the requests waiting in the transport, and its gates.
    tester: ButtonPort = _Priority(button) if isinstance(button, ButtonClient) else button
    admin = _admin_server(s, telemetry, _test_event(config, tester, dry_run=d.dry_run))
    producer = AckingProducer(s.kafka.producer_config())
    decoder = _decoder(s, telemetry)
    changelog = TimedChangelog(KafkaChangelog(producer, s.kafka.profile_topic), telemetry)
    retry = _retry_policy(d)

    async def read_unknown_order() -> ButtonOutcome:
        """The record-independent request both gates probe with: read an unknown order."""
        return await button.get(PROBE_ORDER_ID)

    probe = reporting_probe(read_unknown_order, telemetry)

    gate = AuthGate(d.auth_probe_interval_seconds, probe)
    breaker = CircuitBreaker(
        failure_threshold=d.breaker_failure_threshold,
        probe_interval=d.breaker_probe_interval_seconds,
        policy=retry,
        probe=probe,
    )
    if isinstance(button, ButtonClient):
        hold_while_closed(button, gate, breaker)
    watermarks = Watermarks()
    dispatcher = Dispatcher(
        max_in_flight_per_partition=d.max_in_flight_per_partition,
        max_in_flight=d.max_in_flight,
        max_commit_distance=d.max_commit_distance,
        # No gate here: lanes must stay free to start records while Button refuses the key,
        # so that a queued record can take over probing if the probing one is revoked.
        watermarks=watermarks,
        clock=time.monotonic,  # low marks that cover a refill at the measured drain rate
    )
    pipeline = Pipeline(
        PipelineDeps(
            decoder=decoder,
            processor=processor,
            parking=parking,
            changelog=changelog,
            button=button,
            dead_letters=KafkaDeadLetters(producer, s.kafka.dlq_topic),
            retry=retry,
            rng=random.Random(),  # noqa: S311 - jitter, not cryptography
            limiter=concurrency_limiter(d, button),
            rate=None
            if d.rate_limit_rps is None
            else TokenBucket(rate=d.rate_limit_rps, clock=time.monotonic),
            gate=gate,
            breaker=breaker,
            telemetry=telemetry,
            wall_clock=_wall_clock,
            monotonic=time.monotonic,
            dry_run=d.dry_run,
            stop_gate=dispatcher,
        )
    )

    expiry = ProfileExpiry(store, changelog, clock=_wall_clock, telemetry=telemetry)

    async def expire_profiles() -> None:
        """Forget expired profiles and write their tombstones (compaction removes them)."""
        await expiry.run()

    repair = LateWriteRepair(store, changelog, telemetry)
    watch = ChangelogWatch(
        s.kafka.reader_config(RESTORE_GROUP_ID), s.kafka.profile_topic, repair.found
    )
    restore = _restorer(s, store, producer, telemetry, watch)

    def drop(partitions: list[int]) -> None:
        watch.stop(partitions)
        for p in partitions:
            store.drop_partition(p)

    # One shutdown budget, split explicitly (DELIVERY_SHUTDOWN_TIMEOUT_SECONDS): drain, final
    # commit, leaving the group, producer flush; together below the pod's grace period.
    budget = d.shutdown_budget()
    source = KafkaSource(
        s.kafka.consumer_config(),
        s.kafka.topic,
        on_offset_reset=telemetry.offset_reset,
        admin_config=s.kafka.admin_config(),
    )
    source.commit_timeout = budget.commit
    source.close_timeout = budget.close
    worker = Worker(
        source=source,
        pipeline=pipeline,
        dispatcher=dispatcher,
        watermarks=watermarks,
        gate=gate,
        restore=restore,
        drop=drop,
        telemetry=telemetry,
        options=WorkerOptions(
            shutdown_timeout=budget.drain,
            revoke_timeout=d.revoke_timeout_seconds,
            stop_when_idle=d.stop_when_idle_seconds,
            housekeeping_interval=s.mapping.expire_interval_seconds,
        ),
        housekeeping=expire_profiles,
        breaker=breaker,
        settle_writes=producer.settle_partitions,
        side_failure=lambda: watch.failure,
    )
    return Service(
        settings=s,
        telemetry=telemetry,
        admin=admin,
        producer=producer,
        decoder=decoder,
        button=button,
        worker=worker,
        create_topics=s.kafka.create_topics,
        watch=watch,
        repair=repair,
    )


def freeze_startup_heap() -> int:
    """Take every object alive now out of the cyclic garbage collector's scans (``gc.freeze``).

    Called once the service is built: the modules, the settings and the object graph of the
    service live as long as the process, yet a full collection walks all of them again (the
    in-flight records that survive two younger collections keep triggering full ones). Frozen,
    they are never scanned, so a full collection costs a fraction: in the forward bench (20,000
    orders, 10 full collections) they took 0.39-0.48 s, frozen 0.09-0.11 s, and the longest
    pause of the event loop fell from 50-70 ms to 20-30 ms. Objects created later are collected
    as usual.

    Returns:
        how many objects are frozen (``gc.get_freeze_count()``).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> None:
    """Log each variable with a setting's prefix that is no setting (``unknown_setting``,
    with check's hint): a misspelt optional setting silently keeps its default otherwise."""
    for problem in unknown_variables(environ):
        log.warning("unknown_setting", variable=problem.variable, problem=problem.message)


def warn_risky_settings(settings: Settings) -> None:
    """Log each setting that works but risks something (``setting_warning``, as ``check``
    warns about it): a revoke deadline or a shutdown drain shorter than a request, a
    connection pool not above DELIVERY_CONCURRENCY_MAX."""
    for problem in setting_warnings(settings):
        log.warning("setting_warning", variable=problem.variable, problem=problem.message)


BACKSTOP_MARGIN = 3.0
"""Seconds past DELIVERY_SHUTDOWN_TIMEOUT_SECONDS (S) after a stop signal at which the process
ends whatever still runs (``ShutdownBackstop``): the split budget, then the producer thread's
2 s join, then this guard."""


def run_service() -> int:
    """``button-consumer run``: the service until SIGTERM/SIGINT; 0 on a clean stop, 1 when
    it stopped on an error, ``BACKSTOP_STATUS`` (124) when the shutdown outlived S + 3 s after
    the signal (``consumer.adapters.backstop``)."""
    settings = Settings.from_env()
    # Before the service allocates anything large: a restore's freed tables go back to the
    # system instead of staying resident (``consumer.adapters.malloc``).
    mmap_threshold = fix_mmap_threshold()
    configure_logging(settings.log.level, settings.log.format, cache=True)
    warn_unknown_variables()
    warn_risky_settings(settings)
    service = build(settings)
    freeze_startup_heap()
    log.info(
        "starting",
        topic=settings.kafka.topic,
        group=settings.kafka.group_id,
        button=settings.button.base_url,
        dry_run=settings.delivery.dry_run,
        mmap_threshold_fixed=mmap_threshold,
    )

    # The promise of the README's grace period: exit within S + 3 s of SIGTERM, even when a
    # step of the shutdown never ends (a restore blocked in librdkafka, the broker away).
    backstop = ShutdownBackstop(settings.delivery.shutdown_timeout_seconds + BACKSTOP_MARGIN)

    def on_stop_signal() -> None:
        backstop.arm()
        service.stop()

    async def main() -> RunStats:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_stop_signal)
        return await service.run()

    try:
        stats = asyncio.run(main())
    except ConsumerError as exc:
        log.error("stopped_on_error", error=str(exc), exc_type=type(exc).__name__)
        return 1
    log.info("exited", received=stats.received)
    return 0
