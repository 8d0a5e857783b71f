"""`peftbench table`: the results table of one or more results folders, as CSV, Markdown or JSON."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RESULTS_DIR", help="results folders or task folders")
    parser.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    parser.add_argument("--task", help="only this task's runs (default: all tasks found)")
    parser.add_argument("--filter", default="", help="""keep rows matching e.g. "peft_type == 'LORA'" """)
    parser.add_argument(
        "--all-columns", action="store_true", help="every column (default: compact for markdown)"
    )
    parser.add_argument(
        "--include-temporary", action="store_true", help="with a task folder, also its temporary_results/"
    )
    parser.add_argument(
        "--columns", help="comma-separated columns to show, in this order (default: compact or all)"
    )
    parser.add_argument("--sort", metavar="COLUMN", help="sort rows by this column (missing values last)")
    parser.add_argument("--descending", action="store_true", help="with --sort: largest first")


def main(args: argparse.Namespace) -> int:
    from peftbench.analysis.aggregate import (
        compact_columns,
        display_columns,
        select,
        task_metrics,
        tasks_in,
    )
    from peftbench.analysis.filters import apply_filter
    from peftbench.commands._results import load_reporting_warnings

    loaded = load_reporting_warnings(args.paths, include_temporary=args.include_temporary)
    table = select(loaded.table, task=args.task) if args.task else loaded.table
    table = apply_filter(table, args.filter)
    print(loaded.summary, file=sys.stderr)
    if table.empty:
        return 0
    if args.columns:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        _check_columns(columns, table, "--columns")
    elif args.all_columns or args.format != "markdown":
        columns = display_columns(table)
    else:
        metrics = {m.name: m for task in tasks_in(table) for m in task_metrics(task)[0]}.values()
        columns = compact_columns(table, metrics)
        if table["task"].nunique() > 1:
            columns.insert(0, "task")
    if args.sort:
        _check_columns([args.sort], table, "--sort")
        # stable: ties keep the table's order (by experiment, then seed)
        table = table.sort_values(args.sort, ascending=not args.descending, kind="stable", na_position="last")
    view = table[columns]
    if args.format == "csv":
        view.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(view.to_json(orient="records", date_format="iso", indent=2))
    else:
        try:
            text = view.to_markdown(index=False, floatfmt=_float_formats(view))
        except ImportError:
            from peftbench.errors import BadInput

            raise BadInput(
                "Markdown output needs the tabulate package (pip install tabulate); or --format csv"
            ) from None
        print(text)
    return 0


def _check_columns(columns: list[str], table, option: str) -> None:
    from peftbench.errors import BadInput, did_you_mean

    for column in columns:
        if column not in table.columns:
            raise BadInput(f'{option}: unknown column "{column}"{did_you_mean(column, table.columns)}')


def _float_formats(view) -> tuple[str, ...]:
    """Per column: whole numbers (bytes, parameter counts) with thousands separators, others 4 digits."""
    from peftbench.analysis.aggregate import whole_number_columns

    whole = set(whole_number_columns(view))
    return tuple(",.0f" if column in whole else ".4g" for column in view.columns)
