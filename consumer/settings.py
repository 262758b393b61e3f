"""Typed settings, read once from the environment at start and validated (12-factor).

Each section reads the variables with its own prefix (``KAFKA_``, ``BUTTON_``, ``DELIVERY_``,
``MAPPING_``, ``ADMIN_``, ``LOG_``); the variable of a field is the prefix plus the field name in
upper case (``DELIVERY_MAX_IN_FLIGHT`` -> ``DeliverySettings.max_in_flight``). Any librdkafka
property passes through as ``KAFKA_CONFIG_<NAME>``: ``_`` becomes ``.`` and ``__`` becomes ``_``
(``KAFKA_CONFIG_SASL_MECHANISM=PLAIN`` -> ``sasl.mechanism=PLAIN``); a name librdkafka does not
know (``consumer.librdkafka_properties``) is refused. Names are read in upper case only: one
with a section's prefix in another letter case (``delivery_dry_run``) is refused, never ignored
(``unknown_variables``). Invalid values raise ``ConfigError`` naming the variable; secrets are
``SecretStr`` and never printed.

This module is the one owner of client configuration: ``KafkaSettings`` assembles every
librdkafka configuration the process uses (``consumer_config``, ``reader_config``,
``producer_config``, ``admin_config``) and ``SchemaSettings.registry_config`` the schema registry
client's, so every command (``run``, ``check``, ``produce-sample``, ``test-event``,
``replay-dlq``) talks to Kafka and the registry with the same properties and credentials.

About 610 lines: every variable, its validation and the client configurations built from it
stay in one place, which is the point of a single settings object.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.errors import ConfigError
from consumer.librdkafka_properties import DEDICATED_API, PROPERTIES

KAFKA_LOGGER = "consumer.librdkafka"
"""The stdlib logger every Kafka client configuration names as confluent-kafka's ``logger``."""
_APP_ID = re.compile(r"^app-[A-Za-z0-9]{8,64}$")
_PASSTHROUGH_PREFIX = "KAFKA_CONFIG_"
DRY_RUN_SUFFIX = "-dry-run"
"""Appended to the group, changelog and DLQ names when DELIVERY_DRY_RUN=true."""

RECORD_MARGIN = 4_096
"""Bytes a changelog record needs beside its profile value (key, record and batch overhead): the
key is at most ``consumer.domain.profile.MAX_KEY_BYTES`` (2,048), a longer one is dead-lettered
``key_too_large`` before any profile is kept under it."""
# librdkafka properties the service owns: overriding them would break at-least-once delivery.
# Their values are set below, in KafkaSettings, next to this refusal (DESIGN, 1).
_RESERVED_KAFKA = frozenset(
    {
        "enable.auto.offset.store",
        "enable.auto.commit",
        "enable.partition.eof",
        "allow.auto.create.topics",
        "group.id",
        "bootstrap.servers",
        # librdkafka's aliases of the above (CONFIGURATION.md, "Alias for"): the same property
        "metadata.broker.list",
        "auto.commit.enable",
    }
)
# Properties with a typed variable of their own: the pass-through would silently win over it.
_TYPED_KAFKA = {
    "auto.offset.reset": "KAFKA_AUTO_OFFSET_RESET",
    "group.protocol": "KAFKA_GROUP_PROTOCOL",
    "group.instance.id": "KAFKA_GROUP_INSTANCE_ID",
    "message.max.bytes": "KAFKA_MAX_MESSAGE_BYTES",
}
# Values that weaken at-least-once delivery: property -> the values accepted.
_GUARANTEED_KAFKA = {
    "acks": frozenset({"all", "-1"}),
    "request.required.acks": frozenset({"all", "-1"}),  # librdkafka's alias of acks
    "enable.idempotence": frozenset({"true"}),
    "isolation.level": frozenset({"read_committed"}),
}
# Passed-through properties of group membership: they belong to the service's consumer group
# only, never to a reader that assigns partitions itself or to an admin client.
_GROUP_ONLY = ("group.", "partition.")
# Parts of property names whose values are credentials (hidden by ClientConfig's repr).
_SECRET_PARTS = (
    "password",
    "passphrase",
    "secret",
    "user.info",
    "ssl.key",
    "private.key.pem",
    "oauthbearer.config",
    "token",
)


class ClientConfig(dict[str, Any]):
    """A client configuration (a plain ``dict`` to the clients) that never prints credentials.

    ``repr`` and ``str`` show ``**********`` for every value whose property name holds a
    credential (``sasl.password``, ``ssl.key.password``, ``basic.auth.user.info``...), so a
    configuration can be logged or end up in an error report without leaking them.
    """

    def __repr__(self) -> str:
        shown = {
            key: "**********" if any(part in key for part in _SECRET_PARTS) else value
            for key, value in self.items()
        }
        return repr(shown)

    __str__ = __repr__


