"""``button-consumer replay-dlq`` against a real broker when it does not replay everything.

Dead letters that name a partition the input topic does not have (yet) cannot be written: the
command exits non-zero naming them, the DLQ group is committed in each DLQ partition only up to
the first of them, and once the partitions exist a rerun replays the rest and completes.

A selection not replayed whole (a filter value that selects no dead letter, selected dead
letters held back behind an unselected first one) exits 1 as well, dry run or not.

A filtered replay under ``--group-id`` commits, per DLQ partition, only up to the first dead
letter it did not replay (filtered out or held back): a later run under the same group, whatever
its filter, still reads every dead letter the first one left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewPartitions

from consumer.domain.deadletter import (
    H_ORDER_ID,
    H_PARKED,
    H_PARKS_ORDER,
    H_PARTITION,
    H_REASON,
    H_REPLAYED,
    H_STAGE,
    H_TOPIC,
)
from tests.conftest import _wait_for_leaders
from tests.e2e.harness import committed_offsets, headers_of, read_all

pytestmark = pytest.mark.broker

# Dead letters as (DLQ partition, the input partition they came from); the input topic has
# one partition, so the record at DLQ 0:2 names one that does not exist.
DEAD_LETTERS = [(0, 0), (0, 0), (0, 3), (0, 0), (1, 0), (1, 0)]


def _write_dead_letters(bootstrap: str, dlq: str, source: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, (dlq_partition, partition) in enumerate(DEAD_LETTERS):
        headers: list[tuple[str, str | bytes | None]] = [
            (H_TOPIC, source.encode()),
            (H_PARTITION, str(partition).encode()),
        ]
        producer.produce(
            dlq,
            key=f"user-{i}".encode(),
            value=f"v{i}".encode(),
            partition=dlq_partition,
            headers=headers,
        )
    assert producer.flush(30.0) == 0, "the dead letters were not all written"


def _replay_dlq(
    bootstrap: str, topic: str, dlq: str, group: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BUTTON_"))}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq}
    executable = Path(sys.executable).parent / "button-consumer"
    return subprocess.run(
        [str(executable), "replay-dlq", "--group-id", group, "--no-progress", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_replay_commits_only_up_to_the_first_failed_delivery_and_a_rerun_completes(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """A dead letter for a missing partition: exit 1 naming it, DLQ partition 0 committed up to
    it (1 to its end); after the partition is added a rerun replays from it and exits 0."""
    topic = make_topic(partitions=1, prefix="replay-in")
    dlq = make_topic(partitions=2, prefix="replay-dlq")
    group = unique_name("replay")
    _write_dead_letters(kafka_bootstrap, dlq, topic)

    first = _replay_dlq(kafka_bootstrap, topic, dlq, group)

    assert first.returncode == 1, first.stderr
    assert f"{dlq} dead letter 0:2 not replayed" in first.stderr, first.stderr
    assert committed_offsets(kafka_bootstrap, group, dlq, 2) == {0: 2, 1: 2}
    replayed = {headers_of(m)[H_REPLAYED] for m in read_all(kafka_bootstrap, topic)}
    assert {"0:0", "0:1", "1:0", "1:1"} <= replayed, replayed
    assert "0:2" not in replayed

    # The cause is fixed: the partition the dead letter names now exists.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=60)
    _wait_for_leaders(admin, topic, 4, timeout=30.0)
    second = _replay_dlq(kafka_bootstrap, topic, dlq, group)

    assert second.returncode == 0, second.stderr
    assert committed_offsets(kafka_bootstrap, group, dlq, 2) == {0: 4, 1: 2}
    on_three = [
        headers_of(m)[H_REPLAYED] for m in read_all(kafka_bootstrap, topic) if m.partition() == 3
    ]
    assert on_three == ["0:2"]


def test_a_selection_not_replayed_whole_exits_1_and_a_dry_run_says_so_too(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """X's refused create, then its refund parked behind it: ``--reason nosuch`` and
    ``--order-id NOPE`` select nothing, ``--reason parked`` leaves the refund held back: each
    exits 1 and writes nothing, and its ``--dry-run`` exits 1 too; ``--order-id X`` replays
    both and exits 0."""
    topic = make_topic(partitions=1, prefix="replay-in")
    dlq = make_topic(partitions=1, prefix="replay-dlq")
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for reason, parked in (("http_400", "false"), ("parked", "true")):
        headers: list[tuple[str, str | bytes | None]] = [
            (H_TOPIC, topic.encode()),
            (H_PARTITION, b"0"),
            (H_REASON, reason.encode()),
            (H_ORDER_ID, b"X"),
            (H_PARKED, parked.encode()),
        ]
        producer.produce(dlq, key=b"user-x", value=reason.encode(), partition=0, headers=headers)
    assert producer.flush(30.0) == 0, "the dead letters were not all written"

    for selection, says in (
        (["--reason", "nosuch"], "--reason nosuch: no dead letter has it"),
        (["--order-id", "NOPE"], "--order-id NOPE: no dead letter has it"),
        (["--reason", "parked"], "left 1 selected parked dead letter:"),
    ):
        for dry_run in ([], ["--dry-run"]):
            done = _replay_dlq(
                kafka_bootstrap, topic, dlq, unique_name("replay"), *selection, *dry_run
            )
            assert (done.returncode, says in done.stderr) == (1, True), done.stderr
    assert read_all(kafka_bootstrap, topic) == []

    replayed = _replay_dlq(kafka_bootstrap, topic, dlq, unique_name("replay"), "--order-id", "X")

    assert replayed.returncode == 0, replayed.stderr
    assert [headers_of(m)[H_REPLAYED] for m in read_all(kafka_bootstrap, topic)] == ["0:0", "0:1"]


def _write_letters(
    bootstrap: str, dlq: str, source: str, letters: list[tuple[str, str, str, bool]]
) -> None:
    """``(key, order, reason, parked)`` dead letters of ``source``'s partition 0, in DLQ
    partition 0, in that order (a first dead letter of a refused delivery parks its order)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, order, reason, parked in letters:
        headers: list[tuple[str, str | bytes | None]] = [
            (H_TOPIC, source.encode()),
            (H_PARTITION, b"0"),
            (H_REASON, reason.encode()),
            (H_ORDER_ID, order.encode()),
            (H_PARKED, b"true" if parked else b"false"),
            (H_STAGE, b"TASK_PUT"),
        ]
        if parked:
            headers.append((H_PARKS_ORDER, b"false"))
        producer.produce(dlq, key=key.encode(), value=reason.encode(), partition=0, headers=headers)
    assert producer.flush(30.0) == 0, "the dead letters were not all written"


