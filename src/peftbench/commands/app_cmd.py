"""`peftbench app`: start the Gradio dashboard over one or more results folders."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="task folders or results folders (default: every task folder under ./benchmarks)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--include-temporary", action="store_true", help="with a task folder, also its temporary_results/"
    )


def default_results(root: Path = Path("benchmarks")) -> list[Path]:
    """The task folders under `root`: those with a default_training_params.json or named after a
    registered task. Other folders (code, JSON files that are not results) are not tasks."""
    from peftbench.errors import BadInput
    from peftbench.files import DEFAULT_PARAMS
    from peftbench.tasks import available_tasks

    if not root.is_dir():
        raise BadInput(f"no {root}/ folder here: give the results folders with --results")
    tasks = available_tasks()
    found = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and ((p / DEFAULT_PARAMS).is_file() or p.name in tasks)
    )
    if not found:
        raise BadInput(f"no task folder in {root}/ (none has a {DEFAULT_PARAMS}): give --results")
    return found


def main(args: argparse.Namespace) -> int:
    from peftbench.dashboard.app import serve
    from peftbench.errors import BadInput

    if not 0 < args.port < 65536:
        raise BadInput(f"--port {args.port}: must be between 1 and 65535")
    serve(
        args.results or default_results(),
        host=args.host,
        port=args.port,
        include_temporary=args.include_temporary,
    )
    return 0
