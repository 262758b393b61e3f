"""The chart's NOTES.txt, rendered for each workload kind: every command in it works as printed."""

from __future__ import annotations

import re

import pytest

from tests.deploy.conftest import REQUIRED, by_kind, render, render_notes

_EXEC = re.compile(r"kubectl exec -n (?P<namespace>\S+) (?P<target>\S+) -- button-consumer check")

_KINDS = {
    "Deployment": "staticMembership.enabled=false",
    "StatefulSet": "staticMembership.enabled=true",
}


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_the_notes_kubectl_exec_names_a_target_of_the_workload_kind(kind: str) -> None:
    """The ``kubectl exec`` the notes print reaches a pod of the rendered workload: a
    Deployment's by ``deployment/NAME`` (its pods' names end in a hash no template knows), a
    StatefulSet's first pod by its name, ``NAME-0``. Before, a Deployment's notes printed
    ``NAME-<pod>``, a pod that does not exist."""
    sets = (*REQUIRED, _KINDS[kind])
    workloads = by_kind(render(*sets))
    notes = render_notes(*sets)

    commands = _EXEC.findall(notes)
    assert set(workloads) & set(_KINDS) == {kind}, sorted(workloads)
    assert f"runs as a {kind}" in notes, notes
    name = workloads[kind]["metadata"]["name"]
    expected = {"Deployment": f"deployment/{name}", "StatefulSet": f"{name}-0"}[kind]
    assert commands == [("default", expected)], notes
    assert not re.search(r"<\w+>", notes), notes  # nothing left for the reader to fill in
