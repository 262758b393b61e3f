"""Settings from the environment: defaults, prefixes, validation naming the variable, secrets."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import Producer

from consumer.errors import ConfigError
from consumer.settings import Settings, diagnose, kafka_passthrough, setting_warnings

API_KEY = "sk-live-0123456789abcdef-TOPSECRET"
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092", "BUTTON_API_KEY": API_KEY}
PREFIXES = ("KAFKA_", "SCHEMA_", "BUTTON_", "DELIVERY_", "MAPPING_", "ADMIN_", "LOG_")


def load(**overrides: str) -> Settings:
    return Settings.from_env({**BASE, **overrides})


def config_error(**overrides: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load(**overrides)
    return str(raised.value)


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """os.environ without any variable a settings section would read."""
    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_apply_when_only_required_variables_are_set() -> None:
    """With just the broker and the API key, every other setting takes its documented default."""
    settings = load()

    expected: tuple[object, ...] = (
        "commerce-events",
        "button-consumer",
        "commerce-events.button-dlq",
        "https://api.usebutton.com",
        1000,
        8,
        False,
        24.0 * 30,
        9400,
        "info",
        "schemas",
        {},
    )
    actual = (
        settings.kafka.topic,
        settings.kafka.group_id,
        settings.kafka.dlq_topic,
        settings.button.base_url,
        settings.delivery.max_in_flight,
        settings.delivery.retry_max_attempts,
        settings.delivery.dry_run,
        settings.mapping.attribution_window_hours,
        settings.admin.port,
        settings.log.level,
        settings.schema.dir,
        settings.kafka.config,
    )
    assert expected == actual


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("KAFKA_TOPIC", "orders", lambda s: s.kafka.topic),
        ("SCHEMA_REGISTRY_URL", "http://registry:8081", lambda s: s.schema.registry_url),
        ("BUTTON_API_VERSION", "2020-01-01", lambda s: s.button.api_version),
        ("DELIVERY_MAX_IN_FLIGHT", "7", lambda s: str(s.delivery.max_in_flight)),
        (
            "MAPPING_ATTRIBUTION_WINDOW_HOURS",
            "12.5",
            lambda s: str(s.mapping.attribution_window_hours),
        ),
        ("ADMIN_PORT", "9999", lambda s: str(s.admin.port)),
        ("LOG_LEVEL", "debug", lambda s: s.log.level),
        ("BUTTON_HTTP_CLIENT", "aiohttp", lambda s: s.button.http_client),
    ],
)
def test_each_section_reads_its_own_prefix(variable, value, read) -> None:
    """A variable named prefix + field sets that field of its section."""
    assert value == read(load(**{variable: value}))


def test_a_variable_without_the_section_prefix_is_ignored() -> None:
    """MAX_IN_FLIGHT alone (no DELIVERY_ prefix) does not set DeliverySettings.max_in_flight."""
    assert load(MAX_IN_FLIGHT="7").delivery.max_in_flight == 1000


def test_base_url_loses_its_trailing_slash() -> None:
    """BUTTON_BASE_URL is normalised so paths can be appended to it."""
    assert load(BUTTON_BASE_URL="http://127.0.0.1:8089/").button.base_url == "http://127.0.0.1:8089"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DELIVERY_MAX_IN_FLIGHT", "0"),
        ("DELIVERY_MAX_IN_FLIGHT", "many"),
        ("BUTTON_BASE_URL", "ftp://x"),
        ("BUTTON_APPLICATION_ID_IOS", "bad"),
        ("BUTTON_CONNECT_TIMEOUT", "-1"),
        ("KAFKA_AUTO_OFFSET_RESET", "middle"),
        ("DELIVERY_DRY_RUN", "maybe"),
        ("ADMIN_PORT", "70000"),
        ("LOG_FORMAT", "xml"),
        ("BUTTON_HTTP_CLIENT", "httpx"),
    ],
)
def test_a_bad_value_raises_config_error_naming_the_variable(variable: str, value: str) -> None:
    """The error message starts with the variable's name, so the operator knows what to fix."""
    assert config_error(**{variable: value}).startswith(variable + ":")


