"""Run foreign adapter configs (the reference suite's MetaMathQA experiments, say) on the embedded model.

Every `<method>/<name>/adapter_config.json` under FOLDER (with its training_params.json) is copied into a
temporary copy of a task folder (tinymath by default) and run there with `peftbench run --quick` and a few
steps, each in its own process with a timeout. The table says, per config, whether it ran, failed with a
clean one-line error, or ended in a traceback (or a timeout), and the seconds to the first error line.
The promise checked: 0 tracebacks (and no crash or timeout), and an error within 15 s.

    python scripts/run_reference_configs.py ../shared/reference/MetaMathQA/experiments [--limit 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
TASK_FILES = ("default_training_params.json", "quick_training_params.json")
# the embedded model, a few steps and a tiny evaluation: the point is whether a config runs, not how well
OVERRIDES = ('model_id="base_model"', "max_steps=2", "eval_steps=2", "generation_kwargs.max_new_tokens=2")
ERROR_TARGET_S = 15.0


def find_configs(folder: Path) -> list[Path]:
    """Experiment folders `<method>/<name>` under `folder` that hold an adapter_config.json."""
    return sorted(p.parent for p in folder.glob("*/*/adapter_config.json"))


def make_task_copy(task_dir: Path, root: Path) -> Path:
    """A task folder under `root` with the same name (the task is found by it), defaults and model."""
    copy = root / task_dir.name
    (copy / "experiments").mkdir(parents=True)
    for name in TASK_FILES:
        shutil.copy(task_dir / name, copy / name)
    (copy / "base_model").symlink_to((task_dir / "base_model").resolve(), target_is_directory=True)
    return copy


def run_one(source: Path, *, task_copy: Path, timeout: float) -> dict[str, object]:
    experiment = task_copy / "experiments" / source.parent.name / source.name
    shutil.copytree(source, experiment)
    command = [sys.executable, "-m", "peftbench", "run", str(experiment), "--quick"]
    command += [arg for item in OVERRIDES for arg in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    tic = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=task_copy
    ) as process:
        timer = threading.Timer(timeout, process.kill)  # a silent hang yields no line to check the time on
        timer.start()
        first_error_s, lines = None, []
        assert process.stdout is not None
        for line in process.stdout:  # read as it comes, to time the first error line
            lines.append(line)
            if first_error_s is None and (": error: " in line or line.startswith("Traceback")):
                first_error_s = time.perf_counter() - tic
        returncode = process.wait()
        timed_out = not timer.is_alive() and returncode < 0
        timer.cancel()
    output = "".join(lines)
    if timed_out:
        outcome = "timeout"
    elif "Traceback (most recent call last)" in output:
        outcome = "traceback"
    elif returncode == 0:
        outcome = "ran"
    elif returncode < 0:
        outcome = f"killed by signal {-returncode}"
    else:
        outcome = "clean error"
    return {
        "config": f"{source.parent.name}/{source.name}",
        "outcome": outcome,
        "exit": returncode,
        "first error s": None if first_error_s is None else round(first_error_s, 1),
        "total s": round(time.perf_counter() - tic, 1),
        "error": _last_error(output) if outcome != "ran" else "",
    }


def _last_error(output: str) -> str:
    """The line that names the failure: the CLI's error line, else the last line of the output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line]
    return (errors or lines or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of <method>/<name>/adapter_config.json")
    parser.add_argument("--task-dir", type=Path, default=REPO / "benchmarks" / "tinymath")
    parser.add_argument("--limit", type=int, default=None, help="run only the first N configs")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per config")
    parser.add_argument("--jobs", type=int, default=1, help="configs run at once")
    parser.add_argument("--save", type=Path, default=None, help="write the table as CSV here too")
    args = parser.parse_args(argv)
    configs = find_configs(args.folder)[: args.limit]
    if not configs:
        print(f"{args.folder}: no <method>/<name>/adapter_config.json below it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="peftbench-reference-") as root:
        task_copy = make_task_copy(args.task_dir, Path(root))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            runs = pool.map(lambda c: run_one(c, task_copy=task_copy, timeout=args.timeout), configs)
            rows = list(tqdm(runs, total=len(configs), desc="configs", unit="config"))
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 160, "display.width", 250):
        print(table.to_string(index=False))
    errors = table[table["outcome"] != "ran"]["first error s"].dropna()
    totals = {
        **{k: int(v) for k, v in table["outcome"].value_counts().items()},
        "configs": len(table),
        "max first error s": float(errors.max()) if len(errors) else None,
        f"first error over {ERROR_TARGET_S:.0f} s": int((errors > ERROR_TARGET_S).sum()),
    }
    print(json.dumps(totals))
    if args.save is not None:
        table.to_csv(args.save, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
