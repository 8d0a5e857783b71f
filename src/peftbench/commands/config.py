"""`peftbench config`: the training parameters, documented, or the resolved config of an experiment."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", help="print this experiment's resolved training config")
    parser.add_argument("--explain", action="store_true", help="document every training parameter")
    parser.add_argument("--quick", action="store_true", help="with the task's quick variant")


def main(args: argparse.Namespace) -> int:
    from peftbench.config import explain

    if args.experiment is None or args.explain:
        print(explain())
        if args.experiment is None:
            return 0
    from peftbench.experiment import load_train_config, resolve_experiment

    config = load_train_config(resolve_experiment(args.experiment), quick=args.quick)
    print(json.dumps(config.to_dict(), indent=2))
    return 0
