"""The adaptive limiter, token bucket and pause gate, driven by a hand-moved clock."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import math
import random

import pytest

from consumer.domain.outcomes import ButtonOutcome, OutcomeKind
from consumer.engine.concurrency import AdaptiveLimiter, PauseGate, Permit, TokenBucket

OK = ButtonOutcome(OutcomeKind.SUCCESS, 200)
SLOW_DOWN = ButtonOutcome(OutcomeKind.RATE_LIMITED, 429, retry_after=1.0)


class FakeClock:
    """Time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def _window(
    limiter: AdaptiveLimiter, clock: FakeClock, rtt: float, outcome: ButtonOutcome = OK
) -> None:
    """Fill the limit with requests that all take ``rtt`` seconds, release them, then close the
    observation window: a second later one request ends without an outcome (neutral), and a
    request ending after the window's end closes it first. The limit then reflects this
    window."""
    permits = [await limiter.acquire_permit() for _ in range(limiter.limit)]
    clock.advance(rtt)
    for permit in permits:
        permit.observe(outcome)
        permit.release()
    clock.advance(1.0)
    (await limiter.acquire_permit()).release()


def _limiter(clock: FakeClock, **kwargs: float) -> AdaptiveLimiter:
    return AdaptiveLimiter(clock=clock, min_window=0.01, **kwargs)  # type: ignore[arg-type]


def test_slow_start_doubles_the_limit_per_window_up_to_max() -> None:
    """Slow start: a saturated limit with a steady RTT doubles each window, from 4 to 64 in four
    windows (a fraction of a second at Button's RTT), and stops at max_limit."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=4, max_limit=64)

    async def scenario() -> list[int]:
        limits = []
        for _ in range(6):
            await _window(limiter, clock, rtt=0.05)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [8, 16, 32, 64, 64, 64]
    assert limiter.slow_start


def test_first_backpressure_ends_slow_start_then_growth_is_additive() -> None:
    """A 429 ends slow start with a multiplicative cut; from then on +1 per window (AIMD)."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=4, max_limit=100)

    async def scenario() -> list[int]:
        limits = []
        for outcome in (OK, OK, SLOW_DOWN, OK, OK, OK):
            await _window(limiter, clock, rtt=0.1, outcome=outcome)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [8, 16, 14, 15, 16, 17]
    assert not limiter.slow_start


def test_first_latency_rise_ends_slow_start_then_growth_is_additive() -> None:
    """An RTT that rises well above the baseline for two windows in a row ends slow start like
    a 429 does (the first of them holds the limit)."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=4, max_limit=100)

    async def scenario() -> list[int]:
        limits = []
        for rtt in (0.1, 0.1, 0.1, 0.5, 0.5, 0.1, 0.1):
            await _window(limiter, clock, rtt=rtt)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [8, 16, 32, 32, 28, 29, 30]
    assert not limiter.slow_start


def test_limit_grows_by_one_per_window_while_rtt_is_flat() -> None:
    """Additive increase: without slow start, a saturated limit with a steady RTT goes up one
    per window."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=2, max_limit=10, slow_start_factor=1.0)

    async def scenario() -> list[int]:
        limits = []
        for _ in range(5):
            await _window(limiter, clock, rtt=0.1)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [3, 4, 5, 6, 7]


def test_limit_never_exceeds_max() -> None:
    """The limit stays at max_limit however long things go well."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=1, max_limit=3)

    async def scenario() -> None:
        for _ in range(10):
            await _window(limiter, clock, rtt=0.1)

    asyncio.run(scenario())
    assert limiter.limit == 3


def test_backpressure_cuts_the_limit_multiplicatively() -> None:
    """A 429 in the window multiplies the limit by 0.9 (at least one less), bounded by min;
    429s of requests sent before a cut do not cut again (one cut per congestion episode)."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=2, max_limit=100, initial_limit=50)

    async def scenario() -> list[int]:
        limits = []
        for _ in range(3):
            await _window(limiter, clock, rtt=0.1, outcome=SLOW_DOWN)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [45, 40, 36]


