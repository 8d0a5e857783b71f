"""View logic shared by the dashboard and the report, so that the two show the same thing: the runs
table with `tied_with_best`, the Pareto frontier (`panel`), the default Pareto axes for the device the
results came from, the training curves' means and intervals, the base model's name, and numbers in
human units (GB, M params, s). dashboard/ only lays these out."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

import pandas as pd

from peftbench.analysis.aggregate import (
    compact_columns,
    mark_tied_with_best,
    seed_summary,
    whole_number_columns,
)
from peftbench.analysis.pareto import pareto_mask
from peftbench.tasks.base import STEP_METRICS, STEP_TRAIN_LOSS, STEP_TRAIN_REWARD, Metric

TIED_COLUMN = "tied_with_best"
# memory_kind of results measured on a CPU: the resident memory of the whole process (weights,
# Python, libraries), nearly the same for every method, so a poor default axis
PROCESS_MEMORY = "process_rss"

# Units of the columns the runner measures for every task; any other column is a plain number.
UNITS = {
    "memory_max": "bytes",
    "memory_reserved_avg": "bytes",
    "memory_reserved_99th": "bytes",
    "file_size": "bytes",
    "num_trainable_params": "params",
    "num_total_params": "params",
    "train_time": "s",
    "total_time": "s",
}
# plotly (d3) tick formats per unit: SI prefixes, so 7e8 bytes reads "700MB", not "0.7B"
_TICKS = {"bytes": {"tickformat": ".3~s", "ticksuffix": "B"}, "params": {"tickformat": ".3~s"}}
_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_PARAM_PREFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def _scaled(value: float, prefixes) -> tuple[float, str]:
    return next(((value / size, p) for size, p in prefixes if abs(value) >= size), (value, ""))


def human(value, unit: str | None = None) -> str:
    """A number for people: bytes as kB/MB/GB (powers of 1000), parameters as k/M/B, seconds as s;
    other numbers with 4 significant digits. Missing values are ""."""
    if value is None or pd.isna(value):
        return ""
    if unit == "bytes":
        scaled, prefix = _scaled(float(value), _PREFIXES)
        return f"{scaled:.3g} {prefix}B"
    if unit == "params":
        scaled, prefix = _scaled(float(value), _PARAM_PREFIXES)
        return f"{scaled:.3g} {prefix}".rstrip()
    if unit == "s":
        return f"{value:,.0f} s" if abs(value) >= 100 else f"{value:.3g} s"
    return f"{value:.4g}"


def human_of(column: str) -> Callable[[object], str]:
    """The formatter of one column (see `human`)."""
    unit = UNITS.get(column)
    return lambda value: human(value, unit)


def column_formatters(table: pd.DataFrame) -> dict[str, Callable[[object], str]]:
    """Formatters for the numeric columns of a table view: units where known, thousands separators
    for other whole numbers (seeds, counts), 4 significant digits otherwise."""
    whole = set(whole_number_columns(table))
    formatters = {}
    for column in table.columns:
        if table[column].dtype.kind not in "fiu":
            continue
        if column in UNITS:
            formatters[column] = human_of(column)
        elif column in whole:
            formatters[column] = lambda v: "" if pd.isna(v) else f"{v:,.0f}"
        else:
            formatters[column] = lambda v: "" if pd.isna(v) else f"{v:.4g}"
    return formatters


def axis_format(metric: Metric, values: pd.Series) -> dict:
    """plotly axis settings that put the metric's unit on its ticks; parameter counts, which span
    orders of magnitude (hundreds for IA3, millions for full fine-tuning), on a log scale."""
    unit = UNITS.get(metric.name, "")
    axis = dict(_TICKS.get(unit, {}))
    values = pd.to_numeric(values, errors="coerce").dropna()
    if unit == "params" and not values.empty and values.min() > 0 and values.max() >= 100 * values.min():
        axis["type"] = "log"
    return axis


def results_table(runs: pd.DataFrame, metrics: Sequence[Metric], *, primary: Metric | None) -> pd.DataFrame:
    """The table of the app and the report: compact columns, and `tied_with_best` on `primary`
    (yes / no / ? from peftbench.analysis.aggregate.mark_tied_with_best) after the identity columns."""
    if runs.empty:
        return pd.DataFrame(columns=["experiment_name", "seed", "family"])
    view = runs[compact_columns(runs, metrics)].copy()
    if primary is not None and primary.name in runs.columns:
        tied = mark_tied_with_best(runs, primary)
        view.insert(3, TIED_COLUMN, tied.map({True: "yes", False: "no"}).fillna("?").astype(str))
    if "created_at" in view.columns:
        view["created_at"] = view["created_at"].dt.strftime("%Y-%m-%d %H:%M")
    return view.reset_index(drop=True)


def measured_on_cpu(runs: pd.DataFrame) -> bool:
    """Whether the runs' memory figures are process memory (CPU runs) rather than accelerator memory."""
    if not {"memory_kind", "memory_max"} <= set(runs.columns):
        return False
    kinds = runs.loc[pd.to_numeric(runs["memory_max"], errors="coerce").notna(), "memory_kind"]
    return not kinds.empty and bool((kinds == PROCESS_MEMORY).any())


