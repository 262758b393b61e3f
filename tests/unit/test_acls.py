"""What the principal lacks, from what the brokers say it may do (``consumer.domain.acls``)."""

from __future__ import annotations

from consumer.domain.acls import AclNeed, MissingAcl, missing_acls, service_acl_needs

NEED = AclNeed(
    "topic", "orders.profiles", "KAFKA_PROFILE_TOPIC", ("Read", "Write", "DescribeConfigs")
)


def test_each_operation_not_allowed_is_missing_in_the_needs_order() -> None:
    """Only what the brokers did not list is missing; Describe and the like are not needed."""
    missing = missing_acls(NEED, {"Describe", "Write", "Alter"})

    assert [m.operation for m in missing] == ["Read", "DescribeConfigs"]


def test_nothing_is_missing_when_the_brokers_do_not_say() -> None:
    """A broker that reports no authorized operations is not judged (None), unlike one that
    refuses even to describe the resource (an empty set: everything is missing)."""
    assert (len(missing_acls(NEED, None)), len(missing_acls(NEED, frozenset()))) == (0, 3)


def test_a_missing_acl_names_the_operation_the_resource_its_variable_and_kafkas_code() -> None:
    missing = MissingAcl("group", "button", "KAFKA_GROUP_ID", "Read")

    assert str(missing) == (
        "Read on group 'button' (KAFKA_GROUP_ID) is not allowed (GROUP_AUTHORIZATION_FAILED)"
    )


def test_run_needs_read_on_input_and_group_read_write_on_changelog_write_on_dlq() -> None:
    """The README's "Kafka ACLs" for run: DescribeConfigs on each topic for the checks."""
    needs = service_acl_needs("in", "in.profiles", "in.dlq", "group")

    assert {(n.resource, n.name, n.setting): n.operations for n in needs} == {
        ("topic", "in", "KAFKA_TOPIC"): ("Read", "DescribeConfigs"),
        ("topic", "in.profiles", "KAFKA_PROFILE_TOPIC"): ("Read", "Write", "DescribeConfigs"),
        ("topic", "in.dlq", "KAFKA_DLQ_TOPIC"): ("Write", "DescribeConfigs"),
        ("group", "group", "KAFKA_GROUP_ID"): ("Read",),
    }
