"""Button sees at most the concurrency limit, though more requests are ready to go.

The service grants a quarter of the limit more permits than the limit when its HTTP transport
caps its own requests (``consumer.bootstrap.concurrency_limiter``): those requests are prepared
and wait in the transport for a slot. What counts is what reaches Button: the sandbox counts
the requests it serves at once, independently of the client.
"""

from __future__ import annotations

import asyncio

from consumer.adapters.button_client import ButtonClient
from consumer.bootstrap import concurrency_limiter
from consumer.domain.outcomes import ButtonOutcome
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
                    await asyncio.to_thread(
                        sandbox.wait_for,
                        lambda: sandbox.hold_state()["parked"] == 4,
                        30,
                        message="four requests were not parked",
                    )
                    taken = limiter.in_flight
                outcomes = await asyncio.wait_for(asyncio.gather(*sends), 30)
                return taken, outcomes

        taken, outcomes = asyncio.run(main())
        stats = sandbox.stats()
    assert taken == 5
    assert all(outcome.ok for outcome in outcomes)
    assert stats["by_route"] == {"POST /v1/order": {"200": 12}}
    assert stats["max_in_flight"] == 4
