"""A broker-failure drill with several service replicas (static membership, as the chart's
StatefulSet runs them) on a three-broker cluster: brokers restart and die, poison records arrive
while a broker is down and while the dead-letter partition's leader moves, and the replicas roll
while a broker is down. Prints a timeline and the real outcome (sandbox against the oracle,
committed against end offsets, the DLQ's records, process exits).

    python -m tests.e2e.replica_drill [protocol=consumer|classic] [users=N] [rate=R] [scenario ...]
    scenarios: rolling, kill_coord, poison_down, dlq_move, roll_replicas (default: all, in order)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from confluent_kafka import ElectionType, TopicPartition
from confluent_kafka.cimpl import NewTopic

from consumer.devtools._proc import free_port, repo_root
from consumer.domain.deadletter import H_REASON
from consumer.domain.events import (
    CommerceData,
    CommerceEvent,
    EventType,
    Platform,
    Product,
    ProductAction,
)
from consumer.sandbox.testing import run_sandbox
from consumer.settings import Settings
from tests.e2e.broker_drill import (
    Feeder,
    _absent,
    _ready,
    _requests_above,
    http,
    metrics,
    say,
    wait,
)
from tests.e2e.cluster import LocalCluster
from tests.e2e.harness import (
    ServiceProcess,
    assert_sandbox_converged,
    committed_offsets,
    end_offsets,
    expected_orders,
    headers_of,
    past_events,
    produce_raw,
    read_all,
)

API_KEY = "sk-replica-drill"
PARTITIONS = 6
REPLICAS = 3


class Replicas(threading.Thread):
    """Samples every replica's /readyz and liveness each second; restarts an exited one (as
    Kubernetes would) unless it is being rolled on purpose."""

    def __init__(self, envs: list[dict[str, str]], ports: list[int], logdir: Any, sandbox: Any):
        super().__init__(daemon=True)
        self.envs, self.ports, self.logdir, self.sandbox = envs, ports, logdir, sandbox
        self.procs: list[ServiceProcess] = []
        self.starts = [0] * len(envs)
        self.exits: list[tuple[float, int, int | None]] = []
        self.samples: list[dict[str, Any]] = []
        self.rolling: set[int] = set()
        self.stop_flag = False
        self.lock = threading.Lock()
        for i in range(len(envs)):
            self.procs.append(self._spawn(i))

    def _spawn(self, i: int) -> ServiceProcess:
        self.starts[i] += 1
        return ServiceProcess(self.envs[i], self.logdir / f"svc{i}.{self.starts[i]}.log").start()

    def restart(self, i: int) -> None:
        with self.lock:
            self.procs[i] = self._spawn(i)

    def ready(self, i: int) -> bool:
        return http(f"http://127.0.0.1:{self.ports[i]}/readyz")[0] == 200

    def run(self) -> None:
        from tests.e2e.broker_drill import now

        while not self.stop_flag:
            t = now()
            try:
                requests = int(self.sandbox.stats()["requests"])
            except Exception:
                requests = -1
            row: dict[str, Any] = {"t": t, "requests": requests, "r": []}
            for i, port in enumerate(self.ports):
                code, body = http(f"http://127.0.0.1:{port}/readyz")
                m = metrics(port)
                row["r"].append(
                    {
                        "ready": code,
                        "body": body[:200],
                        "alive": self.procs[i].alive(),
                        "m": {
                            k: v
                            for k, v in m.items()
                            if "bucket" not in k and not k.endswith("_created")
                        },
                    }
                )
                with self.lock:
                    proc = self.procs[i]
                    if not proc.alive() and i not in self.rolling and not self.stop_flag:
                        rc = proc._proc.poll() if proc._proc else None
                        self.exits.append((t, i, rc))
                        say(f"REPLICA {i} EXITED with {rc}; restarting it")
                        self.procs[i] = self._spawn(i)
            self.samples.append(row)
            time.sleep(1.0)

    def stall(self, start: float, end: float) -> float:
        rows = [s for s in self.samples if start <= s["t"] <= end and s["requests"] >= 0]
        longest, last_t, last_r = 0.0, None, None
        for s in rows:
            if last_r is None or s["requests"] > last_r:
                last_t, last_r = s["t"], s["requests"]
            elif last_t is not None:
                longest = max(longest, s["t"] - last_t)
        return longest

    def not_ready(self, start: float, end: float) -> list[str]:
        out = []
        for i in range(len(self.ports)):
            spans, begin = [], None
            for s in self.samples:
                if not start <= s["t"] <= end:
                    continue
                bad = s["r"][i]["ready"] != 200
                if bad and begin is None:
                    begin = s
                if not bad and begin is not None:
                    spans.append(f"{begin['t']:.0f}-{s['t']:.0f}s ({begin['r'][i]['body'][:90]})")
                    begin = None
            if begin is not None:
                spans.append(f"{begin['t']:.0f}-end ({begin['r'][i]['body'][:90]})")
            out.append(f"replica {i} not ready: {spans}")
        return out


def _at_least(count: Callable[[], int], n: int) -> Callable[[], bool]:
    return lambda: count() >= n


def poison_purchase(order: str, minutes: int) -> CommerceEvent:
    shirt = Product(id="shirt", price=Decimal("20.00"), quantity=1)
    return CommerceEvent(
        event_id=f"evt-{order}",
        event_type=EventType.PURCHASE,
        event_time=datetime.now(UTC) - timedelta(minutes=30 - minutes),
        user_key=f"user-{order}",
        platform=Platform.SERVER,
        btn_ref="srctok-0123456789abcdef",
        commerce=CommerceData(
            action=ProductAction.PURCHASE,
            transaction_id=order,
            currency_code="USD",
            total_amount=Decimal("20.00"),
            products=(shirt,),
        ),
    )


def main() -> int:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    scenarios = [a for a in sys.argv[1:] if "=" not in a] or [
        "rolling",
        "kill_coord",
        "poison_down",
        "dlq_move",
        "roll_replicas",
    ]
    protocol = args.get("protocol", "consumer")
    users, rate = int(args.get("users", 1500)), float(args.get("rate", 25))
    out = repo_root() / ".run" / f"replica-drill-{protocol}"
    out.mkdir(parents=True, exist_ok=True)
    with (
        LocalCluster(3, heap_mb=320) as cluster,
        run_sandbox(api_keys=(API_KEY,), mode="process") as sandbox,
    ):
        bootstrap = cluster.bootstrap_servers
        topic, group = "purchases", f"replica-drill-{protocol}"
        dlq_topic = f"{topic}.dlq"
        admin = cluster.admin()
        admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(60)
        wait(lambda: cluster.fully_replicated([topic]), 60, "input replicated")
        base = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": group,
            "KAFKA_GROUP_PROTOCOL": protocol,
            "KAFKA_DLQ_TOPIC": dlq_topic,
            "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
            "KAFKA_CREATE_TOPICS": "true",
            "BUTTON_API_KEY": API_KEY,
            "BUTTON_BASE_URL": sandbox.base_url,
            "ADMIN_HOST": "127.0.0.1",
            "LOG_LEVEL": "info",
            "LOG_FORMAT": "json",
        }
        ports = [free_port() for _ in range(REPLICAS)]
        envs = [
            {**base, "ADMIN_PORT": str(p), "KAFKA_GROUP_INSTANCE_ID": f"button-consumer-{i}"}
            for i, p in enumerate(ports)
        ]
        settings = Settings.from_env(envs[0])
        raw = past_events(users, seed=11)
        first_seen: dict[str, int] = {}
        for e in raw:
            first_seen.setdefault(e.user_key, len(first_seen))
        events = sorted(raw, key=lambda e: first_seen[e.user_key] // 25)
        expected = expected_orders(events, settings)
        say(f"protocol={protocol}: {len(events)} events, {len(expected)} orders expected")
        # Button refuses these purchases' creates with 400, whatever the attempt
        poison_orders = [f"ORD-POISON-{i}" for i in range(40)]
        sandbox.set_faults(
            {
                "rules": [
                    {"order_id": o, "operation": "create", "fail_first": 1000, "status": 400}
                    for o in poison_orders
                ]
            }
        )
        reps = Replicas(envs, ports, out, sandbox)
        wait(lambda: all(reps.ready(i) for i in range(REPLICAS)), 180, "replicas ready")
        topics = [topic, dlq_topic, f"{topic}.profiles", "__consumer_offsets"]
        wait(lambda: cluster.fully_replicated(topics), 90, "all replicated")
        reps.start()
        feeder = Feeder(bootstrap, settings, events, rate)
        feeder.start()
        wait(lambda: sandbox.order_count() > 50, 120, "first orders")
        say("flowing; coordinator", cluster.coordinator(group))
        encoder = feeder.encoder
        expected_dlq: Counter[str] = Counter()
        poison_i = iter(range(len(poison_orders)))

        def send_poison(n_avro: int, n_400: int, tag: str) -> None:
            recs: list[tuple[bytes | None, bytes | None, int]] = []
            for j in range(n_avro):
                recs.append((f"bad-{tag}-{j}".encode(), b"\x07not avro " + tag.encode(), j % 6))
            for _ in range(n_400):
                k = next(poison_i)
                ev = poison_purchase(poison_orders[k], k % 20)
                recs.append((ev.user_key.encode(), encoder.encode_event(ev), k % 6))
            produce_raw(bootstrap, topic, recs)
            expected_dlq["avro"] += n_avro
            expected_dlq["400"] += n_400
            say(f"poison sent ({tag}): {n_avro} bad Avro, {n_400} refused-400 purchases")

        def dlq_count() -> int:
            try:
                return len(read_all(bootstrap, dlq_topic, timeout=20))
            except Exception:
                return -1

        def heal(what: str) -> None:
            took = wait(lambda: cluster.fully_replicated(topics), 240, f"ISR full after {what}")
            say(f"ISR full after {what} in {took:.1f}s")

        def leaders(t: str) -> dict[int, int]:
            return {p: v[0] for p, v in cluster.partitions(t).items()}

        from tests.e2e.broker_drill import now

        marks: dict[str, tuple[float, float]] = {}
        for scenario in scenarios:
            s0 = now()
            say(f"=== {scenario}: coordinator={cluster.coordinator(group)}")
            try:
                if scenario == "rolling":
                    coord = cluster.coordinator(group)
                    for b in [coord] + [b for b in (1, 2, 3) if b != coord]:
                        took = cluster.stop_broker(b)
                        say(f"broker {b} SIGTERM exit in {took:.1f}s")
                        wait(lambda: sorted(cluster.live_brokers()) != [1, 2, 3], 30, "gone")
                        cluster.start_broker(b)
                        heal(f"restart of {b}")
                elif scenario == "kill_coord":
                    victim = cluster.coordinator(group)
                    cluster.stop_broker(victim, kill=True)
                    say(f"coordinator broker {victim} SIGKILLed")
                    wait(_absent(cluster, victim), 60, "fenced")
                    r0 = sandbox.stats()["requests"]
                    try:
                        wait(_requests_above(sandbox, r0 + 200), 180, "progress")
                        say("progress with the coordinator down")
                    except TimeoutError as exc:
                        say("NO PROGRESS:", exc)
                    cluster.start_broker(victim)
                    heal(f"kill of {victim}")
                elif scenario == "poison_down":
                    victim = leaders(dlq_topic).get(0, 1)
                    cluster.stop_broker(victim, kill=True)
                    say(f"DLQ leader broker {victim} SIGKILLed")
                    wait(_absent(cluster, victim), 60, "fenced")
                    want = sum(expected_dlq.values()) + 10
                    send_poison(5, 5, "down")
                    try:
                        took = wait(_at_least(dlq_count, want), 120, "dead letters, broker down")
                        say(f"dead letters written with a broker down in {took:.1f}s")
                    except TimeoutError as exc:
                        say("DEAD LETTERS MISSING:", exc, dlq_count())
                    cluster.start_broker(victim)
                    heal(f"poison kill of {victim}")
                elif scenario == "dlq_move":
                    before = leaders(dlq_topic)
                    victim = before.get(0, 1)
                    want = sum(expected_dlq.values()) + 10
                    send_poison(3, 2, "move1")
                    took = cluster.stop_broker(victim)  # controlled shutdown moves leadership
                    send_poison(2, 3, "move2")
                    moved = leaders(dlq_topic)
                    say(f"DLQ leader {victim} SIGTERM in {took:.1f}s; {before}->{moved}")
                    cluster.start_broker(victim)
                    heal(f"dlq leader {victim}")
                    res = admin.elect_leaders(
                        ElectionType.PREFERRED,
                        [TopicPartition(dlq_topic, p) for p in before],
                    )
                    try:
                        res.result(30)
                    except Exception as exc:
                        say("elect:", exc)
                    say("DLQ leaders after preferred election", leaders(dlq_topic))
                    try:
                        took = wait(_at_least(dlq_count, want), 120, "dead letters, move")
                        say(f"dead letters across the leader move in {took:.1f}s")
                    except TimeoutError as exc:
                        say("DEAD LETTERS MISSING:", exc, dlq_count())
                elif scenario == "roll_replicas":
                    victim = cluster.coordinator(group)
                    cluster.stop_broker(victim, kill=True)
                    say(f"broker {victim} (coordinator) SIGKILLed for the replica roll")
                    wait(_absent(cluster, victim), 60, "fenced")
                    for i in reversed(range(REPLICAS)):  # a StatefulSet rolls from the top
                        reps.rolling.add(i)
                        t = time.monotonic()
                        rc = reps.procs[i].terminate(120)
                        say(f"replica {i} SIGTERM exit {rc} in {time.monotonic() - t:.1f}s")
                        reps.restart(i)
                        reps.rolling.discard(i)
                        try:
                            took = wait(_ready(ports[i]), 180, f"replica {i} ready")
                            say(f"replica {i} ready again in {took:.1f}s")
                        except TimeoutError as exc:
                            say("NOT READY:", exc)
                    cluster.start_broker(victim)
                    heal(f"roll with {victim} down")
            except Exception as exc:
                say(f"SCENARIO {scenario} FAILED:", repr(exc))
                for b in (1, 2, 3):
                    if b not in cluster.running():
                        cluster.start_broker(b)
            marks[scenario] = (s0, now())
            say(f"=== {scenario} done; longest stall {reps.stall(s0, now()):.1f}s")
            for line in reps.not_ready(s0, now()):
                say("   ", line)

        feeder.join(900)
        say("feeder done; sent", feeder.sent, "failed", feeder.failed[:3])
        ends: dict[int, int] = {}
        last: dict[int, int] = {}

        def caught_up() -> bool:
            nonlocal ends, last
            ends = end_offsets(bootstrap, topic, PARTITIONS)
            try:
                last = committed_offsets(bootstrap, group, topic, PARTITIONS)
            except Exception as exc:
                say("committed unreadable:", exc)
                return False
            return all(last[p] == ends[p] for p in ends)

        try:
            took = wait(caught_up, 300, "committed to end")
            say(f"committed to end {took:.1f}s after the feed ended")
        except TimeoutError:
            say("NOT CAUGHT UP: committed", last, "ends", ends)
        dlq = read_all(bootstrap, dlq_topic)
        kinds: Counter[str] = Counter()
        per_key: Counter[bytes] = Counter()
        for m in dlq:
            h = headers_of(m)
            kinds[h.get(H_REASON, "?")] += 1
            per_key[m.key() or b""] += 1
        say("dead letters:", len(dlq), "expected", dict(expected_dlq), "reasons", dict(kinds))
        say("dead letters twice for one key:", {k: v for k, v in per_key.items() if v > 1})
        if dlq:
            say("a dead letter's headers:", headers_of(dlq[0]))
        say("exits:", reps.exits)
        try:
            repeats = assert_sandbox_converged(sandbox, expected)
            say("sandbox converged; repeated applied requests:", repeats)
        except AssertionError as exc:
            say("SANDBOX MISMATCH:", str(exc)[:1500])
        statuses: Counter[str] = Counter()
        for o in sandbox.orders():
            for r in o.get("history", []):
                statuses[f"{r['method']} {r['status']}"] += 1
        say("sandbox history by method/status:", dict(statuses))
        say("sandbox stats:", sandbox.stats())
        reps.stop_flag = True
        reps.join(30)
        for i, p in enumerate(reps.procs):
            say(f"replica {i} final SIGTERM exit", p.terminate(120))
        (out / "samples.json").write_text(json.dumps(reps.samples))
        (out / "marks.json").write_text(json.dumps(marks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
