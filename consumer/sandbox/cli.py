"""Command-line glue for ``button-consumer sandbox`` (and ``python -m consumer.sandbox``).

The main CLI owns the parser; this module only adds the sandbox's arguments and runs it, so the
sandbox stays usable on its own. Fault flags build the same JSON ``POST /__sandbox/faults`` takes
(``consumer.sandbox.faults``): ``--faults`` gives a whole document and the other flags override
its keys, so there is one parser and one set of rules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from consumer.sandbox.faults import FaultConfig, FaultConfigError
from consumer.sandbox.server import Sandbox, SandboxOptions, SandboxServer
from consumer.sandbox.state import DEFAULT_FINALIZATION_WINDOW_S

__all__ = [
    "HelpWithDefaults",
    "add_arguments",
    "faults_from_args",
    "options_from_args",
    "run_from_args",
]


class HelpWithDefaults(argparse.HelpFormatter):
    """argparse's help, with each option's default appended, ``(default: X)``, as
    ``argparse.ArgumentDefaultsHelpFormatter`` does, but not where the help already says its
    default in its own words (``(default 7 days)``), nor for an option without one (``None``,
    an off flag, an empty repeatable option): ``(default: None)`` says nothing. Used by the
    service's CLI too (``consumer.cli``)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text
            or default is None
            or default is False
            or default in ([], argparse.SUPPRESS)
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


_N = TypeVar("_N", int, float)


def _number(
    kind: type[_N], low: float, *, above: bool = False, high: float | None = None
) -> Callable[[str], _N]:
    """An argparse ``type``: a finite ``kind`` of at least ``low`` (``above``: more than ``low``)
    and at most ``high``; anything else, nan and inf included, is a usage error (exit 2) naming
    the flag (argparse) and the value as given. The fault document's own rules
    (``FaultConfig.from_json``) still apply to what the flags build."""
    noun = "a whole number" if kind is int else "a finite number"
    if high is not None:
        rule = f"{noun} from {low:g} to {high:g}"
    else:
        rule = f"{noun} {'above' if above else 'of at least'} {low:g}"

    def parse(text: str) -> _N:
        value: _N | None
        try:
            value = kind(text)
        except ValueError:
            value = None
        if (
            value is None
            or "_" in text
            or not math.isfinite(value)
            or (value <= low if above else value < low)
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"must be {rule}, not {text!r}")
        return value

    return parse


_RATE = _number(float, 0, high=1)
_SECONDS = _number(float, 0)
_MS = _number(float, 0)
_MEDIAN_MS = _number(float, 0, above=True)


def _error_rate(text: str) -> str:
    """``--error-rate STATUS=RATE``: a whole STATUS and a RATE between 0 and 1 (which
    statuses are the fault document's rule); the text is kept as given."""
    status, sep, rate = text.partition("=")
    try:
        int(status)
        _RATE(rate)
    except (ValueError, argparse.ArgumentTypeError):
        sep = ""
    if not sep:
        raise argparse.ArgumentTypeError(
            f"must be STATUS=RATE, a share from 0 to 1 (as 503=0.1), not {text!r}"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's arguments to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=_number(int, 0, high=65535),
        default=8089,
        help="port to bind (default 8089; 0: any free port)",
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        required=True,
        metavar="KEY",
        help="an accepted API key (HTTP Basic user name); repeat for several",
    )
    parser.add_argument(
        "--finalization-window",
        type=_SECONDS,
        default=DEFAULT_FINALIZATION_WINDOW_S,
        metavar="SECONDS",
        help="how long an order stays open after its create arrives (default 7 days)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (faults, order IDs; default: none, a fresh random source each start)",
    )
    faults = parser.add_argument_group(
        "faults", "start-up faults; change them at run time with POST /__sandbox/faults"
    )
    faults.add_argument(
        "--faults",
        metavar="JSON|@FILE",
        help="a whole faults document (the JSON of POST /__sandbox/faults); flags override it",
    )
    faults.add_argument("--latency-ms", type=_MS, metavar="MS", help="fixed added latency")
    faults.add_argument("--latency-p50-ms", type=_MEDIAN_MS, metavar="MS", help="log-normal median")
    faults.add_argument("--latency-p99-ms", type=_MEDIAN_MS, metavar="MS", help="log-normal p99")
    faults.add_argument(
        "--error-rate",
        action="append",
        default=[],
        type=_error_rate,
        metavar="STATUS=RATE",
        help="answer this share of requests with STATUS (429, 500, 502, 503, 504); repeatable",
    )
    faults.add_argument(
        "--retry-after", type=_number(int, 0), metavar="SECONDS", help="Retry-After on 429/503"
    )
    faults.add_argument(
        "--retry-after-format",
        choices=("seconds", "http-date"),
        default="seconds",
        help="how Retry-After is written",
    )
    faults.add_argument("--reset-rate", type=_RATE, metavar="RATE", help="connection resets")
    faults.add_argument("--hang-rate", type=_RATE, metavar="RATE", help="requests never answered")
    faults.add_argument("--hang-seconds", type=_SECONDS, metavar="SECONDS", help="hang duration")
    faults.add_argument(
        "--lost-response-rate", type=_RATE, metavar="RATE", help="applied, then connection reset"
    )
    faults.add_argument(
        "--accepted-rate", type=_RATE, metavar="RATE", help="creates answered 202 (no order ID)"
    )
    faults.add_argument(
        "--outage-seconds", type=_SECONDS, metavar="SECONDS", help="outage at start"
    )
    faults.add_argument(
        "--outage-status",
        type=_number(int, 400, high=599),
        metavar="STATUS",
        help="outage status (503)",
    )


