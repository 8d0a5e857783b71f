"""`peftbench rank`: the experiments of a task ranked on one metric, with rank intervals, the group
not significantly different from the best, and the Kendall tau between seeds."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

EPILOG = """RESULTS is a results folder or a task folder (benchmarks/<task>, meaning its results/).
Per experiment: the mean over seeds with its 95% interval, its rank (1 = best) and a 95% rank
interval from a bootstrap over the test items and seeds (test accuracy; other metrics: over seeds);
"tied" marks the experiments not significantly different from the best (Holm-corrected, as
`peftbench compare`). A one-seed experiment is given the task's pooled seed variance. The Kendall tau
between the rankings of every two seeds says how stable the ranking is. Quick and shortened runs
are ranked apart from full runs. --searched ranks the catalogue at its searched settings only: the
fair comparison, where every entry had the same search budget (docs/tuning.md). See
docs/statistics.md, "Rankings"."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("paths", nargs="+", metavar="RESULTS", help="results folders or task folders")
    parser.add_argument("--metric", default="test_accuracy", help="metric to rank on (default test_accuracy)")
    parser.add_argument("--task", help="the task, when the folders hold results of several tasks")
    parser.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    parser.add_argument(
        "--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--alpha", type=float, default=0.05, help="level of the Holm group (default 0.05)")
    parser.add_argument(
        "--include-temporary", action="store_true", help="also read temporary_results/ of task folders"
    )
    parser.add_argument(
        "--searched",
        action="store_true",
        help="rank the catalogue at its searched settings only (`peftbench tune`): each searched "
        "experiment's -tuned runs, or its own where the search kept its settings; task folders only",
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")


def main(args: argparse.Namespace) -> int:
    from peftbench.analysis.aggregate import NO_RESULTS, choose_task, select
    from peftbench.commands._results import load_reporting_warnings
    from peftbench.errors import BadInput

    if args.bootstrap < 1:
        raise BadInput(f"--bootstrap must be at least 1, got {args.bootstrap}")
    if not 0 < args.alpha < 1:
        raise BadInput(f"--alpha must be between 0 and 1, got {args.alpha}")
    loaded = load_reporting_warnings(args.paths, include_temporary=args.include_temporary)
    if loaded.table.empty:
        raise BadInput(f"{NO_RESULTS} in {', '.join(args.paths)}")
    task = choose_task(loaded.table, args.task)
    metric = _metric(task, args.metric)
    from peftbench.analysis.ranking import rank_experiments

    runs, notes = select(loaded.table, task=task), []
    if args.searched:
        runs, notes = _searched_runs(runs, args.paths)
    rankings = rank_experiments(runs, metric, n_boot=args.bootstrap, rng_seed=args.seed, alpha=args.alpha)
    if not rankings:
        raise BadInput(f'task "{task}": no run has a value of {metric.name}')
    rankings = [dataclasses.replace(r, notes=notes + r.notes) for r in rankings]
    if args.format == "json":
        print(json.dumps([_json(task, r) for r in rankings], indent=2))
    else:
        print("\n\n".join(ranking_text(task, r, markdown=args.format == "markdown") for r in rankings))
    return 0


def _searched_runs(runs, paths: list[str]):
    """The runs of the searched set of the task folders (tuning.searched_runs), and its notes."""
    from pathlib import Path

    from peftbench.errors import BadInput
    from peftbench.tuning import searched_runs

    for raw in paths:
        if not (Path(raw) / "experiments").is_dir():
            raise BadInput(f"--searched: {raw} is not a task folder (benchmarks/<task> with experiments/)")
    chosen, notes = searched_runs(runs, [Path(raw) for raw in paths])
    if chosen.empty:
        raise BadInput(f"--searched: no searched experiment has runs in {', '.join(paths)}")
    return chosen, notes


def _metric(task: str, name: str):
    from peftbench.analysis.aggregate import task_metrics
    from peftbench.errors import BadInput, did_you_mean

    metrics, note = task_metrics(task)
    if note:
        print(f"note: {note}", file=sys.stderr)
    by_name = {m.name: m for m in metrics}
    if name not in by_name:
        raise BadInput(f'--metric: unknown metric "{name}" of task "{task}"{did_you_mean(name, by_name)}')
    return by_name[name]


def ranking_text(task: str, ranking, *, markdown: bool) -> str:
    """The ranking as a text or Markdown table with its header and footer lines."""
    from tabulate import tabulate

    from peftbench.analysis.ranking import ranking_display, ranking_notes

    header = f"task {task}: ranking on {ranking.metric.name}" + (
        f" [{ranking.variant}]" if ranking.variant else ""
    )
    view = ranking_display(ranking)
    table = tabulate(view.values.tolist(), headers=list(view.columns),
                     tablefmt="github" if markdown else "simple", disable_numparse=True)  # fmt: skip
    lines = ranking_notes(ranking)
    if markdown:
        return "\n\n".join([f"**{header}**", table, "\n".join(f"- {line}" for line in lines)])
    return "\n".join([header, "", table, "", *lines])


def _missing(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def _json(task: str, ranking) -> dict:
    def clean(value):
        if value is None or _missing(value):
            return None
        return value.item() if hasattr(value, "item") else value

    rows = [{k: clean(v) for k, v in row.items()} for row in ranking.table.to_dict(orient="records")]
    stability = [{k: clean(v) for k, v in row.items()} for row in ranking.stability.to_dict(orient="records")]
    pooled = ranking.seed_variance
    return {
        "task": task,
        "variant": ranking.variant,
        "metric": ranking.metric.name,
        "n_boot": ranking.n_boot,
        "rng_seed": ranking.rng_seed,
        "resampled": ranking.source,
        "seed_variance": None if pooled is None else {**dataclasses.asdict(pooled), "sd": pooled.sd},
        "kendall_tau": None if math.isnan(ranking.tau) else ranking.tau,
        "experiments": rows,
        "seed_pairs": stability,
        "notes": ranking.notes,
    }  # fmt: skip
