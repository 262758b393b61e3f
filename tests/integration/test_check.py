"""``button-consumer check`` against the real local broker, registry and Button sandbox."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumer import checks
from consumer.bootstrap import topic_plan, validate_topics
from consumer.domain.topics import created_topic_configs
from consumer.sandbox.testing import SandboxHandle, run_sandbox
from consumer.settings import Settings

pytestmark = pytest.mark.broker
KEY = "sk-check"
SCHEMAS = str(Path(__file__).resolve().parents[2] / "schemas")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxHandle]:
    with run_sandbox(api_keys=(KEY,)) as handle:
        yield handle


@pytest.fixture
def good_env(
    kafka_bootstrap: str,
    schema_registry_url: str,
    sandbox: SandboxHandle,
    make_topic: Callable[..., str],
) -> dict[str, str]:
    topic = make_topic(partitions=3, prefix="events")
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC": topic,
        "KAFKA_PROFILE_TOPIC": make_topic(3, {"cleanup.policy": "compact"}, prefix="profiles"),
        "KAFKA_DLQ_TOPIC": make_topic(1, {"retention.ms": str(14 * 86_400_000)}, prefix="dlq"),
        "KAFKA_GROUP_ID": f"{topic}-group",
        "SCHEMA_REGISTRY_URL": schema_registry_url,
        "SCHEMA_DIR": SCHEMAS,
        "BUTTON_BASE_URL": sandbox.base_url,
        "BUTTON_API_KEY": KEY,
    }


def _run(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = checks.check(as_json=True, timeout=5.0, environ=env)
    return code, json.loads(capsys.readouterr().out)


def _failed(document: dict[str, Any]) -> dict[str, str]:
    return {c["setting"]: c["message"] for c in document["checks"] if c["status"] == "fail"}


def test_check_passes_against_the_local_broker_registry_and_sandbox(
    good_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A correct configuration: exit 0, every check ok, the key accepted by the sandbox."""
    code, document = _run(good_env, capsys)
    assert (code, document["ok"], _failed(document)) == (0, True, {})
    settings = {c["setting"] for c in document["checks"] if c["status"] == "ok"}
    assert {
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_PROFILE_TOPIC",
        "SCHEMA_REGISTRY_URL",
        "BUTTON_API_KEY",
    } <= settings
    # No KAFKA_GROUP_ID here: on a fresh broker the group coordinator may still be loading, and
    # the group check then warns (never fails).


