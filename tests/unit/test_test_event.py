"""``POST /test-event``: off by default, bearer token, one event through decode, enrichment and
mapping, and optionally to Button."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from consumer.adapters.admin import AdminServer, DeliveryLog, Health
from consumer.bootstrap import _test_event, build
from consumer.domain.button import ButtonRequest
from consumer.domain.mapping import MappingConfig
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.errors import ConfigError
from consumer.settings import Settings

TOKEN = "t0k3n-for-the-test-event"
PURCHASE: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "PURCHASE",
    # An hour ago: /test-event judges the event's time against when it arrives, as the consumer
    # does (neither in the future nor older than MAPPING_MAX_EVENT_AGE_DAYS).
    "event_time": (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "user_key": "u1",
    "btn_ref": "srctok-0123456789abcdef",
    "commerce": {
        "action": "PURCHASE",
        "transaction_id": "O-1",
        "currency_code": "USD",
        "total_amount": "12.34",
    },
}


class FakeButton:
    def __init__(self) -> None:
        self.sent: list[ButtonRequest] = []

    async def send(self, request: ButtonRequest) -> ButtonOutcome:
        self.sent.append(request)
        return ButtonOutcome(OutcomeKind.SUCCESS, status=200, object={"order_id": "O-1"})

    async def get(self, order_id: str) -> ButtonOutcome:
        raise AssertionError(f"the test event reads no order ({order_id})")


def post(
    body: str,
    *,
    token: str | None = TOKEN,
    enabled_token: str | None = TOKEN,
    query: str = "",
    button: FakeButton | None = None,
) -> tuple[int, Any]:
    """Start an admin server on loopback with the real test-event runner, POST, stop."""

    async def scenario() -> tuple[int, Any]:
        server = AdminServer(
            "127.0.0.1",
            0,
            CollectorRegistry(),
            Health(),
            DeliveryLog(1),
            test_event=_test_event(MappingConfig(), button or FakeButton(), dry_run=False),
            test_event_token=enabled_token,
        )
        await server.start()
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{server.port}/test-event{query}", data=body, headers=headers
                ) as response,
            ):
                return response.status, json.loads(await response.text())
        finally:
            await server.stop()

    return asyncio.run(scenario())


def test_test_event_is_off_unless_enabled() -> None:
    """Without a configured token the endpoint does not exist (404)."""
    status, _ = post(json.dumps(PURCHASE), enabled_token=None)

    assert status == 404


@pytest.mark.parametrize(
    ("token", "error"),
    [
        (None, "a bearer token is required (ADMIN_TEST_EVENT_TOKEN)"),
        ("wrong-token-of-some-length", "the bearer token is not ADMIN_TEST_EVENT_TOKEN"),
    ],
)
def test_test_event_requires_the_bearer_token(token, error) -> None:
    """No token or a wrong one: 401, saying which, and nothing is mapped or sent."""
    button = FakeButton()
    status, body = post(json.dumps(PURCHASE), token=token, button=button)

    assert (status, body, button.sent) == (401, {"error": error}, [])


def test_test_event_maps_without_sending_by_default() -> None:
    """The answer is the request the event becomes; Button is not called."""
    button = FakeButton()
    status, body = post(json.dumps(PURCHASE), button=button)

    assert (status, body["sent"], button.sent) == (200, False, [])
    assert (
        body["result"]["action"],
        body["result"]["request"]["path"],
        body["result"]["request"]["body"]["total"],
    ) == ("create", "/v1/order", 1234)


def test_test_event_takes_null_for_an_absent_custom_attribute_or_identity() -> None:
    """A purchase a JSON producer wrote with ``null`` for absent values (a custom attribute, an
    identity) maps as if they were left out (200, create), not a 422 reject."""
    purchase = {
        **PURCHASE,
        "custom_attributes": {"campaign": None},
        "user_identities": [{"identity_type": "email", "identity": None}],
    }
    status, body = post(json.dumps(purchase))

    assert (status, body["result"]["action"]) == (200, "create"), body


def test_test_event_sends_when_asked_and_returns_buttons_answer() -> None:
    """?send=true sends the request and returns Button's outcome, status and object."""
    button = FakeButton()
    status, body = post(json.dumps(PURCHASE), query="?send=true", button=button)

    assert (status, body["sent"], [r.order_id for r in button.sent]) == (200, True, ["O-1"])
    assert (
        body["button"]["outcome"],
        body["button"]["status"],
        body["button"]["object"],
    ) == ("success", 200, {"order_id": "O-1"})