def _replayed(bootstrap: str, topic: str) -> list[str]:
    """The DLQ positions of the records replayed to ``topic``, in the order written."""
    return [headers_of(m)[H_REPLAYED] for m in read_all(bootstrap, topic)]


def test_a_filtered_replay_under_a_group_commits_only_up_to_the_first_letter_it_left(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``--reason http_400 --group-id G`` replays W's create (0:0), then leaves X's
    (``retries_exhausted``, 0:1) and the refund parked behind it (0:2), and replays Y's create
    (0:3) with its parked refund (0:4): G is committed at 0:1, not past X. A whole-DLQ replay
    under G then replays X's records (and Y's again: harmless) and commits the end."""
    topic = make_topic(partitions=1, prefix="replay-in")
    dlq = make_topic(partitions=1, prefix="replay-dlq")
    group = unique_name("replay")
    _write_letters(
        kafka_bootstrap,
        dlq,
        topic,
        [
            ("u0", "W", "http_400", False),
            ("u1", "X", "retries_exhausted", False),
            ("u1", "X", "parked", True),
            ("u2", "Y", "http_400", False),
            ("u2", "Y", "parked", True),
        ],
    )

    first = _replay_dlq(kafka_bootstrap, topic, dlq, group, "--reason", "http_400")

    assert first.returncode == 0, first.stderr
    assert _replayed(kafka_bootstrap, topic) == ["0:0", "0:3", "0:4"]
    assert committed_offsets(kafka_bootstrap, group, dlq, 1) == {0: 1}

    second = _replay_dlq(kafka_bootstrap, topic, dlq, group)

    assert second.returncode == 0, second.stderr
    assert _replayed(kafka_bootstrap, topic)[3:] == ["0:1", "0:2", "0:3", "0:4"]
    assert committed_offsets(kafka_bootstrap, group, dlq, 1) == {0: 5}


def test_a_held_back_letter_is_not_committed_past_and_a_later_run_of_the_group_replays_it(
    kafka_bootstrap: str, make_topic: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    """``--reason parked --group-id G``: X's refund, parked behind X's refused create that the
    filter does not select, is held back (exit 1, nothing written) and G commits nothing; a
    later ``--reason http_400`` run under G replays the create and the refund after it."""
    topic = make_topic(partitions=1, prefix="replay-in")
    dlq = make_topic(partitions=1, prefix="replay-dlq")
    group = unique_name("replay")
    _write_letters(
        kafka_bootstrap,
        dlq,
        topic,
        [("u1", "X", "http_400", False), ("u1", "X", "parked", True)],
    )

    held = _replay_dlq(kafka_bootstrap, topic, dlq, group, "--reason", "parked")

    assert held.returncode == 1, held.stderr
    assert "left 1 selected parked dead letter:" in held.stderr, held.stderr
    assert _replayed(kafka_bootstrap, topic) == []
    assert committed_offsets(kafka_bootstrap, group, dlq, 1) == {0: -1001}

    later = _replay_dlq(kafka_bootstrap, topic, dlq, group, "--reason", "http_400")

    assert later.returncode == 0, later.stderr
    assert _replayed(kafka_bootstrap, topic) == ["0:0", "0:1"]
    assert committed_offsets(kafka_bootstrap, group, dlq, 1) == {0: 2}
