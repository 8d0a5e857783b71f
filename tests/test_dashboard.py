"""Dashboard views, report, and the table/pareto/report commands; the browser tests drive Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from result_records import make_record, write_record

from peftbench.analysis.aggregate import available_metrics, load_results, task_metrics
from peftbench.analysis.views import (
    TIED_COLUMN,
    axes_note,
    axis_format,
    base_model_label,
    default_axes,
    human,
)
from peftbench.cli import main as cli
from peftbench.dashboard import app as dash
from peftbench.dashboard.report import build_report, write_report
from peftbench.errors import BadInput
from peftbench.tasks.base import COMMON_METRICS

REPO = Path(__file__).resolve().parent.parent
# Expected frontier of memory_max (lower better) vs test_accuracy (higher better) in `task_dir`.
FRONTIER = ["ia3/small", "lora/r8", "full-finetuning/all"]


def make_task(root: Path, name: str = "tinymath") -> Path:
    """A task folder with seven experiments: three on the frontier, one with three seeds, one failed run."""
    results = root / name / "results"
    (root / name / "experiments").mkdir(parents=True, exist_ok=True)
    specs = [
        # experiment, accuracy, memory, peft_type
        ("ia3/small", 0.30, 1_000, "IA3"),
        ("lora/r8", 0.55, 3_000, "LORA"),
        ("lora/r16", 0.50, 4_000, "LORA"),  # dominated by lora/r8
        ("prompt_tuning/p20", 0.20, 2_000, "PROMPT_TUNING"),  # dominated by ia3/small
        ("oft/b32", 0.40, 5_000, "OFT"),  # dominated
        ("full-finetuning/all", 0.70, 9_000, None),
    ]
    for experiment, accuracy, memory, peft_type in specs:
        record = make_record(experiment, task=name, accuracy=accuracy, memory=memory, peft_type=peft_type)
        write_record(results, record)
    for seed, accuracy in [(1, 0.57), (2, 0.53)]:
        write_record(results, make_record("lora/r8", task=name, seed=seed, accuracy=accuracy, memory=3_000))
    write_record(results, make_record("lora/broken", task=name, status="failed"))
    return root / name


@pytest.fixture
def task_dir(tmp_path) -> Path:
    return make_task(tmp_path)


# ---------------------------------------------------------------- views (no browser)


def test_view_filters_and_reports_counts(task_dir):
    loaded = load_results([task_dir])
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="", x="memory_max", y="test_accuracy"
    )
    assert len(view.runs) == 8 and view.status == "8 runs"
    assert view.frontier == FRONTIER
    assert "on the Pareto frontier: 3" in view.summary
    lora = dash.build_view(
        loaded,
        task="tinymath",
        model=None,
        filter_text="peft_type == 'LORA'",
        x="memory_max",
        y="test_accuracy",
    )
    assert set(lora.runs["experiment_name"]) == {"lora/r8", "lora/r16"}
    assert lora.status == "4 of 8 runs match the filter"


def test_bad_filter_shows_an_error_and_keeps_the_table(task_dir):
    loaded = load_results([task_dir])
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="__import__('os')", x="memory_max", y="test_accuracy"
    )
    assert view.status.startswith("Filter error:")
    assert len(view.runs) == 8


def test_error_bars_and_seed_means_in_the_pareto_figure(task_dir):
    loaded = load_results([task_dir])
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="", x="memory_max", y="test_accuracy"
    )
    lora = view.experiments.set_index("experiment_name").loc["lora/r8"]
    assert lora["n_seeds"] == 3
    assert lora["test_accuracy"] == pytest.approx(0.55)
    assert lora["test_accuracy_low"] < 0.55 < lora["test_accuracy_high"]
    low_rank = next(t for t in view.figure.data if t.name == "low-rank (LoRA-like)")
    assert low_rank.error_y.array is not None and max(low_rank.error_y.array) > 0
    # one trace per family, plus the frontier line
    names = {t.name for t in view.figure.data}
    assert {"Pareto frontier", "full fine-tuning", "orthogonal", "prompt-based"} <= names


def test_quick_runs_are_open_diamonds_with_a_frontier_of_their_own(task_dir):
    # a quick run of lora/r8, cheaper and better than every full run: it must not join their frontier
    quick = make_record(
        "lora/r8", task="tinymath", accuracy=0.9, memory=500, created_at="2026-02-01T00:00:00+00:00"
    )
    quick["run_info"].update(quick=True, cli_overrides={})
    write_record(task_dir / "temporary_results", quick)
    loaded = load_results([task_dir], include_temporary=True)
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="", x="memory_max", y="test_accuracy"
    )
    lines = {t.name: t for t in view.figure.data if t.mode == "lines"}
    assert set(lines) == {"Pareto frontier", "Pareto frontier [quick]"}
    assert list(lines["Pareto frontier"].y) == pytest.approx([0.30, 0.55, 0.70])  # FRONTIER, unchanged
    assert list(lines["Pareto frontier [quick]"].y) == pytest.approx([0.9])
    low_rank = next(t for t in view.figure.data if t.name == "low-rank (LoRA-like)")
    symbols = dict(zip(low_rank.customdata, low_rank.marker.symbol, strict=True))
    assert symbols["lora/r8 [quick]"] == "diamond-open"
    assert symbols["lora/r8"] == "circle"


def test_tied_with_best_column(tmp_path):
    results = tmp_path / "t" / "results"
    for seed, (good, close, bad) in enumerate([(0.80, 0.79, 0.20), (0.82, 0.83, 0.22), (0.81, 0.80, 0.21)]):
        write_record(results, make_record("lora/good", seed=seed, accuracy=good))
        write_record(results, make_record("lora/close", seed=seed, accuracy=close))
        write_record(results, make_record("lora/bad", seed=seed, accuracy=bad))
    write_record(results, make_record("ia3/single", accuracy=0.5))
    loaded = load_results([results])
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="", x="memory_max", y="test_accuracy"
    )
    tied = view.table.groupby("experiment_name")["tied_with_best"].first().to_dict()
    assert tied == {"lora/good": "yes", "lora/close": "yes", "lora/bad": "no", "ia3/single": "?"}


def test_plot_messages_say_what_is_missing(task_dir):
    loaded = load_results([task_dir])
    view = dash.build_view(loaded, task="tinymath", model=None, filter_text="", x="memory_max", y=None)
    assert view.figure.layout.annotations[0].text == "choose the two metrics of the plot"
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="seed > 5", x="memory_max", y="test_accuracy"
    )
    assert view.figure.layout.annotations[0].text == "no runs match the filter"
    assert view.status == "0 of 8 runs match the filter"


def test_empty_results(tmp_path):
    (tmp_path / "empty" / "results").mkdir(parents=True)
    loaded = load_results([tmp_path / "empty"])
    view = dash.build_view(loaded, task=None, model=None, filter_text="", x=None, y=None)
    assert view.status == "No results yet."
    assert view.table.empty
    assert dash.export_csv(view.runs) is None
    dash.build_app(loaded)  # builds without a task


def test_export_csv_holds_the_filtered_runs(task_dir):
    loaded = load_results([task_dir])
    view = dash.build_view(loaded, task="tinymath", model=None, filter_text="seed > 0", x=None, y=None)
    path = Path(dash.export_csv(view.runs))
    try:
        exported = pd.read_csv(path)
    finally:
        path.unlink()
    assert sorted(exported["seed"]) == [1, 2]
    assert "train_config" not in exported.columns


def test_diff_of_two_runs(task_dir):
    loaded = load_results([task_dir])
    runs = loaded.table
    labels = dash.run_labels(runs)
    a, b = "lora/r8 (seed 0)", "oft/b32 (seed 0)"
    assert a in labels and b in labels
    diff = dash.diff_view(runs, a, b, only_differences=True).set_index("key")
    assert diff.loc["peft_type"].tolist() == ["LORA", "OFT"]
    assert diff.loc["peft_config.peft_type"].tolist() == ["LORA", "OFT"]
    assert "seed" not in diff.index
    assert dash.diff_view(runs, a, None, only_differences=True).empty


def test_model_and_metric_choices(task_dir, tmp_path):
    write_record(task_dir / "results", make_record("lora/other-model", model_id="other/model"))
    loaded = load_results([task_dir])
    assert dash.model_choices(loaded, "tinymath") == [dash.ANY_MODEL, "other/model", "tiny/llama"]
    view = dash.build_view(loaded, task="tinymath", model="other/model", filter_text="", x=None, y=None)
    assert view.runs["experiment_name"].tolist() == ["lora/other-model"]
    names, x, y, note = dash.metric_choices(loaded, "tinymath")
    assert (x, y) == ("num_trainable_params", "test_accuracy")  # CPU runs: see test_default_axes_*
    assert "forgetting" in names and "memory_max" in names
    assert "Runs on a CPU record as peak memory" in note


class _TableReader(HTMLParser):
    """The rows of the first <table> of an HTML page, as lists of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.tables = 0
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        elif self.tables == 1 and tag == "tr":
            self.rows.append([])
        elif self.tables == 1 and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            # headers carry zero-width spaces where they may wrap
            self.rows[-1].append("".join(self.cell).replace("\u200b", "").strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def report_table(text: str) -> pd.DataFrame:
    reader = _TableReader()
    reader.feed(text)
    header, *rows = reader.rows
    return pd.DataFrame(rows, columns=header)


def _as_accelerator_runs(folder: Path) -> None:
    """Rewrite the records in `folder` as if measured on a GPU."""
    for file in folder.glob("*.json"):
        data = json.loads(file.read_text())
        data["train_info"].update(device="cuda", memory_kind="accelerator")
        file.write_text(json.dumps(data))


def test_app_and_report_show_the_same_tied_column(tmp_path):
    results = tmp_path / "tinymath" / "results"
    for seed, (good, close, bad) in enumerate([(0.80, 0.79, 0.20), (0.82, 0.83, 0.22), (0.81, 0.80, 0.21)]):
        write_record(results, make_record("lora/good", seed=seed, accuracy=good))
        write_record(results, make_record("lora/close", seed=seed, accuracy=close))
        write_record(results, make_record("lora/bad", seed=seed, accuracy=bad))
    write_record(results, make_record("ia3/zero", accuracy=0.0, test_correct="0" * 200))
    write_record(results, make_record("ia3/single", accuracy=0.5))
    loaded = load_results([results.parent])
    _, x, y, _ = dash.metric_choices(loaded, "tinymath")  # the app's opening choice
    view = dash.build_view(loaded, task="tinymath", model=None, filter_text="", x=x, y=y)
    in_app = view.table.set_index(["experiment_name", "seed"])[TIED_COLUMN]
    in_report = report_table(build_report(loaded))
    in_report = in_report.assign(seed=in_report["seed"].astype(int)).set_index(["experiment_name", "seed"])
    assert in_report[TIED_COLUMN].sort_index().to_dict() == in_app.sort_index().to_dict()
    per_experiment = in_app.groupby(level=0).first().to_dict()
    assert per_experiment == {
        "lora/good": "yes",
        "lora/close": "yes",
        "lora/bad": "no",
        "ia3/single": "?",
        "ia3/zero": "?",  # per-item data, but the best has none: cannot be paired
    }


def test_default_axes_on_cpu_are_not_process_memory(task_dir):
    loaded = load_results([task_dir])
    runs = loaded.table
    assert set(runs["memory_kind"]) == {"process_rss"}
    metrics = available_metrics(runs, task_metrics("tinymath")[0])
    x, y = default_axes(metrics, runs)
    assert (x.name, y.name) == ("num_trainable_params", "test_accuracy")
    assert "Runs on a CPU record as peak memory" in axes_note(runs, (x, y))
    # without parameter counts, the train time
    no_params = [m for m in metrics if m.name != "num_trainable_params"]
    assert default_axes(no_params, runs)[0].name == "train_time"
    text = build_report(loaded)
    assert "trainable parameters (lower is better)" in text
    assert "peak memory (bytes) (lower is better)" not in text


def test_default_axes_on_accelerators_keep_memory(task_dir):
    _as_accelerator_runs(task_dir / "results")
    loaded = load_results([task_dir])
    _, x, y, note = dash.metric_choices(loaded, "tinymath")
    assert (x, y) == ("memory_max", "test_accuracy")
    assert note == ""
    assert "peak memory (bytes) (lower is better)" in build_report(loaded)


def test_default_axes_of_reference_files_keep_memory(reference_dir):
    # the reference's files: GPU runs without memory_kind
    reference = load_results([reference_dir / "MetaMathQA"]).table
    x, _ = default_axes(available_metrics(reference, COMMON_METRICS), reference)
    assert x.name == "memory_max"


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (708_198_400, "bytes", "708 MB"),
        (1_200_000_000, "bytes", "1.2 GB"),
        (76_800, "bytes", "76.8 kB"),
        (512, "bytes", "512 B"),
        (36_864, "params", "36.9 k"),
        (1_904_064, "params", "1.9 M"),
        (3_212_750_000, "params", "3.21 B"),
        (768, "params", "768"),
        (143.4458, "s", "143 s"),
        (1234.4, "s", "1,234 s"),
        (2.5, "s", "2.5 s"),
        (0.4833915282832173, None, "0.4834"),
        (float("nan"), "bytes", ""),
        (None, "s", ""),
    ],
)
def test_human_units(value, unit, text):
    assert human(value, unit) == text


