"""``consumer.devtools.prereqs``: what each make target needs on PATH."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from consumer.devtools import prereqs


def _tool(directory: Path, name: str, script: str = "exit 0") -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def java_and_maven_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding a Java 17 and Maven, and nothing else (no Prometheus)."""
    _tool(tmp_path, "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    _tool(tmp_path, "mvn")
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def test_the_demo_and_the_broker_need_no_prometheus(java_and_maven_only: Path) -> None:
    """``make demo`` and ``make kafka-up`` check Java and Maven only: a user without root
    and without Prometheus can run the demo."""
    assert prereqs.problems(monitoring=False) == []
    assert prereqs.main([]) == 0


def test_the_tests_need_prometheus_and_promtool(
    java_and_maven_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--monitoring`` (``make test``): both Prometheus tools are named when missing."""
    assert prereqs.problems(monitoring=True) == [
        "`prometheus` (Prometheus) is not on PATH",
        "`promtool` (Prometheus) is not on PATH",
    ]
    _tool(java_and_maven_only, "prometheus")
    _tool(java_and_maven_only, "promtool")
    assert prereqs.problems(monitoring=True) == []