class _Section(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # ``Settings.from_env`` reads the environment itself (one mapping, empty = default):
        # pydantic-settings must not read ``os.environ`` again behind its back, or an empty
        # variable fails validation and ``from_env(environ)`` is not limited to ``environ``.
        return (init_settings,)


class KafkaSettings(_Section):
    """Where to read from and write to."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_")

    bootstrap_servers: str = Field(min_length=1)
    topic: str = "commerce-events"
    group_id: str = "button-consumer"
    dlq_topic: str = "commerce-events.button-dlq"
    profile_topic: str = "button-consumer-profiles"
    group_protocol: Literal["consumer", "classic"] = "consumer"
    group_instance_id: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    create_topics: bool = True
    max_message_bytes: int = Field(default=1_048_588, ge=65_536)
    dlq_retention_ms: int = Field(default=30 * 86_400_000, ge=-1)
    profile_max_compaction_lag_ms: int = Field(default=7 * 86_400_000, ge=60_000)
    # Extra librdkafka properties, from KAFKA_CONFIG_* (filled in by Settings.from_env). They may
    # hold credentials (sasl.password, ssl.key.password): kept out of repr so they never print.
    config: dict[str, str] = Field(default_factory=dict, repr=False)

    # -- the librdkafka configurations ---------------------------------------------------------
    #
    # The one owner of Kafka configuration. The properties the service's guarantees rest on are
    # set here, next to ``_RESERVED_KAFKA`` that refuses them from KAFKA_CONFIG_*, so the value
    # of a property and the refusal to override it cannot drift apart; the adapters take the
    # finished dictionaries and set nothing themselves.

    def _common(self) -> dict[str, Any]:
        """Every client: the brokers, then every KAFKA_CONFIG_* property (security, SASL...),
        and the stdlib logger that takes librdkafka's log lines (routed into structlog by
        ``consumer.adapters.logging``).

        ``reconnect.backoff.ms=50`` is a default KAFKA_CONFIG_* may override: the Java client's
        default, where librdkafka's is 100. librdkafka (2.16) drops the bootstrap connection
        once it knows the brokers and connects again after half this backoff, so every new
        client's first request waited about 50 ms (measured against a local broker: 54 ms,
        28 ms with 50); the backoff still grows exponentially to ``reconnect.backoff.max.ms``
        (10 s) while a broker stays away."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "reconnect.backoff.ms": 50,
            **self.config,
            "logger": logging.getLogger(KAFKA_LOGGER),
        }

    def consumer_config(self) -> ClientConfig:
        """The service's consumer-group member (``run``): librdkafka ``Consumer`` properties.

        Invariants (DESIGN, 1 and 3), set after KAFKA_CONFIG_* so nothing overrides them:
        ``enable.auto.offset.store=false`` (the worker stores an offset only when its record is
        finished), ``enable.auto.commit=true`` every second (it commits what was stored) and
        ``enable.partition.eof=true`` (a partition's end, past transaction markers and aborted
        records, is committed once its records are finished: ``Source.ends_reached``).
        KAFKA_GROUP_*, KAFKA_AUTO_OFFSET_RESET and, for the classic protocol, cooperative-sticky
        assignment and KAFKA_SESSION_TIMEOUT_MS are defaults that KAFKA_CONFIG_* may override;
        so is ``fetch.wait.max.ms=100`` (librdkafka's 500: a partition resumed after a pause
        fetches only once the broker answers the long poll of the other partitions).

        Returns:
            a dict of librdkafka properties (its repr hides credentials).
        """
        config: dict[str, Any] = {
            "group.id": self.group_id,
            "auto.offset.reset": self.auto_offset_reset,
            "group.protocol": self.group_protocol,
            **self._common(),
        }
        if self.group_protocol == "classic":
            # KIP-848 moves assignment and session timeouts to the broker; the classic protocol
            # needs them here. Cooperative-sticky keeps unaffected partitions during a rebalance.
            config.setdefault("partition.assignment.strategy", "cooperative-sticky")
            config.setdefault("session.timeout.ms", self.session_timeout_ms)
        config.setdefault("fetch.wait.max.ms", 100)
        if self.group_instance_id:
            config["group.instance.id"] = self.group_instance_id
        config.update(
            {
                "enable.auto.offset.store": False,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "enable.partition.eof": True,
            }
        )
        return ClientConfig(config)

    def reader_config(self, group_id: str) -> ClientConfig:
        """A consumer that assigns partitions itself and reads them to their end (the profile
        restore, ``replay-dlq``): librdkafka ``Consumer`` properties.

        It is not a member of the service's group: KAFKA_CONFIG_ properties of group membership
        (``group.*``, ``partition.*``) are left out. It never commits by itself (``replay-dlq``
        commits explicitly), reports partition ends, and starts at the earliest offset when a
        start offset is out of range.

        Args:
            group_id: the group its offsets belong to (librdkafka requires one even when nothing
                is committed).

        Returns:
            a dict of librdkafka properties (its repr hides credentials).
        """
        common = {k: v for k, v in self._common().items() if not k.startswith(_GROUP_ONLY)}
        return ClientConfig(
            {
                # Prefetch at most 16 MB (librdkafka's default is 64 MB): the restore of a large
                # changelog is read as fast as it is applied, and the pod's peak memory is the
                # profiles plus this queue. When the queue is full librdkafka postpones the next
                # fetch by fetch.queue.backoff.ms (default 1 s): 10 ms halved the read time of a
                # million profiles. A KAFKA_CONFIG_ property overrides either.
                "queued.max.messages.kbytes": 16384,
                "fetch.queue.backoff.ms": 10,
                **common,
                "group.id": group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )

    def producer_config(self) -> ClientConfig:
        """Every producer (dead letters, changelog, samples, replays): librdkafka ``Producer``
        properties.

        Idempotent with ``acks=all`` (a write counts as acknowledged only when every in-sync
        replica has it, without duplicates or reordering on retries), ``linger.ms=5``,
        ``message.timeout.ms=120000`` and ``message.max.bytes`` = KAFKA_MAX_MESSAGE_BYTES, the
        ``max.message.bytes`` of the topics the service creates, so what the producer accepts
        the topics accept, and ``allow.auto.create.topics=false``: librdkafka's producer asks
        the broker to create a topic it writes to that does not exist (its default, unlike its
        consumer's), and a broker with ``auto.create.topics.enable`` (Kafka's default) creates
        it with its own defaults (one partition, ``cleanup.policy=delete``); a deleted
        changelog or DLQ then silently takes the writes. Without it such a write fails and the
        service stops with an error. These are applied before KAFKA_CONFIG_*, which may override
        them, as it always could.

        Returns:
            a dict of librdkafka properties (its repr hides credentials).
        """
        return ClientConfig(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
                "message.max.bytes": self.max_message_bytes,
                "allow.auto.create.topics": False,
                **self._common(),
            }
        )

    def admin_config(self) -> ClientConfig:
        """Admin clients (topic creation, metadata, ``check``): librdkafka ``AdminClient``
        properties: the brokers and KAFKA_CONFIG_*, without group membership properties.

        Returns:
            a dict of librdkafka properties (its repr hides credentials).
        """
        return ClientConfig(
            {k: v for k, v in self._common().items() if not k.startswith(_GROUP_ONLY)}
        )