def test_backpressure_stops_at_min_limit() -> None:
    """Decreases never go below min_limit."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=3, max_limit=10, initial_limit=4)

    async def scenario() -> None:
        for _ in range(5):
            await _window(limiter, clock, rtt=0.1, outcome=SLOW_DOWN)

    asyncio.run(scenario())
    assert limiter.limit == 3


def _aimd_limiter(clock: FakeClock) -> AdaptiveLimiter:
    """Additive increase from 20 (no slow start), between 1 and 100."""
    return _limiter(clock, min_limit=1, max_limit=100, initial_limit=20, slow_start_factor=1)


async def _steady(limiter: AdaptiveLimiter, clock: FakeClock) -> None:
    """Six windows at a steady 0.1 s RTT: an AIMD limit from 20 ends at 26, baseline 0.1 s."""
    for _ in range(6):
        await _window(limiter, clock, rtt=0.1)


def test_rising_rtt_cuts_the_limit() -> None:
    """When the window's RTT jumps well above the baseline, the limit goes down."""
    clock = FakeClock()
    limiter = _aimd_limiter(clock)

    async def scenario() -> list[int]:
        await _steady(limiter, clock)
        limits = [limiter.limit]
        for _ in range(2):
            await _window(limiter, clock, rtt=0.5)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [26, 26, 23]


def test_a_lone_slow_window_neither_cuts_nor_moves_the_baseline() -> None:
    """One window of slow answers between normal ones is a pause (a garbage collection, a
    descheduled process), not a queue: the limit holds for that window and then grows again,
    and the baseline RTT does not move."""
    clock = FakeClock()
    limiter = _aimd_limiter(clock)

    async def scenario() -> tuple[list[int], list[float | None]]:
        await _steady(limiter, clock)
        limits, baselines = [limiter.limit], [limiter.smoothed_rtt]
        for rtt in (0.5, 0.1, 0.5, 0.1):
            await _window(limiter, clock, rtt=rtt)
            limits.append(limiter.limit)
            baselines.append(limiter.smoothed_rtt)
        return limits, baselines

    limits, baselines = asyncio.run(scenario())
    assert limits == [26, 26, 27, 27, 28]
    assert baselines == pytest.approx([0.1] * 5)


async def _window_without_samples(limiter: AdaptiveLimiter, clock: FakeClock) -> None:
    """Fill the limit with requests that end without an outcome (records that sent nothing)."""
    permits = [await limiter.acquire_permit() for _ in range(limiter.limit)]
    clock.advance(1.0)
    for permit in permits:
        permit.release()


def test_a_held_slow_window_goes_stale_after_windows_without_samples() -> None:
    """A slow window, then a stretch of windows with no RTT sample, then another slow window:
    not two in a row, so no cut."""
    clock = FakeClock()
    limiter = _aimd_limiter(clock)

    async def scenario() -> list[int]:
        await _steady(limiter, clock)
        limits = [limiter.limit]
        await _window(limiter, clock, rtt=0.5)
        limits.append(limiter.limit)
        for _ in range(3):
            await _window_without_samples(limiter, clock)
        await _window(limiter, clock, rtt=0.5)
        limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [26, 26, 26]


def test_backpressure_after_a_held_window_cuts_once_and_clears_it() -> None:
    """A 429 in the window after a held slow one cuts (once) and ends the hold: the next slow
    window is a first one again, not the second of a pair."""
    clock = FakeClock()
    limiter = _aimd_limiter(clock)

    async def scenario() -> list[int]:
        await _steady(limiter, clock)
        limits = [limiter.limit]
        for rtt, outcome in ((0.5, OK), (0.1, SLOW_DOWN), (0.5, OK)):
            await _window(limiter, clock, rtt=rtt, outcome=outcome)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [26, 26, 23, 23]


def test_a_lasting_rise_moves_the_baseline_by_both_slow_windows() -> None:
    """The cut for two slow windows folds both into the baseline (EWMA, alpha 0.4):
    0.1 -> 0.26 -> 0.356 seconds."""
    clock = FakeClock()
    limiter = _aimd_limiter(clock)

    async def scenario() -> float | None:
        await _steady(limiter, clock)
        for _ in range(2):
            await _window(limiter, clock, rtt=0.5)
        return limiter.smoothed_rtt

    assert asyncio.run(scenario()) == pytest.approx(0.356)


