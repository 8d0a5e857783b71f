"""`peftbench list`: the runs of a task (experiment and seed), each pending or up to date, and why."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="the task folder, benchmarks/<task>")
    add_selection_arguments(parser)


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--filter",
        metavar="GLOB[,GLOB...]",
        default=None,
        help="only experiments whose <method>/<name> matches one of these globs, e.g. 'lora/*,ia3/*'",
    )
    parser.add_argument(
        "--seeds",
        metavar="N[,N...]",
        default=None,
        help="one run per seed (seed 0 keeps the plain result name); default: each experiment's seed",
    )
    parser.add_argument(
        "--searched",
        action="store_true",
        help="only the catalogue at its searched settings: each searched experiment's -tuned, or the "
        "experiment itself where its search kept its settings (the runs `rank --searched` ranks)",
    )
    parser.add_argument(
        "--include-temporary",
        action="store_true",
        help="a successful full run in temporary_results/ (not --quick, no --set) also makes a run up to "
        "date: for sweeps on a branch or a modified checkout, whose runs are never main runs",
    )


def listing(runs: list, states: dict) -> str:
    from peftbench.sweep.driver import text_table

    rows = [
        {
            "experiment": run.experiment.experiment_name,
            "seed": str(run.seed),
            "state": "pending" if states[run].pending else "up to date",
            "why": states[run].reason,
        }
        for run in runs
    ]
    pending = sum(s.pending for s in states.values())
    return f"{text_table(rows)}\n{pending} pending, {len(runs) - pending} up to date"


def main(args: argparse.Namespace) -> int:
    from peftbench.sweep.pending import parse_seeds, plan, run_state

    runs = plan(args.task, filters=args.filter, seeds=parse_seeds(args.seeds), searched=args.searched)
    states = {run: run_state(run, include_temporary=args.include_temporary) for run in runs}
    print(listing(runs, states))
    return 0
