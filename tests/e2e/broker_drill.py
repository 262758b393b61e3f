"""A broker-failure drill: the service (`button-consumer run`) on a three-broker cluster while
brokers restart, die and come back; prints a timeline and what reached the sandbox.

    python -m tests.e2e.broker_drill [scenario ...]   (rolling, kill, two_down, elect)
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from consumer.adapters.avro_codec import build_encoder
from consumer.devtools._proc import free_port, repo_root
from consumer.sandbox.testing import run_sandbox
from consumer.settings import Settings
from tests.e2e.cluster import LocalCluster
from tests.e2e.harness import (
    ServiceProcess,
    assert_sandbox_converged,
    committed_offsets,
    expected_orders,
    log_events,
    past_events,
    read_all,
)

API_KEY = "sk-drill"
PARTITIONS = 6
T0 = time.monotonic()


def now() -> float:
    return time.monotonic() - T0


def say(*parts: object) -> None:
    print(f"[{now():7.1f}]", *parts, flush=True)


def wait(cond: Callable[[], Any], timeout: float, what: str) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic() - started
        time.sleep(0.25)
    raise TimeoutError(f"{what}: not within {timeout} s")


def http(url: str) -> tuple[int, str]:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except Exception as e:
        return -1, str(e)


def metrics(port: int) -> dict[str, float]:
    code, text = http(f"http://127.0.0.1:{port}/metrics")
    out: dict[str, float] = {}
    if code != 200:
        return out
    for line in text.splitlines():
        if line.startswith("button_consumer_") or line.startswith("process_start"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


INTERESTING = (
    "button_consumer_dead_letter",
    "button_consumer_broker_reachable",
    "button_consumer_ready",
    "button_consumer_paused",
    "button_consumer_changelog",
    "button_consumer_profile_write",
    "button_consumer_commit",
    "button_consumer_records_finished_total",
    "button_consumer_consumer_lag_sum",
    "button_consumer_rebalances",
    "button_consumer_in_flight",
    "button_consumer_fatal",
    "button_consumer_kafka",
    "process_start",
)


class Monitor(threading.Thread):
    def __init__(
        self, port: int, sandbox: Any, proc: list[ServiceProcess], restart: Callable[[], None]
    ) -> None:
        super().__init__(daemon=True)
        self.restart = restart
        self.exits: list[tuple[float, int | None]] = []
        self.port, self.sandbox, self.proc = port, sandbox, proc
        self.samples: list[dict[str, Any]] = []
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            t = now()
            try:
                requests = int(self.sandbox.stats()["requests"])
            except Exception:
                requests = -1
            ready, body = http(f"http://127.0.0.1:{self.port}/readyz")
            m = metrics(self.port)
            self.samples.append(
                {
                    "t": t,
                    "requests": requests,
                    "ready": ready,
                    "readyz": body[:300],
                    "alive": self.proc[-1].alive(),
                    "m": {k: v for k, v in m.items() if k.startswith(INTERESTING)},
                }
            )
            if not self.proc[-1].alive() and not self.stop_flag:
                code = self.proc[-1]._proc.poll() if self.proc[-1]._proc else None
                self.exits.append((now(), code))
                say(f"SERVICE EXITED with {code}; restarting it (as Kubernetes would)")
                self.restart()
            time.sleep(1.0)

    def stall(self, start: float, end: float) -> float:
        """The longest time in [start, end] with no new Button request."""
        rows = [s for s in self.samples if start <= s["t"] <= end and s["requests"] >= 0]
        longest, last_t, last_r = 0.0, None, None
        for s in rows:
            if last_r is None or s["requests"] > last_r:
                last_t, last_r = s["t"], s["requests"]
            else:
                longest = max(longest, s["t"] - last_t)
        return longest

    def changes(self, start: float, end: float) -> list[str]:
        rows = [s for s in self.samples if start <= s["t"] <= end]
        out: list[str] = []
        prev: dict[str, Any] = {}
        for s in rows:
            cur = {**s["m"], "ready": s["ready"], "alive": s["alive"]}
            for k, v in cur.items():
                if "bucket" in k or k.endswith(("_sum", "_count", "_created")):
                    continue
                if k in ("button_consumer_records_finished_total",) or "lag" in k:
                    continue
                if prev.get(k) != v:
                    out.append(f"{s['t']:.0f}s {k}={v}")
            prev = cur
        return out


class Feeder(threading.Thread):
    """Produces the events at ``rate`` per second (acks=all, idempotent, long timeouts)."""

    def __init__(self, bootstrap: str, settings: Settings, events: list[Any], rate: float):
        super().__init__(daemon=True)
        self.events, self.rate = events, rate
        self.encoder = build_encoder(
            Path(settings.schema.dir), None, None, topic=settings.kafka.topic
        )
        self.topic = settings.kafka.topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": 600000,
                "linger.ms": 20,
                "log_level": 3,
            }
        )
        self.sent = 0
        self.failed: list[str] = []

    def run(self) -> None:
        started = time.monotonic()

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                self.failed.append(str(err))

        for i, event in enumerate(self.events):
            due = started + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing, not synchronisation
            while True:
                try:
                    self.producer.produce(
                        self.topic,
                        key=event.user_key.encode(),
                        value=self.encoder.encode_event(event),
                        on_delivery=done,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.5)
            self.sent += 1
            self.producer.poll(0)
        left = self.producer.flush(600)
        if left:
            self.failed.append(f"{left} unflushed")


def _absent(cluster: LocalCluster, broker: int) -> Callable[[], bool]:
    return lambda: broker not in cluster.live_brokers()


def _requests_above(sandbox: Any, count: int) -> Callable[[], bool]:
    return lambda: int(sandbox.stats()["requests"]) > count


def _replaced(procs: list[ServiceProcess], old: ServiceProcess) -> Callable[[], bool]:
    return lambda: procs[-1] is not old


def _ready(port: int) -> Callable[[], bool]:
    return lambda: http(f"http://127.0.0.1:{port}/readyz")[0] == 200


def _elapsed(since: float, seconds: float) -> Callable[[], bool]:
    """The outage's length (a scenario's definition, not a synchronisation)."""
    return lambda: time.monotonic() - since > seconds


def main(scenarios: list[str]) -> int:
    try:
        return _main(scenarios)
    finally:
        say("drill ended")


def _main(scenarios: list[str]) -> int:
    users = int(dict(a.split("=") for a in sys.argv[1:] if "=" in a).get("users", 1500))
    rate = float(dict(a.split("=") for a in sys.argv[1:] if "=" in a).get("rate", 30))
    with LocalCluster(3) as cluster, run_sandbox(api_keys=(API_KEY,), mode="process") as sandbox:
        bootstrap = cluster.bootstrap_servers
        say("cluster up", bootstrap, cluster.data_dir)
        topic, group = "purchases", "drill-group"
        admin = cluster.admin()
        admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(60)
        wait(lambda: cluster.fully_replicated([topic]), 60, "input replicated")
        admin_port = free_port()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": group,
            "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
            "KAFKA_PROFILE_TOPIC": f"{topic}.profiles",
            "KAFKA_CREATE_TOPICS": "true",
            "BUTTON_API_KEY": API_KEY,
            "BUTTON_BASE_URL": sandbox.base_url,
            "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": str(admin_port),
            "LOG_LEVEL": "info",
            "LOG_FORMAT": "json",
        }
        settings = Settings.from_env(env)
        raw = past_events(users, seed=7)
        first_seen: dict[str, int] = {}
        for e in raw:
            first_seen.setdefault(e.user_key, len(first_seen))
        # a steady mix: users' journeys in waves of 25 users, each user's events in order
        events = sorted(raw, key=lambda e: first_seen[e.user_key] // 25)
        expected = expected_orders(events, settings)
        say(f"{len(events)} events, {len(expected)} orders expected")
        out = repo_root() / ".run" / "drill"
        out.mkdir(parents=True, exist_ok=True)
        logdir = out
        procs = [ServiceProcess(env, logdir / "run1.log").start()]
        wait(lambda: http(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200, 120, "ready")
        topics = [topic, f"{topic}.dlq", f"{topic}.profiles", "__consumer_offsets"]
        wait(lambda: cluster.fully_replicated(topics), 60, "all replicated")
        for t in topics[1:3]:
            for fut in admin.describe_configs([ConfigResource("topic", t)]).values():
                cfg = fut.result(30)
                say(
                    t,
                    "min.insync.replicas",
                    cfg["min.insync.replicas"].value,
                    "replicas",
                    cluster.partitions(t).get(0),
                )

        def restart() -> None:
            # Called on the monitor's thread: the child's parent-death signal is tied to the
            # thread that forked it, so a service started here is SIGKILLed when the monitor
            # stops (the final "exit -9" after a mid-drill restart is the drill's, not the
            # service's).
            procs.append(ServiceProcess(env, logdir / f"run1.{len(procs)}.log").start())

        monitor = Monitor(admin_port, sandbox, procs, restart)
        monitor.start()
        feeder = Feeder(bootstrap, settings, events, rate)
        feeder.start()
        wait(lambda: sandbox.order_count() > 50, 120, "first orders")
        say("flowing; coordinator", cluster.coordinator(group))

        def leaders(t: str) -> dict[int, int]:
            return {p: v[0] for p, v in cluster.partitions(t).items()}

        def heal(what: str) -> None:
            took = wait(lambda: cluster.fully_replicated(topics), 240, f"ISR full after {what}")
            say(f"ISR full after {what} in {took:.1f}s")

        marks: dict[str, tuple[float, float]] = {}
        for scenario in scenarios:
            s0 = now()
            say(
                f"=== {scenario}: coordinator={cluster.coordinator(group)} "
                f"changelog leaders={leaders(topic + '.profiles')}"
            )
            if scenario == "rolling":
                coord = cluster.coordinator(group)
                order = [coord] + [b for b in (1, 2, 3) if b != coord]
                for b in order:
                    took = cluster.stop_broker(b)
                    say(
                        f"broker {b} stopped (SIGTERM) in {took:.1f}s; "
                        f"coordinator now {cluster.coordinator(group)}"
                    )
                    wait(lambda: sorted(cluster.live_brokers()) != [1, 2, 3], 30, "gone")
                    cluster.start_broker(b)
                    heal(f"restart of {b}")
            elif scenario == "kill":
                victim = leaders(topic + ".profiles").get(0, 1)
                cluster.stop_broker(victim, kill=True)
                say(f"broker {victim} SIGKILLed")
                wait(_absent(cluster, victim), 60, "fenced")
                say("fenced; ISR of changelog", cluster.partitions(topic + ".profiles"))
                # hold it down until the service has delivered more
                r0 = sandbox.stats()["requests"]
                wait(_requests_above(sandbox, r0 + 200), 180, "progress, broker down")
                cluster.start_broker(victim)
                heal(f"kill of {victim}")
            elif scenario.startswith("two_down"):
                down = [1, 2]
                for b in down:
                    cluster.stop_broker(b, kill=True)
                say(f"brokers {down} SIGKILLed")
                wait(lambda: cluster.live_brokers() == [3], 60, "fenced")
                t_down = time.monotonic()
                say("only 3 alive; changelog", cluster.partitions(topic + ".profiles"))
                # 45 s down, observed every second by the monitor
                hold = float(scenario.partition(":")[2] or 50)
                wait(_elapsed(t_down, hold), hold + 10, f"{hold}s")
                for b in down:
                    cluster.start_broker(b)
                say("brokers back")
                heal("two down")
            elif scenario == "restart":
                # A clean restart mid-stream (the monitor starts the next process): later
                # refunds of orders sent before it need the restored profiles.
                first = procs[-1]
                say("service SIGTERM, exit", first.terminate(120))
                wait(_replaced(procs, first), 30, "restarted")
                wait(_ready(admin_port), 180, "ready after the restart")
                say("restarted; restored:", log_events(procs[-1].log_path, "partitions_restored"))
            elif scenario == "elect":
                from confluent_kafka import ElectionType, TopicPartition

                cl = topic + ".profiles"
                # move leadership: restart nothing, reassign replicas order then elect
                parts = cluster.partitions(cl)
                say("before", parts)
                res = admin.elect_leaders(
                    ElectionType.PREFERRED, [TopicPartition(cl, p) for p in parts]
                )
                try:
                    say("elect:", {str(k): v for k, v in res.result(30).items()})
                except Exception as exc:
                    say("elect error:", exc)
                say("after", cluster.partitions(cl))
            marks[scenario] = (s0, now())
            say(
                f"=== {scenario} done; stall {monitor.stall(s0, now()):.1f}s; "
                f"alive={procs[-1].alive()}"
            )
            for line in monitor.changes(s0, now()):
                say("   ", line)

        feeder.join(900)
        say("feeder done; sent", feeder.sent, "failed", feeder.failed[:3])
        ends = None

        def caught_up() -> bool:
            nonlocal ends
            from tests.e2e.harness import end_offsets

            ends = end_offsets(bootstrap, topic, PARTITIONS)
            try:
                c = committed_offsets(bootstrap, group, topic, PARTITIONS)
            except Exception as exc:
                say("committed offsets unreadable:", exc)
                return False
            return all(c[p] == ends[p] for p in ends)

        try:
            took = wait(caught_up, 300, "committed to end")
            say(f"committed to end {took:.1f}s after the feed ended")
        except TimeoutError as exc:
            say("NOT CAUGHT UP", exc, committed_offsets(bootstrap, group, topic, PARTITIONS), ends)
        dlq = read_all(bootstrap, f"{topic}.dlq")
        say("dead letters:", len(dlq))
        for m in dlq[:5]:
            say("   DLQ", dict((k, v[:200]) for k, v in (m.headers() or [])))
        say("service alive:", procs[-1].alive(), "exits:", monitor.exits)
        try:
            repeats = assert_sandbox_converged(sandbox, expected)
            say("sandbox converged; repeated updates:", repeats)
        except AssertionError as exc:
            say("SANDBOX MISMATCH:", str(exc)[:2000])
        # restart the service: profile restore
        monitor.stop_flag = True
        monitor.join(30)
        code = procs[-1].terminate(120)
        say("service stopped, exit", code)
        changelog = read_all(bootstrap, f"{topic}.profiles")
        latest: dict[bytes, bytes | None] = {}
        for m in changelog:
            latest[m.key()] = m.value()
        live = sum(1 for v in latest.values() if v is not None)
        say("changelog records:", len(changelog), "keys", len(latest), "live profiles", live)
        procs.append(ServiceProcess(env, logdir / "run2.log").start())
        wait(lambda: http(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200, 180, "ready 2")
        say(
            "restarted service ready; restored metric:",
            {k: v for k, v in metrics(admin_port).items() if "restor" in k},
        )
        restored = [
            json.loads(line)
            for line in (logdir / "run2.log").read_text().splitlines()
            if '"partitions_restored"' in line
        ]
        say("restored on restart:", [(r["partitions"], r["records"]) for r in restored])
        monitor.stop_flag = True
        for name in ("run1.log", "run2.log"):
            path = logdir / name
            levels: dict[str, int] = {}
            for line in path.read_text(errors="replace").splitlines():
                try:
                    doc = json.loads(line)
                except ValueError:
                    levels["<non-json>"] = levels.get("<non-json>", 0) + 1
                    continue
                key = f"{doc.get('level')}:{doc.get('event')}"
                levels[key] = levels.get(key, 0) + 1
            say(name, json.dumps(dict(sorted(levels.items(), key=lambda kv: -kv[1])), indent=0))
        out = repo_root() / ".run" / "drill"
        out.mkdir(exist_ok=True)
        (out / "samples.json").write_text(json.dumps(monitor.samples))
        (out / "marks.json").write_text(json.dumps(marks))
        _ = log_events
        procs[-1].terminate(120)
    return 0


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if "=" not in a] or ["rolling", "kill", "two_down"]))
