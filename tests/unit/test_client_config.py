"""The client configurations the settings produce: Kafka consumer, reader, producer, admin, and
the schema registry's. Pass-through properties, secrets and the service's invariants."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.settings import KAFKA_LOGGER, ClientConfig, Settings

SASL_PASSWORD = "kafka-pa55word-TOPSECRET"
REGISTRY_AUTH = "svc-registry:registry-pa55word-TOPSECRET"
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092", "BUTTON_API_KEY": "sk-config-test"}
SASL = {
    "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_CONFIG_SASL_MECHANISM": "PLAIN",
    "KAFKA_CONFIG_SASL_USERNAME": "svc-kafka",
    "KAFKA_CONFIG_SASL_PASSWORD": SASL_PASSWORD,
}
SASL_PROPERTIES = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "svc-kafka",
    "sasl.password": SASL_PASSWORD,
}


def load(**overrides: str) -> Settings:
    return Settings.from_env({**BASE, **overrides})


def kafka_configs(settings: Settings) -> dict[str, ClientConfig]:
    k = settings.kafka
    return {
        "consumer": k.consumer_config(),
        "reader": k.reader_config("a-reader"),
        "producer": k.producer_config(),
        "admin": k.admin_config(),
    }


def subset(config: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    return {key: config.get(key) for key in keys}


# --- every Kafka configuration ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["consumer", "reader", "producer", "admin"])
def test_brokers_and_sasl_pass_through_reach_every_kafka_config(kind: str) -> None:
    """KAFKA_BOOTSTRAP_SERVERS and the KAFKA_CONFIG_* credentials reach each client, so every
    command can talk to a SASL_SSL cluster that ``run`` can."""
    config = kafka_configs(load(**SASL))[kind]

    expected = {"bootstrap.servers": "broker-1:9092", **SASL_PROPERTIES}
    assert expected == subset(config, expected)


@pytest.mark.parametrize("kind", ["consumer", "reader", "producer", "admin"])
def test_the_repr_of_a_kafka_config_hides_credentials(kind: str) -> None:
    """A configuration printed or logged shows the property but not the SASL password."""
    config = kafka_configs(load(**SASL))[kind]

    printed = [repr(config), str(config), f"{config}"]
    assert [text for text in printed if SASL_PASSWORD in text] == []
    assert ["sasl.password" in text for text in printed] == [True, True, True]


def test_a_kafka_config_is_a_plain_mapping_for_the_client() -> None:
    """Hiding the password in the repr does not hide it from librdkafka."""
    config = load(**SASL).kafka.producer_config()

    assert dict(config)["sasl.password"] == SASL_PASSWORD


# --- the service's consumer --------------------------------------------------------------------


def test_consumer_config_turns_the_automatic_offset_store_off() -> None:
    """The at-least-once invariants: offsets stored by hand, committed every second."""
    expected = {
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
    }
    assert expected == subset(load().kafka.consumer_config(), expected)


def test_consumer_invariants_win_over_the_pass_through() -> None:
    """A KAFKA_CONFIG_ property that is not refused still cannot change the commit cadence."""
    config = load(KAFKA_CONFIG_AUTO_COMMIT_INTERVAL_MS="60000").kafka.consumer_config()

    assert config["auto.commit.interval.ms"] == 1000


def test_consumer_fetches_with_a_short_long_poll_that_the_pass_through_may_change() -> None:
    """fetch.wait.max.ms is 100 by default (a resumed partition's first fetch waits behind
    the broker's long poll of the others); KAFKA_CONFIG_FETCH_WAIT_MAX_MS replaces it."""
    assert load().kafka.consumer_config()["fetch.wait.max.ms"] == 100
    config = load(KAFKA_CONFIG_FETCH_WAIT_MAX_MS="500").kafka.consumer_config()
    assert config["fetch.wait.max.ms"] == "500"


def test_consumer_config_carries_the_group_settings() -> None:
    """Group id, protocol, instance id and offset reset come from their KAFKA_ variables."""
    settings = load(
        KAFKA_GROUP_ID="g1",
        KAFKA_GROUP_PROTOCOL="consumer",
        KAFKA_GROUP_INSTANCE_ID="pod-0",
        KAFKA_AUTO_OFFSET_RESET="latest",
    )

    expected = {
        "group.id": "g1",
        "group.protocol": "consumer",
        "group.instance.id": "pod-0",
        "auto.offset.reset": "latest",
        "partition.assignment.strategy": None,
        "session.timeout.ms": None,
    }
    assert expected == subset(settings.kafka.consumer_config(), expected)


def test_classic_protocol_consumer_gets_cooperative_sticky_and_the_session_timeout() -> None:
    """With the classic protocol the client sets assignment and session timeout itself."""
    settings = load(KAFKA_GROUP_PROTOCOL="classic", KAFKA_SESSION_TIMEOUT_MS="30000")

    expected = {
        "group.protocol": "classic",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 30000,
    }
    assert expected == subset(settings.kafka.consumer_config(), expected)


def test_the_pass_through_may_override_the_classic_assignment_strategy() -> None:
    """Cooperative-sticky is a default: KAFKA_CONFIG_PARTITION_ASSIGNMENT_STRATEGY replaces it."""
    settings = load(
        KAFKA_GROUP_PROTOCOL="classic", KAFKA_CONFIG_PARTITION_ASSIGNMENT_STRATEGY="range"
    )

    assert settings.kafka.consumer_config()["partition.assignment.strategy"] == "range"


# --- the reader, the producer, the admin client --------------------------------------------------


def test_reader_config_reads_to_the_end_without_committing_or_joining_the_group() -> None:
    """The given group id, no automatic commit, partition ends reported, earliest on reset;
    the service group's pass-through properties are left out."""
    settings = load(
        KAFKA_CONFIG_GROUP_REMOTE_ASSIGNOR="uniform",
        KAFKA_CONFIG_PARTITION_ASSIGNMENT_STRATEGY="range",
        KAFKA_GROUP_INSTANCE_ID="pod-0",
    )

    expected = {
        "group.id": "a-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "group.remote.assignor": None,
        "partition.assignment.strategy": None,
        "group.instance.id": None,
        "group.protocol": None,
    }
    assert expected == subset(settings.kafka.reader_config("a-reader"), expected)


def test_producer_config_is_idempotent_with_acks_all() -> None:
    """Dead letters and changelog writes count only once every in-sync replica has them."""
    expected = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120_000,
    }
    assert expected == subset(load().kafka.producer_config(), expected)


