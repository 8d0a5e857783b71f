"""Regenerate (or check) the generated blocks of Markdown files.

A block is the output of a peftbench command, between two markers:

    <!-- generated: peftbench table benchmarks/tinymath --format markdown -->
    ...output of the command...
    <!-- end generated -->

so that the tables in a README come from the committed result files through the project's own
code, never typed by hand. Commands run in-process from the repository root.

    python scripts/readme_blocks.py benchmarks/tinymath/README.md           # rewrite the blocks
    python scripts/readme_blocks.py --check benchmarks/tinymath/README.md   # exit 1 when stale
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- generated: (?P<cmd>[^\n]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def run_command(command: str) -> str:
    """stdout of `peftbench ...` run in-process from the repository root."""
    from peftbench.cli import main

    argv = shlex.split(command)
    if argv[:1] != ["peftbench"]:
        raise ValueError(f"only peftbench commands can generate a block, not: {command}")
    out = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        with contextlib.redirect_stdout(out):
            try:
                rc = main(argv[1:])
            except SystemExit as exc:  # argparse's --version and --help exit
                rc = exc.code or 0
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise RuntimeError(f"`{command}` exited {rc}")
    return out.getvalue()


def regenerate(text: str) -> str:
    def fill(m: re.Match) -> str:
        body = run_command(m["cmd"]).rstrip("\n")
        return f"{m.group(1)}{body}\n{m.group(4)}"

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        new = regenerate(text)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
