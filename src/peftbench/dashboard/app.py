"""The Gradio dashboard: a thin layer over peftbench.analysis (aggregation, filters, Pareto, stats).

`build_app` takes the loaded results and returns a `gr.Blocks`; every callback below is a plain
function of its inputs (`views`), so the logic is tested without a browser, and the browser test
checks the wiring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from peftbench.analysis.aggregate import (
    Loaded,
    available_metrics,
    diff_runs,
    display_columns,
    select,
    task_metrics,
    tasks_in,
)
from peftbench.analysis.filters import apply_filter
from peftbench.analysis.flips import COLUMNS as FLIP_COLUMNS
from peftbench.analysis.flips import flips_summary, item_flips
from peftbench.analysis.pareto import find_metric
from peftbench.analysis.views import (
    axes_note,
    base_model_label,
    column_formatters,
    curve_columns,
    curve_points,
    default_axes,
    human_of,
    panel,
)
from peftbench.dashboard.overhead_view import inference_panel
from peftbench.dashboard.plots import curves_figure, message_figure, pareto_figure
from peftbench.errors import BadInput
from peftbench.results import load_completions

FILTER_HELP = (
    "Filter with comparisons of columns and literals, joined by and / or / not: "
    "e.g. `peft_type == 'LORA' and test_accuracy > 0.4`, `family in ['orthogonal', 'prompt-based']`"
)
ANY_MODEL = "(all base models)"


@dataclass
class View:
    """Everything the page shows for one choice of task, base model, filter and metrics."""

    runs: pd.DataFrame  # after the filter
    table: pd.DataFrame  # what the results table shows
    status: str  # one line: how many runs, or the filter's error
    experiments: pd.DataFrame  # seed summary of `runs`
    figure: object
    summary: str
    frontier: list[str]


def model_choices(loaded: Loaded, task: str | None) -> list[str]:
    runs = select(loaded.table, task=task)
    models = sorted(runs["model_id"].dropna().unique()) if not runs.empty else []
    return [ANY_MODEL, *models] if len(models) != 1 else models


def model_options(loaded: Loaded, task: str | None) -> list[tuple[str, str]]:
    """The base-model dropdown's (label, value) pairs: each model named with its size."""
    runs = select(loaded.table, task=task)
    return [(m if m == ANY_MODEL else base_model_label(runs, m), m) for m in model_choices(loaded, task)]


def metric_choices(loaded: Loaded, task: str | None) -> tuple[list[str], str | None, str | None, str]:
    """Names of the task's metrics that have values, default x and y, and the task's note."""
    if task is None:
        return [], None, None, ""
    metrics, note = task_metrics(task)
    runs = select(loaded.table, task=task)
    usable = available_metrics(runs, metrics)
    axes = default_axes(usable, runs)
    names = [m.name for m in usable]
    note = "\n\n".join(filter(None, [note, axes_note(runs, axes)]))
    return names, (axes[0].name if axes else None), (axes[1].name if axes else None), note


def build_view(
    loaded: Loaded, *, task: str | None, model: str | None, filter_text: str, x: str | None, y: str | None
) -> View:
    """The filtered runs, the table, the Pareto figure and the summary for the current choices."""
    runs = select(loaded.table, task=task, model_id=None if model in (None, "", ANY_MODEL) else model)
    total = len(runs)
    status = f"{total} runs"
    try:
        runs = apply_filter(runs, filter_text or "")
        if filter_text and filter_text.strip():
            status = f"{len(runs)} of {total} runs match the filter"
    except BadInput as exc:
        status = f"Filter error: {exc}"
    if total == 0:
        status = "No results yet." if loaded.table.empty else "No runs for this task and base model."
    metrics = task_metrics(task)[0] if task else ()
    try:
        mx, my = (find_metric(x, metrics), find_metric(y, metrics)) if x and y else (None, None)
    except BadInput:
        mx = my = None
    shown = panel(runs, metrics, axes=(mx, my) if mx is not None and my is not None else None)
    if runs.empty or shown.axes is None:
        if not total:
            text = "no results yet"
        elif runs.empty:
            text = "no runs match the filter"
        else:
            text = "choose the two metrics of the plot"
        return View(runs, shown.table, status, shown.experiments, message_figure(text), "", [])
    figure = pareto_figure(shown.experiments, x=mx, y=my, frontier=shown.frontier)
    summary = summary_text(shown.experiments, mx.name, my.name, shown.frontier)
    return View(runs, shown.table, status, shown.experiments, figure, summary, shown.frontier)


