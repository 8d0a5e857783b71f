"""`peftbench compare`: two experiments, or all against a baseline, with intervals and (paired) tests."""

from __future__ import annotations

import argparse
import json
import math

# the metric with per-item data (peftbench.analysis.stats.ACCURACY_COLUMN; not imported: scipy is slow)
ACCURACY = "test_accuracy"

USAGE = """peftbench compare RESULTS [RESULTS ...] EXP_A EXP_B
       peftbench compare RESULTS [RESULTS ...] --baseline EXP"""

EPILOG = """RESULTS is a results folder or a task folder (benchmarks/<task>, meaning its results/).
EXP is an experiment name as in run_info.experiment_name (<method>/<name>); an experiment folder
path (.../experiments/<method>/<name>) works too. One seed each: exact McNemar test and Newcombe's
paired interval; several seeds: a t-test over items x seeds (variance components); --method
bootstrap: a paired bootstrap over items and seeds. --metric other than test_accuracy (no per-item
data): Welch's t-test across seeds (2+ seeds each). With --baseline, p-values are Holm-corrected
for the number of comparisons, and each interval is widened by the same factor as its p-value, so
that it excludes 0 exactly when the comparison is significant. Quick and shortened runs (--quick,
--set) are their own experiments, labelled "<method>/<name> [quick]": they are compared only with
runs of the same variant. See docs/statistics.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _allow_intermixed(parser)
    parser.usage = USAGE
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "args",
        nargs="+",
        metavar="RESULTS... [EXP_A EXP_B]",
        help="results or task folders, then (without --baseline) the two experiments to compare",
    )
    parser.add_argument("--baseline", metavar="EXP", help="compare every experiment against this one")
    parser.add_argument("--task", help="the task, when the folders hold results of several tasks")
    parser.add_argument(
        "--metric",
        default="test_accuracy",
        help="column of the results table to compare (default test_accuracy, e.g. forgetting, memory_max)",
    )
    parser.add_argument(
        "--include-temporary", action="store_true", help="also read temporary_results/ of task folders"
    )
    parser.add_argument(
        "--confidence",
        type=float,
        help="confidence level (default 0.95); with --baseline, the family level 1 - alpha",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        help="with --baseline: significance level after Holm correction (default 0.05, or 1 - --confidence)",
    )
    parser.add_argument(
        "--method",
        choices=("auto", "mcnemar", "crossed-t", "bootstrap"),
        default="auto",
        help="auto (default): mcnemar for one seed each, crossed-t for more seeds",
    )
    parser.add_argument(
        "--bootstrap", type=int, default=None, metavar="N", help="bootstrap resamples (default 10000)"
    )
    parser.add_argument("--rng-seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="output format"
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")


def _allow_intermixed(parser: argparse.ArgumentParser) -> None:
    """Let options sit between the folders and the experiment names (`DIR --include-temporary A B`).

    Plain argparse takes positionals in one run only, so the names after an option would be
    "unrecognized". The top-level parser calls this sub-parser's parse_known_args; route that call
    to parse_known_intermixed_args, which itself calls parse_known_args: hence the original
    method is put back for the duration of the call.
    """
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        parser.parse_known_args = original
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = parse_known_args

    parser.parse_known_args = parse_known_args


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    from peftbench.analysis import comparisons
    from peftbench.analysis.stats import DEFAULT_BOOTSTRAP
    from peftbench.commands._results import load_reporting_warnings
    from peftbench.errors import BadInput

    confidence, alpha = levels(args.confidence, args.alpha, baseline=args.baseline is not None)
    n_boot = DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap
    if args.baseline is None:
        if len(args.args) < 3:
            raise BadInput(
                "give one or more results folders, then the two experiments: RESULTS... EXP_A EXP_B"
            )
        paths, experiments = args.args[:-2], [experiment_id(e) for e in args.args[-2:]]
        if experiments[0] == experiments[1]:
            raise BadInput(f'EXP_A and EXP_B are the same experiment "{experiments[0]}"')
    else:
        paths, experiments = args.args, None
    loaded = load_reporting_warnings(paths, include_temporary=args.include_temporary)
    table: pd.DataFrame = comparisons.select_task(loaded.table, task=args.task, paths=paths)
    options = {
        "n_boot": n_boot,
        "rng_seed": args.rng_seed,
        "method": args.method,
    }
    comparisons.check_metric(table, args.metric)
    if args.metric != ACCURACY:
        if args.method != "auto":
            raise BadInput(f"--method applies to test_accuracy only; {args.metric} uses Welch's t-test")
        options = {}
    if experiments is not None:
        compare = comparisons.compare_two if args.metric == ACCURACY else comparisons.compare_two_metric
        result = compare(table, *experiments, confidence=confidence, **options, **_metric_arg(args.metric))
        print(render(result, fmt=args.format))
    else:
        compare = comparisons.compare_all if args.metric == ACCURACY else comparisons.compare_all_metric
        baseline = experiment_id(args.baseline)
        result = compare(table, baseline, alpha=alpha, **options, **_metric_arg(args.metric))
        print(render(result, fmt=args.format))
    return 0


def levels(confidence: float | None, alpha: float | None, *, baseline: bool) -> tuple[float, float]:
    """(confidence, alpha) from the options. With --baseline the intervals are Holm-adjusted at the
    family level 1 - alpha (so that they agree with "significant"): one of the two sets both."""
    from peftbench.errors import BadInput

    for name, value in (("--confidence", confidence), ("--alpha", alpha)):
        if value is not None and not 0 < value < 1:
            raise BadInput(f"{name} must be between 0 and 1, got {value}")
    if not baseline:
        if alpha is not None:
            raise BadInput("--alpha applies with --baseline only (two experiments: use --confidence)")
        return confidence or 0.95, 0.05
    if confidence is not None and alpha is not None and not math.isclose(confidence, 1 - alpha):
        raise BadInput(
            f"--confidence {confidence} and --alpha {alpha} disagree: with --baseline the intervals are "
            "Holm-adjusted at the family level 1 - alpha; give one of the two"
        )
    if alpha is None:
        alpha = 0.05 if confidence is None else 1 - confidence
    return 1 - alpha, alpha


def _metric_arg(metric: str) -> dict[str, str]:
    return {} if metric == ACCURACY else {"metric": metric}


def experiment_id(text: str) -> str:
    """ "<method>/<name>" from an experiment name or an experiment folder path."""
    parts = [p for p in text.replace("\\", "/").split("/") if p]
    if "experiments" in parts[:-2]:
        index = len(parts) - 1 - parts[::-1].index("experiments")
        parts = parts[index + 1 :]
    return "/".join(parts)


# ---- rendering -------------------------------------------------------------------------------


def _p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _grid(header: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    from tabulate import tabulate

    # cells are preformatted strings: no number parsing, so "+0.050" keeps its sign and digits
    return tabulate(rows, headers=header, tablefmt="github" if markdown else "simple", disable_numparse=True)


def _formatter(metric: str):
    """Accuracy with 3 decimals; other metrics (bytes, seconds, losses) with 4 significant digits."""

    def fmt(x: float | None, *, sign: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        spec = ".3f" if metric == ACCURACY else ".4g"
        return format(x, ("+" if sign else "") + spec)

    return fmt


def render(result: dict, *, fmt: str) -> str:
    """The result of `compare_two*` or `compare_all*` (peftbench.analysis.comparisons) as text, a
    Markdown table or JSON."""
    if fmt == "json":
        return json.dumps(result, indent=2, default=float)
    render_as = _render_baseline if "baseline" in result else _render_pair
    return render_as(result, md=fmt == "markdown", level=f"{round(result['confidence'] * 100)}%")


def _render_pair(result: dict, *, md: bool, level: str) -> str:
    metric, num = result["metric"], _formatter(result["metric"])

    def ci(low, high, *, sign=False):
        return "-" if low is None or high is None else f"[{num(low, sign=sign)}, {num(high, sign=sign)}]"

    rows = [
        [e["experiment"], num(e["mean"]), ci(e["low"], e["high"]), e["interval"], str(len(e["seeds"]))]
        for e in result["experiments"]
    ]
    label = metric.replace("_", " ")
    table = _grid(["experiment", label, f"{level} CI", "interval", "seeds"], rows, markdown=md)
    discordant = ""
    if result["only_a"] is not None:
        discordant = f"; items only A got right: {result['only_a']}, only B: {result['only_b']}"
    what = f"{result['n_items']} paired test items" if metric == ACCURACY else f"metric {metric}"
    lines = [
        f"task {result['task']}: A = {result['a']}, B = {result['b']}, {what}",
        "",
        table,
        "",
        f"difference A - B: {num(result['diff'], sign=True)}, {level} CI "
        f"{ci(result['low'], result['high'], sign=True)}, p = {_p(result['p_value'])}",
        f"method: {result['method']}{discordant}",
    ]
    return "\n".join(lines)


def _method_lines(methods: list[str]) -> list[str]:
    """The tests used, each named once, then each caveat ("A has one seed: ...") with how many rows it
    concerns: joining the rows' method texts repeated the test's name once per caveat."""
    from collections import Counter

    if not methods:
        return []
    tests = dict.fromkeys(m.split("; ")[0] for m in methods)
    caveats = Counter(caveat for m in methods for caveat in m.split("; ")[1:])
    lines = ["", "method: " + "; ".join(tests)]
    lines += [f"  {n} of {len(methods)} comparisons: {caveat}" for caveat, n in caveats.items()]
    return lines


def _render_baseline(result: dict, *, md: bool, level: str) -> str:
    metric, num = result["metric"], _formatter(result["metric"])
    rows, notes = [], []
    for c in result["comparisons"]:
        if c["p_value"] is None:
            notes.append(f"{c['experiment']}: {c['note']}")
            continue
        if c["note"]:
            notes.append(f"{c['experiment']} (compared): {c['note']}")
        ci = f"[{num(c['low'], sign=True)}, {num(c['high'], sign=True)}]"
        row = [c["experiment"], num(c["mean"]), num(c["diff"], sign=True), ci, _p(c["p_holm"])]
        row += ["yes" if c["significant"] else "no", _p(c["p_value"])]
        row += [str(c["n_items"])] if metric == ACCURACY else []
        rows.append([*row, str(c["n_seeds"])])
    notes += [f"{m['experiment']}: {m['note']}" for m in result["without_per_item_data"]]
    notes += [f"{m['experiment']}: {m['note']}" for m in result.get("other_variants", [])]
    header = ["experiment", metric.replace("_", " "), "diff", f"{level} CI (Holm)", "p (Holm)", "significant"]
    header += ["p (unadjusted)"]
    header += ["items"] if metric == ACCURACY else []
    header += ["seeds"]
    lines = [
        f"task {result['task']}: {metric.replace('_', ' ')} against baseline {result['baseline']} "
        f"({result['baseline_seeds']} seed(s)); significant: Holm-corrected p < {result['alpha']:g}",
        f"{level} CI (Holm): each interval is widened by the factor that Holm applied to its p-value, so "
        "it excludes 0 exactly when the row is significant; p (unadjusted): for one comparison alone",
        "",
        _grid(header, rows, markdown=md) if rows else "(no experiment could be compared with the baseline)",
    ]
    lines += _method_lines([c["method"] for c in result["comparisons"] if c.get("method")])
    if notes:
        lines += ["", "not compared:", *(f"  {n}" for n in notes)]
    return "\n".join(lines)