def test_a_cross_field_violation_names_both_variables() -> None:
    """DELIVERY_CONCURRENCY_MIN above _MAX is refused naming the variable its rule starts with
    and both variables (with their values) in the message, as an operator sets them."""
    message = config_error(DELIVERY_CONCURRENCY_MIN="9", DELIVERY_CONCURRENCY_MAX="3")

    assert message == (
        "DELIVERY_CONCURRENCY_MIN: DELIVERY_CONCURRENCY_MIN (9) must not exceed "
        "DELIVERY_CONCURRENCY_MAX (3)"
    )


def test_a_test_event_endpoint_without_its_token_names_the_token() -> None:
    """ADMIN_TEST_EVENT_ENABLED without ADMIN_TEST_EVENT_TOKEN: the token is the setting named
    (``check --json``'s ``setting``), not the ADMIN section."""
    _, problems = diagnose(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
            "DELIVERY_DRY_RUN": "true",
            "ADMIN_TEST_EVENT_ENABLED": "true",
        }
    )

    assert [p.variable for p in problems] == ["ADMIN_TEST_EVENT_TOKEN"]


def test_missing_bootstrap_servers_is_required() -> None:
    """Without KAFKA_BOOTSTRAP_SERVERS the service cannot start, and says so by name."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"BUTTON_API_KEY": API_KEY})

    assert str(raised.value) == "KAFKA_BOOTSTRAP_SERVERS is required"


def test_every_invalid_variable_is_named_at_once_as_check_names_them() -> None:
    """Three bad values in three sections: ``run`` refuses to start naming all three, in the
    order of the sections, not only the first (one restart per typo otherwise)."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
                "KAFKA_AUTO_OFFSET_RESET": "middle",
                "BUTTON_BASE_URL": "ftp://button",
                "DELIVERY_MAX_IN_FLIGHT": "lots",
                "BUTTON_API_KEY": API_KEY,
            }
        )

    named = [part.split(":")[0] for part in str(raised.value).split("; ")]
    assert named == ["KAFKA_AUTO_OFFSET_RESET", "BUTTON_BASE_URL", "DELIVERY_MAX_IN_FLIGHT"]


def test_a_missing_setting_with_a_misspelt_variable_says_which() -> None:
    """KAFKA_BOOTSTRAP_SERVER (one letter short) is no setting: the error for the missing
    KAFKA_BOOTSTRAP_SERVERS points at it, as ``check`` does."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"KAFKA_BOOTSTRAP_SERVER": "b:9092", "BUTTON_API_KEY": API_KEY})

    assert str(raised.value) == (
        "KAFKA_BOOTSTRAP_SERVERS is required; KAFKA_BOOTSTRAP_SERVER: is not a setting of this "
        "service (did you mean KAFKA_BOOTSTRAP_SERVERS?)"
    )


LIVE = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "BUTTON_API_KEY": API_KEY}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DELIVERY_DRYRUN", "true"),
        ("DELIVERY_DRYRUN", "1"),
        ("DELIVERY_DRY_RUNS", "yes"),
        ("DELIVERY_DRY_RUN_", "True"),
        ("DELIVERY_DRYRUN", "enabled"),  # not a boolean: DELIVERY_DRY_RUN would refuse it too
    ],
)
def test_a_near_miss_of_delivery_dry_run_asking_for_a_dry_run_refuses_a_live_start(
    variable: str, value: str
) -> None:
    """DELIVERY_DRYRUN=true is no setting: the operator wanted a dry run and would get a live
    one, sending real orders. The start is refused, naming the variable and the suggestion
    (``run`` exits 2), instead of a warning next to a live run."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**LIVE, variable: value})

    assert str(raised.value) == (
        f"{variable}: is not a setting of this service (did you mean DELIVERY_DRY_RUN?): it "
        "asks for a dry run, but DELIVERY_DRY_RUN is not on, so this run would be live and "
        "send real orders"
    )
    problems = diagnose({**LIVE, variable: value})[1]
    assert [(p.variable, p.fatal) for p in problems] == [(variable, True)]


