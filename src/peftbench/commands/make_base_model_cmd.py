"""`peftbench make-base-model`: rebuild the embedded benchmark's tiny base model and tokenizer."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from peftbench.errors import BadInput

DEFAULT_OUTPUT = Path("benchmarks") / "tinymath" / "base_model"
MIN_STEPS = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"folder for config, weights, tokenizer and pretrain_log.json (default: {DEFAULT_OUTPUT})",
    )
    parser.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="pretraining steps (default: the recipe's; fewer only to try the command out)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a busy 2-core machine one thread was 6x faster than two, "
        "and the result is the same)",
    )


def main(args: argparse.Namespace) -> int:
    output: Path = args.output
    if output.exists() and not args.force:
        raise BadInput(f"{output}: already exists; pass --force to replace it")
    if args.steps is not None and args.steps < MIN_STEPS:
        raise BadInput(f"--steps must be at least {MIN_STEPS} (the warm-up needs 2), got {args.steps}")
    if args.threads <= 0:
        raise BadInput(f"--threads must be a positive integer, got {args.threads}")

    import dataclasses

    import torch

    from peftbench.tasks.tinymath.pretrain import PretrainSettings, make_base_model

    torch.set_num_threads(args.threads)
    settings = PretrainSettings()
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    output.parent.mkdir(parents=True, exist_ok=True)
    # build next to the target and swap at the end: an interrupted rebuild leaves the old model intact
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        log = make_base_model(output_dir=staging, settings=settings)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary = {k: log[k] for k in ("num_parameters", "train_time_s", "forgetting_texts_loss")}
    summary |= {k: log[k] for k in ("addition_accuracy", "subtraction_accuracy")}
    print(json.dumps({"output": str(output), **summary}, indent=2))
    return 0
