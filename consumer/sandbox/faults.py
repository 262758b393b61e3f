"""Fault injection for the sandbox: failures the consumer must survive, on demand and repeatable.

A ``FaultConfig`` is parsed from JSON (``POST /__sandbox/faults`` or the CLI) and replaces the
previous one as a whole; ``{}`` means no faults. ``FaultInjector.decide`` is called once per Button
API request, before authentication and validation, and says what to do with it. Random choices use
one ``random.Random``, reseeded from the document's ``seed`` (else the server's) whenever the faults
change, so the same document followed by the same requests fails the same way.

Faults JSON (every key optional)::

    {
      "seed": 7,                                        # reseeds the random source
      "latency": {"fixed_ms": 20}                       # every request waits 20 ms, or
               | {"p50_ms": 5, "p99_ms": 200},          # log-normal with that median and p99
      "error_rates": {"429": 0.05, "500": 0.01,         # share of requests answered with that
                      "502": 0.01, "503": 0.01,         # status (429, 500, 502, 503, 504);
                      "504": 0.0},                      # 502 has an HTML body, like a proxy
      "retry_after": {"seconds": 2,                     # Retry-After sent on injected 429/503;
                      "format": "seconds"},             # "seconds" or "http-date"; null: none
      "reset_rate": 0.01,                               # connection reset, nothing applied
      "hang": {"rate": 0.01, "seconds": 60},            # no answer for that long, then reset
      "lost_response_rate": 0.01,                       # applied, then the connection is reset
      "accepted_rate": 0.0,                             # creates answered 202 without
                                                        #   button_order_id (order still created)
      "outage": {"seconds": 10, "status": 503,          # every request fails for the next 10 s
                 "body": "json"},                       #   with Button's JSON error, or "html"
      "rules": [                                        # deterministic, checked first:
        {"order_id": "ORD-1",                           #   the first `fail_first` matching
         "operation": "create",                         #   attempts for this order (optionally
         "fail_first": 2,                               #   of one operation: create, update,
         "action": "status", "status": 503,             #   cancel, get, list) fail with:
         "retry_after": {"seconds": 1, "format": "http-date"},   # status | reset | hang |
         "body": "json"}                                         # lost_response; body as
      ]                                                          # the outage's
    }

The random faults share one draw: their rates must sum to at most 1. Precedence per request:
rules, then the outage, then the random faults. Latency applies on top of any of them. A rule
whose action is ``hang`` waits ``hang.seconds``; a rule's ``retry_after`` is sent whatever its
status, the global one only on 429 and 503. Posting a document restarts the outage clock and
the rules' attempt counters (``GET /__sandbox/faults`` shows both).

An injected status answers with Button's JSON error envelope (``"body": "json"``, the default)
or, with ``"body": "html"``, with an HTML page as a corporate proxy, WAF or CDN in front of
Button sends it (``text/html``; a 403 this way is a refusal that is not Button's own). A 502 is
always HTML.

Just over 500 lines: the document's parser names every bad key, next to the faults it reads.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final, Literal

__all__ = [
    "OPERATIONS",
    "Decision",
    "FaultConfig",
    "FaultConfigError",
    "FaultInjector",
    "Latency",
    "RetryAfter",
    "Rule",
]

Operation = Literal["create", "update", "cancel", "get", "list"]
OPERATIONS: Final[frozenset[str]] = frozenset({"create", "update", "cancel", "get", "list"})
Action = Literal["status", "reset", "hang", "lost_response"]
Body = Literal["json", "html"]
_BODIES: Final = frozenset({"json", "html"})
_ACTIONS: Final = frozenset({"status", "reset", "hang", "lost_response"})
RANDOM_STATUSES: Final = (429, 500, 502, 503, 504)
_Z99: Final = 2.3263478740408408  # the standard normal's 99th percentile
_MAX_LATENCY_S: Final = 60.0
_DEFAULT_HANG_S: Final = 60.0


class FaultConfigError(ValueError):
    """The faults JSON is not valid; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Added delay: fixed, or log-normal with a given median and 99th percentile."""

    fixed_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None

    def sample(self, rng: random.Random) -> float:
        """One delay in seconds."""
        if self.fixed_ms is not None:
            return self.fixed_ms / 1000
        if self.p50_ms is None or self.p99_ms is None or self.p50_ms <= 0:
            return 0.0
        sigma = math.log(self.p99_ms / self.p50_ms) / _Z99
        return min(rng.lognormvariate(math.log(self.p50_ms), sigma) / 1000, _MAX_LATENCY_S)

    def to_json(self) -> dict[str, float]:
        if self.fixed_ms is not None:
            return {"fixed_ms": self.fixed_ms}
        return {"p50_ms": self.p50_ms or 0.0, "p99_ms": self.p99_ms or 0.0}


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """How to fill ``Retry-After``: delay-seconds or an HTTP date that many seconds ahead."""

    seconds: int
    format: Literal["seconds", "http-date"] = "seconds"

    def header(self, wall_now: float) -> str:
        if self.format == "seconds":
            return str(self.seconds)
        return format_datetime(datetime.fromtimestamp(wall_now + self.seconds, UTC), usegmt=True)

    def to_json(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "format": self.format}


@dataclass(frozen=True, slots=True)
class Rule:
    """Fail the first ``fail_first`` attempts that match ``order_id`` (and ``operation``)."""

    order_id: str
    fail_first: int
    action: Action = "status"
    status: int = 503
    operation: Operation | None = None
    retry_after: RetryAfter | None = None
    body: Body = "json"

    def matches(self, operation: str, order_id: str | None) -> bool:
        return order_id == self.order_id and self.operation in (None, operation)

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "operation": self.operation,
            "fail_first": self.fail_first,
            "action": self.action,
            "status": self.status,
            "retry_after": None if self.retry_after is None else self.retry_after.to_json(),
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """A complete fault setting. ``FaultConfig()`` injects nothing."""

    seed: int | None = None
    latency: Latency | None = None
    error_rates: Mapping[int, float] = field(default_factory=dict)
    retry_after: RetryAfter | None = None
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = _DEFAULT_HANG_S
    lost_response_rate: float = 0.0
    accepted_rate: float = 0.0
    outage_seconds: float = 0.0
    outage_status: int = 503
    outage_body: Body = "json"
    rules: tuple[Rule, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> FaultConfig:
        """Parse the faults JSON documented in this module.

        Raises:
            FaultConfigError: with a message naming the key that is wrong.
        """
        doc = _object(data, "faults")
        _known(doc, "faults", _TOP_KEYS)
        latency = None
        if doc.get("latency") is not None:
            latency = _latency(doc["latency"])
        error_rates: dict[int, float] = {}
        for key, value in _object(doc.get("error_rates", {}), "error_rates").items():
            status = _int(key, f"error_rates.{key}")
            if status not in RANDOM_STATUSES:
                raise FaultConfigError(
                    f"error_rates.{key}: status must be one of {list(RANDOM_STATUSES)}"
                )
            error_rates[status] = _rate(value, f"error_rates.{key}")
        hang = _object(doc.get("hang", {}), "hang")
        _known(hang, "hang", {"rate", "seconds"})
        outage = _object(doc.get("outage", {}), "outage")
        _known(outage, "outage", {"seconds", "status", "body"})
        rules_doc = doc.get("rules", [])
        if not isinstance(rules_doc, list):
            raise FaultConfigError("rules: must be an array")
        seed = doc.get("seed")
        config = cls(
            seed=None if seed is None else _int(seed, "seed"),
            latency=latency,
            error_rates=error_rates,
            retry_after=_retry_after(doc.get("retry_after"), "retry_after"),
            reset_rate=_rate(doc.get("reset_rate", 0.0), "reset_rate"),
            hang_rate=_rate(hang.get("rate", 0.0), "hang.rate"),
            hang_seconds=_seconds(hang.get("seconds", _DEFAULT_HANG_S), "hang.seconds"),
            lost_response_rate=_rate(doc.get("lost_response_rate", 0.0), "lost_response_rate"),
            accepted_rate=_rate(doc.get("accepted_rate", 0.0), "accepted_rate"),
            outage_seconds=_seconds(outage.get("seconds", 0.0), "outage.seconds"),
            outage_status=_status(outage.get("status", 503), "outage.status"),
            outage_body=_body(outage.get("body", "json"), "outage.body"),
            rules=tuple(_rule(item, f"rules[{i}]") for i, item in enumerate(rules_doc)),
        )
        total = (
            sum(error_rates.values())
            + config.reset_rate
            + config.hang_rate
            + config.lost_response_rate
        )
        if total > 1.0 + 1e-9:
            raise FaultConfigError(
                f"faults: error_rates, reset_rate, hang.rate and lost_response_rate "
                f"sum to {total:g}, more than 1"
            )
        return config

    def to_json(self) -> dict[str, Any]:
        """The configuration in the JSON form ``from_json`` reads."""
        return {
            "seed": self.seed,
            "latency": None if self.latency is None else self.latency.to_json(),
            "error_rates": {str(k): v for k, v in sorted(self.error_rates.items())},
            "retry_after": None if self.retry_after is None else self.retry_after.to_json(),
            "reset_rate": self.reset_rate,
            "hang": {"rate": self.hang_rate, "seconds": self.hang_seconds},
            "lost_response_rate": self.lost_response_rate,
            "accepted_rate": self.accepted_rate,
            "outage": {
                "seconds": self.outage_seconds,
                "status": self.outage_status,
                "body": self.outage_body,
            },
            "rules": [rule.to_json() for rule in self.rules],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request.

    ``kind``: ``none`` (serve normally), ``status`` (answer ``status`` without applying),
    ``reset`` (drop the connection without applying), ``hang`` (wait ``hang_seconds`` then
    drop), ``lost_response`` (apply, then drop), ``accepted`` (apply, answer 202).
    ``label`` names the fault in statistics and history (``None`` when there is none);
    ``body`` is the form of an injected status's body (JSON envelope or HTML page).
    """

    kind: Literal["none", "status", "reset", "hang", "lost_response", "accepted"] = "none"
    delay_s: float = 0.0
    status: int = 0
    retry_after: str | None = None
    hang_seconds: float = 0.0
    label: str | None = None
    body: Body = "json"


