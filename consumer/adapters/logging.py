"""structlog configuration: JSON lines in production, console rendering on a terminal.

Configured once by the composition root (or a command). Context (partition, offset, key hash,
event id) comes from the record being handled (``consumer.ports.CURRENT_RECORD``), added to each
line by ``add_record_scope``; every record ends with one
``record`` summary line (``consumer.adapters.telemetry``). librdkafka's own log lines reach
Python through confluent-kafka's ``logger`` property (every client configuration names the
stdlib logger ``KAFKA_LOGGER``, see ``consumer.settings``); ``configure_logging`` routes that
logger into structlog, so they come out as structured ``librdkafka`` events instead of raw
``%3|...|FAIL|rdkafka#producer-1|`` lines on stderr.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from typing import Literal, TextIO

import structlog

from consumer.ports import CURRENT_RECORD
from consumer.settings import KAFKA_LOGGER

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LibrdkafkaHandler(logging.Handler):
    """Forwards confluent-kafka's log records to structlog as ``librdkafka`` events.

    confluent-kafka logs ``"%s [%s] %s"`` with (facility, client name, message).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args if isinstance(record.args, tuple) else ()
            if len(args) == 3:
                facility, client, message = (str(a) for a in args)
            else:
                facility, client, message = "", "", record.getMessage()
            structlog.get_logger("librdkafka").log(
                record.levelno, "librdkafka", facility=facility, client=client, message=message
            )
        except Exception:  # noqa: BLE001 - a log line must never break the client's thread
            self.handleError(record)


class _OnceHandler(logging.Handler):
    """Writes each distinct librdkafka complaint once (``quiet_librdkafka``)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.WARNING)
        self._stream = stream
        self._seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args if isinstance(record.args, tuple) else ()
            line = f"{args[0]} {args[2]}" if len(args) == 3 else record.getMessage()
            complaint = _DIGITS.sub("#", line)
            if complaint in self._seen:
                return
            self._seen.add(complaint)
            self._stream.write(f"librdkafka: {line}\n")
        except Exception:  # noqa: BLE001 - a log line must never break the client's thread
            self.handleError(record)


_DIGITS = re.compile(r"\d+")


def quiet_librdkafka(stream: TextIO | None = None) -> None:
    """For an operator command (``replay-dlq``, ``produce-sample``, ``test-event``): each
    distinct warning or error of librdkafka on ``stream`` (stderr) once, as
    ``librdkafka: FACILITY message``, instead of one raw line per attempt (a broker that
    refuses connections is retried many times a second). Text that differs only in its
    numbers is the same complaint."""
    kafka = logging.getLogger(KAFKA_LOGGER)
    for handler in list(kafka.handlers):
        if isinstance(handler, (LibrdkafkaHandler, _OnceHandler)):
            kafka.removeHandler(handler)
    kafka.addHandler(_OnceHandler(stream if stream is not None else sys.stderr))
    kafka.setLevel(logging.WARNING)
    kafka.propagate = False


def add_record_scope(
    _logger: object, _name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: the handled record's partition, offset, key hash and event id.

    The key is logged as the first 12 hex digits of its SHA-256, never as the user id itself.
    Fields the log call passed itself are kept.
    """
    scope = CURRENT_RECORD.get()
    if scope is None:
        return event
    event.setdefault("partition", scope.partition)
    event.setdefault("offset", scope.offset)
    if scope.key is not None:
        event.setdefault("key", hashlib.sha256(scope.key).hexdigest()[:12])
    if scope.event_id is not None:
        event.setdefault("event_id", scope.event_id)
    return event


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
    *,
    cache: bool = False,
) -> None:
    """Set up structlog for this process (one event per line on ``stream``, stdout by default).

    ``cache``: each logger keeps the configuration of its first use (structlog's
    ``cache_logger_on_first_use``), so a call skips the lookup of the configured processors and
    logger (about 2 microseconds, for every line, including a filtered-out ``debug``). For a
    process configured once, before it logs (the service); not for a process that configures
    again later (tests), whose loggers would keep the first configuration.
    """
    out = stream if stream is not None else sys.stdout
    numeric = _LEVELS.get(level, logging.ERROR)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_record_scope,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=cache,
    )
    kafka = logging.getLogger(KAFKA_LOGGER)
    for handler in list(kafka.handlers):
        if isinstance(handler, (LibrdkafkaHandler, _OnceHandler)):
            kafka.removeHandler(handler)
    kafka.addHandler(LibrdkafkaHandler())
    kafka.setLevel(numeric)
    kafka.propagate = False