def test_a_topics_line_gives_retention_only_where_delete_applies(
    good_env: dict[str, str],
    make_topic: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Topics configured as the service creates them (no warning, so `check` shows their
    configuration): the changelog is compacted only, where retention.ms (the broker's 7 days by
    default) deletes nothing, so its line gives no retention (observed: `cleanup.policy=compact,
    retention 7 days`); the DLQ's and the input's delete policy give theirs."""
    settings = Settings.from_env(good_env)
    dlq_config, changelog_config = created_topic_configs(topic_plan(settings), 1)
    profiles = make_topic(3, changelog_config, prefix="profiles")
    dlq = make_topic(1, dlq_config, prefix="dlq")
    env = {**good_env, "KAFKA_PROFILE_TOPIC": profiles, "KAFKA_DLQ_TOPIC": dlq}

    code, document = _run(env, capsys)

    assert code == 0, _failed(document)
    lines = {
        c["setting"]: c["message"] for c in document["checks"] if "cleanup.policy" in c["message"]
    }
    assert lines["KAFKA_PROFILE_TOPIC"] == (
        f"topic {profiles}: cleanup.policy=compact, no retention by time "
        "(compaction keeps each key's latest record)"
    )
    days = f"{settings.kafka.dlq_retention_ms / 86_400_000:g} days"
    assert lines["KAFKA_DLQ_TOPIC"] == f"topic {dlq}: cleanup.policy=delete, retention {days}"
    assert re.fullmatch(
        rf"topic {re.escape(good_env['KAFKA_TOPIC'])}: cleanup\.policy=delete, retention "
        r"(\S+ days|forever)",
        lines["KAFKA_TOPIC"],
    ), lines["KAFKA_TOPIC"]


def test_check_names_every_problem_in_one_run(
    good_env: dict[str, str],
    make_topic: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad values, a refused key, a profile topic neither compacted nor co-partitioned: all
    reported together, each by its setting, and the exit status is 1."""
    env = {
        **good_env,
        "DELIVERY_MAX_IN_FLIGHT": "lots",
        "MAPPING_ATTRIBUTION_WINDOW_HOURS": "-1",
        "LOG_LEVEL": "verbose",
        "KAFKA_PROFILE_TOPIC": make_topic(partitions=2, prefix="profiles"),
        "BUTTON_API_KEY": "sk-wrong",
    }
    code, document = _run(env, capsys)
    failed = _failed(document)
    assert code == 1
    assert not document["ok"]
    assert {
        "DELIVERY_MAX_IN_FLIGHT",
        "MAPPING_ATTRIBUTION_WINDOW_HOURS",
        "LOG_LEVEL",
        "KAFKA_PROFILE_TOPIC",
        "BUTTON_API_KEY",
    } <= set(failed)
    assert "refused the API key (HTTP 401)" in failed["BUTTON_API_KEY"]


def test_unreachable_services_are_named_without_raw_librdkafka_lines(
    good_env: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """A closed Kafka port and registry URL fail by name; librdkafka prints nothing itself."""
    env = {
        **good_env,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:1",
    }
    code = checks.check(timeout=2.0, environ=env)
    out, err = capfd.readouterr()
    assert code == 1
    assert "FAIL  KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at 127.0.0.1:1" in out
    assert "FAIL  SCHEMA_REGISTRY_URL" in out
    assert "rdkafka" not in out + err
    assert "%3|" not in out + err


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KAFKA_CONFIG_SECURITY_PROTOCAL", "SASL_SSL", "No such configuration property"),
        ("KAFKA_CONFIG_SECURITY_PROTOCOL", "SASL_SLL", 'Invalid value "SASL_SLL"'),
        ("KAFKA_CONFIG_LINGER_MS", "soon", "Invalid value"),
    ],
)
def test_a_property_librdkafka_refuses_is_a_failure_naming_its_variable(
    good_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    message: str,
) -> None:
    """A misspelt ``KAFKA_CONFIG_*`` property, or a value librdkafka does not accept, fails by
    its variable (an alias such as ``linger.ms`` too) and the other sections are still
    checked, instead of a traceback."""
    code, document = _run({**good_env, variable: value}, capsys)

    failed = _failed(document)
    assert (code, list(failed)) == (1, [variable])
    assert message in failed[variable]
    assert any(c["setting"] == "BUTTON_API_KEY" and c["status"] == "ok" for c in document["checks"])