def test_a_near_miss_against_an_explicit_live_setting_is_refused_too() -> None:
    """DELIVERY_DRY_RUN=false beside DELIVERY_DRYRUN=true contradict each other: refused."""
    with pytest.raises(ConfigError, match=r"DELIVERY_DRYRUN: .* would be live"):
        Settings.from_env({**LIVE, "DELIVERY_DRY_RUN": "false", "DELIVERY_DRYRUN": "true"})


@pytest.mark.parametrize(
    "env",
    [
        {"DELIVERY_DRYRUN": "false"},  # asks for the live run it gets
        {"DELIVERY_DRYRUN": "0"},
        {"DELIVERY_DRYRUN": ""},  # empty: unset, as Kubernetes leaves optional variables
        {"DELIVERY_DRYRUN": "true", "DELIVERY_DRY_RUN": "true"},  # a dry run anyway
        {"DELIVERY_MAX_IN_FLIGHTS": "true"},  # another near-miss: its default, a warning
    ],
    ids=repr,
)
def test_a_near_miss_that_gets_what_it_asks_for_stays_a_warning(env: dict[str, str]) -> None:
    """A near-miss that does not ask for a dry run, or one under a dry run anyway, starts
    (``run`` logs ``unknown_setting``; ``check`` warns)."""
    Settings.from_env({**LIVE, **env})

    problems = diagnose({**LIVE, **env})[1]
    assert [p.fatal for p in problems] == [False]


def test_missing_api_key_is_required() -> None:
    """Without BUTTON_API_KEY (and not a dry run) the error names the variable and the way out."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092"})

    assert str(raised.value) == "BUTTON_API_KEY is required (or set DELIVERY_DRY_RUN=true)"


def test_dry_run_needs_no_api_key() -> None:
    """DELIVERY_DRY_RUN=true sends nothing, so no key is needed."""
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "DELIVERY_DRY_RUN": "true"})

    assert (settings.delivery.dry_run, settings.button.api_key) == (True, None)


def test_a_dry_run_has_its_own_group_changelog_and_dlq() -> None:
    """The same settings with DELIVERY_DRY_RUN=true never share the live group, changelog or
    DLQ: a dry run commits past every order, so in the live group a later live run would never
    send them."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
        "KAFKA_GROUP_ID": "shop-button",
        "BUTTON_API_KEY": API_KEY,
    }
    live = Settings.from_env(env).kafka
    dry = Settings.from_env({**env, "DELIVERY_DRY_RUN": "true"}).kafka

    assert (live.group_id, live.profile_topic, live.dlq_topic) == (
        "shop-button",
        "button-consumer-profiles",
        "commerce-events.button-dlq",
    )
    assert (dry.group_id, dry.profile_topic, dry.dlq_topic) == (
        "shop-button-dry-run",
        "button-consumer-profiles-dry-run",
        "commerce-events.button-dlq-dry-run",
    )
    assert dry.topic == live.topic
    assert dry.consumer_config()["group.id"] == "shop-button-dry-run"


def test_commands_that_never_call_button_may_skip_the_api_key() -> None:
    """require_api_key=False (replay-dlq, check of Kafka only) loads without BUTTON_API_KEY."""
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "b:9092"}, require_api_key=False)

    assert settings.button.api_key is None


def test_empty_variables_mean_default() -> None:
    """Kubernetes leaves optional variables empty: an empty value takes the default."""
    settings = load(
        DELIVERY_MAX_IN_FLIGHT="", DELIVERY_RATE_LIMIT_RPS="", BUTTON_BASE_URL="", KAFKA_TOPIC=""
    )

    expected = (1000, None, "https://api.usebutton.com", "commerce-events")
    actual = (
        settings.delivery.max_in_flight,
        settings.delivery.rate_limit_rps,
        settings.button.base_url,
        settings.kafka.topic,
    )
    assert expected == actual


