"""The command line: every sub-command is wired, documented, and `--help` works without heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from peftbench.cli import COMMANDS, SUMMARIES, main


def test_every_command_has_a_summary():
    assert set(COMMANDS) == set(SUMMARIES)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert SUMMARIES[command] in capsys.readouterr().out


def test_top_level_help_imports_nothing_heavy():
    code = (
        "import sys; from peftbench.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'gradio', 'ray', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