_NO_FAULT: Final = Decision()


class FaultInjector:
    """Holds the current ``FaultConfig`` and its run-time state (outage end, rule counters)."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        seed: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._default_seed = seed
        self._monotonic = monotonic
        self._wall = wall
        self._rng = random.Random(seed)  # noqa: S311 - reproducible faults, not secrets
        self._config = FaultConfig()
        self._outage_until = 0.0
        self._rule_hits: list[int] = []
        self._idle = True
        self.configure(config or FaultConfig())

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> None:
        """Replace the faults; restarts the random sequence, the outage clock and rule counters."""
        self._config = config
        # Reseeding on every change makes a fault run depend only on the document and the
        # requests that follow it, not on what happened before.
        self._rng.seed(self._default_seed if config.seed is None else config.seed)
        self._outage_until = self._monotonic() + config.outage_seconds
        self._rule_hits = [0] * len(config.rules)
        self._idle = config == FaultConfig()

    def state(self) -> dict[str, Any]:
        """Run-time state for the admin API: the outage's remaining time and rule counters."""
        return {
            "outage_remaining_s": max(0.0, round(self._outage_until - self._monotonic(), 3)),
            "rule_attempts": list(self._rule_hits),
        }

    def decide(self, operation: str, order_id: str | None) -> Decision:
        """The fault (if any) for one request of ``operation`` naming ``order_id``."""
        if self._idle:
            return _NO_FAULT
        config = self._config
        delay = 0.0 if config.latency is None else config.latency.sample(self._rng)
        for index, rule in enumerate(config.rules):
            if rule.matches(operation, order_id) and self._rule_hits[index] < rule.fail_first:
                self._rule_hits[index] += 1
                return self._rule_decision(rule, delay)
        if self._monotonic() < self._outage_until:
            return Decision(
                "status",
                delay,
                config.outage_status,
                self._retry_after(config.outage_status, config.retry_after),
                label=f"outage_{config.outage_status}",
                body=config.outage_body,
            )
        return self._random_decision(operation, delay)

    def _rule_decision(self, rule: Rule, delay: float) -> Decision:
        config = self._config
        label = f"rule_{rule.action}" if rule.action != "status" else f"rule_{rule.status}"
        if rule.action == "status":
            # A rule's own Retry-After is sent whatever the status; the global one on 429/503.
            if rule.retry_after is not None:
                retry_after: str | None = rule.retry_after.header(self._wall())
            else:
                retry_after = self._retry_after(rule.status, config.retry_after)
            return Decision("status", delay, rule.status, retry_after, label=label, body=rule.body)
        return Decision(rule.action, delay, hang_seconds=config.hang_seconds, label=label)

    def _random_decision(self, operation: str, delay: float) -> Decision:
        config = self._config
        draw = self._rng.random()
        connection_faults: tuple[tuple[Literal["reset", "hang", "lost_response"], float], ...] = (
            ("reset", config.reset_rate),
            ("hang", config.hang_rate),
            ("lost_response", config.lost_response_rate),
        )
        for kind, rate in connection_faults:
            if draw < rate:
                return Decision(kind, delay, hang_seconds=config.hang_seconds, label=kind)
            draw -= rate
        for status, rate in sorted(config.error_rates.items()):
            if draw < rate:
                retry_after = self._retry_after(status, config.retry_after)
                return Decision("status", delay, status, retry_after, label=str(status))
            draw -= rate
        if (
            operation == "create"
            and config.accepted_rate
            and self._rng.random() < config.accepted_rate
        ):
            return Decision("accepted", delay, 202, label="accepted_202")
        return Decision(delay_s=delay) if delay else _NO_FAULT

    def _retry_after(self, status: int, retry_after: RetryAfter | None) -> str | None:
        if retry_after is None or status not in (429, 503):
            return None
        return retry_after.header(self._wall())


