"""The composition root: the one place that builds and wires every collaborator.

``build(settings)`` constructs everything without network I/O; ``Service.run()`` connects,
consumes until stopped, and closes in order. ``run_service()`` is what ``button-consumer run``
does: settings from the environment, logging, signal handlers, exit code.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from consumer.adapters.admin import AdminServer, DeliveryLog, Health
from consumer.adapters.avro_codec import build_decoder
from consumer.adapters.button_client import ButtonClient
from consumer.adapters.kafka import AckingProducer, KafkaSource, ensure_topics
from consumer.adapters.logging import configure_logging
from consumer.adapters.metrics import Metrics
from consumer.adapters.topics import (
    RESTORE_GROUP_ID,
    KafkaChangelog,
    KafkaDeadLetters,
    restore_partitions,
)
from consumer.domain.button import ButtonRequest
from consumer.domain.mapping import MappingConfig
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.domain.policy import RetryPolicy
from consumer.domain.profile import ProfileStore
from consumer.engine.authgate import AuthGate
from consumer.engine.concurrency import AdaptiveLimiter, TokenBucket
from consumer.engine.dispatcher import Dispatcher
from consumer.engine.parking import ParkingLot
from consumer.engine.pipeline import Pipeline, PipelineDeps
from consumer.engine.processor import ProfileProcessor
from consumer.engine.watermark import Watermarks
from consumer.engine.worker import RunStats, Worker, WorkerOptions
from consumer.errors import ConfigError, ConsumerError
from consumer.settings import Settings

log = structlog.get_logger("consumer")


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
            application_ids=app_ids,
        )
    except ValueError as exc:
        raise ConfigError(f"MAPPING_ settings: {exc}") from exc


class _DryRunButton:
    """Stands in for Button in dry-run mode: nothing leaves the process."""

    async def send(self, request: ButtonRequest) -> ButtonOutcome:
        return ButtonOutcome(OutcomeKind.SUCCESS, status=200)

    async def aclose(self) -> None:
        return None


@dataclass
class Service:
    """Everything one process runs, wired; ``run()`` owns the lifecycle."""

    settings: Settings
    metrics: Metrics
    health: Health
    deliveries: DeliveryLog
    producer_config: dict[str, Any]
    admin: AdminServer | None
    button: ButtonClient | _DryRunButton
    processor: ProfileProcessor
    stats: RunStats = field(default_factory=RunStats)
    _worker: Worker | None = None

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()

    async def run(self) -> RunStats:
        s = self.settings
        consumer_config = s.kafka.consumer_config()
        if s.kafka.create_topics:
            admin_config = s.kafka.admin_config()
            await asyncio.to_thread(
                ensure_topics,
                admin_config,
                {
                    s.kafka.dlq_topic: {},
                    s.kafka.profile_topic: {"cleanup.policy": "compact"},
                },
                partitions=await asyncio.to_thread(_partition_count, admin_config, s),
            )
        producer = AckingProducer(self.producer_config)
        decoder = build_decoder(
            Path(s.schema.dir),
            s.schema.registry_url,
            s.schema.registry_config(),
        )
        store = self.processor.store
        wall = _wall_clock
        gate = AuthGate(s.delivery.auth_probe_interval_seconds)
        d = s.delivery
        deps = PipelineDeps(
            decoder=decoder,
            processor=self.processor,
            changelog=KafkaChangelog(producer, s.kafka.profile_topic),
            button=self.button,
            dead_letters=KafkaDeadLetters(producer, s.kafka.dlq_topic),
            retry=RetryPolicy(
                max_attempts=d.retry_max_attempts,
                max_elapsed=d.retry_max_elapsed_seconds,
                base_delay=d.retry_base_delay_seconds,
                max_delay=d.retry_max_delay_seconds,
            ),
            rng=random.Random(),  # noqa: S311 - jitter, not cryptography
            limiter=AdaptiveLimiter(
                clock=time.monotonic, min_limit=d.concurrency_min, max_limit=d.concurrency_max
            ),
            rate=None
            if d.rate_limit_rps is None
            else TokenBucket(rate=d.rate_limit_rps, clock=time.monotonic),
            gate=gate,
            metrics=self.metrics,
            deliveries=self.deliveries,
            wall_clock=wall,
            monotonic=time.monotonic,
            dry_run=d.dry_run,
        )
        watermarks = Watermarks()
        dispatcher = Dispatcher(
            max_in_flight_per_partition=d.max_in_flight_per_partition,
            max_in_flight=d.max_in_flight,
            # No gate here: lanes must stay free to start records while Button refuses the key,
            # so that a queued record can take over probing if the probing one is revoked.
            watermarks=watermarks,
        )
        worker_box: list[Worker] = []
        changelog = deps.changelog

        async def expire_profiles() -> None:
            """Forget expired profiles and write their tombstones (compaction removes them)."""
            tombstones = store.expire(wall())
            for write in tombstones:
                await changelog.write(write.partition, write.key, write.value)
            self.metrics.profiles.set(len(store))

        def restore(partitions: list[int]) -> int:
            read = restore_partitions(
                s.kafka.reader_config(RESTORE_GROUP_ID),
                s.kafka.profile_topic,
                partitions,
                store.restore,
            )
            self.metrics.profiles.set(len(store))
            return read

        def drop(partitions: list[int]) -> None:
            for p in partitions:
                store.drop_partition(p)
            self.metrics.profiles.set(len(store))

        source = KafkaSource(
            consumer_config,
            s.kafka.topic,
            on_assign=lambda parts: worker_box[0].on_assign(parts),  # noqa: PLW0108 - late bound
            on_revoke=lambda parts: worker_box[0].on_revoke(parts),  # noqa: PLW0108
            on_lost=lambda parts: worker_box[0].on_lost(parts),  # noqa: PLW0108
        )
        worker = Worker(
            source=source,
            pipeline=Pipeline(deps),
            dispatcher=dispatcher,
            watermarks=watermarks,
            gate=gate,
            restore=restore,
            drop=drop,
            metrics=self.metrics,
            health=self.health,
            options=WorkerOptions(
                shutdown_timeout=d.shutdown_timeout_seconds,
                stop_when_idle=d.stop_when_idle_seconds,
                housekeeping_interval=s.mapping.expire_interval_seconds,
            ),
            housekeeping=expire_profiles,
        )
        worker_box.append(worker)
        self._worker = worker
        if self.admin is not None:
            await self.admin.start()
        try:
            self.stats = await worker.run()
            return self.stats
        finally:
            producer.close(timeout=d.shutdown_timeout_seconds)
            decoder.close()
            await self.button.aclose()
            if self.admin is not None:
                await self.admin.stop()


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _partition_count(config: dict[str, Any], settings: Settings) -> int | None:
    """The input topic's partition count, which the changelog must share (co-partitioning)."""
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(config).list_topics(timeout=30.0)
    topic = metadata.topics.get(settings.kafka.topic)
    if topic is None or topic.error is not None:
        raise ConfigError(f"KAFKA_TOPIC: topic {settings.kafka.topic!r} does not exist")
    count = len(topic.partitions)
    changelog = metadata.topics.get(settings.kafka.profile_topic)
    if changelog is not None and changelog.error is None and len(changelog.partitions) != count:
        raise ConfigError(
            f"KAFKA_PROFILE_TOPIC: {settings.kafka.profile_topic!r} has "
            f"{len(changelog.partitions)} partitions but {settings.kafka.topic!r} has {count}; "
            "the profile changelog must be co-partitioned with the input"
        )
    return count


