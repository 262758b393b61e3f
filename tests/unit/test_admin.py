"""The admin HTTP server on loopback: probes, metrics, the live delivery log and its bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from consumer.adapters.admin import AdminServer, DeliveryLog, Health
from consumer.adapters.metrics import Metrics
from consumer.ports import Delivery

STALL = 120.0
LAST_POLL = 1_000.0


class Response:
    def __init__(self, status: int, content_type: str, text: str) -> None:
        self.status = status
        self.content_type = content_type
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)


def fetch(
    path: str,
    *,
    health: Health | None = None,
    deliveries: DeliveryLog | None = None,
    registry: CollectorRegistry | None = None,
    now: float = LAST_POLL,
) -> Response:
    """Start a server on an ephemeral loopback port, GET ``path``, stop the server."""

    async def scenario() -> Response:
        server = AdminServer(
            "127.0.0.1",
            0,
            registry if registry is not None else CollectorRegistry(),
            health if health is not None else Health(),
            deliveries if deliveries is not None else DeliveryLog(10),
            clock=lambda: now,
        )
        await server.start()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{server.port}{path}") as response,
            ):
                return Response(
                    response.status, response.headers["Content-Type"], await response.text()
                )
        finally:
            await server.stop()

    return asyncio.run(scenario())


def running(**fields: Any) -> Health:
    fields = {"assigned": True, **fields}
    return Health(started=True, last_poll=LAST_POLL, poll_stall_seconds=STALL, **fields)


def delivery(offset: int) -> Delivery:
    return Delivery(
        at=1_700_000_000.0 + offset,
        partition=0,
        offset=offset,
        event_id=f"evt-{offset}",
        action="create",
        order_id=f"ORD-{offset}",
        outcome="delivered",
        status=200,
        attempts=1,
        reason="ok",
    )


def log_of(*offsets: int, size: int = 10) -> DeliveryLog:
    log = DeliveryLog(size)
    for offset in offsets:
        log.add(delivery(offset))
    return log


# --- the server --------------------------------------------------------------------------------


def test_start_on_port_zero_reports_the_bound_port() -> None:
    """Port 0 asks the OS for a free port; the server exposes the one it got."""

    async def scenario() -> int:
        server = AdminServer("127.0.0.1", 0, CollectorRegistry(), Health(), DeliveryLog(1))
        await server.start()
        try:
            return server.port
        finally:
            await server.stop()

    assert asyncio.run(scenario()) > 0


def test_healthz_is_live_before_the_consumer_starts() -> None:
    """Restoring state before the first poll must not get the pod killed."""
    response = fetch("/healthz", health=Health(), now=LAST_POLL + 10 * STALL)

    assert (response.status, response.json()) == (200, {"live": True})


def test_healthz_is_live_while_the_poll_loop_progresses() -> None:
    """A poll within the stall window: live."""
    response = fetch("/healthz", health=running(), now=LAST_POLL + STALL - 0.1)

    assert (response.status, response.json()) == (200, {"live": True})


def test_healthz_fails_when_the_poll_loop_stalls() -> None:
    """No poll for the stall window: 503, so Kubernetes restarts the wedged pod."""
    response = fetch("/healthz", health=running(), now=LAST_POLL + STALL)

    assert (response.status, response.json()) == (503, {"live": False})


def test_readyz_is_not_ready_until_started() -> None:
    """Before the consumer runs, /readyz answers 503."""
    response = fetch("/readyz", health=Health())

    assert (response.status, response.json()) == (
        503,
        {
            "ready": False,
            "auth_paused": False,
            "assigned": False,
            "broker_reachable": True,
            "restoring": 0,
        },
    )


def test_readyz_is_ready_once_started() -> None:
    """A started consumer, not stopping and not paused, is ready."""
    response = fetch("/readyz", health=running())

    assert (response.status, response.json()) == (
        200,
        {
            "ready": True,
            "auth_paused": False,
            "assigned": True,
            "broker_reachable": True,
            "restoring": 0,
        },
    )


def test_readyz_is_not_ready_while_button_rejects_the_key() -> None:
    """While auth is paused, /readyz answers 503 and says why."""
    response = fetch("/readyz", health=running(auth_paused=True))

    assert (response.status, response.json()) == (
        503,
        {
            "ready": False,
            "auth_paused": True,
            "assigned": True,
            "broker_reachable": True,
            "restoring": 0,
        },
    )


def test_readyz_is_not_ready_while_stopping() -> None:
    """A consumer shutting down takes itself out of service."""
    response = fetch("/readyz", health=running(stopping=True))

    assert (response.status, response.json()["ready"]) == (503, False)


def test_readyz_is_not_ready_before_the_group_assigns_partitions() -> None:
    """Started but not yet part of the group's assignment: not ready."""
    response = fetch("/readyz", health=running(assigned=False))

    assert (response.status, response.json()["ready"]) == (503, False)