class SchemaSettings(_Section):
    """How record values are decoded."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_")

    registry_url: str | None = None
    registry_basic_auth_user_info: SecretStr | None = None
    registry_timeout_seconds: float = Field(default=5.0, gt=0)
    dir: str = "schemas"

    def registry_config(self) -> ClientConfig | None:
        """confluent-kafka ``SchemaRegistryClient`` configuration, for every registry client.

        Returns:
            None without SCHEMA_REGISTRY_URL (registry-free decoding), else ``url``, ``timeout``
            (SCHEMA_REGISTRY_TIMEOUT_SECONDS, seconds per HTTP request: without it the client
            waits forever on a registry that accepts connections and never answers) and, when
            SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO is set, ``basic.auth.user.info`` (its repr
            hides it).
        """
        if self.registry_url is None:
            return None
        config = ClientConfig({"url": self.registry_url, "timeout": self.registry_timeout_seconds})
        if self.registry_basic_auth_user_info is not None:
            config["basic.auth.user.info"] = self.registry_basic_auth_user_info.get_secret_value()
        return config


HttpClient = Literal["curl", "aiohttp"]
"""The Button client's HTTP library (``BUTTON_HTTP_CLIENT``): libcurl (the default) or aiohttp."""


class ButtonSettings(_Section):
    """Button's Order API."""

    model_config = SettingsConfigDict(env_prefix="BUTTON_")

    api_key: SecretStr | None = None
    base_url: str = "https://api.usebutton.com"
    api_version: str = "2018-02-13"
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0)
    total_timeout: float = Field(default=20.0, gt=0)
    max_connections: int = Field(default=100, ge=1)
    http_client: HttpClient = "curl"
    application_id_ios: str | None = None
    application_id_android: str | None = None
    application_id_web: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for a local sandbox)")
        return value.rstrip("/")

    @field_validator("application_id_ios", "application_id_android", "application_id_web")
    @classmethod
    def _app_id(cls, value: str | None) -> str | None:
        if value is not None and not _APP_ID.match(value):
            raise ValueError("must look like app-<alphanumerics>, as shown in Button's dashboard")
        return value


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """One shutdown budget (DELIVERY_SHUTDOWN_TIMEOUT_SECONDS), split explicitly; the parts sum
    to the whole, which must stay below the pod's termination grace period.

    Attributes:
        drain: seconds in-flight records get to finish (a record waiting out a backoff or a
            ``Retry-After`` is abandoned at its end, unfinished and uncommitted).
        commit: seconds for the final offset commit (and the commit of the revocation).
        close: seconds for the consumer to leave its group.
        flush: seconds for the producer's outstanding writes.
    """

    drain: float
    commit: float
    close: float
    flush: float

    @property
    def total(self) -> float:
        return self.drain + self.commit + self.close + self.flush


class DeliverySettings(_Section):
    """Concurrency, retries, dead letters and shutdown."""

    model_config = SettingsConfigDict(env_prefix="DELIVERY_")

    max_in_flight: int = Field(default=1000, ge=1)
    max_in_flight_per_partition: int = Field(default=500, ge=1)
    max_commit_distance: int = Field(default=10_000, ge=1)
    concurrency_min: int = Field(default=4, ge=1)
    concurrency_max: int = Field(default=64, ge=1)
    rate_limit_rps: float | None = Field(default=None, gt=0)
    retry_max_attempts: int = Field(default=8, ge=1)
    retry_max_elapsed_seconds: float = Field(default=300.0, gt=0)
    retry_base_delay_seconds: float = Field(default=0.2, gt=0)
    retry_max_delay_seconds: float = Field(default=30.0, gt=0)
    auth_probe_interval_seconds: float = Field(default=5.0, gt=0)
    retry_after_max_seconds: float = Field(default=60.0, gt=0)
    breaker_failure_threshold: int = Field(default=10, ge=1)
    breaker_probe_interval_seconds: float = Field(default=5.0, gt=0)
    dry_run: bool = False
    shutdown_timeout_seconds: float = Field(default=50.0, gt=0)
    """The whole stop on SIGTERM; half of it drains in-flight work (``shutdown_budget``), which
    should cover a whole request (``BUTTON_TOTAL_TIMEOUT``), as the revoke deadline does."""
    revoke_timeout_seconds: float = Field(default=25.0, gt=0, le=240)
    """How long a revoked partition's running records may finish before they are abandoned
    (the rebalance waits for it; at most 240 s, below librdkafka's default 300 s
    ``max.poll.interval.ms``; at least ``BUTTON_TOTAL_TIMEOUT``, so a request in flight ends
    before its record is abandoned). A lost partition's are abandoned at once."""
    stop_when_idle_seconds: float | None = Field(default=None, gt=0)

    def shutdown_budget(self) -> ShutdownBudget:
        """DELIVERY_SHUTDOWN_TIMEOUT_SECONDS split over the steps of a shutdown, in order."""
        total = self.shutdown_timeout_seconds
        return ShutdownBudget(
            drain=total * 0.5, commit=total * 0.15, close=total * 0.2, flush=total * 0.15
        )

    @model_validator(mode="after")
    def _bounds(self) -> DeliverySettings:
        if self.concurrency_min > self.concurrency_max:
            raise ValueError(
                f"DELIVERY_CONCURRENCY_MIN ({self.concurrency_min}) must not exceed "
                f"DELIVERY_CONCURRENCY_MAX ({self.concurrency_max})"
            )
        return self