def test_an_empty_required_variable_is_missing() -> None:
    """KAFKA_BOOTSTRAP_SERVERS="" counts as unset, so it is reported as required."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "", "BUTTON_API_KEY": API_KEY})

    assert str(raised.value) == "KAFKA_BOOTSTRAP_SERVERS is required"


def test_empty_variables_in_the_process_environment_mean_default(clean_environ) -> None:
    """Read from os.environ itself, an empty optional variable still takes its default."""
    for name, value in BASE.items():
        clean_environ.setenv(name, value)
    clean_environ.setenv("DELIVERY_MAX_IN_FLIGHT", "")
    clean_environ.setenv("DELIVERY_RATE_LIMIT_RPS", "")

    settings = Settings.from_env()

    assert (settings.delivery.max_in_flight, settings.delivery.rate_limit_rps) == (1000, None)


def test_an_explicit_environ_is_the_only_source(clean_environ) -> None:
    """from_env(environ) reads nothing from os.environ: a bad variable there is not seen."""
    clean_environ.setenv("DELIVERY_MAX_IN_FLIGHT", "0")
    clean_environ.setenv("KAFKA_TOPIC", "from-os-environ")

    settings = load()

    assert (settings.delivery.max_in_flight, settings.kafka.topic) == (1000, "commerce-events")


def test_kafka_config_variables_pass_through_as_librdkafka_properties() -> None:
    """KAFKA_CONFIG_* becomes a property: "_" is ".", "__" is a literal "_", names lower-cased."""
    settings = load(
        KAFKA_CONFIG_SASL_MECHANISM="PLAIN",
        KAFKA_CONFIG_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_CONFIG_LOG__LEVEL="6",
    )

    expected = {
        "sasl.mechanism": "PLAIN",
        "security.protocol": "SASL_SSL",
        "log_level": "6",
    }
    assert expected == settings.kafka.config


def test_the_bare_passthrough_prefix_is_ignored() -> None:
    """A variable named exactly KAFKA_CONFIG_ names no property and is skipped."""
    assert kafka_passthrough({"KAFKA_CONFIG_": "x", "KAFKA_TOPIC": "t"}) == {}


@pytest.mark.parametrize(
    ("variable", "prop"),
    [
        ("KAFKA_CONFIG_ENABLE_AUTO_OFFSET_STORE", "enable.auto.offset.store"),
        ("KAFKA_CONFIG_ENABLE_AUTO_COMMIT", "enable.auto.commit"),
        ("KAFKA_CONFIG_ENABLE_PARTITION_EOF", "enable.partition.eof"),
        ("KAFKA_CONFIG_ALLOW_AUTO_CREATE_TOPICS", "allow.auto.create.topics"),
        ("KAFKA_CONFIG_GROUP_ID", "group.id"),
        ("KAFKA_CONFIG_BOOTSTRAP_SERVERS", "bootstrap.servers"),
        # librdkafka's aliases of the same properties (CONFIGURATION.md: "Alias for")
        ("KAFKA_CONFIG_METADATA_BROKER_LIST", "metadata.broker.list"),
        ("KAFKA_CONFIG_AUTO_COMMIT_ENABLE", "auto.commit.enable"),
    ],
)
def test_reserved_kafka_properties_are_refused(variable: str, prop: str) -> None:
    """Properties the service owns (at-least-once, group, brokers) cannot be overridden."""
    message = config_error(**{variable: "true"})

    assert f"{variable}: {prop} is managed by the service and cannot be set" == message


def test_api_key_is_not_in_repr_or_str_of_the_settings() -> None:
    """The key is a SecretStr: neither the section nor the whole settings object prints it."""
    settings = load()
    printed = [repr(settings), str(settings), repr(settings.button), str(settings.button)]

    assert [text for text in printed if API_KEY in text] == []


def test_api_key_value_is_still_available_to_the_client() -> None:
    """Hiding the key from output does not lose it: the Button client can read it."""
    key = load().button.api_key

    assert key is not None
    assert key.get_secret_value() == API_KEY


def test_api_key_is_not_in_a_config_error_message() -> None:
    """An invalid setting beside the key reports the variable, never the key's value."""
    message = config_error(BUTTON_BASE_URL="ftp://x", BUTTON_CONNECT_TIMEOUT="nope")

    assert API_KEY not in message


