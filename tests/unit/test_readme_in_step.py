"""The README says what the code does: its reason table and its configuration table.

The reasons are read from the code itself (an AST walk over every call that can give an event its
machine reason), not from a list kept by hand, so a new reason, or a renamed one, fails here until
the README names it; and the README may name no reason the code never emits.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, get_args, get_origin

import pytest

from consumer.adapters.metrics import DISCARD_REASONS
from consumer.domain.events import EventReason
from consumer.errors import CodecReason
from consumer.ports import Delivery
from consumer.settings import _SECTIONS, variable_names

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Every call that gives an event its reason: the mapping's Skip/Reject/MappingError, the event
# model's DecodeError (through ``_invalid``), and the ``map`` command's own reject lines.
_REASON_CALLS = frozenset({"Skip", "Reject", "MappingError", "DecodeError", "_invalid", "_reject"})
_SOURCES = (*sorted((ROOT / "consumer" / "domain").glob("*.py")), ROOT / "consumer" / "mapcmd.py")
# Calls that pass on a reason decided elsewhere (already collected where it was decided).
_PASSED_ON = frozenset({"exc.reason", "result.reason", "misfit.reason", "str(reason)"})
_ENUMS: dict[str, Any] = {"EventReason": EventReason, "CodecReason": CodecReason}


def _named_reasons() -> dict[str, str]:
    """The domain's module-level string constants (``REFUND_HELD = "refund_held"``): a reason
    given by its constant's name is read as the constant's value."""
    names: dict[str, str] = {}
    for path in _SOURCES:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.isupper()
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                names[node.targets[0].id] = node.value.value
    return names


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def emitted_reasons() -> dict[str, set[str]]:
    """Reason -> the files that emit it, read from the code."""
    found: dict[str, set[str]] = {}
    named = _named_reasons()
    for path in _SOURCES:
        if path.name == "policy.py":  # the delivery reasons: the generated policy table's
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or _call_name(node) not in _REASON_CALLS:
                continue
            if not node.args:
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                reason = arg.value
            elif isinstance(arg, ast.Name) and arg.id in named:
                reason = named[arg.id]
            elif (
                isinstance(arg, ast.Attribute)
                and isinstance(arg.value, ast.Name)
                and arg.value.id in _ENUMS
            ):
                reason = str(_ENUMS[arg.value.id][arg.attr])
            elif ast.unparse(arg) in _PASSED_ON:
                continue
            else:
                pytest.fail(f"{path.name}:{node.lineno}: a reason this test cannot read")
            found.setdefault(reason, set()).add(path.name)
    # The decoders (adapters) raise DecodeError with these; they reach the DLQ the same way.
    for reason in CodecReason:
        found.setdefault(str(reason), set()).add("errors.py")
    return found


def _between(start: str, end: str) -> str:
    begin = README.index(start)
    return README[begin : README.index(end, begin)]


def readme_reason_table() -> list[str]:
    table = _between("<!-- reasons:start -->", "<!-- reasons:end -->")
    return re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE)


def test_the_reason_table_names_exactly_the_reasons_the_code_emits() -> None:
    """Each reason the code can give an event is in the README's table, and no other is."""
    listed = readme_reason_table()
    assert len(listed) == len(set(listed)), "a reason is listed twice"
    emitted = emitted_reasons()
    missing = sorted(set(emitted) - set(listed))
    stale = sorted(set(listed) - set(emitted))
    assert (missing, stale) == ([], [])


def _policy_reasons() -> set[str]:
    table = _between("<!-- policy-table:start", "<!-- policy-table:end -->")
    return set(re.findall(r"\| `([a-z0-9_]+)` \|", table))


_NAMED_AS_REASON = re.compile(
    r"\b(?:reject(?:ed|s)?|skip(?:ped|s)?|reasons?:?)\s+\(?"  # "reject (", "reason: "...
    r"((?:`[a-z0-9_]+`(?:,|;|/|,? \.\.\.| or)?\s*)+)"  # then a list of backticked names
)


def test_the_readme_names_no_reason_the_code_does_not_emit() -> None:
    """Wherever the README calls something a reject, skip or reason, the code emits it (as a
    decision's reason, or a discarded held refund's: ``held_refunds_discarded_total{reason}``)."""
    known = set(emitted_reasons()) | _policy_reasons() | set(DISCARD_REASONS)
    named: set[str] = set()
    for match in _NAMED_AS_REASON.finditer(README):
        named.update(re.findall(r"`([a-z0-9_]+)`", match.group(1)))
    unknown = sorted(r for r in named - known if not re.fullmatch(r"http_\d{3}", r))
    assert unknown == []


# --- the configuration table ---------------------------------------------------------------------


def readme_settings() -> dict[str, str]:
    """Variable -> default cell, from the README's configuration table."""
    table = _between("## Configuration", "\n## ")
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_<>]+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(" / ")]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        rows.update(zip(names, defaults, strict=True))
    return rows


def test_every_setting_is_in_the_configuration_table_and_no_other() -> None:
    """The README's configuration table lists each environment variable a setting is read from."""
    listed = set(readme_settings()) - {"KAFKA_CONFIG_<NAME>"}
    assert (sorted(variable_names() - listed), sorted(listed - variable_names())) == ([], [])


def _shown(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def _optional(annotation: object) -> bool:
    return get_origin(annotation) is UnionType and NoneType in get_args(annotation)


def test_the_configuration_table_shows_each_default() -> None:
    """Each default in the table is the code's default (``unset`` for none, required marked)."""
    shown = readme_settings()
    wrong = []
    for section in _SECTIONS.values():
        prefix = str(section.model_config.get("env_prefix", ""))
        for name, field in section.model_fields.items():
            if name == "config":
                continue
            variable = prefix + name.upper()
            cell = shown[variable]
            if field.is_required() or (cell.startswith("(required") and field.default is None):
                ok = cell.startswith("(required")
            else:
                ok = cell == _shown(field.default)
                if not ok and _optional(field.annotation):
                    ok = cell == "unset" and field.default is None
            if not ok:
                wrong.append((variable, cell, field.default))
    assert wrong == []


def test_the_deliveries_row_names_exactly_the_fields_of_an_entry() -> None:
    """The README's `/deliveries` row lists each field of an entry (``Delivery``, whose
    ``asdict`` the endpoint serves) by its JSON name, and no other: `at` (Unix seconds) was
    missing."""
    row = next(line for line in README.splitlines() if line.startswith("| `/deliveries"))
    fields_part = row.split("with the fields", 1)[1].split("(no PII)", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", fields_part))
    assert listed == {f.name for f in dataclasses.fields(Delivery)}
