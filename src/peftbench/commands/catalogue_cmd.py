"""`peftbench catalogue` (maintainers): regenerate a task's experiment catalogue, or check it is current."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from peftbench.maintainer.catalogue import BUILTIN_SCALES, LLAMA_3_2_3B

    parser.add_argument("task_dir", help="the task folder, e.g. benchmarks/MetaMathQA")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--scale",
        default=LLAMA_3_2_3B.prefix,
        help=f"a built-in base model scale ({', '.join(BUILTIN_SCALES)}; default: %(default)s)",
    )
    group.add_argument("--model-config", help="size the configs from this transformers config.json instead")
    parser.add_argument(
        "--prefix", help="experiment name prefix with --model-config (default: the task's base_model_short)"
    )
    parser.add_argument(
        "--full-finetuning-lr",
        type=float,
        help="with --model-config: full fine-tuning's lr (default: the reference's scaled like the others)",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file differs")


def main(args: argparse.Namespace) -> int:
    from peftbench.maintainer.catalogue import regenerate

    n_entries, changed, experiments_dir = regenerate(args)
    if args.check:
        for path in changed:
            print(f"out of date: {path}")
        return 1 if changed else 0
    print(f"{n_entries} experiments in {experiments_dir} ({len(changed)} files written or removed)")
    return 0
