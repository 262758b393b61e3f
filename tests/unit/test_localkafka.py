"""The local broker's helpers that need no JVM."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from consumer.devtools.localkafka import (
    LocalKafka,
    SaslSecurity,
    _cluster_id,
    _isolated_properties,
    _server_properties,
)


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """An id whose base64url form starts with ``-`` (first byte 0xF8-0xFB) is drawn again:
    ``kafka-storage format -t -...`` reads it as an option and the format fails."""
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])

    cluster_id = _cluster_id(lambda: next(draws))

    assert (cluster_id, cluster_id.startswith("-")) == ("AQAAAAAAAAAAAAAAAAAAAA", False)


def test_a_cluster_id_is_a_base64url_uuid_without_padding() -> None:
    """22 characters of the base64url alphabet, as the storage tool's random-uuid gives."""
    cluster_id = _cluster_id()

    assert (len(cluster_id), set(cluster_id) <= set(_ALPHABET)) == (22, True)


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _parse(properties: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in properties.splitlines())


def test_isolated_mode_is_a_controller_node_and_a_broker_node_of_one_quorum() -> None:
    """Two nodes with their own ids, roles and log directories; the broker reaches the
    controller through the quorum's only voter, which is the controller's own listener."""
    controller, broker = (_parse(p) for p in _isolated_properties(Path("/d"), 9092, 9093))

    assert {key: (controller[key], broker[key]) for key in KEYS} == {
        "process.roles": ("controller", "broker"),
        "node.id": ("1", "2"),
        "controller.quorum.voters": ("1@127.0.0.1:9093", "1@127.0.0.1:9093"),
        "listeners": ("CONTROLLER://127.0.0.1:9093", "PLAINTEXT://127.0.0.1:9092"),
        "log.dirs": ("/d/controller", "/d/broker"),
    }


def test_a_detached_broker_is_combined_only() -> None:
    """`down` stops the one pid `up` recorded: an isolated controller would be left running."""
    with pytest.raises(ValueError, match="combined mode only"):
        LocalKafka(detached=True, kraft_mode="isolated")


KEYS = ("process.roles", "node.id", "controller.quorum.voters", "listeners", "log.dirs")


def test_a_secured_node_authenticates_every_listener_and_enforces_acls() -> None:
    """SASL/PLAIN on the client and the controller listener, the broker logging in as the super
    user, and the StandardAuthorizer denying what no ACL allows."""
    security = SaslSecurity({"admin": "admin-pw", "svc": "svc-pw"}, super_user="admin")

    settings = _parse(_server_properties(Path("/d"), 9092, 9093, security))

    assert {key: settings[key] for key in SECURED_KEYS} == {
        "listeners": "SASL_PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin",
        "allow.everyone.if.no.acl.found": "false",
        "listener.name.controller.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="admin" password="admin-pw" user_admin="admin-pw" user_svc="svc-pw";'
        ),
    }


def test_a_secured_node_refuses_a_super_user_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="not one of the users"):
        SaslSecurity({"svc": "pw"}, super_user="admin")


def test_a_secured_node_refuses_a_password_that_would_break_the_jaas_line() -> None:
    with pytest.raises(ValueError, match="must match"):
        SaslSecurity({"admin": 'pw"; x'}, super_user="admin")


def test_a_secured_broker_is_combined_only() -> None:
    with pytest.raises(ValueError, match="combined mode only"):
        LocalKafka(kraft_mode="isolated", security=SaslSecurity({"a": "b"}, super_user="a"))


SECURED_KEYS = (
    "listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "sasl.mechanism.controller.protocol",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "listener.name.controller.plain.sasl.jaas.config",
)
