"""Helpers for the deployment tier: render the Helm chart and validate manifests offline.

Helm comes from `make helm` (pinned, built with `go install`, under `.cache/tools/`), or from the
`HELM` environment variable. Kubernetes kinds are validated with `kubernetes-validate`'s bundled
schemas; KEDA and Prometheus Operator kinds with the vendored schemas in `crd-schemas/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "button-consumer"
CRD_SCHEMAS = Path(__file__).parent / "crd-schemas"
KUBE_VERSION = "1.33.0"
# The APIs the custom resources need: `helm template` has no cluster to ask.
API_VERSIONS = (
    "keda.sh/v1alpha1/ScaledObject",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "monitoring.coreos.com/v1/ServiceMonitor",
)
# The minimum a release needs: brokers and the Secret holding Button's API key.
REQUIRED = ("kafka.bootstrapServers=kafka:9092", "button.existingSecret=button-api-key")


def helm_binary() -> str:
    """The pinned helm that `make helm` installs, or $HELM."""
    configured = os.environ.get("HELM")
    if configured:
        return configured
    found = sorted((ROOT / ".cache" / "tools").glob("helm-v*/helm"))
    if not found:
        pytest.fail("helm is not installed: run `make helm` (or set HELM)", pytrace=False)
    return str(found[-1])


class HelmFailedError(Exception):
    """`helm template` refused the values; the message is helm's."""


def render(
    *sets: str,
    values_files: Sequence[Path] = (),
    api_versions: Sequence[str] = API_VERSIONS,
    set_strings: Sequence[str] = (),
    flags: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """`helm template` the chart with `--set` (and `--set-string`) pairs, values files and
    other `flags` (`--skip-schema-validation`); the parsed documents."""
    args = [helm_binary(), "template", "release", str(CHART), "--kube-version", KUBE_VERSION]
    args += flags
    for api in api_versions:
        args += ["--api-versions", api]
    for path in values_files:
        args += ["-f", str(path)]
    for pair in sets:
        args += ["--set", pair]
    for pair in set_strings:
        args += ["--set-string", pair]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise HelmFailedError(done.stderr.strip())
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def render_notes(*sets: str) -> str:
    """The chart's ``NOTES.txt`` as ``helm install`` would print it with ``--set`` pairs.

    ``helm template`` leaves NOTES out and ``helm install --dry-run`` needs a cluster, so the
    chart is copied and a template of the copy renders the notes with ``tpl``: the same text,
    values and named templates.
    """
    with tempfile.TemporaryDirectory() as scratch:
        chart = Path(scratch) / CHART.name
        shutil.copytree(CHART, chart, symlinks=False)
        (chart / "notes-under-test.txt").write_text(
            (CHART / "templates" / "NOTES.txt").read_text(encoding="utf-8"), encoding="utf-8"
        )
        (chart / "templates" / "notes-under-test.yaml").write_text(
            'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n', encoding="utf-8"
        )
        args = [helm_binary(), "template", "release", str(chart), "--kube-version", KUBE_VERSION]
        for pair in sets:
            args += ["--set", pair]
        args += ["--show-only", "templates/notes-under-test.yaml"]
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise HelmFailedError(done.stderr.strip())
    return str(yaml.safe_load(done.stdout)["notes"])


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    path = CRD_SCHEMAS / f"{api_version.replace('/', '_')}_{kind}.json"
    if not path.exists():
        return None
    return jsonschema.Draft7Validator(json.loads(path.read_text(encoding="utf-8")))


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise if `doc` breaks its schema: Kubernetes kinds (strict) or the vendored CRDs.

    Raises:
        AssertionError: no schema is known for the kind, or the document breaks it.
    """
    validator = _crd_validator(doc["apiVersion"], doc["kind"])
    if validator is not None:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        details = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
        assert not details, f"{doc['kind']} {doc['metadata']['name']}: " + "; ".join(details)
        return
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise AssertionError(f"no schema for {doc['apiVersion']} {doc['kind']}") from None
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documents by kind (the chart renders at most one of each)."""
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


@pytest.fixture
def chart() -> Callable[..., list[dict[str, Any]]]:
    """`chart("key=value", ...)`: render with the required values plus these."""

    def make(*sets: str, **kwargs: Any) -> list[dict[str, Any]]:
        return render(*REQUIRED, *sets, **kwargs)

    return make