def test_kafka_passthrough_values_are_not_in_repr() -> None:
    """A credential passed as KAFKA_CONFIG_SASL_PASSWORD is not printed with the Kafka settings."""
    settings = load(KAFKA_CONFIG_SASL_PASSWORD="hunter2-kafka-secret")
    printed = [repr(settings.kafka), str(settings.kafka)]

    assert [text for text in printed if "hunter2-kafka-secret" in text] == []
    assert settings.kafka.config["sasl.password"] == "hunter2-kafka-secret"


def test_producers_and_created_topics_share_one_record_size_limit() -> None:
    """KAFKA_MAX_MESSAGE_BYTES is the producer's message.max.bytes."""
    settings = load(KAFKA_MAX_MESSAGE_BYTES="2000000")
    assert settings.kafka.producer_config()["message.max.bytes"] == 2_000_000


def test_a_profile_cap_the_changelog_cannot_take_is_refused() -> None:
    """A profile cap above the record limit (minus the record's overhead) names the variable."""
    message = config_error(KAFKA_MAX_MESSAGE_BYTES="100000", MAPPING_MAX_PROFILE_BYTES="99000")
    assert message.startswith("MAPPING_MAX_PROFILE_BYTES")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAFKA_CONFIG_ACKS", "1"),
        ("KAFKA_CONFIG_ACKS", "0"),
        ("KAFKA_CONFIG_ENABLE_IDEMPOTENCE", "false"),
        ("KAFKA_CONFIG_ISOLATION_LEVEL", "read_uncommitted"),
        ("KAFKA_CONFIG_REQUEST_REQUIRED_ACKS", "1"),  # librdkafka's alias of acks
    ],
)
def test_passthrough_values_that_weaken_the_guarantees_are_refused(
    variable: str, value: str
) -> None:
    """acks below all, a non-idempotent producer or reading aborted records: refused."""
    message = config_error(**{variable: value})
    assert message.startswith(f"{variable}: ")
    assert "at-least-once" in message


@pytest.mark.parametrize(
    ("variable", "typed"),
    [
        ("KAFKA_CONFIG_AUTO_OFFSET_RESET", "KAFKA_AUTO_OFFSET_RESET"),
        ("KAFKA_CONFIG_GROUP_PROTOCOL", "KAFKA_GROUP_PROTOCOL"),
    ],
)
def test_passthrough_of_a_typed_setting_is_refused_naming_the_typed_variable(
    variable: str, typed: str
) -> None:
    """Two sources for one property would let the pass-through silently win."""
    message = config_error(**{variable: "latest"})
    assert message.startswith(f"{variable}: ")
    assert typed in message