# --- parsing helpers ----------------------------------------------------------------------------

_TOP_KEYS: Final = frozenset(
    {
        "seed",
        "latency",
        "error_rates",
        "retry_after",
        "reset_rate",
        "hang",
        "lost_response_rate",
        "accepted_rate",
        "outage",
        "rules",
    }
)


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FaultConfigError(f"{name}: must be an object")
    return value


def _known(doc: Mapping[str, Any], name: str, keys: frozenset[str] | set[str]) -> None:
    unknown = sorted(set(doc) - set(keys))
    if unknown:
        raise FaultConfigError(f"{name}: unknown key(s) {unknown}; known: {sorted(keys)}")


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FaultConfigError(f"{name}: must be a number")
    return float(value)


def _rate(value: object, name: str) -> float:
    rate = _number(value, name)
    if not 0.0 <= rate <= 1.0:
        raise FaultConfigError(f"{name}: must be between 0 and 1")
    return rate


def _seconds(value: object, name: str) -> float:
    seconds = _number(value, name)
    if seconds < 0:
        raise FaultConfigError(f"{name}: must not be negative")
    return seconds


def _int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise FaultConfigError(f"{name}: must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise FaultConfigError(f"{name}: must be an integer")


def _status(value: object, name: str) -> int:
    status = _int(value, name)
    if not 400 <= status <= 599:
        raise FaultConfigError(f"{name}: must be an HTTP error status (400-599)")
    return status


def _latency(value: object) -> Latency:
    doc = _object(value, "latency")
    _known(doc, "latency", {"fixed_ms", "p50_ms", "p99_ms"})
    if "fixed_ms" in doc:
        if len(doc) != 1:
            raise FaultConfigError("latency: give fixed_ms alone, or p50_ms and p99_ms")
        return Latency(fixed_ms=_seconds(doc["fixed_ms"], "latency.fixed_ms"))
    if set(doc) != {"p50_ms", "p99_ms"}:
        raise FaultConfigError("latency: give fixed_ms alone, or p50_ms and p99_ms")
    p50 = _seconds(doc["p50_ms"], "latency.p50_ms")
    p99 = _seconds(doc["p99_ms"], "latency.p99_ms")
    if p50 <= 0 or p99 < p50:
        raise FaultConfigError("latency: need 0 < p50_ms <= p99_ms")
    return Latency(p50_ms=p50, p99_ms=p99)


def _retry_after(value: object, name: str) -> RetryAfter | None:
    if value is None:
        return None
    doc = _object(value, name)
    _known(doc, name, {"seconds", "format"})
    seconds = _int(doc.get("seconds"), f"{name}.seconds")
    if seconds < 0:
        raise FaultConfigError(f"{name}.seconds: must not be negative")
    fmt = doc.get("format", "seconds")
    if fmt == "seconds":
        return RetryAfter(seconds, "seconds")
    if fmt == "http-date":
        return RetryAfter(seconds, "http-date")
    raise FaultConfigError(f'{name}.format: must be "seconds" or "http-date"')


def _rule(value: object, name: str) -> Rule:
    doc = _object(value, name)
    _known(
        doc,
        name,
        {"order_id", "operation", "fail_first", "action", "status", "retry_after", "body"},
    )
    order_id = doc.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise FaultConfigError(f"{name}.order_id: must be a non-empty string")
    fail_first = _int(doc.get("fail_first", 1), f"{name}.fail_first")
    if fail_first < 0:
        raise FaultConfigError(f"{name}.fail_first: must not be negative")
    action = doc.get("action", "status")
    if action not in _ACTIONS:
        raise FaultConfigError(f"{name}.action: must be one of {sorted(_ACTIONS)}")
    operation = doc.get("operation")
    if operation is not None and operation not in OPERATIONS:
        raise FaultConfigError(f"{name}.operation: must be one of {sorted(OPERATIONS)}")
    return Rule(
        order_id=order_id,
        fail_first=fail_first,
        action=action,
        status=_status(doc.get("status", 503), f"{name}.status"),
        operation=operation,
        retry_after=_retry_after(doc.get("retry_after"), f"{name}.retry_after"),
        body=_body(doc.get("body", "json"), f"{name}.body"),
    )


def _body(value: object, name: str) -> Body:
    if value == "json":
        return "json"
    if value == "html":
        return "html"
    raise FaultConfigError(f"{name}: must be one of {sorted(_BODIES)}")
