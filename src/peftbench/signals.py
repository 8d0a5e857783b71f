"""SIGINT and SIGTERM as a run's cancellation: one message naming the signal and the run's phase.

Imported by `peftbench run` before anything heavy, so that a signal at any time after start-up is
caught. Until the run has its config and progress (`watch`), a signal is only noted: raising
KeyboardInterrupt inside an import can be swallowed ("Exception ignored ...") and leaves modules half
imported; the run raises it itself once the imports are done. While the record is written (`defer`),
a signal is noted too, so that it cannot interrupt the write; the run then files the record as
cancelled.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Protocol

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run's cancellation by a signal; a KeyboardInterrupt, so the training loop ends as canceled."""


class _Progress(Protocol):
    state: dict[str, Any]


class Cancellation:
    """Context manager: while inside, SIGINT and SIGTERM cancel the run (see the module docstring)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase = ""
        self._progress: _Progress | None = None
        self._deferred_phase: str | None = "start-up (imports)"
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Cancellation:
        # ValueError: not the main thread (e.g. a Ray worker thread): signals are left alone
        with contextlib.suppress(ValueError):
            # installed even where SIGINT was ignored: a shell starts background jobs with SIGINT
            # ignored, and their children inherit that, yet a run started so must still record a SIGINT
            self._previous = {sig: signal.signal(sig, self._handle) for sig in HANDLED}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            # None: a handler installed from C, which Python cannot reinstall; the default is closest
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    def watch(self, progress: _Progress) -> None:
        """From now on a signal raises Interrupted at once, naming the progress's phase."""
        self._progress, self._deferred_phase = progress, None
        self.check()

    def defer(self, phase: str) -> None:
        """From now on a signal is only noted, as happening during `phase`."""
        self._deferred_phase = phase

    def check(self) -> None:
        """Raise Interrupted if a signal was noted (and not raised, or raised and swallowed)."""
        if self.signum is not None:
            raise Interrupted(self.message)

    @property
    def message(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name} during {self.phase}" if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130, 143)."""
        return 128 + (self.signum or 0)

    def _current_phase(self) -> str:
        if self._deferred_phase is not None or self._progress is None:
            return self._deferred_phase or ""
        state = self._progress.state
        if state.get("phase") == "training":
            return f"training (step {state.get('step', 0)} of {state.get('max_steps')})"
        return "start-up" if state.get("phase") == "starting" else str(state.get("phase"))

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return  # cancelling already: a second signal must not interrupt the record being written
        self.signum, self.phase = signum, self._current_phase()
        if self._deferred_phase is None:
            raise Interrupted(self.message)
