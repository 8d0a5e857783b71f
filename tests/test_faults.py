"""Faults a user or a machine causes: signals at each phase of a run, a sweep killed with kill -9.

Each case runs `peftbench` in a subprocess on the toy task. To hit a phase for sure, the child holds
at one function (a `sitecustomize` that the test puts on the child's PYTHONPATH wraps it): it writes a
marker file with its pid, sleeps, then goes on. The test signals once the marker is there.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from peftbench.analysis.aggregate import load_results
from peftbench.progress import RunProgress
from peftbench.results import load_result
from peftbench.signals import Cancellation, Interrupted
from peftbench.sweep.locks import claimed
from peftbench.sweep.pending import plan, run_state

TESTS = Path(__file__).resolve().parent
RECORD_BOUND_S = 20.0  # generous: the measured time is a few seconds on a loaded 2-core machine

# Wraps the function named in PEFTBENCH_TEST_HOLD ("module:qualname|nth call|seconds|marker file").
SITECUSTOMIZE = textwrap.dedent(
    """
    import importlib, os, sys, time

    def _hold():
        spec = os.environ.get("PEFTBENCH_TEST_HOLD")
        if not spec:
            return
        target, nth, seconds, marker = spec.split("|")
        module_name, qualname = target.split(":")
        *owner_path, attr = qualname.split(".")
        owner = importlib.import_module(module_name)
        for name in owner_path:
            owner = getattr(owner, name)
        original = getattr(owner, attr)
        calls = [0]

        def held(*args, **kwargs):
            calls[0] += 1
            if calls[0] == int(nth):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(float(seconds))
            return original(*args, **kwargs)

        setattr(owner, attr, held)

    _hold()
    """
)


@pytest.fixture
def child_env(tmp_path, monkeypatch) -> Path:
    """Environment for `peftbench` subprocesses on the toy task; returns the hold's marker path."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PEFTBENCH_TASKS", "toytask=toyworld:ToyTask")
    paths = [str(hooks), str(TESTS), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "held.marker"


def hold(monkeypatch, marker: Path, target: str, *, nth: int = 1, seconds: float = 120) -> None:
    monkeypatch.setenv("PEFTBENCH_TEST_HOLD", f"{target}|{nth}|{seconds}|{marker}")


def wait_for(condition, *, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the child ended (exit {proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s")


def cancelled(task_dir: Path) -> list[Path]:
    return sorted((task_dir / "cancelled_results").glob("*.json"))


def others(task_dir: Path) -> list[Path]:
    return [*(task_dir / "results").glob("*.json"), *(task_dir / "temporary_results").glob("*.json")]


def raise_signal(sig: int) -> None:
    """Send `sig` to this process and let Python run its handler before returning."""
    os.kill(os.getpid(), sig)
    signal.sigtimedwait([], 0.2)  # handlers run between bytecodes; this gives them the chance


def test_cancellation_names_the_signal_and_phase_and_ignores_a_second_signal():
    progress = RunProgress(stream=io.StringIO(), interactive=False)
    before = signal.getsignal(signal.SIGTERM)
    with Cancellation() as cancel:
        raise_signal(signal.SIGTERM)  # before watch: only noted
        with pytest.raises(Interrupted, match=r"^terminated by SIGTERM during start-up \(imports\)$"):
            cancel.watch(progress)
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    with Cancellation() as cancel:
        cancel.watch(progress)
        with (
            pytest.raises(Interrupted, match="SIGINT during loading the model"),
            progress.phase("loading the model"),
        ):
            raise_signal(signal.SIGINT)
        cancel.defer("writing the result")
        raise_signal(signal.SIGTERM)  # a second signal must not interrupt the writing
        assert (cancel.signum, cancel.exit_code) == (signal.SIGINT, 130)


# (function the child holds at, which call, seconds, the phase named in the record)
PHASES = {
    # only noted during imports; the run raises once they are done, so the hold is short
    "imports": ("peftbench.experiment:load_peft_config", 1, 3, "start-up (imports)"),
    "data loading": ("toyworld:ToyTask.load_data", 1, 120, "loading the toytask data"),
    "model loading": ("peftbench.run:_load_base_model", 1, 120, "loading the base model base_model"),
    "forgetting baseline": ("peftbench.train:forgetting_loss", 1, 120, "forgetting baseline (2 texts)"),
    "training": ("peftbench.train:collate", 1, 120, "training (step 0 of 4)"),
    # validation at steps 2 and 4, then the test
    "test generation": ("peftbench.train:evaluate_accuracy", 3, 120, "test generation (16 prompts)"),
    "forgetting after": ("peftbench.train:forgetting_loss", 2, 120, "forgetting after training (2 texts)"),
    # only noted while the record is built; it is then filed as cancelled
    "writing": ("peftbench.run:_record", 1, 3, "writing the result"),
}


@pytest.mark.parametrize(
    ("phase", "sig"),
    [(phase, signal.SIGINT if i % 2 else signal.SIGTERM) for i, phase in enumerate(PHASES)],
)
def test_a_signal_at_any_phase_leaves_one_cancelled_record_naming_it(
    task_dir, child_env, monkeypatch, phase, sig
):
    target, nth, seconds, named = PHASES[phase]
    hold(monkeypatch, child_env, target, nth=nth, seconds=seconds)
    cmd = [sys.executable, "-m", "peftbench", "run", str(task_dir / "experiments/lora/toy-rank4")]
    # SIGINT ignored, as in a shell's background job: the child inherits that, and still records it
    with open(task_dir.parent / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        try:
            wait_for(child_env.exists, timeout=120, what=f"hold in {phase}", proc=proc)
            proc.send_signal(sig)
            tic = time.monotonic()
            [path] = wait_for(lambda: cancelled(task_dir), timeout=60, what="cancelled record", proc=None)
            took = time.monotonic() - tic
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    log = (task_dir.parent / "stderr.txt").read_text()
    print(f"{phase}: record {took:.1f} s after {sig.name}")
    assert took < RECORD_BOUND_S
    assert proc.returncode == 128 + sig, log
    data = load_result(path)
    assert data["train_info"]["status"] == "canceled"
    assert data["run_info"]["error_msg"] == f"terminated by {sig.name} during {named}", log
    assert data["run_info"]["experiment_name"] == "lora/toy-rank4"
    assert data["run_info"]["train_config"]["max_steps"] == 4
    assert json.loads(out.splitlines()[-1])["error"] == data["run_info"]["error_msg"]
    assert cancelled(task_dir) == [path] and others(task_dir) == []  # exactly one record
    assert "Exception ignored" not in log and "Traceback" not in log
    if phase == "writing":  # everything was measured: the record keeps it
        assert data["train_info"]["metrics"][-1]["test accuracy"] is not None
    if phase in ("imports", "data loading", "model loading"):  # nothing measured yet
        assert data["train_info"]["metrics"] == [] and data["meta_info"]["model_info"] == {}
    # the readers count such a record as not successful, and neither crash nor warn
    loaded = load_results([path.parent])
    assert (loaded.n_not_success, loaded.warnings, len(loaded.table)) == (1, [], 0)


@pytest.mark.parametrize("kill", ["process group", "sweep process"])
def test_a_sweep_killed_with_sigkill_leaves_no_orphans_and_no_stale_lock(
    task_dir, child_env, monkeypatch, kill
):
    hold(monkeypatch, child_env, "peftbench.train:collate")  # the run holds at its first step
    cmd = [sys.executable, "-m", "peftbench", "sweep", str(task_dir), "--filter", "lora/*", "--jobs", "1"]
    sweep = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        run_pid = int(
            wait_for(
                lambda: child_env.exists() and child_env.read_text(),
                timeout=120,
                what="run holding in training",
                proc=sweep,
            )
        )
        assert run_pid != sweep.pid and os.getpgid(run_pid) != sweep.pid  # the run has its own session
        if kill == "process group":
            os.killpg(sweep.pid, signal.SIGKILL)
        else:
            sweep.kill()
        sweep.wait(timeout=10)
        tic = time.monotonic()
        wait_for(lambda: not alive(run_pid), timeout=60, what="end of the orphaned run")
        print(f"kill -9 of the {kill}: run gone {time.monotonic() - tic:.1f} s later")
        assert time.monotonic() - tic < RECORD_BOUND_S
    finally:
        if alive(sweep.pid):
            sweep.kill()
    # the run filed its record as cancelled; a rerun finds the run's lock free and the run pending
    [path] = cancelled(task_dir)
    assert load_result(path)["run_info"]["error_msg"].startswith("terminated by SIGTERM during training")
    assert others(task_dir) == []
    [run] = plan(task_dir, filters="lora/*")
    assert run_state(run).pending
    with claimed(run) as mine:
        assert mine


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
