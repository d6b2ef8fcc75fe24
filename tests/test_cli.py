"""The command line: every subcommand's module imports and registers (the runner builds
only the parser of the command it runs, so a broken import elsewhere would wait for its
first user). No mount."""

from __future__ import annotations

import pytest

from harness.cli import ALIASES, COMMANDS, build_parser, main


def test_every_command_registers() -> None:
    parser = build_parser()  # imports every command's module
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert set(sub.choices) == set(COMMANDS) | set(ALIASES)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ringside " + command)
