"""`peftbench.analysis.ranking` and `peftbench rank`: rank intervals checked against a simulation
with a known ranking, ties, seed stability, determinism and bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_seed_variance import HASH, N_ITEMS, SHIFT_SD, simulate_runs

from peftbench.analysis.ranking import rank_experiments, seed_stability
from peftbench.cli import main
from peftbench.errors import BadInput
from peftbench.tasks.base import Metric

ACCURACY = Metric("test_accuracy", "higher")


def simulated_task(rng: np.random.Generator, logits: dict[str, float], *, seeds: int) -> pd.DataFrame:
    """The runs table of a task whose methods have the given true logits (shared item difficulty)."""
    difficulty = rng.normal(0, 1.5, N_ITEMS)
    rows = []
    for name, logit in logits.items():
        for run in simulate_runs(rng, difficulty=difficulty, logit=logit, seeds=seeds, shift_sd=SHIFT_SD):
            bits = "".join("1" if c else "0" for c in run.correct)
            rows.append({"experiment_name": name, "seed": run.seed, "test_accuracy": run.accuracy,
                         "test_correct": bits, "test_items_hash": HASH, "variant": ""})  # fmt: skip
    return pd.DataFrame(rows)


# true accuracies about 2 points apart (logit steps of 0.1 around 0.5): neighbours are often swapped
SPACED = {f"m{i}": 0.1 * (3 - i) for i in range(6)}


def test_rank_intervals_cover_the_true_ranks_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    covered = total = point_right = 0
    widths = []
    for _ in range(30):
        table = rank_experiments(simulated_task(rng, SPACED, seeds=2), ACCURACY, n_boot=500)[0].table
        true_rank = table["experiment"].str[1:].astype(int) + 1
        covered += int(((table["rank_low"] <= true_rank) & (true_rank <= table["rank_high"])).sum())
        point_right += int((table["rank"] == true_rank).sum())
        total += len(table)
        widths.append(float((table["rank_high"] - table["rank_low"]).mean()))
    # measured 0.99 at a nominal 0.95 (conservative, docs/statistics.md); the point ranks alone are
    # right about half the time (measured 0.52 over 100 tasks), so the intervals are needed
    assert covered / total >= 0.93
    assert point_right / total < 0.7
    # but not trivially wide: about 3 ranks of 6 (measured 3.2 over 100 tasks)
    assert 1.5 < np.mean(widths) < 4.0


def test_tied_methods_get_overlapping_rank_intervals_and_separated_ones_do_not():
    rng = np.random.default_rng(1)
    logits = {"tie_a": 1.0, "tie_b": 1.0, "far": -1.5}
    overlap = far_alone = tie_tied = 0
    sims = 20
    for _ in range(sims):
        rows = rank_experiments(simulated_task(rng, logits, seeds=3), ACCURACY, n_boot=500)[0].table
        rows = rows.set_index("experiment")
        a, b = rows.loc["tie_a"], rows.loc["tie_b"]
        overlap += max(a["rank_low"], b["rank_low"]) <= min(a["rank_high"], b["rank_high"])
        far_alone += (rows.loc["far", "rank_low"], rows.loc["far", "rank_high"]) == (3, 3)
        tie_tied += (
            bool(a["tied_with_best"] and b["tied_with_best"]) and not rows.loc["far", "tied_with_best"]
        )
    # A true tie looks separated now and then, at about the 5% level: over 200 such tasks the
    # intervals overlapped in 0.945 and Holm kept both tied in 0.935 (here 18 and 16 of 20). The
    # bound is 3 binomial sds below 0.94 for 20 tasks.
    assert overlap >= 15
    assert far_alone == sims
    assert tie_tied >= 15


def test_without_any_two_seed_experiment_there_are_no_rank_intervals():
    # 3 seeds of nothing: one seed each, and no item data either (a metric other than accuracy)
    runs = pd.DataFrame({"experiment_name": ["a", "b"], "seed": [0, 0], "forgetting": [0.1, 0.3]})
    ranking = rank_experiments(runs, Metric("forgetting", "lower"))[0]
    assert ranking.table["rank"].tolist() == [1, 2]
    assert ranking.table["rank_low"].isna().all()
    assert "no rank intervals" in ranking.notes[0]


def test_ranking_is_deterministic_given_the_seed():
    runs = simulated_task(np.random.default_rng(2), SPACED, seeds=2)
    first = rank_experiments(runs, ACCURACY, n_boot=300, rng_seed=7)[0].table
    again = rank_experiments(runs.sample(frac=1, random_state=3), ACCURACY, n_boot=300, rng_seed=7)[0].table
    pd.testing.assert_frame_equal(first, again)


def test_kendall_tau_between_seeds_counts_experiments_present_at_both():
    data = pd.DataFrame(
        {
            "experiment_name": ["a", "a", "b", "b", "c", "c", "d"],
            "seed": [0, 1, 0, 1, 0, 1, 0],
            "_value": [0.9, 0.8, 0.5, 0.6, 0.1, 0.7, 0.3],
        }
    )
    table = seed_stability(data)
    assert table[["seed_a", "seed_b", "n_experiments"]].values.tolist() == [[0, 1, 3]]
    # seed 0 orders a > b > c, seed 1 a > c > b: one discordant pair of three, tau = (2 - 1) / 3
    assert table["tau"].iloc[0] == pytest.approx(1 / 3)


def test_variants_are_ranked_apart():
    runs = simulated_task(np.random.default_rng(4), {"x": 0.5, "y": 0.0}, seeds=2)
    quick = runs.assign(variant="quick", test_accuracy=runs["test_accuracy"] / 2)
    rankings = rank_experiments(pd.concat([runs, quick], ignore_index=True), ACCURACY, n_boot=200)
    assert [r.variant for r in rankings] == ["", "quick"]
    assert all(len(r.table) == 2 for r in rankings)


def test_bootstrap_below_one_is_bad_input():
    runs = simulated_task(np.random.default_rng(5), {"x": 0.0}, seeds=1)
    with pytest.raises(BadInput, match="bootstrap"):
        rank_experiments(runs, ACCURACY, n_boot=0)


@pytest.fixture
def ranked_dir(tmp_path):
    """A task folder: lora/a (3 seeds, ~80%), lora/b (3 seeds, ~50%), ia3/c (1 seed, ~65%)."""
    from test_compare import bits, write_result

    rng = np.random.default_rng(0)
    results = tmp_path / "tinymath" / "results"
    for seed in range(3):
        write_result(results, "lora/a", bits(rng, 0.8, 300), seed=seed)
        write_result(results, "lora/b", bits(rng, 0.5, 300), seed=seed)
    write_result(results, "ia3/c", bits(rng, 0.65, 300))
    return tmp_path / "tinymath"


def rank_cli(capsys, *argv):
    code = main(["rank", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_rank_prints_ranks_intervals_the_group_and_the_seed_stability(ranked_dir, capsys):
    code, out, _ = rank_cli(capsys, ranked_dir, "--bootstrap", "500")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "task tinymath: ranking on test_accuracy"
    rows = {line.split()[1]: line.split() for line in lines if line.split()[:1] in (["1"], ["2"], ["3"])}
    assert [rows[name][0] for name in ("lora/a", "ia3/c", "lora/b")] == ["1", "2", "3"]
    assert rows["lora/b"][-1] == "no"  # 30 points below the best with 3 seeds each
    assert "seed variance (run to run): sd" in out and "pooled from 2 experiments" in out
    assert "Kendall tau between seeds: mean 1.00 over 3 pairs of seeds, 2 experiments with 2+ seeds" in out


def test_rank_json_is_deterministic_given_the_seed(ranked_dir, capsys):
    outputs = [rank_cli(capsys, ranked_dir, "--format", "json", "--bootstrap", "300", "--seed", "4")[1]
               for _ in range(2)]  # fmt: skip
    assert outputs[0] == outputs[1]
    data = json.loads(outputs[0])[0]
    assert data["kendall_tau"] == 1.0 and data["seed_variance"]["df"] == 4
    assert [row["experiment"] for row in data["experiments"]] == ["lora/a", "ia3/c", "lora/b"]
    assert data["experiments"][0]["rank_low"] == 1
    _, markdown, _ = rank_cli(capsys, ranked_dir, "--format", "markdown", "--bootstrap", "300")
    assert "| rank | experiment" in markdown.replace("  ", " ").replace("  ", " ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--metric", "acuracy"], 'unknown metric "acuracy"'),
        (["--bootstrap", "0"], "--bootstrap must be at least 1"),
    ],
)
def test_rank_bad_input_is_one_line_and_exit_2(ranked_dir, capsys, options, message):
    code, out, err = rank_cli(capsys, ranked_dir, *options)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1


def test_rank_without_results_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    code, out, err = rank_cli(capsys, tmp_path / "results")
    assert code == 2 and out == ""
    assert "no results" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- report and app


def test_report_and_app_show_the_ranking(tmp_path):
    from test_dashboard import make_task

    from peftbench.analysis.aggregate import load_results
    from peftbench.analysis.ranking import ranking_tables
    from peftbench.dashboard.report import build_report

    loaded = load_results([make_task(tmp_path)])
    page = build_report(loaded)
    section = page[page.index("<h3>Ranking</h3>") :]
    assert "Ranking on test_accuracy" in section and "95% rank interval" in section
    # no per-item data in these records: seeds only, with lora/r8's three seeds giving the variance
    assert "bootstrap over seeds (no per-item data)" in section
    assert "pooled from 1 experiment with 2+ seeds, 2 df" in section
    table, notes = ranking_tables(loaded.table[loaded.table["task"] == "tinymath"], "test_accuracy")
    assert table["experiment"].tolist()[0] == "full-finetuning/all" and len(table) == 6
    assert notes.startswith("**Ranking on test_accuracy**")
    table, notes = ranking_tables(loaded.table, None)
    assert table.empty and "Nothing to rank" in notes


@pytest.mark.browser
def test_app_ranking_section_in_a_browser(tmp_path):
    import subprocess
    import sys

    from test_dashboard import CHROMIUM, CHROMIUM_ARGS, _free_port, _wait_for_http, make_task

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    task = make_task(tmp_path)
    # lora/r8's search kept its settings (its runs stand for it); ia3/small is not searched
    add_searches(task, plain={"lora/r8": 0.01, "ia3/small": 0.01}, searched={"lora/r8-tuned": 0.01})
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "peftbench",
        "app",
        "--results",
        str(task),
        "--port",
        str(port),
    ]
    env = {**__import__("os").environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for_http(url, proc)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url)
            page.wait_for_selector("#pareto-plot .js-plotly-plot .scatterlayer .point", timeout=60_000)
            page.locator("#rank-button").click()
            page.locator("#ranking-notes").get_by_text("Kendall tau between seeds").wait_for(timeout=30_000)
            text = page.locator("#ranking-table").inner_text()
            assert "full-finetuning/all" in text and "rank interval" in text
            assert "Ranking on test_accuracy" in page.locator("#ranking-notes").inner_text()
            page.locator("#rank-searched input").check()
            page.locator("#rank-button").click()
            notes = page.locator("#ranking-notes")
            notes.get_by_text("the catalogue at its searched settings: 1 experiment").wait_for(timeout=30_000)
            assert "left out, not searched yet: 1 catalogue experiment" in notes.inner_text()
            text = page.locator("#ranking-table").inner_text()
            assert "lora/r8" in text and "full-finetuning/all" not in text
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def add_searches(task_dir: Path, *, searched: dict[str, float | None], plain: dict[str, float]) -> None:
    """Experiment folders in `task_dir` (LoRA configs of tinymath): `plain` maps a name to its lr;
    `searched` maps the name of a finished search's -tuned to its lr (None: its source's folder
    only)."""
    tinymath = Path(__file__).parents[1] / "benchmarks/tinymath"
    shutil.copy(tinymath / "default_training_params.json", task_dir)
    lora = tinymath / "experiments/lora/tiny-llama-rank6/adapter_config.json"

    def experiment(name: str, lr: float, *, tuning: bool = False) -> None:
        folder = task_dir / "experiments" / name
        folder.mkdir(parents=True)
        shutil.copy(lora, folder)
        (folder / "training_params.json").write_text(json.dumps({"optimizer_kwargs": {"lr": lr}}))
        if tuning:
            (folder / "tuning.json").write_text("{}")

    for name, lr in plain.items():
        experiment(name, lr)
    for name, lr in searched.items():
        experiment(name, lr, tuning=True)


@pytest.fixture
def searched_dir(ranked_dir):
    """ranked_dir with experiment folders: lora/a's search moved its lr (lora/a-tuned, 3 seeds, ~85%),
    lora/c's kept it (lora/c's run stands for it), lora/d's moved it but has not run, lora/b is not
    searched, ia3/c has no folder."""
    from test_compare import bits, write_result

    add_searches(
        ranked_dir,
        plain={name: 0.01 for name in ("lora/a", "lora/b", "lora/c", "lora/d")},
        searched={"lora/a-tuned": 0.02, "lora/c-tuned": 0.01, "lora/d-tuned": 0.03},
    )
    rng = np.random.default_rng(1)
    for seed in range(3):
        write_result(ranked_dir / "results", "lora/a-tuned", bits(rng, 0.85, 300), seed=seed)
    write_result(ranked_dir / "results", "lora/c", bits(rng, 0.6, 300))
    write_result(ranked_dir / "results", "lora/d", bits(rng, 0.6, 300))
    return ranked_dir


def test_rank_searched_keeps_each_searched_experiment_once_at_its_searched_settings(searched_dir, capsys):
    """--searched: `-tuned` runs where they exist, the source's where the search kept its settings;
    unsearched and not-yet-run experiments are left out and named."""
    code, out, err = rank_cli(capsys, searched_dir, "--searched", "--bootstrap", "200")
    assert code == 0, err
    ranked = [line.split()[1] for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert ranked == ["lora/a-tuned", "lora/c"]
    assert "left out, not searched yet: 1 catalogue experiment" in out  # lora/b (ia3/c has no folder)
    assert "left out, searched but not run yet: lora/d-tuned" in out
    # without --searched every experiment with runs is ranked
    _, everything, _ = rank_cli(capsys, searched_dir, "--bootstrap", "200")
    assert {"lora/a", "lora/b", "ia3/c", "lora/d"} <= set(everything.split())


def test_report_and_app_rank_the_searched_set_beside_every_experiment(searched_dir):
    """The report shows the ranking of the searched set first (as `rank --searched`), then every
    experiment's; the app's ranking does so when "searched settings only" is ticked."""
    from peftbench.analysis.aggregate import load_results
    from peftbench.dashboard.app import NO_TASK_FOLDER, build_view, ranked
    from peftbench.dashboard.report import build_report

    loaded = load_results([searched_dir])
    page = build_report(loaded)
    searched = page[page.index("<h3>Ranking at searched settings</h3>") : page.index("<h3>Ranking of every")]
    assert re.findall(r"<td>([a-z0-9]+/[a-z-]+)</td>", searched) == ["lora/a-tuned", "lora/c"]
    assert "left out, searched but not run yet: lora/d-tuned" in searched
    everything = page[page.index("<h3>Ranking of every") :]
    assert set(re.findall(r"<td>([a-z0-9]+/[a-z-]+)</td>", everything)) == {
        "lora/a", "lora/b", "ia3/c", "lora/a-tuned", "lora/c", "lora/d"
    }  # fmt: skip

    def view_of(task, model, filter_text, x, y):
        return build_view(loaded, task=task, model=model, filter_text=filter_text, x=x, y=y)

    table, notes = ranked(view_of, "tinymath", None, "", None, "test_accuracy", True)
    assert table["experiment"].tolist() == ["lora/a-tuned", "lora/c"]
    assert notes.startswith("- the catalogue at its searched settings: 2 experiments")
    assert "**Ranking on test_accuracy**" in notes
    table, _ = ranked(view_of, "tinymath", None, "experiment_name == 'lora/b'", None, "test_accuracy", True)
    assert table.empty
    table, notes = ranked(view_of, "tinymath", None, "seed == 7", None, "test_accuracy", True)
    assert table.empty and "Nothing to rank" in notes and notes != NO_TASK_FOLDER
    table, _ = ranked(view_of, "tinymath", None, "", None, "test_accuracy", False)
    assert len(table) == 6
    # a results folder alone does not say what was searched: the app says what it needs
    loaded = load_results([searched_dir / "results"])
    shutil.rmtree(searched_dir / "experiments")
    assert ranked(view_of, "tinymath", None, "", None, "test_accuracy", True)[1] == NO_TASK_FOLDER


def test_report_without_searches_has_one_ranking(ranked_dir):
    from peftbench.analysis.aggregate import load_results
    from peftbench.dashboard.report import build_report

    (ranked_dir / "experiments").mkdir()
    page = build_report(load_results([ranked_dir]))
    assert "<h3>Ranking</h3>" in page and "searched settings" not in page


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "results", "is not a task folder"),
        (lambda d: d, "no searched experiment has runs"),
    ],
)
def test_rank_searched_bad_input_is_one_line_and_exit_2(ranked_dir, capsys, make, message):
    (ranked_dir / "default_training_params.json").write_text("{}")
    (ranked_dir / "experiments/lora/a").mkdir(parents=True)
    code, out, err = rank_cli(capsys, make(ranked_dir), "--searched")
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1
