"""`peftbench compare` end to end on small hand-made result files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from result_records import make_record, write_record
from scipy import stats as sps

from peftbench.analysis.aggregate import load_results
from peftbench.analysis.stats import ItemRun, item_runs, paired_comparison
from peftbench.cli import main
from peftbench.commands.compare_cmd import experiment_id

HASH = "ab" * 32


def write_result(
    folder: Path,
    experiment: str,
    correct: str,
    *,
    seed: int = 0,
    items_hash: str | None = HASH,
    task: str = "tinymath",
    status: str = "success",
    forgetting: float | None = None,
) -> Path:
    """A minimal result record of our format; seed 0 keeps the reference's file name."""
    train_info = {
        "status": status,
        "metrics": [
            {"step": 10, "valid accuracy": 0.5},
            {"step": 10, "test accuracy": correct.count("1") / len(correct), "forgetting": forgetting},
        ],
    }
    if correct is not None:
        train_info["test_correct"] = correct
    if items_hash is not None:
        train_info["test_items_hash"] = items_hash
    record = {
        "schema_version": 1,
        "run_info": {
            "experiment_name": experiment,
            "seed": seed,
            "task_name": task,
            "created_at": "2026-11-29T09:00:00+00:00",
        },
        "train_info": train_info,
        "meta_info": {},
    }
    name = experiment.replace("/", "--") + (f"--seed{seed}" if seed else "") + ".json"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record))
    return folder / name


def bits(rng, p, n=120):
    return "".join("1" if x else "0" for x in rng.random(n) < p)


@pytest.fixture
def task_dir(tmp_path):
    """A task folder with three experiments: lora/a and lora/b with three seeds, ia3/c with one."""
    rng = np.random.default_rng(0)
    results = tmp_path / "tinymath" / "results"
    for seed in range(3):
        write_result(results, "lora/a", bits(rng, 0.8), seed=seed)
        write_result(results, "lora/b", bits(rng, 0.5), seed=seed)
    write_result(results, "ia3/c", bits(rng, 0.75))
    (tmp_path / "tinymath" / "experiments").mkdir()
    return tmp_path / "tinymath"


def run_cli(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("options", "method", "expected"),
    [
        ([], "auto", "t-test over items x seeds"),
        (
            ["--method", "bootstrap", "--bootstrap", "2000"],
            "bootstrap",
            "paired bootstrap over items and seeds (2000 resamples",
        ),
    ],
)
def test_two_experiments_with_seeds_print_the_library_result(task_dir, capsys, options, method, expected):
    code, out, err = run_cli(capsys, task_dir, "lora/a", "lora/b", *options)
    assert code == 0, err
    assert "A = lora/a, B = lora/b, 120 paired test items" in out
    assert expected in out
    # the printed numbers are those of the library function on the same data
    runs = {}
    for f in sorted((task_dir / "results").glob("lora--*.json")):
        record = json.loads(f.read_text())
        runs.setdefault(record["run_info"]["experiment_name"], []).append(
            ItemRun(
                np.array([c == "1" for c in record["train_info"]["test_correct"]]),
                HASH,
                record["run_info"]["seed"],
            )
        )
    res = paired_comparison(runs["lora/a"], runs["lora/b"], n_boot=2000, method=method)
    assert f"difference A - B: {res.diff:+.3f}" in out
    assert f"[{res.low:+.3f}, {res.high:+.3f}]" in out
    assert "t, seeds" in out


