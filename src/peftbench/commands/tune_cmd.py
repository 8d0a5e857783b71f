"""`peftbench tune`: the same search budget for every experiment, selected on validation only."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_TRIALS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "experiments",
        nargs="+",
        metavar="EXP",
        help="experiment folders, or a task folder for all its experiments that are not tuned ones",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        metavar="N",
        help="finished trials (complete or pruned) per experiment, the same for all "
        f"(default {DEFAULT_TRIALS})",
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="experiments searched at once")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="where searches run")
    parser.add_argument("--address", default=None, metavar="ADDR", help="ray: join this cluster")
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="an Optuna RDB URL for the study (one experiment only; default: the journal file "
        "benchmarks/<task>/tuning/<method>--<name>.log)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    parser.add_argument("--list", action="store_true", help="only print each experiment's search so far")


def main(args: argparse.Namespace) -> int:
    from peftbench import tuning
    from peftbench.errors import BadInput

    if args.trials < 1:
        raise BadInput(f"--trials must be at least 1, not {args.trials}")
    if args.jobs < 1:
        raise BadInput(f"--jobs must be at least 1, not {args.jobs}")
    experiments = tuning.select_experiments(args.experiments)
    if not experiments:
        raise BadInput(f"{' '.join(args.experiments)}: no experiments to tune")
    if args.storage and len(experiments) > 1:
        raise BadInput("--storage holds one study: give one experiment with it")
    for exp in experiments:  # a bad search space or a foreign study is refused before anything runs
        budget = tuning.budget_for(exp, trials=args.trials, seed=args.seed)
        tuning.check_study(exp, space=tuning.load_space(exp), budget=budget, storage=args.storage)
    if args.list:
        return _print_status(experiments)
    jobs = {str(e.path): e.experiment_name for e in experiments}
    options = {"trials": args.trials, "seed": args.seed, "storage": args.storage}
    runner = _run_ray if args.backend == "ray" else _run_local
    failed = 0
    for name, summary in runner(list(jobs), options=options, jobs=args.jobs, address=args.address):
        failed += "error" in summary
        print(_line(jobs.get(name, name), summary), flush=True)
    return 1 if failed else 0


def _line(name: str, summary: dict[str, Any]) -> str:
    if "error" in summary:
        return f"tune: {name}: error: {summary['error']}"
    best = "none complete" if summary["best_value"] is None else f"best valid {summary['best_value']:.3f}"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in (summary["best_params"] or {}).items())
    same = f" (the source's own settings: {name}'s runs stand for it)"
    edges = ", ".join(summary.get("at_edges") or [])
    edge = f"; at an edge of the range searched: {edges} (the best may lie outside)"
    return (
        f"tune: {name}: {summary['trials']} trials ({summary['pruned']} pruned), "
        f"{summary['steps_spent']} steps, {best} ({params}) -> {summary['tuned']}"
        f"{same if summary.get('repeats_source') else ''}{edge if edges else ''}"
        f" [{summary['wall_time']:.0f} s]"
    )


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _print_status(experiments: Iterable[Any]) -> int:
    from peftbench import tuning

    for exp in experiments:
        trials = tuning.read_trials(exp)
        pruned = sum(t["state"] == "pruned" for t in trials)
        best = max((t["value"] for t in trials if t["state"] == "complete"), default=None)
        shown = "-" if best is None else f"{best:.3f}"
        print(f"{exp.experiment_name}: {len(trials)} trial records ({pruned} pruned), best valid {shown}")
    return 0


def _tune_one(path: str, options: dict[str, Any]) -> dict[str, Any]:
    """A search in a worker: a summary, or {"error": one line} (the worker survives for the next)."""
    from peftbench import tuning
    from peftbench.errors import BadInput

    try:
        return tuning.tune_experiment(path, **options)
    except (BadInput, RuntimeError, OSError) as exc:
        return {"error": str(exc)}


def _init_worker(threads: int, parent: int) -> None:
    """A search worker: its torch threads, and its end with the parent's (a `peftbench tune` stopped by
    SIGTERM or SIGKILL would otherwise leave its workers searching, holding their studies' locks)."""
    import torch

    from peftbench.sweep.local import die_with_parent

    die_with_parent(parent)
    torch.set_num_threads(threads)


def _run_local(
    paths: list[str], *, options: dict[str, Any], jobs: int, address: str | None
) -> Iterable[tuple[str, dict[str, Any]]]:
    """Searches in `jobs` persistent worker processes (imports paid once), cores // jobs threads each."""
    if jobs == 1:
        for path in paths:
            yield path, _tune_one(path, options)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(threads, os.getpid())
    ) as pool:
        futures = {pool.submit(_tune_one, path, options): path for path in paths}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_ray(
    paths: list[str], *, options: dict[str, Any], jobs: int, address: str | None
) -> Iterable[tuple[str, dict[str, Any]]]:
    """One Ray task per experiment; the journal must be on a filesystem all nodes share, or use an
    RDB --storage on a cluster."""
    from peftbench.sweep.ray_backend import _import_ray, worker_env

    ray = _import_ray()
    owns = not ray.is_initialized()
    if owns:
        ray.init(address=address, log_to_driver=False, **({} if address else {"include_dashboard": False}))
    try:
        remote: Callable[..., Any] = ray.remote(num_cpus=1)(_tune_one).options(
            runtime_env={"env_vars": worker_env()}
        )
        refs = {remote.remote(path, options): path for path in paths}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield refs[done[0]], ray.get(done[0])
    finally:
        if owns:
            ray.shutdown()
