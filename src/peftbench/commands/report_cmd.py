"""`peftbench report`: write one self-contained HTML file with the table, Pareto plot and curves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="DIR", help="task folders (benchmarks/<task>) or results folders"
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="default: report.html")
    parser.add_argument("--title", default="peftbench report")
    parser.add_argument(
        "--flips",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="add the test items that flipped between two runs, each EXP (seed 0) or EXP@SEED",
    )
    parser.add_argument(
        "--include-temporary", action="store_true", help="with a task folder, also its temporary_results/"
    )


def main(args: argparse.Namespace) -> int:
    from peftbench.commands._results import load_reporting_warnings
    from peftbench.dashboard.report import write_report
    from peftbench.errors import BadInput

    if args.output.exists() and args.output.is_dir():
        raise BadInput(f"{args.output}: is a folder; give the report's file name, e.g. -o report.html")
    loaded = load_reporting_warnings(args.paths, include_temporary=args.include_temporary)
    print(loaded.summary, file=sys.stderr)
    flips = tuple(args.flips) if args.flips else None
    print(write_report(loaded, args.output, title=args.title, flips=flips))
    return 0
