"""``diagnose``: every invalid variable at once, each by name; typos flagged as warnings."""

from __future__ import annotations

from consumer.settings import KafkaSettings, SettingProblem, diagnose


def test_every_invalid_variable_is_reported_by_name() -> None:
    """Three bad values in three sections: three problems, not just the first."""
    sections, problems = diagnose(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "KAFKA_GROUP_PROTOCOL": "eager",
            "BUTTON_BASE_URL": "ftp://button",
            "DELIVERY_MAX_IN_FLIGHT": "lots",
            "DELIVERY_DRY_RUN": "true",
        }
    )
    assert {p.variable for p in problems} == {
        "KAFKA_GROUP_PROTOCOL",
        "BUTTON_BASE_URL",
        "DELIVERY_MAX_IN_FLIGHT",
    }
    assert sections["kafka"] is None
    assert sections["mapping"] is not None


def test_a_missing_key_and_a_reserved_property_are_problems() -> None:
    """No API key outside dry run, and a librdkafka property the service owns."""
    _, problems = diagnose({"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_CONFIG_GROUP_ID": "g"})
    assert SettingProblem("BUTTON_API_KEY", "is required (or DELIVERY_DRY_RUN=true)") in problems
    assert any(p.variable == "KAFKA_CONFIG_GROUP_ID" and p.fatal for p in problems)


def test_a_misspelt_variable_is_a_warning_with_a_suggestion() -> None:
    """KAFKA_TOPICS is no setting: a warning naming KAFKA_TOPIC, not a failure."""
    _, problems = diagnose(
        {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TOPICS": "x", "DELIVERY_DRY_RUN": "true"}
    )
    assert problems == [
        SettingProblem(
            "KAFKA_TOPICS", "is not a setting of this service (did you mean KAFKA_TOPIC?)", False
        )
    ]


def test_a_dry_run_is_diagnosed_with_its_own_group_changelog_and_dlq() -> None:
    """``check`` under DELIVERY_DRY_RUN=true looks at what a dry ``run`` uses: the group,
    changelog and DLQ named with ``-dry-run``, never the live ones (``Settings.from_env``)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_GROUP_ID": "shop-button"}
    live, _ = diagnose({**env, "BUTTON_API_KEY": "sk-1"})
    dry, _ = diagnose({**env, "DELIVERY_DRY_RUN": "true"})

    names = [
        (k.group_id, k.profile_topic, k.dlq_topic, k.topic)
        for k in (live["kafka"], dry["kafka"])
        if isinstance(k, KafkaSettings)
    ]
    assert names == [
        (
            "shop-button",
            "button-consumer-profiles",
            "commerce-events.button-dlq",
            "commerce-events",
        ),
        (
            "shop-button-dry-run",
            "button-consumer-profiles-dry-run",
            "commerce-events.button-dlq-dry-run",
            "commerce-events",
        ),
    ]


def test_a_profile_bound_the_changelog_cannot_hold_is_a_problem() -> None:
    """The cross-field rule ``run`` refuses to start on is a ``check`` failure too, naming
    the variable."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DELIVERY_DRY_RUN": "true"}

    _, too_large = diagnose({**env, "MAPPING_MAX_PROFILE_BYTES": "2000000"})
    _, too_small = diagnose({**env, "KAFKA_MAX_MESSAGE_BYTES": "100000"})
    _, fine = diagnose(env)

    assert [(p.variable, p.fatal) for p in too_large + too_small] == [
        ("MAPPING_MAX_PROFILE_BYTES", True),
        ("MAPPING_MAX_PROFILE_BYTES", True),
    ]
    assert "KAFKA_MAX_MESSAGE_BYTES" in too_large[0].message
    assert fine == []


def test_every_refused_kafka_property_is_a_problem_of_its_own() -> None:
    """Two refused ``KAFKA_CONFIG_*`` variables (a reserved property and a weakened guarantee):
    both named, not only the first one met."""
    _, problems = diagnose(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
            "DELIVERY_DRY_RUN": "true",
            "KAFKA_CONFIG_GROUP_ID": "x",
            "KAFKA_CONFIG_ACKS": "1",
        }
    )

    assert sorted(p.variable for p in problems if p.fatal) == [
        "KAFKA_CONFIG_ACKS",
        "KAFKA_CONFIG_GROUP_ID",
    ]
