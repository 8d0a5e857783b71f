"""`peftbench lint`: check experiment folders and result files against the contribution rules."""

from __future__ import annotations

import argparse
import json


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
    from peftbench.lint import default_paths, lint

    findings = lint(args.paths or default_paths())
    if args.errors_only:
        findings = [f for f in findings if f.level == "error"]
    if args.format == "json":
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    return 1 if any(f.level == "error" for f in findings) else 0