def faults_from_args(args: argparse.Namespace) -> FaultConfig:
    """The start-up ``FaultConfig`` the arguments describe.

    Raises:
        FaultConfigError: naming the bad flag or key.
    """
    doc = _faults_document(args.faults)
    if args.latency_ms is not None:
        doc["latency"] = {"fixed_ms": args.latency_ms}
    elif args.latency_p50_ms is not None or args.latency_p99_ms is not None:
        doc["latency"] = {"p50_ms": args.latency_p50_ms, "p99_ms": args.latency_p99_ms}
    for item in args.error_rate:
        status, sep, rate = item.partition("=")
        if not sep:
            raise FaultConfigError(f"--error-rate: expected STATUS=RATE, got {item!r}")
        try:
            doc.setdefault("error_rates", {})[status.strip()] = float(rate)
        except ValueError:
            raise FaultConfigError(f"--error-rate: {rate!r} is not a number") from None
    if args.retry_after is not None:
        doc["retry_after"] = {"seconds": args.retry_after, "format": args.retry_after_format}
    for flag, key in (
        ("reset_rate", "reset_rate"),
        ("lost_response_rate", "lost_response_rate"),
        ("accepted_rate", "accepted_rate"),
    ):
        if getattr(args, flag) is not None:
            doc[key] = getattr(args, flag)
    for flag, section, key in (
        ("hang_rate", "hang", "rate"),
        ("hang_seconds", "hang", "seconds"),
        ("outage_seconds", "outage", "seconds"),
        ("outage_status", "outage", "status"),
    ):
        if getattr(args, flag) is not None:
            doc.setdefault(section, {})[key] = getattr(args, flag)
    if args.seed is not None and "seed" not in doc:
        doc["seed"] = args.seed
    return FaultConfig.from_json(doc)


def _faults_document(value: str | None) -> dict[str, Any]:
    """The ``--faults`` JSON (inline or ``@file``), or an empty document."""
    if not value:
        return {}
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        loaded = json.loads(text)
    except ValueError as exc:
        raise FaultConfigError(f"--faults: not valid JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise FaultConfigError("--faults: must be a JSON object")
    return loaded


def options_from_args(args: argparse.Namespace) -> SandboxOptions:
    """The ``SandboxOptions`` the arguments describe (raises ``FaultConfigError``)."""
    return SandboxOptions(
        api_keys=tuple(args.api_keys),
        finalization_window_s=args.finalization_window,
        faults=faults_from_args(args),
        seed=args.seed,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the sandbox until SIGINT or SIGTERM. Returns the process exit code."""
    try:
        options = options_from_args(args)
    except (FaultConfigError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(options, args.host, args.port))
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(options: SandboxOptions, host: str, port: int) -> None:
    server = SandboxServer(Sandbox(options), host, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not available on Windows
            loop.add_signal_handler(sig, stop.set)
    print(
        f"Button sandbox listening on {server.base_url} "
        f"({len(options.api_keys)} API key{'' if len(options.api_keys) == 1 else 's'}; "
        "admin API under /__sandbox/)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
