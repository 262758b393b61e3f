"""The client configurations the settings produce: the schema registry's, and its secret."""

from __future__ import annotations

from consumer.settings import Settings

REGISTRY_AUTH = "svc-registry:registry-pa55word-TOPSECRET"
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092", "DELIVERY_DRY_RUN": "true"}


def load(**overrides: str) -> Settings:
    return Settings.from_env({**BASE, **overrides})


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

    expected = {"url": "https://registry:8081", "basic.auth.user.info": REGISTRY_AUTH}
    assert expected == settings.schema.registry_config()


def test_registry_config_without_credentials_has_only_the_url() -> None:
    """An unauthenticated registry gets no basic.auth.user.info (not even an empty one)."""
    config = load(SCHEMA_REGISTRY_URL="http://registry:8081").schema.registry_config()

    expected = {"url": "http://registry:8081"}
    assert expected == config


def test_registry_credentials_are_in_no_repr() -> None:
    """Neither the registry config, the schema settings nor the whole settings print them."""
    settings = load(
        SCHEMA_REGISTRY_URL="https://registry:8081",
        SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=REGISTRY_AUTH,
    )
    config = settings.schema.registry_config()

    printed = [repr(config), str(config), repr(settings.schema), repr(settings), str(settings)]
    assert [text for text in printed if "registry-pa55word" in text] == []