class MappingSettings(_Section):
    """How events become Button orders."""

    model_config = SettingsConfigDict(env_prefix="MAPPING_")

    attribution_window_hours: float = Field(default=24.0 * 30, gt=0)
    revenue_includes_tax_and_shipping: bool = True
    drop_limited_ad_tracking_ids: bool = True
    skip_development_events: bool = True
    device_id_retention_days: float = Field(default=90.0, gt=0)
    order_retention_days: float = Field(default=90.0, gt=0)
    max_orders_per_profile: int = Field(default=100, ge=1)
    lag_allowance_hours: float = Field(default=48.0, ge=0)
    max_future_skew_hours: float = Field(default=24.0, ge=0)
    max_event_age_days: float = Field(default=365.0, gt=0)
    expire_interval_seconds: float = Field(default=300.0, gt=0)
    max_profile_bytes: int = Field(default=262_144, ge=4_096)


class AdminSettings(_Section):
    """The admin HTTP server: probes, metrics, live log."""

    model_config = SettingsConfigDict(env_prefix="ADMIN_")

    host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    port: int = Field(default=9400, ge=0, le=65535)
    recent_deliveries: int = Field(default=200, ge=0)
    test_event_enabled: bool = False
    test_event_token: SecretStr | None = None
    """Bearer token that ``POST /test-event`` requires (at least 16 characters)."""

    @field_validator("test_event_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _token_when_enabled(self) -> AdminSettings:
        if self.test_event_enabled and self.test_event_token is None:
            raise ValueError(
                "ADMIN_TEST_EVENT_TOKEN is required when ADMIN_TEST_EVENT_ENABLED is true"
            )
        return self


class LogSettings(_Section):
    """Structured logging."""

    model_config = SettingsConfigDict(env_prefix="LOG_")

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    success_sample_rate: float = Field(default=0.01, ge=0, le=1)
    """Share of successful records (delivered, skipped, dry run) that get a summary line; dead
    letters and parked records always do."""


_SECTIONS: dict[str, type[_Section]] = {
    "kafka": KafkaSettings,
    "schema": SchemaSettings,
    "button": ButtonSettings,
    "delivery": DeliverySettings,
    "mapping": MappingSettings,
    "admin": AdminSettings,
    "log": LogSettings,
}


class Settings:
    """All settings of one process. Build with ``Settings.from_env()``."""

    __slots__ = ("admin", "button", "delivery", "kafka", "log", "mapping", "schema")

    def __init__(
        self,
        kafka: KafkaSettings,
        schema: SchemaSettings,
        button: ButtonSettings,
        delivery: DeliverySettings,
        mapping: MappingSettings,
        admin: AdminSettings,
        log: LogSettings,
    ) -> None:
        self.kafka = kafka
        self.schema = schema
        self.button = button
        self.delivery = delivery
        self.mapping = mapping
        self.admin = admin
        self.log = log

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, require_api_key: bool = True
    ) -> Settings:
        """Read and validate every section; raise ``ConfigError`` naming the bad variable."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        try:
            for name, section in _SECTIONS.items():
                values[name] = _load(section, env)
        except ConfigError as first:
            # Every invalid variable at once, as ``check`` names them, not one per restart.
            raise ConfigError(_every_problem(env, require_api_key) or str(first)) from None
        # A near-miss of DELIVERY_DRY_RUN asking for the dry run this run would not be, or a
        # setting's name in another letter case.
        refuse_unwanted_variables(env)
        kafka: KafkaSettings = values["kafka"]
        values["kafka"] = _as_run(
            kafka.model_copy(update={"config": kafka_passthrough(env)}), values["delivery"]
        )
        settings = cls(**values)
        problem = _profile_bound_problem(settings.kafka, settings.mapping)
        if problem is not None:
            raise ConfigError(f"{problem.variable}: {problem.message}")
        if require_api_key and not settings.delivery.dry_run and settings.button.api_key is None:
            raise ConfigError("BUTTON_API_KEY is required (or set DELIVERY_DRY_RUN=true)")
        return settings


def _every_problem(env: Mapping[str, str], require_api_key: bool) -> str | None:
    """``diagnose``'s problems (the fatal ones, then the variables that are no setting, with
    their hints) as one message; ``None`` when it finds nothing fatal."""
    problems = diagnose(env, require_api_key=require_api_key)[1]
    if not any(p.fatal for p in problems):
        return None
    return "; ".join(
        f"{p.variable} {p.message}" if p.message == "is required" else f"{p.variable}: {p.message}"
        for p in problems
    )


def _as_run(kafka: KafkaSettings, delivery: DeliverySettings) -> KafkaSettings:
    """The Kafka settings a run uses: under ``DELIVERY_DRY_RUN`` its own group, changelog and
    DLQ (the configured names with ``DRY_RUN_SUFFIX``).

    A dry run commits past every order and records it in the profiles as if sent: in the live
    group and changelog, switching to live would never send those orders.
    """
    if not delivery.dry_run:
        return kafka
    return kafka.model_copy(
        update={
            "group_id": kafka.group_id + DRY_RUN_SUFFIX,
            "profile_topic": kafka.profile_topic + DRY_RUN_SUFFIX,
            "dlq_topic": kafka.dlq_topic + DRY_RUN_SUFFIX,
        }
    )


def _profile_bound_problem(kafka: KafkaSettings, mapping: MappingSettings) -> SettingProblem | None:
    """A profile bound the changelog cannot hold (records over ``message.max.bytes``), or
    ``None``."""
    if mapping.max_profile_bytes <= kafka.max_message_bytes - RECORD_MARGIN:
        return None
    return SettingProblem(
        "MAPPING_MAX_PROFILE_BYTES",
        f"must stay below KAFKA_MAX_MESSAGE_BYTES minus {RECORD_MARGIN} (key and record "
        "overhead), or a profile can become unwritable",
    )


def _revoke_bound_problem(
    delivery: DeliverySettings, button: ButtonSettings
) -> SettingProblem | None:
    """A revoke deadline shorter than a request may take (a warning), or ``None``.

    A request still in flight when a revoked partition's deadline passes is abandoned, yet
    Button may still apply it, after the next owner's newer requests for the same order: an
    update carries the order's whole state (Button's contract has no version to refuse an
    older one), so the older state would win. A warning, not an error: a deployment may hold
    requests longer on purpose (long timeouts) and accept that.
    """
    if delivery.revoke_timeout_seconds >= button.total_timeout:
        return None
    return SettingProblem(
        "DELIVERY_REVOKE_TIMEOUT_SECONDS",
        f"should be at least BUTTON_TOTAL_TIMEOUT ({button.total_timeout:g} s): a request still "
        "in flight when a revoked partition's deadline passes is abandoned while Button may "
        "still apply it, after the next owner's newer requests for the same order",
        fatal=False,
    )


def _drain_bound_problem(
    delivery: DeliverySettings, button: ButtonSettings
) -> SettingProblem | None:
    """A shutdown whose drain (half the budget) is shorter than a request (a warning), or
    ``None``: as at a revoke deadline (``_revoke_bound_problem``), a request abandoned in flight
    may be applied after the next owner's newer requests."""
    drain = delivery.shutdown_budget().drain
    if drain >= button.total_timeout:
        return None
    return SettingProblem(
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS",
        f"should be at least twice BUTTON_TOTAL_TIMEOUT ({2 * button.total_timeout:g} s): half "
        f"of it ({drain:g} s) drains in-flight work, and a request still in flight at its end "
        "is abandoned while Button may still apply it, after the next owner's newer requests",
        fatal=False,
    )


