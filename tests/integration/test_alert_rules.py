"""The alert rules in deploy/prometheus/: valid for Prometheus, and their promtool unit tests pass.

promtool comes with Debian's ``prometheus`` package, which ``make test`` installs when missing
(``consumer.devtools.prereqs``); without it these tests fail rather than skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "deploy" / "prometheus").glob("*.yaml"))
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yaml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool is not None, (
        "promtool is not on PATH: run `python -m consumer.devtools.prereqs --monitoring`"
    )
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def test_rule_files_are_valid_prometheus_rules() -> None:
    """`promtool check rules` accepts every rule file of deploy/prometheus/."""
    assert RULES, "no rule files in deploy/prometheus/"
    result = promtool("check", "rules", *map(str, RULES))

    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes every test file of deploy/prometheus/tests/."""
    assert RULE_TESTS, "no rule tests in deploy/prometheus/tests/"
    result = promtool("test", "rules", *map(str, RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
