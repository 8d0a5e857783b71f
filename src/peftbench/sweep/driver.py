"""The sweep loop shared by the backends: claim each run's lock, run it, show progress, survive Ctrl-C.

A backend runs one run and reports how it went; it never raises for a failed run, so one failure
does not stop the others. The first Ctrl-C (or SIGTERM) stops new runs and asks the running ones to
cancel, which makes them write their results to cancelled_results/; a second one kills them.
"""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from peftbench.analysis.variant import labelled
from peftbench.results import TrainStatus
from peftbench.sweep.locks import claimed
from peftbench.sweep.pending import Run, run_state
from peftbench.sweep.view import SweepView, progress_path_for
from peftbench.tasks.base import TEST_ACCURACY

LOG_DIR = "logs"  # inside the task folder; to be git-ignored

# a sweep's run statuses beyond a result's (TrainStatus): the run refused its configs, or died
# without writing a result
BAD_INPUT = "bad input"
CRASHED = "crashed"
# statuses that make the sweep exit with 1
FAILED = (TrainStatus.FAILED, BAD_INPUT, CRASHED)


@dataclass
class RunReport:
    """How one run of a sweep went.

    status: success | failed (the run ended canceled or failed, its result is in cancelled_results/)
    | bad input (the run refused its configs) | crashed (died without a result, e.g. killed for memory)
    | canceled (by Ctrl-C) | locked (another sweep holds it) | done elsewhere (up to date by the time
    its lock was free) | not started (Ctrl-C came first).
    """

    run: Run
    status: str
    wall_time: float | None = None
    test_accuracy: float | None = None
    result: Path | None = None
    log: Path | None = None
    message: str = ""


class Backend(Protocol):
    max_parallel: int  # runs in flight at once

    def execute(self, run: Run, *, quick: bool, log_path: Path) -> RunReport:
        """Run one run to its end; never raise for a failed run."""

    def interrupt(self, *, hard: bool) -> None:
        """Stop starting runs; ask running ones to cancel (hard: kill them)."""

    def close(self) -> None: ...


def log_path_for(run: Run) -> Path:
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    return run.experiment.task_dir / LOG_DIR / f"{run.stem}--{stamp}.log"


def run_sweep(
    runs: list[Run],
    *,
    backend: Backend,
    quick: bool,
    force: bool,
    include_temporary: bool = False,
    progress: bool = True,
    view: SweepView | None = None,
) -> tuple[list[RunReport], bool]:
    """Run `runs` on `backend`; return one report per run (in the order given) and whether interrupted.
    `view` shows the sweep as it goes (default: on stderr, unless not `progress`)."""
    stop = threading.Event()
    view = view or SweepView(len(runs), enabled=progress)

    def one(run: Run) -> RunReport:
        with claimed(run) as mine:
            if not mine:
                return RunReport(run, "locked", message="another sweep is running it")
            if stop.is_set():
                return RunReport(run, "not started")
            # another sweep may have finished it while we waited for a free slot
            if not force and not run_state(run, include_temporary=include_temporary).pending:
                return RunReport(run, "done elsewhere", result=run.result_path)
            log_path = log_path_for(run)
            progress_file = progress_path_for(log_path)
            view.started(run, progress_file)
            try:
                return backend.execute(run, quick=quick, log_path=log_path)
            finally:
                view.stopped(run)
                progress_file.unlink(missing_ok=True)

    interrupts = 0
    pool = ThreadPoolExecutor(max_workers=max(1, min(backend.max_parallel, len(runs))))
    try:
        futures = [pool.submit(one, run) for run in runs]
        waiting: set[Future[RunReport]] = set(futures)
        while waiting:
            try:
                done, waiting = wait(waiting, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    view.finished(fut.result())
                view.refresh()
            except KeyboardInterrupt:
                interrupts += 1
                stop.set()
                hard = interrupts > 1
                view.write(
                    "sweep: interrupted; killing the running runs"
                    if hard
                    else "sweep: interrupted; cancelling the running runs (they write their results to "
                    "cancelled_results/); Ctrl-C again to kill them"
                )
                backend.interrupt(hard=hard)
        reports = [fut.result() for fut in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        view.close()
        backend.close()
    return reports, interrupts > 0


def summary_table(reports: list[RunReport], *, quick: bool = False) -> str:
    """Experiment, seed, status, test accuracy, wall time: one row per run; quick runs labelled as the
    results table labels them, so that their accuracy is not read as the experiment's."""
    rows = [
        {
            "experiment": labelled(r.run.experiment.experiment_name, "quick" if quick else ""),
            "seed": str(r.run.seed),
            "status": r.status,
            TEST_ACCURACY.key: "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}",
            "wall time (s)": "" if r.wall_time is None else f"{r.wall_time:.1f}",
            "note": _note(r),
        }
        for r in reports
    ]
    return text_table(rows)


def _note(report: RunReport) -> str:
    """The first line of the message, paths relative to the task folder, cut to fit a terminal."""
    if not report.message:
        return ""
    line = report.message.splitlines()[0].replace(f"{report.run.experiment.task_dir}/", "")
    return line if len(line) <= 100 else line[:99] + "…"


def text_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table with text columns left-aligned (pandas right-aligns them)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    widths = {c: int(df[c].astype(str).str.len().max()) for c in df.columns}
    formatters = {
        c: (lambda w: lambda v: f"{v!s:<{w}}")(widths[c])
        for c in df.columns
        if not pd.api.types.is_numeric_dtype(df[c])
    }
    text = df.to_string(index=False, justify="left", formatters=formatters)
    return "\n".join(line.rstrip() for line in text.splitlines())


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
