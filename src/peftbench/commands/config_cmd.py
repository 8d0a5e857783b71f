"""`peftbench config`: the training parameters, documented, or the resolved config of an experiment."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE`, shared by `run` and `config` so that a preview takes what a run takes."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training parameter (JSON value; KEY.ENTRY=VALUE changes one entry of an object, "
        "e.g. optimizer_kwargs.lr=3e-3); never a main run",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", help="print this experiment's resolved training config")
    parser.add_argument("--explain", action="store_true", help="document every training parameter")
    parser.add_argument("--quick", action="store_true", help="with the task's quick variant")
    add_set_option(parser)
    parser.add_argument(
        "--json", action="store_true", help="the resolved config as JSON, without the sources column"
    )


def main(args: argparse.Namespace) -> int:
    from peftbench.config import build_config, explain, parse_overrides, value_sources

    if args.experiment is None or args.explain:
        print(explain())
        if args.experiment is None:
            return 0
    from peftbench.experiment import config_layers, layer_label, resolve_experiment

    layers = config_layers(
        resolve_experiment(args.experiment), quick=args.quick, overrides=parse_overrides(args.overrides)
    )
    config = build_config(layers).to_dict()
    if args.json:
        print(json.dumps(config, indent=2))
        return 0
    sources = {key: layer_label(source) for key, source in value_sources(layers).items()}
    print(source_table(config, sources))
    return 0


def source_table(config: dict[str, Any], sources: dict[str, str]) -> str:
    """One line per value: key, JSON value, and where it came from. Objects show one line per entry
    under dotted keys, as `--set` takes them; a value no layer set is the field's built-in default."""
    rows = [("key", "value", "source")]
    for key, value in config.items():
        entries = {f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) and value else {}
        for name, shown in entries.items() or [(key, value)]:
            rows.append((name, json.dumps(shown), sources.get(name, sources.get(key, "built-in"))))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{k:<{widths[0]}}  {v:<{widths[1]}}  {s}" for k, v, s in rows)
