"""Helpers of the end-to-end tests: the service in a thread, offsets and topic contents."""

from __future__ import annotations

import asyncio
import ctypes
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from consumer.adapters.avro_codec import build_encoder
from consumer.adapters.kafka_reader import watermark_offsets
from consumer.bootstrap import Service, build, mapping_config
from consumer.domain import mapping
from consumer.domain.button import Action, Send
from consumer.domain.deadletter import header_map
from consumer.domain.events import CommerceEvent
from consumer.domain.profile import Profile
from consumer.replay import ReplayFilter, ReplayReport, replay
from consumer.samples import generate_events, past_start
from consumer.settings import Settings

T = TypeVar("T")


class ServiceRunner:
    """Runs one ``Service`` on its own event loop in a thread; ``stop()`` is a clean SIGTERM."""

    def __init__(self, settings: Settings) -> None:
        self.service: Service = build(settings, CollectorRegistry())
        self._loop = asyncio.new_event_loop()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="service", daemon=True)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self.service.run())
        except BaseException as exc:  # re-raised in stop()
            self._error = exc
        finally:
            self._loop.close()

    def start(self) -> ServiceRunner:
        self._thread.start()
        return self

    def exited(self) -> bool:
        """Whether the service's run has ended (on its own, or by ``stop``)."""
        return self._thread.ident is not None and not self._thread.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.service.stop)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the service did not stop"
        if self._error is not None:
            raise self._error

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        value = self.service.metrics.registry.get_sample_value(name, dict(labels or {}))
        return 0.0 if value is None else value


_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, int]:
    """The group's committed offsets (-1001 where none). A retriable refusal (NOT_COORDINATOR
    while the group's coordinator moves or loads) is asked again, up to ``timeout`` seconds."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                parts = reader.committed(
                    [TopicPartition(topic, p) for p in range(partitions)], timeout=timeout
                )
            except KafkaException as exc:
                error = exc.args[0]
                moving = error.code() in _COORDINATOR_MOVING  # not flagged retriable by librdkafka
                if not (error.retriable() or moving) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
                continue
            return {tp.partition: tp.offset for tp in parts}
    finally:
        reader.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return {
            p: watermark_offsets(reader, TopicPartition(topic, p), time.monotonic() + 60)[1]
            for p in range(partitions)
        }
    finally:
        reader.close()


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record of ``topic`` now (an empty list when it has none).

    Raises:
        TimeoutError: when the records up to the end offsets are not all read in ``timeout``.
    """
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "read-all",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = reader.list_topics(topic, timeout=30).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        deadline = time.monotonic() + timeout
        ends = {tp.partition: watermark_offsets(reader, tp, deadline)[1] for tp in parts}
        pending = {p for p, end in ends.items() if end > 0}
        reader.assign(parts)
        records = []
        while pending:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{topic}: partitions {sorted(pending)} not read to {ends} in {timeout} s"
                )
            for message in reader.consume(100, timeout=1.0):
                err = message.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition() or 0)
                    continue
                records.append(message)
                partition, offset = message.partition() or 0, message.offset() or 0
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
        return records
    finally:
        reader.close()


# --- helpers of the reliability tests (appended) -----------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy and return it; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(message or f"condition not met within {timeout} s")
        time.sleep(interval)


def produce_raw(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, int]]
) -> None:
    """Produce ``(key, value, partition)`` records as they are (poison pills), acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for key, value, partition in records:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30.0) == 0, "not every raw record was acknowledged"


def headers_of(message: Any) -> dict[str, str]:
    """A Kafka message's headers as text (the last value of a repeated name wins)."""
    return header_map(message.headers() or [])


@dataclass
class ExpectedOrder:
    """What Button should hold for one order after the events: the requests, in order."""

    order_id: str
    actions: list[Action] = field(default_factory=list)
    total: int | None = None

    @property
    def status(self) -> str:
        return "deleted" if self.actions and self.actions[-1] is Action.CANCEL else "open"


def expected_orders(
    events: Iterable[CommerceEvent], settings: Settings, now: datetime | None = None
) -> dict[str, ExpectedOrder]:
    """The oracle: the requests the service must send, from the pure mapping, per user in order.

    Only events the mapping turns into requests count (skips and rejects send nothing), and
    a create of an order created already is none: an event that brings nothing new re-sends
    the order's state as its create, which Button answers 409, and the update of the same
    state that follows is no new action either (``delivered_actions``).
    """
    config = mapping_config(settings)
    moment = now or datetime.now(UTC)
    profiles: dict[str, Profile] = {}
    orders: dict[str, ExpectedOrder] = {}
    for event in events:
        result, updated = mapping.process(event, profiles.get(event.user_key), config, moment)
        if updated is not None:
            profiles[event.user_key] = updated
        if isinstance(result, Send):
            request = result.request
            order = orders.setdefault(request.order_id, ExpectedOrder(request.order_id))
            if request.action is Action.CREATE and Action.CREATE in order.actions:
                continue  # re-sent: answered 409 (and converged by its follow-up update)
            order.actions.append(request.action)
            if request.body is not None and "total" in request.body:
                order.total = int(request.body["total"])
    return orders


