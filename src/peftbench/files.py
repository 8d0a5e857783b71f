"""One home for the project's folder and file names, and its one atomic writer.

A task folder is `benchmarks/<task>/` with `default_training_params.json`, `experiments/<method>/<name>/`
(`adapter_config.json`, optionally `training_params.json`) and one folder per kind of result. Every
module that names these imports them from here; every file a reader may see while it is written
(results, reports, experiment configs, the token cache, progress files) goes through `atomic_write`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

ADAPTER_CONFIG = "adapter_config.json"
TRAINING_PARAMS = "training_params.json"
DEFAULT_PARAMS = "default_training_params.json"
QUICK_PARAMS = "quick_training_params.json"
EXPERIMENTS = "experiments"
RESULTS = "results"
TEMPORARY_RESULTS = "temporary_results"
CANCELLED_RESULTS = "cancelled_results"
# results of experiments that train with `reference_parity` (the reference's training choices, to
# measure our fixes): committed like results/, but never read with the task's main results
PARITY_RESULTS = "parity_results"
RESULT_DIRS = (RESULTS, TEMPORARY_RESULTS, CANCELLED_RESULTS, PARITY_RESULTS)
COMMITTED_RESULT_DIRS = (RESULTS, PARITY_RESULTS)
TUNING = "tuning"  # peftbench tune's studies and trial records


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write` on a temporary file beside `path`, fsync, then rename it to `path`: readers see the
    old file or the whole new one, never half of it, and a failed write leaves no file behind.

    The file gets the mode a plain open() would give (0666 less the umask, so 0644 under umask 022):
    mkstemp creates it 0600, but results and reports are meant to be shared and committed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _umask() -> int:
    # the only portable way to read the umask is to set it and set it back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