def default_axes(metrics: Sequence[Metric], runs: pd.DataFrame) -> tuple[Metric, Metric] | None:
    """x and y of the first Pareto plot. y: the first higher-is-better metric (test accuracy). x: peak
    memory, as the reference does, where it is accelerator memory; with CPU runs among the results,
    where "memory" is the process's resident memory and about the same for every method, the number
    of trainable parameters (else the train time)."""
    names = {m.name: m for m in metrics}
    y = next((m for m in metrics if m.higher_is_better), None)
    preferred = ("num_trainable_params", "train_time") if measured_on_cpu(runs) else ("memory_max",)
    x = next((names[n] for n in preferred if n in names), None)
    x = x or next((m for m in metrics if m is not y), None)
    if x is None or y is None:
        return None
    return x, y


def base_model_label(runs: pd.DataFrame, model_id: str) -> str:
    """The base model named with its size, e.g. "meta-llama/Llama-3.2-3B (3.21 B params)"; a model in
    a folder of the task (model_id "base_model") is named after the task: "tinymath base model (...)".

    The size is the most common count of frozen parameters (total minus trainable) over the model's
    runs: that is the base model under additive adapters, whatever some methods add or replace."""
    mine = runs[runs["model_id"].fillna("") == model_id]
    name = model_id
    path = PurePath(model_id)
    if "/" not in model_id and not path.is_absolute() and not mine.empty:
        name = f"{mine['task'].iloc[0]} {model_id.replace('_', ' ')}"
    if {"num_total_params", "num_trainable_params"} <= set(mine.columns):
        frozen = mine["num_total_params"] - mine["num_trainable_params"]
        frozen = frozen[frozen > 0].mode()
        if not frozen.empty:
            name += f" ({human(float(frozen.iloc[0]), 'params')} params)"
    return name


def axes_note(runs: pd.DataFrame, axes: tuple[Metric, Metric] | None) -> str:
    """Why the plot's x is not memory, when `default_axes` chose so for CPU runs; "" otherwise."""
    if axes is None or not measured_on_cpu(runs) or axes[0].name.startswith("memory"):
        return ""
    return (
        "Runs on a CPU record as peak memory the resident memory of the whole process, about the same "
        f"for every method; so the Pareto plot's x is {axes[0].label or axes[0].name}."
    )


def frontier_names(experiments: pd.DataFrame, *, x: Metric, y: Metric) -> list[str]:
    """The experiments on the Pareto frontier of x and y (one per variant: `pareto_mask`), by x."""
    if experiments.empty:
        return []
    mask = pareto_mask(experiments, x=x, y=y)
    return experiments[mask].sort_values(x.name, kind="stable")["experiment_name"].tolist()


@dataclass
class Panel:
    """What the app and the report show of some runs for one pair of axes: the seed summary, the table
    with `tied_with_best` on y, and the Pareto frontier. `axes` is None when no pair could be chosen."""

    runs: pd.DataFrame
    metrics: tuple[Metric, ...]
    experiments: pd.DataFrame  # seed summary of `runs` (one row per experiment, with intervals)
    table: pd.DataFrame  # `results_table`
    axes: tuple[Metric, Metric] | None
    frontier: list[str]


def panel(runs: pd.DataFrame, metrics: Sequence[Metric], *, axes: tuple[Metric, Metric] | None) -> Panel:
    """The one place where the app and the report compute their table and frontier."""
    metrics = tuple(metrics)
    experiments = seed_summary(runs, metrics) if not runs.empty else pd.DataFrame()
    table = results_table(runs, metrics, primary=axes[1] if axes else None)
    frontier = frontier_names(experiments, x=axes[0], y=axes[1]) if axes else []
    return Panel(runs, metrics, experiments, table, axes, frontier)


def curve_columns(
    curves: pd.DataFrame, step_metrics: Sequence[Metric] = STEP_METRICS
) -> list[tuple[str, str]]:
    """The curves shown, as (column, label): the train loss, the train reward of RL runs (peftbench.rl:
    their training curve), and the first declared validation metric that is better when higher (the
    task's, else valid accuracy) where the curves have them."""
    valid = next(
        (
            m
            for m in step_metrics
            if m.higher_is_better and m.key.startswith("valid") and m.name in curves.columns
        ),
        None,
    )
    train = [m for m in (STEP_TRAIN_LOSS, STEP_TRAIN_REWARD) if m.name in curves.columns] or [STEP_TRAIN_LOSS]
    return [(m.name, m.label) for m in (*train, *([valid] if valid else []))]


CURVE_POINT_COLUMNS = ["experiment_name", "column", "step", "mean", "half_width"]


def curve_points(
    curves: pd.DataFrame, experiments: Sequence[str], *, confidence: float = 0.95
) -> pd.DataFrame:
    """Per chosen experiment, curve column and step: the mean over seeds and the half-width of the
    t-interval across seeds (NaN with one seed). Experiments in the given order, steps ascending."""
    from peftbench.analysis.stats import t_interval  # scipy: imported only where curves are drawn

    rows = []
    for experiment in experiments:
        runs = curves[curves["experiment_name"] == experiment] if not curves.empty else curves
        for column, _ in curve_columns(curves):
            if column not in runs.columns:
                continue
            for step, group in runs.groupby("step", sort=True):
                interval = t_interval(group[column].tolist(), confidence=confidence)
                if interval.mean is None:
                    continue
                half = interval.half_width if interval.half_width is not None else math.nan
                rows.append([experiment, column, step, interval.mean, half])
    return pd.DataFrame(rows, columns=CURVE_POINT_COLUMNS)
