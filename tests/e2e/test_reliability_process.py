"""Reliability of the process around delivery: a crash, a rebalance, a broker restart, a restart.

Each test runs the real service (a ``button-consumer run`` child process, or in-process
``ServiceRunner``s) against a real broker and the Button sandbox over HTTP, and asserts on what
Button ends up holding: every order of the oracle (the pure mapping over the same events,
``expected_orders``) in its final state, reached by its requests in order, none lost. Replays
are allowed (at-least-once): a re-sent create answers 409 and a re-sent cancel 404, so neither is
applied twice; a re-sent full-state update may be (``assert_sandbox_converged``).

"Mid-run" is made, never hoped for: where a test needs work outstanding at some moment (a kill,
a rebalance, a broker restart), the sandbox holds Button's answers for one order
(``SandboxHandle.holding``), so that order's record cannot finish and its partition's committed
offset stays below the end until the test releases it, however fast the machine is.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from consumer.commands import produce_events
from consumer.devtools.localkafka import LocalKafka
from consumer.domain.button import Action
from consumer.domain.events import (
    AttAuthorizationStatus,
    CommerceData,
    CommerceEvent,
    DeviceInfo,
    EventType,
    Platform,
    ProductAction,
    UserIdentities,
)
from consumer.sandbox.testing import SandboxHandle, run_sandbox
from consumer.settings import KAFKA_LOGGER, Settings
from tests.e2e.harness import (
    ExpectedOrder,
    ServiceProcess,
    ServiceRunner,
    assert_sandbox_converged,
    committed_offsets,
    end_offsets,
    expected_orders,
    past_events,
    read_all,
    stall_report,
    wait_for_committed,
    wait_until,
)

pytestmark = pytest.mark.broker

API_KEY = "sk-e2e-process"
IN_FLIGHT = "button_consumer_in_flight_records"
ASSIGNED = "button_consumer_partitions_assigned"
RECEIVED = "button_consumer_records_received_total"


# --- fixtures and builders ------------------------------------------------------------------


@pytest.fixture
def process_sandbox() -> Iterator[SandboxHandle]:
    """A sandbox in its own process: it does not compete for this process's GIL."""
    with run_sandbox(api_keys=(API_KEY,), mode="process") as handle:
        yield handle


@pytest.fixture
def service_processes() -> Iterator[list[ServiceProcess]]:
    """Service child processes a test starts; any still running is killed afterwards."""
    processes: list[ServiceProcess] = []
    yield processes
    for process in processes:
        process.kill()


@pytest.fixture
def librdkafka_log(tmp_path: Path) -> Iterator[Path]:
    """The librdkafka log lines of this test's in-process services (with ``KAFKA_CONFIG_DEBUG``
    their debug lines too), in a file: read back when the test fails."""
    path = tmp_path / "librdkafka.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger(KAFKA_LOGGER)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # thousands of lines: not into pytest's captured log
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        handler.close()


def _log_of_partitions(path: Path, topic: str, partitions: Iterable[int], lines: int) -> str:
    """The last ``lines`` librdkafka log lines that name one of ``topic``'s ``partitions``."""
    names = tuple(f"{topic} [{p}]" for p in partitions)
    matching = [
        line for line in path.read_text().splitlines() if line and any(n in line for n in names)
    ]
    return "\n".join(matching[-lines:])


def _env(
    bootstrap: str, topic: str, group: str, sandbox: SandboxHandle, **overrides: str
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
        "BUTTON_API_KEY": sandbox.api_key,
        "BUTTON_BASE_URL": sandbox.base_url,
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "DELIVERY_RETRY_BASE_DELAY_SECONDS": "0.05",
        "DELIVERY_RETRY_MAX_DELAY_SECONDS": "1",
        "DELIVERY_SHUTDOWN_TIMEOUT_SECONDS": "10",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        **overrides,
    }


