"""A run's variant: full, or quick / shortened by command-line overrides (a different identity).

A run made with `--quick` or `--set key=value` answers a different question from the experiment's
full run (150 steps are not 800), so it must never supersede, mix with or be tested against full
runs. Its variant is part of its identity, and its experiment is shown with the variant as a label:
`lora/tiny-llama-rank8-attention [quick]`. Reference-format files have no `quick` key: full runs.
No pandas here: the sweep's pending check uses it too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FULL = ""


def _flat(overrides: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value:
            pairs += _flat(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def run_variant(run_info: Mapping[str, Any]) -> str:
    """ "" for a full run; else "quick", the overrides ("max_steps=150") or both ("quick, max_steps=150").

    Overrides are sorted and nested keys dotted (optimizer_kwargs.lr=0.001), so that two runs with
    the same overrides share one variant however they were typed.
    """
    parts = ["quick"] if run_info.get("quick") is True else []
    overrides = run_info.get("cli_overrides")
    if isinstance(overrides, Mapping):
        parts += [f"{key}={json.dumps(value, default=str)}" for key, value in sorted(_flat(overrides))]
    elif overrides:
        # not the object `peftbench run` writes: still not a full run
        parts.append(f"overrides={json.dumps(overrides, default=str)}")
    return ", ".join(parts)


def labelled(experiment_name: str, variant: str) -> str:
    """The experiment name as tables and plots show it: `<method>/<name> [<variant>]` unless full."""
    return f"{experiment_name} [{variant}]" if variant else experiment_name


def variant_name(variant: str) -> str:
    """The variant in words: "full" for a full run."""
    return variant or "full"
