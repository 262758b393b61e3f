"""The auth gate: open passes at once; closed lets one caller probe per interval, others wait.

The probe is a record-independent request (a fake here, answering scripted outcomes); only an
accepted answer (Button's envelope, e.g. its 404 for an unknown order) opens the gate.

``sleep`` is a fake the test releases by hand, so which caller is probing, and when, is chosen
by the test; ``settle()`` only lets ready tasks run until they block again (no timing involved).
The probe interval is an hour so the waiters' own re-check timeout never fires during a test.
"""

from __future__ import annotations

import asyncio

from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.engine.authgate import AuthGate, reporting_probe
from tests.fakes import RecordingTelemetry

INTERVAL = 3_600.0
ACCEPTED = ButtonOutcome(OutcomeKind.NOT_FOUND, 404, "Order not found", from_button=True)
REFUSED = ButtonOutcome(OutcomeKind.UNAUTHORIZED, 401, "Invalid api_key", from_button=True)
PROXY_403 = ButtonOutcome(OutcomeKind.FORBIDDEN, 403, "HTTP 403")


class FakeProbe:
    """Answers the scripted outcomes in order, then ``ACCEPTED``; counts its calls."""

    def __init__(self, *answers: ButtonOutcome) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> ButtonOutcome:
        self.calls += 1
        return self.answers.pop(0) if self.answers else ACCEPTED


async def settle() -> None:
    """Let every ready task run until it blocks (a fixed number of scheduler turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


class HeldSleep:
    """A ``sleep`` that records its delay and returns only when the test releases it."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._pending: list[asyncio.Future[None]] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        await future

    def release(self) -> None:
        for future in self._pending:
            if not future.done():
                future.set_result(None)
        self._pending.clear()


def probing_gate(sleep: HeldSleep, probe: FakeProbe) -> AuthGate:
    """A gate on a clock that stands still, so each wait is exactly one interval."""
    return AuthGate(INTERVAL, probe, sleep, clock=lambda: 0.0)


def test_a_new_gate_is_open() -> None:
    """A gate starts open: nothing has failed authentication yet."""
    assert not AuthGate(INTERVAL).closed


def test_close_and_open_toggle_the_closed_flag() -> None:
    """close() closes the gate and open() opens it again."""
    gate = AuthGate(INTERVAL)
    gate.close()
    closed = gate.closed
    gate.open()

    assert (closed, gate.closed) == (True, False)


def test_open_gate_admits_at_once_without_sleeping() -> None:
    """While open, admit() returns on its first turn and never calls sleep."""
    sleep = HeldSleep()
    gate = AuthGate(INTERVAL, sleep=sleep)

    async def scenario() -> bool:
        task = asyncio.create_task(gate.admit())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return task.done()

    assert (asyncio.run(scenario()), sleep.delays) == (True, [])


def test_closed_gate_probes_after_the_interval_and_opens_when_accepted() -> None:
    """The first caller at a closed gate waits one probe interval, then sends the probe; its
    accepted answer opens the gate and the caller passes."""
    sleep, probe = HeldSleep(), FakeProbe()
    gate = probing_gate(sleep, probe)
    gate.close()

    async def scenario() -> tuple[bool, bool]:
        caller = asyncio.create_task(gate.admit())
        await settle()
        before = caller.done()
        sleep.release()
        await settle()
        return before, caller.done()

    assert (asyncio.run(scenario()), sleep.delays, probe.calls, gate.closed) == (
        (False, True),
        [INTERVAL],
        1,
        False,
    )


def test_closed_gate_lets_exactly_one_caller_probe() -> None:
    """Of three callers at a closed gate, only the first sleeps towards a probe."""
    sleep, probe = HeldSleep(), FakeProbe()
    gate = probing_gate(sleep, probe)
    gate.close()

    async def scenario() -> None:
        tasks = [asyncio.create_task(gate.admit()) for _ in range(3)]
        await settle()
        sleep.release()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())

    assert (sleep.delays, probe.calls) == ([INTERVAL], 1)


def test_other_callers_wait_until_the_gate_opens() -> None:
    """While one caller probes, the others are held until open(), then pass together."""
    sleep = HeldSleep()
    gate = AuthGate(INTERVAL, sleep=sleep)
    gate.close()

    async def scenario() -> tuple[list[bool], list[bool]]:
        probe = asyncio.create_task(gate.admit())
        await settle()
        waiters = [asyncio.create_task(gate.admit()) for _ in range(2)]
        await settle()
        held = [w.done() for w in waiters]
        gate.open()
        await settle()
        passed = [w.done() for w in waiters]
        sleep.release()
        await probe
        return held, passed

    assert asyncio.run(scenario()) == ([False, False], [True, True])


def test_a_refused_probe_is_followed_by_another_after_a_new_interval() -> None:
    """A refused probe (401, or a proxy's 403 page) keeps the gate closed; the next probe comes
    a full interval later, and only its accepted answer opens the gate."""
    sleep, probe = HeldSleep(), FakeProbe(REFUSED, PROXY_403)
    gate = probing_gate(sleep, probe)
    gate.close()

    async def scenario() -> list[bool]:
        caller = asyncio.create_task(gate.admit())
        states = []
        for _ in range(3):
            await settle()
            states.append(gate.closed)
            sleep.release()
        await caller
        return states

    assert (asyncio.run(scenario()), sleep.delays, probe.calls, gate.closed) == (
        [True, True, True],
        [INTERVAL] * 3,
        3,
        False,
    )


def test_a_cancelled_probe_hands_probing_to_the_next_caller() -> None:
    """Cancelling the prober while it waits frees the probe role for the next caller."""
    sleep, probe = HeldSleep(), FakeProbe()
    gate = probing_gate(sleep, probe)
    gate.close()

    async def scenario() -> bool:
        prober = asyncio.create_task(gate.admit())
        await settle()
        prober.cancel()
        await settle()
        successor = asyncio.create_task(gate.admit())
        await settle()
        sleep.release()
        await settle()
        return successor.done()

    assert (asyncio.run(scenario()), sleep.delays, probe.calls) == (True, [INTERVAL, INTERVAL], 1)


def test_a_reported_probe_counts_as_a_button_request_of_action_probe() -> None:
    """Each probe the gates send is reported as a Button request (action ``probe``, its outcome
    and status): a full outage behind an open breaker is only probes, and they were not counted,
    so the error ratio (ButtonConsumerButtonErrors) stopped at the failures before it opened."""

    telemetry = RecordingTelemetry()
    answers = [
        ButtonOutcome(OutcomeKind.SERVER_ERROR, status=500, elapsed=0.25),
        ButtonOutcome(OutcomeKind.NOT_FOUND, status=404, elapsed=0.5, from_button=True),
    ]

    async def probe() -> ButtonOutcome:
        return answers.pop(0)

    reported = reporting_probe(probe, telemetry)

    async def twice() -> list[ButtonOutcome]:
        return [await reported(), await reported()]

    outcomes = asyncio.run(twice())

    assert [o.status for o in outcomes] == [500, 404]
    assert telemetry.named("button_probe") == [
        ("server_error", 0.25, 500, False),
        ("not_found", 0.5, 404, True),
    ]