# Button timeouts longer than any hold in these tests (each hold ends within the deadlines of the
# waits inside it), so a held request is not retried into the dead-letter topic meanwhile.
LONG_BUTTON_TIMEOUTS = {"BUTTON_READ_TIMEOUT": "900", "BUTTON_TOTAL_TIMEOUT": "900"}


def _first_new_order(
    before: Mapping[str, ExpectedOrder], after: Mapping[str, ExpectedOrder]
) -> str:
    """The first order the events between ``before`` and ``after`` create."""
    return next(o for o in after if o not in before)


def _has_refunds(expected: Mapping[str, ExpectedOrder]) -> None:
    actions = [a for o in expected.values() for a in o.actions]
    assert Action.UPDATE in actions, "the sample set has partial refunds"
    assert Action.CANCEL in actions, "and full refunds"


# --- 1. kill -9 mid-run, then restart --------------------------------------------------------


def test_kill_9_mid_run_then_restart_loses_nothing(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    process_sandbox: SandboxHandle,
    service_processes: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    """SIGKILL the service while thousands of records are in flight, start it again: every
    order reaches its final state (creates, partial-refund totals, cancels), none is lost,
    replays are harmless, and the group's committed offsets reach the end.

    Most of the run time is the broker's: with the default (KIP-848) group protocol the killed
    member keeps its partitions until the broker's session timeout (45 s) fences it.

    The sandbox holds the last order's requests until the kill: the kill comes before every
    order reached Button by construction, not because the machine was slow enough.
    """
    sandbox = process_sandbox
    partitions = 4
    topic = make_topic(partitions=partitions, prefix="kill9")
    env = _env(kafka_bootstrap, topic, unique_name("group"), sandbox)
    settings = Settings.from_env(env)
    events = past_events(3100, seed=91)
    assert len(events) >= 20_000
    expected = expected_orders(events, settings)
    _has_refunds(expected)
    produce_events(settings, events, partitions=partitions)
    ends = end_offsets(kafka_bootstrap, topic, partitions)
    assert sum(ends.values()) == len(events)
    last_order = list(expected)[-1]  # late in its partition: the others flow meanwhile

    started = time.monotonic()
    first = ServiceProcess(env, tmp_path / "first.log").start()
    service_processes.append(first)

    def orders_held() -> int:
        return sum(sandbox.stats()["orders"].values())

    # Kill it once a good part of the orders reached Button; the held one cannot have.
    with sandbox.holding(order_ids=[last_order]):
        wait_until(
            lambda: orders_held() >= len(expected) // 4 or not first.alive(),
            timeout=240,
            interval=0.05,
            message="the first service did not deliver a quarter of the orders in 240 s",
        )
        assert first.alive(), first.log_tail()
        first.kill()
        at_kill = orders_held()
        assert sandbox.order(last_order) is None, "the held order reached Button"
    assert 0 < at_kill < len(expected), "the kill came mid-run"

    killed_after = time.monotonic() - started
    second = ServiceProcess(env, tmp_path / "second.log").start()
    service_processes.append(second)
    try:
        wait_for_committed(kafka_bootstrap, env["KAFKA_GROUP_ID"], topic, partitions, timeout=300)
    except TimeoutError:
        raise AssertionError(second.log_tail()) from None
    done_after = time.monotonic() - started
    assert second.terminate() == 0, second.log_tail()

    repeats = assert_sandbox_converged(sandbox, expected)
    assert read_all(kafka_bootstrap, env["KAFKA_DLQ_TOPIC"]) == []
    print(
        f"killed after {killed_after:.1f} s with {at_kill}/{len(expected)} orders held; "
        f"done after {done_after:.1f} s; updates applied again: {repeats}"
    )


# --- 2. rebalance 1 -> 3 -> 1 during a run -----------------------------------------------------


def _app_open(user: str, token: str, idfa: str, when: datetime) -> CommerceEvent:
    return CommerceEvent(
        event_id=f"open-{uuid.uuid4()}",
        event_type=EventType.APP_OPEN,
        event_time=when,
        user_key=user,
        platform=Platform.IOS,
        btn_ref=token,
        device_info=DeviceInfo(
            ios_advertising_id=idfa,
            limit_ad_tracking=False,
            att_authorization_status=AttAuthorizationStatus.AUTHORIZED,
        ),
    )


def _server_purchase(user: str, order_id: str, when: datetime) -> CommerceEvent:
    """A purchase as the merchant's server reports it: no token, no device id."""
    return CommerceEvent(
        event_id=f"buy-{uuid.uuid4()}",
        event_type=EventType.PURCHASE,
        event_time=when,
        user_key=user,
        platform=Platform.SERVER,
        user_identities=UserIdentities(customer_id=f"c-{user}"),
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order_id,
            currency_code="USD",
            total_amount=Decimal("25.00"),
        ),
    )


