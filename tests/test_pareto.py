"""Pareto frontier: known answers, ties, missing values, every direction, and a brute-force check."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peftbench.analysis.aggregate import load_results
from peftbench.analysis.pareto import find_metric, pareto_front, pareto_mask
from peftbench.errors import BadInput
from peftbench.tasks.base import COMMON_METRICS, Metric

ACC = Metric("test_accuracy", "higher")
MEM = Metric("memory_max", "lower")


def frame(points: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=["experiment_name", "memory_max", "test_accuracy"])


def test_known_frontier_ordered_by_x():
    df = frame(
        [
            ("big-good", 10.0, 0.9),
            ("small-bad", 1.0, 0.2),
            ("mid", 5.0, 0.6),
            ("dominated", 6.0, 0.5),  # mid has less memory and more accuracy
            ("worse-twin", 10.0, 0.8),  # same memory as big-good, lower accuracy
        ]
    )
    front = pareto_front(df, x=MEM, y=ACC)
    assert front["experiment_name"].tolist() == ["small-bad", "mid", "big-good"]


def test_equal_y_at_worse_x_is_dominated():
    df = frame([("a", 1.0, 0.5), ("b", 2.0, 0.5)])
    assert pareto_front(df, x=MEM, y=ACC)["experiment_name"].tolist() == ["a"]


def test_identical_points_are_both_kept():
    df = frame([("a", 1.0, 0.5), ("b", 1.0, 0.5), ("c", 3.0, 0.4)])
    assert sorted(pareto_front(df, x=MEM, y=ACC)["experiment_name"]) == ["a", "b"]


def test_missing_values_are_never_on_the_frontier():
    df = frame([("a", 1.0, math.nan), ("b", 2.0, 0.5), ("c", math.nan, 0.9)])
    assert pareto_front(df, x=MEM, y=ACC)["experiment_name"].tolist() == ["b"]


def test_empty_and_all_missing():
    assert pareto_front(frame([]), x=MEM, y=ACC).empty
    assert not pareto_mask(frame([("a", math.nan, math.nan)]), x=MEM, y=ACC).any()


def test_directions_flip_the_frontier():
    df = frame([("a", 1.0, 0.1), ("b", 2.0, 0.2), ("c", 3.0, 0.3)])
    # on a line going up: with memory lower-better and accuracy higher-better every point is a trade-off
    assert len(pareto_front(df, x=MEM, y=ACC)) == 3
    # if both were "lower is better", only the first point would survive
    low_acc = Metric("test_accuracy", "lower")
    assert pareto_front(df, x=MEM, y=low_acc)["experiment_name"].tolist() == ["a"]
    high_mem = Metric("memory_max", "higher")
    assert pareto_front(df, x=high_mem, y=ACC)["experiment_name"].tolist() == ["c"]


def test_unknown_metric_and_missing_column_are_bad_input():
    with pytest.raises(BadInput, match='did you mean "test_accuracy"'):
        find_metric("test_acuracy", COMMON_METRICS)
    with pytest.raises(BadInput, match="no column"):
        pareto_mask(frame([("a", 1.0, 0.5)]), x=Metric("forgetting", "lower"), y=ACC)


def brute_force(xs: list[float], ys: list[float], *, x: Metric, y: Metric) -> list[bool]:
    """The definition, O(n^2): no other point at least as good on both and better on one."""

    def better_or_equal(a, b, m):
        return a >= b if m.higher_is_better else a <= b

    out = []
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        if math.isnan(xi) or math.isnan(yi):
            out.append(False)
            continue
        dominated = any(
            better_or_equal(xj, xi, x) and better_or_equal(yj, yi, y) and (xj != xi or yj != yi)
            for j, (xj, yj) in enumerate(zip(xs, ys, strict=True))
            if j != i and not (math.isnan(xj) or math.isnan(yj))
        )
        out.append(not dominated)
    return out


# Few distinct values, so that ties are common.
_VALUES = st.one_of(st.sampled_from([0.0, 1.0, 2.0, 3.0]), st.just(math.nan), st.floats(-5, 5))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_VALUES, _VALUES), max_size=25),
    st.sampled_from(list(itertools.product(["higher", "lower"], repeat=2))),
)
def test_matches_brute_force(points, directions):
    x, y = Metric("x", directions[0]), Metric("y", directions[1])
    df = pd.DataFrame(points, columns=["x", "y"], dtype=float)
    expected = brute_force(df["x"].tolist(), df["y"].tolist(), x=x, y=y)
    assert pareto_mask(df, x=x, y=y).tolist() == expected


def test_reference_frontier(reference_dir):
    loaded = load_results([reference_dir / "MetaMathQA"])
    table = loaded.table
    front = pareto_front(table, x=MEM, y=ACC)
    assert 1 <= len(front) < len(table)
    # the most accurate run is on the frontier, and so is the least memory-hungry one with an accuracy
    assert table.loc[table["test_accuracy"].idxmax(), "experiment_name"] in set(front["experiment_name"])
    with_acc = table.dropna(subset=["test_accuracy"])
    least = with_acc[with_acc["memory_max"] == with_acc["memory_max"].min()]
    assert set(front["experiment_name"]) & set(least["experiment_name"])
    # the frontier is ordered by memory, and accuracy rises along it
    assert np.all(np.diff(front["memory_max"].to_numpy()) >= 0)
    assert np.all(np.diff(front["test_accuracy"].to_numpy()) > 0)


def test_each_variant_has_its_own_frontier():
    """A quick run is cheap because it is short: it must not push the full runs off their frontier."""
    df = frame(
        [("full", 10.0, 0.55), ("lora", 5.0, 0.41), ("full [quick]", 1.0, 0.6), ("lora [quick]", 2.0, 0.2)]
    )
    df["variant"] = ["", "", "quick", "quick"]
    assert pareto_mask(df, x=MEM, y=ACC).tolist() == [True, True, True, False]
    assert pareto_mask(df.drop(columns="variant"), x=MEM, y=ACC).tolist() == [False, False, True, False]
