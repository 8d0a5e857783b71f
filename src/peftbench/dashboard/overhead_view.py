"""Inference overhead and capabilities (peftbench inference) in the app and the report.

One function per surface: `inference_panel` (a part of the app's page) and `inference_section` (HTML
of one task for the report). The tables come from peftbench.analysis.overhead.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.io as pio

from peftbench.analysis.aggregate import Loaded, tasks_in
from peftbench.analysis.overhead import (
    OVERHEAD_COLUMNS,
    OVERHEAD_METRICS,
    filter_matrix,
    find_overhead_metric,
    task_inference,
)
from peftbench.analysis.views import frontier_names
from peftbench.dashboard.plots import message_figure, pareto_figure

INTRO = (
    "Inference overhead: a variant's median time divided by the base model's, measured side by side "
    "(1.0: none; `peftbench inference`, docs/inference.md). Capabilities: each established by running "
    "it; hover a cell's reason in the record, or see the table in the task's README."
)
TABLE_COLUMNS = ["experiment_name", "family", "test_accuracy", *OVERHEAD_COLUMNS, "adapter_source", "error"]


def _figure(joined: pd.DataFrame, x: str, y: str):
    if joined.empty or "test_accuracy" not in joined or "family" not in joined:
        return message_figure("no inference records joined to results of this task")
    x_metric, y_metric = find_overhead_metric(x), find_overhead_metric(y)
    front = frontier_names(joined, x=x_metric, y=y_metric)
    title = f"{y_metric.label} vs {x_metric.label}"
    return pareto_figure(joined, x=x_metric, y=y_metric, frontier=front, title=title)


def inference_panel(loaded: Loaded) -> None:
    """Inside the app's gr.Blocks: the capability matrix (filterable) and accuracy vs overhead."""
    import gradio as gr

    tasks = tasks_in(loaded.table)
    choices = ["test_accuracy", *(m.name for m in OVERHEAD_METRICS)]
    gr.Markdown(f"## Inference overhead and capabilities\n{INTRO}")
    with gr.Row():
        task_dd = gr.Dropdown(tasks, value=tasks[0] if tasks else None, label="Task", elem_id="inf-task")
        name_tb = gr.Textbox(label="Experiment contains", elem_id="inf-name")
        need_dd = gr.Dropdown(
            _capabilities(loaded, tasks[0] if tasks else None),
            multiselect=True,
            label="Capabilities that must be yes",
            elem_id="inf-required",
        )
    matrix_df = gr.Dataframe(label="Capabilities", interactive=False, wrap=False, elem_id="capability-matrix")
    with gr.Row():
        x_dd = gr.Dropdown(choices, value=OVERHEAD_METRICS[1].name, label="x metric", elem_id="inf-x")
        y_dd = gr.Dropdown(choices, value="test_accuracy", label="y metric", elem_id="inf-y")
    plot = gr.Plot(label="Accuracy and overhead", elem_id="overhead-plot")
    table_df = gr.Dataframe(label="Overhead", interactive=False, wrap=False, elem_id="overhead-table")

    def refresh(task, name, required, x, y):
        if task is None:
            return pd.DataFrame(), message_figure("no results"), pd.DataFrame()
        joined, matrix, _ = task_inference(loaded.table, task)
        shown = (
            filter_matrix(matrix, name=name or "", required=required or []) if not matrix.empty else matrix
        )
        columns = [c for c in TABLE_COLUMNS if c in joined.columns]
        return shown.drop(columns=["task"], errors="ignore"), _figure(joined, x, y), joined[columns].round(4)

    task_dd.change(lambda t: gr.update(choices=_capabilities(loaded, t), value=[]), task_dd, need_dd)
    # triggers=None: on page load and on a change of any input
    gr.on(None, refresh, [task_dd, name_tb, need_dd, x_dd, y_dd], [matrix_df, plot, table_df])


def _capabilities(loaded: Loaded, task: str | None) -> list[str]:
    if task is None:
        return []
    matrix = task_inference(loaded.table, task)[1]
    return [c for c in matrix.columns if c not in ("task", "experiment_name")]


def inference_section(loaded: Loaded, task: str) -> str:
    """HTML for the report: the accuracy-vs-overhead Pareto plot, the overhead table and the matrix
    (empty when the task has no inference records)."""
    joined, matrix, _ = task_inference(loaded.table, task)
    if matrix.empty:
        return ""
    parts = [f'<h3>Inference overhead and capabilities</h3><p class="note">{html.escape(INTRO)}</p>']
    fig = _figure(joined, OVERHEAD_METRICS[1].name, "test_accuracy")
    parts.append(pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"overhead-{task}"))
    columns = [c for c in TABLE_COLUMNS if c in joined.columns and joined[c].notna().any()]
    table = joined[columns].to_html(
        index=False, border=0, classes="results", na_rep="", float_format="{:.3f}".format
    )
    parts.append(f'<div class="scroll">{table}</div>')
    cells = matrix.drop(columns=["task"]).to_html(index=False, border=0, classes="results capabilities")
    parts.append(f'<div class="scroll">{cells}</div>')
    return "\n".join(parts)