def delivered_actions(order: Mapping[str, Any]) -> list[Action]:
    """The requests a sandbox order's history shows Button *applied* (2xx, no injected fault).

    The update that follows a create answered 409 (a replayed purchase or refund, any event
    that brings nothing new: the service re-sends the order's full state as its create, and
    on the 409 as the update, so Button converges) is not a new action when it re-sends the
    state Button holds: the update right after the 409 that carries the same total as the
    refused create and as the last create or update Button applied. When it brings a total
    Button does not hold, it is the order's update that another request carried and that never
    reached Button (abandoned when its member lost the partition, say): a new action. A 409
    without its update (a former owner that learnt it lost the partition in between) leaves the
    next update a new action. The order's state and total are checked separately.
    """
    actions = []
    conflict_total: int | None = None  # the total of a create just answered 409
    held_total: int | None = None  # the total of the last create or update Button applied
    for entry in order["history"]:
        update = entry["method"] == "POST" and entry["path"] != "/v1/order"
        follow_up = (
            update and conflict_total is not None and entry["total"] == conflict_total == held_total
        )
        refused_create = entry["path"] == "/v1/order" and entry["status"] == 409
        conflict_total = entry["total"] if refused_create else None
        if entry["fault"] is not None or not 200 <= (entry["status"] or 0) < 300:
            continue
        if entry["method"] == "POST":
            held_total = entry["total"]
        if follow_up:
            continue
        if entry["method"] == "DELETE":
            actions.append(Action.CANCEL)
        elif entry["method"] == "POST":
            create = entry["path"] == "/v1/order"
            actions.append(Action.CREATE if create else Action.UPDATE)
    return actions


def assert_sandbox_matches(sandbox: Any, expected: Mapping[str, ExpectedOrder]) -> None:
    """Every expected order is in the sandbox in its expected state, reached by the expected
    requests in the expected order (each applied once); no other order exists."""
    held = {o["order_id"]: o for o in sandbox.orders()}
    assert set(held) == set(expected), (
        f"missing {sorted(set(expected) - set(held))[:5]}, "
        f"unexpected {sorted(set(held) - set(expected))[:5]}"
    )
    for order_id, want in expected.items():
        got = held[order_id]
        assert got["status"] == want.status, (order_id, got["status"], want.status)
        assert delivered_actions(got) == want.actions, (order_id, got["history"])
        if want.status == "open" and want.total is not None:
            assert got["object"]["total"] == want.total, (order_id, got["object"]["total"])


def wait_for_committed(
    bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 30.0
) -> dict[int, int]:
    """Wait until the group's committed offsets equal the topic's end offsets; return them."""
    ends = end_offsets(bootstrap, topic, partitions)
    seen: list[dict[int, int]] = [{}]

    def reached() -> bool:
        seen[0] = committed_offsets(bootstrap, group, topic, partitions)
        # A partition that never had a record has no committed offset (-1001): at its end.
        return all(seen[0][p] == end or (end == 0 and seen[0][p] < 0) for p, end in ends.items())

    try:
        wait_until(reached, timeout, interval=0.5)
    except TimeoutError:
        raise TimeoutError(
            f"committed offsets of {group} are {seen[0]}, not {ends}, after {timeout} s"
        ) from None
    return ends


IN_FLIGHT = "button_consumer_in_flight_records"


def stop_when_done(
    runner: ServiceRunner,
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    timeout: float = 60.0,
) -> dict[int, int]:
    """Wait until the group has committed every record of ``topic`` (each one finished: its
    requests answered or dead-lettered), then stop ``runner`` cleanly; return the end offsets.

    "No record in flight" alone is not "done": a record not fetched yet is not in flight.
    """
    ends = wait_for_committed(bootstrap, group, topic, partitions, timeout)
    wait_until(lambda: runner.metric(IN_FLIGHT) == 0, 30, message="records still in flight")
    runner.stop()
    return ends


_REPORT_SKIPS = tuple(
    f"button_consumer_{name}"
    for name in ("outcomes", "build_info", "restored", "button_last_success", "rebalances")
)


