"""Smoke tests of perf/run_perf.py: it runs with tiny settings and writes a complete record.

These check that the script works and what it writes, never how fast anything is: speed claims come
from the script's own table, measured side by side in one process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
from toyworld import TOY

from peftbench import tasks

SCRIPT = Path(__file__).resolve().parent.parent / "perf" / "run_perf.py"


@pytest.fixture(scope="module")
def run_perf():
    spec = importlib.util.spec_from_file_location("run_perf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_perf"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["run_perf"]


@pytest.fixture
def experiment(task_dir) -> Path:
    return task_dir / "experiments" / "lora" / "toy-rank4"


def test_fit_line_recovers_slope_and_r2(run_perf):
    exact = run_perf.fit_line([1, 2, 4], [3.0, 5.0, 9.0])
    assert exact["slope"] == pytest.approx(2.0)
    assert exact["intercept"] == pytest.approx(1.0)
    assert exact["r2"] == pytest.approx(1.0)
    noisy = run_perf.fit_line([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert 0 < noisy["r2"] < 1


def test_quick_run_writes_complete_record(run_perf, experiment, tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert (
        run_perf.main(["--quick", "--threads", "1", "--experiment", str(experiment), "--out", str(out)]) == 0
    )

    record = json.loads(out.read_text())
    assert record["schema"] == "peftbench-perf/1"
    assert record["experiment"] == "lora/toy-rank4" and record["task"] == TOY and record["quick"] is True
    machine = record["machine"]
    assert machine["torch_threads"] == 1 and machine["cores"] >= 1 and machine["cpu"]
    assert machine["device"] == "cpu"
    model = record["model"]
    assert len(model["fingerprint"]) == 64 and 0 < model["num_trainable_params"] < model["num_total_params"]

    training = record["training"]
    assert training["steps"] == run_perf.QUICK.train_steps
    for key in ("ratio", "harness_steps_per_s", "bare_steps_per_s"):
        assert math.isfinite(training[key]) and training[key] > 0
    # the harness's loop time covers its per-step bookkeeping, so it cannot be below its own step timer
    assert training["harness_loop_wall"]["median"] >= training["harness_step_timer"]["median"]

    evaluation = record["evaluation"]
    assert evaluation["prompts"] == run_perf.QUICK.eval_prompts
    assert evaluation["batch_size_eval"] == run_perf.QUICK.eval_batch_size
    assert evaluation["task_batch_size_eval"] == 16  # the toy task's own, recorded beside the override
    assert set(evaluation["tokens_per_s"]) == {"harness", "bare_sorted", "bare_unsorted"}
    assert evaluation["ratio"] > 0 and evaluation["sorting_gain"] > 0
    padding = evaluation["prompt_padding_fraction"]
    assert 0 <= padding["sorted"] <= padding["unsorted"] < 1

    fixed = record["fixed_costs"]
    assert "run imports" not in fixed["imports"]  # skipped with --quick
    assert fixed["model load"]["median"] > 0 and fixed["forgetting (one pass)"]["median"] > 0
    # sorting the forgetting texts by length (a proposed speed-up) must not change the metric
    assert fixed["forgetting loss difference when sorted"] < 1e-5
    tokenization = fixed["tokenization"]
    assert tokenization["train examples"] == 40
    assert tokenization["cache miss"] > 0 and tokenization["cache hit"]["median"] > 0
    assert fixed["total_cold"] >= tokenization["cold"]["median"]
    assert "skipped" in fixed["quick_run"] and "fraction" not in fixed

    growth = record["growth"]
    assert sorted(growth["max_steps"]["x"]) == list(run_perf.QUICK.step_sizes)
    # whole generation batches of the toy task's batch_size_eval (16)
    assert sorted(growth["validation_size"]["x"]) == [16 * k for k in run_perf.QUICK.valid_batches]
    assert "skipped" in growth["sweep"]

    measures = [row["measure"] for row in record["table"]]
    assert "training steps/s: harness / bare" in measures
    printed = capsys.readouterr().out
    assert "training steps/s: harness / bare" in printed and str(out) in printed


def test_bad_arguments_exit_with_usage_error(run_perf, tmp_path):
    with pytest.raises(SystemExit) as exc:
        run_perf.main(["--quick", "--threads", "0", "--experiment", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run_perf.main(["--quick", "--experiment", str(tmp_path / "missing")])
    assert exc.value.code == 2


@pytest.mark.slow
def test_subprocess_sections_time_quick_runs_and_sweeps(run_perf, experiment, tmp_path, monkeypatch):
    # the subprocesses find the toy task through the environment, as a user's own task would
    tests_dir = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("PEFTBENCH_TASKS", f"{TOY}=toyworld:ToyTask")
    tasks.get_task.cache_clear()
    out = tmp_path / "perf.json"
    argv = ["--quick", "--quick-run", "yes", "--sweep", "--threads", "1", "--experiment", str(experiment)]
    assert run_perf.main([*argv, "--out", str(out)]) == 0

    record = json.loads(out.read_text())
    quick = record["fixed_costs"]["quick_run"]
    assert quick["summary"]["status"] == "success" and quick["wall"] > 0
    assert set(record["fixed_costs"]["fraction"]) == {"cold cache", "warm cache"}
    sweep = record["growth"]["sweep"]
    assert sweep["runs"] == run_perf.QUICK.sweep_runs
    assert set(sweep["speedup"]) == {f"jobs={j}" for j in run_perf.QUICK.sweep_jobs}
    # the runs wrote into a scratch copy of the task, never into the experiment's own task folder
    assert not (experiment.parents[2] / "temporary_results").exists()