def test_a_dry_run_asked_for_in_another_letter_case_fails_instead_of_checking_the_live_group(
    good_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``delivery_dry_run=true`` beside a live configuration: ``run`` refuses to start with it,
    so ``check`` fails it by that variable (naming DELIVERY_DRY_RUN), rather than passing
    against the live group a start would never use."""
    code, document = _run({**good_env, "delivery_dry_run": "true"}, capsys)

    failed = _failed(document)
    assert (code, list(failed)) == (1, ["delivery_dry_run"])
    assert "did you mean DELIVERY_DRY_RUN?" in failed["delivery_dry_run"]


def test_a_concurrency_the_connection_pool_cannot_carry_is_a_warning(
    good_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """DELIVERY_CONCURRENCY_MAX above BUTTON_MAX_CONNECTIONS: ``check`` warns by
    BUTTON_MAX_CONNECTIONS naming DELIVERY_CONCURRENCY_MAX too, and still passes (exit 0), as
    ``run`` starts with it."""
    env = {**good_env, "DELIVERY_CONCURRENCY_MAX": "128", "BUTTON_MAX_CONNECTIONS": "32"}
    code, document = _run(env, capsys)

    warned = {c["setting"]: c["message"] for c in document["checks"] if c["status"] == "warn"}
    assert (code, _failed(document)) == (0, {})
    assert "DELIVERY_CONCURRENCY_MAX (128)" in warned["BUTTON_MAX_CONNECTIONS"]


def test_a_lost_changelog_fails_as_run_refuses_it(
    good_env: dict[str, str], kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing changelog is "created at start" only for a group without committed offsets on
    the input; for one that has them, ``check`` fails it as ``run`` refuses to create it."""
    env = {**good_env, "KAFKA_PROFILE_TOPIC": f"{good_env['KAFKA_TOPIC']}.lost-profiles"}
    code, document = _run(env, capsys)
    lines = {c["setting"]: c for c in document["checks"] if "lost-profiles" in c["message"]}
    assert lines["KAFKA_PROFILE_TOPIC"]["status"] == "ok"
    assert "created at start" in lines["KAFKA_PROFILE_TOPIC"]["message"]

    committer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": env["KAFKA_GROUP_ID"]})
    try:
        committer.commit(offsets=[TopicPartition(env["KAFKA_TOPIC"], 1, 0)], asynchronous=False)
    finally:
        committer.close()
    code, document = _run(env, capsys)
    failed = _failed(document)
    assert code == 1
    assert env["KAFKA_GROUP_ID"] in failed["KAFKA_PROFILE_TOPIC"]
    assert "does not exist" in failed["KAFKA_PROFILE_TOPIC"]


def test_a_changelog_whose_record_limit_run_refuses_fails_check_too(
    good_env: dict[str, str],
    make_topic: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A compacted, co-partitioned changelog whose ``max.message.bytes`` (100000) is below the
    largest profile record: ``run`` refuses it, so ``check`` fails it by the same rule, naming
    KAFKA_PROFILE_TOPIC and max.message.bytes, and shows the warnings ``run`` logs as
    ``topic_unfit`` (no compaction bound, a record limit below KAFKA_MAX_MESSAGE_BYTES, a DLQ
    not using LogAppendTime) as warning lines. Every problem of the judge ``run`` applies is a
    line of ``check``: a refusal a failure, a warning a warning."""
    changelog = make_topic(
        3, {"cleanup.policy": "compact", "max.message.bytes": "100000"}, prefix="prof-small"
    )
    env = {**good_env, "KAFKA_PROFILE_TOPIC": changelog}

    code, document = _run(env, capsys)

    lines = {
        status: [(c["setting"], c["message"]) for c in document["checks"] if c["status"] == status]
        for status in ("fail", "warn")
    }
    assert code == 1
    assert any(
        s == "KAFKA_PROFILE_TOPIC" and "max.message.bytes is 100000" in m for s, m in lines["fail"]
    )
    problems = validate_topics(Settings.from_env(env))
    assert {p.setting for p in problems if p.fatal} == {"KAFKA_PROFILE_TOPIC"}
    for problem in problems:
        found = lines["fail" if problem.fatal else "warn"]
        assert any(s == problem.setting and problem.message in m for s, m in found), problem
    assert {s for s, _ in lines["fail"]} == {"KAFKA_PROFILE_TOPIC"}
    warned = lines["warn"]
    assert any("max.compaction.lag.ms" in m for s, m in warned if s == "KAFKA_PROFILE_TOPIC")
    assert any("LogAppendTime" in m for s, m in warned if s == "KAFKA_DLQ_TOPIC")


def test_a_new_group_over_a_changelog_that_holds_profiles_warns(
    good_env: dict[str, str], kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``KAFKA_GROUP_ID`` with nothing committed (a typo, ``button-consumr``) over a changelog
    another group filled: ``run`` would read the input again from ``auto.offset.reset`` and
    re-send every order it finds (409s, then updates). ``check`` warns, naming the group and the
    changelog; over an empty changelog, a new group is simply new."""
    code, document = _run(good_env, capsys)
    group = [c for c in document["checks"] if c["setting"] == "KAFKA_GROUP_ID"]
    assert [c["status"] for c in group] in (["ok"], ["warn"])  # warn: a coordinator loading
    assert "holds profiles" not in group[0]["message"]

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(good_env["KAFKA_PROFILE_TOPIC"], key=b"user-1", value=b"profile", partition=2)
    assert producer.flush(30) == 0
    code, document = _run({**good_env, "KAFKA_GROUP_ID": "button-consumr"}, capsys)

    [line] = [c for c in document["checks"] if c["setting"] == "KAFKA_GROUP_ID"]
    assert (code, line["status"]) == (0, "warn"), line  # a warning, not a failure
    assert "button-consumr" in line["message"]
    assert good_env["KAFKA_PROFILE_TOPIC"] in line["message"]
    assert "holds profiles" in line["message"]