def test_axis_formats():
    params, memory = COMMON_METRICS[5], COMMON_METRICS[6]
    assert (params.name, memory.name) == ("num_trainable_params", "memory_max")
    # hundreds to millions of parameters: a log axis, ticks like "10k", "1M"
    assert axis_format(params, pd.Series([768, 36_864, 1_904_064])) == {"tickformat": ".3~s", "type": "log"}
    assert axis_format(params, pd.Series([1000, 2000])) == {"tickformat": ".3~s"}
    assert axis_format(memory, pd.Series([6e8, 7e8])) == {"tickformat": ".3~s", "ticksuffix": "B"}
    assert axis_format(COMMON_METRICS[0], pd.Series([0.1, 0.5])) == {}


def test_units_in_table_hover_axes_and_summary(task_dir):
    _as_accelerator_runs(task_dir / "results")
    loaded = load_results([task_dir])
    view = dash.build_view(
        loaded, task="tinymath", model=None, filter_text="", x="memory_max", y="test_accuracy"
    )
    assert view.figure.layout.xaxis.tickformat == ".3~s" and view.figure.layout.xaxis.ticksuffix == "B"
    assert view.figure.layout.yaxis.ticksuffix is None
    hover = " ".join(t for trace in view.figure.data if trace.text for t in trace.text)
    assert "peak memory (bytes): 3 kB" in hover and "test accuracy: 0.55 [" in hover
    assert "1 kB" in view.summary and "9 kB" in view.summary  # min and max of memory
    cells = dash.styled(view.table).to_html()
    assert "3 kB" in cells and "1 k" in cells and "10 s" in cells  # memory, params, train time
    table = report_table(build_report(loaded)).set_index(["experiment_name", "seed"])
    row = table.loc[("lora/r8", "0")]
    assert (row["memory_max"], row["num_trainable_params"], row["train_time"]) == ("3 kB", "1 k", "10 s")
    assert row["test_accuracy"] == "0.55"


