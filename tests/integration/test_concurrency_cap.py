"""Button sees at most the concurrency limit, though more requests are ready to go.

The service grants a quarter of the limit more permits than the limit when its HTTP transport
caps its own requests (``consumer.bootstrap.concurrency_limiter``): those requests are prepared
and wait in the transport for a slot. What counts is what reaches Button: the sandbox counts
the requests it serves at once, independently of the client.
"""

from __future__ import annotations

import asyncio
from typing import Any

from consumer.adapters.button_client import ButtonClient
from consumer.bootstrap import concurrency_limiter, hold_while_closed
from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.engine.concurrency import PauseGate
from consumer.sandbox.testing import SandboxHandle, run_sandbox
from consumer.settings import Settings
from tests.integration.test_sandbox import order


def _settings(sandbox: SandboxHandle) -> Settings:
    return Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # not used: no Kafka here
            "BUTTON_API_KEY": sandbox.api_key,
            "BUTTON_BASE_URL": sandbox.base_url,
            "DELIVERY_CONCURRENCY_MIN": "4",
            "DELIVERY_CONCURRENCY_MAX": "4",
        }
    )


async def _until_parked(sandbox: SandboxHandle, count: int) -> None:
    """Wait (at most 30 s, off the event loop) until the holding sandbox parks ``count``."""
    await asyncio.to_thread(
        sandbox.wait_for,
        lambda: sandbox.hold_state()["parked"] == count,
        30,
        message=f"{count} requests were not parked",
    )


def test_button_sees_at_most_the_limit_while_requests_wait_ready_beyond_it() -> None:
    """At a limit of 4, five permits are taken at once while the sandbox holds every answer:
    four requests reach it and the fifth waits in the transport. Once answers flow, all twelve
    orders arrive, and the sandbox never served more than four at a time."""
    with run_sandbox() as sandbox:
        settings = _settings(sandbox)

        async def main() -> tuple[int, list[ButtonOutcome]]:
            async with ButtonClient.from_settings(settings.button) as button:
                limiter = concurrency_limiter(settings.delivery, button)

                async def deliver(n: int) -> ButtonOutcome:
                    async with limiter.permit() as permit:
                        outcome = await button.create(order(f"ORD-{n}"))
                        permit.observe(outcome)
                        return outcome

                with sandbox.holding(hold_all=True):
                    sends = [asyncio.create_task(deliver(n)) for n in range(12)]
                    await _until_parked(sandbox, 4)
                    taken = limiter.in_flight
                outcomes = await asyncio.wait_for(asyncio.gather(*sends), 30)
                return taken, outcomes

        taken, outcomes = asyncio.run(main())
        stats = sandbox.stats()
    assert taken == 5
    assert all(outcome.ok for outcome in outcomes)
    assert stats["by_route"] == {"POST /v1/order": {"200": 12}}
    assert stats["max_in_flight"] == 4


def test_after_a_429_the_requests_waiting_in_the_transport_stay_until_the_gate_opens() -> None:
    """The sandbox answers every request 429 with a Retry-After of 30 s. At a limit of 4, five
    permits are taken: four creates reach it (its answers are held until they all have, so no
    429 can close the breaker before the fourth is sent, however slow the machine), and each
    caller closes the circuit breaker on its 429 (as the pipeline's policy does). The fifth
    create, waiting in the transport, is not sent, not even in a slot a 429 freed before its
    caller had read it; a probe, sent with priority, still goes. Once the breaker opens, the
    fifth goes too."""
    faults = {"error_rates": {"429": 1.0}, "retry_after": {"seconds": 30}}
    with run_sandbox(faults=faults) as sandbox:
        settings = _settings(sandbox)

        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            async with ButtonClient.from_settings(settings.button) as button:
                limiter = concurrency_limiter(settings.delivery, button)
                breaker = PauseGate()
                hold_while_closed(button, breaker)

                async def deliver(n: int) -> ButtonOutcome:
                    async with limiter.permit() as permit:
                        outcome = await button.create(order(f"ORD-{n}"))
                        permit.observe(outcome)
                        if outcome.kind is OutcomeKind.RATE_LIMITED:
                            breaker.close("http_429")  # the policy's BREAK, in the same step
                        return outcome

                with sandbox.holding(hold_all=True):
                    sends = [asyncio.create_task(deliver(n)) for n in range(5)]
                    await _until_parked(sandbox, 4)
                deadline = asyncio.get_running_loop().time() + 30
                while sum(send.done() for send in sends) < 4:
                    left = deadline - asyncio.get_running_loop().time()
                    assert left > 0, "the four 429s did not come back within 30 s"
                    pending = [send for send in sends if not send.done()]
                    await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                probe = await button.get("probe")
                assert probe.kind is OutcomeKind.RATE_LIMITED
                held = sandbox.stats()["by_route"]
                breaker.open()
                await asyncio.wait_for(asyncio.gather(*sends), 30)
                return held, sandbox.stats()["by_route"]

        held, after = asyncio.run(main())
    assert held == {
        "POST /v1/order": {"429": 4},
        "GET /v1/order/{order_id}": {"429": 1},
    }
    assert after["POST /v1/order"] == {"429": 5}
