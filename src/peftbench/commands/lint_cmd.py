"""`peftbench lint`: check experiment folders and result files against the contribution rules."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="task folders (benchmarks/<task>) or experiment folders; default: every task under ./benchmarks",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one line per finding, `path: error|warning: message [rule]`; json: a list of objects",
    )
    parser.add_argument(
        "--errors-only", action="store_true", help="show errors only (warnings never change the exit code)"
    )


def main(args: argparse.Namespace) -> int:
    from peftbench.maintainer.lint import check, default_paths

    tic = time.perf_counter()
    run = check(args.paths or default_paths(), progress=_bar if sys.stderr.isatty() else None)
    findings = [f for f in run.findings if f.level == "error"] if args.errors_only else run.findings
    if args.format == "json":
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    # on stderr, so that stdout stays one JSON document or one finding per line, for scripts
    print(summary(run, seconds=time.perf_counter() - tic), file=sys.stderr)
    return 1 if run.count("error") else 0


def summary(run: Any, *, seconds: float) -> str:
    """E.g. "lint: 63 experiments and 20 result files checked, 0 errors, 2 warnings in 51 s"."""
    return (
        f"lint: {_plural(run.experiments, 'experiment')} and {_plural(run.results, 'result file')} "
        f"checked, {_plural(run.count('error'), 'error')}, {_plural(run.count('warning'), 'warning')} "
        f"in {seconds:.0f} s"
    )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _bar(experiments: list[Any], task: str) -> Any:
    from tqdm import tqdm

    return tqdm(experiments, desc=f"lint {task}", unit="experiment", leave=False)
