"""A self-contained HTML report (tables and plotly figures, plotly's JS inlined): opens offline.

The page is templates/report.html (Jinja2, autoescaped); what it shows comes from
peftbench.analysis.views (`panel`: the table with `tied_with_best` and the frontier; `curve_points`)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from peftbench.analysis.aggregate import Loaded, available_metrics, select, task_metrics, tasks_in
from peftbench.analysis.flips import flips_summary, item_flips
from peftbench.analysis.overhead import task_dirs_of
from peftbench.analysis.ranking import ranking_views
from peftbench.analysis.views import (
    TIED_COLUMN,
    axes_note,
    base_model_label,
    column_formatters,
    curve_columns,
    curve_points,
    default_axes,
    panel,
)
from peftbench.dashboard.overhead_view import inference_section
from peftbench.dashboard.plots import curves_figure, pareto_figure
from peftbench.errors import BadInput, did_you_mean
from peftbench.files import DEFAULT_PARAMS, atomic_write_text
from peftbench.results import load_completions
from peftbench.tuning import searched_runs

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("peftbench.dashboard", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _breakable(name: str) -> str:
    return name.replace("_", "_\u200b")


def _table_html(view: pd.DataFrame) -> str:
    # a zero-width space after each "_" lets long headers (num_trainable_params) wrap there
    formatters = {_breakable(c): f for c, f in column_formatters(view).items()}
    view = view.set_axis([_breakable(c) for c in view.columns], axis=1)
    return view.to_html(
        index=False, classes="results", border=0, na_rep="", formatters=formatters, escape=True
    )


def _figure_html(fig, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id)


def task_section(loaded: Loaded, task: str) -> dict[str, Any]:
    """What the template shows of one task: summary line, Pareto plot, results table, training curves of
    the frontier."""
    runs = select(loaded.table, task=task)
    metrics, note = task_metrics(task)
    usable = available_metrics(runs, metrics)
    axes = default_axes(usable, runs)
    view = panel(runs, usable, axes=axes)
    curves = loaded.curves[loaded.curves["task"] == task] if not loaded.curves.empty else loaded.curves
    # ranked on the plot's y; without a plot (no second metric), on the first higher-is-better metric
    ranked_on = axes[1] if axes else next((m for m in usable if m.higher_is_better), None)
    section = {
        "task": task,
        "n_runs": len(runs),
        "n_experiments": runs["experiment_name"].nunique(),
        "models": ", ".join(base_model_label(runs, m) for m in sorted(runs["model_id"].dropna().unique())),
        "notes": [n for n in (note, axes_note(runs, axes)) if n],
        "axes": axes,
        "frontier": view.frontier,
        "table_html": _table_html(view.table),
        "pareto_html": "",
        "curves_html": "",
        "ranking": ranking_section(runs, ranked_on),
        "searched_ranking": searched_ranking_section(runs, ranked_on),
        "inference_html": inference_section(loaded, task),
    }
    if axes is not None:
        fig = pareto_figure(view.experiments, x=axes[0], y=axes[1], frontier=view.frontier)
        section["pareto_html"] = _figure_html(fig, f"pareto-{task}")
    if view.frontier and not curves.empty:
        fig = curves_figure(curve_points(curves, view.frontier), curve_columns(curves))
        section["curves_html"] = _figure_html(fig, f"curves-{task}")
    return section


def ranking_section(runs: pd.DataFrame, metric: Any) -> list[dict[str, Any]]:
    """The ranking on `metric` (ranks with intervals, the Holm group, seed stability), as
    `peftbench rank` prints it: one entry per variant (peftbench.analysis.ranking)."""
    return [
        {
            "title": title,
            "table_html": "" if table.empty else table.to_html(index=False, classes="results", border=0),
            "notes": notes,
        }
        for title, table, notes in ranking_views(runs, metric)
    ]


def searched_selection(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]] | None:
    """The runs of the catalogue at its searched settings (tuning.searched_runs) in the task folders the
    runs came from, and the lines that say what it leaves out; None when no task folder (one with
    experiments/ and its default_training_params.json) holds them."""
    task_dirs = [
        d for d in task_dirs_of(runs) if (d / "experiments").is_dir() and (d / DEFAULT_PARAMS).is_file()
    ]
    return searched_runs(runs, task_dirs) if task_dirs else None


def searched_ranking_section(runs: pd.DataFrame, metric: Any) -> dict[str, Any] | None:
    """The ranking of the catalogue at its searched settings (as `peftbench rank --searched`), or None
    where no searched experiment of the task has runs."""
    found = searched_selection(runs)
    if found is None or found[0].empty:
        return None
    chosen, lines = found
    return {"notes": lines, "ranking": ranking_section(chosen, metric)}


def find_run(table: pd.DataFrame, spec: str) -> pd.Series:
    """The run named `EXP` (seed 0) or `EXP@SEED`; BadInput naming the closest experiment otherwise."""
    name, _, seed_text = spec.rpartition("@") if "@" in spec else (spec, "", "0")
    if not seed_text.isdigit():
        raise BadInput(f'--flips "{spec}": the seed after @ must be a whole number')
    names = sorted(table["experiment_name"].unique()) if not table.empty else []
    found = table[(table["experiment_name"] == name) & (table["seed"] == int(seed_text))]
    if found.empty:
        seeds = sorted(table.loc[table["experiment_name"] == name, "seed"]) if name in names else []
        known = f"; it has seeds {', '.join(map(str, seeds))}" if seeds else did_you_mean(name, names)
        raise BadInput(f'--flips: no run "{name}" with seed {seed_text}{known}')
    return found.iloc[0]


def flips_section(loaded: Loaded, spec_a: str, spec_b: str) -> dict[str, Any]:
    """The items that flipped between two runs (`EXP` or `EXP@SEED` each), both completions side by side."""
    row_a, row_b = find_run(loaded.table, spec_a), find_run(loaded.table, spec_b)
    completions = [load_completions(Path(row["file"])) for row in (row_a, row_b)]
    flips = item_flips(row_a, row_b, *completions)
    return {
        "a": spec_a,
        "b": spec_b,
        "summary": flips_summary(flips, n_items=len(row_a["test_correct"])),
        # rendered by the template (autoescaped): pandas' to_html would show line breaks as "\\n"
        "columns": list(flips.columns),
        "rows": flips.astype(str).values.tolist(),
    }


def build_report(
    loaded: Loaded, *, title: str = "peftbench report", flips: tuple[str, str] | None = None
) -> str:
    """The whole HTML page. Plotly's JS is inlined once, in the head, so the page works offline.
    `flips`: two runs whose flipped test items get a section (`flips_section`)."""
    return _TEMPLATES.get_template("report.html").render(
        flips=flips_section(loaded, *flips) if flips else None,
        title=title,
        summary=loaded.summary,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        warnings=loaded.warnings,
        sections=[task_section(loaded, task) for task in tasks_in(loaded.table)],
        tied_column=TIED_COLUMN,
        plotly_js=get_plotlyjs(),
    )


def write_report(
    loaded: Loaded, path: Path, *, title: str = "peftbench report", flips: tuple[str, str] | None = None
) -> Path:
    """Write the report atomically; returns the absolute path."""
    atomic_write_text(path, build_report(loaded, title=title, flips=flips))
    return path.resolve()
