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


def test_every_registered_command_has_help():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert "models" in choices
    for name, sub in choices.items():
        assert name in COMMANDS
        assert sub.format_help().startswith("usage: kvant " + name)


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