def _connections_bound_problem(
    delivery: DeliverySettings, button: ButtonSettings
) -> SettingProblem | None:
    """A connection pool not above the adaptive concurrency's bound (a warning), or ``None``.

    Up to DELIVERY_CONCURRENCY_MAX requests are in flight to Button, and priority requests (the
    gates' probes, an operator's test event) go out beside them: with no connection to spare,
    a request waits for one, and with curl a wait longer than the connect timeout ends as a
    connect timeout. A warning, as the other bounds: the adaptive limit may stay lower.
    """
    if button.max_connections > delivery.concurrency_max:
        return None
    return SettingProblem(
        "BUTTON_MAX_CONNECTIONS",
        f"should be above DELIVERY_CONCURRENCY_MAX ({delivery.concurrency_max}): priority "
        "requests (the gates' probes, an operator's test event) go out beside the requests in "
        "flight, and a request that waits for a free connection longer than "
        "BUTTON_CONNECT_TIMEOUT ends as a connect timeout (with curl)",
        fatal=False,
    )


def _bound_problems(
    kafka: object, mapping: object, delivery: object, button: object
) -> list[SettingProblem]:
    """The rules across sections, for the sections that are valid (``diagnose``)."""
    found: list[SettingProblem | None] = []
    if isinstance(kafka, KafkaSettings) and isinstance(mapping, MappingSettings):
        found.append(_profile_bound_problem(kafka, mapping))
    if isinstance(delivery, DeliverySettings) and isinstance(button, ButtonSettings):
        found.append(_revoke_bound_problem(delivery, button))
        found.append(_drain_bound_problem(delivery, button))
        found.append(_connections_bound_problem(delivery, button))
    return [p for p in found if p is not None]


def setting_warnings(settings: Settings) -> list[SettingProblem]:
    """Settings that work but risk something (``run`` logs them, ``check`` warns)."""
    problems = (
        _revoke_bound_problem(settings.delivery, settings.button),
        _drain_bound_problem(settings.delivery, settings.button),
        _connections_bound_problem(settings.delivery, settings.button),
    )
    return [p for p in problems if p is not None]