def test_test_event_reports_a_reject_with_its_reason() -> None:
    """Invalid JSON is a reject (422) with the same reason ``map`` gives."""
    status, body = post("{not json", query="?send=true")

    assert (
        status,
        body["result"]["action"],
        body["result"]["reason"],
        body["sent"],
    ) == (422, "reject", "invalid_json", False)


def test_test_event_applies_the_consumers_event_time_checks() -> None:
    """A purchase dated far ahead of the wall clock (a device clock years off) is rejected
    ``event_time_in_future``, and one dated 1970 (a reset clock) ``event_time_too_old``, and
    neither is sent, as the consumer rejects them: the test event is judged against the time it
    is received, not against its own event time."""
    answers = []
    button = FakeButton()
    for when in ("2099-01-01T00:00:00Z", "1970-01-01T00:00:00Z"):
        status, body = post(
            json.dumps({**PURCHASE, "event_time": when}), query="?send=true", button=button
        )
        answers.append((status, body["result"]["action"], body["result"]["reason"]))

    assert answers == [
        (422, "reject", "event_time_in_future"),
        (422, "reject", "event_time_too_old"),
    ]
    assert button.sent == []


def test_enabling_test_events_requires_a_token() -> None:
    """ADMIN_TEST_EVENT_ENABLED without ADMIN_TEST_EVENT_TOKEN stops the start, naming both."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "DELIVERY_DRY_RUN": "true"}
    with pytest.raises(ConfigError, match="ADMIN_TEST_EVENT_TOKEN"):
        Settings.from_env({**env, "ADMIN_TEST_EVENT_ENABLED": "true"})
    with pytest.raises(ConfigError, match="ADMIN_TEST_EVENT_TOKEN"):
        Settings.from_env({**env, "ADMIN_TEST_EVENT_TOKEN": "short"})


def test_the_service_wires_test_events_only_when_enabled() -> None:
    """build() leaves /test-event off by default and on with the setting and a token."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "DELIVERY_DRY_RUN": "true"}
    off = build(Settings.from_env(env), CollectorRegistry())
    on = build(
        Settings.from_env(
            {**env, "ADMIN_TEST_EVENT_ENABLED": "true", "ADMIN_TEST_EVENT_TOKEN": TOKEN}
        ),
        CollectorRegistry(),
    )

    assert off.admin is not None
    assert on.admin is not None
    assert (off.admin._test_event, on.admin._test_event is not None) == (None, True)


def test_the_test_event_command_posts_to_a_running_instance() -> None:
    """``button-consumer test-event --admin URL`` posts a purchase to the instance's
    /test-event with the bearer token from ADMIN_TEST_EVENT_TOKEN and prints its answer."""
    import argparse
    import contextlib
    import io
    import threading

    from consumer.commands import run_test_event

    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            server = AdminServer(
                "127.0.0.1",
                0,
                CollectorRegistry(),
                Health(),
                DeliveryLog(1),
                test_event=_test_event(MappingConfig(), FakeButton(), dry_run=False),
                test_event_token=TOKEN,
            )
            await server.start()
            box["port"], box["stop"] = server.port, asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            ready.set()
            await box["stop"].wait()
            await server.stop()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10.0), "the admin server did not start within 10 s"
    args = argparse.Namespace(
        order_id="O-CLI",
        total="12.34",
        currency="usd",
        btn_ref="fakesrctok-0123456789abcdef",
        user="u-cli",
        admin=f"http://127.0.0.1:{box['port']}",
        send=False,
    )
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            status = run_test_event(args, environ={"ADMIN_TEST_EVENT_TOKEN": TOKEN})
        wrong = run_test_event(args, environ={"ADMIN_TEST_EVENT_TOKEN": "not-the-token-at-all"})
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10.0)
    answer = json.loads(out.getvalue())

    assert (status, wrong) == (0, 1)
    assert (
        answer["sent"],
        answer["result"]["action"],
        answer["result"]["request"]["body"]["order_id"],
    ) == (
        False,
        "create",
        "O-CLI",
    )


def test_the_test_event_command_needs_the_token_with_admin() -> None:
    """--admin without ADMIN_TEST_EVENT_TOKEN is a configuration error naming the variable."""
    import argparse

    from consumer.commands import run_test_event

    args = argparse.Namespace(
        order_id="O", total="1", currency="USD", btn_ref="", user="u", admin="http://x", send=False
    )
    with pytest.raises(ConfigError, match="ADMIN_TEST_EVENT_TOKEN"):
        run_test_event(args, environ={})
