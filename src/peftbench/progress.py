"""What a run is doing while it does it: phase lines and a step bar on stderr, and a small JSON file
that a sweep reads to show its running runs.

On a terminal, training shows a tqdm bar with its ETA. Elsewhere (a sweep's log, CI) a bar's carriage
returns would pile up into one endless line, so there each evaluation prints one line instead. Every
long phase (loading, generation, forgetting) prints a line when it starts, saying what it does, and one
when it ends, with its time: complete lines, so that other tools' bars (transformers' "Loading
weights", the generation bar) cannot overwrite them. A sweep sets PEFTBENCH_PROGRESS_FILE; the run then
keeps that file up to date with its phase and step (`peftbench.sweep.view` shows it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from peftbench.files import atomic_write_text
from peftbench.tasks.base import STEP, STEP_EVAL_TIME, STEP_TRAIN_LOSS, STEP_TRAIN_TIME, VALID_ACCURACY

PROGRESS_FILE_ENV = "PEFTBENCH_PROGRESS_FILE"
# during training the progress file is rewritten at most this often: a sweep polls it about twice a
# second, and a step can take a millisecond
WRITE_EVERY_S = 1.0


@dataclass
class PhaseNote:
    """What a phase found, for its closing line (e.g. "test accuracy 0.123"); empty: "done"."""

    text: str = ""


class RunProgress:
    """Progress of one run for people (stream) and for a sweep (the progress file, if any)."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        progress_file: str | Path | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        if progress_file is None:
            progress_file = os.environ.get(PROGRESS_FILE_ENV) or None
        self.progress_file = Path(progress_file) if progress_file else None
        self.state: dict[str, Any] = {"phase": "starting", "step": 0, "max_steps": None}
        self._bar: tqdm | None = None
        self._postfix = ""  # the bar's text after the count: the last step's loss
        self._last_write = -math.inf

    # ---- lines for people --------------------------------------------------------------------------

    def line(self, text: str) -> None:
        """One line on the stream; above the training bar when there is one."""
        if self._bar is not None:
            self._bar.write(f"run: {text}", file=self.stream)
        else:
            print(f"run: {text}", file=self.stream, flush=True)

    @contextmanager
    def phase(self, what: str) -> Iterator[PhaseNote]:
        """Say that `what` starts, and when it ends, how long it took and what the caller noted."""
        self._update(phase=what, detail=None)
        self.line(f"{what} ...")
        note = PhaseNote()
        tic = time.perf_counter()
        yield note
        self.line(f"{what}: {note.text or 'done'} ({time.perf_counter() - tic:.1f} s)")

    # ---- training ----------------------------------------------------------------------------------

    def steps(self, max_steps: int, *, eval_every: int) -> Iterator[int]:
        """The step numbers 1..max_steps, drawn as a bar with an ETA on a terminal, between a line that
        says training starts and one with its time (evaluations included) when it ends."""
        with self.phase(f"training {max_steps} steps, validating every {eval_every}"):
            self._update(phase="training", step=0, max_steps=max_steps)
            # counted by step_done, not by iterating: the bar then shows the steps finished, also while
            # a step's evaluation runs
            self._bar = tqdm(
                total=max_steps, desc="train", unit="step", disable=not self.interactive, file=self.stream
            )
            try:
                yield from range(1, max_steps + 1)
            finally:
                self._bar.close()
                self._bar = None

    def step_done(self, step: int, *, loss: float) -> None:
        self._postfix = f"loss={loss:.4f}"
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix, refresh=False)
            self._bar.update()
        self._update(step=step, throttle=True)

    def evaluating(self, step: int, *, prompts: int) -> None:
        """Validation starts: the bar says so on a terminal (the generation bar shows below it), a line
        elsewhere, since validation can take minutes."""
        if self.interactive and self._bar is not None:
            self._bar.set_postfix_str("validating", refresh=True)
        else:
            self.line(f"step {step}: validating ({prompts} prompts) ...")
        self._update(step=step, detail="validating")

    def evaluated(self, entry: dict[str, Any], *, max_steps: int, eval_every: int) -> None:
        """One line per evaluation: its numbers, the time per step, and the time left."""
        step = entry[STEP]
        per_step = entry[STEP_TRAIN_TIME.key] / eval_every
        evals_left = max_steps // eval_every - step // eval_every
        left = (max_steps - step) * per_step + evals_left * entry[STEP_EVAL_TIME.key]
        self.line(
            f"step {step}/{max_steps}: {VALID_ACCURACY.key} {entry[VALID_ACCURACY.key]:.3f}, "
            f"{STEP_TRAIN_LOSS.key} {entry[STEP_TRAIN_LOSS.key]:.4f}, {per_step:.2f} s/step, "
            f"eval {entry[STEP_EVAL_TIME.key]:.1f} s, training left ~{tqdm.format_interval(left)}"
        )
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix)
        self._update(detail=None)

    # ---- the progress file -------------------------------------------------------------------------

    def _update(self, *, throttle: bool = False, **changes: Any) -> None:
        self.state.update(changes)
        if self.progress_file is None:
            return
        now = time.monotonic()
        if throttle and now - self._last_write < WRITE_EVERY_S:
            return
        self._last_write = now
        write_progress(self.progress_file, self.state)


def write_progress(path: Path, state: dict[str, Any]) -> None:
    """Replace the progress file at once (a reader never sees half of it). Best effort: the folder may
    be missing on a Ray node that does not share the driver's filesystem, and progress is never worth
    failing a run for."""
    if not path.parent.is_dir():  # never create the folder: the sweep that reads it made it
        return
    with contextlib.suppress(OSError):
        atomic_write_text(path, json.dumps({**state, "updated": time.time()}))


def read_progress(path: Path) -> dict[str, Any] | None:
    """The state a run last wrote, or None (not written yet, or the run is on another machine)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def describe(state: dict[str, Any] | None) -> str:
    """A running run's state in a few words: "step 120/150 (validating)", "test generation", ..."""
    if not state:
        return "starting"
    if state.get("phase") == "training" and state.get("max_steps"):
        text = f"step {state.get('step', 0)}/{state['max_steps']}"
        return f"{text} ({state['detail']})" if state.get("detail") else text
    return str(state.get("phase", "starting"))
