"""Counts in the words an operator reads: one of a kind in the singular."""

from __future__ import annotations

import pytest

from consumer.domain.topics import lost_changelog_problem
from consumer.domain.wording import counted


@pytest.mark.parametrize(
    ("count", "noun", "plural", "text"),
    [
        (0, "partition", None, "0 partitions"),
        (1, "partition", None, "1 partition"),
        (2, "dead letter", None, "2 dead letters"),
        (1, "API key", None, "1 API key"),
        (12_000, "event", None, "12,000 events"),
        (1, "entry", "entries", "1 entry"),
        (3, "entry", "entries", "3 entries"),
    ],
)
def test_counted_says_the_count_and_the_noun_agreeing_with_it(
    count: int, noun: str, plural: str | None, text: str
) -> None:
    assert counted(count, noun, plural) == text


def test_a_one_partition_changelog_to_create_is_named_in_the_singular() -> None:
    """``run`` and ``check``: the changelog to create by hand for a one-partition input."""
    problem = lost_changelog_problem("profiles", "svc", "events", [0], 1)

    assert problem is not None
    assert "cleanup.policy=compact, 1 partition," in problem
