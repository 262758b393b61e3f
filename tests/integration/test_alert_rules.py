"""The alert rules in deploy/prometheus/: valid for Prometheus, and their promtool unit tests pass.

promtool comes with Debian's ``prometheus`` package, which ``make test`` installs when missing
(``consumer.devtools.prereqs``); without it these tests fail rather than skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from consumer.devtools.dashboard import PANELS

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


def test_the_time_since_button_answered_panel_ignores_a_zero_gauge(tmp_path: Path) -> None:
    """The dashboard's "Time since Button last answered" query, evaluated by promtool: a pod whose
    gauge is 0 (no success yet, or a dry run) gives no series (the panel reads "never"), not
    time() - 0; a pod that had a success gives the seconds since the latest one."""
    (spec,) = [p for p in PANELS if p.title == "Time since Button last answered"]
    (query,) = spec.queries
    expr = query.expr.replace('"$namespace"', '".*"').replace('"$pod"', '".*"')
    gauge = "button_consumer_button_last_success_timestamp_seconds"
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{gauge}{{namespace="shop",pod="bc-0"}}', "values": "0x10"}
                ],
                "promql_expr_test": [{"expr": expr, "eval_time": "10m", "exp_samples": []}],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{gauge}{{namespace="shop",pod="bc-0"}}', "values": "0x10"},
                    {"series": f'{gauge}{{namespace="shop",pod="bc-1"}}', "values": "0 60x9"},
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 540}],
                    }
                ],
            },
        ],
    }
    path = tmp_path / "panel-test.yaml"
    path.write_text(yaml.safe_dump(tests), encoding="utf-8")

    result = promtool("test", "rules", str(path))

    assert result.returncode == 0, result.stdout + result.stderr
