"""The command line names the setting behind a Kafka client's refusal instead of a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer import cli
from consumer.adapters import kafka_admin
from consumer.errors import BrokerError
from consumer.settings import SettingProblem, kafka_property_problem

ROOT = Path(__file__).resolve().parents[2]
MISSPELT = 'No such configuration property: "security.protocal"'
BAD_VALUE = 'Invalid value "SASL_SLL" for configuration property "security.protocol"'
ALIAS = 'Invalid value for configuration property "queue.buffering.max.ms"'


@pytest.mark.parametrize(
    ("text", "environ", "variable"),
    [
        (
            MISSPELT,
            {"KAFKA_CONFIG_SECURITY_PROTOCAL": "SASL_SSL"},
            "KAFKA_CONFIG_SECURITY_PROTOCAL",
        ),
        (
            BAD_VALUE,
            {"KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SLL", "KAFKA_CONFIG_SASL_MECHANISM": "PLAIN"},
            "KAFKA_CONFIG_SECURITY_PROTOCOL",
        ),
        # linger.ms is librdkafka's alias of queue.buffering.max.ms: the only one set is named.
        (ALIAS, {"KAFKA_CONFIG_LINGER_MS": "soon"}, "KAFKA_CONFIG_LINGER_MS"),
        (ALIAS, {"KAFKA_CONFIG_LINGER_MS": "soon", "KAFKA_CONFIG_ACKS": "all"}, "KAFKA_CONFIG_*"),
        (
            'No such configuration property: "sasl.oauthbearer.client_idd"',
            {"KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT__IDD": "x", "KAFKA_CONFIG_ACKS": "all"},
            "KAFKA_CONFIG_SASL_OAUTHBEARER_CLIENT__IDD",
        ),
    ],
)
def test_a_refused_property_is_named_by_its_variable(
    text: str, environ: dict[str, str], variable: str
) -> None:
    """librdkafka names the property; the problem names the variable that set it."""
    assert kafka_property_problem(text, environ) == SettingProblem(
        variable, f"librdkafka refuses it: {text}"
    )


def test_other_kafka_errors_are_no_setting_problem() -> None:
    assert kafka_property_problem("Local: Broker transport failure", {}) is None


def _command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``button-consumer ARGS`` in a process of its own, with only ``env`` as settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DELIVERY_"))}
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env={**base, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DELIVERY_DRY_RUN": "true", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [("run",), ("produce-sample", "--users", "1")])
def test_a_refused_property_stops_a_command_with_a_configuration_error(
    command: tuple[str, ...],
) -> None:
    """``run`` and ``produce-sample`` with a misspelt ``KAFKA_CONFIG_*`` property exit 2 with
    one line naming the variable, as for any invalid setting, not a Python traceback."""
    done = _command(*command, KAFKA_CONFIG_SECURITY_PROTOCAL="SASL_SSL")

    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert (
        "button-consumer: configuration error: KAFKA_CONFIG_SECURITY_PROTOCAL: "
        f"{MISSPELT} (did you mean security.protocol?)"
    ) in done.stderr


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "KAFKA_CONFIG_FETCH_MAX_BYTESS",
            'No such configuration property: "fetch.max.bytess" (did you mean fetch.max.bytes?)',
        ),
        # The Java client's name of librdkafka's fetch.wait.max.ms.
        (
            "KAFKA_CONFIG_FETCH_MAX_WAIT_MS",
            'No such configuration property: "fetch.max.wait.ms" (did you mean fetch.wait.max.ms?)',
        ),
        # Callbacks and pointers: librdkafka takes them through its API, never as a value.
        ("KAFKA_CONFIG_ERROR__CB", "error_cb is set through librdkafka's API, not a value"),
        ("KAFKA_CONFIG_LOG__CB", "log_cb is set through librdkafka's API, not a value"),
    ],
)
def test_run_refuses_a_property_librdkafka_cannot_take_before_it_starts(
    variable: str, message: str
) -> None:
    """``run`` with a ``KAFKA_CONFIG_*`` name librdkafka does not know, or cannot take as a
    value, exits 2 with one line naming the variable and the property, before its
    ``starting`` line (as for any invalid setting), not a traceback or a Kafka error."""
    done = _command("run", **{variable: "1"})

    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert f"button-consumer: configuration error: {variable}: {message}" in done.stderr
    assert '"starting"' not in done.stdout + done.stderr


def test_run_refuses_a_live_start_asked_for_a_dry_run_by_a_near_miss() -> None:
    """``run`` with DELIVERY_DRYRUN=true (no setting) and an API key: exit 2 naming the
    variable and DELIVERY_DRY_RUN, before anything is consumed or sent."""
    done = _command("run", DELIVERY_DRY_RUN="", DELIVERY_DRYRUN="true", BUTTON_API_KEY="sk-1")

    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert (
        "button-consumer: configuration error: DELIVERY_DRYRUN: is not a setting of this "
        "service (did you mean DELIVERY_DRY_RUN?)"
    ) in done.stderr


@pytest.mark.parametrize("variable", ["delivery_dry_run", "Delivery_Dry_Run"])
def test_run_refuses_a_live_start_asked_for_a_dry_run_in_another_letter_case(
    variable: str,
) -> None:
    """``run`` with delivery_dry_run=true (DELIVERY_DRY_RUN in lower case) and an API key: exit 2
    naming the variable and DELIVERY_DRY_RUN before its ``starting`` line, not a live run."""
    done = _command("run", DELIVERY_DRY_RUN="", BUTTON_API_KEY="sk-1", **{variable: "true"})

    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert (
        f"button-consumer: configuration error: {variable}: is not a setting of this service "
        "(did you mean DELIVERY_DRY_RUN?): setting names are upper case"
    ) in done.stderr
    assert '"starting"' not in done.stdout + done.stderr


def test_a_failure_a_command_cannot_get_past_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``ConsumerError`` out of a command (a broker or registry failure) is its message on
    stderr and exit status 1, not a traceback."""

    def fail(_args: object) -> int:
        raise BrokerError("cannot read the cluster's topics: Local: Broker transport failure")

    monkeypatch.setattr(cli, "_dispatch", fail)

    assert cli.main(["check"]) == 1
    assert capsys.readouterr().err == (
        "button-consumer: cannot read the cluster's topics: Local: Broker transport failure\n"
    )


