"""``diagnose``: every invalid variable at once, each by name; typos flagged as warnings."""

from __future__ import annotations

from consumer.settings import SettingProblem, diagnose


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