def _load(section: type[_Section], env: Mapping[str, str]) -> _Section:
    prefix = str(section.model_config.get("env_prefix", ""))
    fields = section.model_fields
    raw = {
        field: env[prefix + field.upper()]
        for field in fields
        if field != "config" and prefix + field.upper() in env
    }
    given = _empty_as_unset(raw)
    try:
        return section.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first.get("loc") or ()
        variable = _variable_of(prefix, first)
        if loc and given.get(str(loc[0])) is None and first.get("type") == "missing":
            raise ConfigError(f"{variable} is required") from None
        raise ConfigError(f"{variable}: {first.get('msg', 'invalid value')}") from None


_LEADING_VARIABLE = re.compile(r"(?:Value error, )?([A-Z][A-Z0-9_]*)\b")


def _variable_of(prefix: str, error: Any) -> str:
    """The variable a validation error is about: its field's, or, for a rule across fields
    (no field), the variable its message starts with (the one to fix, e.g.
    ``ADMIN_TEST_EVENT_TOKEN is required when ...``), else the section (``ADMIN settings``)."""
    loc = error.get("loc") or ()
    if loc:
        return prefix + str(loc[0]).upper()
    named = _LEADING_VARIABLE.match(str(error.get("msg", "")))
    if named is not None and named.group(1) in variable_names():
        return named.group(1)
    return prefix.rstrip("_") + " settings"


def _empty_as_unset(raw: Mapping[str, str]) -> dict[str, str]:
    """An empty variable means "use the default" (as Kubernetes leaves optional ones empty)."""
    return {key: value for key, value in raw.items() if value != ""}


def kafka_passthrough(env: Mapping[str, str]) -> dict[str, str]:
    """librdkafka properties from ``KAFKA_CONFIG_*`` variables.

    Raises:
        ConfigError: naming every variable that sets a property librdkafka does not know (a
            misspelling, a Java client's name) or takes through its API only (a callback), a
            property the service owns, one set with a typed setting, or a value that weakens
            at-least-once delivery.
    """
    config, problems = _passthrough(env)
    if problems:
        raise ConfigError("; ".join(f"{p.variable}: {p.message}" for p in problems))
    return config


