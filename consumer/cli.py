"""``button-consumer``: the command line. Parses arguments and hands over; no logic lives here."""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from consumer import __version__
from consumer.errors import ConfigError, ConsumerError

_N = TypeVar("_N", int, float)


def _number(
    kind: type[_N], low: float, *, above: bool = False, high: float | None = None
) -> Callable[[str], _N]:
    """An argparse ``type``: a finite ``kind`` of at least ``low`` (``above``: more than ``low``)
    and at most ``high``; anything else, nan and inf included, is a usage error (exit 2) that
    names the option (argparse) and the value as given. Python's digit separators (``1_000``)
    are refused, as in every other value a user types."""
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


_POSITIVE = _number(float, 0, above=True)
"""Seconds, or records per second: nothing else means anything."""
_SHARE = _number(float, 0, high=1)


def _parser() -> argparse.ArgumentParser:
    from consumer.sandbox.cli import HelpWithDefaults, add_arguments

    parser = argparse.ArgumentParser(
        prog="button-consumer",
        description="Consume commerce events from Kafka and report orders to Button.",
        epilog="Settings come from environment variables; see the README's configuration table.",
        formatter_class=HelpWithDefaults,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="consume the topic and report orders to Button (the service)")

    p_map = sub.add_parser(
        "map", help="offline: events as JSON lines in, the Button requests they become out"
    )
    p_map.add_argument("file", nargs="?", default="-", help="JSON lines file (default: stdin)")
    p_map.add_argument(
        "--now",
        help="ISO-8601 processing time for retention (default: each event's own time, "
        "so the output does not depend on when the command runs)",
    )

    p_replay = sub.add_parser("replay-dlq", help="re-deliver dead-lettered records, in order")
    p_replay.add_argument("--reason", action="append", default=[], help="only this reason")
    p_replay.add_argument("--order-id", action="append", default=[], help="only this order")
    p_replay.add_argument("--since", help="only records dead-lettered at or after (ISO-8601)")
    p_replay.add_argument("--until", help="only records dead-lettered before (ISO-8601)")
    p_replay.add_argument(
        "--rate", type=_POSITIVE, default=200.0, help="records per second (above 0)"
    )
    p_replay.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    p_replay.add_argument(
        "--group-id",
        help="consumer group that remembers replay progress (default: KAFKA_GROUP_ID-replay, "
        "used only without filters); it is committed, per DLQ partition, up to the first dead "
        "letter not replayed (filtered out, held back or not acknowledged), so a later run of "
        "the group, with any filter or none, still reads it",
    )
    p_replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_replay.add_argument(
        "--release-keys",
        action="store_true",
        help="a replayed record that still does not decode releases its key (the orders "
        "parked behind it go on) instead of parking it again",
    )

    p_sample = sub.add_parser("produce-sample", help="produce realistic sample events")
    p_sample.add_argument("--users", type=_number(int, 1), default=200, help="number of users")
    p_sample.add_argument(
        "--seed",
        type=int,
        default=7,
        help="random seed: the same --seed and --users give the same users, event ids and order "
        "ids, so a second run repeats the same events (Button answers their creates 409, "
        "already exists); pass another --seed for new ones",
    )
    p_sample.add_argument(
        "--partitions",
        type=_number(int, 1),
        help="of the topic, if it is created (default 3); a topic that exists keeps its own, "
        "with a warning when it differs",
    )
    p_sample.add_argument(
        "--rate", type=_POSITIVE, help="events per second (default: as fast as possible)"
    )
    p_sample.add_argument(
        "--duration",
        type=_POSITIVE,
        help="seconds to keep producing, new users coming (default: once)",
    )
    p_sample.add_argument(
        "--invalid-ratio",
        type=_SHARE,
        default=0.0,
        help="share of records made undecodable, to exercise the DLQ (0-1, default 0)",
    )

    p_test = sub.add_parser("test-event", help="produce one purchase to check a deployment")
    p_test.add_argument("--order-id", required=True)
    p_test.add_argument("--total", default="12.34", help="revenue in major units")
    p_test.add_argument("--currency", default="USD", help="ISO 4217 code")
    p_test.add_argument(
        "--btn-ref", default="fakesrctok-0123456789abcdef", help="Button's test tokens work"
    )
    p_test.add_argument("--user", default="test-user", help="record key / user key")
    p_test.add_argument(
        "--admin",
        metavar="URL",
        help="post the event to a running instance's POST /test-event (e.g. http://POD:9400) "
        "instead of producing it; the bearer token is read from ADMIN_TEST_EVENT_TOKEN",
    )
    p_test.add_argument(
        "--send", action="store_true", help="with --admin: also send the request to Button"
    )

    p_check = sub.add_parser(
        "check", help="every configuration problem at once: settings, Kafka, registry, Button"
    )
    p_check.add_argument("--json", action="store_true", help="one JSON document, for automation")
    p_check.add_argument(
        "--timeout", type=_POSITIVE, default=10.0, help="seconds per connection (above 0)"
    )

    p_sandbox = sub.add_parser("sandbox", help="run the local Button Order API sandbox")
    add_arguments(p_sandbox)
    for command in sub.choices.values():
        command.formatter_class = HelpWithDefaults  # each option's default in its --help
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"button-consumer: configuration error: {exc}", file=sys.stderr)
        return 2
    except ConsumerError as exc:
        # A broker, registry or topic failure a command could not get past: one line, no trace.
        print(f"button-consumer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_is_pipe():
            raise
        # The reader of the output went away (``check --json | head``): nothing more can be
        # written. Pointed at /dev/null, stdout's last flush at exit finds no broken pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a program its pipe ended
    except Exception as exc:
        status = _kafka_failure(exc)
        if status is None:
            raise
        return status


def _stdout_is_pipe() -> bool:
    """Whether stdout is a pipe or a socket (a reader that can go away), not a file or tty."""
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _kafka_failure(exc: Exception) -> int | None:
    """Report a ``KafkaException`` the commands did not translate (e.g. a ``KAFKA_CONFIG_*``
    property librdkafka refuses when a client is created) by the setting it names, instead of
    a traceback: 2 for a configuration error, 1 for another Kafka error; ``None`` for any
    other exception. (confluent-kafka is imported only by the commands that use it.)"""
    kafka = sys.modules.get("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException):
        return None
    from consumer.adapters.kafka import kafka_error_text
    from consumer.settings import kafka_property_problem

    text = kafka_error_text(exc)
    problem = kafka_property_problem(text)
    if problem is not None:
        print(
            f"button-consumer: configuration error: {problem.variable}: {problem.message}",
            file=sys.stderr,
        )
        return 2
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    where = f" at {servers} (KAFKA_BOOTSTRAP_SERVERS)" if servers else ""
    print(f"button-consumer: Kafka error{where}: {text}", file=sys.stderr)
    return 1


_KAFKA_COMMANDS = frozenset({"replay-dlq", "produce-sample", "test-event"})
"""Operator commands with Kafka clients of their own (``run`` logs through structlog, ``check``
keeps librdkafka's lines for its report)."""


def _dispatch(args: argparse.Namespace) -> int:
    """Import only what the chosen command needs (``map`` must not need Kafka to be reachable)."""
    command: str = args.command
    if command == "run":
        from consumer.bootstrap import run_service

        return run_service()
    if command in _KAFKA_COMMANDS:
        # Each distinct librdkafka complaint once on stderr, not one raw line per retry.
        from consumer.adapters.logging import quiet_librdkafka

        quiet_librdkafka()
    if command == "replay-dlq":
        from consumer.replay import replay_command

        return replay_command(args)
    if command == "sandbox":
        from consumer.sandbox.cli import run_from_args

        return run_from_args(args)
    from consumer import checks, commands

    handlers: dict[str, Callable[[], int]] = {
        "map": lambda: commands.map_command(args.file, args.now),
        "produce-sample": lambda: commands.produce_sample(
            args.users,
            args.seed,
            args.partitions,
            rate=args.rate,
            duration=args.duration,
            invalid_ratio=args.invalid_ratio,
        ),
        "test-event": lambda: commands.run_test_event(args),
        "check": lambda: checks.check(as_json=args.json, timeout=args.timeout),
    }
    return handlers[command]()
