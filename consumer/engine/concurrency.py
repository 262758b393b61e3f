"""How many requests Button gets at once, and how fast: adaptive, not a fixed guess.

Button documents no rate limit for the Order API, so a static concurrency is either too timid or
too much. ``AdaptiveLimiter`` is a TCP-style controller in the spirit of Vector's Adaptive
Request Concurrency: it measures round-trip times and watches for back-pressure, and once per
observation window (about one smoothed RTT long) it

- cuts the limit multiplicatively (``limit * decrease_ratio``, default 0.9, at least -1) when any
  request in the window was back-pressured (429, 5xx, timeout, connection error, unreadable body)
  or the mean RTT of two windows in a row rose above the baseline (smoothed RTT +
  ``rtt_deviation_scale`` x its mean deviation, and at least ``min_rtt_rise`` x baseline above
  it). A lone slow window neither cuts nor moves the baseline (nor raises the limit): it is more
  often a pause at either end than a queue, and in the bench such pauses cut the limit about
  twice a second, costing about 4 % of the orders per second. Slow windows that never come two
  in a row (slow, normal, slow...) are treated the same way: periodic pauses, not a queue, which
  would slow every window. One window without RTT samples may separate the two slow ones; more
  make the first one stale;
- otherwise raises it when the limit was actually reached in the window (a limit nobody uses is
  not raised): in *slow start*, from the first window until the first sign of congestion (a
  cut), it doubles (``slow_start_factor``), so from 4 it reaches 64 in four windows, a fraction
  of a second; after the first cut it adds one (AIMD), for good.

The baseline is an EWMA (``ewma_alpha`` 0.4) of window mean RTTs, like TCP's smoothed RTT. The
limit stays within ``[min_limit, max_limit]``. 0.9 rather than TCP's 0.5: a consumer backlog
makes bursts of 429 common and halving would oscillate; Vector chose 0.9 for the same reason.

**Requests ready beyond the limit.** With a transport that caps its own requests in flight
(``on_limit`` tells it the limit at every change: ``Transport.set_concurrency``), the limiter
grants ``queue_ratio`` x the limit more permits (rounded up). Their requests are prepared and
wait in the transport, which starts the next one on its own thread the moment one ends, so a
slot at Button does not wait for the event loop to prepare, send or settle anything (about 3 ms
of a 35 ms round trip in the bench). Side by side in the bench, the last order reached Button
2-3 % sooner, with 4 % less CPU per order. Button still sees at most ``limit`` requests at once;
the limit counts as reached when that many permits are held, and a request's RTT leaves out the
time it waited for a slot (``ButtonOutcome.queued``), so a queue in the transport never reads
as a slower Button.

``TokenBucket`` adds an optional requests-per-second ceiling (one bucket per API key), and
``PauseGate`` is the open/closed gate behind the auth pause (``engine.authgate``, DESIGN, 4).

Everything takes an injected monotonic clock; tests drive time by hand. All methods must be
called from the one event-loop thread that owns the object.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from consumer.domain.outcomes import ButtonOutcome, OutcomeKind

Clock = Callable[[], float]
"""A monotonic clock in seconds (``time.monotonic`` in production, a fake in tests)."""

BACKPRESSURE = frozenset(
    {
        OutcomeKind.RATE_LIMITED,
        OutcomeKind.SERVER_ERROR,
        OutcomeKind.TIMEOUT,
        OutcomeKind.CONNECTION_ERROR,
        OutcomeKind.UNREADABLE,
    }
)
"""Outcomes that mean "Button (or the path to it) is overloaded": the limit goes down."""

QUEUE_RATIO = 0.25
"""The service's ``queue_ratio``: a quarter of the limit ready beyond it (16 at 64). In the
bench, 16, 32 and 64 ready beyond a limit of 64 forwarded the same."""


class Permit:
    """The right to have one request in flight. Report how it went, then release it.

    ``observe(outcome)`` feeds the limiter (an RTT sample or a back-pressure signal); a permit
    released without an observation (error, cancellation) is neutral.
    """

    __slots__ = ("_limiter", "_queued", "_released", "_signal", "_started")

    def __init__(self, limiter: AdaptiveLimiter, started: float) -> None:
        self._limiter = limiter
        self._started = started
        self._queued = 0.0
        self._signal: bool | None = None  # None: nothing observed; True: back-pressure
        self._released = False

    def observe(self, outcome: ButtonOutcome) -> None:
        """Record the attempt's outcome: back-pressure kinds lower the limit, others time RTT
        (from the permit's clock, less the seconds the request waited for a transport slot)."""
        self._signal = outcome.kind in BACKPRESSURE
        self._queued = outcome.queued

    def backpressure(self) -> None:
        """Record a back-pressure signal that did not come as a ``ButtonOutcome``."""
        self._signal = True

    def restart(self) -> None:
        """Start the round-trip clock now: for a permit taken before its request was ready."""
        self._started = self._limiter._clock()  # the limiter's own clock

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            # The limiter owns the accounting; the request left when its wait for a slot ended.
            self._limiter._release(self._started + self._queued, self._signal)


class AdaptiveLimiter:
    """AIMD concurrency limit for requests to Button (see the module docstring).

    Usage::

        async with limiter.permit() as permit:
            outcome = await client.send(request)
            permit.observe(outcome)
    """

    def __init__(
        self,
        *,
        clock: Clock,
        min_limit: int = 4,
        max_limit: int = 64,
        initial_limit: int | None = None,
        decrease_ratio: float = 0.9,
        ewma_alpha: float = 0.4,
        rtt_deviation_scale: float = 2.5,
        min_rtt_rise: float = 0.1,
        min_window: float = 0.05,
        slow_start_factor: float = 2.0,
        queue_ratio: float = 0.0,
        on_limit: Callable[[int], object] | None = None,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError("limits need 1 <= min_limit <= max_limit")
        if not 0 < decrease_ratio < 1 or not 0 < ewma_alpha <= 1:
            raise ValueError("decrease_ratio must be in (0, 1) and ewma_alpha in (0, 1]")
        if slow_start_factor < 1:
            raise ValueError("slow_start_factor must be at least 1 (1: additive from the start)")
        if not (math.isfinite(queue_ratio) and queue_ratio >= 0):
            raise ValueError("queue_ratio must be a finite number >= 0")
        if queue_ratio and on_limit is None:
            raise ValueError("queue_ratio needs on_limit: a transport that caps its requests")
        start = min_limit if initial_limit is None else initial_limit
        self._clock = clock
        self._min = min_limit
        self._max = max_limit
        self._queue_ratio = queue_ratio
        self._on_limit = on_limit
        self._limit = 0
        self._capacity = 0  # permits granted at most: the limit and the queue beyond it
        self._set_limit(min(max(start, min_limit), max_limit))
        self._decrease_ratio = decrease_ratio
        self._alpha = ewma_alpha
        self._deviation_scale = rtt_deviation_scale
        self._min_rise = min_rtt_rise
        self._min_window = min_window
        self._growth = slow_start_factor
        self._slow_start = slow_start_factor > 1
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Smoothed RTT and its mean deviation across windows (None until the first sample).
        self._srtt: float | None = None
        self._rttvar = 0.0
        # The current observation window.
        self._window_end = clock() + min_window
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self._saw_backpressure = False
        self._reached_limit = False
        # Requests started before the last cut say nothing about the new limit (TCP's "one cut
        # per round trip"): their signals are ignored, so one congestion episode cuts once.
        self._cut_at = -math.inf
        # The mean RTT of a first window above the threshold, until the next window with RTT
        # samples tells whether the rise lasts (``_end_window``), and the windows without
        # samples since then.
        self._held: float | None = None
        self._held_gap = 0

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._limit

    @property
    def slow_start(self) -> bool:
        """Whether the limit still grows multiplicatively (no congestion seen yet)."""
        return self._slow_start

    @property
    def capacity(self) -> int:
        """Permits granted at most: ``limit`` and the requests ready beyond it (``queue_ratio``)."""
        return self._capacity

    @property
    def in_flight(self) -> int:
        """Permits held right now: up to ``capacity``, more just after a decrease."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers waiting for a permit."""
        return len(self._waiters)

    @property
    def smoothed_rtt(self) -> float | None:
        """The RTT baseline in seconds, ``None`` before the first sample."""
        return self._srtt

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[Permit]:
        """Wait for a permit, hold it for the body, release it on the way out."""
        permit = await self.acquire_permit()
        try:
            yield permit
        finally:
            permit.release()

    async def acquire_permit(self) -> Permit:
        """Wait (FIFO) for a permit. The caller must ``release()`` it; prefer ``permit()``."""
        if self._in_flight < self._capacity and not self._waiters:
            self._in_flight += 1
            self._note_usage()
            return Permit(self, self._clock())
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted and cancelled in the same tick: hand the slot back.
                self._in_flight -= 1
                self._wake()
            elif waiter in self._waiters:  # ``_wake`` may have skipped it already
                self._waiters.remove(waiter)
            raise
        return Permit(self, self._clock())

    def _note_usage(self) -> None:
        if self._in_flight >= self._limit:
            self._reached_limit = True

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._capacity:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            waiter.set_result(None)
            self._in_flight += 1
            self._note_usage()
        if self._waiters:
            self._reached_limit = True

    def _release(self, started: float, backpressure: bool | None) -> None:
        now = self._clock()
        # A request that ends after the window's end belongs to the next window: close the
        # window first, so each decision rests on the requests that ended inside it (this one
        # still counts as in flight for whether the next window starts at the limit).
        if now >= self._window_end:
            self._end_window(now)
        self._in_flight -= 1
        if started < self._cut_at:
            backpressure = None
        if backpressure:
            self._saw_backpressure = True
        elif backpressure is False:
            self._rtt_sum += max(0.0, now - started)
            self._rtt_count += 1
        self._wake()

    def _end_window(self, now: float) -> None:
        """Apply slow start or AIMD once per window, then start the next (about one RTT long)."""
        if self._saw_backpressure:
            self._decrease()
            self._held = None
        elif self._rtt_count:
            mean = self._rtt_sum / self._rtt_count
            if self._srtt is None:
                self._srtt = mean
                self._rttvar = mean / 2
                if self._reached_limit:
                    self._increase()
            else:
                threshold = self._srtt + max(
                    self._deviation_scale * self._rttvar, self._min_rise * self._srtt
                )
                if mean <= threshold:
                    self._held = None  # a lone slow window before this one: a pause, dropped
                    if self._reached_limit:
                        self._increase()
                    self._fold(mean)
                elif self._held is None:
                    # A first slow window is held back: it neither cuts nor moves the baseline
                    # until the next window tells whether the rise lasts. A lone slow window is
                    # more often a pause (a garbage collection at either end, a descheduled
                    # process) than a queue our own requests built.
                    self._held = mean
                    self._held_gap = 0
                else:
                    self._decrease()
                    self._fold(self._held)
                    self._fold(mean)
                    self._held = None
        elif self._held is not None:
            # A window without an RTT sample (only requests that ended without an outcome).
            # One may separate two slow windows; after more, the held one is stale: dropped.
            self._held_gap += 1
            if self._held_gap > 1:
                self._held = None
        self._window_end = now + max(self._srtt or 0.0, self._min_window)
        self._rtt_sum = 0.0
        self._rtt_count = 0
        self._saw_backpressure = False
        self._reached_limit = self._in_flight >= self._limit or bool(self._waiters)

    def _fold(self, mean: float) -> None:
        """Fold a window's mean RTT into the baseline and its mean deviation (EWMAs)."""
        assert self._srtt is not None
        self._rttvar += self._alpha * (abs(mean - self._srtt) - self._rttvar)
        self._srtt += self._alpha * (mean - self._srtt)

    def _increase(self) -> None:
        if self._slow_start:
            grown = max(self._limit + 1, math.floor(self._limit * self._growth))
        else:
            grown = self._limit + 1
        self._set_limit(min(self._max, grown))

    def _decrease(self) -> None:
        # The first sign of congestion ends slow start: from here on, AIMD.
        self._slow_start = False
        self._cut_at = self._clock()
        cut = min(math.floor(self._limit * self._decrease_ratio), self._limit - 1)
        self._set_limit(max(self._min, cut))

    def _set_limit(self, limit: int) -> None:
        """The new limit, the capacity that follows from it; the transport told of a change."""
        changed = limit != self._limit
        self._limit = limit
        self._capacity = limit + math.ceil(limit * self._queue_ratio)
        if changed and self._on_limit is not None:
            self._on_limit(limit)


class TokenBucket:
    """A requests-per-second ceiling: ``rate`` tokens per second, at most ``burst`` saved up.

    ``reserve()`` always takes a token, going into debt if needed, and returns how long the
    caller must wait before using it; callers are therefore served in reservation order and the
    long-run rate never exceeds ``rate``. A reservation abandoned by a cancelled caller is lost
    (the bucket errs on the slow side).
    """

    def __init__(self, *, rate: float, clock: Clock, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._rate = rate
        self._burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._tokens = self._burst
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before sending (0.0 when one was ready)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self._rate

    async def take(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Reserve a token and sleep (with the injected ``sleep``) until it is due."""
        wait = self.reserve()
        if wait > 0:
            await sleep(wait)


class PauseGate:
    """Open normally; closed while Button refuses the API key (401/403: DESIGN, 4).

    Waiters ``await wait_open()``; closing holds them without dropping work, and whoever closed
    it decides when to reopen. ``AuthGate`` adds probing to it for the pipeline; a dispatcher
    given a gate also holds its lanes between records (the service does not: a queued record
    must be free to take over probing).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._event.set()
        self._reason = ""
        self._watchers: list[Callable[[], None]] = []

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the gate closes or opens (on the loop, synchronously)."""
        self._watchers.append(callback)

    def _changed(self) -> None:
        for callback in self._watchers:
            callback()

    @property
    def is_open(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        """Why the gate is closed (empty when open)."""
        return self._reason

    def close(self, reason: str) -> bool:
        """Close the gate. Returns ``True`` if it was open (so callers alert only once)."""
        was_open = self._event.is_set()
        self._event.clear()
        self._reason = reason
        if was_open:
            self._changed()
        return was_open

    def open(self) -> bool:
        """Open the gate and release every waiter. Returns ``True`` if it was closed."""
        was_closed = not self._event.is_set()
        self._event.set()
        self._reason = ""
        if was_closed:
            self._changed()
        return was_closed

    async def wait_open(self) -> None:
        """Return at once when open, else when the gate opens."""
        await self._event.wait()
