"""The `peftbench` command line: one sub-command per module in `peftbench.commands`.

Sub-command modules are imported only when used, so that `peftbench --help` and `peftbench run`
do not pay for gradio, ray or plotly imports. Each module defines `add_arguments(parser)` and
`main(args) -> int`; the one-line summaries live here, in SUMMARIES, so that help imports nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from peftbench.errors import BadInput, RunFailed

# name -> module in peftbench.commands (module names cannot contain "-")
COMMANDS = {
    "run": "run",
    "config": "config",
    "sweep": "sweep",
    "list": "list_",
    "lint": "lint",
    "app": "app",
    "report": "report",
    "table": "table",
    "pareto": "pareto",
    "compare": "compare",
    "make-base-model": "make_base_model",
    "inference": "inference",
}

# One-line descriptions for the top-level help, kept here so that help imports nothing heavy.
SUMMARIES = {
    "run": "run one experiment folder and write its result file",
    "config": "show the training parameters with their documentation (--explain)",
    "sweep": "run every pending experiment of a task, locally in parallel or on Ray",
    "list": "list the experiments of a task and whether each is pending",
    "lint": "check experiments and results against the contribution rules",
    "app": "start the Gradio dashboard",
    "report": "write a self-contained HTML report",
    "table": "print the results table (csv, markdown, json)",
    "pareto": "print the Pareto frontier of two metrics",
    "compare": "compare two experiments with confidence intervals and paired tests",
    "make-base-model": "rebuild the embedded benchmark's tiny base model and tokenizer",
    "inference": "measure inference overhead and check capabilities (merge, ...)",
}


def _load(name: str):
    return importlib.import_module(f"peftbench.commands.{COMMANDS[name]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    description = "Replicable, fair comparisons of parameter-efficient fine-tuning methods."
    parser = argparse.ArgumentParser(prog="peftbench", description=description)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in SUMMARIES.items():
        sp = sub.add_parser(name, help=summary, description=summary)
        if name == command:
            _load(name).add_arguments(sp)
    return parser


def _version() -> str:
    from peftbench import __version__

    return f"peftbench {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    command = command if command in COMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", False)
    try:
        return int(_load(args.command).main(args) or 0)
    except (BadInput, RunFailed) as exc:
        if verbose:
            raise
        print(f"peftbench {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"peftbench {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`peftbench table | head`): not an error; silence the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