def test_base_model_named_with_its_size(tmp_path, task_dir):
    loaded = load_results([task_dir])
    # the records: 100,000 parameters in all, 1,000 of them trainable
    assert base_model_label(loaded.table, "tiny/llama") == "tiny/llama (99 k params)"
    assert "base model: tiny/llama (99 k params)" in build_report(loaded)
    results = tmp_path / "own" / "tinymath" / "results"
    write_record(results, make_record("lora/a", model_id="base_model"))
    write_record(
        results, make_record("full-finetuning/b", model_id="base_model", params=100_000, peft_type=None)
    )
    local = load_results([results]).table
    assert base_model_label(local, "base_model") == "tinymath base model (99 k params)"
    labels = dash.model_options(load_results([task_dir, results]), "tinymath")
    assert labels[1:] == [
        ("tinymath base model (99 k params)", "base_model"),
        ("tiny/llama (99 k params)", "tiny/llama"),
    ]


def test_compare_two_runs_shows_formatted_numbers(tmp_path):
    results = tmp_path / "tinymath" / "results"
    write_record(results, make_record("lora/a", accuracy=0.4833915282832173, memory=704_004_096))
    write_record(
        results, make_record("lora/b", accuracy=0.5, memory=704_004_100, train_time=191.37779930100078)
    )
    runs = load_results([results]).table
    diff = dash.diff_view(runs, "lora/a (seed 0)", "lora/b (seed 0)", only_differences=True).set_index("key")
    assert diff.loc["test_accuracy"].tolist() == ["0.4834", "0.5"]
    # different bytes that round alike still count as a difference, and read as MB
    assert diff.loc["memory_max"].tolist() == ["704 MB", "704 MB"]
    assert diff.loc["train_time"].tolist() == ["10 s", "191 s"]
    assert "experiment_name" in diff.index and "seed" not in diff.index