def _passthrough(env: Mapping[str, str]) -> tuple[dict[str, str], list[SettingProblem]]:
    """``kafka_passthrough``'s properties, and every refused variable (in name order)."""
    config: dict[str, str] = {}
    problems: list[SettingProblem] = []
    for variable, value in sorted(env.items()):
        if not variable.startswith(_PASSTHROUGH_PREFIX) or len(variable) == len(
            _PASSTHROUGH_PREFIX
        ):
            continue
        prop = _property_of(variable)
        accepted = _GUARANTEED_KAFKA.get(prop)
        if prop not in PROPERTIES:
            close = difflib.get_close_matches(prop, settable_kafka_properties(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = f'No such configuration property: "{prop}"{hint}'
        elif PROPERTIES[prop] == DEDICATED_API:
            message = f"{prop} is set through librdkafka's API, not a value"
        elif prop in _RESERVED_KAFKA:
            message = f"{prop} is managed by the service and cannot be set"
        elif prop in _TYPED_KAFKA:
            message = f"{prop} is set with {_TYPED_KAFKA[prop]}"
        elif accepted is not None and value.strip().lower() not in accepted:
            message = (
                f"{prop}={value} would break at-least-once delivery; "
                f"accepted: {', '.join(sorted(accepted))}"
            )
        else:
            # A guarded value goes on as judged: librdkafka refuses " all" or "True " as given.
            config[prop] = value if accepted is None else value.strip().lower()
            continue
        problems.append(SettingProblem(variable, message))
    return config, problems


_REFUSED_PROPERTY = re.compile(r'configuration property:? "(?P<property>[^"]+)"')


def kafka_property_problem(
    error_text: str, environ: Mapping[str, str] | None = None
) -> SettingProblem | None:
    """The setting behind a librdkafka property refused when a client is created, or ``None``
    when ``error_text`` is not such a refusal.

    librdkafka checks every property only then: 'No such configuration property: "x.y"' or
    'Invalid value "v" for configuration property "x.y"'. It names its canonical property,
    also for an alias (``linger.ms`` is ``queue.buffering.max.ms``): the variable is the
    ``KAFKA_CONFIG_*`` one that sets that property, else the only one set, else all of them as
    ``KAFKA_CONFIG_*``.
    """
    match = _REFUSED_PROPERTY.search(error_text)
    if match is None:
        return None
    refused = match["property"]
    env = os.environ if environ is None else environ
    passthrough = sorted(
        v for v in env if v.startswith(_PASSTHROUGH_PREFIX) and v != _PASSTHROUGH_PREFIX
    )
    exact = [v for v in passthrough if _property_of(v) == refused]
    candidates = exact or passthrough
    if len(candidates) == 1:
        variable = candidates[0]
    else:
        variable = _TYPED_KAFKA.get(refused, _PASSTHROUGH_PREFIX + "*")
    return SettingProblem(variable, f"librdkafka refuses it: {error_text}")


def _property_of(variable: str) -> str:
    """The librdkafka property a ``KAFKA_CONFIG_*`` variable sets: ``_`` is ``.``, ``__`` is
    ``_`` (``KAFKA_CONFIG_LOG__LEVEL`` is ``log_level``)."""
    name = variable[len(_PASSTHROUGH_PREFIX) :].lower()
    return ".".join(part.replace("\0", "_") for part in name.replace("__", "\0").split("_"))


def variable_names() -> frozenset[str]:
    """Every environment variable a setting is read from (``KAFKA_CONFIG_*`` aside).

    Deployment files (the Helm chart, docker-compose.yml) are tested against it, and ``check``
    uses it to point out a variable that looks like a setting but is none (a typo).
    """
    names: set[str] = set()
    for section in _SECTIONS.values():
        prefix = str(section.model_config.get("env_prefix", ""))
        names.update(prefix + field.upper() for field in section.model_fields if field != "config")
    return frozenset(names)


def secret_variable_names() -> frozenset[str]:
    """The variables whose values are credentials (``SecretStr`` settings, never printed): they
    belong in a Secret, never in a ConfigMap (the Helm chart refuses them in ``config:``)."""
    names: set[str] = set()
    for section in _SECTIONS.values():
        prefix = str(section.model_config.get("env_prefix", ""))
        names.update(
            prefix + field.upper()
            for field, info in section.model_fields.items()
            if info.annotation is SecretStr or SecretStr in get_args(info.annotation)
        )
    return frozenset(names)


def boolean_variable_names() -> frozenset[str]:
    """The variables of the boolean settings (``DELIVERY_DRY_RUN``...): each read as pydantic
    reads a ``bool`` (``BOOLEAN_WORDS``, any case; empty is unset), anything else refused."""
    names: set[str] = set()
    for section in _SECTIONS.values():
        prefix = str(section.model_config.get("env_prefix", ""))
        names.update(
            prefix + field.upper()
            for field, info in section.model_fields.items()
            if info.annotation is bool
        )
    return frozenset(names)


BOOLEAN_WORDS: dict[bool, frozenset[str]] = {
    True: frozenset({"true", "1", "yes", "on", "y", "t"}),
    False: frozenset({"false", "0", "no", "off", "n", "f"}),
}
"""The values a boolean setting takes, in lower case (compared in any case, not stripped):
pydantic's reading of a ``bool``. ``tests/unit/test_chart_schema.py`` checks it against
pydantic."""


def settable_kafka_properties() -> list[str]:
    """Every property librdkafka takes as a value (``consumer.librdkafka_properties``: the
    librdkafka bundled with confluent-kafka, aliases included, callbacks and pointers left out),
    in name order; ``KAFKA_CONFIG_*`` may set no other (the reserved and typed ones aside)."""
    return sorted(name for name, kind in PROPERTIES.items() if kind != DEDICATED_API)


def refused_kafka_properties() -> dict[str, str]:
    """Every librdkafka property ``KAFKA_CONFIG_*`` may not set, with the service's reason:
    those it owns (at-least-once delivery rests on them) and those with a typed variable.

    The Helm chart's ``config:`` schema is generated from it
    (``python -m consumer.devtools.chart_schema``), so the chart refuses what ``run`` refuses.
    """
    refused = {prop: "is managed by the service and cannot be set" for prop in _RESERVED_KAFKA}
    refused.update({prop: f"is set with {variable}" for prop, variable in _TYPED_KAFKA.items()})
    return dict(sorted(refused.items()))


def guaranteed_kafka_values() -> dict[str, frozenset[str]]:
    """The properties ``KAFKA_CONFIG_*`` may set only to values that keep at-least-once
    delivery, and those values (compared stripped and in lower case)."""
    return dict(sorted(_GUARANTEED_KAFKA.items()))


def passthrough_variable(prop: str) -> str:
    """The ``KAFKA_CONFIG_*`` variable that sets librdkafka property ``prop``: the inverse of
    ``_property_of`` (``_`` is ``__``, ``.`` is ``_``; ``log_level`` is
    ``KAFKA_CONFIG_LOG__LEVEL``)."""
    return _PASSTHROUGH_PREFIX + prop.replace("_", "__").replace(".", "_").upper()


class SettingProblem(NamedTuple):
    """One invalid setting: the variable (or section) and what is wrong with it."""

    variable: str
    message: str
    fatal: bool = True
    """False for a warning: a variable that looks like a setting but is none (a typo?)."""


def diagnose(
    environ: Mapping[str, str] | None = None, *, require_api_key: bool = True
) -> tuple[dict[str, _Section | None], list[SettingProblem]]:
    """Validate every section and collect every problem, rather than stop at the first.

    ``check`` uses this to name all of them in one run, and to run the connectivity checks
    whose sections are valid; ``Settings.from_env`` names them all too when it refuses to start.

    Returns:
        each section by name (None when invalid) and the problems, each naming its variable.
    """
    env = dict(os.environ if environ is None else environ)
    sections: dict[str, _Section | None] = {}
    problems: list[SettingProblem] = []
    for name, section in _SECTIONS.items():
        prefix = str(section.model_config.get("env_prefix", ""))
        given = _empty_as_unset(
            {f: env[prefix + f.upper()] for f in section.model_fields if prefix + f.upper() in env}
        )
        given.pop("config", None)
        try:
            sections[name] = section.model_validate(given)
        except ValidationError as exc:
            sections[name] = None
            for error in exc.errors():
                variable = _variable_of(prefix, error)
                missing = error.get("type") == "missing"
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(SettingProblem(variable, "is required" if missing else message))
    passthrough, refused = _passthrough(env)
    if refused:
        problems.extend(refused)
        sections["kafka"] = None
    else:
        kafka = sections.get("kafka")
        if isinstance(kafka, KafkaSettings):
            sections["kafka"] = kafka.model_copy(update={"config": passthrough})
    kafka, delivery, button = (
        sections.get("kafka"),
        sections.get("delivery"),
        sections.get("button"),
    )
    if isinstance(kafka, KafkaSettings) and isinstance(delivery, DeliverySettings):
        # What a run would use: the dry run's own group and topics.
        sections["kafka"] = kafka = _as_run(kafka, delivery)
    problems.extend(_bound_problems(kafka, sections.get("mapping"), delivery, button))
    if (
        require_api_key
        and isinstance(delivery, DeliverySettings)
        and not delivery.dry_run
        and isinstance(button, ButtonSettings)
        and button.api_key is None
    ):
        problems.append(SettingProblem("BUTTON_API_KEY", "is required (or DELIVERY_DRY_RUN=true)"))
    problems.extend(unknown_variables(env))
    return sections, problems


_DRY_RUN = "DELIVERY_DRY_RUN"
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


def _reads_as(value: str) -> bool | None:
    """``value`` read as the service reads a boolean setting (pydantic's: true/1/yes/on/y/t,
    false/0/no/off/n/f, any case), ``None`` when it is none of them."""
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return None


def _unwanted_live_run(variable: str, env: Mapping[str, str]) -> bool:
    """Whether ``variable``, a near-miss of DELIVERY_DRY_RUN, asks for a dry run (any value
    but empty or one read as false: ``DELIVERY_DRYRUN=enabled`` is no "off" either) while the
    run would be live (DELIVERY_DRY_RUN not on)."""
    value = env[variable]
    asks = value != "" and _reads_as(value) is not False
    return asks and _reads_as(env.get(_DRY_RUN, "")) is not True


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[SettingProblem]:
    """Variables with a setting's prefix that are no setting (a typo?), each a warning with
    the closest setting as a hint; in name order. ``KAFKA_CONFIG_*`` are librdkafka's.

    The service runs beside variables it does not own (Kubernetes' service variables, such as
    ``KAFKA_PORT``), so an unknown name is no error, with two exceptions, both fatal
    (``Settings.from_env`` refuses them, ``check`` fails them):

    - a near-miss of DELIVERY_DRY_RUN that asks for a dry run while the run would be live
      (``DELIVERY_DRYRUN=true``), since the run the operator did not want sends real orders;
    - a name in another letter case whose upper-case form has a setting's prefix
      (``delivery_dry_run``, ``kafka_config_sasl_mechanism``, ``Log_Level``): settings are read
      by their upper-case names only, and reading both cases would give one setting two
      names. Other names in lower case (``http_proxy``, ``home``) are none of the service's.
    """
    env = os.environ if environ is None else environ
    known = variable_names()
    prefixes = _section_prefixes()
    problems: list[SettingProblem] = []
    for variable in sorted(env):
        if not variable.upper().startswith(prefixes):
            continue
        if variable != variable.upper():
            problems.append(_miscased_problem(variable, known))
        elif variable not in known and not variable.startswith(_PASSTHROUGH_PREFIX):
            close = difflib.get_close_matches(variable, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = "is not a setting of this service" + hint
            if close == [_DRY_RUN] and _unwanted_live_run(variable, env):
                message += (
                    f": it asks for a dry run, but {_DRY_RUN} is not on, so this run would be "
                    "live and send real orders"
                )
                problems.append(SettingProblem(variable, message))
                continue
            problems.append(SettingProblem(variable, message, fatal=False))
    return problems


def refuse_unwanted_variables(environ: Mapping[str, str] | None = None) -> None:
    """Refuse the variables ``unknown_variables`` finds fatal: a near-miss of DELIVERY_DRY_RUN
    asking for a dry run the run would not be, a setting's name in another letter case.

    Every command that reads settings calls it (``Settings.from_env`` does), so each refuses
    what ``check`` fails.

    Raises:
        ConfigError: naming every such variable, with the name it resembles.
    """
    unwanted = [p for p in unknown_variables(environ) if p.fatal]
    if unwanted:
        raise ConfigError("; ".join(f"{p.variable}: {p.message}" for p in unwanted))


def _section_prefixes() -> tuple[str, ...]:
    """Every section's prefix (``KAFKA_``, ``BUTTON_``...; ``KAFKA_CONFIG_`` is under
    ``KAFKA_``)."""
    return tuple(str(s.model_config.get("env_prefix", "")) for s in _SECTIONS.values())


def _miscased_problem(variable: str, known: frozenset[str]) -> SettingProblem:
    """The refusal of ``variable``, a name in another letter case than upper, with the name
    to use: its upper-case form when that is a setting, the ``KAFKA_CONFIG_*`` variable of its
    property, else the closest setting."""
    upper = variable.upper()
    right: str | None = upper
    if upper.startswith(_PASSTHROUGH_PREFIX) and len(upper) > len(_PASSTHROUGH_PREFIX):
        right = passthrough_variable(_property_of(upper))
    elif upper not in known:
        close = difflib.get_close_matches(upper, known, n=1)
        right = close[0] if close else None
    hint = f" (did you mean {right}?)" if right else ""
    return SettingProblem(
        variable,
        f"is not a setting of this service{hint}: setting names are upper case: one in another "
        "letter case is refused, not read",
    )