def test_producer_tuning_may_be_overridden_by_the_pass_through() -> None:
    """linger.ms is a default, not an invariant: KAFKA_CONFIG_LINGER_MS replaces it."""
    assert load(KAFKA_CONFIG_LINGER_MS="50").kafka.producer_config()["linger.ms"] == "50"


def test_every_kafka_client_logs_through_the_librdkafka_logger() -> None:
    """Consumer, reader, producer and admin configurations all name the same stdlib logger."""
    kafka = load().kafka
    configs = [
        kafka.consumer_config(),
        kafka.reader_config("r"),
        kafka.producer_config(),
        kafka.admin_config(),
    ]

    assert [c["logger"].name for c in configs] == [KAFKA_LOGGER] * 4


def test_admin_config_leaves_out_group_membership_properties() -> None:
    """An admin client gets the brokers and the pass-through, not consumer-group properties."""
    config = load(**SASL, KAFKA_CONFIG_GROUP_REMOTE_ASSIGNOR="uniform").kafka.admin_config()

    expected = {"bootstrap.servers": "broker-1:9092", "reconnect.backoff.ms": 50, **SASL_PROPERTIES}
    assert expected == {k: v for k, v in config.items() if k != "logger"}


def test_every_client_reconnects_after_50_ms_unless_kafka_config_says_otherwise() -> None:
    """The Java client's reconnect.backoff.ms, not librdkafka's 100 ms, which every new client
    waited half of for its first request; KAFKA_CONFIG_RECONNECT_BACKOFF_MS overrides it."""
    for settings, expected in (
        (load(), 50),
        (load(KAFKA_CONFIG_RECONNECT_BACKOFF_MS="200"), "200"),
    ):
        k = settings.kafka
        configs = (
            k.consumer_config(),
            k.producer_config(),
            k.admin_config(),
            k.reader_config("restore"),
        )
        assert [c["reconnect.backoff.ms"] for c in configs] == [expected] * 4