def test_one_seed_each_uses_mcnemar_and_json_output_is_machine_readable(tmp_path, capsys):
    results = tmp_path / "results"
    write_result(results, "lora/a", "1111111111" + "1100")
    write_result(results, "ia3/b", "0000000000" + "1100")
    code, out, _ = run_cli(capsys, results, "lora/a", "ia3/b", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["only_a"] == 10 and data["only_b"] == 0
    assert data["p_value"] == pytest.approx(2 * 0.5**10)
    assert data["experiments"][0]["interval"] == "Wilson, items"


def test_baseline_compares_all_with_holm_and_notes_reference_files(task_dir, capsys, reference_dir):
    reference = reference_dir / "MetaMathQA" / "results" / "lora--llama-3.2-3B-rank32.json"
    results = task_dir / "results"
    record = json.loads(reference.read_text())
    record["run_info"]["task_name"] = "tinymath"  # pretend it belongs here
    (results / reference.name).write_text(json.dumps(record))
    code, out, err = run_cli(capsys, task_dir, "--baseline", "lora/b", "--bootstrap", "1000")
    assert code == 0, err
    lines = out.splitlines()
    assert "against baseline lora/b (3 seed(s))" in lines[0]
    table_rows = [line for line in lines if line.startswith(("lora/a", "ia3/c"))]
    assert [r.split()[0] for r in table_rows] == ["lora/a", "ia3/c"]  # best first
    assert table_rows[0].split()[6] == "yes"  # the CI holds a space
    # the reference's file was scored by the reference's rule, tinymath's runs by ours: not compared
    note = 'lora/llama-3.2-3B-rank32: test accuracy scored by "reference", the baseline\'s by "peftbench-1"'
    assert note in out


def test_markdown_output(task_dir, capsys):
    code, out, _ = run_cli(
        capsys, task_dir, "--baseline", "lora/b", "--format", "markdown", "--bootstrap", "500"
    )
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("| experiment"))
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["experiment", "test accuracy", "diff"]
    assert "|---" in out and "| lora/a " in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["lora/a", "lora/aa"], 'no successful runs of experiment "lora/aa" (did you mean "lora/a"?)'),
        (["lora/a", "lora/a"], "same experiment"),
        (["lora/a"], "then the two experiments"),
        (["--baseline", "lora/bb"], 'did you mean "lora/b"'),
        (["lora/a", "lora/b", "--confidence", "95"], "--confidence must be between 0 and 1"),
        (["lora/a", "lora/b", "--task", "tinymat"], 'did you mean "tinymath"'),
    ],
)
def test_bad_input_is_one_line_and_exit_2(task_dir, capsys, extra, message):
    code, out, err = run_cli(capsys, task_dir, *extra)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert out == ""


def test_mismatched_test_sets_are_a_clear_error(tmp_path, capsys):
    results = tmp_path / "results"
    write_result(results, "lora/a", "1010")
    write_result(results, "lora/b", "1011", items_hash="cd" * 32)
    code, _, err = run_cli(capsys, results, "lora/a", "lora/b")
    assert code == 2 and "test sets differ" in err and "lora--b.json" in err


def test_missing_per_item_data_is_named(tmp_path, capsys):
    results = tmp_path / "results"
    write_result(results, "lora/a", "1010")
    path = write_result(results, "lora/b", "1011")
    record = json.loads(path.read_text())
    del record["train_info"]["test_correct"]
    path.write_text(json.dumps(record))
    code, _, err = run_cli(capsys, results, "lora/a", "lora/b")
    assert code == 2 and f"{path}: per-item data is missing" in err


def test_several_tasks_need_task_and_empty_folders_say_so(tmp_path, capsys):
    write_result(tmp_path / "one" / "results", "lora/a", "10", task="one")
    write_result(tmp_path / "two" / "results", "lora/a", "10", task="two")
    code, _, err = run_cli(capsys, tmp_path / "one", tmp_path / "two", "--baseline", "lora/a")
    assert code == 2 and "--task" in err
    (tmp_path / "empty" / "results").mkdir(parents=True)
    code, _, err = run_cli(capsys, tmp_path / "empty", "a/b", "c/d")
    assert code == 2 and "no successful runs" in err


def test_temporary_results_only_with_the_flag(task_dir, capsys):
    write_result(task_dir / "temporary_results", "oft/d", "1" * 120)
    code, _, err = run_cli(capsys, task_dir, "oft/d", "lora/b")
    assert code == 2 and "oft/d" in err
    code, out, _ = run_cli(capsys, task_dir, "oft/d", "lora/b", "--include-temporary", "--bootstrap", "500")
    assert code == 0 and "A = oft/d" in out
    # options may also sit between the folders and the experiment names
    code, out, _ = run_cli(capsys, task_dir, "--include-temporary", "oft/d", "--format", "json", "lora/b")
    assert code == 0 and json.loads(out)["a"] == "oft/d"


@pytest.mark.slow
def test_compare_reads_what_the_runner_writes(tmp_path, monkeypatch, capsys):
    """Two seeds of two experiments of the toy task, run for real, then compared."""
    from toyworld import build_tiny_model, make_task_dir, register_toy_task

    register_toy_task(monkeypatch)
    build_tiny_model(tmp_path / "model")
    task = make_task_dir(tmp_path, model_dir=tmp_path / "model")
    for experiment in ("lora/toy-rank4", "full-finetuning/toy-default"):
        for seed in ("0", "1"):
            assert main(["run", str(task / "experiments" / experiment), "--seed", seed]) == 0
    capsys.readouterr()
    code, out, err = run_cli(
        capsys,
        task,
        "lora/toy-rank4",
        "full-finetuning/toy-default",
        "--include-temporary",
        "--format",
        "json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["n_items"] == 16 and (data["n_seeds_a"], data["n_seeds_b"]) == (2, 2)
    assert [e["seeds"] for e in data["experiments"]] == [[0, 1], [0, 1]]
    assert data["low"] <= data["diff"] <= data["high"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lora/r8", "lora/r8"),
        ("benchmarks/tinymath/experiments/lora/r8/", "lora/r8"),
        ("lora/r8/", "lora/r8"),
    ],
)
def test_experiment_id_accepts_folder_paths(text, expected):
    assert experiment_id(text) == expected


