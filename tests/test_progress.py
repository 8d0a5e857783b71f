"""Progress you can see: a run's phase and evaluation lines, its bar on a terminal, its progress file."""

from __future__ import annotations

import io
import json
import re
import sys
import warnings
from pathlib import Path

import pytest
from toyworld import build_tiny_model, make_task_dir, register_toy_task

from peftbench.cli import main
from peftbench.progress import PROGRESS_FILE_ENV, RunProgress, describe, read_progress, write_progress


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(folder)
    return folder


@pytest.fixture
def task_dir(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    register_toy_task(monkeypatch)
    return make_task_dir(tmp_path, model_dir=tiny_model_dir)


# ---- one run -----------------------------------------------------------------------------------------


def test_a_run_off_a_terminal_says_each_phase_and_each_evaluation(task_dir, capsys, monkeypatch, tmp_path):
    progress_file = tmp_path / "run.progress.json"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress_file))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", "--clean", str(task_dir / "experiments/lora/toy-rank4")]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("run: ")]
    expected = [  # in this order; each phase says when it starts, and what it found and its time when done
        r"loading the toytask data \.\.\.",
        r"loading the toytask data: 40 train, 8 valid, 16 test examples \(\d+\.\d s\)",
        r"loading the base model base_model \.\.\.",
        r"loading the base model base_model: on cpu \(\d+\.\d s\)",
        r"forgetting baseline \(2 texts\) \.\.\.",
        r"forgetting baseline \(2 texts\): loss \d+\.\d{4} \(\d+\.\d s\)",
        r"tokenising 40 training examples \.\.\.",
        r"tokenising 40 training examples: done \(\d+\.\d s\)",
        r"training 4 steps, validating every 2 \.\.\.",
        r"step 2: validating \(8 prompts\) \.\.\.",
        r"step 2/4: valid accuracy \d\.\d{3}, train loss \d+\.\d{4}, \d+\.\d\d s/step, eval \d+\.\d s, "
        r"training left ~\d\d:\d\d",
        r"step 4: validating \(8 prompts\) \.\.\.",
        r"step 4/4: valid accuracy \d\.\d{3}, .*, training left ~00:00",
        r"training 4 steps, validating every 2: done \(\d+\.\d s\)",
        r"test generation \(16 prompts\) \.\.\.",
        r"test generation \(16 prompts\): test accuracy \d\.\d{3} \(\d+\.\d s\)",
        r"forgetting after training \(2 texts\) \.\.\.",
        r"forgetting after training \(2 texts\): forgetting [+-]\d\.\d{4} \(\d+\.\d s\)",
    ]
    assert len(lines) == len(expected), err
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(f"run: {pattern}", line), line
    assert "train:" not in err  # no bar off a terminal
    # stdout is still the one JSON line that scripts parse
    (summary_line,) = out.splitlines()
    summary = json.loads(summary_line)
    assert summary["status"] == "success" and set(summary) == {
        "experiment",
        "status",
        "test accuracy",
        "forgetting",
        "train time",
        "result",
    }
    # peft's use of a deprecated transformers property is not the user's business
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    # the progress file ends at the last phase
    assert read_progress(progress_file)["phase"] == "forgetting after training (2 texts)"


def steps_seen(path: Path) -> list[str]:
    """What a sweep reading the progress file would see after each step of a 4-step run."""
    progress = RunProgress(stream=io.StringIO(), interactive=False, progress_file=path)
    seen = []
    for step in progress.steps(4, eval_every=2):
        progress.step_done(step, loss=1.0)
        seen.append(describe(read_progress(path)))
        if step == 2:
            progress.evaluating(step, prompts=8)
            seen.append(describe(read_progress(path)))
            progress.evaluated(
                {"step": 2, "valid accuracy": 0.5, "train loss": 1.0, "train time": 1.0, "eval time": 1.0},
                max_steps=4,
                eval_every=2,
            )
    with progress.phase("test generation (16 prompts)"):
        seen.append(describe(read_progress(path)))
    return seen


def test_progress_file_follows_phase_step_and_validation(tmp_path, monkeypatch):
    monkeypatch.setattr("peftbench.progress.WRITE_EVERY_S", 0.0)
    assert steps_seen(tmp_path / "p.json") == [
        "step 1/4",
        "step 2/4",
        "step 2/4 (validating)",
        "step 3/4",
        "step 4/4",
        "test generation (16 prompts)",
    ]
    # steps are written at most every WRITE_EVERY_S; the start of training, validation and phases at once
    monkeypatch.setattr("peftbench.progress.WRITE_EVERY_S", 3600.0)
    assert steps_seen(tmp_path / "q.json") == [
        "step 0/4",
        "step 0/4",
        "step 2/4 (validating)",
        "step 2/4",
        "step 2/4",
        "test generation (16 prompts)",
    ]


def test_on_a_terminal_training_draws_a_bar_with_the_loss_and_eta():
    stream = io.StringIO()
    progress = RunProgress(stream=stream, interactive=True)
    for step in progress.steps(4, eval_every=2):
        progress.step_done(step, loss=0.5)
        if step == 2:
            progress.evaluating(step, prompts=8)
            entry = {
                "step": 2,
                "valid accuracy": 0.25,
                "train loss": 0.5,
                "train time": 1.0,
                "eval time": 0.5,
            }
            progress.evaluated(entry, max_steps=4, eval_every=2)
    text = stream.getvalue()
    assert "train: 100%" in text and "4/4 [" in text and "loss=0.5000" in text
    assert "validating" in text  # shown while the evaluation runs
    # the evaluation line is printed above the bar, and no "validating ..." line duplicates the bar
    assert "run: step 2/4: valid accuracy 0.250, train loss 0.5000, 0.50 s/step, eval 0.5 s" in text
    assert "run: step 2: validating" not in text


def test_without_a_stream_argument_the_bar_follows_whether_stderr_is_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    assert RunProgress().interactive
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not RunProgress().interactive


def test_progress_writes_never_fail_a_run(tmp_path):
    write_progress(tmp_path / "missing" / "p.json", {"phase": "x"})  # e.g. a Ray node without the folder
    assert read_progress(tmp_path / "missing" / "p.json") is None
    (tmp_path / "half.json").write_text('{"pha')
    assert read_progress(tmp_path / "half.json") is None and describe(None) == "starting"