def stall_report(
    runners: Mapping[str, ServiceRunner],
    sandbox: Any,
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
) -> str:
    """Where a run that stopped making progress stands, for a failure message: each runner's
    non-zero ``button_consumer_*`` counters and gauges (records received and finished, in
    flight, paused, requests to Button...), its consumer's positions, the partitions its loop
    holds paused and how long ago it polled; the sandbox's requests in flight and hold; the
    group's committed offsets against the end offsets."""
    lines = []
    for name, runner in runners.items():
        samples = []
        for metric in runner.service.metrics.registry.collect():
            for sample in metric.samples:
                if (
                    sample.name.startswith("button_consumer_")
                    and not sample.name.endswith(("_bucket", "_created", "_sum", "_count"))
                    and not sample.name.startswith(_REPORT_SKIPS)
                    and sample.value
                ):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    samples.append(f"{sample.name}{{{labels}}}={sample.value:g}")
        lines.append(f"{name}: {' '.join(samples)}")
        # What the loop believes and what librdkafka says (private, read for diagnosis only).
        worker = runner.service.worker
        consumer = getattr(getattr(worker, "_source", None), "_consumer", None)
        if consumer is not None:
            try:
                positions = {
                    tp.partition: tp.offset for tp in consumer.position(consumer.assignment())
                }
            except Exception as exc:  # a diagnosis must not hide the failure
                positions = {"error": str(exc)}
            lines.append(
                f"{name}: positions={positions} paused={sorted(getattr(worker, '_paused', ()))}"
                f" restoring={sorted(worker.restoring)}"
                f" last_poll={time.monotonic() - runner.service.health.last_poll:.1f}s_ago"
            )
    stats = sandbox.stats()
    lines.append(f"sandbox: in_flight={stats.get('in_flight')} hold={sandbox.hold_state()}")
    lines.append(f"committed: {committed_offsets(bootstrap, group, topic, partitions)}")
    lines.append(f"end: {end_offsets(bootstrap, topic, partitions)}")
    return "\n".join(lines)


# --- helpers of the process-level reliability tests (appended) ---------------------------------

_SERVICE_ENV_PREFIXES = (
    "KAFKA_",
    "BUTTON_",
    "DELIVERY_",
    "MAPPING_",
    "ADMIN_",
    "LOG_",
    "SCHEMA_",
)


def _die_with_parent_preexec() -> Callable[[], None]:
    """A preexec_fn: the child gets SIGKILL when the test process dies, even by SIGKILL."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        if prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            os._exit(127)
        if os.getppid() != parent:
            os._exit(127)

    return preexec


class ServiceProcess:
    """``button-consumer run`` as a child process, configured only by ``env``.

    The service variables of the test process's own environment are not inherited. Output goes
    to ``log_path``. ``kill()`` is SIGKILL (a crash); ``terminate()`` is SIGTERM (a clean stop).
    The child dies with the test process.
    """

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SERVICE_ENV_PREFIXES)}
        self.env = {**base, "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        executable = Path(sys.executable).parent / "button-consumer"
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(executable), "run"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=Path(__file__).resolve().parents[2],
                preexec_fn=_die_with_parent_preexec(),  # noqa: PLW1509 - no threads touched
            )
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"pid {self._proc.pid} outlived SIGKILL by 30 s") from None

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit code (SIGKILL and fail after ``timeout``)."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("not started")
        if proc.poll() is None:
            proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the service did not stop within {timeout} s") from None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def sandbox_unknown_order_requests(sandbox: Any) -> dict[str, list[dict[str, Any]]]:
    """Requests the sandbox got for orders that did not exist then (e.g. an update that
    overtook its create): ``{order_id: [request, ...]}``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(sandbox.url("/__sandbox/orders"), timeout=30) as response:
        doc: dict[str, Any] = json.loads(response.read())
    unknown: dict[str, list[dict[str, Any]]] = doc["unknown_order_requests"]
    return unknown


def _collapse(actions: Iterable[Action]) -> list[Action]:
    collapsed: list[Action] = []
    for action in actions:
        if not collapsed or collapsed[-1] is not action:
            collapsed.append(action)
    return collapsed


