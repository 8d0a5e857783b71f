"""Comparisons of experiments in the runs table (peftbench.analysis.aggregate): two experiments, or
every experiment against a baseline, on test accuracy (paired, per item) or on any other metric (Welch
across seeds). Each returns a plain dict (numbers as Python floats, missing as None) that
`peftbench compare` only formats; the tests themselves are peftbench.analysis.stats's."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pandas as pd

from peftbench.analysis.aggregate import task_metrics
from peftbench.analysis.stats import (
    ACCURACY_COLUMN,
    Interval,
    ItemRun,
    compare_to_baseline,
    item_runs,
    paired_comparison,
    t_interval,
    task_seed_variance,
    welch_comparison,
    welch_to_baseline,
    wilson_interval,
)
from peftbench.analysis.variant import variant_name
from peftbench.errors import BadInput, did_you_mean


def select_task(table: pd.DataFrame, *, task: str | None, paths: list[str]) -> pd.DataFrame:
    """The runs of one task: `task`, or the only task present."""
    if table.empty:
        raise BadInput(f"no successful runs found in {', '.join(paths)}")
    tasks = sorted(table["task"].unique())
    if task is not None:
        if task not in tasks:
            raise BadInput(f'no runs of task "{task}"{did_you_mean(task, tasks)}; found: {", ".join(tasks)}')
        return table[table["task"] == task]
    if len(tasks) > 1:
        raise BadInput(
            f"the folders hold results of several tasks ({', '.join(tasks)}); choose one with --task"
        )
    return table


def check_metric(table: pd.DataFrame, metric: str) -> None:
    """The metric must be a numeric column with values: BadInput naming the close ones otherwise."""
    numeric = [
        c
        for c in table.columns
        if pd.api.types.is_numeric_dtype(table[c])
        and not pd.api.types.is_bool_dtype(table[c])
        and table[c].notna().any()
    ]
    if metric not in numeric:
        known = [c for c in numeric if c != "seed"]
        raise BadInput(
            f'no values of metric "{metric}" in these results{did_you_mean(metric, known)}; '
            f"numeric columns: {', '.join(known)}"
        )


def runs_of(table: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The runs of one experiment, by seed; BadInput naming close names when it has none."""
    group = table[table["experiment_name"] == experiment]
    if group.empty:
        names = sorted(table["experiment_name"].unique())
        raise BadInput(f'no successful runs of experiment "{experiment}"{did_you_mean(experiment, names)}')
    return group.sort_values("seed")


def same_variant(table: pd.DataFrame, experiment: str) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The runs of `experiment`'s variant (full, quick, shortened), and a note per experiment of another
    variant: a quick run is never tested against a full one."""
    variant = runs_of(table, experiment)["variant"].iloc[0]
    others = table[table["variant"] != variant]
    notes = [
        {
            "experiment": name,
            "note": f'variant "{variant_name(v)}", the baseline\'s is "{variant_name(variant)}"',
        }
        for name, v in others.groupby("experiment_name", sort=True)["variant"].first().items()
    ]
    return table[table["variant"] == variant], notes


def _scoring_versions(table: pd.DataFrame, experiment: str) -> list[str]:
    runs = runs_of(table, experiment)
    return sorted(runs["scoring_version"].dropna().unique()) if "scoring_version" in runs else []


def check_same_scoring(table: pd.DataFrame, experiments: list[str]) -> None:
    """Test accuracies compare only under one scoring rule: BadInput naming the rules otherwise."""
    versions = {name: _scoring_versions(table, name) for name in experiments}
    if len({v for vs in versions.values() for v in vs}) > 1:
        shown = "; ".join(f"{name}: {', '.join(vs)}" for name, vs in versions.items())
        raise BadInput(
            f"test accuracy was scored by different rules ({shown}): not comparable; rescore the runs "
            "with stored completions (peftbench rescore) or compare another --metric"
        )


def same_scoring(table: pd.DataFrame, baseline: str) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The runs scored by the baseline's rule, and a note per experiment scored by another."""
    if "scoring_version" not in table.columns:
        return table, []
    check_same_scoring(table, [baseline])
    rule = _scoring_versions(table, baseline)[0] if _scoring_versions(table, baseline) else None
    if rule is None:
        return table, []
    others = table[table["scoring_version"] != rule]
    notes = [
        {"experiment": name, "note": f'test accuracy scored by "{v}", the baseline\'s by "{rule}"'}
        for name, v in others.groupby("experiment_name", sort=True)["scoring_version"].first().items()
    ]
    return table[table["scoring_version"] == rule], notes


def _check_same_variant(table: pd.DataFrame, exp_a: str, exp_b: str) -> None:
    """A quick or shortened run answers another question than a full one: BadInput when they differ."""
    a, b = (runs_of(table, e)["variant"].iloc[0] for e in (exp_a, exp_b))
    if a != b:
        raise BadInput(
            f"{exp_a} is a {variant_name(a)} run and {exp_b} a {variant_name(b)} run: only runs of the same "
            "variant (full, --quick, --set) can be compared"
        )


def _accuracy_interval(runs: list[ItemRun], confidence: float) -> tuple[Interval, str]:
    """Accuracy of one experiment: t-interval across seeds, or Wilson over the items of one run."""
    if len(runs) == 1:
        correct = runs[0].correct
        return wilson_interval(int(correct.sum()), len(correct), confidence=confidence), "Wilson, items"
    return t_interval([r.accuracy for r in runs], confidence=confidence), "t, seeds"


def _summary(name: str, interval: Interval, *, kind: str, seeds: list[int]) -> dict[str, Any]:
    return {"experiment": name, "mean": interval.mean, "low": interval.low, "high": interval.high,
            "interval": kind, "seeds": seeds}  # fmt: skip


