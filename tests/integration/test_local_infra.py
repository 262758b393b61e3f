"""The test infrastructure itself: a broker and a registry that work, and JVMs that never leak.

Every other integration test trusts these fixtures and tools; if a broker JVM outlived its owner,
runs on a developer machine or CI would pile up brokers until memory ran out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from consumer.devtools._proc import ServiceState, pid_alive, port_open, repo_root, wait_until
from consumer.devtools.localkafka import BROKER_ID, LocalKafka

# Compact JSON on purpose: Apicurio keys schemas by their exact text, unlike Confluent's registry,
# which compares parsed schemas. The serializer registers a compact rendering, so a pretty-printed
# schema registered by hand would get a second id under the same subject.
ORDER_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "OrderPlaced",
        "namespace": "test.infra",
        "fields": [
            {"name": "order_id", "type": "string"},
            {"name": "total_minor", "type": "long"},
        ],
    },
    separators=(",", ":"),
)


@pytest.mark.broker
def test_produce_then_consume_keeps_per_key_order(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    topic = make_topic(partitions=2)
    sent = [(f"user-{i % 3}".encode(), f"event-{i}".encode()) for i in range(12)]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": unique_name("group"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    received: list[tuple[bytes | None, bytes | None]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            received.append((message.key(), message.value()))
    finally:
        consumer.close()

    assert len(received) >= len(sent), f"{len(received)} of {len(sent)} records within 60 s"
    assert sorted(received) == sorted(sent)
    for key in {key for key, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]


def test_schema_registry_registers_and_serves_avro_by_id(
    schema_registry_url: str, unique_name: Callable[[str], str]
) -> None:
    # Imported here so that, without the schema-registry extras, only this test fails.
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import (
        AvroDeserializer,
        AvroSerializer,
    )
    from confluent_kafka.serialization import MessageField, SerializationContext

    subject = unique_name("orders") + "-value"
    context = SerializationContext(subject.removesuffix("-value"), MessageField.VALUE)
    event = {"order_id": "o-1", "total_minor": 1234}
    with SchemaRegistryClient({"url": schema_registry_url}) as writer:
        schema_id = writer.register_schema(subject, Schema(ORDER_SCHEMA, "AVRO"))
        assert '"OrderPlaced"' in (writer.get_schema(schema_id).schema_str or "")
        # The serde path: Confluent wire format out (magic byte, then the schema id) ...
        payload = AvroSerializer(writer, ORDER_SCHEMA)(event, context)
    assert payload is not None
    assert payload[0] == 0
    assert int.from_bytes(payload[1:5], "big") == schema_id
    # ... and back in through a fresh client that has to fetch the schema by id over HTTP.
    with SchemaRegistryClient({"url": schema_registry_url}) as reader:
        assert AvroDeserializer(reader)(payload, context) == event


def _localkafka_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.devtools.localkafka", *args],
        cwd=repo_root(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.broker
def test_cli_up_is_idempotent_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    up = _localkafka_cli("up", "--state-dir", str(state_dir))
    state = ServiceState.load(state_dir / "state.json")
    try:
        assert up.returncode == 0, up.stderr
        last_line = up.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"KAFKA_BOOTSTRAP_SERVERS=127\.0\.0\.1:\d+", last_line), up.stdout
        assert state is not None
        assert last_line.endswith(state.address)
        admin = AdminClient({"bootstrap.servers": state.address})
        assert admin.list_topics(timeout=10).brokers

        again = _localkafka_cli("up", "--state-dir", str(state_dir))
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().splitlines()[-1] == last_line

        down = _localkafka_cli("down", "--state-dir", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert not pid_alive(state.pid)
        assert not Path(state.data_dir).exists()
        assert not (state_dir / "state.json").exists()
        assert not port_open(state.port)
    finally:
        if state is not None and pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
            shutil.rmtree(state.data_dir, ignore_errors=True)


@pytest.mark.broker
def test_isolated_mode_runs_controller_and_broker_apart_and_stops_both() -> None:
    """In isolated mode the controller and the broker are two JVMs (nodes 1 and 2): the broker
    answers for itself, the controller has registered and unfenced it in its metadata log, and
    `stop` ends both JVMs and removes their directory."""
    kafka = LocalKafka(kraft_mode="isolated").start()
    try:
        pids = (kafka.pid, kafka.controller_pid)
        data_dir, port = kafka.data_dir, kafka.port
        assert pids[0] != pids[1]
        assert all(pid_alive(pid) for pid in pids)
        metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(
            timeout=10
        )
        assert set(metadata.brokers) == {BROKER_ID}
        assert [(c.broker_id, c.fenced) for c in kafka.fencing_changes()][-1:] == [
            (BROKER_ID, False)
        ]
    finally:
        kafka.stop()
    assert [pid_alive(pid) for pid in pids] == [False, False]
    assert not data_dir.exists()
    assert not port_open(port)


@pytest.mark.broker
@pytest.mark.parametrize(
    ("service", "options"),
    [
        ("consumer.devtools.localkafka:LocalKafka", ""),
        ("consumer.devtools.localkafka:LocalKafka", "kraft_mode='isolated'"),
        ("consumer.devtools.registry:LocalRegistry", ""),
    ],
)
def test_sigkilled_owner_takes_its_jvm_with_it(service: str, options: str) -> None:
    """Every JVM a service starts (in isolated mode: the controller's too) dies with its owner."""
    module, cls = service.split(":")
    owner_script = textwrap.dedent(
        f"""
        import sys
        from {module} import {cls}
        service = {cls}({options}).start()
        jvms = {{service.pid, getattr(service, "controller_pid", service.pid)}}
        print(",".join(map(str, jvms)), service.data_dir, flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", owner_script],
        cwd=repo_root(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        if not line:
            owner.kill()
            pytest.fail(f"owner process failed to start {cls}: {owner.communicate()[1]}")
        jvm_pids_text, data_dir = line.split(maxsplit=1)
        jvm_pids = [int(pid) for pid in jvm_pids_text.split(",")]
        try:
            assert all(pid_alive(pid) for pid in jvm_pids)
            owner.send_signal(signal.SIGKILL)
            owner.wait(timeout=10)
            assert wait_until(lambda: not any(pid_alive(pid) for pid in jvm_pids), timeout=30), (
                "a JVM outlived its owner"
            )
        finally:
            for pid in jvm_pids:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(data_dir.strip(), ignore_errors=True)