class _TokenUsers:
    """Users whose only token and device id come from an app open (the profile)."""

    def __init__(self, count: int) -> None:
        run = uuid.uuid4().hex[:8]
        self.users = [f"tok-{run}-{i}" for i in range(count)]
        self.tokens = {u: f"srctok-{uuid.uuid4().hex[:16]}" for u in self.users}
        self.idfas = {u: str(uuid.uuid4()).upper() for u in self.users}

    def app_opens(self) -> list[CommerceEvent]:
        when = datetime.now(UTC) - timedelta(minutes=30)
        return [_app_open(u, self.tokens[u], self.idfas[u], when) for u in self.users]

    def purchases(self, tag: str) -> tuple[list[CommerceEvent], dict[str, str]]:
        """One purchase per user, and ``{order_id: user}``."""
        when = datetime.now(UTC) - timedelta(minutes=5)
        orders = {f"{u}-{tag}": u for u in self.users}
        return [_server_purchase(u, o, when) for o, u in orders.items()], orders

    def assert_enriched(self, sandbox: SandboxHandle, orders: dict[str, str]) -> None:
        for order_id, user in orders.items():
            held = sandbox.order(order_id)
            assert held is not None, order_id
            obj = held["object"]
            assert obj["btn_ref"] == self.tokens[user], (order_id, obj)
            assert obj["customer"]["device_id"] == self.idfas[user], (order_id, obj)


