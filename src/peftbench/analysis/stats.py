"""Confidence intervals and paired significance tests for comparing runs (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from peftbench.errors import BadInput, did_you_mean


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval.

    `low` and `high` are None when no interval can be computed (too few values); `reason` then
    says why, in words fit for a table cell or a tooltip.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95
    reason: str = ""

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (symmetric intervals: the error bar), or None."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, int | float) and 0 < confidence < 1):
        raise BadInput(f"confidence must be a number between 0 and 1 (exclusive), got {confidence!r}")


def _finite(values: Iterable[float | None]) -> np.ndarray:
    """Drop None and NaN: a missing metric (e.g. a reference file without forgetting) is not a zero."""
    out = []
    for v in values:
        if v is None:
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise BadInput(f"not a number: {v!r}") from None
        if math.isnan(x):
            continue
        if math.isinf(x):
            raise BadInput(f"infinite value in a metric: {v!r}")
        out.append(x)
    return np.asarray(out, dtype=float)


def t_interval(values: Iterable[float | None], confidence: float = 0.95) -> Interval:
    """Mean of a metric across seeds and its Student-t confidence interval.

    Missing values (None, NaN) are dropped; `n` counts the values used. With fewer than two values
    there is no interval: low/high are None and `reason` says so.
    """
    _check_confidence(confidence)
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(None, None, None, 0, confidence, "no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, None, None, 1, confidence, "one seed: at least 2 are needed for an interval")
    sem = float(sps.sem(x))
    if sem == 0.0:
        # scipy returns NaN limits for a zero scale; identical values give a zero-width interval.
        return Interval(mean, mean, mean, n, confidence)
    low, high = sps.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n, confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Accuracy of one run (`successes` correct of `n` test items) with its Wilson score interval."""
    _check_confidence(confidence)
    if isinstance(successes, bool) or isinstance(n, bool):
        raise BadInput("successes and n must be counts, not booleans")
    if int(successes) != successes or int(n) != n:
        raise BadInput(f"successes and n must be whole numbers, got {successes!r} and {n!r}")
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise BadInput(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return Interval(None, None, None, 0, confidence, "no test items")
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    # Rounding can put a limit a hair outside [0, 1] (0.9999999999999999 for 10 of 10).
    low, high = max(0.0, float(low)), min(1.0, float(high))
    if successes == 0:
        low = 0.0
    if successes == n:
        high = 1.0
    return Interval(successes / n, low, high, n, confidence)


# ---------------------------------------------------------------------------------------------
# Per-item data and paired comparisons of test accuracy
# ---------------------------------------------------------------------------------------------

DEFAULT_BOOTSTRAP = 10_000
# Column names of the per-item data in the aggregated runs table (peftbench.analysis.aggregate).
CORRECT_COLUMN = "test_correct"
HASH_COLUMN = "test_items_hash"
ACCURACY_COLUMN = "test_accuracy"
VARIANT_COLUMN = "variant"


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare fields yourself
class ItemRun:
    """One run's per-item test correctness: the unit that paired statistics work on."""

    correct: np.ndarray  # bool, one per test item, in test order
    items_hash: str  # sha256 of the test queries in order: runs pair only when it is equal
    seed: int = 0
    source: str = ""  # where it came from (a file path), for error messages

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else math.nan


def parse_correct(text: object, *, source: str = "") -> np.ndarray:
    """Decode train_info.test_correct ("0110...") into a bool array; BadInput naming `source` if malformed."""
    where = f"{source}: " if source else ""
    if not isinstance(text, str):
        raise BadInput(f"{where}train_info.test_correct must be a string of 0/1, got {type(text).__name__}")
    if text.strip("01"):
        bad = next(ch for ch in text if ch not in "01")
        raise BadInput(f"{where}train_info.test_correct holds {bad!r}; only 0 and 1 may appear")
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1")


def item_run_from_record(record: dict, *, source: str = "") -> ItemRun:
    """The per-item data of one result record; BadInput saying it is missing (reference files lack it)."""
    where = f"{source}: " if source else ""
    train_info = record.get("train_info") or {}
    if train_info.get("test_correct") is None:
        raise BadInput(
            f"{where}per-item data is missing (no train_info.test_correct; files of the reference suite and "
            "runs that did not finish do not have it), so paired tests cannot use this run"
        )
    items_hash = train_info.get("test_items_hash")
    if not isinstance(items_hash, str) or not items_hash:
        raise BadInput(f"{where}train_info.test_items_hash is missing, so its test items cannot be matched")
    seed = (record.get("run_info") or {}).get("seed") or 0
    return ItemRun(parse_correct(train_info["test_correct"], source=source), items_hash, int(seed), source)


def _check_pairable(a_runs: Sequence[ItemRun], b_runs: Sequence[ItemRun]) -> None:
    """Every run must have been scored on the same test items in the same order, or pairing is wrong."""
    if not a_runs or not b_runs:
        raise BadInput("paired comparison needs at least one run on each side")
    first = a_runs[0]

    def name(run: ItemRun) -> str:
        return run.source or f"a run (seed {run.seed})"

    for run in [*a_runs, *b_runs]:
        if run.items_hash != first.items_hash:
            raise BadInput(
                f"test sets differ: {name(run)} has test_items_hash {run.items_hash[:12]}..., "
                f"{name(first)} has {first.items_hash[:12]}...; runs on different test "
                "items cannot be paired"
            )
        if len(run.correct) != len(first.correct):
            raise BadInput(
                f"test sets differ: {name(run)} has {len(run.correct)} test items, "
                f"{name(first)} has {len(first.correct)}; they cannot be paired"
            )
    if len(first.correct) == 0:
        raise BadInput(f"{name(first)}: no test items to compare")


@dataclass(frozen=True)
class PairedComparison:
    """Accuracy of A minus accuracy of B on the same test items, with CI and two-sided p-value."""

    acc_a: float
    acc_b: float
    diff: float
    low: float
    high: float
    p_value: float
    n_items: int
    n_seeds_a: int
    n_seeds_b: int
    method: str
    confidence: float = 0.95
    # one seed each: items only A got right / only B got right (the discordant pairs McNemar uses)
    only_a: int | None = None
    only_b: int | None = None


def newcombe_paired_interval(table: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's (1998, method 10) hybrid score interval for p1 - p2 from a paired 2x2 table.

    table[i][j] counts items with A in state i and B in state j (0 = correct, 1 = wrong), so
    p1 = row-0 total / n and p2 = column-0 total / n. Hand-written because neither statsmodels nor
    scipy has a paired difference interval; it squares and adds the Wilson limits (statsmodels) of
    the two marginal proportions, corrected for their correlation phi.
    """
    t = np.asarray(table, dtype=float)
    n = t.sum()
    a, b, c, d = t[0, 0], t[0, 1], t[1, 0], t[1, 1]
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = proportion_confint(a + b, n, alpha=1 - confidence, method="wilson")
    l2, u2 = proportion_confint(a + c, n, alpha=1 - confidence, method="wilson")
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0
    if margins > 0:
        # Newcombe's continuity-corrected phi: positive ad - bc shrinks by n/2, and to 0 below that.
        cross = a * d - b * c
        if cross > n / 2:
            phi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            phi = cross / math.sqrt(margins)
    diff = p1 - p2
    dl = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    du = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, float(diff - dl)), min(1.0, float(diff + du))


@dataclass(frozen=True)
class SeedVariance:
    """A task's run-to-run variance of test accuracy, pooled over its experiments with 2+ seeds.

    `variance`: the pooled within-experiment variance of a run's accuracy across seeds (sum of
    (k - 1) s^2 over sum of (k - 1)); `item_variance`: the pooled mean over test items of each
    item's 0/1 variance across seeds (the part of `variance` that is per-item flips, times the
    number of items); `df`: the pooled degrees of freedom. It stands in for the seed variation of
    an experiment with one seed, which cannot show its own (docs/statistics.md, "Seed variance").
    """

    variance: float
    item_variance: float
    df: int
    n_experiments: int

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance)

    def describe(self) -> str:
        experiments = f"{self.n_experiments} experiment" + ("s" if self.n_experiments != 1 else "")
        return f"sd {self.sd:.4f} pooled from {experiments} with 2+ seeds, {self.df} df"


def estimate_seed_variance(runs: Mapping[str, Sequence[ItemRun]]) -> SeedVariance | None:
    """The pooled seed variance of the experiments in `runs` (name -> its runs) that have 2+ seeds;
    None when none has."""
    total = items = 0.0
    df = n_experiments = 0
    for exp_runs in runs.values():
        if len(exp_runs) < 2:
            continue
        mat = np.stack([r.correct for r in exp_runs]).astype(float)
        k = mat.shape[0]
        total += (k - 1) * float(mat.mean(1).var(ddof=1))
        items += (k - 1) * float(mat.var(0, ddof=1).mean())
        df += k - 1
        n_experiments += 1
    if df == 0:
        return None
    return SeedVariance(total / df, items / df, df, n_experiments)


def _mcnemar_comparison(a: ItemRun, b: ItemRun, confidence: float) -> PairedComparison:
    both = int(np.sum(a.correct & b.correct))
    only_a = int(np.sum(a.correct & ~b.correct))
    only_b = int(np.sum(~a.correct & b.correct))
    neither = int(np.sum(~a.correct & ~b.correct))
    table = np.array([[both, only_a], [only_b, neither]])
    # exact=True: the binomial test on the discordant pairs, valid for few disagreements.
    p_value = float(mcnemar(table, exact=True).pvalue)
    low, high = newcombe_paired_interval(table, confidence)
    return PairedComparison(
        acc_a=a.accuracy,
        acc_b=b.accuracy,
        diff=a.accuracy - b.accuracy,
        low=low,
        high=high,
        p_value=min(1.0, p_value),
        n_items=len(a.correct),
        n_seeds_a=1,
        n_seeds_b=1,
        method="exact McNemar test, Newcombe hybrid score interval: compares these two runs, not the "
        "two methods (one seed each, and run-to-run variance is not counted)",
        confidence=confidence,
        only_a=only_a,
        only_b=only_b,
    )


def _bootstrap_replicates(
    a: np.ndarray, b: np.ndarray, *, n_boot: int, rng: np.random.Generator, block_elements: int = 2_000_000
) -> np.ndarray:
    """Differences of mean accuracy under a two-level resampling of items and seeds.

    Hand-written because scipy.stats.bootstrap resamples along one axis only, while here the
    items are resampled jointly for A and B (they are paired: the same questions), and the seeds
    of each experiment are resampled independently (seed k of A and seed k of B share nothing
    that makes them a pair; treating them as independent is the conservative choice and allows
    different seed counts). a, b: (seeds, items) 0/1 matrices.
    """
    n_items = a.shape[1]
    block = max(1, block_elements // n_items)
    out = np.empty(n_boot)
    for start in range(0, n_boot, block):
        m = min(block, n_boot - start)
        idx = rng.integers(0, n_items, size=(m, n_items))
        offsets = (np.arange(m) * n_items)[:, None]
        # item weights: how often each item was drawn in each replicate
        weights = np.bincount((idx + offsets).ravel(), minlength=m * n_items).reshape(m, n_items)
        acc = []
        for mat in (a, b):
            k = mat.shape[0]
            per_seed = (mat @ weights.T).T / n_items  # (m, seeds): accuracy of each seed on the resample
            seed_counts = rng.multinomial(k, np.full(k, 1.0 / k), size=m)
            acc.append((per_seed * seed_counts).sum(axis=1) / k)
        out[start : start + m] = acc[0] - acc[1]
    return out


def _one_seed_caveat(n_a: int, n_b: int) -> str:
    """With one seed on a side, that side's variation across seeds is unknown and not in the interval."""
    if (n_a == 1) == (n_b == 1):
        return ""
    side = "A" if n_a == 1 else "B"
    return f"; {side} has one seed, so its variation across seeds is not counted (interval too narrow)"