def summary_text(experiments: pd.DataFrame, x: str, y: str, frontier: list[str]) -> str:
    """Min, max and mean of both metrics over experiments, and the frontier's size and members."""
    stats = experiments[[x, y]].agg(["min", "max", "mean"])
    stats = stats.apply(lambda column: column.map(human_of(column.name))).to_string()
    lines = [
        stats,
        "",
        f"experiments: {len(experiments)}; on the Pareto frontier: {len(frontier)}; "
        f"dominated: {len(experiments) - len(frontier)}",
        "frontier (by x): " + ", ".join(frontier),
    ]
    return "\n".join(lines)


def run_labels(runs: pd.DataFrame) -> list[str]:
    """One label per run, for the diff selectors: "experiment (seed N)"."""
    return [f"{e} (seed {s})" for e, s in zip(runs["experiment_name"], runs["seed"], strict=True)]


def diff_view(runs: pd.DataFrame, a: str | None, b: str | None, *, only_differences: bool) -> pd.DataFrame:
    labels = run_labels(runs) if not runs.empty else []
    if not a or not b or a not in labels or b not in labels:
        return pd.DataFrame(columns=["key", "a", "b"])
    row_a, row_b = runs.iloc[labels.index(a)], runs.iloc[labels.index(b)]
    diff = diff_runs(row_a, row_b, only_differences=only_differences)
    # diff_runs compares the exact values; only what is shown is rounded, with units
    formats = column_formatters(runs)
    for column, row in (("a", row_a), ("b", row_b)):
        diff[column] = [
            formats[key](row[key]) if key in formats else text
            for key, text in zip(diff["key"], diff[column], strict=True)
        ]
    return diff.rename(columns={"a": a, "b": b})


def flips_view(runs: pd.DataFrame, a: str | None, b: str | None) -> tuple[str, pd.DataFrame]:
    """The items that flipped between runs A and B with both completions, and a line saying how many
    (or why there is nothing to show)."""
    labels = run_labels(runs) if not runs.empty else []
    if not a or not b or a not in labels or b not in labels:
        return "Choose two runs above.", pd.DataFrame(columns=FLIP_COLUMNS)
    row_a, row_b = runs.iloc[labels.index(a)], runs.iloc[labels.index(b)]
    try:
        completions = [load_completions(Path(row["file"])) for row in (row_a, row_b)]
        flips = item_flips(row_a, row_b, *completions)
    except BadInput as exc:
        return f"No item comparison: {exc}", pd.DataFrame(columns=FLIP_COLUMNS)
    line = f"{flips_summary(flips, n_items=len(row_a['test_correct']))} (A = {a}, B = {b})"
    missing = [name for name, c in (("A", completions[0]), ("B", completions[1])) if c is None]
    if missing:
        line += f"; no stored completions for {' and '.join(missing)} (older or reference files)"
    return line, flips


def export_csv(runs: pd.DataFrame) -> str | None:
    """Write the filtered runs to a temporary CSV file for download; None when there is nothing."""
    if runs.empty:
        return None
    with tempfile.NamedTemporaryFile(
        "w", suffix=".csv", prefix="peftbench-", delete=False, encoding="utf-8"
    ) as f:
        runs[display_columns(runs)].to_csv(f, index=False)
    return f.name


def styled(table: pd.DataFrame):
    """Numbers readable in the table: units (GB, M params, s), 4 significant digits otherwise."""
    return table.style.format(column_formatters(table), na_rep="")