def _unfinished(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """Whether the group has records left to finish (a committed offset below the end)."""
    committed = committed_offsets(bootstrap, group, topic, partitions)
    return any(committed[p] < end for p, end in end_offsets(bootstrap, topic, partitions).items())


def _delivered_by(runner: ServiceRunner) -> dict[str, int]:
    """``{order_id: partition}`` of the orders this runner delivered (its live log)."""
    return {
        d["order_id"]: d["partition"]
        for d in runner.service.deliveries.recent(1_000_000)
        if d["outcome"] == "delivered" and d["order_id"]
    }


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_rebalance_1_3_1_keeps_order_and_profiles(
    protocol: str,
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    process_sandbox: SandboxHandle,
    start_service: Callable[[Settings], ServiceRunner],
    librdkafka_log: Path,
) -> None:
    """One consumer, then three, then one again, while records flow: none lost, each order's
    requests in order (create first, no request before it), and profiles follow their
    partitions: a purchase processed by another consumer than the app open that carried the
    user's token and device id still gets both.

    Each membership change happens while the sandbox holds one order's requests, so the group
    has unfinished records at that moment by construction; the hold ends once it is checked.
    """
    sandbox = process_sandbox
    partitions = 6
    topic = make_topic(partitions=partitions, prefix="rebalance")
    env = _env(
        kafka_bootstrap,
        topic,
        unique_name("group"),
        sandbox,
        KAFKA_GROUP_PROTOCOL=protocol,
        KAFKA_SESSION_TIMEOUT_MS="10000",
        ADMIN_RECENT_DELIVERIES="1000000",
        # The group's and the fetchers' debug lines: a failure shows what librdkafka did with
        # the partitions that fell behind (librdkafka_log).
        KAFKA_CONFIG_DEBUG="cgrp,fetch",
        **LONG_BUTTON_TIMEOUTS,
    )
    settings = Settings.from_env(env)
    group = env["KAFKA_GROUP_ID"]
    users = _TokenUsers(24)
    bulk = past_events(3000, seed=92 if protocol == "consumer" else 93)
    assert len(bulk) >= 19_000
    first_half, second_half = bulk[: len(bulk) // 2], bulk[len(bulk) // 2 :]
    opens = users.app_opens()
    buys_1, orders_1 = users.purchases("during-3")
    buys_2, orders_2 = users.purchases("after-1")
    expected = expected_orders([*opens, *first_half, *buys_1, *second_half, *buys_2], settings)
    _has_refunds(expected)
    before_1 = expected_orders([*opens], settings)
    before_2 = expected_orders([*opens, *first_half, *buys_1], settings)
    held_1 = _first_new_order(before_1, expected_orders([*opens, *first_half], settings))
    held_2 = _first_new_order(
        before_2, expected_orders([*opens, *first_half, *buys_1, *second_half], settings)
    )

    # Consumer A alone learns every token user's profile.
    produce_events(settings, opens, partitions=partitions)
    a = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, partitions, timeout=60)
    assert a.metric(ASSIGNED) == partitions

    # 1 -> 3 while A works through a backlog: A's request for held_1 gets no answer until the
    # group has grown, so the backlog is unfinished then whatever the machine's speed.
    with sandbox.holding(order_ids=[held_1]):
        produce_events(settings, first_half, partitions=partitions)
        sandbox.wait_parked(held_1, timeout=120)  # A reached it: A is inside the backlog
        b = start_service(settings)
        c = start_service(settings)
        runners = (a, b, c)
        # A partition that moves away from A waits for A's in-flight records (up to the
        # revoke timeout, 15 s) before its new owner gets it: the held one makes it wait.
        wait_until(
            lambda: (
                all(r.metric(ASSIGNED) >= 1 for r in runners)
                and sum(r.metric(ASSIGNED) for r in runners) == partitions
            ),
            timeout=180,
            message="the three consumers did not share the partitions within 180 s",
        )
        assert _unfinished(kafka_bootstrap, group, topic, partitions), "A's backlog is not done"
        assert sandbox.order(held_1) is None, "the held order reached Button"
    produce_events(settings, buys_1, partitions=partitions)

    def missing_1() -> list[str]:
        return [o for o in orders_1 if sandbox.order(o) is None]

    try:
        wait_until(lambda: not missing_1(), timeout=90, interval=0.5)
    except TimeoutError:
        state = stall_report(
            {"A": a, "B": b, "C": c}, sandbox, kafka_bootstrap, group, topic, partitions
        )
        committed = committed_offsets(kafka_bootstrap, group, topic, partitions)
        ends = end_offsets(kafka_bootstrap, topic, partitions)
        behind = [p for p in range(partitions) if committed[p] < ends[p]]
        raise AssertionError(
            f"the purchases made while three consumers ran did not all arrive within 90 s: "
            f"{missing_1()} are missing\n{state}\nlibrdkafka on partitions {behind}:\n"
            + _log_of_partitions(librdkafka_log, topic, behind, 400)
        ) from None
    moved = {o: p for r in (b, c) for o, p in _delivered_by(r).items() if o in orders_1}
    assert moved, "B and C delivered some token users' purchases (their profiles moved)"
    partitions_of_b_c = {p for r in (b, c) for p in _delivered_by(r).values()}

    # 3 -> 1 while the second half flows.
    def received_by_b_c() -> float:
        return b.metric(RECEIVED, {"topic": topic}) + c.metric(RECEIVED, {"topic": topic})

    # B and C leave while held_2's record (of the second half) cannot finish.
    before = received_by_b_c()
    with sandbox.holding(order_ids=[held_2]):
        produce_events(settings, second_half, partitions=partitions)
        wait_until(lambda: received_by_b_c() > before, 60, message="B and C got none of it")
        b.stop()
        c.stop()
        assert _unfinished(kafka_bootstrap, group, topic, partitions), "B and C left mid-run"
        assert sandbox.order(held_2) is None, "the held order reached Button"
    wait_until(lambda: a.metric(ASSIGNED) == partitions, 60, message="A did not get all back")
    produce_events(settings, buys_2, partitions=partitions)
    try:
        wait_for_committed(kafka_bootstrap, group, topic, partitions, timeout=300)
    except TimeoutError as exc:
        raise AssertionError(
            f"{exc}\n{stall_report({'A': a}, sandbox, kafka_bootstrap, group, topic, partitions)}"
            f"\nlibrdkafka:\n" + _log_of_partitions(librdkafka_log, topic, range(partitions), 400)
        ) from None
    wait_until(lambda: a.metric(IN_FLIGHT) == 0, 30, message="records still in flight")

    back = {o: p for o, p in _delivered_by(a).items() if o in orders_2}
    assert set(back) == set(orders_2), "A delivered every purchase after the others left"
    assert set(back.values()) & partitions_of_b_c, "including on partitions B and C had owned"
    users.assert_enriched(sandbox, orders_1)
    users.assert_enriched(sandbox, orders_2)
    repeats = assert_sandbox_converged(sandbox, expected)
    assert read_all(kafka_bootstrap, env["KAFKA_DLQ_TOPIC"]) == []
    print(f"{protocol}: moved {len(moved)} token orders; updates applied again: {repeats}")
    print(
        stall_report({"A": a, "B": b, "C": c}, sandbox, kafka_bootstrap, group, topic, partitions)
    )


# --- 3. broker restart mid-run ----------------------------------------------------------------


@pytest.fixture
def dedicated_kafka() -> Iterator[LocalKafka]:
    """A broker of this test alone: it is restarted, which the session's broker must not be."""
    with LocalKafka() as kafka:
        yield kafka


def test_broker_restart_mid_run_recovers_without_loss(
    dedicated_kafka: LocalKafka,
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    start_service: Callable[[Settings], ServiceRunner],
) -> None:
    """The only broker goes away and comes back (same address, same data) while the service
    delivers: the service recovers by itself, loses nothing, and commits to the end.

    The sandbox holds the last order's requests until the broker is back, so the restart
    comes before every order reached Button by construction."""
    kafka = dedicated_kafka
    bootstrap = kafka.bootstrap_servers
    partitions = 3
    topic = unique_name("restart")
    env = _env(
        bootstrap,
        topic,
        unique_name("group"),
        sandbox,
        # Deliveries still flow while the broker restarts (the hold guarantees only that the
        # run is not over).
        DELIVERY_RATE_LIMIT_RPS="120",
        **LONG_BUTTON_TIMEOUTS,
    )
    settings = Settings.from_env(env)
    events = past_events(1000, seed=94)
    expected = expected_orders(events, settings)
    _has_refunds(expected)
    produce_events(settings, events, partitions=partitions)
    ends = end_offsets(bootstrap, topic, partitions)
    runner = start_service(settings)

    def orders_held() -> int:
        return sum(sandbox.stats()["orders"].values())

    last_order = list(expected)[-1]
    with sandbox.holding(order_ids=[last_order]):
        wait_until(
            lambda: orders_held() >= len(expected) // 5,
            120,
            message="a fifth of the orders did not reach Button within 120 s",
        )
        old_pid = kafka.pid
        kafka.restart()
        assert kafka.pid != old_pid
        assert kafka.bootstrap_servers == bootstrap
        at_restart = orders_held()
        assert sandbox.order(last_order) is None, "the held order reached Button"
    assert at_restart < len(expected), "the restart came mid-run"

    wait_for_committed(bootstrap, env["KAFKA_GROUP_ID"], topic, partitions, timeout=240)
    assert end_offsets(bootstrap, topic, partitions) == ends, "the broker kept the records"
    wait_until(lambda: runner.metric(IN_FLIGHT) == 0, 30, message="records still in flight")
    runner.stop()  # raises if the service failed meanwhile

    repeats = assert_sandbox_converged(sandbox, expected)
    assert read_all(bootstrap, env["KAFKA_DLQ_TOPIC"]) == []
    print(f"orders at restart: {at_restart}/{len(expected)}; updates applied again: {repeats}")


# --- 4. a profile survives a consumer restart ------------------------------------------------


def test_profile_survives_a_consumer_restart(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    start_service: Callable[[Settings], ServiceRunner],
) -> None:
    """App opens processed, the service stopped cleanly; a new instance of the same group
    processes only the purchases, and each order carries the user's btn_ref and device id,
    restored from the profile changelog."""
    partitions = 3
    topic = make_topic(partitions=partitions, prefix="profile")
    env = _env(kafka_bootstrap, topic, unique_name("group"), sandbox)
    settings = Settings.from_env(env)
    group = env["KAFKA_GROUP_ID"]
    users = _TokenUsers(9)
    opens = users.app_opens()
    buys, orders = users.purchases("after-restart")

    produce_events(settings, opens, partitions=partitions)
    first = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, partitions, timeout=60)
    first.stop()
    assert sandbox.orders() == [], "app opens send nothing to Button"

    produce_events(settings, buys, partitions=partitions)
    second = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, partitions, timeout=60)
    wait_until(lambda: second.metric(IN_FLIGHT) == 0, 30, message="records still in flight")
    assert second.metric(RECEIVED, {"topic": topic}) == len(buys), "it read only the purchases"
    assert second.metric("button_consumer_profiles") >= len(users.users)
    second.stop()

    users.assert_enriched(sandbox, orders)
    expected = expected_orders([*opens, *buys], settings)
    assert set(expected) == set(orders)
    assert assert_sandbox_converged(sandbox, expected) == 0