def test_heavy_tailed_rtts_with_pauses_keep_the_limit_near_its_maximum() -> None:
    """A service whose latency does not grow with the load keeps its limit: RTTs log-normal
    (median 20 ms, p99 120 ms, as the bench's sandbox), and every 0.25 s a 50 ms pause holds
    back every answer due in it, as pauses at either end do. Before lone slow windows were
    held back, the limit averaged 50 of 64 here, cut 49 times in the 20 s."""
    limit, cuts = _simulate(seconds=20.0, pause_every=0.25, pause=0.05, seed=7)
    assert limit >= 62.0
    assert cuts <= 0.7 * 20


def _simulate(*, seconds: float, pause_every: float, pause: float, seed: int) -> tuple[float, int]:
    """A closed loop at the limit (callers always waiting) on a hand-moved clock.

    Returns:
        the time-weighted mean limit, and the number of cuts.
    """
    rng = random.Random(seed)
    sigma = math.log(6) / 2.326  # p99 / median = 6 for a log-normal distribution
    clock = FakeClock()
    start = clock.now
    limiter = AdaptiveLimiter(clock=clock, max_limit=64)
    pauses = [start + pause_every * i for i in range(1, int(seconds / pause_every) + 2)]

    def answered(due: float) -> float:
        index = bisect.bisect_right(pauses, due) - 1
        if index >= 0 and due < pauses[index] + pause:
            return pauses[index] + pause
        return due

    async def scenario() -> tuple[float, int]:
        pending: list[tuple[float, int, Permit]] = []
        weighted, cuts, last, order = 0.0, 0, limiter.limit, 0
        while clock.now - start < seconds:
            while limiter.in_flight < limiter.limit:
                permit = await limiter.acquire_permit()
                rtt = 0.020 * math.exp(sigma * rng.gauss(0.0, 1.0))
                order += 1
                heapq.heappush(pending, (answered(clock.now + rtt), order, permit))
            due, _, permit = heapq.heappop(pending)
            weighted += (due - clock.now) * limiter.limit
            clock.now = due
            permit.observe(OK)
            permit.release()
            cuts += limiter.limit < last
            last = limiter.limit
        return weighted / (clock.now - start), cuts

    return asyncio.run(scenario())


def test_unused_limit_is_not_raised() -> None:
    """If requests never reach the limit, there is no evidence more would help."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=2, max_limit=10, initial_limit=5)

    async def scenario() -> None:
        for _ in range(4):
            permit = await limiter.acquire_permit()
            clock.advance(0.1)
            permit.observe(OK)
            permit.release()

    asyncio.run(scenario())
    assert limiter.limit == 5


def test_waiters_are_served_in_order_when_a_permit_frees() -> None:
    """Beyond the limit, acquire waits; released permits go to waiters first come first served."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=1, max_limit=1)

    async def scenario() -> list[str]:
        served: list[str] = []
        first = await limiter.acquire_permit()

        async def wait(name: str) -> None:
            async with limiter.permit():
                served.append(name)

        tasks = [asyncio.create_task(wait(name)) for name in ("a", "b")]
        await asyncio.sleep(0)  # let both queue up
        assert (limiter.in_flight, limiter.waiting) == (1, 2)
        first.release()
        await asyncio.gather(*tasks)
        return served

    assert asyncio.run(scenario()) == ["a", "b"]
    assert limiter.in_flight == 0