class _Session:
    """The app's state (the loaded results, a cache of views) and its callbacks: plain functions of the
    widgets' values, which `build_app` wires to the widgets."""

    def __init__(self, loaded: Loaded, reload: Callable[[], Loaded] | None):
        self.loaded, self.reload = loaded, reload
        self.views: dict[tuple, View] = {}

    def view_of(self, task, model, filter_text, x, y) -> View:
        # The significance column runs paired bootstraps: compute each view once, not once per widget.
        key = (id(self.loaded), task, model, filter_text, x, y)
        if key not in self.views:
            if len(self.views) >= 32:
                self.views.pop(next(iter(self.views)))
            self.views[key] = build_view(
                self.loaded, task=task, model=model, filter_text=filter_text, x=x, y=y
            )
        return self.views[key]

    def on_task(self, task):
        import gradio as gr

        models = model_options(self.loaded, task)
        names, x, y, note = metric_choices(self.loaded, task)
        return (
            gr.update(choices=models, value=models[0][1] if models else None),
            gr.update(choices=names, value=x),
            gr.update(choices=names, value=y),
            note,
        )

    def refresh(self, task, model, filter_text, x, y):
        import gradio as gr

        view = self.view_of(task, model, filter_text, x, y)
        experiment_names = sorted(view.runs["experiment_name"].unique()) if not view.runs.empty else []
        labels = run_labels(view.runs) if not view.runs.empty else []
        chosen = view.frontier[:8]
        return (
            styled(view.table),
            view.status,
            view.figure,
            view.summary,
            gr.update(choices=experiment_names, value=chosen),
            _curves(self.loaded, task, chosen),
            gr.update(choices=labels, value=labels[0] if labels else None),
            gr.update(choices=labels, value=labels[1] if len(labels) > 1 else None),
        )

    def on_curves(self, task, experiments):
        return _curves(self.loaded, task, experiments or [])

    def on_diff(self, task, model, filter_text, x, y, a, b, only):
        return diff_view(self.view_of(task, model, filter_text, x, y).runs, a, b, only_differences=only)

    def on_flips(self, task, model, filter_text, x, y, a, b):
        return flips_view(self.view_of(task, model, filter_text, x, y).runs, a, b)

    def on_export(self, task, model, filter_text, x, y):
        import gradio as gr

        path = export_csv(self.view_of(task, model, filter_text, x, y).runs)
        return gr.update(value=path, visible=path is not None)

    def on_reload(self):
        import gradio as gr

        self.loaded = self.reload() if self.reload else self.loaded
        self.views.clear()
        tasks = tasks_in(self.loaded.table)
        return _loaded_text(self.loaded), gr.update(choices=tasks, value=tasks[0] if tasks else None)


PARETO_HELP = (
    "## Pareto plot\nEach point is one experiment (the mean over its seeds; error bars: 95% interval "
    "where there are several seeds or per-item results). Outlined points are on the Pareto frontier: "
    "no other experiment is better on both metrics. Hover for details."
)


