"""The local broker's helpers that need no JVM."""

from __future__ import annotations

import uuid

from consumer.devtools.localkafka import _cluster_id


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