def _bootstrap_comparison(
    a_runs: Sequence[ItemRun], b_runs: Sequence[ItemRun], *, confidence: float, n_boot: int, rng_seed: int
) -> PairedComparison:
    a = np.stack([r.correct for r in a_runs]).astype(float)
    b = np.stack([r.correct for r in b_runs]).astype(float)
    diff = float(a.mean() - b.mean())
    reps = _bootstrap_replicates(a, b, n_boot=n_boot, rng=np.random.default_rng(rng_seed))
    alpha = 1 - confidence
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    # Two-sided p-value of "no difference": how often the bootstrap distribution, shifted to be
    # centred on 0, lands at least as far from 0 as the observed difference (the +1s keep p > 0
    # for a finite number of replicates). Identical runs give p = 1.
    extreme = np.sum(np.abs(reps - diff) >= abs(diff) - 1e-12)
    p_value = float((1 + extreme) / (1 + n_boot))
    return PairedComparison(
        acc_a=float(a.mean()),
        acc_b=float(b.mean()),
        diff=diff,
        low=float(low),
        high=float(high),
        p_value=min(1.0, p_value),
        n_items=a.shape[1],
        n_seeds_a=a.shape[0],
        n_seeds_b=b.shape[0],
        method=f"paired bootstrap over items and seeds ({n_boot} resamples, rng seed {rng_seed})"
        + _one_seed_caveat(a.shape[0], b.shape[0]),
        confidence=confidence,
    )