def build(settings: Settings, registry: CollectorRegistry | None = None) -> Service:
    """Construct the service; no network I/O happens here."""
    metrics = Metrics.create(registry)
    health = Health()
    deliveries = DeliveryLog(settings.admin.recent_deliveries)
    admin = AdminServer(
        settings.admin.host, settings.admin.port, metrics.registry, health, deliveries
    )
    config = mapping_config(settings)
    button: ButtonClient | _DryRunButton
    if settings.delivery.dry_run or settings.button.api_key is None:
        button = _DryRunButton()
    else:
        button = ButtonClient.from_settings(settings.button)
    return Service(
        settings=settings,
        metrics=metrics,
        health=health,
        deliveries=deliveries,
        producer_config=settings.kafka.producer_config(),
        admin=admin,
        button=button,
        processor=ProfileProcessor(
            ProfileStore(config.retention),
            config,
            keyless_parking=ParkingLot(clock=time.time),
        ),
    )


def run_service() -> int:
    """``button-consumer run``: the service until SIGTERM/SIGINT; 0 on a clean stop."""
    settings = Settings.from_env()
    configure_logging(settings.log.level, settings.log.format)
    service = build(settings)
    log.info(
        "starting",
        topic=settings.kafka.topic,
        group=settings.kafka.group_id,
        button=settings.button.base_url,
        dry_run=settings.delivery.dry_run,
    )

    async def main() -> RunStats:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        return await service.run()

    try:
        stats = asyncio.run(main())
    except ConsumerError as exc:
        log.error("stopped_on_error", error=str(exc), exc_type=type(exc).__name__)
        return 1
    log.info("exited", received=stats.received)
    return 0