def test_cancelled_waiter_leaks_no_permit() -> None:
    """A caller cancelled while waiting leaves the count exactly as before."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=1, max_limit=1)

    async def scenario() -> None:
        held = await limiter.acquire_permit()
        task = asyncio.create_task(limiter.acquire_permit())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert limiter.waiting == 0
        held.release()
        again = await limiter.acquire_permit()
        again.release()

    asyncio.run(scenario())
    assert limiter.in_flight == 0


def test_a_waiter_cancelled_just_before_a_permit_frees_is_skipped_cleanly() -> None:
    """A revoke cancels a waiting caller, and a permit frees before the caller's task runs
    again: the freed permit goes to the next waiter, and the cancelled caller leaves with its
    cancellation (not a ValueError from a waiter already taken off the queue)."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=1, max_limit=1)

    async def scenario() -> bool:
        held = await limiter.acquire_permit()
        first = asyncio.create_task(limiter.acquire_permit())
        second = asyncio.create_task(limiter.acquire_permit())
        await asyncio.sleep(0)
        first.cancel()  # its waiter is cancelled; the task has not run its except clause yet
        held.release()  # _wake skips the cancelled waiter and grants the second one
        with pytest.raises(asyncio.CancelledError):
            await first
        (await second).release()
        return limiter.waiting == 0

    assert asyncio.run(scenario())
    assert limiter.in_flight == 0


def test_unobserved_release_is_neutral() -> None:
    """A permit released after an error (no outcome) neither raises nor lowers the limit."""
    clock = FakeClock()
    limiter = _limiter(clock, min_limit=2, max_limit=10, initial_limit=4)

    async def scenario() -> None:
        for _ in range(3):
            permits = [await limiter.acquire_permit() for _ in range(4)]
            clock.advance(0.1)
            for permit in permits:
                permit.release()

    asyncio.run(scenario())
    assert limiter.limit == 4


def _queueing_limiter(clock: FakeClock, told: list[int], **kwargs: float) -> AdaptiveLimiter:
    """A limiter for a transport that caps its requests: a quarter of the limit ready beyond."""
    return _limiter(clock, queue_ratio=0.25, on_limit=told.append, **kwargs)  # type: ignore[arg-type]


def test_requests_ready_beyond_the_limit_take_permits_up_to_the_capacity() -> None:
    """At a limit of 8 with a quarter ready beyond it, 10 permits are granted at once (the
    transport sends 8 and holds 2); the 11th caller waits for a release."""
    clock, told = FakeClock(), list[int]()
    limiter = _queueing_limiter(clock, told, min_limit=8, max_limit=8)

    async def scenario() -> tuple[int, int, int]:
        held = [await limiter.acquire_permit() for _ in range(10)]
        waiting = asyncio.create_task(limiter.acquire_permit())
        await asyncio.sleep(0)
        queued = limiter.waiting
        held.pop().release()
        (await waiting).release()
        for permit in held:
            permit.release()
        return limiter.capacity, queued, limiter.in_flight

    assert asyncio.run(scenario()) == (10, 1, 0)
    assert told == [8]


def test_the_transport_is_told_every_new_limit_and_only_then() -> None:
    """Slow start from 4 to 64, a back-pressure cut, additive growth: each new limit reaches
    the transport once; windows that keep the limit tell it nothing. The capacity follows."""
    clock, told = FakeClock(), list[int]()
    limiter = _queueing_limiter(clock, told, min_limit=4, max_limit=64)

    async def scenario() -> list[int]:
        capacities = []
        for outcome in (OK, OK, OK, OK, OK, SLOW_DOWN, OK):
            await _window(limiter, clock, rtt=0.05, outcome=outcome)
            capacities.append(limiter.capacity)
        return capacities

    assert asyncio.run(scenario()) == [10, 20, 40, 80, 80, 72, 73]
    assert told == [4, 8, 16, 32, 64, 57, 58]


def test_a_wait_for_a_transport_slot_is_not_read_as_a_slower_button() -> None:
    """Requests that took 0.5 s, 0.4 s of it waiting for a slot at the transport
    (``ButtonOutcome.queued``), answered in Button's usual 0.1 s: no rise, the limit grows.
    The same 0.5 s without the wait is a rise and cuts (``test_rising_rtt_cuts_the_limit``)."""
    clock, told = FakeClock(), list[int]()
    limiter = _queueing_limiter(
        clock, told, min_limit=1, max_limit=100, initial_limit=20, slow_start_factor=1
    )
    waited = ButtonOutcome(OutcomeKind.SUCCESS, 200, queued=0.4)

    async def scenario() -> list[int]:
        await _steady(limiter, clock)
        limits = [limiter.limit]
        for _ in range(2):
            await _window(limiter, clock, rtt=0.5, outcome=waited)
            limits.append(limiter.limit)
        return limits

    assert asyncio.run(scenario()) == [26, 27, 28]
    assert limiter.smoothed_rtt == pytest.approx(0.1)


