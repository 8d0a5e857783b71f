"""Local backend: each run in its own `peftbench run` subprocess, at most N at once.

A subprocess per run isolates runs: a crash, a leak or an out-of-memory kill ends one run, not the
sweep. Each run gets cores // N torch threads so that parallel runs do not oversubscribe the CPU,
and, with --gpus-per-run, its own GPUs through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftbench.errors import BadInput
from peftbench.progress import PROGRESS_FILE_ENV
from peftbench.results import TrainStatus
from peftbench.sweep.driver import BAD_INPUT, CRASHED, RunReport
from peftbench.sweep.locks import private_dir
from peftbench.sweep.pending import Run
from peftbench.sweep.view import progress_path_for
from peftbench.tasks.base import TEST_ACCURACY

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# after a Ctrl-C, how long a run may take to write its cancelled result before it is killed
CANCEL_GRACE_S = 60.0


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: CUDA_VISIBLE_DEVICES if set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


class LocalBackend:
    def __init__(self, *, jobs: int, cpus_per_run: int | None = None, gpus_per_run: int = 0) -> None:
        if jobs < 1:
            raise BadInput(f"--jobs {jobs}: must be at least 1")
        self.gpu_pool: queue.Queue[list[str]] | None = None
        if gpus_per_run:
            gpus = visible_gpus()
            if len(gpus) < gpus_per_run:
                raise BadInput(f"--gpus-per-run {gpus_per_run}: this machine shows {len(gpus)} GPU(s)")
            slots = len(gpus) // gpus_per_run
            if jobs > slots:
                print(f"sweep: --jobs {jobs} lowered to {slots}: {len(gpus)} GPU(s) / {gpus_per_run} per run")
                jobs = slots
            self.gpu_pool = queue.Queue()
            for i in range(slots):
                self.gpu_pool.put(gpus[i * gpus_per_run : (i + 1) * gpus_per_run])
        self.max_parallel = jobs
        self.threads = cpus_per_run or max(1, available_cores() // jobs)
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self._stopping = False

    def describe(self) -> str:
        gpus = "" if self.gpu_pool is None else ", own GPUs per run"
        return f"local: {self.max_parallel} at once, {self.threads} thread(s) per run{gpus}"

    def command(self, run: Run, *, quick: bool) -> list[str]:
        cmd = [sys.executable, "-m", "peftbench", "run", str(run.experiment.path), "--seed", str(run.seed)]
        cmd += ["--threads", str(self.threads)]
        return [*cmd, "--quick"] if quick else cmd

    def execute(self, run: Run, *, quick: bool, log_path: Path) -> RunReport:
        if self._stopping:
            return RunReport(run, "not started")
        cmd = self.command(run, quick=quick)
        env = dict(os.environ)
        # BLAS/OpenMP pools outside torch's own setting follow the same budget
        env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        # the run keeps this file up to date with its phase and step, for the sweep's view
        env[PROGRESS_FILE_ENV] = str(progress_path_for(log_path))
        gpus = self.gpu_pool.get() if self.gpu_pool is not None else None
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        private_dir(log_path.parent)
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                log.write(f"$ {shlex.join(cmd)}\n")
                log.flush()
                with self._lock:
                    if self._stopping:
                        return RunReport(run, "not started")
                    # own session: a terminal's Ctrl-C reaches the sweep only, which then cancels each
                    # run once (a second SIGINT could interrupt a run while it writes its result)
                    try:
                        proc = subprocess.Popen(
                            cmd,
                            stdout=subprocess.PIPE,
                            stderr=log,
                            env=env,
                            text=True,
                            start_new_session=True,
                            preexec_fn=_die_with_parent_fn(),
                        )
                    except OSError as exc:  # e.g. out of process slots: this run fails, the sweep goes on
                        return RunReport(run, CRASHED, log=log_path, message=f"cannot start: {exc}")
                    self._procs.add(proc)
                tic = time.perf_counter()
                out, _ = proc.communicate()
                wall = time.perf_counter() - tic
                with self._lock:
                    self._procs.discard(proc)
                log.write(f"--- stdout ---\n{out}--- exit code {proc.returncode} after {wall:.1f} s ---\n")
        finally:
            if gpus is not None and self.gpu_pool is not None:
                self.gpu_pool.put(gpus)
        return self._report(run, rc=proc.returncode, stdout=out, wall=wall, log_path=log_path)

    def _report(self, run: Run, *, rc: int, stdout: str, wall: float, log_path: Path) -> RunReport:
        summary = _last_json_line(stdout)
        report = RunReport(run, CRASHED, wall_time=wall, log=log_path, message=f"exit code {rc}")
        if summary.get("result"):
            report.result = Path(summary["result"])
            report.test_accuracy = summary.get(TEST_ACCURACY.key)
        if rc == 0:
            report.status, report.message = TrainStatus.SUCCESS, ""
        elif rc in (1, 130, 143) and summary:  # 130, 143: cancelled by SIGINT, SIGTERM; record written
            report.status = TrainStatus.CANCELED if self._stopping else TrainStatus.FAILED
            report.message = summary.get("error", "")
        elif rc == 2:
            report.status, report.message = BAD_INPUT, _error_line(log_path)
        elif self._stopping and rc in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL):
            report.status = TrainStatus.CANCELED
        return report

    def interrupt(self, *, hard: bool) -> None:
        with self._lock:
            self._stopping = True
            procs = list(self._procs)
        for proc in procs:
            _signal_group(proc, signal.SIGKILL if hard else signal.SIGINT)
        if not hard:
            threading.Thread(target=self._kill_after_grace, args=(procs,), daemon=True).start()

    def _kill_after_grace(self, procs: list[subprocess.Popen[str]]) -> None:
        deadline = time.monotonic() + CANCEL_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)

    def close(self) -> None:
        pass


def _die_with_parent_fn() -> Callable[[], None] | None:
    """On Linux, a function for Popen's preexec_fn that has the child sent SIGTERM when the sweep dies.

    In its own session a run outlives a sweep killed by SIGKILL (of the sweep or of its process group),
    finishes, writes a result, and a rerun runs it again. PR_SET_PDEATHSIG ends it with the sweep
    however the sweep dies; SIGTERM rather than SIGKILL, so that the run still files its record as
    cancelled. The signal follows the death of the thread that started the child: here the sweep's
    worker thread, which waits for the child, so the two end together. libc is loaded here, in the
    parent: the child between fork and exec should do as little as possible (no dlopen).
    """
    if not sys.platform.startswith("linux"):
        return None
    return functools.partial(die_with_parent, os.getpid(), ctypes.CDLL(None, use_errno=True).prctl)


def die_with_parent(parent: int, prctl: Callable[..., int] | None = None) -> None:
    """In a child process: have it sent SIGTERM when `parent` (the process, or rather the thread, that
    started it) dies; exit at once if it already has. Linux only (elsewhere nothing happens). Also a
    process pool's initializer (peftbench tune's workers, which otherwise outlive a killed parent)."""
    if not sys.platform.startswith("linux"):
        return
    (prctl or ctypes.CDLL(None, use_errno=True).prctl)(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, sig)


def _last_json_line(stdout: str) -> dict[str, Any]:
    """The run's one-line JSON summary (the last JSON object on stdout), or {}."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def _error_line(log_path: Path) -> str:
    """The `peftbench run: error: ...` line that a refused run prints on stderr."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if "error:" in line]
    return errors[-1].split("error:", 1)[1].strip() if errors else ""