Method = Literal["auto", "mcnemar", "crossed-t", "bootstrap"]
METHODS = ("auto", "mcnemar", "crossed-t", "bootstrap")


def paired_comparison(
    a_runs: Sequence[ItemRun],
    b_runs: Sequence[ItemRun],
    *,
    confidence: float = 0.95,
    n_boot: int = DEFAULT_BOOTSTRAP,
    rng_seed: int = 0,
    method: Method = "auto",
    seed_variance: SeedVariance | None = None,
) -> PairedComparison:
    """Compare the test accuracy of experiment A (its runs, one per seed) with experiment B's.

    method="auto": one seed each -> "mcnemar": exact McNemar test on the items and Newcombe's
    paired interval (about these two trained models: the variation across seeds is unknown);
    more seeds -> "crossed-t": a t-test whose variance adds the seed and item components of the
    crossed items x seeds design (see `_crossed_t_comparison`). "bootstrap": a seeded,
    deterministic paired bootstrap over items and seeds (percentile interval); docs/statistics.md
    shows why it is not the default (miscalibrated with 2-5 seeds). Raises BadInput when the runs
    were not scored on the same test items.

    `seed_variance` (the task's, `estimate_seed_variance`): a side with one seed is given that
    variation across seeds, so "auto" uses crossed-t even with one seed each, and the comparison is
    about the methods; without it, one seed each is McNemar's test of the two runs, and says so.
    """
    _check_confidence(confidence)
    if method not in METHODS:
        raise BadInput(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if n_boot < 100:
        raise BadInput(f"n_boot must be at least 100 for a usable bootstrap, got {n_boot}")
    # Sorted so that the bootstrap's draws, and so its result, do not depend on the order of the files.
    a_runs = sorted(a_runs, key=lambda r: (r.seed, r.source))
    b_runs = sorted(b_runs, key=lambda r: (r.seed, r.source))
    _check_pairable(a_runs, b_runs)
    one_seed = len(a_runs) == 1 and len(b_runs) == 1
    if method == "auto":
        method = "mcnemar" if one_seed and seed_variance is None else "crossed-t"
    if method == "mcnemar" and not one_seed:
        raise BadInput(
            f"McNemar's test needs one run per experiment, got {len(a_runs)} and {len(b_runs)} seeds; "
            "use crossed-t or bootstrap"
        )
    if method == "crossed-t" and one_seed and seed_variance is None:
        raise BadInput(
            "crossed-t needs two or more seeds of at least one experiment, or the task's seed variance; "
            "use mcnemar"
        )
    if method == "mcnemar":
        return _mcnemar_comparison(a_runs[0], b_runs[0], confidence)
    if method == "crossed-t":
        return _crossed_t_comparison(a_runs, b_runs, confidence, seed_variance)
    return _bootstrap_comparison(a_runs, b_runs, confidence=confidence, n_boot=n_boot, rng_seed=rng_seed)


def _crossed_t_comparison(
    a_runs: Sequence[ItemRun], b_runs: Sequence[ItemRun], confidence: float, pooled: SeedVariance | None
) -> PairedComparison:
    """Difference of mean accuracies with a t interval for the crossed items x seeds design.

    Hand-written (no library has this design for paired 0/1 data). The target is the expected
    accuracy difference of the two methods over training seeds and test items. Its variance is
    the sum of (1) each experiment's variance of per-seed accuracy over its number of seeds, and
    (2) the variance over items of the per-item difference (mean over seeds), over the number of
    items, less its part that is seed-level noise already counted in (1) (the mean per-item
    variance across seeds). The degrees of freedom come from Welch-Satterthwaite. With one seed on
    a side, that side is assumed to vary across seeds as the task's experiments do (`pooled`, the
    task's seed variance) or, without it, as much as the other side.
    Simulated calibration: docs/statistics.md.
    """
    a = np.stack([r.correct for r in a_runs]).astype(float)
    b = np.stack([r.correct for r in b_runs]).astype(float)
    k_a, k_b, n = a.shape[0], b.shape[0], a.shape[1]
    diff = float(a.mean() - b.mean())
    note = borrowed = ""
    if k_a > 1 and k_b > 1:
        terms = [(a.mean(1).var(ddof=1) / k_a, k_a - 1), (b.mean(1).var(ddof=1) / k_b, k_b - 1)]
        within = float((a.var(0, ddof=1) / k_a + b.var(0, ddof=1) / k_b).mean())
    elif pooled is not None:
        terms, within, note = _pooled_seed_terms(a, b, pooled)
    else:
        many = a if k_a > 1 else b
        # one variance estimate serves both sides, so it is one term with its own degrees of freedom
        terms = [(many.mean(1).var(ddof=1) * (1 / k_a + 1 / k_b), many.shape[0] - 1)]
        within = float(many.var(0, ddof=1).mean() * (1 / k_a + 1 / k_b))
        side = "A" if k_a == 1 else "B"
        note = borrowed = f"; {side} has one seed: its variation across seeds is assumed equal to the other's"
    if n > 1:
        per_item = a.mean(0) - b.mean(0)
        terms.append((max(0.0, (per_item.var(ddof=1) - within) / n), n - 1))
    variance = float(sum(t for t, _ in terms))
    if variance <= 0.0:
        # Every seed and item agree: no estimated noise at all (e.g. identical or constant runs).
        low = high = diff
        p_value = 1.0 if diff == 0 else 0.0
    else:
        df = variance**2 / sum(t**2 / d for t, d in terms if t > 0)
        if borrowed:
            # One variance estimate from few seeds stands for both sides; when it comes out small by
            # chance, Welch-Satterthwaite would take the items' many degrees of freedom and claim too
            # much (type-I error 0.10 at 5% with 2 v 1 seeds, docs/statistics.md). Use the seeds' df.
            df = terms[0][1]
        elif note:
            # the pooled seed variance knows no more than its own df: Satterthwaite alone gave 0.061
            # type-I error with 1 v 3 seeds in the simulation of docs/statistics.md, this 0.052
            df = min(df, pooled.df)
        se = math.sqrt(variance)
        half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
        low, high = diff - half, diff + half
        p_value = float(2 * sps.t.sf(abs(diff) / se, df))
    return PairedComparison(
        acc_a=float(a.mean()),
        acc_b=float(b.mean()),
        diff=diff,
        low=max(-1.0, low),
        high=min(1.0, high),
        p_value=min(1.0, p_value),
        n_items=n,
        n_seeds_a=k_a,
        n_seeds_b=k_b,
        method="t-test over items x seeds (variance components, Welch-Satterthwaite df)" + note,
        confidence=confidence,
    )


def _pooled_seed_terms(
    a: np.ndarray, b: np.ndarray, pooled: SeedVariance
) -> tuple[list[tuple[float, int]], float, str]:
    """`_crossed_t_comparison`'s seed terms when a side has one seed: that side's seed variance is the
    task's pooled one (one term for both sides when both have one seed: it is one estimate)."""
    terms: list[tuple[float, int]] = []
    within = pooled_weight = 0.0
    for mat in (a, b):
        k = mat.shape[0]
        if k > 1:
            terms.append((mat.mean(1).var(ddof=1) / k, k - 1))
            within += float(mat.var(0, ddof=1).mean()) / k
        else:
            pooled_weight += 1.0
    terms.append((pooled.variance * pooled_weight, pooled.df))
    within += pooled.item_variance * pooled_weight
    sides = " and ".join(side for side, mat in (("A", a), ("B", b)) if mat.shape[0] == 1)
    note = f"; one seed ({sides}): the task's seed variance stands in for its own ({pooled.describe()})"
    return terms, within, note


def compare_to_baseline(
    runs: Mapping[str, Sequence[ItemRun]],
    baseline: str,
    *,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_BOOTSTRAP,
    rng_seed: int = 0,
    method: Method = "auto",
    seed_variance: SeedVariance | None = None,
) -> pd.DataFrame:
    """Compare every experiment in `runs` (name -> its runs) with `baseline`, Holm-corrected.
    `seed_variance` (default: estimated from `runs`) stands in for the seeds a one-seed side lacks.

    One row per other experiment, best first: acc, acc_baseline, diff (experiment minus baseline),
    then the Holm-adjusted columns of `holm_adjust`: low/high (the interval at `level`, which
    excludes 0 exactly when the row is significant), p_value (unadjusted), p_holm, significant
    (p_holm < alpha); then n_items, n_seeds, n_seeds_baseline, method, note. An experiment whose
    test set differs from the baseline's gets a note and no p-value instead of a wrong pairing, and
    stays out of the Holm family.
    """
    if baseline not in runs:
        raise BadInput(f'baseline "{baseline}" has no runs{did_you_mean(baseline, runs)}')
    seed_variance = seed_variance or estimate_seed_variance(runs)
    options = {"n_boot": n_boot, "rng_seed": rng_seed, "method": method, "seed_variance": seed_variance}

    def compare(name: str, confidence: float) -> PairedComparison:
        return paired_comparison(runs[name], runs[baseline], confidence=confidence, **options)

    rows = []
    for name, exp_runs in runs.items():
        if name == baseline:
            continue
        row: dict = {"experiment": name, "note": ""}
        try:
            res = compare(name, 1 - alpha)
        except BadInput as exc:
            row.update(n_seeds=len(exp_runs), n_seeds_baseline=len(runs[baseline]), note=str(exc))
        else:
            row.update(
                acc=res.acc_a,
                acc_baseline=res.acc_b,
                diff=res.diff,
                p_value=res.p_value,
                n_items=res.n_items,
                n_seeds=res.n_seeds_a,
                n_seeds_baseline=res.n_seeds_b,
                method=res.method,
            )
        rows.append(row)
    columns = ["experiment", "acc", "acc_baseline", "diff", "p_value", "n_items", "n_seeds",
               "n_seeds_baseline", "method", "note"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    table["n_items"] = table["n_items"].astype("Int64")

    def interval_at(name: str, level: float) -> tuple[float, float]:
        res = compare(name, level)
        return res.low, res.high

    table = holm_adjust(table, interval_at, alpha=alpha)
    order = ["experiment", "acc", "acc_baseline", "diff", *HOLM_COLUMNS, *columns[5:]]
    table = table[order]
    return table.sort_values("diff", ascending=False, na_position="last", kind="stable").reset_index(
        drop=True
    )


HOLM_COLUMNS = ["low", "high", "level", "p_value", "p_holm", "significant"]


def holm_level(p_value: float, p_holm: float, *, alpha: float, m: int) -> float:
    """Confidence level of a comparison's Holm-adjusted interval: 1 - alpha * p_value / p_holm.

    Holm multiplies each p-value by a factor (m - rank + 1, raised where needed to keep the
    adjusted p-values in order, and capped so that they stay <= 1); dividing alpha by the same
    factor gives the interval that excludes 0 exactly when p_holm < alpha, for a test and an
    interval that are dual (the t-tests). A p-value of 0 (no noise at all) gets Bonferroni's
    factor m; its interval has no width anyway.
    """
    factor = p_holm / p_value if p_value > 0 else m
    return 1 - alpha / max(1.0, factor)


def holm_adjust(
    table: pd.DataFrame, interval_at: Callable[[str, float], tuple[float, float]], *, alpha: float
) -> pd.DataFrame:
    """Holm-adjust a table of comparisons (columns experiment, p_value; NaN p: not compared).

    Adds p_holm, significant (p_holm < alpha) and the Holm-adjusted interval: low and high from
    `interval_at(experiment, level)` at the row's `holm_level`, so that an interval excludes 0
    exactly when its row is significant. Where a test and its interval are not exact duals
    (McNemar's exact test and Newcombe's interval; the bootstrap) and disagree all the same, the
    row's note says so rather than hide it.
    """
    table = table.copy()
    table["p_holm"] = holm(table["p_value"])
    table["significant"] = (table["p_holm"] < alpha).astype("boolean").mask(table["p_holm"].isna())
    table[["low", "high", "level"]] = np.nan
    compared = table["p_value"].notna()
    for index, row in table[compared].iterrows():
        level = holm_level(row["p_value"], row["p_holm"], alpha=alpha, m=int(compared.sum()))
        low, high = interval_at(row["experiment"], level)
        table.loc[index, ["low", "high", "level"]] = [low, high, level]
        if (low > 0 or high < 0) != bool(row["significant"]):
            table.loc[index, "note"] = (
                "the test and its interval disagree at this margin (they are not exact duals); "
                "significance follows the test"
            )
    return table


def welch_to_baseline(
    values: Mapping[str, Sequence[float | None]], baseline: str, *, alpha: float = 0.05
) -> pd.DataFrame:
    """Every experiment against `baseline` on a metric with one value per run (Welch across seeds).

    `values`: experiment name -> its values, one per seed. Columns: experiment, mean,
    mean_baseline, diff, the Holm-adjusted columns of `holm_adjust`, n_seeds, n_seeds_baseline,
    method, note (why a row has no test: fewer than 2 seeds on a side). Rows in `values`' order.
    """
    if baseline not in values:
        raise BadInput(f'baseline "{baseline}" has no runs{did_you_mean(baseline, values)}')
    base = values[baseline]
    rows = []
    for name, mine in values.items():
        if name == baseline:
            continue
        row: dict = {"experiment": name, "n_seeds": len(mine), "n_seeds_baseline": len(base), "note": ""}
        try:
            res = welch_comparison(mine, base, confidence=1 - alpha)
        except BadInput as exc:
            row["note"] = str(exc)
        else:
            row.update(mean=res.mean_a, mean_baseline=res.mean_b, diff=res.diff, p_value=res.p_value,
                       method=res.method)  # fmt: skip
        rows.append(row)
    columns = ["experiment", "mean", "mean_baseline", "diff", "p_value", "n_seeds", "n_seeds_baseline",
               "method", "note"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)

    def interval_at(name: str, level: float) -> tuple[float, float]:
        res = welch_comparison(values[name], base, confidence=level)
        return res.low, res.high

    table = holm_adjust(table, interval_at, alpha=alpha)
    return table[["experiment", "mean", "mean_baseline", "diff", *HOLM_COLUMNS, *columns[5:]]]


def holm(p_values: pd.Series) -> pd.Series:
    """Holm-adjusted p-values (statsmodels multipletests) for the non-missing entries; NaN stays NaN."""
    p = pd.to_numeric(p_values, errors="coerce").astype(float)
    out = pd.Series(np.nan, index=p.index, dtype=float)
    present = p.notna()
    if present.any():
        out[present] = multipletests(p[present].to_numpy(), method="holm")[1]
    return out


def best_comparisons(
    runs: pd.DataFrame,
    metric: str,
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
    experiment_col: str = "experiment_name",
    n_boot: int = DEFAULT_BOOTSTRAP,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Test every experiment against the best one on `metric`: the one function behind `tied_with_best`.

    `runs` has one row per run (peftbench.analysis.aggregate). The best experiment has the best
    mean over its seeds. Test accuracy with per-item data (columns test_correct and
    test_items_hash) uses `paired_comparison`; any other case a Welch t-test across seeds
    (scipy), which needs two seeds on both sides. p-values are Holm-corrected over the tests made.
    Runs of different variants (column `variant`: full, quick or shortened, see
    peftbench.analysis.variant) never meet: each variant has its own best and its own Holm family,
    so a 150-step quick run is neither the best of nor tested against the full runs.

    Seed noise is always counted: for test accuracy, an experiment with one seed is given the seed
    variance pooled over the variant's experiments with 2+ seeds (`estimate_seed_variance`), and when
    there is none, one seed against one seed cannot be told (<NA>), never a McNemar test of two runs.

    Returns one row per experiment (index: experiment name): variant, mean, n_seeds, is_best,
    p_value, p_holm, tied_with_best (True: not significantly different from the best of its variant
    at `alpha`; False: significantly worse; <NA>: cannot tell, e.g. one seed and no per-item data)
    and test (which test, or why none).
    """
    for col in (experiment_col, metric):
        if col not in runs.columns:
            raise BadInput(f'no column "{col}" in the runs table{did_you_mean(col, map(str, runs.columns))}')
    variants = (
        runs[VARIANT_COLUMN].fillna("") if VARIANT_COLUMN in runs.columns else pd.Series("", runs.index)
    )
    parts = [
        _best_within(group, metric, higher_is_better=higher_is_better, alpha=alpha,
                     experiment_col=experiment_col, n_boot=n_boot, rng_seed=rng_seed).assign(variant=variant)
        for variant, group in runs.groupby(variants, sort=True)
    ]  # fmt: skip
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=BEST_COLUMNS).rename_axis(experiment_col)
    return pd.concat(parts)[BEST_COLUMNS]


BEST_COLUMNS = ["variant", "mean", "n_seeds", "is_best", "p_value", "p_holm", "tied_with_best", "test"]


def _best_within(
    runs: pd.DataFrame,
    metric: str,
    *,
    higher_is_better: bool,
    alpha: float,
    experiment_col: str,
    n_boot: int,
    rng_seed: int,
) -> pd.DataFrame:
    """`best_comparisons` for runs of one variant."""
    values = pd.to_numeric(runs[metric], errors="coerce")
    data = runs.assign(_value=values)
    means = data.groupby(experiment_col, sort=True)["_value"].mean().dropna()
    if means.empty:
        return pd.DataFrame()
    best = means.idxmax() if higher_is_better else means.idxmin()
    groups = {name: group for name, group in data.groupby(experiment_col, sort=True)}
    pooled = task_seed_variance(groups) if metric == ACCURACY_COLUMN else None
    rows = {}
    for name, mean in means.items():
        group = groups[name]
        row = {"mean": mean, "n_seeds": int(group["_value"].notna().sum()), "is_best": name == best}
        if name == best:
            row.update(p_value=np.nan, test="best")
        else:
            row.update(
                _test_against_best(
                    group, groups[best], metric=metric, n_boot=n_boot, rng_seed=rng_seed, pooled=pooled
                )
            )
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis(experiment_col)
    table["p_holm"] = holm(table["p_value"])
    tied = (table["p_holm"] >= alpha).astype("boolean").mask(table["p_holm"].isna())
    tied[table["is_best"]] = True
    table["tied_with_best"] = tied
    return table


def indistinguishable_from_best(
    runs: pd.DataFrame,
    metric: str,
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
    experiment_col: str = "experiment_name",
) -> pd.Series:
    """Per experiment: True when not significantly different from the best on `metric`, False when
    significantly worse, <NA> when it cannot be told (see `best_comparisons`)."""
    table = best_comparisons(
        runs, metric, higher_is_better=higher_is_better, alpha=alpha, experiment_col=experiment_col
    )
    return table["tied_with_best"]


def item_runs(group: pd.DataFrame) -> list[ItemRun]:
    """The per-item data of some rows of the runs table (peftbench.analysis.aggregate).

    Raises BadInput naming the first file without per-item data (reference files, older runs).
    """
    out = []
    for _, row in group.iterrows():
        source = str(row.get("file") or "a run")
        correct, items_hash = row.get(CORRECT_COLUMN), row.get(HASH_COLUMN)
        if not isinstance(correct, str):
            raise BadInput(
                f"{source}: per-item data is missing (no train_info.test_correct; files of the reference "
                "suite and runs that did not finish do not have it), so paired tests cannot use this run"
            )
        if not isinstance(items_hash, str) or not items_hash:
            raise BadInput(
                f"{source}: train_info.test_items_hash is missing, so its test items cannot be matched"
            )
        seed = row.get("seed")
        out.append(ItemRun(parse_correct(correct, source=source), items_hash, int(seed or 0), source))
    return out


def task_seed_variance(groups: Mapping[str, pd.DataFrame]) -> SeedVariance | None:
    """The seed variance of test accuracy pooled over the experiments with 2+ seeds and per-item data."""
    runs = {}
    for name, group in groups.items():
        try:
            runs[name] = item_runs(group)
        except BadInput:
            continue  # no per-item data (reference files): not part of the estimate
    return estimate_seed_variance(runs)


ONE_SEED_UNKNOWN = (
    "cannot tell: one seed each, and no experiment with 2+ seeds gives the task's seed variance "
    "(McNemar would compare two runs, not two methods)"
)


def _test_against_best(
    group: pd.DataFrame,
    best: pd.DataFrame,
    *,
    metric: str,
    n_boot: int,
    rng_seed: int,
    pooled: SeedVariance | None = None,
) -> dict:
    if metric == ACCURACY_COLUMN:
        try:
            mine, theirs = item_runs(group), item_runs(best)
        except BadInput:
            pass  # no per-item data: fall back to the seeds
        else:
            if len(mine) == 1 and len(theirs) == 1 and pooled is None:
                return {"p_value": np.nan, "test": ONE_SEED_UNKNOWN}
            try:
                res = paired_comparison(mine, theirs, n_boot=n_boot, rng_seed=rng_seed, seed_variance=pooled)
            except BadInput as exc:
                return {"p_value": np.nan, "test": f"not paired: {exc}"}
            return {"p_value": res.p_value, "test": res.method}
    x, y = group["_value"].dropna().to_numpy(), best["_value"].dropna().to_numpy()
    if len(x) < 2 or len(y) < 2:
        return {"p_value": np.nan, "test": "needs 2+ seeds on both sides (or per-item data for accuracy)"}
    res = welch_comparison(x, y)
    return {"p_value": res.p_value, "test": res.method}


# ---------------------------------------------------------------------------------------------
# Other metrics: one value per run, compared across seeds
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedComparison:
    """Mean of a metric for A minus B's, over their seeds, with Welch's interval and p-value."""

    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float
    n_seeds_a: int
    n_seeds_b: int
    method: str
    confidence: float = 0.95


def welch_comparison(
    a_values: Iterable[float | None], b_values: Iterable[float | None], *, confidence: float = 0.95
) -> SeedComparison:
    """Welch's t-test (scipy) on one value per seed, for metrics without per-item data
    (forgetting, memory, time). Needs two or more values on each side; missing values are dropped."""
    _check_confidence(confidence)
    x, y = _finite(a_values), _finite(b_values)
    if len(x) < 2 or len(y) < 2:
        raise BadInput(
            f"a comparison across seeds needs at least 2 values on each side, got {len(x)} and {len(y)}"
        )
    diff = float(x.mean() - y.mean())
    if x.var() == 0 and y.var() == 0:
        # scipy gives NaN here: no variation at all, so no evidence beyond the difference itself
        low = high = diff
        p_value = 1.0 if diff == 0 else 0.0
    else:
        res = sps.ttest_ind(x, y, equal_var=False)
        ci = res.confidence_interval(confidence)
        low, high, p_value = float(ci.low), float(ci.high), float(res.pvalue)
    return SeedComparison(
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        diff=diff,
        low=low,
        high=high,
        p_value=p_value,
        n_seeds_a=len(x),
        n_seeds_b=len(y),
        method="Welch t-test across seeds",
        confidence=confidence,
    )