def test_with_requests_ready_the_limit_is_reached_at_the_limit_not_the_capacity() -> None:
    """Growth needs every slot at the transport busy: permits up to the limit, not beyond it.
    Below the limit (7 of 8) the limit stays; at it (8, none ready) it grows."""
    clock, told = FakeClock(), list[int]()
    limiter = _queueing_limiter(
        clock, told, min_limit=1, max_limit=100, initial_limit=8, slow_start_factor=1
    )

    async def held_window(count: int) -> int:
        permits = [await limiter.acquire_permit() for _ in range(count)]
        clock.advance(0.1)
        for permit in permits:
            permit.observe(OK)
            permit.release()
        clock.advance(1.0)
        (await limiter.acquire_permit()).release()  # closes the window
        return limiter.limit

    async def scenario() -> list[int]:
        return [await held_window(7), await held_window(7), await held_window(8)]

    assert asyncio.run(scenario()) == [8, 8, 9]


def test_limiter_rejects_a_queue_it_cannot_bound() -> None:
    """Requests ready beyond the limit need a transport that caps its own (``on_limit``)."""
    with pytest.raises(ValueError, match="queue_ratio needs on_limit"):
        AdaptiveLimiter(clock=FakeClock(), queue_ratio=0.25)
    with pytest.raises(ValueError, match="queue_ratio must be"):
        AdaptiveLimiter(clock=FakeClock(), queue_ratio=-1, on_limit=print)


def test_limiter_rejects_bad_bounds() -> None:
    """min_limit above max_limit, or a slow start that shrinks, is a configuration error."""
    with pytest.raises(ValueError, match="min_limit"):
        AdaptiveLimiter(clock=FakeClock(), min_limit=5, max_limit=2)
    with pytest.raises(ValueError, match="slow_start_factor"):
        AdaptiveLimiter(clock=FakeClock(), slow_start_factor=0.5)


def test_token_bucket_spends_burst_then_spaces_requests() -> None:
    """With rate 2/s and burst 2, two requests go now, the next wait 0.5 s, 1.0 s."""
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=2.0, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]


def test_token_bucket_refills_with_time_up_to_burst() -> None:
    """Idle time refills tokens, but never beyond the burst."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=3.0, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.advance(100.0)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_token_bucket_take_sleeps_the_reserved_time() -> None:
    """take() sleeps through the injected sleep exactly as long as the reservation says."""
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=1.0, clock=clock)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> None:
        await bucket.take(fake_sleep)
        await bucket.take(fake_sleep)

    asyncio.run(scenario())
    assert slept == [0.25]


def test_pause_gate_holds_waiters_until_opened() -> None:
    """A closed gate holds lanes; opening releases all of them; close/open report changes."""

    async def scenario() -> list[str]:
        gate = PauseGate()
        assert gate.close("http_401") is True
        assert gate.close("http_401") is False
        passed: list[str] = []

        async def lane(name: str) -> None:
            await gate.wait_open()
            passed.append(name)

        tasks = [asyncio.create_task(lane(name)) for name in ("x", "y")]
        await asyncio.sleep(0)
        assert (passed, gate.reason) == ([], "http_401")
        assert gate.open() is True
        await asyncio.gather(*tasks)
        assert gate.is_open
        return passed

    assert asyncio.run(scenario()) == ["x", "y"]


def test_a_gate_tells_its_watchers_each_time_it_closes_or_opens() -> None:
    """Watchers hear of changes only: a second close, or an open gate opened, says nothing."""
    gate = PauseGate()
    heard: list[bool] = []
    gate.watch(lambda: heard.append(gate.is_open))
    gate.close("http_429")
    gate.close("http_503")
    gate.open()
    gate.open()
    assert heard == [False, True]
