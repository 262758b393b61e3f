"""A schema registry that accepts connections and never answers: the service stays live (its
admin endpoints answer), stops promptly on SIGTERM, logs ``schema_registry_unavailable``, and
processes the waiting records once the registry answers again; nothing is committed before.

The hang is held by construction: the service talks to the real registry (Apicurio, the
``schema_registry_url`` fixture) through ``HeldRegistry``, a TCP relay in this process that,
while held, accepts every connection and reads nothing from it; once released it relays every
connection, the held ones included, to the real registry. Real broker, the sandbox, real
``button-consumer run`` in a child process, real SIGTERM.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumer.commands import produce_events
from consumer.devtools._proc import free_port
from consumer.sandbox.testing import SandboxHandle
from consumer.settings import Settings
from tests.e2e.harness import (
    ServiceProcess,
    assert_sandbox_matches,
    committed_offsets,
    expected_orders,
    log_events,
    past_events,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

PARTITIONS = 2
SHUTDOWN = 10.0
"""DELIVERY_SHUTDOWN_TIMEOUT_SECONDS (S)."""
ADMIN_ANSWER = 5.0
"""Seconds an admin endpoint gets to answer (the poll loop's own pace is well under it)."""


class HeldRegistry:
    """A TCP relay to ``upstream`` (``host:port``) that holds every connection until released:
    it accepts them (the kernel completes the handshake) and reads nothing, so a client's
    request waits for an answer that never comes. ``release()`` relays the held connections
    and every later one to ``upstream``, both ways."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        self._open: list[socket.socket] = []
        self._released = False
        self.accepted = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="held-registry", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self._server.getsockname()[1]
        return port

    def held(self) -> int:
        """Connections accepted and held (never answered) so far."""
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._open.append(client)
                if not self._released:
                    self._held.append(client)
                    self.accepted.set()
                    continue
            self._relay(client)

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=30)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.append(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def release(self) -> None:
        """Relay the held connections and every later one to the real registry."""
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        for client in held:
            self._relay(client)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until either ends."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def held_registry(schema_registry_url: str) -> Iterator[tuple[HeldRegistry, str]]:
    """A held relay to the real registry and the URL the service is given for it (the real
    registry's URL with the relay's address)."""
    scheme, rest = schema_registry_url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    relay = HeldRegistry((host, int(port or 80)))
    try:
        yield relay, f"{scheme}://127.0.0.1:{relay.port}/{path}".rstrip("/")
    finally:
        relay.release()  # a test that failed while holding leaves no client waiting forever
        relay.close()


def _get(port: int, path: str) -> int:
    """The status of ``GET path`` on the admin server; fails the test if it takes longer than
    ``ADMIN_ANSWER`` seconds."""
    url = f"http://127.0.0.1:{port}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=ADMIN_ANSWER) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (TimeoutError, urllib.error.URLError) as exc:
        raise AssertionError(f"{path} did not answer within {ADMIN_ANSWER} s: {exc}") from exc


def _nothing_past_the_first_record(bootstrap: str, group: str, topic: str) -> bool:
    """Whether the group committed no offset past each partition's first record (offset 0:
    the committable offset is the first unfinished record; -1001: none committed)."""
    committed = committed_offsets(bootstrap, group, topic, PARTITIONS)
    return all(offset <= 0 for offset in committed.values())


def _env(
    kafka_bootstrap: str,
    topic: str,
    group: str,
    sandbox: SandboxHandle,
    registry_url: str,
    admin_port: int,
    registry_timeout: float,
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
        "SCHEMA_REGISTRY_URL": registry_url,
        "SCHEMA_REGISTRY_TIMEOUT_SECONDS": str(registry_timeout),
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": str(admin_port),
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN),
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }


def _producer_settings(
    kafka_bootstrap: str, topic: str, schema_registry_url: str, sandbox: SandboxHandle
) -> Settings:
    """Settings that produce to ``topic`` in wire format, the schema registered in the real
    registry (``produce_events``), and map as the service does (``expected_orders``)."""
    return Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "BUTTON_API_KEY": sandbox.api_key,
            "BUTTON_BASE_URL": sandbox.base_url,
            "SCHEMA_REGISTRY_URL": schema_registry_url,
        }
    )


def test_a_hung_registry_leaves_the_admin_endpoints_answering_and_sigterm_stops_the_service(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    schema_registry_url: str,
    held_registry: tuple[HeldRegistry, str],
    tmp_path: Path,
) -> None:
    """While a writer-schema lookup waits on a registry that never answers (a request timeout
    far beyond the test, so the lookup is in flight throughout): ``/healthz`` answers 200,
    ``/readyz`` and ``/metrics`` answer, and SIGTERM ends the process with status 0 within
    S + 3 s, nothing sent to Button and nothing committed past the first records."""
    relay, relay_url = held_registry
    topic = make_topic(partitions=PARTITIONS, prefix="registry-hang")
    settings = _producer_settings(kafka_bootstrap, topic, schema_registry_url, sandbox)
    produce_events(settings, past_events(6, seed=31), partitions=PARTITIONS)
    group = unique_name("group")
    admin_port = free_port()
    env = _env(kafka_bootstrap, topic, group, sandbox, relay_url, admin_port, 600.0)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        assert relay.accepted.wait(120.0), f"no lookup reached the registry: {service.log_tail()}"
        # The lookup is in flight (its request unanswered for 600 s) from here to the end.
        assert _get(admin_port, "/healthz") == 200, service.log_tail()
        assert _get(admin_port, "/readyz") in (200, 503)
        assert _get(admin_port, "/metrics") == 200
        assert relay.held() >= 1  # no lookup was answered
        sent = time.monotonic()
        code = service.terminate(timeout=SHUTDOWN + 30)
        took = time.monotonic() - sent
    finally:
        if service.alive():
            service.kill()
    assert code == 0, f"exit {code} after {took:.1f} s:\n{service.log_tail()}"
    assert took < SHUTDOWN + 3, f"stopped {took:.1f} s after SIGTERM:\n{service.log_tail()}"
    assert log_events(tmp_path / "service.log", "shutdown_backstop") == []
    assert sandbox.orders() == []
    assert _nothing_past_the_first_record(kafka_bootstrap, group, topic)


def test_records_wait_for_a_hung_registry_and_are_processed_once_it_answers(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    schema_registry_url: str,
    held_registry: tuple[HeldRegistry, str],
    tmp_path: Path,
) -> None:
    """With a registry that never answers and a 1 s request timeout: the lookups fail in
    bounded time (``schema_registry_unavailable`` is logged, again and again), ``/healthz``
    answers, nothing reaches Button and nothing is committed past the first records; once the
    registry answers, every order reaches Button as the mapping says and the group commits
    every record."""
    relay, relay_url = held_registry
    topic = make_topic(partitions=PARTITIONS, prefix="registry-wait")
    settings = _producer_settings(kafka_bootstrap, topic, schema_registry_url, sandbox)
    events = past_events(8, seed=32)
    produce_events(settings, events, partitions=PARTITIONS)
    expected = expected_orders(events, settings)
    group = unique_name("group")
    admin_port = free_port()
    log = tmp_path / "service.log"
    env = _env(kafka_bootstrap, topic, group, sandbox, relay_url, admin_port, 1.0)
    service = ServiceProcess(env, log).start()
    try:
        wait_until(
            lambda: len(log_events(log, "schema_registry_unavailable")) >= 2,
            120,
            interval=0.2,
            message=f"no schema_registry_unavailable line twice: {service.log_tail()}",
        )
        assert _get(admin_port, "/healthz") == 200, service.log_tail()
        assert sandbox.orders() == []
        assert _nothing_past_the_first_record(kafka_bootstrap, group, topic)

        relay.release()
        wait_for_committed(kafka_bootstrap, group, topic, PARTITIONS, timeout=120)
        assert_sandbox_matches(sandbox, expected)
        code = service.terminate(timeout=SHUTDOWN + 30)
    finally:
        if service.alive():
            service.kill()
    assert code == 0, service.log_tail()