def test_readyz_is_not_ready_while_partitions_are_being_restored() -> None:
    """Partitions whose profiles are still read from the changelog: their records wait, so the
    pod is not ready yet (a rolling update waits for it before replacing the next pod), and the
    body says how many."""
    response = fetch("/readyz", health=running(restoring=2))

    assert (response.status, response.json()["ready"], response.json()["restoring"]) == (
        503,
        False,
        2,
    )


def test_readyz_is_not_ready_while_the_broker_does_not_answer() -> None:
    """The last question to the broker went unanswered: not ready, and the body says so."""
    response = fetch("/readyz", health=running(broker_reachable=False))

    assert (response.status, response.json()["broker_reachable"]) == (503, False)


def test_metrics_are_served_in_prometheus_text_format() -> None:
    """/metrics uses Prometheus' content type and exposes the service's metrics."""
    registry = CollectorRegistry()
    Metrics.create(registry).records_finished.labels("delivered").inc()

    response = fetch("/metrics", registry=registry)

    assert (response.status, response.content_type) == (200, CONTENT_TYPE_LATEST)
    assert 'button_consumer_records_finished_total{outcome="delivered"} 1.0' in response.text


def test_deliveries_are_listed_newest_first_up_to_the_limit() -> None:
    """/deliveries?limit=2 returns the two most recent deliveries, newest first."""
    response = fetch("/deliveries?limit=2", deliveries=log_of(1, 2, 3))

    offsets = [d["offset"] for d in response.json()["deliveries"]]
    assert (response.status, offsets) == (200, [3, 2])


def test_deliveries_show_every_field_of_a_delivery() -> None:
    """Each entry has the redacted fields of the live log, and nothing else."""
    response = fetch("/deliveries", deliveries=log_of(7))

    expected = {
        "at": 1_700_000_007.0,
        "partition": 0,
        "offset": 7,
        "event_id": "evt-7",
        "action": "create",
        "order_id": "ORD-7",
        "outcome": "delivered",
        "status": 200,
        "attempts": 1,
        "reason": "ok",
        "event_type": "",
    }
    assert [expected] == response.json()["deliveries"]


def test_deliveries_limit_defaults_to_fifty() -> None:
    """Without ?limit, at most 50 deliveries are returned."""
    response = fetch("/deliveries", deliveries=log_of(*range(60), size=100))

    offsets = [d["offset"] for d in response.json()["deliveries"]]
    assert list(range(59, 9, -1)) == offsets


def test_deliveries_limit_zero_returns_none() -> None:
    """?limit=0 asks for no deliveries and gets none (it used to be clamped to 1)."""
    response = fetch("/deliveries?limit=0", deliveries=log_of(1, 2))

    assert (response.status, response.json()) == (200, {"deliveries": []})


def test_deliveries_limit_at_the_maximum_returns_every_kept_delivery() -> None:
    """?limit=1000 (the largest) is taken as it is: every delivery the log keeps."""
    response = fetch("/deliveries?limit=1000", deliveries=log_of(1, 2))

    assert [d["offset"] for d in response.json()["deliveries"]] == [2, 1]


@pytest.mark.parametrize(
    "query",
    [
        "limit=ten",
        "limit=-1",
        "limit=1001",
        "limit=99999999999999999999",
        "limit=",
        "limit=1.5",
        "limit=1_0",
        "limit=%2B5",
        "limit=%D9%A1",  # an Arabic-Indic one, which int() reads as 1
        "limit=1&limit=2",
    ],
)
def test_deliveries_bad_limit_is_a_bad_request_naming_the_parameter(query: str) -> None:
    """A limit that is not a whole number from 0 to 1000 in ASCII digits, or given twice,
    answers 400 with a message naming the parameter and its range, never a clamped list."""
    response = fetch(f"/deliveries?{query}", deliveries=log_of(1))

    assert (response.status, response.json()) == (
        400,
        {"error": "limit must be a whole number from 0 to 1000 (default 50), given once"},
    )


def test_unknown_path_is_not_found() -> None:
    """Only the four admin endpoints exist."""
    assert fetch("/admin").status == 404


# --- DeliveryLog -------------------------------------------------------------------------------


def test_delivery_log_keeps_only_the_newest_entries() -> None:
    """A log of size 3 forgets the oldest entries beyond three."""
    log = log_of(1, 2, 3, 4, 5, size=3)

    assert [d["offset"] for d in log.recent(10)] == [5, 4, 3]


def test_delivery_log_of_size_zero_keeps_nothing() -> None:
    """ADMIN_RECENT_DELIVERIES=0 disables the live log."""
    log = log_of(1, 2, size=0)

    assert log.recent(10) == []


@pytest.mark.parametrize("limit", [0, -1])
def test_delivery_log_recent_of_no_entries_is_empty(limit: int) -> None:
    """Asking for zero (or fewer) entries returns none, not the whole log."""
    assert log_of(1, 2, 3).recent(limit) == []