def _layout(loaded: Loaded, *, reload: bool) -> dict[str, Any]:
    """The page's widgets, top to bottom, by name."""
    import gradio as gr

    tasks = tasks_in(loaded.table)
    task0 = tasks[0] if tasks else None
    models0 = model_options(loaded, task0)
    names0, x0, y0, note0 = metric_choices(loaded, task0)
    w: dict[str, Any] = {}
    gr.Markdown("# peftbench: PEFT method comparison")
    w["loaded"] = gr.Markdown(_loaded_text(loaded), elem_id="loaded-summary")
    with gr.Row():
        w["task"] = gr.Dropdown(tasks, value=task0, label="Task", elem_id="task-select")
        model0 = models0[0][1] if models0 else None
        w["model"] = gr.Dropdown(models0, value=model0, label="Base model", elem_id="model-select")
        w["reload"] = gr.Button("Reload results", visible=reload, scale=0)
    w["note"] = gr.Markdown(note0)
    with gr.Row():
        w["filter"] = gr.Textbox(
            label="Filter",
            placeholder="peft_type == 'LORA' and test_accuracy > 0.4",
            scale=4,
            elem_id="filter",
        )
        w["apply"] = gr.Button("Apply filter", scale=0, elem_id="apply-filter")
        w["reset"] = gr.Button("Reset", scale=0)
    gr.Markdown(FILTER_HELP)
    w["status"] = gr.Markdown(elem_id="filter-status")
    w["table"] = gr.Dataframe(
        label="Runs", interactive=False, wrap=False, max_height=500, elem_id="results-table"
    )
    gr.Markdown(PARETO_HELP)
    with gr.Row():
        w["x"] = gr.Dropdown(names0, value=x0, label="x metric")
        w["y"] = gr.Dropdown(names0, value=y0, label="y metric")
    w["plot"] = gr.Plot(label="Pareto frontier", elem_id="pareto-plot")
    w["summary"] = gr.Textbox(label="Summary statistics", lines=8, interactive=False)
    with gr.Row():
        w["export"] = gr.Button("Export filtered runs as CSV", scale=0, elem_id="export-csv")
        # hidden until there is a file: an empty File box is a tall blank area
        w["export_file"] = gr.File(label="CSV", elem_id="export-file", visible=False)
    gr.Markdown("## Training curves\nTrain loss and validation metric against step (mean over seeds).")
    w["curves"] = gr.Dropdown([], multiselect=True, label="Experiments (default: the Pareto frontier)")
    w["curves_plot"] = gr.Plot(label="Training curves", elem_id="curves-plot")
    gr.Markdown("## Compare two runs\nConfigurations and metrics side by side.")
    with gr.Row():
        w["run_a"], w["run_b"] = gr.Dropdown([], label="Run A"), gr.Dropdown([], label="Run B")
        w["only_diff"] = gr.Checkbox(value=True, label="only differences")
    w["diff"] = gr.Dataframe(
        label="Differences",
        interactive=False,
        wrap=True,
        column_widths=["30%", "35%", "35%"],
        elem_id="diff-table",
    )
    gr.Markdown(
        "## Items that flipped\nThe test items that one of runs A and B got right and the other wrong, "
        "with both completions (stored beside each result since schema version 2)."
    )
    w["flips_status"] = gr.Markdown(elem_id="flips-status")
    w["flips"] = gr.Dataframe(
        label="Flipped items",
        interactive=False,
        wrap=True,
        max_height=600,
        column_widths=["6%", "10%", "8%", "24%", "26%", "26%"],
        elem_id="flips-table",
    )
    return w


def build_app(loaded: Loaded, *, reload: Callable[[], Loaded] | None = None):
    """The dashboard for `loaded`; `reload` (optional) re-reads the results folders for the reload button."""
    import gradio as gr

    session = _Session(loaded, reload)
    with gr.Blocks(title="peftbench", analytics_enabled=False) as demo:
        w = _layout(loaded, reload=reload is not None)
        inputs = [w["task"], w["model"], w["filter"], w["x"], w["y"]]
        outputs = [
            w[k] for k in ("table", "status", "plot", "summary", "curves", "curves_plot", "run_a", "run_b")
        ]
        w["task"].change(session.on_task, [w["task"]], [w["model"], w["x"], w["y"], w["note"]]).then(
            session.refresh, inputs, outputs
        )
        for trigger in (
            w["model"].change,
            w["x"].change,
            w["y"].change,
            w["apply"].click,
            w["filter"].submit,
        ):
            trigger(session.refresh, inputs, outputs)
        w["reset"].click(lambda: "", None, w["filter"]).then(session.refresh, inputs, outputs)
        w["curves"].change(session.on_curves, [w["task"], w["curves"]], w["curves_plot"])
        for trigger in (w["run_a"].change, w["run_b"].change, w["only_diff"].change):
            trigger(session.on_diff, [*inputs, w["run_a"], w["run_b"], w["only_diff"]], w["diff"])
        for trigger in (w["run_a"].change, w["run_b"].change):
            trigger(session.on_flips, [*inputs, w["run_a"], w["run_b"]], [w["flips_status"], w["flips"]])
        w["export"].click(session.on_export, inputs, w["export_file"])
        w["reload"].click(session.on_reload, None, [w["loaded"], w["task"]]).then(
            session.refresh, inputs, outputs
        )
        ranking_section(session.view_of, inputs)
        inference_panel(loaded)
        demo.load(session.refresh, inputs, outputs)
    return demo


