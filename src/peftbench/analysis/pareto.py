"""The Pareto frontier of two metrics: the runs (or experiments) that no other one beats on both."""

from __future__ import annotations

import numpy as np
import pandas as pd

from peftbench.errors import BadInput, did_you_mean
from peftbench.tasks.base import Metric


def find_metric(name: str, metrics: list[Metric] | tuple[Metric, ...]) -> Metric:
    """The metric called `name`, or BadInput naming the valid ones."""
    for metric in metrics:
        if metric.name == name:
            return metric
    names = [m.name for m in metrics]
    raise BadInput(f'unknown metric "{name}"{did_you_mean(name, names)}; metrics: {", ".join(names)}')


def pareto_mask(df: pd.DataFrame, *, x: Metric, y: Metric) -> pd.Series:
    """True for the rows on the Pareto frontier of metrics x and y (directions from the Metric).

    A row is on the frontier when no other row is at least as good on both metrics and strictly
    better on one. Rows lacking either value are never on it. Identical points are all kept.
    Each variant (column `variant`: full, quick, shortened; peftbench.analysis.variant) has its own
    frontier, so that a 150-step quick run, cheap because it is short, never pushes a full run off.
    """
    for metric in (x, y):
        if metric.name not in df.columns:
            raise BadInput(f'no column "{metric.name}" in the results table')
    xs = pd.to_numeric(df[x.name], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y.name], errors="coerce").to_numpy(dtype=float)
    # Both metrics as "lower is better" so that one sweep serves every direction.
    xs = -xs if x.higher_is_better else xs
    ys = -ys if y.higher_is_better else ys
    variants = df["variant"].fillna("").to_numpy() if "variant" in df.columns else np.full(len(df), "")
    on_front = np.zeros(len(df), dtype=bool)
    for variant in np.unique(variants):
        rows = np.flatnonzero(variants == variant)
        on_front[rows] = _front(xs[rows], ys[rows])
    return pd.Series(on_front, index=df.index)


def _front(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The frontier of points to be minimised on both axes (NaN: never on it)."""
    on_front = np.zeros(len(xs), dtype=bool)
    idx = np.flatnonzero(~(np.isnan(xs) | np.isnan(ys)))
    if idx.size:
        order = idx[np.lexsort((ys[idx], xs[idx]))]
        best_y = np.inf
        start = 0
        # Walk the groups of equal x from best to worst: a group's best y is on the frontier when it
        # beats every y seen so far (strictly: an equal y at a better x dominates it).
        while start < len(order):
            stop = start
            while stop < len(order) and xs[order[stop]] == xs[order[start]]:
                stop += 1
            group = order[start:stop]
            group_best = ys[group].min()
            if group_best < best_y:
                on_front[group[ys[group] == group_best]] = True
                best_y = group_best
            start = stop
    return on_front


def pareto_front(df: pd.DataFrame, *, x: Metric, y: Metric) -> pd.DataFrame:
    """The frontier's rows, ordered by the x metric (ascending)."""
    front = df[pareto_mask(df, x=x, y=y)]
    return front.sort_values([x.name, y.name], kind="stable")