def compare_two(
    table: pd.DataFrame,
    exp_a: str,
    exp_b: str,
    *,
    confidence: float,
    n_boot: int,
    rng_seed: int,
    method: str = "auto",
) -> dict[str, Any]:
    """Paired comparison of two experiments' test accuracy (`paired_comparison`), with each one's
    interval (t across seeds, or Wilson over the items of one run)."""
    _check_same_variant(table, exp_a, exp_b)
    check_same_scoring(table, [exp_a, exp_b])
    a_runs, b_runs = item_runs(runs_of(table, exp_a)), item_runs(runs_of(table, exp_b))
    # the task's run-to-run spread, from its experiments with 2+ seeds of the same variant: a one-seed
    # side then compares methods, not two runs (docs/statistics.md, "Seed variance")
    variant, _ = same_variant(table, exp_a)
    seed_variance = task_seed_variance(dict(tuple(variant.groupby("experiment_name"))))
    res = paired_comparison(
        a_runs, b_runs, confidence=confidence, n_boot=n_boot, rng_seed=rng_seed, method=method,
        seed_variance=seed_variance,
    )  # fmt: skip
    experiments = []
    for name, runs in ((exp_a, a_runs), (exp_b, b_runs)):
        interval, kind = _accuracy_interval(runs, confidence)
        experiments.append(_summary(name, interval, kind=kind, seeds=[r.seed for r in runs]))
    head = {"task": table["task"].iloc[0], "metric": ACCURACY_COLUMN, "a": exp_a, "b": exp_b}
    return {**head, "experiments": experiments, **asdict(res)}


def compare_two_metric(
    table: pd.DataFrame, exp_a: str, exp_b: str, *, metric: str, confidence: float
) -> dict[str, Any]:
    """Welch comparison of one metric across the seeds of two experiments."""
    _check_same_variant(table, exp_a, exp_b)
    groups = {name: runs_of(table, name) for name in (exp_a, exp_b)}
    values = {name: pd.to_numeric(g[metric], errors="coerce").tolist() for name, g in groups.items()}
    res = welch_comparison(values[exp_a], values[exp_b], confidence=confidence)
    experiments = [
        _summary(
            name,
            t_interval(values[name], confidence=confidence),
            kind="t, seeds",
            seeds=[int(s) for s in g["seed"]],
        )
        for name, g in groups.items()
    ]
    head = {"task": table["task"].iloc[0], "metric": metric, "a": exp_a, "b": exp_b}
    return {
        **head,
        "experiments": experiments,
        "n_items": None,
        "only_a": None,
        "only_b": None,
        **asdict(res),
    }


def compare_all(
    table: pd.DataFrame, baseline: str, *, alpha: float, n_boot: int, rng_seed: int, method: str = "auto"
) -> dict[str, Any]:
    """Every experiment of the baseline's variant against `baseline` on test accuracy
    (`compare_to_baseline`, Holm-corrected); experiments without per-item data get a note."""
    table, other_variants = same_variant(table, baseline)
    table, other_rules = same_scoring(table, baseline)
    other_variants = [*other_variants, *other_rules]
    base_runs = item_runs(runs_of(table, baseline))
    runs, missing = {baseline: base_runs}, []
    for name, group in table.groupby("experiment_name", sort=True):
        if name == baseline:
            continue
        try:
            runs[name] = item_runs(group.sort_values("seed"))
        except BadInput as exc:
            missing.append({"experiment": name, "n_seeds": len(group), "note": str(exc)})
    if len(runs) == 1 and not missing:
        raise BadInput(f'only the baseline "{baseline}" has runs of its variant: nothing to compare with')
    result = compare_to_baseline(runs, baseline, alpha=alpha, n_boot=n_boot, rng_seed=rng_seed, method=method)
    result = result.rename(columns={"acc": "mean", "acc_baseline": "mean_baseline"})
    return _baseline_result(
        result, table=table, metric=ACCURACY_COLUMN, baseline=baseline, n_base=len(base_runs), alpha=alpha,
        missing=missing, other_variants=other_variants,
    )  # fmt: skip


def compare_all_metric(table: pd.DataFrame, baseline: str, *, metric: str, alpha: float) -> dict[str, Any]:
    """Every experiment of the baseline's variant against `baseline` on one metric (Welch across seeds)."""
    task = table["task"].iloc[0]
    table, other_variants = same_variant(table, baseline)
    values = {
        name: pd.to_numeric(group[metric], errors="coerce").tolist()
        for name, group in table.groupby("experiment_name", sort=True)
    }
    result = welch_to_baseline(values, baseline, alpha=alpha)
    # best first: the task plug-in says which way is better (common metrics when it has no plug-in)
    higher = next((m.higher_is_better for m in task_metrics(task)[0] if m.name == metric), True)
    result = result.sort_values("diff", ascending=not higher, na_position="last", kind="stable")
    return _baseline_result(
        result, table=table, metric=metric, baseline=baseline, n_base=len(runs_of(table, baseline)),
        alpha=alpha, missing=[], other_variants=other_variants,
    )  # fmt: skip


def _baseline_result(
    result: pd.DataFrame,
    *,
    table: pd.DataFrame,
    metric: str,
    baseline: str,
    n_base: int,
    alpha: float,
    missing: list[dict[str, Any]],
    other_variants: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "task": table["task"].iloc[0],
        "metric": metric,
        "baseline": baseline,
        "baseline_seeds": n_base,
        "confidence": 1 - alpha,
        "alpha": alpha,
        "comparisons": [_clean(r) for r in result.to_dict(orient="records")],
        "without_per_item_data": missing,
        "other_variants": other_variants,
    }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and pandas NA as None, numpy scalars as Python ones (for JSON)."""
    out = {}
    for key, value in row.items():
        if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        out[key] = value
    return out
