"""``check`` and ``produce-sample`` against a schema registry that requires basic auth.

The registry is a small recording HTTP server that answers only requests carrying the configured
``SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`` (401 otherwise, as an authenticated Confluent registry
does), so the tests prove the credentials reach every registry client the commands build.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from consumer.cli import main

pytestmark = pytest.mark.broker

USER_INFO = "svc-button:registry-s3cret"
SCHEMA_ID = 42
PREFIXES = ("KAFKA_", "SCHEMA_", "BUTTON_", "DELIVERY_", "MAPPING_", "ADMIN_", "LOG_")


@dataclass
class RecordingRegistry:
    """What the fake registry saw: (method, path, Authorization header) per request."""

    url: str
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


def _handler(registry: RecordingRegistry, expected: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            auth = self.headers.get("Authorization")
            registry.requests.append((self.command, self.path, auth))
            if auth != expected:
                self._json(401, {"error_code": 40101, "message": "Unauthorized"})
            elif self.command == "GET" and self.path.startswith("/subjects"):
                self._json(200, [])
            elif self.command == "POST" and "/versions" in self.path:
                self._json(200, {"id": SCHEMA_ID})
            else:
                self._json(404, {"error_code": 40401, "message": "not here"})

        def _json(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


@pytest.fixture
def registry() -> Iterator[RecordingRegistry]:
    """A registry on loopback that accepts only ``USER_INFO`` as HTTP basic auth."""
    expected = "Basic " + base64.b64encode(USER_INFO.encode()).decode()
    recording = RecordingRegistry(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recording, expected))
    recording.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recording
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, registry: RecordingRegistry
) -> Callable[[str], None]:
    """``environment(topic)``: settings for a command against the broker and the registry."""

    def apply(topic: str) -> None:
        for name in list(os.environ):
            if name.startswith(PREFIXES):
                monkeypatch.delenv(name)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        monkeypatch.setenv("KAFKA_TOPIC", topic)
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", registry.url)
        monkeypatch.setenv("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", USER_INFO)
        monkeypatch.setenv("DELIVERY_DRY_RUN", "true")

    return apply


def _authorizations(registry: RecordingRegistry) -> set[str | None]:
    return {auth for _, _, auth in registry.requests}


def test_check_reaches_an_authenticated_registry(
    environment: Callable[[str], None],
    registry: RecordingRegistry,
    make_topic: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``check`` sends the configured user:password and reports the registry reachable."""
    environment(make_topic())

    code = main(["check"])

    printed = capsys.readouterr().out
    line = f"OK    SCHEMA_REGISTRY_URL: registry {registry.url} reachable (0 subjects)"
    assert line in printed.splitlines()
    assert code == 0
    expected = {"Basic " + base64.b64encode(USER_INFO.encode()).decode()}
    assert expected == _authorizations(registry)


def test_produce_sample_registers_with_an_authenticated_registry(
    environment: Callable[[str], None],
    registry: RecordingRegistry,
    unique_name: Callable[[str], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``produce-sample`` registers the schema with the configured user:password, then produces."""
    topic = unique_name("samples")
    environment(topic)

    code = main(["produce-sample", "--users", "3", "--partitions", "1"])

    assert code == 0
    assert f"of 3 users to {topic}" in capsys.readouterr().out
    expected = {"Basic " + base64.b64encode(USER_INFO.encode()).decode()}
    assert expected == _authorizations(registry)
    assert [("POST", f"/subjects/{topic}-value/versions")] == [
        (method, path.split("?")[0]) for method, path, _ in registry.requests
    ]
