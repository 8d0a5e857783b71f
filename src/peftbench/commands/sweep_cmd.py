"""`peftbench sweep`: run every pending run of a task, locally in parallel or on Ray."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peftbench.commands.list_cmd import add_selection_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="the task folder, benchmarks/<task>")
    parser.add_argument("--list", action="store_true", help="only print each run, pending or not, and why")
    parser.add_argument(
        "--force", action="store_true", help="run the selected experiments even if up to date"
    )
    add_selection_arguments(parser)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="each run uses the task's quick variant; results go to temporary_results/ and never make a "
        "run up to date (so add --force to quick-run experiments that already have results)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        default=None,
        help="runs at once (local: default 1; each gets cores // jobs threads. ray: default no limit)",
    )
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="where runs execute")
    parser.add_argument(
        "--address",
        metavar="ADDR",
        default=None,
        help="ray: join this cluster (default: start a local Ray instance)",
    )
    parser.add_argument(
        "--cpus-per-run",
        type=int,
        metavar="C",
        default=None,
        help="CPU cores per run (torch threads). local default: cores // jobs; ray default: 1",
    )
    parser.add_argument(
        "--gpus-per-run",
        type=float,
        metavar="G",
        default=0,
        help="GPUs per run (ray: may be fractional; local: whole GPUs, given out via CUDA_VISIBLE_DEVICES)",
    )


def _backend(args: argparse.Namespace, *, runs: int) -> Any:
    from peftbench.errors import BadInput

    if args.cpus_per_run is not None and args.cpus_per_run < 1:
        raise BadInput(f"--cpus-per-run {args.cpus_per_run}: must be at least 1")
    if args.gpus_per_run < 0:
        raise BadInput(f"--gpus-per-run {args.gpus_per_run:g}: must not be negative")
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs {args.jobs}: must be at least 1")
    if args.backend == "ray":
        from peftbench.sweep.ray_backend import RayBackend

        return RayBackend(
            address=args.address,
            jobs=args.jobs,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
        )
    if args.address:
        raise BadInput("--address is for --backend ray")
    if args.gpus_per_run != int(args.gpus_per_run):
        raise BadInput(f"--gpus-per-run {args.gpus_per_run:g}: the local backend gives out whole GPUs")
    from peftbench.sweep.local import LocalBackend

    # more jobs than runs would only shrink each run's share of the cores
    return LocalBackend(
        jobs=min(args.jobs or 1, runs), cpus_per_run=args.cpus_per_run, gpus_per_run=int(args.gpus_per_run)
    )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler ending the job) is handled like Ctrl-C: runs cancel, the summary prints."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(args: argparse.Namespace) -> int:
    from peftbench.commands.list_cmd import listing
    from peftbench.sweep.driver import FAILED, log_tail, run_sweep, summary_table
    from peftbench.sweep.pending import parse_seeds, plan, run_state

    runs = plan(args.task, filters=args.filter, seeds=parse_seeds(args.seeds), searched=args.searched)
    states = {run: run_state(run, include_temporary=args.include_temporary) for run in runs}
    if args.list:
        print(listing(runs, states))
        return 0
    todo = runs if args.force else [run for run in runs if states[run].pending]
    if not todo:
        print(f"sweep: all {len(runs)} runs are up to date (--list says why, --force reruns)")
        return 0
    backend = _backend(args, runs=len(todo))
    print(f"sweep: {len(todo)} of {len(runs)} runs to do; {backend.describe()}", flush=True)
    with _sigterm_as_interrupt():
        reports, interrupted = run_sweep(
            todo,
            backend=backend,
            quick=args.quick,
            force=args.force,
            include_temporary=args.include_temporary,
        )
    print(summary_table(reports, quick=args.quick))
    for report in reports:
        if report.status in FAILED and report.log is not None:
            print(f"\n--- {report.run.label}: {report.status}; last lines of {report.log} ---")
            print(log_tail(report.log))
    locked = [r.run.label for r in reports if r.status == "locked"]
    if locked:
        print(f"sweep: skipped {len(locked)} run(s) that another sweep is running: {', '.join(locked)}")
    if interrupted:
        print("sweep: interrupted; run the same command again to do what is still pending")
        return 130
    return 1 if any(r.status in FAILED for r in reports) else 0
