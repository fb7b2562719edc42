import os
import subprocess
import sys

import pytest

from kvant.tui.cli import COMMANDS, build_parser, main


def _kvant(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the Hub is unreachable from tests: fail fast, not by timeout
    return subprocess.run([sys.executable, "-P", "-m", "kvant.tui.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_version_and_help():
    out = _kvant("--version")
    assert out.returncode == 0 and out.stdout.strip().startswith("kvant ")
    helped = _kvant("--help")
    assert helped.returncode == 0
    for name in build_parser()._subparsers._group_actions[0].choices:
        assert name in helped.stdout


def test_every_command_module_is_registered_with_its_help_and_run():
    # the commands folder and the registry agree, and each subcommand calls its own module's run: a module left out
    # of COMMANDS, a name pointing at another module, or a parser without help text fails here
    import importlib
    from pathlib import Path

    from kvant.tui import commands

    on_disk = {p.stem for p in Path(commands.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert set(COMMANDS.values()) == on_disk
    group = build_parser()._subparsers._group_actions[0]
    assert set(group.choices) == set(COMMANDS)
    helps = {a.dest: a.help for a in group._choices_actions}
    for name, module in COMMANDS.items():
        assert group.choices[name].get_default("func") is importlib.import_module(f"kvant.tui.commands.{module}").run
        assert helps.get(name), f"`kvant {name}` has no help line in `kvant --help`"


@pytest.mark.parametrize("argv, needle, code", [
    (["models", "info", "/definitely/not/here"], "/definitely/not/here", 2),  # bad input
    (["models", "info", "no-such-org/no-such-model"], "no-such-org/no-such-model", 3),  # the Hub is unreachable
])
def test_errors_are_one_line_without_traceback(argv, needle, code):
    out = _kvant(*argv)
    assert out.returncode == code
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in out.stderr


def test_debug_flag_shows_the_exception(monkeypatch):
    from kvant.artifact.errors import KvantError

    with pytest.raises(KvantError):
        main(["--debug", "models", "info", "/definitely/not/here"])