def test_a_kafka_failure_names_the_brokers_it_was_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """librdkafka's "Failed to get metadata" out of a command, brokers unreachable: one line
    naming them and KAFKA_BOOTSTRAP_SERVERS, exit status 1."""

    def fail(_args: object) -> int:
        error = KafkaError(
            KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure"
        )
        raise KafkaException(error)

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setattr(cli, "_dispatch", fail)

    assert cli.main(["check"]) == 1
    assert capsys.readouterr().err == (
        "button-consumer: Kafka error at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS): Failed to get "
        "metadata: Local: Broker transport failure\n"
    )


@pytest.mark.parametrize(
    "args",
    [("check", "--json", "--timeout", "1"), ("map", "docs/examples/events.jsonl")],
    ids=["check", "map"],
)
def test_a_reader_that_went_away_ends_a_command_quietly(args: tuple[str, ...]) -> None:
    """``button-consumer check --json | head``: once the reader of the output is gone, the
    command ends without a traceback, with 141 (128 + SIGPIPE, as a shell reports a program
    its pipe ended), not 0 as if everything had been read. The read end is closed before the
    command writes anything, so its first write finds no reader."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DELIVERY_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", *args],
        env={**base, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DELIVERY_DRY_RUN": "true"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()

    assert (proc.returncode, stderr) == (141, "")


_BOUND = 20.0
"""Seconds a command may take to give up on brokers that refuse connections: its own start
(imports) and librdkafka's first refused connection. Before the bound they waited 30 s
(``produce-sample``, ``test-event``) or 60 s (``replay-dlq``) for metadata."""


def _run_bounded(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``button-consumer ARGS`` in a process of its own, failing the test after ``_BOUND`` s."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "consumer", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=_BOUND,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} still waited for the brokers after {_BOUND:g} s")


@pytest.mark.parametrize(
    "args",
    [
        ("produce-sample",),
        ("test-event", "--order-id", "T-fast"),
        ("replay-dlq",),
        ("replay-dlq", "--dry-run"),
    ],
    ids=["produce-sample", "test-event", "replay-dlq", "replay-dlq-dry-run"],
)
def test_a_kafka_command_gives_up_on_refusing_brokers_at_once_naming_the_setting(
    args: tuple[str, ...],
) -> None:
    """Every command with a Kafka client of its own, pointed at a port nothing listens on:
    exit status 1 with one line naming the brokers and KAFKA_BOOTSTRAP_SERVERS, as soon as
    librdkafka finds every bootstrap broker down, well within ``_BOUND`` seconds."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DELIVERY_", "SCHEMA_"))
    }
    done = _run_bounded(
        args, {**base, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DELIVERY_DRY_RUN": "true"}
    )

    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1, done.stderr
    assert last.startswith(
        "button-consumer: Kafka error at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS): "
    ), done.stderr
    assert "Connection refused" in last, done.stderr


def test_a_broker_that_accepts_but_never_answers_is_given_up_on_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listener that takes connections and answers nothing (a hung broker, a proxy with
    nothing behind it): librdkafka reports no broker down, so the deadline
    (``BROKER_ANSWER_TIMEOUT``, here 1 s) ends the wait, with exit status 1 naming the
    setting and the deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    servers = f"127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", servers)
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.setattr(kafka_admin, "BROKER_ANSWER_TIMEOUT", 1.0)
    try:
        assert cli.main(["produce-sample"]) == 1
    finally:
        listener.close()

    assert capsys.readouterr().err.splitlines()[-1] == (
        f"button-consumer: Kafka error at {servers} (KAFKA_BOOTSTRAP_SERVERS): no broker "
        "answered a metadata request within 1 s"
    )


def test_check_gives_up_on_refusing_brokers_at_once_not_at_its_timeout() -> None:
    """``check --timeout 60`` pointed at a port nothing listens on: every bootstrap broker
    refuses, so its Kafka line fails as soon as librdkafka finds them all down, naming the
    refusal, well within ``_BOUND`` seconds (it waited out its whole ``--timeout`` before)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "DELIVERY_", "SCHEMA_", "BUTTON_"))
    }
    env = {
        **base,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "BUTTON_API_KEY": "test-key",
        "BUTTON_BASE_URL": "http://127.0.0.1:1",
    }
    done = _run_bounded(("check", "--timeout", "60"), env)

    kafka = [line for line in done.stdout.splitlines() if "KAFKA_BOOTSTRAP_SERVERS" in line]
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(kafka) == 1, done.stdout
    assert kafka[0].startswith("FAIL  KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at 127.0.0.1:1")
    assert "Connection refused" in kafka[0], done.stdout
