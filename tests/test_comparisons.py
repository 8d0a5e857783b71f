"""peftbench.analysis.comparisons: the comparisons behind `peftbench compare`, called without the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats as sps
from test_compare import bits, write_result

from peftbench.analysis.aggregate import load_results
from peftbench.analysis.comparisons import (
    check_metric,
    compare_all,
    compare_all_metric,
    compare_two,
    compare_two_metric,
    select_task,
)
from peftbench.analysis.stats import item_runs, paired_comparison
from peftbench.errors import BadInput


@pytest.fixture
def table(tmp_path):
    """lora/a (three seeds, 80% right), lora/b (three seeds, 50%), ia3/c (one seed, no per-item data)."""
    rng = np.random.default_rng(0)
    results = tmp_path / "results"
    for seed, (fa, fb) in enumerate([(0.10, 0.31), (0.12, 0.30), (0.11, 0.33)]):
        write_result(results, "lora/a", bits(rng, 0.8), seed=seed, forgetting=fa)
        write_result(results, "lora/b", bits(rng, 0.5), seed=seed, forgetting=fb)
    path = write_result(results, "ia3/c", bits(rng, 0.75), forgetting=0.2)
    record = json.loads(path.read_text())
    del record["train_info"]["test_correct"]
    path.write_text(json.dumps(record))
    return load_results([results]).table


def test_compare_two_is_the_paired_comparison_of_the_item_runs(table):
    result = compare_two(table, "lora/a", "lora/b", confidence=0.95, n_boot=100, rng_seed=0)
    runs = {
        name: item_runs(table[table["experiment_name"] == f"lora/{name}"].sort_values("seed"))
        for name in "ab"
    }
    res = paired_comparison(runs["a"], runs["b"], n_boot=100)
    assert (result["diff"], result["low"], result["high"], result["p_value"]) == (res.diff, res.low, res.high,
                                                                                 res.p_value)  # fmt: skip
    assert [e["experiment"] for e in result["experiments"]] == ["lora/a", "lora/b"]
    assert (
        result["experiments"][0]["seeds"] == [0, 1, 2] and result["experiments"][0]["interval"] == "t, seeds"
    )


def test_compare_two_metric_is_welch_across_seeds(table):
    result = compare_two_metric(table, "lora/a", "lora/b", metric="forgetting", confidence=0.95)
    ref = sps.ttest_ind([0.10, 0.12, 0.11], [0.31, 0.30, 0.33], equal_var=False)
    assert result["p_value"] == pytest.approx(ref.pvalue) and result["n_items"] is None
    assert result["experiments"][1]["mean"] == pytest.approx(0.94 / 3)


def test_compare_all_notes_runs_without_per_item_data(table):
    result = compare_all(table, "lora/b", alpha=0.05, n_boot=100, rng_seed=0)
    assert [c["experiment"] for c in result["comparisons"]] == ["lora/a"]
    assert result["comparisons"][0]["significant"] is True and result["baseline_seeds"] == 3
    assert [m["experiment"] for m in result["without_per_item_data"]] == ["ia3/c"]
    json.dumps(result)  # plain Python values only: NaN and NA are None


def test_compare_all_metric_sorts_best_first_by_the_metrics_direction(table):
    result = compare_all_metric(table, "lora/b", metric="forgetting", alpha=0.05)
    rows = result["comparisons"]
    assert [r["experiment"] for r in rows] == ["lora/a", "ia3/c"]  # lower forgetting is better
    assert rows[0]["diff"] == pytest.approx((0.33 - 0.94) / 3) and rows[1]["p_value"] is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: check_metric(t, "forgeting"), '"forgeting" in these results (did you mean "forgetting"?)'),
        (lambda t: select_task(t, task="nope", paths=["x"]), 'no runs of task "nope"'),
        (lambda t: select_task(t.iloc[:0], task=None, paths=["x"]), "no successful runs found in x"),
        (lambda t: compare_two(t, "lora/a", "lora/z", confidence=0.95, n_boot=10, rng_seed=0), '"lora/z"'),
    ],
)
def test_bad_input_names_what(table, call, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        call(table)
