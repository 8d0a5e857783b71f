"""Sweep throughput: the same small sweep with --jobs 1, --jobs 2 and Ray, and each run's fixed cost.

Not a test: it prints wall times and ratios measured in one go, on this machine. By default it builds a
throw-away copy of the tests' toy task (a 2-layer random Llama, four experiments of four steps), so
the fixed cost per run (interpreter start, imports, model load) dominates, which is what parallel
runs and Ray have to amortise. `--task benchmarks/tinymath --filter ...` measures a real task instead
(with --quick).

    python perf/bench_sweep.py [--task DIR --filter GLOBS] [--repeat 1] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# one child process: how long the imports and the model load of a run take, measured from inside
PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers, peft
import peftbench.run, peftbench.train
t1 = time.perf_counter()
from peftbench import modeling
from peftbench.experiment import load_train_config, resolve_experiment
exp = resolve_experiment(sys.argv[1])
config = load_train_config(exp, quick=sys.argv[2] == "1")
path = modeling.resolve_model_id(config.model_id, exp.task_dir)
tok = modeling.load_tokenizer(path, max_seq_length=config.max_seq_length)
model = modeling.load_base_model(path, dtype=config.dtype, device="cpu",
                                 attn_implementation=config.attn_implementation, use_gc=False)
t2 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "model load": t2 - t1}))
"""


def toy_task(root: Path) -> Path:
    sys.path.insert(0, str(TESTS))
    import toyworld

    model = root / "model"
    model.mkdir()
    toyworld.build_tiny_model(model)
    task_dir = toyworld.make_task_dir(root, model_dir=model)
    for rank in (2, 8):
        folder = task_dir / "experiments" / "lora" / f"toy-rank{rank}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({**toyworld.LORA, "r": rank}))
    return task_dir


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def timed(cmd: list[str], env: dict[str, str]) -> float:
    tic = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=None, help="a task folder (default: a throw-away toy task)")
    parser.add_argument("--filter", default=None, help="experiments to sweep (<method>/<name> globs)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of sweeps (best kept)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray sweep")
    args = parser.parse_args()

    env = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if args.task is None:
            task_dir, quick = toy_task(Path(tmp)), False
            env["PEFTBENCH_TASKS"] = "toytask=toyworld:ToyTask"
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
        else:
            task_dir, quick = Path(args.task).absolute(), True
        sweep = [sys.executable, "-m", "peftbench", "sweep", str(task_dir), "--force"]
        sweep += ["--quick"] if quick else []
        sweep += ["--filter", args.filter] if args.filter else []
        listing = subprocess.run([*sweep, "--list"], env=env, capture_output=True, text=True, check=True)
        n_runs = len(listing.stdout.strip().splitlines()) - 2

        # "--jobs 1, 1 thread" separates the gain of parallel runs from that of fewer threads per run
        configs = {
            "--jobs 1": ["--jobs", "1"],
            "--jobs 1, 1 thread": ["--jobs", "1", "--cpus-per-run", "1"],
            "--jobs 2": ["--jobs", "2"],
        }
        if not args.no_ray:
            configs["ray (local instance)"] = ["--backend", "ray", "--cpus-per-run", "1"]
        load_before = os.getloadavg()[0]
        # rounds interleave the configurations, so that a burst of load elsewhere hits all of them
        times: dict[str, list[float]] = {label: [] for label in configs}
        for round_ in range(args.repeat):
            for label, extra in configs.items():
                times[label].append(timed([*sweep, *extra], env))
                print(f"round {round_ + 1}: {label:22s} {times[label][-1]:7.1f} s", flush=True)
        walls = {label: min(values) for label, values in times.items()}

        experiment = next(p for p in sorted((task_dir / "experiments").glob("*/*")) if p.is_dir())
        start = min(timed([sys.executable, "-c", "pass"], env) for _ in range(3))
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(experiment), "1" if quick else "0"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        fixed = {"interpreter start": start, **json.loads(probe.stdout.strip().splitlines()[-1])}
        ray_start = None
        if not args.no_ray:
            ray_start = timed([sys.executable, "-c", "import ray; ray.init(include_dashboard=False)"], env)
        shutil.rmtree(task_dir / "logs", ignore_errors=True)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    base = walls["--jobs 1"]
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"\nmachine: {cpu_model()}, {cores} cores, {load}; best of {args.repeat} round(s)")
    print(f"sweep of {n_runs} runs ({task_dir.name}{', quick' if quick else ''}):")
    for label, wall in walls.items():
        per_run = wall / n_runs
        print(f"  {label:22s} {wall:7.1f} s   {per_run:5.1f} s/run   vs --jobs 1: {base / wall:4.2f}x")
    total = sum(fixed.values())
    print(f"fixed cost per run (one process, measured alone): {total:.1f} s")
    for name, value in fixed.items():
        print(f"  {name:18s} {value:5.2f} s")
    print(f"  = {100 * total / (base / n_runs):.0f}% of a run's wall time with --jobs 1")
    if ray_start is not None:
        print(f"ray: starting and stopping a local instance alone: {ray_start:.1f} s (once per sweep)")


if __name__ == "__main__":
    main()
