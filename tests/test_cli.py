"""The command line: every sub-command is wired, documented, and `--help` works without heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peftbench.cli import COMMANDS, MAINTAINER_SUMMARIES, SUMMARIES, main

COMMAND_MODULES = Path(__file__).resolve().parent.parent / "src" / "peftbench" / "commands"


def test_every_command_module_is_a_command_with_a_summary():
    modules = {p.stem.removesuffix("_cmd").replace("_", "-") for p in COMMAND_MODULES.glob("*_cmd.py")}
    assert modules == set(COMMANDS) == set(SUMMARIES) | set(MAINTAINER_SUMMARIES)
    assert not set(SUMMARIES) & set(MAINTAINER_SUMMARIES)


def test_no_module_shares_its_name_with_another():
    modules = [p.stem for p in COMMAND_MODULES.parent.rglob("*.py") if p.stem != "__init__"]
    assert sorted(m for m in set(modules) if modules.count(m) > 1) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert COMMANDS[command] in capsys.readouterr().out


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
