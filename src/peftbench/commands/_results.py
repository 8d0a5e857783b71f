"""What the commands that read result folders share: loading them and reporting unreadable files."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def load_reporting_warnings(paths: Iterable[str | Path], *, include_temporary: bool) -> Any:
    """`aggregate.load_results`, with one stderr line per file that was skipped and per
    value that is NaN or infinite."""
    from peftbench.analysis.aggregate import load_results

    loaded = load_results(paths, include_temporary=include_temporary)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in loaded.not_finite:
        print(f"note: {note}", file=sys.stderr)
    return loaded
