"""What a tuning trial costs besides training and validation, and what a whole search cost.

    python scripts/tuning_cost.py benchmarks/tinymath/experiments/lora/tiny-llama-rank8-attention
    python scripts/tuning_cost.py --searches benchmarks/tinymath

The first form runs, side by side in one process, trials of `--steps` steps (validation once, at the
end) the way `peftbench tune` runs them in a persistent worker, and prints per trial the wall time,
training, validation and the rest (fixed cost: model loading and wrapping, tokenisation, writing),
and the fixed-cost fraction (target < 0.10). The first trial of a worker also pays the data loading;
later trials do not. For scale it then times the same run as a fresh `peftbench run` process
(imports, data, model, forgetting before and after, test generation) and prints its fraction too.

The second form sums the trial records under `benchmarks/<task>/tuning/`: compute time per
experiment and in all, trials, pruned trials and steps, against full runs of the same steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def measure_trials(exp_path: str, *, steps: int, trials: int) -> None:
    import optuna

    from peftbench import tuning
    from peftbench.experiment import load_train_config, resolve_experiment

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exp = resolve_experiment(exp_path)
    lr = float(load_train_config(exp).optimizer_kwargs["lr"])
    params = {"optimizer_kwargs.lr": lr, "max_steps": steps, "eval_steps": steps}
    budget = tuning.Budget(trials=trials, max_steps=steps, eval_steps=steps)
    tic = time.perf_counter()
    ctx = tuning.trial_context(exp, space=[], budget=budget)
    data_time = time.perf_counter() - tic
    print(f"data loaded once per experiment and worker: {data_time:.2f} s")
    print(f"{'trial':>5} {'wall s':>8} {'train s':>8} {'valid s':>8} {'fixed s':>8} {'fixed/wall':>10}")
    for n in range(trials):
        trial_run = tuning.TrialRun(params=params)
        outcome = tuning._train_trial(ctx, trial_run, on_validation=lambda entry: None)
        wall = time.perf_counter() - trial_run.tic + (data_time if n == 0 else 0.0)
        valid = sum(e["eval time"] for e in outcome.metrics)
        fixed = wall - outcome.train_time - valid
        print(f"{n:>5} {wall:8.2f} {outcome.train_time:8.2f} {valid:8.2f} {fixed:8.2f} {fixed / wall:10.3f}")
    tic = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "peftbench",
            "run",
            exp_path,
            "--set",
            f"max_steps={steps}",
            "--set",
            f"eval_steps={steps}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - tic
    record = _last_temporary_record(exp)
    if proc.returncode != 0 or record is None:
        print(f"fresh `peftbench run`: failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        return
    train = record["train_info"]["train_time"]
    valid = sum(m.get("eval time", 0.0) for m in record["train_info"]["metrics"])
    print(
        f"fresh `peftbench run` process, same steps: wall {wall:.2f} s, train {train:.2f} s, "
        f"validation {valid:.2f} s, the rest {wall - train - valid:.2f} s "
        f"({(wall - train - valid) / wall:.3f} of its wall time)"
    )
    Path(record["_path"]).unlink()  # a measurement, not a result


def _last_temporary_record(exp) -> dict | None:
    folder = exp.task_dir / "temporary_results"
    files = sorted(folder.glob(f"{exp.result_stem()}--*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    record = json.loads(files[-1].read_text())
    record["_path"] = str(files[-1])
    return record


def sum_searches(task_dir: Path) -> None:
    from peftbench import tuning

    rows = []
    for folder in sorted((task_dir / "tuning").glob("*/")):
        records = [
            tuning.trial_summary(json.loads(p.read_text())) for p in sorted(folder.glob("trial-*.json"))
        ]
        if not records:
            continue
        budget = records[0]["budget"]
        rows.append(
            (
                records[0]["experiment"],
                len(records),
                sum(r["state"] == "pruned" for r in records),
                sum(r["steps"] for r in records),
                len(records) * budget["max_steps"],
                sum(r["wall_time"] for r in records),
                sum(r["fixed_time"] for r in records),
            )
        )
    print(
        f"{'experiment':<48} {'trials':>6} {'pruned':>6} {'steps':>6} {'full':>6} {'cpu-min':>7} {'fixed':>6}"
    )
    for name, n, pruned, steps, full, wall, fixed in rows:
        print(f"{name:<48} {n:>6} {pruned:>6} {steps:>6} {full:>6} {wall / 60:7.1f} {fixed / wall:6.3f}")
    if rows:
        steps, full = sum(r[3] for r in rows), sum(r[4] for r in rows)
        wall, fixed = sum(r[5] for r in rows), sum(r[6] for r in rows)
        print(
            f"all {len(rows)} searches: {wall / 3600:.2f} h of worker time, {steps} steps trained of "
            f"{full} for unpruned trials ({steps / full:.2f}), fixed-cost fraction {fixed / wall:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", nargs="?", help="an experiment folder to time trials of")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--searches", metavar="TASK_DIR", help="sum the trial records of a task's searches")
    args = parser.parse_args()
    if args.searches:
        sum_searches(Path(args.searches))
    if args.experiment:
        measure_trials(args.experiment, steps=args.steps, trials=args.trials)
    if not (args.searches or args.experiment):
        parser.error("give an experiment folder or --searches TASK_DIR")


if __name__ == "__main__":
    main()
