"""`peftbench inference`: inference overhead and capability checks of a task's experiments.

Writes one record per experiment to `<task>/inference_results/<method>--<name>.json`
(docs/inference.md); `--table` prints the table of the records already there and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", help="the task folder, benchmarks/<task>")
    parser.add_argument(
        "experiments", nargs="*", metavar="EXP", help="<method>/<name> of the task (default: all of them)"
    )
    parser.add_argument("--repetitions", type=int, default=5, help="timed repetitions per variant")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated per timing")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="the eval batch (default: the task's batch_size_eval)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the Markdown table of the existing records; measure nothing",
    )


def _positive(value: int | None, option: str) -> None:
    from peftbench.errors import BadInput

    if value is not None and value < 1:
        raise BadInput(f"{option} {value}: must be at least 1")


def select_experiments(task: str, names: list[str]) -> list:
    """The task's experiments named (all without names); BadInput for a name the task does not have."""
    from peftbench.errors import BadInput, did_you_mean
    from peftbench.experiment import discover

    found = {e.experiment_name: e for e in discover(task)}
    for name in names:
        key = name.strip("/").removeprefix("experiments/")
        if key not in found:
            raise BadInput(f'{task}: no experiment "{name}"{did_you_mean(key, found)}')
    return (
        [found[n.strip("/").removeprefix("experiments/")] for n in names] if names else list(found.values())
    )


def print_table(task: str) -> int:
    from peftbench.analysis.overhead import (
        capability_matrix,
        markdown_table,
        overhead_table,
        read_records,
        record_files,
    )
    from peftbench.experiment import discover

    discover(task)  # BadInput for a folder that is not a task
    records, warnings = read_records(record_files([task]))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not records:
        print(f"no inference records in {Path(task) / 'inference_results'}", file=sys.stderr)
        return 0
    print(markdown_table(overhead_table(records), capability_matrix(records)))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.table:
        return print_table(args.task)
    for value, option in ((args.repetitions, "--repetitions"), (args.new_tokens, "--new-tokens")):
        _positive(value, option)
    _positive(args.batch_size, "--batch-size")
    experiments = select_experiments(args.task, args.experiments)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    for experiment in experiments:
        print(json.dumps(measure_one(experiment, args)), flush=True)
    return 0


def measure_one(experiment, args: argparse.Namespace) -> dict:
    """Measure one experiment and write its record; a failure is recorded, and the next one goes on."""
    import dataclasses

    from peftbench import inference
    from peftbench.experiment import load_train_config
    from peftbench.modeling import choose_device
    from peftbench.results import atomic_write_json

    sizes = inference.Sizes(
        repetitions=args.repetitions, new_tokens=args.new_tokens, eval_batch=args.batch_size or 0
    )
    try:
        if not args.batch_size:  # inside: a config that does not load is this experiment's failure only
            sizes = dataclasses.replace(sizes, eval_batch=load_train_config(experiment).batch_size_eval)
        record = inference.benchmark(experiment, sizes=sizes)
    except Exception as exc:  # one method's failure is its record's answer; the others still run
        error = inference.one_line(exc)
        record = inference.failed_record(experiment, device=choose_device(), sizes=sizes, error=error)
    path = inference.record_path(experiment)
    atomic_write_json(path, record)
    summary = {"experiment": experiment.experiment_name, "record": str(path), "error": record["error"]}
    summary.update({f"{v} decode / base": r.get("decode_s_per_token") for v, r in record["ratios"].items()})
    return summary