@pytest.fixture
def forgetting_dir(tmp_path):
    """Forgetting of three experiments over seeds: a and b differ clearly, c has one seed."""
    results = tmp_path / "results"
    for seed, (fa, fb) in enumerate([(0.10, 0.31), (0.12, 0.30), (0.11, 0.33)]):
        write_result(results, "lora/a", "10", seed=seed, forgetting=fa)
        write_result(results, "lora/b", "10", seed=seed, forgetting=fb)
    write_result(results, "ia3/c", "10", forgetting=0.2)
    return results


def test_other_metrics_use_welch_across_seeds(forgetting_dir, capsys):
    code, out, err = run_cli(
        capsys, forgetting_dir, "lora/a", "lora/b", "--metric", "forgetting", "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    ref = sps.ttest_ind([0.10, 0.12, 0.11], [0.31, 0.30, 0.33], equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert data["metric"] == "forgetting" and data["method"] == "Welch t-test across seeds"
    assert (data["p_value"], data["low"], data["high"]) == pytest.approx((ref.pvalue, ci.low, ci.high))
    assert data["experiments"][0]["mean"] == pytest.approx(0.11)


def test_other_metrics_against_a_baseline_best_first_by_the_metrics_direction(forgetting_dir, capsys):
    code, out, err = run_cli(capsys, forgetting_dir, "--baseline", "lora/b", "--metric", "forgetting")
    assert code == 0, err
    assert "forgetting against baseline lora/b" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("lora/a")]
    assert rows and rows[0][2].startswith("-0.2")  # lower forgetting is better: a is 0.2 lower
    assert "ia3/c: a comparison across seeds needs at least 2 values on each side, got 1 and 3" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--metric", "forgeting"],
            'no values of metric "forgeting" in these results (did you mean "forgetting"?)',
        ),
        (["--metric", "forgetting", "--method", "bootstrap"], "--method applies to test_accuracy only"),
    ],
)
def test_bad_metric_options(forgetting_dir, capsys, extra, message):
    code, _, err = run_cli(capsys, forgetting_dir, "lora/a", "lora/b", *extra)
    assert code == 2 and message in err


# ---- the issue's case, and quick runs ----------------------------------------------------------------


def _record(experiment: str, correct: str, *, seed: int = 0, quick: bool = False) -> dict:
    record = make_record(
        experiment, seed=seed, accuracy=correct.count("1") / len(correct), test_correct=correct
    )
    record["train_info"]["test_items_hash"] = HASH
    record["run_info"].update(quick=quick, cli_overrides={})
    return record


@pytest.fixture
def issue_dir(tmp_path):
    """Full fine-tuning at 0.556, 0.542, 0.498 on 500 items (mean 0.532) and 20 methods at 0%, one seed each,
    like tinymath's committed results where `compare --baseline` said "not significant" for trainable tokens
    at 0.000 beside the unadjusted interval [-0.692, -0.372]."""
    results = tmp_path / "tinymath" / "results"
    order = np.random.default_rng(5).permutation(500)
    for seed, n_right in enumerate((278, 271, 249)):
        correct = np.zeros(500, dtype=int)
        correct[order[:n_right]] = 1  # the easy items first: the seeds agree as real runs do
        write_record(results, _record("full-finetuning/lr", "".join(map(str, correct)), seed=seed))
    for i in range(20):
        name = "trainable_tokens/sos" if i == 0 else f"zero/m{i}"
        write_record(results, _record(name, "0" * 500))
    return tmp_path / "tinymath"


def test_baseline_interval_and_significance_agree_in_the_issues_case(issue_dir, capsys):
    code, out, err = run_cli(capsys, issue_dir, "--baseline", "full-finetuning/lr", "--format", "json")
    assert code == 0, err
    row = next(c for c in json.loads(out)["comparisons"] if c["experiment"] == "trainable_tokens/sos")
    assert row["mean"] == 0 and row["diff"] == pytest.approx(-0.532)
    # alone, the comparison is significant and its interval excludes 0, as the issue printed ...
    table = load_results([issue_dir]).table
    alone = paired_comparison(item_runs(table[table["experiment_name"] == "trainable_tokens/sos"]),
                              item_runs(table[table["experiment_name"] == "full-finetuning/lr"]))  # fmt: skip
    assert alone.high < 0 and alone.p_value < 0.05
    assert (alone.low, alone.high) == pytest.approx((-0.692, -0.372), abs=0.03)
    # ... after Holm over 20 comparisons it is not, and neither is its interval: they agree
    assert row["p_holm"] >= 0.05 and row["significant"] is False
    assert row["low"] < 0 < row["high"] and row["level"] > 0.95
    code, out, _ = run_cli(capsys, issue_dir, "--baseline", "full-finetuning/lr")
    header, line = (next(x for x in out.splitlines() if x.startswith(s)) for s in ("experiment", "trainable"))
    assert header.split()[3:9] == ["diff", "95%", "CI", "(Holm)", "p", "(Holm)"]
    assert line.split()[3:5] == ["[-1.000,", f"{row['high']:+.3f}]"] and line.split()[6] == "no"
    assert "excludes 0 exactly when the row is significant" in out


