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


def private_dir(path: Path) -> Path:
    """Create `path` with a `.gitignore` of `*` inside (as pytest's cache does).

    Untracked files make the checkout dirty, and runs on a dirty checkout are never main runs: the
    sweep's own logs and locks must not turn its runs into temporary ones, whatever the project's
    .gitignore says.
    """
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by peftbench sweep\n*\n")
    return path


@contextmanager
def claimed(run: Run) -> Iterator[bool]:
    """Yield True while this process holds the run's lock, False (at once) when another holds it.

    The OS releases the lock when its holder dies, so a crashed sweep leaves no stale lock behind.
    """
    path = lock_path(run)
    private_dir(path.parent)
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
