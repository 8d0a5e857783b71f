"""Statistics checked against scipy/statsmodels reference values on hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from peftbench.analysis.stats import (
    ItemRun,
    best_comparisons,
    compare_to_baseline,
    holm,
    holm_adjust,
    holm_level,
    indistinguishable_from_best,
    item_run_from_record,
    newcombe_paired_interval,
    paired_comparison,
    t_interval,
    welch_comparison,
    welch_to_baseline,
    wilson_interval,
)
from peftbench.errors import BadInput
from peftbench.results import load_result


def test_t_interval_matches_scipy():
    values = [0.41, 0.45, 0.38, 0.44]
    iv = t_interval(values)
    low, high = sps.t.interval(0.95, df=3, loc=sum(values) / 4, scale=sps.sem(values))
    assert iv.n == 4
    assert iv.mean == pytest.approx(0.42)
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    assert iv.reason == ""


def test_t_interval_hand_computed():
    # mean 2, sd 1, n 3 -> half width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    iv = t_interval([1.0, 2.0, 3.0], confidence=0.95)
    assert iv.half_width == pytest.approx(2.484138, abs=1e-6)


def test_t_interval_one_value_has_no_interval_and_says_why():
    iv = t_interval([0.5])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.5, None, None, 1)
    assert "seed" in iv.reason


def test_t_interval_drops_missing_values_and_handles_identical_ones():
    iv = t_interval([0.3, None, math.nan, 0.3])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.3, 0.3, 0.3, 2)
    assert t_interval([]).reason == "no values"


def test_wilson_matches_statsmodels():
    iv = wilson_interval(37, 50, confidence=0.9)
    low, high = proportion_confint(37, 50, alpha=0.1, method="wilson")
    assert iv.mean == pytest.approx(0.74)
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize(("k", "n"), [(0, 20), (20, 20)])
def test_wilson_all_wrong_and_all_correct_stay_inside_0_1(k, n):
    iv = wilson_interval(k, n)
    assert 0.0 <= iv.low < iv.high <= 1.0
    assert iv.low == 0.0 if k == 0 else iv.high == 1.0
    # Wilson upper limit for 0/n is z^2 / (n + z^2)
    z2 = sps.norm.ppf(0.975) ** 2
    assert (iv.high if k == 0 else 1 - iv.low) == pytest.approx(z2 / (n + z2))


@pytest.mark.parametrize(("k", "n", "conf"), [(3, 2, 0.95), (-1, 5, 0.95), (1, 5, 1.5), (1.5, 5, 0.95)])
def test_wilson_bad_input(k, n, conf):
    with pytest.raises(BadInput):
        wilson_interval(k, n, confidence=conf)


# ---- paired comparisons ----------------------------------------------------------------------


def _run(bits, *, seed=0, items_hash="h" * 64, source=""):
    return ItemRun(np.asarray(bits, dtype=bool), items_hash, seed, source)


def _pair_with_counts(both, only_a, only_b, neither):
    """Two one-seed runs whose 2x2 table is [[both, only_a], [only_b, neither]]."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return _run(a, source="a.json"), _run(b, source="b.json")


