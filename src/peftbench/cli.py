"""The `peftbench` command line: one sub-command per module in `peftbench.commands` (`<name>_cmd.py`).

Sub-command modules are imported only when used, so that `peftbench --help` and `peftbench run`
do not pay for gradio, ray or plotly imports. Each module defines `add_arguments(parser)` and
`main(args) -> int`; the one-line summaries live here, in SUMMARIES and MAINTAINER_SUMMARIES, so that
help imports nothing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from peftbench.errors import BadInput, RunFailed

# One-line descriptions for the top-level help, kept here so that help imports nothing heavy. The
# command "make-base-model" is the module peftbench.commands.make_base_model_cmd (the suffix keeps the
# command modules' names apart from the modules they drive: run.py, config.py, dashboard/app.py, ...).
SUMMARIES = {
    "run": "run one experiment folder and write its result file",
    "config": "show the training parameters with their documentation (--explain)",
    "sweep": "run every pending experiment of a task, locally in parallel or on Ray",
    "list": "list the experiments of a task and whether each is pending",
    "app": "start the Gradio dashboard",
    "report": "write a self-contained HTML report",
    "table": "print the results table (csv, markdown, json)",
    "pareto": "print the Pareto frontier of two metrics",
    "compare": "compare two experiments with confidence intervals and paired tests",
    "tune": "search hyperparameters, the same budget for every experiment",
    "rank": "rank experiments with rank intervals, the group tied with the best, seed stability",
    "rescore": "recompute result files' test metrics from their stored completions",
    "inference": "measure inference overhead and check capabilities (merge, ...)",
}
# What a maintainer runs (peftbench.maintainer and the embedded model), listed apart in the help.
MAINTAINER_SUMMARIES = {
    "lint": "check experiments and results against the contribution rules",
    "catalogue": "regenerate a task's experiment catalogue (--check: only compare)",
    "make-base-model": "rebuild the embedded benchmark's tiny base model and tokenizer",
    "make-warm-start": "rebuild tinymath-rl's warm start (a short supervised stage on tinymath)",
}
COMMANDS = {**SUMMARIES, **MAINTAINER_SUMMARIES}


def _load(name: str):
    return importlib.import_module(f"peftbench.commands.{name.replace('-', '_')}_cmd")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    description = "Replicable, fair comparisons of parameter-efficient fine-tuning methods."
    parser = argparse.ArgumentParser(prog="peftbench", description=description)
    parser.add_argument("--version", action="version", version=_version())
    parser.epilog = "maintainer commands: " + ", ".join(MAINTAINER_SUMMARIES)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
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
