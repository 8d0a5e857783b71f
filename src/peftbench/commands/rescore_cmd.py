"""`peftbench rescore`: recompute result files' test metrics from their stored completions."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """Each RESULT is one of our result files with its completions sidecar
(<stem>.completions.jsonl.gz, written by every run since schema version 2). Its test accuracy, the
task's extra test metrics and test_correct are recomputed with the task's current rules, and
train_info.scoring_version becomes the task's. Without --write nothing is written: each file's
changes are printed. With --write the files are rewritten in place (atomically, all files checked
first), and the values they replace are kept under train_info.rescored. The reference's files and
ours from before schema version 2 keep no completions: they cannot be rescored (exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULT", help="result files (.json)")
    parser.add_argument("--write", action="store_true", help="rewrite the files (default: only show changes)")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")


def main(args: argparse.Namespace) -> int:
    from peftbench.analysis.aggregate import task_of
    from peftbench.errors import BadInput
    from peftbench.results import atomic_write_json, load_completions, load_result
    from peftbench.scoring import changes, rescore
    from peftbench.tasks import get_task

    rescored = []
    for path in args.results:
        if not path.is_file():
            raise BadInput(f"{path}: no such result file")
        record = load_result(path)
        completions = load_completions(path)
        if completions is None:
            whose = "the reference's files keep none" if "schema_version" not in record else "an older file"
            raise BadInput(
                f"{path}: no stored completions ({whose}): only a run with a sidecar can be rescored"
            )
        task = get_task(task_of(record, path))
        rescored.append((path, record, rescore(record, completions, task, where=str(path))))
    for path, before, after in rescored:
        if args.write:
            atomic_write_json(path, after)
        what = "; ".join(changes(before, after)) or "unchanged"
        print(f"{path}: {what}{' (written)' if args.write else ''}")
    return 0
