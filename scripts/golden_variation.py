"""How much the golden test's quick run varies, to set its tolerance (tests/test_golden.py, docs/lint.md).

Runs the quick run in separate processes: pinned twice with OMP_NUM_THREADS unset, pinned with it at 1
and 2, and unpinned at 1 and 2 threads for reference; then prints, per numeric key, the largest absolute
and relative difference within each group, and how many test answers differ.

    python scripts/golden_variation.py [--jobs 2] [--save DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

GOLDEN_TEST = Path(__file__).resolve().parent.parent / "tests" / "test_golden.py"

# name: (pinned, OMP_NUM_THREADS or None for unset)
RUNS = {
    "pinned, unset": (True, None),
    "pinned, unset, again": (True, None),
    "pinned, 1": (True, "1"),
    "pinned, 2": (True, "2"),
    "unpinned, 1": (False, "1"),
    "unpinned, 2": (False, "2"),
}
GROUPS = {
    "pinned: repeated and OMP_NUM_THREADS unset, 1, 2": [
        "pinned, unset",
        "pinned, unset, again",
        "pinned, 1",
        "pinned, 2",
    ],
    "unpinned: 1 vs 2 threads": ["unpinned, 1", "unpinned, 2"],
    "1 thread: pinned vs unpinned code paths (AVX2 vs the CPU's own)": ["pinned, 1", "unpinned, 1"],
}


def quick_run(pinned: bool, omp_threads: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp_threads is not None:
        env["OMP_NUM_THREADS"] = omp_threads
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        args = [sys.executable, str(GOLDEN_TEST), "--run-to", str(out)] + ([] if pinned else ["--unpinned"])
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(out.read_text(encoding="utf-8"))


def flat_metrics(run: dict[str, Any]) -> dict[str, Any]:
    """`metrics[i].key` -> value, plus test_correct."""
    flat = {f"metrics[{i}].{k}": v for i, entry in enumerate(run["metrics"]) for k, v in entry.items()}
    return {**flat, "test_correct": run["test_correct"]}


def spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per numeric column: the largest absolute difference between runs, and that relative to the value."""
    floats = frame.select_dtypes("number")
    absolute = floats.max() - floats.min()
    return pd.DataFrame({"max abs diff": absolute, "max rel diff": absolute / floats.abs().max()})


def differing_answers(answers: pd.Series) -> int:
    """How many test items are answered correctly in some runs and wrongly in others."""
    first = answers.iloc[0]
    return sum(any(a[i] != first[i] for a in answers) for i in range(len(first)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each is pinned to 1 or 2 threads)")
    parser.add_argument("--save", type=Path, metavar="DIR", help="also write each run's metrics to DIR")
    args = parser.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = dict(zip(RUNS, pool.map(lambda settings: quick_run(*settings), RUNS.values()), strict=True))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for name, run in runs.items():
            (args.save / f"{name.replace(', ', '-')}.json").write_text(json.dumps(run, indent=2) + "\n")
    frame = pd.DataFrame({name: flat_metrics(run) for name, run in runs.items()}).T
    frame = frame.infer_objects()
    with pd.option_context("display.width", 110, "display.float_format", "{:.3g}".format):
        for group, names in GROUPS.items():
            print(f"\n{group}")
            print(spread(frame.loc[names]).to_string())
            print(f"test answers that differ: {differing_answers(frame.loc[names, 'test_correct'])}")


if __name__ == "__main__":
    main()
