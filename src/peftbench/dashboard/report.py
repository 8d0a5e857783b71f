"""A self-contained HTML report (tables and plotly figures, plotly's JS inlined): opens offline."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from peftbench.analysis.aggregate import (
    Loaded,
    available_metrics,
    seed_summary,
    select,
    task_metrics,
    tasks_in,
)
from peftbench.analysis.pareto import pareto_mask
from peftbench.analysis.views import (
    TIED_COLUMN,
    axes_note,
    base_model_label,
    column_formatters,
    default_axes,
    results_table,
)
from peftbench.dashboard.inference import inference_section
from peftbench.dashboard.plots import curves_figure, pareto_figure
from peftbench.results import atomic_write_text
from peftbench.tasks.base import Metric

# Wide tables scroll inside their box, never the page; cells do not wrap, so a row stays one line.
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1.5em; max-width: 1400px;
       color: #222; }
h1, h2, h3 { font-weight: 600; }
table.results { border-collapse: collapse; font-size: 13px; }
table.results th, table.results td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right;
                                     white-space: nowrap; }
table.results th { background: #f4f4f4; position: sticky; top: 0; white-space: normal; }
table.results td:first-child, table.results th:first-child { text-align: left; }
.note { color: #666; font-size: 13px; }
.scroll { max-height: 600px; max-width: 100%; overflow: auto; }
"""


def _breakable(name: str) -> str:
    return name.replace("_", "_\u200b")


def _table_html(runs: pd.DataFrame, metrics: list[Metric], primary: Metric | None) -> str:
    view = results_table(runs, metrics, primary=primary)
    # a zero-width space after each "_" lets long headers (num_trainable_params) wrap there
    formatters = {_breakable(c): f for c, f in column_formatters(view).items()}
    view.columns = [_breakable(c) for c in view.columns]
    return view.to_html(
        index=False,
        classes="results",
        border=0,
        na_rep="",
        formatters=formatters,
        escape=True,
    )


def task_section(loaded: Loaded, task: str) -> str:
    """HTML of one task: summary line, Pareto plot, results table, training curves of the frontier."""
    runs = select(loaded.table, task=task)
    metrics, note = task_metrics(task)
    usable = available_metrics(runs, metrics)
    parts = [f"<h2>{html.escape(task)}</h2>"]
    models = ", ".join(base_model_label(runs, m) for m in sorted(runs["model_id"].dropna().unique()))
    parts.append(f"<p>{len(runs)} runs of {runs['experiment_name'].nunique()} experiments; base model: ")
    parts[-1] += f"{html.escape(models or 'unknown')}</p>"
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    axes = default_axes(usable, runs)
    if axes_note(runs, axes):
        parts.append(f'<p class="note">{html.escape(axes_note(runs, axes))}</p>')
    experiments = seed_summary(runs, usable)
    frontier: list[str] = []
    if axes is not None:
        x, y = axes
        fig = pareto_figure(experiments, x=x, y=y)
        parts.append(pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"pareto-{task}"))
        mask = pareto_mask(experiments, x=x, y=y)
        frontier = experiments[mask].sort_values(x.name)["experiment_name"].tolist()
        parts.append(
            f'<p class="note">On the frontier of {html.escape(x.name)} and {html.escape(y.name)}: '
            f"{html.escape(', '.join(frontier))}.</p>"
        )
    else:
        parts.append(
            '<p class="note">No Pareto plot: no metric of this task has a known direction and values.</p>'
        )
    primary = axes[1] if axes else None
    parts.append("<h3>Results</h3>")
    if primary is not None:
        parts.append(
            f'<p class="note">{TIED_COLUMN}: not significantly different from the best on '
            f"{html.escape(primary.name)} (5% level, Holm-corrected); ? = cannot tell (one seed and no "
            "per-item results). yes means not shown worse: an experiment with one seed, tested against a "
            "best with few seeds, is rarely shown worse (docs/statistics.md).</p>"
        )
    parts.append(f'<div class="scroll">{_table_html(runs, usable, primary)}</div>')
    curves = loaded.curves[loaded.curves["task"] == task] if not loaded.curves.empty else loaded.curves
    if frontier and not curves.empty:
        parts.append("<h3>Training curves (experiments on the frontier)</h3>")
        fig = curves_figure(curves, frontier)
        parts.append(pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"curves-{task}"))
    parts.append(inference_section(loaded, task))
    return "\n".join(parts)


def build_report(loaded: Loaded, *, title: str = "peftbench report") -> str:
    """The whole HTML page. Plotly's JS is inlined once, in the head, so the page works offline."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{html.escape(loaded.summary)}; written {created}</p>',
    ]
    for warning in loaded.warnings:
        body.append(f'<p class="note">warning: {html.escape(warning)}</p>')
    tasks = tasks_in(loaded.table)
    if not tasks:
        body.append("<p>No results yet.</p>")
    body.extend(task_section(loaded, task) for task in tasks)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(loaded: Loaded, path: Path, *, title: str = "peftbench report") -> Path:
    """Write the report atomically; returns the absolute path."""
    text = build_report(loaded, title=title)
    atomic_write_text(path, text)
    return path.resolve()
