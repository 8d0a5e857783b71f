"""Progress you can see: a run's phase and evaluation lines, its bar on a terminal, its progress file,
and the sweep's view of its running runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from peftbench.cli import main
from peftbench.progress import PROGRESS_FILE_ENV, RunProgress, describe, read_progress, write_progress
from peftbench.sweep.driver import RunReport, run_sweep
from peftbench.sweep.local import LocalBackend
from peftbench.sweep.pending import plan
from peftbench.sweep.view import SweepView, progress_path_for

# ---- one run -----------------------------------------------------------------------------------------


def test_a_run_off_a_terminal_says_each_phase_and_each_evaluation(task_dir, capsys, monkeypatch, tmp_path):
    progress_file = tmp_path / "run.progress.json"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress_file))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", str(task_dir / "experiments/lora/toy-rank4")]) == 0
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
        "train loss",
        "train+test time",
        "wall time",
        "result",
    }
    assert 0 <= summary["train+test time"] <= summary["wall time"]  # rounded to 0.1 s: 0.0 on the toy task
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


def test_on_a_terminal_a_run_draws_its_training_bar(task_dir, monkeypatch):
    """The issue's case, end to end: `peftbench run` with stderr on a (pseudo-)terminal."""
    import fcntl
    import pty
    import struct
    import termios

    tests = Path(__file__).resolve().parent
    monkeypatch.setenv(
        "PEFTBENCH_TASKS", "toytask=toyworld:ToyTask"
    )  # the subprocess cannot see the fixture's
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.delenv(PROGRESS_FILE_ENV, raising=False)
    leader, follower = pty.openpty()
    # a terminal 120 columns wide: tqdm draws nothing on one of 0 columns (a fresh pty's size)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    exp = task_dir / "experiments/lora/toy-rank4"
    cmd = [sys.executable, "-m", "peftbench", "run", str(exp)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # Linux: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    out, _ = proc.communicate(timeout=120)
    terminal = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, terminal
    assert "train: 100%" in terminal and "4/4 [" in terminal and "loss=" in terminal
    assert "run: step 2/4: valid accuracy" in terminal  # the evaluation line, above the bar
    assert "run: step 2: validating" not in terminal  # the bar says so instead
    assert json.loads(out.splitlines()[-1])["status"] == "success"


def test_progress_writes_never_fail_a_run(tmp_path):
    write_progress(tmp_path / "missing" / "p.json", {"phase": "x"})  # e.g. a Ray node without the folder
    assert read_progress(tmp_path / "missing" / "p.json") is None
    (tmp_path / "half.json").write_text('{"pha')
    assert read_progress(tmp_path / "half.json") is None and describe(None) == "starting"


# ---- the sweep ---------------------------------------------------------------------------------------


class StepsBackend:
    """Each run writes a progress file (as `peftbench run` does), then waits until the view shows it."""

    max_parallel = 2

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def execute(self, run, *, quick, log_path):
        log_path.parent.mkdir(parents=True, exist_ok=True)  # as the real backends do
        progress = RunProgress(
            stream=io.StringIO(), interactive=False, progress_file=progress_path_for(log_path)
        )
        for step in progress.steps(4, eval_every=2):
            progress.step_done(step, loss=1.0)
            if step == 2:
                progress.evaluating(step, prompts=8)
                break
        shown = f"sweep: {run.label}: step 2/4 (validating)"
        deadline = time.monotonic() + 30
        while shown not in self.stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        return RunReport(run, "success" if shown in self.stream.getvalue() else "failed", wall_time=1.0)

    def interrupt(self, *, hard):
        pass

    def close(self):
        pass


def test_sweep_off_a_terminal_prints_each_running_runs_step_and_each_end(task_dir):
    runs = plan(task_dir)
    stream = io.StringIO()
    view = SweepView(len(runs), stream=stream, interactive=False, every_s=0.0)
    reports, _ = run_sweep(runs, backend=StepsBackend(stream), quick=True, force=True, view=view)
    assert [r.status for r in reports] == ["success"] * len(runs)  # each saw its own step line
    lines = stream.getvalue().splitlines()
    ends = [line for line in lines if re.match(r"sweep: \d/2 ", line)]
    assert sorted(line[:11] for line in ends) == ["sweep: 1/2 ", "sweep: 2/2 "]
    assert sorted(line[11:] for line in ends) == sorted(f"{r.run.label}: success in 1 s" for r in reports)
    assert "\r" not in stream.getvalue()  # no bars in a log
    assert not list((task_dir / "logs").glob("*.progress.json"))  # removed when each run ends


def test_sweep_off_a_terminal_prints_running_runs_at_most_every_n_seconds(task_dir, tmp_path):
    [run, *_] = plan(task_dir)
    stream = io.StringIO()
    view = SweepView(1, stream=stream, interactive=False, every_s=3600.0)
    path = tmp_path / "p.json"
    write_progress(path, {"phase": "training", "step": 5, "max_steps": 10})
    view.started(run, path)
    view._last_status -= 3600  # an hour has passed
    view.refresh()
    view.refresh()  # right after: nothing new
    assert stream.getvalue().splitlines() == [f"sweep: {run.label}: step 5/10"]


def test_sweep_on_a_terminal_draws_a_bar_per_running_run(task_dir, tmp_path):
    [run, *_] = plan(task_dir)
    stream = io.StringIO()
    view = SweepView(3, stream=stream, interactive=True)
    path = tmp_path / "p.json"
    view.started(run, path)
    view.refresh()
    assert f"{run.label}: " in stream.getvalue() and "starting" in stream.getvalue()
    write_progress(path, {"phase": "training", "step": 120, "max_steps": 150, "detail": "validating"})
    view.refresh()
    assert "120/150" in stream.getvalue() and "validating" in stream.getvalue()
    write_progress(path, {"phase": "test generation (500 prompts)", "step": 150, "max_steps": 150})
    view.refresh()
    assert "test generation (500 prompts)" in stream.getvalue()
    view.stopped(run)
    view.refresh()
    assert view._run_bars == {}  # its bar is gone with it
    view.close()


CHILD = """
import json, os, pathlib, sys, time
from peftbench.progress import RunProgress
progress = RunProgress()
for step in progress.steps(3, eval_every=2):
    progress.step_done(step, loss=1.0)
    if step == 2:
        progress.evaluating(step, prompts=1)
        break
go = pathlib.Path(sys.argv[1])
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"status": "success", "result": ""}))
"""


def test_local_backend_hands_each_run_its_progress_file(task_dir, tmp_path, monkeypatch):
    """A real subprocess finds its progress file in its environment; the sweep shows its step."""
    runs = plan(task_dir, filters="lora/toy-rank4")
    go = tmp_path / "go"
    backend = LocalBackend(jobs=1)
    monkeypatch.setattr(backend, "command", lambda run, quick: [sys.executable, "-c", CHILD, str(go)])
    stream = io.StringIO()
    view = SweepView(1, stream=stream, interactive=False, every_s=0.0)
    shown = f"sweep: {runs[0].label}: step 2/3 (validating)"

    def release() -> None:
        deadline = time.monotonic() + 60
        while shown not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()

    watcher = threading.Thread(target=release)
    watcher.start()
    reports, _ = run_sweep(runs, backend=backend, quick=False, force=True, view=view)
    watcher.join()
    assert shown in stream.getvalue()
    assert [r.status for r in reports] == ["success"]


def test_a_ray_worker_writes_its_progress_file_at_the_path_it_is_given(task_dir, monkeypatch, tmp_path):
    import torch

    from peftbench.experiment import config_hashes
    from peftbench.sweep.ray_backend import run_remote

    [run] = plan(task_dir, filters="lora/toy-rank4")
    seen = {}

    def execute(experiment, **kwargs):
        seen["file"] = os.environ.get(PROGRESS_FILE_ENV)
        raise RuntimeError("stop before training")

    monkeypatch.setattr("peftbench.run.execute", execute)
    monkeypatch.setenv(PROGRESS_FILE_ENV, "not this one")  # restored after the test
    threads = torch.get_num_threads()
    try:
        with pytest.raises(RuntimeError, match="stop before training"):
            run_remote(
                experiment_path=str(run.experiment.path),
                task_dir=str(task_dir),
                seed=0,
                quick=True,
                threads=1,
                hashes=config_hashes(run.experiment),
                progress_file=str(tmp_path / "p.json"),
            )
    finally:
        torch.set_num_threads(threads)
    assert seen["file"] == str(tmp_path / "p.json")
