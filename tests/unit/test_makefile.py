"""The Makefile's targets: each one `.PHONY` names has a rule, and `make help` lists it."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")


def _phony() -> list[str]:
    return [
        name
        for line in MAKEFILE.splitlines()
        if line.startswith(".PHONY:")
        for name in line.removeprefix(".PHONY:").split()
    ]


def _rules() -> dict[str, str]:
    """Each target with a rule, and its `## help` text (empty when it has none)."""
    found = re.finditer(r"^([a-zA-Z_-]+):(?!=)[^#\n]*(?:## (.*))?$", MAKEFILE, re.MULTILINE)
    return {m.group(1): m.group(2) or "" for m in found}


def test_every_phony_target_has_a_rule_with_its_help() -> None:
    """A target `.PHONY` names without a rule only prints "Nothing to be done" (`make
    typecheck` did): each has one, with the `##` text `make help` shows."""
    rules = _rules()
    assert "typecheck" in _phony()
    assert [name for name in _phony() if not rules.get(name)] == []


def test_typecheck_runs_mypy_strict_as_lint_does() -> None:
    """`make typecheck` runs the same mypy (strict, from pyproject.toml) as `make lint`."""
    recipe = re.search(r"^typecheck:.*\n((?:\t.*\n)+)", MAKEFILE, re.MULTILINE)
    assert recipe is not None
    assert "$(BIN)/mypy" in recipe.group(1)
