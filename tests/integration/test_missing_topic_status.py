"""A topic a command needs that does not exist: every command exits 1 (README "Commands": a
failure the command could not get past, a topic error), naming the topic's variable, never 2
(a configuration error: the settings are valid, the cluster lacks the topic)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        (["run"], "KAFKA_TOPIC"),
        (["test-event", "--order-id", "ORD-MISSING-TOPIC"], "KAFKA_TOPIC"),
        (["replay-dlq", "--no-progress"], "KAFKA_DLQ_TOPIC"),
        (["replay-dlq", "--no-progress", "--dry-run"], "KAFKA_DLQ_TOPIC"),
    ],
)
def test_a_missing_topic_exits_1_naming_its_variable(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    unique_name: Callable[[str], str],
    command: list[str],
    variable: str,
) -> None:
    """``run`` (the input topic), ``test-event`` (the input topic) and ``replay-dlq`` (the
    DLQ) against a broker that lacks the topic: exit 1 and one line on stderr naming it."""
    existing = make_topic(partitions=1, prefix="present")
    missing = unique_name("no-such-topic")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "BUTTON_"))}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": missing if variable == "KAFKA_TOPIC" else existing,
        "KAFKA_DLQ_TOPIC": missing if variable == "KAFKA_DLQ_TOPIC" else f"{existing}.dlq",
        "KAFKA_PROFILE_TOPIC": f"{existing}.profiles",
        "KAFKA_GROUP_ID": unique_name("missing-topic"),
        "BUTTON_API_KEY": "sk-never-used",
        "ADMIN_PORT": "0",
        "LOG_FORMAT": "console",
    }
    executable = Path(sys.executable).parent / "button-consumer"

    done = subprocess.run(
        [str(executable), *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{variable}: " in done.stdout + done.stderr
    assert missing in done.stdout + done.stderr
    assert "configuration error" not in done.stderr
