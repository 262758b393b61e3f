"""``make demo``: the whole service on an embedded default, then a summary.

Starts a local Kafka broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``) and the Button sandbox,
creates a topic, produces realistic sample events, runs the consumer until every record is
finished and the topic is drained, prints what happened, and stops everything. Exit code 0 when
every sample purchase reached the sandbox and nothing was dead-lettered unexpectedly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Set
from datetime import UTC, datetime
from types import FrameType
from typing import TextIO

from prometheus_client import CollectorRegistry

from consumer.adapters.logging import configure_logging
from consumer.bootstrap import Service, build
from consumer.commands import produce_events
from consumer.domain.events import EventType
from consumer.domain.wording import counted
from consumer.engine.worker import RunStats
from consumer.errors import ConsumerError
from consumer.samples import generate_events, past_start
from consumer.sandbox.testing import run_sandbox
from consumer.settings import KAFKA_LOGGER, Settings


def configure_demo_logging(stream: TextIO) -> None:
    """The service's warnings and errors on ``stream`` (console on a terminal, else JSON), and
    librdkafka's errors only: its warnings against a broker the demo has just started are of
    what it retries (``GETPID ... Coordinator load in progress: retrying``), and would land in
    the middle of the demo's output; an error (a broker that refuses connections) still shows,
    and the summary's verdict says whether anything was lost."""
    configure_logging("warning", "console" if stream.isatty() else "json", stream=stream)
    logging.getLogger(KAFKA_LOGGER).setLevel(logging.ERROR)


def _stop_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C, so every ``with`` block below unwinds and stops its part."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def _broker() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from consumer.devtools.localkafka import LocalKafka

    print("starting a local Kafka broker (first run resolves its jars with Maven) ...")
    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers


async def _serve(service: Service) -> RunStats:
    """Run the consumer; SIGTERM or Ctrl-C stop it gracefully (commit, leave the group)."""
    loop = asyncio.get_running_loop()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        service.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    stats = await service.run()
    if stopped:
        raise KeyboardInterrupt
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--users", type=int, default=300, help="sample users")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=3)
    args = parser.parse_args(argv)
    _stop_on_sigterm()
    configure_demo_logging(sys.stdout)
    try:
        return _run(args.users, args.seed, args.partitions)
    except KeyboardInterrupt:
        print("demo interrupted; everything it started is stopped")
        return 130
    except ConsumerError as exc:
        print(f"demo failed: {exc}")
        return 1


def _run(users: int, seed: int, partitions: int) -> int:
    run_id = uuid.uuid4().hex[:8]
    with _broker() as bootstrap, run_sandbox(api_keys=("sk-demo",)) as sandbox:
        print(f"kafka at {bootstrap}; Button sandbox at {sandbox.base_url}")
        topic = f"demo-commerce-events-{run_id}"
        settings = Settings.from_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA_TOPIC": topic,
                "KAFKA_GROUP_ID": f"demo-{run_id}",
                "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
                "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
                "BUTTON_API_KEY": sandbox.api_key,
                "BUTTON_BASE_URL": sandbox.base_url,
                "ADMIN_HOST": "127.0.0.1",
                "ADMIN_PORT": "0",
                "DELIVERY_STOP_WHEN_IDLE_SECONDS": "3",
                "LOG_LEVEL": "warning",
            }
        )
        # Recent events, all in the past: retention counts from now, future ones teach nothing.
        start = past_start(datetime.now(UTC))
        events = list(generate_events(users, seed, start=start))
        purchases = {
            e.commerce.transaction_id
            for e in events
            if e.event_type is EventType.PURCHASE and e.commerce is not None
        }
        produced = produce_events(settings, events, partitions=partitions)
        print(
            f"produced {counted(produced, 'sample event')} of {counted(users, 'user')} to {topic}"
        )

        service = build(settings, CollectorRegistry())
        started = time.monotonic()
        stats = asyncio.run(_serve(service))
        _stop_on_sigterm()  # asyncio restored the default handlers
        elapsed = time.monotonic() - started - 3.0  # the idle wait is not work

        metric = service.metrics.registry.get_sample_value
        finished = {
            name: int(metric("button_consumer_records_finished_total", {"outcome": name}) or 0)
            for name in ("delivered", "skipped", "dead_lettered", "parked", "dry_run")
        }
        requests = {
            action: int(
                metric(
                    "button_consumer_button_requests_total",
                    {"action": action, "outcome": "success", "status_class": "2xx"},
                )
                or 0
            )
            for action in ("create", "update", "cancel")
        }
        orders = sandbox.orders()
        seen = {o["order_id"] for o in orders}
        missing = purchases - seen
        print()
        print("demo summary")
        print(f"  events read          {stats.received - stats.redelivered}")
        if stats.redelivered:
            # librdkafka rewound a fresh partition (DESIGN, 3): dropped, neither read nor sent
            print(f"  handed out again     {stats.redelivered} (dropped)")
        print(
            f"  orders forwarded     {finished['delivered']} "
            f"(create {requests['create']}, update {requests['update']}, "
            f"cancel {requests['cancel']})"
        )
        print(f"  skipped              {finished['skipped']} (profile events, not orders)")
        print(f"  dead-lettered        {finished['dead_lettered'] + finished['parked']}")
        read = stats.received - stats.redelivered
        print(f"  throughput           {read / max(elapsed, 0.001):.0f} events/s")
        print(f"  sandbox orders       {len(orders)} of {len(purchases)} sample purchases")
        attributed = sum(1 for o in orders if (o.get("object") or {}).get("btn_ref"))
        print(f"  attributed (btn_ref) {attributed}")
        failed = verdict(missing, stats, produced)
        if failed:
            print(failed)
            return 1
        return 0


def verdict(missing: Set[str | None], stats: RunStats, produced: int) -> str | None:
    """``None`` when every sample purchase reached the sandbox and every produced event was read
    once (records the Kafka client handed out again, and the worker dropped, do not count);
    else the failure line."""
    read = stats.received - stats.redelivered
    if missing or read != produced:
        return f"FAILED: {len(missing)} purchases missing, read {read}/{produced}"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