def test_app_default_results_are_task_folders_only(tmp_path, monkeypatch):
    from peftbench.commands.app_cmd import default_results

    make_task(tmp_path / "benchmarks")
    perf = tmp_path / "benchmarks" / "perf"  # a folder of code and JSON that is no task (perf/ once was here)
    (perf / "results").mkdir(parents=True)
    (perf / "results" / "perf-20261129.json").write_text(json.dumps({"threads": 2, "steps_per_s": 3.0}))
    (perf / "run_perf.py").write_text("")
    mine = tmp_path / "benchmarks" / "mytask"
    (mine / "results").mkdir(parents=True)
    (mine / "default_training_params.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    found = default_results()
    assert found == [Path("benchmarks/mytask"), Path("benchmarks/tinymath")]
    assert load_results(found).warnings == []
    assert load_results([Path("benchmarks")]).warnings != []  # what the perf folder caused before
    for task in found:
        (tmp_path / task / "default_training_params.json").unlink(missing_ok=True)
    (tmp_path / "benchmarks" / "tinymath").rename(tmp_path / "benchmarks" / "untitled")
    with pytest.raises(BadInput, match="no task folder"):
        default_results()


# ---------------------------------------------------------------- report and commands


def test_report_is_self_contained(task_dir, tmp_path):
    loaded = load_results([task_dir])
    path = write_report(loaded, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "Plotly" in text and len(text) > 1_000_000  # the JS bundle is inside
    assert not re.search(r"<script[^>]+src=", text)  # nothing fetched from elsewhere
    for experiment in FRONTIER:
        assert experiment in text
    assert "tied_with_best" in text
    assert oct(path.stat().st_mode & 0o044) != "0o0"  # others can read it


def test_report_of_nothing(tmp_path):
    (tmp_path / "t" / "results").mkdir(parents=True)
    assert "No results yet" in build_report(load_results([tmp_path / "t"]))


def test_report_command_prints_its_path(task_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert cli(["report", str(task_dir), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    assert out.is_file()


def test_table_command_formats(task_dir, capsys):
    assert cli(["table", str(task_dir), "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert len(rows) == 8
    assert "1 skipped: status not success" in captured.err
    assert cli(["table", str(task_dir), "--format", "csv", "--filter", "family == 'orthogonal'"]) == 0
    csv_lines = capsys.readouterr().out.strip().splitlines()
    assert len(csv_lines) == 2 and "oft/b32" in csv_lines[1]
    assert cli(["table", str(task_dir)]) == 0
    markdown = capsys.readouterr().out
    assert markdown.splitlines()[0].startswith("| experiment_name")
    assert "3,000" in markdown  # whole numbers with separators


def test_table_command_sorts_and_picks_columns(task_dir, capsys):
    def csv_rows(*options: str) -> list[list[str]]:
        assert cli(["table", str(task_dir), "--format", "csv", *options]) == 0
        return [line.split(",") for line in capsys.readouterr().out.strip().splitlines()]

    rows = csv_rows("--columns", "experiment_name,test_accuracy", "--sort", "test_accuracy", "--descending")
    assert rows[0] == ["experiment_name", "test_accuracy"]
    accuracies = [float(row[1]) for row in rows[1:] if row[1]]
    assert accuracies == sorted(accuracies, reverse=True) and len(set(accuracies)) > 1
    rows = csv_rows("--columns", "test_accuracy", "--sort", "test_accuracy")
    ascending = [float(row[0]) for row in rows[1:] if row[0]]
    assert ascending == sorted(ascending)


@pytest.mark.parametrize(
    ("option", "value"), [("--columns", "experiment_name,test_acc"), ("--sort", "test_acc")]
)
def test_table_command_rejects_an_unknown_column(task_dir, capsys, option, value):
    assert cli(["table", str(task_dir), option, value]) == 2
    err = capsys.readouterr().err
    assert f'{option}: unknown column "test_acc" (did you mean "test_accuracy"?)' in err
    assert err.strip().count("\n") <= 1  # the summary line, then the error


def test_table_command_on_empty_and_bad_input(tmp_path, capsys):
    (tmp_path / "t" / "results").mkdir(parents=True)
    assert cli(["table", str(tmp_path / "t")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no results yet" in captured.err
    assert cli(["table", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "t" / "results" / "x.json").write_text("{")
    assert cli(["table", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert "x.json" in err  # the corrupt file is named
    make_task(tmp_path)
    assert cli(["table", str(tmp_path / "tinymath"), "--filter", "a.b == 1"]) == 2
    assert "attribute access" in capsys.readouterr().err


def test_pareto_command(task_dir, capsys):
    assert cli(["pareto", str(task_dir), "--x", "memory_max", "--y", "test_accuracy"]) == 0
    assert capsys.readouterr().out.split() == FRONTIER
    assert cli(["pareto", str(task_dir), "--x", "memory_max", "--y", "test_acuracy"]) == 2
    assert 'did you mean "test_accuracy"' in capsys.readouterr().err
    # with both metrics lower-is-better the frontier changes
    assert cli(["pareto", str(task_dir), "--x", "memory_max", "--y", "forgetting"]) == 0
    assert capsys.readouterr().out.split() == ["ia3/small"]


def test_pareto_command_needs_a_task_when_there_are_several(task_dir, tmp_path, capsys):
    other = make_task(tmp_path, "othertask")
    args = ["pareto", str(task_dir), str(other), "--x", "memory_max", "--y", "test_accuracy"]
    assert cli(args) == 2
    assert "--task" in capsys.readouterr().err
    assert cli([*args, "--task", "othertask"]) == 0
    assert capsys.readouterr().out.split() == FRONTIER


def test_pareto_on_reference_files(reference_dir, capsys):
    assert (
        cli(["pareto", str(reference_dir / "MetaMathQA"), "--x", "memory_max", "--y", "test_accuracy"]) == 0
    )
    names = capsys.readouterr().out.split()
    assert names and all("/" in n for n in names)


# ---------------------------------------------------------------- browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(*results: str) -> Iterator[str]:
    """`peftbench app --results ...` in a subprocess on a free port: yields its URL once it answers, and
    stops it afterwards (shared by every browser test of the app)."""
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    cmd = [sys.executable, "-m", "peftbench", "app", "--results", *results, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_http(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s")


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _screenshot(page, path: Path) -> Path:
    """Save a full-page screenshot under the test's tmp dir, and to $PEFTBENCH_SCREENSHOTS if set
    (to look at them: the tests can assert layout, not looks)."""
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("PEFTBENCH_SCREENSHOTS"):
        keep = Path(os.environ["PEFTBENCH_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / path.name)
    assert path.stat().st_size > 10_000
    return path


def _page_fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def _row_count(page) -> int:
    # the grid's aria-rowcount counts the header row too
    return int(page.locator("#results-table [role=grid]").get_attribute("aria-rowcount")) - 1


def _wait_rows(page, expected: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _row_count(page) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"table has {_row_count(page)} rows, expected {expected}")
        page.wait_for_timeout(200)


@pytest.mark.browser
def test_app_in_a_browser(browser, tmp_path, request):
    make_task(tmp_path, "alpha-task")
    write_record(tmp_path / "alpha-task" / "results", make_record("lora/extra", task="alpha-task"))
    task_dir = make_task(tmp_path)
    results = [str(tmp_path / "alpha-task"), str(task_dir)]
    reference = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"
    if reference.is_dir():
        results += [str(reference / "MetaMathQA"), str(reference / "image-gen")]
    # the page opens on the first task in sorted order
    table = load_results(results).table
    first_task_runs = int((table["task"] == sorted(table["task"].unique())[0]).sum())
    with running_app(*results) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.wait_for_selector("#pareto-plot .js-plotly-plot .scatterlayer .point", timeout=60_000)
        _wait_rows(page, first_task_runs)

        # choose the task
        page.locator("#task-select input").click()
        page.get_by_role("option", name="tinymath", exact=True).click()
        _wait_rows(page, 8)

        # a filter shrinks the table, and the plot follows
        page.locator("#filter textarea, #filter input").first.fill("peft_type == 'LORA'")
        page.locator("#apply-filter").click()
        _wait_rows(page, 4)
        page.get_by_text("4 of 8 runs match the filter").wait_for(timeout=20_000)
        points = page.locator("#pareto-plot .scatterlayer .point")
        assert points.count() == 2  # lora/r8 (mean of three seeds) and lora/r16
        # CPU records: the default x is not process memory; the base model is named with its size
        assert "trainable parameters" in page.locator("#pareto-plot .xtitle").text_content()
        assert page.locator("#model-select input").input_value() == "tiny/llama (99 k params)"
        # Compare two runs: lora/r16 against lora/r8, numbers with units, no raw floats
        diff = page.locator("#diff-table")
        diff.get_by_text("4 kB").first.wait_for(timeout=20_000)
        assert not re.search(r"\d\.\d{6,}", diff.inner_text())
        assert _page_fits(page)
        _screenshot(page, tmp_path / "app.png")
        assert page.locator("#export-file").count() == 0 or not page.locator("#export-file").is_visible()

        # CSV export of the filtered runs
        page.locator("#export-csv").click()
        link = page.locator("#export-file a[href*='.csv']").first
        link.wait_for(timeout=20_000)
        href = link.get_attribute("href")
        with urllib.request.urlopen(href if href.startswith("http") else url.rstrip("/") + href) as response:
            exported = response.read().decode().strip().splitlines()
        assert len(exported) == 1 + 4 and exported[0].startswith("task,experiment_name")

        # code in the filter is refused with a message, and nothing else changes
        page.locator("#filter textarea, #filter input").first.fill("__import__('os').system('true') == 0")
        page.locator("#apply-filter").click()
        page.get_by_text("Filter error:").first.wait_for(timeout=20_000)
        _wait_rows(page, 8)


@pytest.mark.browser
def test_report_renders_offline(browser, tmp_path):
    # a GPU task, and the project's committed CPU results (real numbers, for the screenshot)
    dirs = [make_task(tmp_path, "gpu-task"), REPO / "benchmarks" / "tinymath"]
    _as_accelerator_runs(dirs[0] / "results")
    reference = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"
    if reference.is_dir():
        dirs.append(reference / "MetaMathQA")
    path = write_report(load_results(dirs), tmp_path / "report.html")
    context = browser.new_context(offline=True)
    requested = []

    def block_network(route):
        requested.append(route.request.url)
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", block_network)
    page = context.new_page()
    page.set_viewport_size({"width": 1100, "height": 900})
    page.goto(path.as_uri())
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=30_000)
    plots = page.locator(".js-plotly-plot")
    # a Pareto plot and curves per task, and accuracy vs overhead for tinymath's inference records
    expected_plots = 2 * len(dirs) + 1
    assert plots.count() == expected_plots
    for i in range(expected_plots):
        assert plots.nth(i).locator(".main-svg").count() > 0
    assert page.locator(".scatterlayer .point").count() >= 6
    assert [u for u in requested if not u.startswith("file:")] == []
    # accelerator runs: memory on x, in bytes with SI prefixes (not "0.6B"); CPU runs: parameters
    assert page.locator("#pareto-gpu-task .xtitle").text_content().startswith("peak memory")
    ticks = page.locator("#pareto-gpu-task .xtick text").all_text_contents()
    assert ticks and all(t.endswith("kB") for t in ticks), ticks
    assert page.locator("#pareto-tinymath .xtitle").text_content().startswith("trainable parameters")
    assert page.locator("#overhead-tinymath .scatterlayer .point").count() > 0
    ticks = page.locator("#pareto-tinymath .xtick text").all_text_contents()
    assert {"1k", "1M"} <= set(ticks), ticks  # a log axis over hundreds to millions of parameters
    text = page.locator("body").inner_text()
    assert "base model: tiny/llama (99 k params)" in text
    assert "base model: tinymath base model (1.9 M params)" in text
    # the wide table scrolls inside its box; the page itself does not
    assert _page_fits(page)
    table_box = page.locator(".scroll").first.bounding_box()
    assert table_box["x"] + table_box["width"] <= page.viewport_size["width"]
    _screenshot(page, tmp_path / "report.png")
    context.close()


def test_app_command_defaults_and_bad_input(tmp_path, monkeypatch, capsys):
    from peftbench.commands.app_cmd import default_results

    make_task(tmp_path / "benchmarks")
    (tmp_path / "benchmarks" / ".hidden").mkdir()
    monkeypatch.chdir(tmp_path)
    assert default_results() == [Path("benchmarks/tinymath")]
    monkeypatch.chdir(tmp_path / "benchmarks")
    assert cli(["app"]) == 2
    assert "--results" in capsys.readouterr().err
    assert cli(["app", "--results", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
