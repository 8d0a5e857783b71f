"""What a sweep shows while it runs: the runs finished, and each running run's phase and step.

Each run keeps a small progress file up to date (`peftbench.progress`); the sweep reads those files.
On a terminal, a bar counts finished runs and one bar per running run follows its steps, with an ETA.
Elsewhere (a log, CI) bars would pile up in one line, so a line says each run that ends, and, at most
every STATUS_EVERY_S seconds, one line per running run says where it is.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from peftbench.progress import describe, read_progress
from peftbench.sweep.pending import Run

if TYPE_CHECKING:
    from peftbench.sweep.driver import RunReport

STATUS_EVERY_S = 60.0
PHASE_FORMAT = "{desc} [{elapsed}]"  # a running run's bar outside training: what it does, for how long


def progress_path_for(log_path: Path) -> Path:
    """The run's progress file, beside its log."""
    return log_path.with_suffix(".progress.json")


class SweepView:
    """Thread-safe `started`/`stopped` (from the workers); the rest from the sweep's main thread."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        every_s: float = STATUS_EVERY_S,
        enabled: bool = True,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.enabled = enabled
        self.total = total
        self.every_s = every_s
        self.done = 0
        self._running: dict[Run, Path] = {}
        self._lock = threading.Lock()
        self._run_bars: dict[Run, tqdm] = {}
        self._last_status = time.monotonic()
        self._bar = tqdm(
            total=total,
            unit="run",
            desc="sweep",
            file=self.stream,
            disable=not (enabled and self.interactive),
        )

    def started(self, run: Run, progress_file: Path) -> None:
        with self._lock:
            self._running[run] = progress_file

    def stopped(self, run: Run) -> None:
        with self._lock:
            self._running.pop(run, None)

    def finished(self, report: RunReport) -> None:
        self.done += 1
        name = report.run.experiment.experiment_name
        self._bar.set_postfix_str(f"{name}: {report.status}", refresh=False)
        self._bar.update()
        if self.enabled and not self.interactive:
            took = "" if report.wall_time is None else f" in {report.wall_time:.0f} s"
            self.write(f"sweep: {self.done}/{self.total} {report.run.label}: {report.status}{took}")

    def refresh(self) -> None:
        """Show each running run's state: its bar on a terminal, else a line now and then."""
        if not self.enabled:
            return
        with self._lock:
            running = dict(self._running)
        states = {run: read_progress(path) for run, path in running.items()}
        if self.interactive:
            self._draw(states)
        elif states and time.monotonic() - self._last_status >= self.every_s:
            self._last_status = time.monotonic()
            for run, state in states.items():
                self.write(f"sweep: {run.label}: {describe(state)}")

    def _draw(self, states: dict[Run, dict | None]) -> None:
        for run in [r for r in self._run_bars if r not in states]:
            self._run_bars.pop(run).close()
        for run, state in states.items():
            bar = self._run_bars.get(run)
            if bar is None:
                bar = self._run_bars[run] = tqdm(
                    desc=run.label, unit="step", leave=False, file=self.stream, bar_format=PHASE_FORMAT
                )
            state = state or {}
            if state.get("max_steps") and state.get("phase") == "training":
                if bar.total != state["max_steps"]:
                    # training starts: the rate and ETA count from here, not from the run's loading
                    bar.reset(total=state["max_steps"])
                    bar.bar_format = None  # tqdm's own: count, bar, rate, ETA
                    bar.set_description_str(run.label, refresh=False)
                bar.n = state.get("step", 0)
                bar.set_postfix_str(state.get("detail") or "", refresh=False)
            else:  # loading, test generation, ...: no count to show
                bar.bar_format = PHASE_FORMAT
                bar.set_description_str(f"{run.label}: {describe(state)}", refresh=False)
            bar.refresh()

    def write(self, message: str) -> None:
        self._bar.write(message, file=self.stream)

    def close(self) -> None:
        for bar in self._run_bars.values():
            bar.close()
        self._run_bars.clear()
        self._bar.close()
