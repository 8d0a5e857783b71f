"""One lock file per run (experiment and seed), so that two sweeps never run the same run at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from peftbench.sweep.pending import Run

LOCK_DIR = ".locks"  # inside the task folder; to be git-ignored


def lock_path(run: Run) -> Path:
    return run.experiment.task_dir / LOCK_DIR / f"{run.stem}.lock"


@contextmanager
def claimed(run: Run) -> Iterator[bool]:
    """Yield True while this process holds the run's lock, False (at once) when another holds it.

    The OS releases the lock when its holder dies, so a crashed sweep leaves no stale lock behind.
    """
    path = lock_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    # thread_local=False: the lock belongs to the sweep, not to the worker thread that took it
    lock = FileLock(path, thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