def test_a_tracking_refusal_survives_a_consumer_restart(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    sandbox: SandboxHandle,
    start_service: Callable[[Settings], ServiceRunner],
) -> None:
    """Users refuse tracking (ATT denied), the service stops cleanly; a new instance of the
    group restores their profiles (a version 5 changelog value: the refusal's time), then
    reads an older app open with the IDFA (an SDK batch uploaded late) and a purchase: the
    orders Button holds carry no device id."""
    partitions = 3
    topic = make_topic(partitions=partitions, prefix="refusal")
    env = _env(kafka_bootstrap, topic, unique_name("group"), sandbox)
    settings = Settings.from_env(env)
    group = env["KAFKA_GROUP_ID"]
    users = _TokenUsers(6)
    now = datetime.now(UTC)
    refusals = [
        replace(
            _app_open(u, users.tokens[u], users.idfas[u], now - timedelta(minutes=30)),
            device_info=DeviceInfo(att_authorization_status=AttAuthorizationStatus.DENIED),
        )
        for u in users.users
    ]
    late_opens = [
        _app_open(u, users.tokens[u], users.idfas[u], now - timedelta(hours=2)) for u in users.users
    ]
    buys, orders = users.purchases("after-refusal")

    produce_events(settings, refusals, partitions=partitions)
    first = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, partitions, timeout=60)
    first.stop()

    produce_events(settings, [*late_opens, *buys], partitions=partitions)
    second = start_service(settings)
    wait_for_committed(kafka_bootstrap, group, topic, partitions, timeout=60)
    wait_until(lambda: second.metric(IN_FLIGHT) == 0, 30, message="records still in flight")
    second.stop()

    for order_id, user in orders.items():
        held = sandbox.order(order_id)
        assert held is not None, order_id
        obj = held["object"]
        assert obj["btn_ref"] == users.tokens[user], (order_id, obj)
        assert "device_id" not in (obj.get("customer") or {}), (order_id, obj)