def test_newcombe_paired_interval_matches_published_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8 (Cavo et al.
    # 2012): estimate -0.0621, Newcombe square-and-add 95% CI -0.1186 to -0.0046.
    low, high = newcombe_paired_interval(np.array([[59, 6], [16, 80]]))
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def test_one_seed_uses_exact_mcnemar_like_scipy_binomial_test():
    a, b = _pair_with_counts(40, 12, 4, 44)
    res = paired_comparison([a], [b])
    assert res.p_value == pytest.approx(sps.binomtest(4, 16, 0.5).pvalue)
    assert res.diff == pytest.approx((12 - 4) / 100)
    assert (res.only_a, res.only_b, res.n_items, res.n_seeds_a) == (12, 4, 100, 1)
    assert (res.low, res.high) == pytest.approx(newcombe_paired_interval(np.array([[40, 12], [4, 44]])))
    assert res.low < res.diff < res.high
    assert "McNemar" in res.method


@pytest.mark.parametrize("bits", [[1] * 30, [0] * 30, [1, 0, 1, 1, 0] * 6])
def test_identical_runs_give_p_1_and_an_interval_around_0(bits):
    for runs in ([_run(bits)], [_run(bits, seed=s) for s in range(3)]):
        res = paired_comparison(runs, runs, n_boot=500)
        assert res.diff == 0.0
        assert res.p_value == 1.0
        assert res.low <= 0.0 <= res.high


def test_all_correct_against_all_wrong():
    a, b = _run([1] * 20), _run([0] * 20)
    res = paired_comparison([a], [b])
    assert res.diff == 1.0
    assert res.p_value == pytest.approx(2 * 0.5**20)
    assert 0.0 < res.low < 1.0 and res.high == 1.0
    assert paired_comparison([b], [a]).low == -1.0


def test_one_seed_bootstrap_agrees_with_scipy_paired_bootstrap():
    rng = np.random.default_rng(3)
    a = rng.random(400) < 0.6
    b = np.where(rng.random(400) < 0.8, a, ~a)  # correlated with a, as two methods on the same items are
    res = paired_comparison([_run(a)], [_run(b)], method="bootstrap", n_boot=4000)
    ref = sps.bootstrap(
        (a.astype(float), b.astype(float)),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        method="percentile",
        n_resamples=4000,
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert res.low == pytest.approx(ref.low, abs=0.01)
    assert res.high == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_over_seeds_has_the_analytic_spread():
    # Each run is all right or all wrong, so resampling items changes nothing and only the seeds
    # vary: the bootstrap variance of a mean of k values is their population variance / k.
    a_acc, b_acc = [1, 1, 0, 1, 0], [0, 1, 0]
    a = [_run([x] * 50, seed=i) for i, x in enumerate(a_acc)]
    b = [_run([x] * 50, seed=i) for i, x in enumerate(b_acc)]
    res = paired_comparison(a, b, method="bootstrap", n_boot=20_000)
    expected_sd = math.sqrt(np.var(a_acc) / 5 + np.var(b_acc) / 3)
    # percentile interval of a near-normal distribution: about +- 1.96 sd (discreteness: 15 %)
    assert (res.high - res.low) / (2 * 1.96) == pytest.approx(expected_sd, rel=0.15)
    assert res.diff == pytest.approx(0.6 - 1 / 3)
    assert (res.n_seeds_a, res.n_seeds_b) == (5, 3)


def test_bootstrap_is_deterministic_and_detects_a_clear_difference():
    rng = np.random.default_rng(5)
    a = [_run(rng.random(300) < 0.7, seed=s) for s in range(3)]
    b = [_run(rng.random(300) < 0.5, seed=s) for s in range(3)]
    first = paired_comparison(a, b, n_boot=2000, method="bootstrap")
    assert first == paired_comparison(
        a[::-1], b, n_boot=2000, method="bootstrap"
    )  # order of files: no matter
    assert first.p_value < 0.01 and first.low > 0
    assert "bootstrap" in first.method


def test_crossed_t_reduces_to_welch_on_seed_accuracies_for_constant_runs():
    # Each run is all right or all wrong, so the items add nothing: Welch's t-test on the seeds.
    a = [_run(np.full(50, x), seed=i) for i, x in enumerate([1, 1, 0, 1])]
    b = [_run(np.full(50, x), seed=i) for i, x in enumerate([0, 1, 0])]
    res = paired_comparison(a, b)
    ref = sps.ttest_ind([1, 1, 0, 1], [0, 1, 0], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert res.p_value == pytest.approx(ref.pvalue)
    assert (res.low, res.high) == pytest.approx((ci.low, min(1.0, ci.high)))  # a difference is at most 1
    assert "items x seeds" in res.method


def test_crossed_t_reduces_to_the_paired_t_test_when_seeds_agree():
    rng = np.random.default_rng(4)
    a_items, b_items = rng.random(80) < 0.7, rng.random(80) < 0.55
    res = paired_comparison(
        [_run(a_items, seed=s) for s in range(3)], [_run(b_items, seed=s) for s in range(2)]
    )
    ref = sps.ttest_rel(a_items.astype(float), b_items.astype(float))
    assert res.p_value == pytest.approx(ref.pvalue)
    assert (res.low, res.high) == pytest.approx(tuple(ref.confidence_interval(0.95)))


def test_crossed_t_with_one_seed_on_a_side_pools_the_other_sides_seed_variance():
    a = [_run(np.full(30, x), seed=i) for i, x in enumerate([1, 0, 1])]
    b = [_run(np.full(30, 0))]
    res = paired_comparison(a, b)
    ref = sps.ttest_ind([1, 0, 1], [0], equal_var=True)  # pooled variance: only A's seeds estimate it
    assert res.p_value == pytest.approx(ref.pvalue)
    assert "B has one seed" in res.method


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (_run([1, 0, 1], items_hash="x" * 64, source="b.json"), "test sets differ"),
        (_run([1, 0]), "2 test items"),
    ],
)
def test_mismatched_test_sets_are_refused(other, message):
    with pytest.raises(BadInput, match=message):
        paired_comparison([_run([1, 0, 0], source="a.json")], [other])


def test_mcnemar_refuses_several_seeds():
    runs = [_run([1, 0], seed=s) for s in range(2)]
    with pytest.raises(BadInput, match="one run per experiment"):
        paired_comparison(runs, runs, method="mcnemar")


def test_item_run_from_record_reads_our_format_and_refuses_missing_or_bad_data():
    record = {"run_info": {"seed": 2}, "train_info": {"test_correct": "0110", "test_items_hash": "ab" * 32}}
    run = item_run_from_record(record, source="r.json")
    assert run.correct.tolist() == [False, True, True, False] and run.seed == 2 and run.accuracy == 0.5
    with pytest.raises(BadInput, match=r"r\.json: per-item data is missing"):
        item_run_from_record({"run_info": {}, "train_info": {}}, source="r.json")
    with pytest.raises(BadInput, match="only 0 and 1"):
        item_run_from_record({"run_info": {}, "train_info": {**record["train_info"], "test_correct": "01x"}})
    with pytest.raises(BadInput, match="test_items_hash is missing"):
        item_run_from_record({"run_info": {}, "train_info": {"test_correct": "01"}})


def test_reference_files_have_no_per_item_data(reference_dir):
    path = next(iter(sorted((reference_dir / "MetaMathQA" / "results").glob("*.json"))))
    with pytest.raises(BadInput, match="per-item data is missing"):
        item_run_from_record(load_result(path), source=str(path))


# ---- many comparisons ------------------------------------------------------------------------


def test_holm_matches_hand_computed_values_and_keeps_missing():
    p = pd.Series([0.01, np.nan, 0.04, 0.03])
    # sorted 0.01, 0.03, 0.04 -> 0.01*3, 0.03*2, 0.04*1 -> made monotone: 0.03, 0.06, 0.06
    assert holm(p).tolist()[0] == pytest.approx(0.03)
    assert math.isnan(holm(p)[1])
    assert holm(p)[2:].tolist() == pytest.approx([0.06, 0.06])
    assert holm(p).dropna().tolist() == pytest.approx(multipletests([0.01, 0.04, 0.03], method="holm")[1])


def test_compare_to_baseline_corrects_for_many_comparisons_and_notes_unpairable():
    rng = np.random.default_rng(7)
    base = [_run(rng.random(200) < 0.5, seed=s) for s in range(2)]
    runs = {
        "lora/a": [_run(rng.random(200) < 0.75, seed=s) for s in range(2)],
        "base/x": base,
        "ia3/b": [base[0]],  # one of the baseline's own runs: no real difference
        "odd/c": [_run(rng.random(100) < 0.5, source="odd.json")],
    }
    table = compare_to_baseline(runs, "base/x", n_boot=1000)
    assert table["experiment"].tolist() == ["lora/a", "ia3/b", "odd/c"]  # best first, unpairable last
    tested = table.dropna(subset=["p_value"])
    assert table["p_holm"][:2].tolist() == pytest.approx(multipletests(tested["p_value"], method="holm")[1])
    assert table["significant"].tolist()[:2] == [True, False]
    assert pd.isna(table["significant"][2]) and "odd.json has 100" in table["note"][2]
    with pytest.raises(BadInput, match='did you mean "base/x"'):
        compare_to_baseline(runs, "base/y")


def _runs_table(groups):
    rows = []
    for name, runs in groups.items():
        for r in runs:
            rows.append(
                {
                    "experiment_name": name,
                    "seed": r.seed,
                    "test_accuracy": r.accuracy,
                    "test_correct": "".join("1" if c else "0" for c in r.correct),
                    "test_items_hash": r.items_hash,
                }
            )
    return pd.DataFrame(rows)


def test_indistinguishable_from_best_on_accuracy_uses_the_per_item_data():
    rng = np.random.default_rng(11)
    items = rng.random(400)
    df = _runs_table(
        {
            "best": [_run(items < 0.8, seed=s) for s in range(2)],
            # 0.78 <= item < 0.8: best right; 0.8 <= item < 0.82: close right (a tie, ~16 items each way)
            "close": [_run((items < 0.78) | ((items >= 0.8) & (items < 0.82)), seed=s) for s in range(2)],
            "far": [_run(items < 0.4, seed=s) for s in range(2)],
        }
    )
    table = best_comparisons(df, "test_accuracy", higher_is_better=True, n_boot=1000)
    assert table.loc["best", "is_best"] and table.loc["best", "tied_with_best"]
    assert indistinguishable_from_best(df, "test_accuracy", higher_is_better=True).to_dict() == {
        "best": True,
        "close": True,
        "far": False,
    }
    assert "items x seeds" in table.loc["far", "test"]


def test_indistinguishable_from_best_without_per_item_data_uses_welch_or_says_it_cannot_tell():
    df = pd.DataFrame(
        {
            "experiment_name": ["a", "a", "a", "b", "b", "b", "c"],
            "forgetting": [0.10, 0.12, 0.11, 0.30, 0.32, 0.29, 0.5],
        }
    )
    table = best_comparisons(df, "forgetting", higher_is_better=False)
    assert table.loc["a", "is_best"]
    welch = sps.ttest_ind([0.30, 0.32, 0.29], [0.10, 0.12, 0.11], equal_var=False).pvalue
    assert table.loc["b", "p_value"] == pytest.approx(welch)
    assert table.loc["b", "tied_with_best"] is False or not table.loc["b", "tied_with_best"]
    assert pd.isna(table.loc["c", "tied_with_best"]) and "2+ seeds" in table.loc["c", "test"]
    with pytest.raises(BadInput, match="no column"):
        best_comparisons(df, "forgeting", higher_is_better=False)


@pytest.mark.parametrize(("k_a", "k_b", "seed_sd"), [(3, 3, 0.3), (3, 3, 0.0), (2, 1, 0.3)])
def test_crossed_t_keeps_its_level_under_simulated_nulls(k_a, k_b, seed_sd):
    # Two methods of equal skill; items differ in difficulty (shared), seeds shift a run's skill.
    # The test must reject about 5% of the time at alpha 0.05 (docs/statistics.md has the full table;
    # the paired bootstrap reaches 0.13-0.23 in some of these settings, McNemar on one seed 0.3-0.7).
    rng = np.random.default_rng(2026)

    def runs(k, item):
        skill = [0.3 + rng.normal(0, seed_sd) for _ in range(k)]
        return [_run(rng.random(200) < 1 / (1 + np.exp(-(s + item))), seed=i) for i, s in enumerate(skill)]

    sims, rejected = 300, 0
    for _ in range(sims):
        item = rng.normal(0, 1.5, 200)
        rejected += paired_comparison(runs(k_a, item), runs(k_b, item)).p_value < 0.05
    assert 0.01 <= rejected / sims <= 0.09  # binomial sd at 5% and 300 sims: 0.0126


@st.composite
def _paired_experiments(draw):
    """Two experiments on the same few items: 1-3 seeds each, any pattern of right and wrong."""
    n_items = draw(st.integers(1, 12))
    seeds = st.lists(st.lists(st.booleans(), min_size=n_items, max_size=n_items), min_size=1, max_size=3)
    a, b = draw(seeds), draw(seeds)
    return [_run(x, seed=i) for i, x in enumerate(a)], [_run(x, seed=i) for i, x in enumerate(b)]


@settings(max_examples=150, deadline=None)
@given(_paired_experiments())
def test_paired_comparison_properties(runs):
    a, b = runs
    ab, ba = paired_comparison(a, b), paired_comparison(b, a)
    assert 0.0 <= ab.p_value <= 1.0
    assert -1.0 <= ab.low <= ab.diff + 1e-12 and ab.diff - 1e-12 <= ab.high <= 1.0
    # swapping A and B mirrors the difference and its interval and keeps the p-value
    assert ba.diff == pytest.approx(-ab.diff, abs=1e-12)
    assert (ba.low, ba.high) == pytest.approx((-ab.high, -ab.low), abs=1e-9)
    assert ba.p_value == pytest.approx(ab.p_value, abs=1e-9)
    # the order of the test items does not matter, as long as both experiments keep the same one
    order = np.arange(len(a[0].correct))[::-1]
    flipped = paired_comparison(
        [_run(r.correct[order], seed=r.seed) for r in a], [_run(r.correct[order], seed=r.seed) for r in b]
    )
    assert (flipped.diff, flipped.low, flipped.high, flipped.p_value) == pytest.approx(
        (ab.diff, ab.low, ab.high, ab.p_value), abs=1e-9
    )


def test_welch_comparison_matches_scipy_and_handles_constant_or_too_few_values():
    a, b = [2.0, 2.5, 2.2, None], [3.1, 2.9, 3.4, 3.0]
    res = welch_comparison(a, b, confidence=0.9)
    ref = sps.ttest_ind([2.0, 2.5, 2.2], [3.1, 2.9, 3.4, 3.0], equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert (res.p_value, res.low, res.high) == pytest.approx((ref.pvalue, ci.low, ci.high))
    assert (res.n_seeds_a, res.n_seeds_b) == (3, 4)  # the missing value is dropped
    same = welch_comparison([1.0, 1.0], [1.0, 1.0])
    assert (same.diff, same.p_value, same.low, same.high) == (0.0, 1.0, 0.0, 0.0)
    with pytest.raises(BadInput, match="at least 2 values on each side, got 1 and 2"):
        welch_comparison([1.0], [1.0, 2.0])


# ---- Holm-adjusted intervals: an interval that excludes 0 goes with "significant" -------------------


def test_holm_adjusted_intervals_agree_with_significance_and_match_scipy_at_their_level():
    base = [0.30, 0.32, 0.29, 0.31]
    values = {
        "base/x": base,
        "far/a": [0.10, 0.12, 0.11, 0.10],  # clearly better: significant after Holm
        "near/b": [0.26, 0.29, 0.27, 0.28],  # p about 0.02 alone: not after Holm over 5
        **{f"same/{i}": [0.30 + 0.01 * i, 0.31, 0.29, 0.32] for i in range(3)},
    }
    table = welch_to_baseline(values, "base/x", alpha=0.05).set_index("experiment")
    m = len(table)
    near = table.loc["near/b"]
    alone = welch_comparison(values["near/b"], base, confidence=0.95)
    assert alone.high < 0 and alone.p_value < 0.05  # the unadjusted interval excludes 0 ...
    assert not near["significant"] and near["low"] < 0 < near["high"]  # ... the Holm-adjusted one does not
    for name, row in table.iterrows():
        assert bool(row["low"] > 0 or row["high"] < 0) == bool(row["significant"]), name
        ref = sps.ttest_ind(values[name], base, equal_var=False).confidence_interval(row["level"])
        assert (row["low"], row["high"]) == pytest.approx((ref.low, ref.high))
        assert row["note"] == ""
    first = table["p_value"].idxmin()
    assert first == "far/a" and table.loc[first, "significant"]
    assert table.loc[first, "level"] == pytest.approx(1 - 0.05 / m)  # the smallest p-value: Bonferroni
    assert table["p_holm"].tolist() == pytest.approx(multipletests(table["p_value"], method="holm")[1])


def test_holm_level_divides_alpha_by_the_factor_holm_applied():
    assert holm_level(0.01, 0.03, alpha=0.05, m=3) == pytest.approx(1 - 0.05 / 3)
    assert holm_level(0.5, 1.0, alpha=0.05, m=3) == pytest.approx(1 - 0.05 / 2)  # capped at 1
    assert holm_level(0.0, 0.0, alpha=0.05, m=4) == pytest.approx(1 - 0.05 / 4)  # no noise: Bonferroni


def test_holm_adjust_says_when_a_test_and_its_interval_disagree():
    table = pd.DataFrame({"experiment": ["a", "b"], "p_value": [0.5, 0.001], "note": ["", ""]})
    out = holm_adjust(table, lambda name, level: (0.1, 0.2), alpha=0.05).set_index("experiment")
    assert "disagree" in out.loc["a", "note"]  # not significant, yet the interval excludes 0
    assert out.loc["b", "note"] == ""  # significant, and the interval excludes 0


def test_compare_to_baseline_intervals_are_holm_adjusted():
    rng = np.random.default_rng(3)
    base = [_run(rng.random(300) < 0.5, seed=s) for s in range(3)]
    runs = {"base/x": base, **{f"m/{i}": [_run(rng.random(300) < 0.45 - 0.05 * i)] for i in range(5)}}
    table = compare_to_baseline(runs, "base/x")
    for _, row in table.iterrows():
        assert bool(row["low"] > 0 or row["high"] < 0) == bool(row["significant"])
        alone = paired_comparison(runs[row["experiment"]], base, confidence=row["level"])
        assert (row["low"], row["high"]) == pytest.approx((alone.low, alone.high))
        assert row["level"] >= 0.95


def test_tied_with_best_is_decided_within_each_variant():
    """A quick run is neither the best of the full runs nor tested against them."""
    from peftbench.analysis.aggregate import mark_tied_with_best
    from peftbench.tasks.base import COMMON_METRICS

    df = pd.DataFrame(
        {
            "experiment_name": ["a"] * 3 + ["b"] * 3 + ["a [quick]"] * 3 + ["b [quick]"] * 2,
            "variant": [""] * 6 + ["quick"] * 5,
            "forgetting": [0.10, 0.12, 0.11, 0.30, 0.32, 0.29, 0.01, 0.02, 0.015, 0.011, 0.02],
        }
    )
    table = best_comparisons(df, "forgetting", higher_is_better=False)
    assert table["is_best"].to_dict() == {"a": True, "b": False, "a [quick]": True, "b [quick]": False}
    assert table["tied_with_best"].to_dict() == {"a": True, "b": False, "a [quick]": True, "b [quick]": True}
    assert table["variant"].to_dict() == {"a": "", "b": "", "a [quick]": "quick", "b [quick]": "quick"}
    forgetting = next(m for m in COMMON_METRICS if m.name == "forgetting")
    per_run = mark_tied_with_best(df, forgetting)
    assert per_run.tolist() == [True] * 3 + [False] * 3 + [True] * 5
