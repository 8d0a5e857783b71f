"""`peftbench pareto`: the experiments on the Pareto frontier of two metrics, one per line, by x."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RESULTS_DIR", help="results folders or task folders")
    parser.add_argument("--x", required=True, metavar="METRIC", help="first metric, e.g. memory_max")
    parser.add_argument("--y", required=True, metavar="METRIC", help="second metric, e.g. test_accuracy")
    parser.add_argument("--task", help="the task, when the folders hold results of several")
    parser.add_argument("--filter", default="", help="""only runs matching e.g. "peft_type != 'FULL'" """)
    parser.add_argument("--verbose", "-v", action="store_true", help="also print both metric values")
    parser.add_argument(
        "--include-temporary", action="store_true", help="with a task folder, also its temporary_results/"
    )


def main(args: argparse.Namespace) -> int:
    from peftbench.analysis.aggregate import (
        available_metrics,
        choose_task,
        scoring_conflicts,
        seed_summary,
        select,
        task_metrics,
    )
    from peftbench.analysis.filters import apply_filter
    from peftbench.analysis.pareto import find_metric, pareto_front
    from peftbench.commands._results import load_reporting_warnings
    from peftbench.errors import BadInput

    loaded = load_reporting_warnings(args.paths, include_temporary=args.include_temporary)
    if loaded.table.empty:
        print(loaded.summary, file=sys.stderr)
        return 0
    task = choose_task(loaded.table, args.task)
    metrics, note = task_metrics(task)
    if note:
        print(f"note: {note}", file=sys.stderr)
    runs = apply_filter(select(loaded.table, task=task), args.filter)
    for line in scoring_conflicts(runs):
        print(line, file=sys.stderr)
    x, y = find_metric(args.x, metrics), find_metric(args.y, metrics)
    usable = [m.name for m in available_metrics(runs, metrics)]
    for metric in (x, y):
        if not runs.empty and metric.name not in usable:
            raise BadInput(
                f'metric "{metric.name}" has no values in these results; with values: {", ".join(usable)}'
            )
    # several seeds of one experiment: the frontier is over experiment means
    experiments = seed_summary(runs, [x, y]) if not runs.empty else runs
    front = pareto_front(experiments, x=x, y=y) if not runs.empty else runs
    for _, row in front.iterrows():
        if args.verbose:
            print(f"{row['experiment_name']}\t{x.name}={row[x.name]:.6g}\t{y.name}={row[y.name]:.6g}")
        else:
            print(row["experiment_name"])
    return 0
