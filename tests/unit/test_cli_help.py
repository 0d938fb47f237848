"""The CLI explains itself: every argument of every command has help, defaults named."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from felund import __version__
from felund.cli.main import build_parser


def parsers(
    parser: argparse.ArgumentParser, name: str = "felund"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser (the top one and each subcommand's), with its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from parsers(child, f"{name} {sub}")


PARSERS = dict(parsers(build_parser()))


def test_the_walk_sees_every_command() -> None:
    assert {"felund", "felund stop", "felund relay serve", "felund circle leave"} <= set(PARSERS)


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_argument_has_help_and_names_its_default(command: str) -> None:
    parser = PARSERS[command]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        assert action.help, f"{command} {action.dest} has no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in " ".join(text.split()), (command, action)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"felund {__version__}"


@pytest.mark.parametrize("command", sorted({c.split()[1] for c in PARSERS if " " in c}))
def test_a_command_s_own_parser_is_the_whole_parser_s(command: str) -> None:
    """A command's start builds its own parser alone: the same arguments, help, defaults."""
    alone = dict(parsers(build_parser(command)))
    mine = {name: p for name, p in PARSERS.items() if name.split()[:2] == ["felund", command]}
    assert set(alone) == {"felund", *mine}
    for name, parser in mine.items():
        assert alone[name].format_help() == parser.format_help(), name
        assert alone[name].get_default("func") is parser.get_default("func"), name


def test_no_such_command_gets_the_whole_parser_s_answer() -> None:
    assert build_parser("nosuch").format_help() == build_parser().format_help()
