"""Every command's help gives an example, and the example works as typed.

The examples are read from the commands' own help text, so a help page cannot promise a
command line that fails. Each runs in a fresh directory that sees the repository's
``traces/`` and ``examples/`` (the examples are written for the repository root).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import typer.main

from dicesim.cli import _register, app as dicesim_app, main as dicesim_main
from validate.cli import app as validate_app, main as validate_main

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {"dicesim": (dicesim_app, dicesim_main), "python3 -m validate": (validate_app, validate_main)}
#: examples that read what another command's example wrote
NEEDS = {"dicesim results report": "dicesim study"}


def _leaves(group, path: str) -> dict:
    if hasattr(group, "commands"):  # a group (typer vendors its own click: no isinstance check)
        return {k: v for name, cmd in group.commands.items() for k, v in _leaves(cmd, f"{path} {name}").items()}
    return {path: group}


def _commands() -> dict:
    _register()
    out: dict = {}
    for prog, (app, _) in PROGRAMS.items():
        out.update(_leaves(typer.main.get_command(app), prog))
    return out


def example(help_text: str, prog: str) -> list[str]:
    """The example command line in a help text (the first line that starts with the program)."""
    lines = [ln.strip() for ln in help_text.splitlines()]
    found = [ln for ln in lines if ln.startswith(prog + " ")]
    assert any(ln.startswith("Example") for ln in lines), "no 'Example' paragraph"
    assert found, f"no line starting with {prog!r}"
    return shlex.split(found[0][len(prog):])


def _run(prog: str, argv: list[str]) -> int:
    return PROGRAMS[prog][1](argv)


COMMANDS = _commands()


def test_every_command_is_covered():
    assert len(COMMANDS) >= 20 and "dicesim recommend" in COMMANDS and "python3 -m validate run" in COMMANDS


@pytest.mark.parametrize("prog", list(PROGRAMS))
def test_top_level_help_has_an_example_of_a_real_command(prog):
    argv = example(typer.main.get_command(PROGRAMS[prog][0]).help, prog)
    assert f"{prog} {argv[0]}" in COMMANDS


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_the_example_in_the_help_works_as_typed(path, tmp_path, monkeypatch, capsys):
    prog = next(p for p in PROGRAMS if path.startswith(p + " "))
    monkeypatch.chdir(tmp_path)
    for name in ("traces", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    if path in NEEDS:
        before = NEEDS[path]
        assert _run(prog, example(COMMANDS[before].help, prog)) == 0
    argv = example(COMMANDS[path].help, prog)
    assert " ".join(argv[: len(path.split()) - len(prog.split())]) == path[len(prog) + 1:]  # its own command
    code = _run(prog, argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
