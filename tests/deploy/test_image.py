"""The Dockerfile and the lock files, read statically (no Docker engine answers here)."""

from __future__ import annotations

import re
import tomllib

from consumer.settings import AdminSettings
from tests.deploy.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
INSTRUCTIONS = [
    line.strip() for line in DOCKERFILE.splitlines() if line.strip() and not line.startswith("#")
]


def _final_stage() -> list[str]:
    starts = [i for i, line in enumerate(INSTRUCTIONS) if line.startswith("FROM ")]
    return INSTRUCTIONS[starts[-1] :]


def test_the_image_is_multi_stage_on_a_pinned_slim_base() -> None:
    """Two stages; the base is a slim image pinned to a patch version or a digest."""
    assert sum(line.startswith("FROM ") for line in INSTRUCTIONS) == 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))


def test_the_runtime_stage_runs_as_non_root_without_build_tools_or_healthcheck() -> None:
    """The last stage copies the built virtualenv only, runs as uid 10001, relies on probes."""
    final = _final_stage()
    assert final[-1] == 'CMD ["run"]'
    assert "USER 10001:10001" in final
    assert not any(line.startswith(("HEALTHCHECK", "RUN pip", "RUN apt")) for line in final)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert f"EXPOSE {AdminSettings.model_fields['port'].default}" in final


def test_the_image_carries_oci_labels() -> None:
    """Title, version, revision, created, licenses: the OCI annotations a registry shows."""
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in DOCKERFILE


def test_the_image_installs_from_the_hash_checked_lock() -> None:
    """Dependencies come from requirements.lock with --require-hashes, the project without."""
    assert "pip install --require-hashes -r requirements.lock" in DOCKERFILE
    assert "pip install --no-deps ." in DOCKERFILE


def test_the_build_context_admits_only_what_the_image_needs() -> None:
    """.dockerignore denies everything, then admits the package, schemas and metadata."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert lines[lines.index("*") :][:1] == ["*"]
    admitted = {line[1:] for line in lines if line.startswith("!")}
    assert admitted == {"requirements.lock", "pyproject.toml", "README.md", "consumer/", "schemas/"}


def _names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def _locked(path: str) -> set[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return {m.lower() for m in re.findall(r"^([A-Za-z0-9_.\-]+)==", text, re.MULTILINE)}


def test_the_locks_pin_every_declared_dependency() -> None:
    """requirements*.lock are not stale: each dependency of pyproject.toml is pinned there."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _names(project["dependencies"])
    dev = _names(project["optional-dependencies"]["dev"])
    assert runtime <= _locked("requirements.lock")
    assert runtime | dev <= _locked("requirements-dev.lock")
    assert not {"pytest", "mypy", "ruff"} & _locked("requirements.lock")  # no dev tools