def assert_sandbox_converged(sandbox: Any, expected: Mapping[str, ExpectedOrder]) -> int:
    """Like ``assert_sandbox_matches``, but tolerant of at-least-once replays.

    Every expected order exists, no other does, each is in its expected final state (status,
    total), the first request applied to it was its create, and the applied requests are the
    expected ones in the expected order where a replay may repeat an update (a full-state
    update sent again); a re-sent create (409) or cancel (404) is not applied, so it cannot
    repeat. No request reached Button for an order before its create. Returns how many
    requests were applied more than once (replays that reached Button).
    """
    held = {o["order_id"]: o for o in sandbox.orders()}
    assert set(held) == set(expected), (
        f"{len(set(expected) - set(held))} missing: {sorted(set(expected) - set(held))[:5]}, "
        f"{len(set(held) - set(expected))} unexpected: {sorted(set(held) - set(expected))[:5]}"
    )
    repeats = 0
    for order_id, want in expected.items():
        got = held[order_id]
        assert got["status"] == want.status, (order_id, got["status"], want.status)
        if want.status == "open" and want.total is not None:
            assert got["object"]["total"] == want.total, (order_id, got["object"]["total"])
        applied = delivered_actions(got)
        assert applied[:1] == [Action.CREATE], (order_id, got["history"])
        assert applied.count(Action.CREATE) == 1, (order_id, got["history"])
        assert _collapse(applied) == _collapse(want.actions), (order_id, want.actions, applied)
        for action in set(want.actions):
            assert applied.count(action) >= want.actions.count(action), (
                order_id,
                want.actions,
                applied,
            )
        repeats += len(applied) - len(want.actions)
    early = {k: v for k, v in sandbox_unknown_order_requests(sandbox).items() if k in expected}
    assert not early, f"requests before the create: {dict(list(early.items())[:3])}"
    return repeats


def replay_whole_dlq(settings: Settings, group_id: str) -> ReplayReport:
    """``replay-dlq`` without filters, quickly and quietly, remembering progress in ``group_id``."""
    return replay(
        settings,
        ReplayFilter(),
        group_id=group_id,
        rate=1000,
        dry_run=False,
        out=io.StringIO(),
        progress=False,
    )


def past_events(users: int, seed: int) -> list[CommerceEvent]:
    """Sample journeys of ``users`` users that all happened in the last weeks (inside every
    retention window, none in the future)."""
    return list(generate_events(users, seed=seed, start=past_start(datetime.now(UTC))))


def first_request_offsets(
    bootstrap: str, settings: Settings, events: Iterable[CommerceEvent], partitions: int
) -> dict[int, int]:
    """Per partition of the input topic, the offset of its first record that sends a request to
    Button (the topic's end offset when none does): while nothing has been applied at Button,
    the group may commit up to it and no further.

    The records must have been produced by ``produce_events`` (plain Avro, no registry): a
    record is matched to its event by its encoded bytes.
    """
    events = list(events)
    encoder = build_encoder(Path(settings.schema.dir), None, None, topic=settings.kafka.topic)
    config = mapping_config(settings)
    moment = datetime.now(UTC)
    profiles: dict[str, Profile] = {}
    sends: dict[bytes, bool] = {}
    for event in events:
        result, updated = mapping.process(event, profiles.get(event.user_key), config, moment)
        if updated is not None:
            profiles[event.user_key] = updated
        value = encoder.encode_event(event)
        sends[value] = sends.get(value, False) or isinstance(result, Send)
    first = end_offsets(bootstrap, settings.kafka.topic, partitions)
    for message in read_all(bootstrap, settings.kafka.topic):
        partition, offset = message.partition() or 0, message.offset() or 0
        if sends.get(message.value() or b"", False) and offset < first[partition]:
            first[partition] = offset
    return first


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON lines of a service's log file whose ``event`` is ``event``, in order (lines
    that are not JSON objects are skipped)."""
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            found.append(doc)
    return found


@dataclass(frozen=True)
class Terminated:
    """How a launched service process ended after its SIGTERM (``sigterm_at``): its exit
    status (``None``: still running at the deadline, then killed), the seconds from the signal
    to its exit, and its log's last 15 lines for assertion messages."""

    code: int | None
    took: float
    tail: str


def sigterm_at(
    launcher: Path,
    *,
    kafka_bootstrap: str,
    topic: str,
    changelog: str,
    group: str,
    sandbox: Any,
    shutdown_s: float,
    log: Path,
    ready_event: str,
) -> Terminated:
    """Run ``launcher`` (a Python script that starts the service as ``run`` does, with a state
    held by construction) against ``topic`` and its ``changelog``, wait (at most 120 s) for its
    log to show ``ready_event``, send it SIGTERM and wait for its exit (at most
    ``DELIVERY_SHUTDOWN_TIMEOUT_SECONDS`` + 18 s, then it is killed)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DELIVERY_"))}
    env = {
        **base,
        "PYTHONUNBUFFERED": "1",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}-dlq",
        "KAFKA_PROFILE_TOPIC": changelog,
        "KAFKA_CREATE_TOPICS": "true",
        "BUTTON_BASE_URL": sandbox.base_url,
        "BUTTON_API_KEY": sandbox.api_key,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": str(shutdown_s),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(launcher)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        wait_until(lambda: bool(log_events(log, ready_event)) or proc.poll() is not None, 120)
        assert proc.poll() is None, log.read_text(encoding="utf-8")

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = proc.wait(shutdown_s + 3 + 15)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
    return Terminated(code, took, tail)
