"""A private CA in the chart: can a user give each of the three clients (Kafka, the registry,
Button) a CA file?

Kafka takes its CA inline (``KAFKA_CONFIG_SSL_CA_PEM``, a librdkafka property ``config:``
accepts), so it needs no file. The registry client and the Button transports read a CA only
from a file (``SSL_CERT_FILE``); the chart has no way to mount one, nor to set that variable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import by_kind

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    kinds = by_kind(docs)
    workload = kinds.get("StatefulSet") or kinds["Deployment"]
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_the_kafka_ca_can_be_given_inline_without_a_file(
    chart: Callable[..., list[dict[str, Any]]],
) -> None:
    docs = chart(
        set_strings=[
            "config.KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL",
            f"config.KAFKA_CONFIG_SSL_CA_PEM={CA_PEM}",
        ]
    )
    data = by_kind(docs)["ConfigMap"]["data"]
    assert data["KAFKA_CONFIG_SSL_CA_PEM"] == CA_PEM


@pytest.mark.xfail(
    strict=True,
    reason=(
        "the chart renders no volume but /tmp and its schema refuses extraVolumes, "
        "extraVolumeMounts and config.SSL_CERT_FILE: a private CA cannot reach the registry "
        "client or the Button transports (a fix may name these values differently)"
    ),
)
def test_a_ca_file_can_be_mounted_and_given_to_every_client(
    chart: Callable[..., list[dict[str, Any]]], tmp_path: Path
) -> None:
    values = tmp_path / "ca-values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "extraVolumes": [{"name": "corp-ca", "secret": {"secretName": "corp-ca"}}],
                "extraVolumeMounts": [
                    {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}
                ],
                "config": {
                    "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
                    "KAFKA_CONFIG_SSL_CA_LOCATION": "/etc/corp-ca/ca.pem",
                    "SSL_CERT_FILE": "/etc/corp-ca/ca.pem",
                },
            }
        )
    )
    docs = chart("keda.enabled=false", values_files=[values])
    mounts = {m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert "/etc/corp-ca" in mounts
    assert by_kind(docs)["ConfigMap"]["data"]["SSL_CERT_FILE"] == "/etc/corp-ca/ca.pem"