RANKING_HELP = (
    "## Ranking\nThe experiments of the filtered runs ranked on the y metric: mean over seeds with its 95% "
    "interval, rank (1 = best) and 95% rank interval (bootstrap over test items and seeds; one-seed "
    "experiments get the task's pooled seed variance), the group not significantly different from the best "
    '(Holm), and the Kendall tau between seeds. See docs/statistics.md, "Rankings". "Searched settings '
    'only" keeps the catalogue at the settings its equal-budget search chose (`peftbench rank --searched`): '
    "the fair comparison, every method with the same tuning budget (docs/tuning.md)."
)
NO_TASK_FOLDER = (
    "**Searched settings only** needs the task folder of these results (benchmarks/<task>, with "
    "experiments/): start the app on task folders, not results folders."
)


def ranking_section(view_of: Callable[..., View], view_inputs: list) -> None:
    """The ranking section of the page: computed on request (its bootstrap takes a second or two)."""
    import gradio as gr

    gr.Markdown(RANKING_HELP)
    with gr.Row():
        button = gr.Button("Rank experiments on the y metric", scale=0, elem_id="rank-button")
        searched = gr.Checkbox(label="Searched settings only", value=False, elem_id="rank-searched")
    table = gr.Dataframe(
        label="Ranking", interactive=False, wrap=False, max_height=500, elem_id="ranking-table"
    )
    notes = gr.Markdown(elem_id="ranking-notes")
    button.click(partial(ranked, view_of), [*view_inputs, searched], [table, notes])


def ranked(view_of: Callable[..., View], task, model, filter_text, x, y, searched: bool):
    """The ranking table and its notes (Markdown) of the filtered runs, or of their searched set."""
    from peftbench.analysis.ranking import ranking_tables
    from peftbench.dashboard.report import searched_selection

    runs = view_of(task, model, filter_text, x, y).runs
    if not searched or runs.empty:  # nothing filtered: ranking_tables says there is nothing to rank
        return ranking_tables(runs, y)
    found = searched_selection(runs)
    if found is None:
        return pd.DataFrame(), NO_TASK_FOLDER
    chosen, lines = found
    table, notes = ranking_tables(chosen, y)
    return table, "".join(f"- {line}\n" for line in lines) + "\n" + notes


def _curves(loaded: Loaded, task: str | None, experiments: list[str]):
    curves = loaded.curves
    if curves.empty or task is None:
        return message_figure("no training curves")
    curves = curves[curves["task"] == task]
    return curves_figure(curve_points(curves, experiments), curve_columns(curves))


def _loaded_text(loaded: Loaded) -> str:
    first, *scoring = loaded.summary.splitlines()
    lines = [f"Loaded: {first}.", *(f"- {line}" for line in scoring)]
    lines += [f"- warning: {w}" for w in loaded.warnings[:20]]
    if len(loaded.warnings) > 20:
        lines.append(f"- ... and {len(loaded.warnings) - 20} more")
    return "\n".join(lines)


def theme():
    """Gradio's Soft theme with system fonts: the default one fetches web fonts, which fails offline."""
    import gradio as gr

    return gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(
    paths: list[Path], *, host: str = "127.0.0.1", port: int | None = None, include_temporary: bool = False
) -> None:
    """Load the results and run the dashboard until interrupted."""
    from peftbench.analysis.aggregate import load_results

    def reload() -> Loaded:
        return load_results(paths, include_temporary=include_temporary)

    demo = build_app(reload(), reload=reload)
    demo.launch(server_name=host, server_port=port, theme=theme(), show_error=True, footer_links=[])
