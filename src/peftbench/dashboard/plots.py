"""Plotly figures shared by the Gradio app and the static report: Pareto plot and training curves."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from peftbench.analysis.aggregate import FAMILIES, FULL_FINETUNING
from peftbench.analysis.views import axis_format, human_of
from peftbench.tasks.base import Metric

# One fixed colour per method family, so that a family keeps its colour across plots and pages.
FAMILY_COLOURS = dict(zip([*FAMILIES, FULL_FINETUNING, "other"], qualitative.Safe, strict=False))
TEMPLATE = "plotly_white"


def family_colour(family: str) -> str:
    return FAMILY_COLOURS.get(family, FAMILY_COLOURS["other"])


def message_figure(text: str) -> go.Figure:
    """An empty figure carrying a message (no data, bad filter), so the layout does not jump."""
    fig = go.Figure()
    fig.add_annotation(
        text=text, showarrow=False, font={"size": 16}, xref="paper", yref="paper", x=0.5, y=0.5
    )
    fig.update_layout(template=TEMPLATE, xaxis={"visible": False}, yaxis={"visible": False}, height=300)
    return fig


def _errors(df: pd.DataFrame, metric: Metric) -> dict | None:
    """Asymmetric error bars from the `<metric>_low/_high` columns of a seed summary, if any."""
    low, high = f"{metric.name}_low", f"{metric.name}_high"
    if low not in df.columns or high not in df.columns or df[low].isna().all():
        return None
    mean = df[metric.name]
    return {
        "type": "data",
        "symmetric": False,
        "array": (df[high] - mean).fillna(0).tolist(),
        "arrayminus": (mean - df[low]).fillna(0).tolist(),
        "thickness": 1,
    }


def _hover(df: pd.DataFrame, x: Metric, y: Metric) -> list[str]:
    def value(row: pd.Series, metric: Metric) -> str:
        show = human_of(metric.name)
        text = f"{metric.label or metric.name}: {show(row[metric.name])}"
        low, high = row.get(f"{metric.name}_low"), row.get(f"{metric.name}_high")
        if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
            text += f" [{show(low)}, {show(high)}]"
        return text

    return [
        "<br>".join(
            [
                f"<b>{row['experiment_name']}</b>",
                f"family: {row.get('family', '')}, peft_type: {row.get('peft_type', '')}",
                f"seeds: {row.get('n_seeds', 1)}",
                value(row, x),
                value(row, y),
            ]
        )
        for _, row in df.iterrows()
    ]


def pareto_figure(
    experiments: pd.DataFrame, *, x: Metric, y: Metric, frontier: Sequence[str], title: str = ""
) -> go.Figure:
    """Scatter of experiments (one point each: seed means), coloured by family, error bars where
    there are intervals, and the Pareto frontier (the experiments named in `frontier`,
    peftbench.analysis.views.frontier_names) drawn as a line through its points."""
    data = experiments.dropna(subset=[x.name, y.name])
    if data.empty:
        return message_figure(f"no runs with both {x.name} and {y.name}")
    on_front = data["experiment_name"].isin(list(frontier))
    fig = go.Figure()
    variants = data["variant"].fillna("") if "variant" in data.columns else pd.Series("", index=data.index)
    # one frontier per variant (pareto_mask): a line through the points of two variants would be no frontier
    for variant in sorted(variants.unique()):
        front = data[on_front & (variants == variant)].sort_values(x.name)
        fig.add_trace(
            go.Scatter(
                x=front[x.name],
                y=front[y.name],
                mode="lines",
                line={
                    "color": "rgba(40,40,40,0.35)",
                    "width": 3,
                    "shape": "hv" if len(front) > 1 else "linear",
                    "dash": "dot" if variant else "solid",
                },
                name=f"Pareto frontier [{variant}]" if variant else "Pareto frontier",
                hoverinfo="skip",
            )
        )
    for family, group in data.groupby("family", sort=True):
        marker_line = [2 if f else 0 for f in on_front[group.index]]
        fig.add_trace(
            go.Scatter(
                x=group[x.name],
                y=group[y.name],
                mode="markers",
                name=str(family),
                marker={
                    "color": family_colour(str(family)),
                    "size": [14 if f else 9 for f in on_front[group.index]],
                    "line": {"width": marker_line, "color": "black"},
                    "opacity": 0.9,
                    # quick and shortened runs (a variant) are open diamonds beside the full runs' dots
                    "symbol": ["diamond-open" if v else "circle" for v in variants[group.index]],
                },
                error_x=_errors(group, x),
                error_y=_errors(group, y),
                text=_hover(group, x, y),
                hoverinfo="text",
                customdata=group["experiment_name"],
            )
        )
    better = {True: "higher is better", False: "lower is better"}
    fig.update_layout(
        template=TEMPLATE,
        title=title or f"Pareto frontier: {x.label or x.name} vs {y.label or y.name}",
        xaxis_title=f"{x.label or x.name} ({better[x.higher_is_better]})",
        yaxis_title=f"{y.label or y.name} ({better[y.higher_is_better]})",
        legend_title="method family (outlined: on the frontier; open diamonds: quick or shortened runs)",
        xaxis=axis_format(x, data[x.name]),
        yaxis=axis_format(y, data[y.name]),
        height=560,
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
    )
    return fig


def curves_figure(points: pd.DataFrame, columns: Sequence[tuple[str, str]]) -> go.Figure:
    """Curves against step, one panel per (column, label) of `columns`, from `points`
    (peftbench.analysis.views.curve_points: mean over seeds, error bars of the 95% t-interval)."""
    if points.empty:
        return message_figure("choose experiments to see their training curves")
    fig = make_subplots(rows=1, cols=len(columns), subplot_titles=[label for _, label in columns])
    palette = qualitative.Plotly
    experiments = list(dict.fromkeys(points["experiment_name"]))
    for i, experiment in enumerate(experiments):
        for col, (column, _) in enumerate(columns, start=1):
            mine = points[(points["experiment_name"] == experiment) & (points["column"] == column)]
            if mine.empty:
                continue
            errors = mine["half_width"]
            error_y = {"type": "data", "array": errors.fillna(0).tolist()} if errors.notna().any() else None
            fig.add_trace(
                go.Scatter(
                    x=mine["step"].tolist(),
                    y=mine["mean"].tolist(),
                    mode="lines+markers",
                    name=experiment,
                    legendgroup=experiment,
                    showlegend=col == 1,
                    line={"color": palette[i % len(palette)]},
                    error_y=error_y,
                    hovertemplate=f"{experiment}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="step")
    fig.update_layout(template=TEMPLATE, height=420, title="Training curves", margin={"t": 80})
    return fig
