"""Rankings with uncertainty: per experiment its mean, rank and rank interval, the group not
significantly different from the best, and how stable the ranking is across seeds (pure functions).

Method and calibration: docs/statistics.md, "Rankings". Runs of different variants (quick,
shortened; peftbench.analysis.variant) never meet: each variant gets its own ranking.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from peftbench.analysis.stats import (
    ACCURACY_COLUMN,
    VARIANT_COLUMN,
    ItemRun,
    SeedVariance,
    best_comparisons,
    estimate_seed_variance,
    item_runs,
)
from peftbench.errors import BadInput
from peftbench.tasks.base import Metric

DEFAULT_RANK_BOOTSTRAP = 2000
EXPERIMENT = "experiment_name"
RANK_COLUMNS = ["rank", "experiment", "n_seeds", "mean", "low", "high", "rank_low", "rank_high",
                "tied_with_best", "p_holm"]  # fmt: skip


@dataclass
class Ranking:
    """The ranking of one variant's experiments on one metric.

    `table`: one row per experiment, best first (RANK_COLUMNS): rank (1 = best; equal means share
    the better rank), the mean over seeds with its interval (low, high), the rank interval
    (rank_low, rank_high), tied_with_best (not significantly different from the best, Holm; <NA>:
    cannot tell) and its Holm-corrected p-value. `stability`: one row per pair of seeds (seed_a,
    seed_b, n_experiments present at both, Kendall's tau-b, its p-value).
    """

    metric: Metric
    variant: str
    table: pd.DataFrame
    stability: pd.DataFrame
    seed_variance: SeedVariance | None
    n_boot: int
    rng_seed: int
    confidence: float
    source: str  # what the bootstrap resampled, in words
    notes: list[str] = field(default_factory=list)

    @property
    def tau(self) -> float:
        """The mean Kendall tau over the pairs of seeds (NaN when no pair has 2+ common experiments)."""
        values = self.stability["tau"].dropna()
        return float(values.mean()) if len(values) else math.nan

    @property
    def n_stable_experiments(self) -> int:
        """How many experiments have values at 2+ seeds (the ones the Kendall tau is about)."""
        return int((self.table["n_seeds"] >= 2).sum())


def rank_experiments(
    runs: pd.DataFrame,
    metric: Metric,
    *,
    n_boot: int = DEFAULT_RANK_BOOTSTRAP,
    rng_seed: int = 0,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> list[Ranking]:
    """One `Ranking` per variant of `runs` (one task's rows of the runs table, aggregate.load_results).

    Deterministic given `rng_seed`. BadInput for an unknown metric column or n_boot < 1.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise BadInput(f"the number of bootstrap resamples must be a whole number >= 1, got {n_boot!r}")
    if metric.name not in runs.columns:
        raise BadInput(f'no column "{metric.name}" in the runs table')
    values = pd.to_numeric(runs[metric.name], errors="coerce")
    data = runs.assign(_value=values)[values.notna()]
    variants = (
        data[VARIANT_COLUMN].fillna("") if VARIANT_COLUMN in data.columns else pd.Series("", data.index)
    )
    return [
        _rank_variant(group, metric, variant=str(variant), n_boot=n_boot, rng_seed=rng_seed,
                      confidence=confidence, alpha=alpha)
        for variant, group in data.groupby(variants, sort=True)
    ]  # fmt: skip


def _rank_variant(
    data: pd.DataFrame, metric: Metric, *, variant: str, n_boot: int, rng_seed: int, confidence: float,
    alpha: float,
) -> Ranking:  # fmt: skip
    groups = {name: group for name, group in data.groupby(EXPERIMENT, sort=True)}
    names = list(groups)
    seeds = np.array([len(groups[n]) for n in names])
    means = np.array([groups[n]["_value"].mean() for n in names])
    rng = np.random.default_rng(rng_seed)
    per_item = _per_item_runs(groups) if metric.name == ACCURACY_COLUMN else None
    notes: list[str] = []
    if per_item is not None:
        pooled = estimate_seed_variance(per_item)
        reps = _item_seed_replicates(per_item, names, pooled, n_boot=n_boot, rng=rng)
        source = "test items and seeds"
    else:
        pooled = _pooled_metric_variance(groups)
        reps = _seed_replicates(means, seeds, pooled, n_boot=n_boot, rng=rng)
        source = "seeds (no per-item data)"
    if pooled is None:
        notes.append(
            "no experiment has 2+ seeds, so the run-to-run variance is unknown: no rank intervals (an "
            "interval without it would call differences real that seed noise could explain)"
        )
    sign = -1.0 if metric.higher_is_better else 1.0
    rank = sps.rankdata(sign * means, method="min").astype(int)
    table = pd.DataFrame({"rank": rank, "experiment": names, "n_seeds": seeds, "mean": means})
    tail = (1 - confidence) / 2
    table["low"], table["high"] = np.quantile(reps, tail, axis=0), np.quantile(reps, 1 - tail, axis=0)
    if pooled is None:
        table["rank_low"] = table["rank_high"] = pd.NA
    else:
        boot_ranks = sps.rankdata(sign * reps, method="min", axis=1)
        table["rank_low"] = np.quantile(boot_ranks, tail, axis=0, method="lower").astype(int)
        table["rank_high"] = np.quantile(boot_ranks, 1 - tail, axis=0, method="higher").astype(int)
    for column in ("rank_low", "rank_high"):
        table[column] = table[column].astype("Int64")
    best = best_comparisons(data, metric.name, higher_is_better=metric.higher_is_better, alpha=alpha,
                            experiment_col=EXPERIMENT, rng_seed=rng_seed)  # fmt: skip
    table["tied_with_best"] = table["experiment"].map(best["tied_with_best"]).astype("boolean")
    table["p_holm"] = table["experiment"].map(best["p_holm"])
    table = table.sort_values(["rank", "experiment"], kind="stable").reset_index(drop=True)[RANK_COLUMNS]
    return Ranking(metric=metric, variant=variant, table=table, stability=seed_stability(data),
                   seed_variance=pooled, n_boot=n_boot, rng_seed=rng_seed, confidence=confidence,
                   source=source, notes=notes)  # fmt: skip


def _per_item_runs(groups: dict[str, pd.DataFrame]) -> dict[str, list[ItemRun]] | None:
    """Every experiment's per-item runs, or None when one lacks them or the test sets differ."""
    try:
        runs = {name: item_runs(group) for name, group in groups.items()}
    except BadInput:
        return None
    first = next(iter(runs.values()))[0]
    same = all(r.items_hash == first.items_hash and len(r.correct) == len(first.correct)
               for exp in runs.values() for r in exp)  # fmt: skip
    return runs if same else None


def _scaled_variances(pooled: SeedVariance | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of the seed variance per replicate: variance * df / chi2(df), so that an estimate from
    few seeds widens the intervals as Student's t would (zeros without an estimate)."""
    if pooled is None:
        return np.zeros(n_boot)
    return pooled.variance * pooled.df / rng.chisquare(pooled.df, size=n_boot)


def _item_seed_replicates(
    runs: dict[str, list[ItemRun]], names: list[str], pooled: SeedVariance | None, *, n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """(n_boot, experiments) replicate means: the test items resampled with replacement, the same
    items for every experiment (they answered the same questions), plus each experiment's whole-run
    seed shift, normal with the task's pooled shift variance over its number of seeds.

    Hand-written: scipy.stats.bootstrap resamples one axis and has no added variance component.
    The shift variance is the seed variance less its per-item part (item_variance / n), which the
    item resampling already shows (docs/statistics.md)."""
    matrix = np.stack([np.stack([r.correct for r in runs[n]]).mean(0) for n in names])  # (E, n)
    k = np.array([len(runs[n]) for n in names], dtype=float)
    n_items = matrix.shape[1]
    weights = rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=n_boot)
    reps = weights @ matrix.T / n_items
    if pooled is not None:
        shift = np.maximum(0.0, _scaled_variances(pooled, n_boot, rng) - pooled.item_variance / n_items)
        reps = reps + rng.standard_normal(reps.shape) * np.sqrt(shift[:, None] / k[None, :])
    # an accuracy stays in [0, 1]: a method at 0% cannot be shifted below it by seed noise
    return np.clip(reps, 0.0, 1.0)


def _pooled_metric_variance(groups: dict[str, pd.DataFrame]) -> SeedVariance | None:
    """The pooled within-experiment variance of a metric with one value per run (no per-item part)."""
    total, df, n = 0.0, 0, 0
    for group in groups.values():
        if len(group) >= 2:
            total += (len(group) - 1) * float(group["_value"].var(ddof=1))
            df, n = df + len(group) - 1, n + 1
    return SeedVariance(total / df, 0.0, df, n) if df else None


def _seed_replicates(
    means: np.ndarray, seeds: np.ndarray, pooled: SeedVariance | None, *, n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """(n_boot, experiments) replicate means of a metric without per-item data: the mean plus
    normal noise with the pooled seed variance over the number of seeds (a parametric bootstrap)."""
    variances = _scaled_variances(pooled, n_boot, rng)
    noise = rng.standard_normal((n_boot, len(means))) * np.sqrt(variances[:, None] / seeds[None, :])
    return means[None, :] + noise


def seed_stability(data: pd.DataFrame) -> pd.DataFrame:
    """Kendall's tau-b (scipy) between the rankings of every two seeds, over the experiments that
    have a value at both. Columns: seed_a, seed_b, n_experiments, tau, p_value (NaN under 2)."""
    wide = data.pivot_table(index=EXPERIMENT, columns="seed", values="_value", aggfunc="mean")
    rows = []
    for a, b in itertools.combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        tau = p_value = math.nan
        if len(both) >= 2:
            res = sps.kendalltau(both[a], both[b])
            tau, p_value = float(res.statistic), float(res.pvalue)
        rows.append({"seed_a": int(a), "seed_b": int(b), "n_experiments": len(both), "tau": tau,
                     "p_value": p_value})  # fmt: skip
    return pd.DataFrame(rows, columns=["seed_a", "seed_b", "n_experiments", "tau", "p_value"])


def ranking_notes(ranking: Ranking) -> list[str]:
    """The lines under a ranking table, in words (the command, the report and the app show them)."""
    table = ranking.table
    level = f"{ranking.confidence:.0%}"
    resampled = f"{ranking.n_boot} resamples, seed {ranking.rng_seed}"
    lines = [f"{level} intervals: bootstrap over {ranking.source}, {resampled}"]
    pooled = ranking.seed_variance
    if pooled is not None:
        lines.append(
            f"seed variance (run to run): {pooled.describe()}; it stands in for one-seed experiments"
        )
    tied = table[table["tied_with_best"].fillna(False).astype(bool)]["experiment"].tolist()
    unknown = int(table["tied_with_best"].isna().sum())
    group = f"not significantly different from the best (Holm, 5%): {len(tied)} of {len(table)}"
    lines.append(group + (f" ({unknown} cannot be told)" if unknown else ""))
    pairs = ranking.stability.dropna(subset=["tau"])
    if pairs.empty:
        lines.append("Kendall tau between seeds: none (no two seeds share 2+ experiments)")
    else:
        each = ", ".join(f"{r.seed_a} v {r.seed_b}: {r.tau:.2f} ({r.n_experiments} experiments)"
                         for r in pairs.itertuples())  # fmt: skip
        lines.append(
            f"Kendall tau between seeds: mean {ranking.tau:.2f} over {len(pairs)} pairs of seeds, "
            f"{ranking.n_stable_experiments} experiments with 2+ seeds ({each})"
        )
    return lines + ranking.notes


def ranking_display(ranking: Ranking) -> pd.DataFrame:
    """The ranking as the command, the report and the app show it: one string column per field."""
    from peftbench.analysis.variant import labelled

    level = f"{ranking.confidence:.0%}"

    def num(value) -> str:  # accuracies with 3 decimals; large values (bytes, seconds) with 4 digits
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.4g}"

    def pair(low, high, show=num) -> str:
        return "" if pd.isna(low) or pd.isna(high) else f"[{show(low)}, {show(high)}]"

    def tied(value) -> str:
        return "?" if pd.isna(value) else ("yes" if value else "no")

    rows = [
        {"rank": str(r.rank), "experiment": labelled(r.experiment, ranking.variant), "seeds": str(r.n_seeds),
         "mean": num(r.mean), f"{level} CI": pair(r.low, r.high),
         f"{level} rank interval": pair(r.rank_low, r.rank_high, str),
         "tied with best": tied(r.tied_with_best)}
        for r in ranking.table.itertuples()
    ]  # fmt: skip
    columns = [
        "rank",
        "experiment",
        "seeds",
        "mean",
        f"{level} CI",
        f"{level} rank interval",
        "tied with best",
    ]
    return pd.DataFrame(rows, columns=columns)


def ranking_views(
    runs: pd.DataFrame, metric: Metric | None, *, n_boot: int = DEFAULT_RANK_BOOTSTRAP, rng_seed: int = 0
) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """For the report and the app: per variant of `runs` (one task), a title, the display table and
    the lines under it; one explanatory title with an empty table when nothing can be ranked."""
    if metric is None or runs.empty or metric.name not in runs.columns:
        return [("Nothing to rank: choose a metric with a direction that has values.", pd.DataFrame(), [])]
    rankings = rank_experiments(runs, metric, n_boot=n_boot, rng_seed=rng_seed)
    if not rankings:
        return [(f"Nothing to rank: no run has a value of {metric.name}.", pd.DataFrame(), [])]
    return [
        (f"Ranking on {metric.name}" + (f" [{r.variant}]" if r.variant else ""), ranking_display(r),
         ranking_notes(r))
        for r in rankings
    ]  # fmt: skip


def ranking_tables(runs: pd.DataFrame, metric_name: str | None) -> tuple[pd.DataFrame, str]:
    """For the app: the display tables of every variant in one (labelled experiments), and the titles
    and lines under them as Markdown. `runs`: one task's rows; the metric by name, as chosen."""
    from peftbench.analysis.aggregate import task_metrics

    metrics = task_metrics(str(runs["task"].iloc[0]))[0] if not runs.empty else ()
    metric = next((m for m in metrics if m.name == metric_name), None)
    parts = ranking_views(runs, metric)
    tables = [table for _, table, _ in parts if not table.empty]
    notes = "\n".join(
        f"**{title}**\n\n" + "".join(f"- {line}\n" for line in lines) for title, _, lines in parts
    )
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), notes
