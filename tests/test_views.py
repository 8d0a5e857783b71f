"""peftbench.analysis.views: what the app and the report show, computed once, without plotly or gradio."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as sps
from test_dashboard import FRONTIER, make_task

from peftbench.analysis.aggregate import available_metrics, load_results, select, task_metrics
from peftbench.analysis.views import (
    TIED_COLUMN,
    curve_columns,
    curve_points,
    default_axes,
    frontier_names,
    panel,
)
from peftbench.dashboard.plots import curves_figure


@pytest.fixture
def runs(tmp_path):
    loaded = load_results([make_task(tmp_path)])
    return select(loaded.table, task="tinymath")


def test_panel_has_the_table_with_tied_and_the_frontier_by_x(runs):
    metrics = available_metrics(runs, task_metrics("tinymath")[0])
    x = next(m for m in metrics if m.name == "memory_max")
    y = next(m for m in metrics if m.name == "test_accuracy")
    view = panel(runs, metrics, axes=(x, y))
    assert view.frontier == FRONTIER == frontier_names(view.experiments, x=x, y=y)
    assert TIED_COLUMN in view.table.columns and len(view.table) == len(runs)
    assert view.experiments.set_index("experiment_name").loc["lora/r8", "n_seeds"] == 3


def test_panel_without_axes_has_no_frontier_and_no_tied_column(runs):
    metrics = available_metrics(runs, task_metrics("tinymath")[0])
    view = panel(runs, metrics, axes=None)
    assert view.frontier == [] and TIED_COLUMN not in view.table.columns
    assert default_axes(metrics, runs) is not None  # the app and report pass these when they exist


def test_curve_points_are_the_t_intervals_across_seeds():
    curves = pd.DataFrame(
        {
            "experiment_name": ["a"] * 6 + ["b"] * 2,
            "seed": [0, 1, 2, 0, 1, 2, 0, 0],
            "step": [10, 10, 10, 20, 20, 20, 10, 20],
            "train_loss": [1.0, 1.2, 1.1, 0.8, 0.9, 0.7, 2.0, 1.5],
            "valid_accuracy": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0, 0.1],
        }
    )
    assert curve_columns(curves) == [("train_loss", "train loss"), ("valid_accuracy", "valid accuracy")]
    points = curve_points(curves, ["b", "a"])
    assert list(dict.fromkeys(points["experiment_name"])) == ["b", "a"]  # the order asked for
    a10 = points[
        (points["experiment_name"] == "a") & (points["column"] == "train_loss") & (points["step"] == 10)
    ]
    values = [1.0, 1.2, 1.1]
    expected = sps.t.ppf(0.975, 2) * sps.sem(values)
    assert a10["mean"].item() == pytest.approx(1.1) and a10["half_width"].item() == pytest.approx(expected)
    assert math.isnan(points[points["experiment_name"] == "b"]["half_width"].iloc[0])  # one seed: no interval
    figure = curves_figure(points, curve_columns(curves))
    a_loss = next(t for t in figure.data if t.name == "a" and t.xaxis == "x")
    assert list(a_loss.y) == pytest.approx([1.1, 0.8]) and a_loss.error_y.array[0] == pytest.approx(expected)


def test_curves_figure_of_no_points_says_what_to_do():
    figure = curves_figure(curve_points(pd.DataFrame(), []), [("train_loss", "train loss")])
    assert "choose experiments" in figure.layout.annotations[0].text
