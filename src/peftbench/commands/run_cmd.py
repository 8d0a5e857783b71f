"""`peftbench run`: one experiment folder to one result file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from peftbench.commands.config_cmd import add_set_option
from peftbench.signals import Cancellation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="benchmarks/<task>/experiments/<method>/<name>")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each evaluation as JSON on stderr; tracebacks"
    )
    parser.add_argument(
        "--save-adapter",
        type=Path,
        default=None,
        metavar="DIR",
        help="save the trained adapter (the whole model for full fine-tuning) in DIR, a new or empty "
        "folder; without it nothing but the result file is kept",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="override the config's seed (one result per seed)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the task's quick variant (quick_training_params.json); never a main run",
    )
    add_set_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for this run")


def check_save_dir(folder: Path) -> None:
    """Before the run: saving into a folder that holds other files would mix them with the adapter's."""
    from peftbench.errors import BadInput

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        problem = "is not a folder" if not folder.is_dir() else "is not empty"
        raise BadInput(f"--save-adapter {folder}: {problem}; give a new or empty folder")


def main(args: argparse.Namespace) -> int:
    # caught from here on, before the heavy imports: a signal at any later time leaves a record
    with Cancellation() as cancel:
        return _run(args, cancel)


def _run(args: argparse.Namespace, cancel: Cancellation) -> int:
    from peftbench.config import parse_overrides
    from peftbench.experiment import resolve_experiment

    experiment = resolve_experiment(args.experiment)
    overrides = parse_overrides(args.overrides)
    if args.save_adapter is not None:
        check_save_dir(args.save_adapter)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from peftbench.results import TrainStatus
    from peftbench.run import execute
    from peftbench.tasks import get_task

    outcome = execute(
        experiment,
        seed=args.seed,
        quick=args.quick,
        overrides=overrides,
        verbose=args.verbose,
        save_adapter=args.save_adapter,
        cancellation=cancel,
    )
    final = outcome.record["train_info"]["metrics"][-1:] or [{}]
    summary = {
        "experiment": experiment.experiment_name,
        "status": outcome.status,
        # the task's final metrics, as the result file keys them (None for a run that did not finish)
        **{
            m.key: final[0].get(m.key) for m in get_task(experiment.task_name).metrics if m.section == "final"
        },
        # the reference's train_time: training, test generation and forgetting after, not validation
        "train+test time": round(outcome.record["train_info"]["train_time"], 1),
        "wall time": round(outcome.record["run_info"]["total_time"], 1),
        "result": str(outcome.path),
    }
    if outcome.record["run_info"]["error_msg"]:
        summary["error"] = outcome.record["run_info"]["error_msg"]
    print(json.dumps(summary))
    if outcome.checkpoint_dir is not None:
        what = "model" if experiment.is_full_finetuning else "adapter"
        print(f"{what} saved in {outcome.checkpoint_dir}", file=sys.stderr)
    if outcome.signum is not None:
        return cancel.exit_code  # 130 for SIGINT, 143 for SIGTERM, as a shell reports a killed process
    return 0 if outcome.status == TrainStatus.SUCCESS else 1
