"""The Gradio dashboard: a thin layer over peftbench.analysis (aggregation, filters, Pareto, stats).

`build_app` takes the loaded results and returns a `gr.Blocks`; every callback below is a plain
function of its inputs (`views`), so the logic is tested without a browser, and the browser test
checks the wiring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from peftbench.analysis.aggregate import (
    Loaded,
    available_metrics,
    diff_runs,
    display_columns,
    seed_summary,
    select,
    task_metrics,
    tasks_in,
)
from peftbench.analysis.filters import apply_filter
from peftbench.analysis.pareto import find_metric, pareto_mask
from peftbench.analysis.views import (
    axes_note,
    base_model_label,
    column_formatters,
    default_axes,
    human_of,
    results_table,
)
from peftbench.dashboard.inference import inference_panel
from peftbench.dashboard.plots import curves_figure, message_figure, pareto_figure
from peftbench.errors import BadInput

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
    experiments = seed_summary(runs, metrics) if not runs.empty else pd.DataFrame()
    table = results_table(runs, metrics, primary=my)
    if runs.empty or mx is None or my is None:
        if not total:
            text = "no results yet"
        elif runs.empty:
            text = "no runs match the filter"
        else:
            text = "choose the two metrics of the plot"
        return View(runs, table, status, experiments, message_figure(text), "", [])
    figure = pareto_figure(experiments, x=mx, y=my)
    mask = pareto_mask(experiments, x=mx, y=my)
    frontier = experiments[mask].sort_values(mx.name)["experiment_name"].tolist()
    return View(
        runs,
        table,
        status,
        experiments,
        figure,
        summary_text(experiments, mx.name, my.name, frontier),
        frontier,
    )


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


def build_app(loaded: Loaded, *, reload: Callable[[], Loaded] | None = None):
    """The dashboard for `loaded`; `reload` (optional) re-reads the results folders for the reload button."""
    import gradio as gr

    state = {"loaded": loaded}
    views: dict[tuple, View] = {}

    def view_of(task, model, filter_text, x, y) -> View:
        # The significance column runs paired bootstraps: compute each view once, not once per widget.
        key = (id(state["loaded"]), task, model, filter_text, x, y)
        if key not in views:
            if len(views) >= 32:
                views.pop(next(iter(views)))
            views[key] = build_view(
                state["loaded"], task=task, model=model, filter_text=filter_text, x=x, y=y
            )
        return views[key]

    tasks = tasks_in(loaded.table)
    task0 = tasks[0] if tasks else None
    models0 = model_options(loaded, task0)
    names0, x0, y0, note0 = metric_choices(loaded, task0)

    with gr.Blocks(title="peftbench", analytics_enabled=False) as demo:
        gr.Markdown("# peftbench: PEFT method comparison")
        loaded_md = gr.Markdown(_loaded_text(loaded), elem_id="loaded-summary")
        with gr.Row():
            task_dd = gr.Dropdown(tasks, value=task0, label="Task", elem_id="task-select")
            model_dd = gr.Dropdown(
                models0, value=models0[0][1] if models0 else None, label="Base model", elem_id="model-select"
            )
            reload_btn = gr.Button("Reload results", visible=reload is not None, scale=0)
        note_md = gr.Markdown(note0)
        with gr.Row():
            filter_tb = gr.Textbox(
                label="Filter",
                placeholder="peft_type == 'LORA' and test_accuracy > 0.4",
                scale=4,
                elem_id="filter",
            )
            apply_btn = gr.Button("Apply filter", scale=0, elem_id="apply-filter")
            reset_btn = gr.Button("Reset", scale=0)
        gr.Markdown(FILTER_HELP)
        status_md = gr.Markdown(elem_id="filter-status")
        table_df = gr.Dataframe(
            label="Runs", interactive=False, wrap=False, max_height=500, elem_id="results-table"
        )

        gr.Markdown(
            "## Pareto plot\nEach point is one experiment (the mean over its seeds; error bars: 95% interval "
            "where there are several seeds or per-item results). Outlined points are on the Pareto frontier: "
            "no other experiment is better on both metrics. Hover for details."
        )
        with gr.Row():
            x_dd = gr.Dropdown(names0, value=x0, label="x metric")
            y_dd = gr.Dropdown(names0, value=y0, label="y metric")
        plot = gr.Plot(label="Pareto frontier", elem_id="pareto-plot")
        summary_tb = gr.Textbox(label="Summary statistics", lines=8, interactive=False)
        with gr.Row():
            export_btn = gr.Button("Export filtered runs as CSV", scale=0, elem_id="export-csv")
            # hidden until there is a file: an empty File box is a tall blank area
            export_file = gr.File(label="CSV", elem_id="export-file", visible=False)

        gr.Markdown("## Training curves\nTrain loss and validation metric against step (mean over seeds).")
        curves_dd = gr.Dropdown([], multiselect=True, label="Experiments (default: the Pareto frontier)")
        curves_plot = gr.Plot(label="Training curves", elem_id="curves-plot")

        gr.Markdown("## Compare two runs\nConfigurations and metrics side by side.")
        with gr.Row():
            run_a = gr.Dropdown([], label="Run A")
            run_b = gr.Dropdown([], label="Run B")
            only_diff = gr.Checkbox(value=True, label="only differences")
        diff_df = gr.Dataframe(
            label="Differences",
            interactive=False,
            wrap=True,
            column_widths=["30%", "35%", "35%"],
            elem_id="diff-table",
        )
        inference_panel(loaded)

        def on_task(task):
            current = state["loaded"]
            models = model_options(current, task)
            names, x, y, note = metric_choices(current, task)
            return (
                gr.update(choices=models, value=models[0][1] if models else None),
                gr.update(choices=names, value=x),
                gr.update(choices=names, value=y),
                note,
            )

        def refresh(task, model, filter_text, x, y):
            current = state["loaded"]
            view = view_of(task, model, filter_text, x, y)
            experiment_names = sorted(view.runs["experiment_name"].unique()) if not view.runs.empty else []
            labels = run_labels(view.runs) if not view.runs.empty else []
            chosen = view.frontier[:8]
            return (
                styled(view.table),
                view.status,
                view.figure,
                view.summary,
                gr.update(choices=experiment_names, value=chosen),
                _curves(current, task, chosen),
                gr.update(choices=labels, value=labels[0] if labels else None),
                gr.update(choices=labels, value=labels[1] if len(labels) > 1 else None),
            )

        def on_curves(task, experiments):
            return _curves(state["loaded"], task, experiments or [])

        def on_diff(task, model, filter_text, x, y, a, b, only):
            view = view_of(task, model, filter_text, x, y)
            return diff_view(view.runs, a, b, only_differences=only)

        def on_export(task, model, filter_text, x, y):
            path = export_csv(view_of(task, model, filter_text, x, y).runs)
            return gr.update(value=path, visible=path is not None)

        def on_reload():
            state["loaded"] = reload() if reload else state["loaded"]
            views.clear()
            new_tasks = tasks_in(state["loaded"].table)
            return _loaded_text(state["loaded"]), gr.update(
                choices=new_tasks, value=new_tasks[0] if new_tasks else None
            )

        view_inputs = [task_dd, model_dd, filter_tb, x_dd, y_dd]
        view_outputs = [table_df, status_md, plot, summary_tb, curves_dd, curves_plot, run_a, run_b]
        task_dd.change(on_task, [task_dd], [model_dd, x_dd, y_dd, note_md]).then(
            refresh, view_inputs, view_outputs
        )
        for trigger in (model_dd.change, x_dd.change, y_dd.change, apply_btn.click, filter_tb.submit):
            trigger(refresh, view_inputs, view_outputs)
        reset_btn.click(lambda: "", None, filter_tb).then(refresh, view_inputs, view_outputs)
        curves_dd.change(on_curves, [task_dd, curves_dd], curves_plot)
        for trigger in (run_a.change, run_b.change, only_diff.change):
            trigger(on_diff, [*view_inputs, run_a, run_b, only_diff], diff_df)
        export_btn.click(on_export, view_inputs, export_file)
        reload_btn.click(on_reload, None, [loaded_md, task_dd]).then(refresh, view_inputs, view_outputs)
        demo.load(refresh, view_inputs, view_outputs)
    return demo


def _curves(loaded: Loaded, task: str | None, experiments: list[str]):
    curves = loaded.curves
    if curves.empty or task is None:
        return message_figure("no training curves")
    return curves_figure(curves[curves["task"] == task], experiments)


def _loaded_text(loaded: Loaded) -> str:
    lines = [f"Loaded: {loaded.summary}."]
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