def test_passthrough_values_that_keep_the_guarantees_are_accepted() -> None:
    settings = load(KAFKA_CONFIG_ACKS="all", KAFKA_CONFIG_ENABLE_IDEMPOTENCE="true")
    assert settings.kafka.producer_config()["acks"] == "all"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KAFKA_CONFIG_ACKS", " all"),
        ("KAFKA_CONFIG_ACKS", "ALL "),
        ("KAFKA_CONFIG_REQUEST_REQUIRED_ACKS", " -1"),
        ("KAFKA_CONFIG_ENABLE_IDEMPOTENCE", " True "),
        ("KAFKA_CONFIG_ISOLATION_LEVEL", "read_committed\n"),
        ("KAFKA_CONFIG_ISOLATION_LEVEL", "READ_COMMITTED"),
    ],
)
def test_a_guarded_value_the_guard_accepts_is_one_librdkafka_accepts(
    variable: str, value: str
) -> None:
    """The guard judges a value stripped and in lower case; librdkafka refuses " all" or
    "READ_COMMITTED" as given, so a pod the guard let through would exit 2 at start. The
    service passes the value it judged."""
    config = load(**{variable: value}).kafka
    Producer(dict(config.producer_config())).flush(0)
    KafkaConsumer(dict(config.consumer_config())).close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"DELIVERY_REVOKE_TIMEOUT_SECONDS": "15"},
        {"BUTTON_TOTAL_TIMEOUT": "40"},
    ],
)
def test_a_revoke_deadline_shorter_than_a_request_is_warned_about(
    overrides: dict[str, str],
) -> None:
    """A request still in flight when a revoked partition's deadline passes is abandoned, yet
    Button may still apply it, after the next owner's newer requests for the same order (an
    update carries the order's whole state: the older one would win). The deadline should
    cover a whole request (``BUTTON_TOTAL_TIMEOUT``): ``check`` warns, ``run`` logs it, and
    both go on (long holds on purpose stay possible)."""
    settings = load(**overrides)
    warnings = setting_warnings(settings)

    assert ("DELIVERY_REVOKE_TIMEOUT_SECONDS", False) in [(w.variable, w.fatal) for w in warnings]
    assert "BUTTON_TOTAL_TIMEOUT" in warnings[0].message
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", **overrides}
    assert warnings[0] in diagnose(env)[1]
    assert setting_warnings(load()) == []


@pytest.mark.parametrize(
    "overrides",
    [{"DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "30"}, {"BUTTON_TOTAL_TIMEOUT": "30"}],
)
def test_a_shutdown_drain_shorter_than_a_request_is_warned_about(
    overrides: dict[str, str],
) -> None:
    """Half the shutdown budget drains in-flight work: below a whole request, a rollout
    abandons requests in flight as a short revoke deadline does."""
    warnings = setting_warnings(load(**overrides))

    assert ("DELIVERY_SHUTDOWN_TIMEOUT_SECONDS", False) in [(w.variable, w.fatal) for w in warnings]


@pytest.mark.parametrize(
    "overrides",
    [
        {"DELIVERY_CONCURRENCY_MAX": "100"},  # as many requests as connections: none spare
        {"DELIVERY_CONCURRENCY_MAX": "500"},
        {"BUTTON_MAX_CONNECTIONS": "32"},  # below the default DELIVERY_CONCURRENCY_MAX (64)
    ],
)
def test_a_connection_pool_not_above_the_concurrency_is_warned_about(
    overrides: dict[str, str],
) -> None:
    """The README: keep BUTTON_MAX_CONNECTIONS above DELIVERY_CONCURRENCY_MAX. Priority
    requests (the gates' probes, an operator's test event) go out beside the requests in
    flight, and with curl a request waiting for a free connection longer than the connect
    timeout ends as a connect timeout. ``check`` warns naming both settings, ``run`` logs it,
    and both go on, as for the other settings that work but risk something."""
    warnings = setting_warnings(load(**overrides))

    pool = [w for w in warnings if w.variable == "BUTTON_MAX_CONNECTIONS"]
    assert [w.fatal for w in pool] == [False]
    assert "DELIVERY_CONCURRENCY_MAX" in pool[0].message
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "BUTTON_API_KEY": "k", **overrides}
    assert pool[0] in diagnose(env)[1]


def test_a_connection_pool_above_the_concurrency_is_no_warning() -> None:
    settings = load(BUTTON_MAX_CONNECTIONS="65", DELIVERY_CONCURRENCY_MAX="64")

    assert setting_warnings(settings) == []


def test_the_default_revoke_deadline_covers_a_whole_request() -> None:
    settings = load()
    assert settings.delivery.revoke_timeout_seconds > settings.button.total_timeout