# --- the schema registry ---------------------------------------------------------------------


def test_registry_config_is_none_without_a_registry_url() -> None:
    """No SCHEMA_REGISTRY_URL: registry-free decoding, no registry client at all."""
    assert load(SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=REGISTRY_AUTH).schema.registry_config() is None


def test_registry_config_carries_the_url_and_the_basic_auth_user_info() -> None:
    """The secret user:password reaches the registry client as basic.auth.user.info."""
    settings = load(
        SCHEMA_REGISTRY_URL="https://registry:8081",
        SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=REGISTRY_AUTH,
    )

    expected = {
        "url": "https://registry:8081",
        "timeout": 5.0,
        "basic.auth.user.info": REGISTRY_AUTH,
    }
    assert expected == settings.schema.registry_config()


def test_registry_config_without_credentials_has_only_the_url() -> None:
    """An unauthenticated registry gets no basic.auth.user.info (not even an empty one)."""
    config = load(SCHEMA_REGISTRY_URL="http://registry:8081").schema.registry_config()

    expected = {"url": "http://registry:8081", "timeout": 5.0}
    assert expected == config


def test_registry_config_bounds_every_request_by_the_timeout_setting() -> None:
    """SCHEMA_REGISTRY_TIMEOUT_SECONDS reaches the client as ``timeout`` (seconds per request);
    unset, a few seconds: the client's own default is no timeout at all."""
    default = load(SCHEMA_REGISTRY_URL="http://registry:8081").schema.registry_config()
    config = load(
        SCHEMA_REGISTRY_URL="http://registry:8081", SCHEMA_REGISTRY_TIMEOUT_SECONDS="2.5"
    ).schema.registry_config()

    timeouts = [c["timeout"] if c is not None else None for c in (default, config)]
    assert timeouts == [5.0, 2.5]


def test_registry_credentials_are_in_no_repr() -> None:
    """Neither the registry config, the schema settings nor the whole settings print them."""
    settings = load(
        SCHEMA_REGISTRY_URL="https://registry:8081",
        SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=REGISTRY_AUTH,
    )
    config = settings.schema.registry_config()

    printed = [repr(config), str(config), repr(settings.schema), repr(settings), str(settings)]
    assert [text for text in printed if "registry-pa55word" in text] == []


def test_reader_config_prefetches_little_and_fetches_again_at_once_unless_overridden() -> None:
    """The restore reader's queue is 16 MB (peak memory) and a full queue delays the next
    fetch by 10 ms, not librdkafka's 1 s (restore time); KAFKA_CONFIG_ properties win."""
    defaults = load().kafka.reader_config("a-reader")
    overridden = load(
        KAFKA_CONFIG_QUEUED_MAX_MESSAGES_KBYTES="65536", KAFKA_CONFIG_FETCH_QUEUE_BACKOFF_MS="1000"
    ).kafka.reader_config("a-reader")

    keys = {"queued.max.messages.kbytes": None, "fetch.queue.backoff.ms": None}
    assert subset(defaults, keys) == {
        "queued.max.messages.kbytes": 16384,
        "fetch.queue.backoff.ms": 10,
    }
    assert subset(overridden, keys) == {
        "queued.max.messages.kbytes": "65536",
        "fetch.queue.backoff.ms": "1000",
    }


def test_producers_never_ask_the_broker_to_create_a_topic() -> None:
    """librdkafka's producer default is to have the broker auto-create a missing topic; a
    deleted changelog would come back with the broker's defaults and take the writes."""
    assert load().kafka.producer_config()["allow.auto.create.topics"] is False
