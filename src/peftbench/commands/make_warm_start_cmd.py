"""`peftbench make-warm-start`: rebuild tinymath-rl's warm start (a short supervised stage on tinymath)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from peftbench.errors import BadInput

DEFAULT_OUTPUT = Path("benchmarks") / "tinymath-rl" / "warm_start"
DEFAULT_TINYMATH = Path("benchmarks") / "tinymath"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"folder to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--tinymath",
        type=Path,
        default=DEFAULT_TINYMATH,
        help=f"the tinymath task folder, with base_model/ (default: {DEFAULT_TINYMATH})",
    )
    parser.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    parser.add_argument(
        "--steps", type=int, default=None, help="supervised steps (default: the recipe's; others to try)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")


def main(args: argparse.Namespace) -> int:
    output: Path = args.output
    if output.exists() and not args.force:
        raise BadInput(f"{output}: already exists; pass --force to replace it")
    if args.steps is not None and args.steps <= 0:
        raise BadInput(f"--steps must be a positive integer, got {args.steps}")
    if args.threads <= 0:
        raise BadInput(f"--threads must be a positive integer, got {args.threads}")
    if not (args.tinymath / "base_model").is_dir():
        raise BadInput(f"{args.tinymath}: no base_model/ folder (run peftbench make-base-model)")

    import dataclasses

    import torch

    from peftbench.tasks.tinymath.warm_start import WarmStartSettings, make_warm_start

    torch.set_num_threads(args.threads)
    settings = WarmStartSettings()
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)
    output.parent.mkdir(parents=True, exist_ok=True)
    # built beside the target and swapped in at the end: an interrupted rebuild keeps the old one
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        log = make_warm_start(tinymath_dir=args.tinymath, output_dir=staging, settings=settings)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    keys = ("test_accuracy", "valid_accuracy", "forgetting", "train_time_s", "total_time_s")
    print(json.dumps({"output": str(output), **{k: log[k] for k in keys}}, indent=2))
    return 0