def test_quick_runs_are_compared_only_with_quick_runs(issue_dir, capsys):
    write_record(
        issue_dir / "temporary_results", _record("full-finetuning/lr", "1" * 100 + "0" * 400, quick=True)
    )
    code, out, err = run_cli(
        capsys, issue_dir, "full-finetuning/lr [quick]", "zero/m1", "--include-temporary"
    )
    assert code == 2 and "only runs of the same variant" in err and "a quick run" in err
    code, out, err = run_cli(
        capsys, issue_dir, "--baseline", "full-finetuning/lr", "--include-temporary", "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert "full-finetuning/lr [quick]" not in {c["experiment"] for c in data["comparisons"]}
    assert data["baseline_seeds"] == 3  # the quick run did not supersede seed 0
    assert data["other_variants"] == [
        {"experiment": "full-finetuning/lr [quick]", "note": 'variant "quick", the baseline\'s is "full"'}
    ]
    code, out, err = run_cli(
        capsys, issue_dir, "--baseline", "full-finetuning/lr [quick]", "--include-temporary"
    )
    assert code == 2 and "nothing to compare with" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["lora/a", "lora/b", "--alpha", "0.1"], "--alpha applies with --baseline only"),
        (["--baseline", "lora/b", "--confidence", "0.9", "--alpha", "0.05"], "disagree"),
        (["--baseline", "lora/b", "--alpha", "5"], "--alpha must be between 0 and 1"),
    ],
)
def test_levels_of_a_baseline_comparison_are_one_setting(task_dir, capsys, extra, message):
    code, out, err = run_cli(capsys, task_dir, *extra)
    assert code == 2 and message in err and out == ""


def test_baseline_confidence_sets_alpha(task_dir, capsys):
    code, out, _ = run_cli(
        capsys, task_dir, "--baseline", "lora/b", "--confidence", "0.9", "--format", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["alpha"] == pytest.approx(0.1) and data["confidence"] == pytest.approx(0.9)


def test_method_footer_names_each_test_once_and_counts_its_caveats(task_dir, capsys):
    code, out, err = run_cli(capsys, task_dir, "--baseline", "lora/b")
    assert code == 0, err
    footer = out[out.index("\nmethod: ") :].strip().splitlines()
    # the one-seed side borrows the task's pooled seed variance (both 2-seed experiments give it)
    assert footer[0] == "method: t-test over items x seeds (variance components, Welch-Satterthwaite df)"
    assert len(footer) == 2 and footer[1].startswith(
        "  1 of 2 comparisons: one seed (A): the task's seed variance stands in for its own (sd "
    )
    assert footer[1].endswith("pooled from 2 experiments with 2+ seeds, 4 df)")


# ---- result files with wrongly typed fields: table and compare see the same runs -----------------------


def _rewrite(path: Path, **final_or_train_info) -> None:
    record = json.loads(path.read_text())
    for key, value in final_or_train_info.items():
        if key == "test_accuracy":
            record["train_info"]["metrics"][-1]["test accuracy"] = value
        else:
            record["train_info"][key] = value
    path.write_text(json.dumps(record))  # json writes NaN as the bare literal that json.load accepts


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"test_accuracy": float("nan")}, 'final metric "test accuracy" is nan but train_info.test_correct'),
        ({"test_accuracy": 0.9}, 'final metric "test accuracy" is 0.9 but train_info.test_correct gives 3/4'),
        ({"test_correct": [1, 0, 1, 1]}, "train_info.test_correct must be a string of 0 and 1, found [1, 0"),
    ],
)
def test_table_and_compare_skip_the_same_bad_file_and_name_why(tmp_path, capsys, change, reason):
    results = tmp_path / "results"
    write_result(results, "lora/a", "1010")
    bad = write_result(results, "lora/b", "1011")
    _rewrite(bad, **change)
    code, _, err = run_cli(capsys, results, "lora/a", "lora/b")
    assert code == 2 and f"warning: skipped {bad}: {reason}" in err
    assert "per-item data is missing" not in err
    assert main(["table", str(results), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert f"warning: skipped {bad}: {reason}" in err
    assert "lora/a" in out and "lora/b" not in out
