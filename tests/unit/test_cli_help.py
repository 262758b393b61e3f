"""``--help`` of every command shows each option's default, and ``produce-sample`` says what its
fixed seed means: the same events again."""

from __future__ import annotations

import argparse
import re

import pytest

from consumer import cli


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _has_default(action: argparse.Action) -> bool:
    """An option with a default worth showing: not none, not an off flag, not an empty list."""
    default = action.default
    return bool(action.option_strings) and not (
        default is None or default is False or default == [] or default == argparse.SUPPRESS
    )


def _shown(formatter: argparse.HelpFormatter, action: argparse.Action) -> str:
    """The help text ``formatter`` prints for ``action``: none when the option has no help
    (argparse then prints nothing after the option, its default neither)."""
    return formatter._expand_help(action) if action.help else ""


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main([*argv, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_with_a_default_shows_it(command: str) -> None:
    """Each option that has a default says it in its help: argparse's `(default: X)`, or the
    help's own words where they say more (`(default 3)`, `(default 7 days)`); observed:
    `produce-sample --help` showed neither `--users` 200 nor `--seed` 7."""
    parser = _commands()[command]
    formatter = parser._get_formatter()
    silent = [
        "/".join(action.option_strings)
        for action in parser._actions
        if _has_default(action) and "default" not in _shown(formatter, action)
    ]
    assert silent == []


def test_produce_sample_help_shows_its_defaults_and_what_the_seed_repeats(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--users` 200 and `--seed` 7 are shown, and the help says a run with the same seed
    produces the same users, event ids and order ids again, and how to get new ones."""
    text = _help(capsys, "produce-sample")

    assert re.search(r"--users USERS .*\(default: 200\)", text), text
    assert re.search(r"--seed SEED .*\(default: 7\)", text), text
    assert "the same users, event ids and order ids" in text, text
    assert "another --seed" in text, text


def test_flags_and_options_without_a_default_show_none(capsys: pytest.CaptureFixture[str]) -> None:
    """No `(default: None)`, `(default: False)` or `(default: [])`: an off flag, a filter not
    given, a repeatable option not repeated have no default to show."""
    for command in _commands():
        text = _help(capsys, *(["sandbox"] if command == "sandbox" else [command]))
        assert not re.search(r"\(default: (None|False|\[\])\)", text), (command, text)
