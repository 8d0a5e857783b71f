"""Items that flipped between two runs: right in one, wrong in the other, with both completions.

Pure: two rows of the runs table (peftbench.analysis.aggregate; `test_correct`, `test_items_hash`) and
their completions sidecars as loaded by peftbench.results.load_completions (None where a run has none:
the reference's files, ours before schema 2) in, a table out. The app and the report lay it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from peftbench.errors import BadInput

NOT_STORED = "(completion not stored)"
COLUMNS = ["item", "right in", "gold", "prompt", "completion A", "completion B"]


def item_flips(
    row_a: Mapping[str, Any],
    row_b: Mapping[str, Any],
    completions_a: list[dict[str, Any]] | None,
    completions_b: list[dict[str, Any]] | None,
    *,
    names: tuple[str, str] = ("A", "B"),
) -> pd.DataFrame:
    """One row per test item that one run got right and the other wrong, in test order.

    BadInput when a run has no per-item results or the two runs' test items differ (the hash or the count).
    """
    correct = []
    for row, name in ((row_a, names[0]), (row_b, names[1])):
        value = row.get("test_correct")
        if not isinstance(value, str) or not value:
            raise BadInput(f"{name} has no per-item test results (test_correct): no item can be compared")
        correct.append(value)
    hashes = [row.get("test_items_hash") for row in (row_a, row_b)]
    if all(isinstance(h, str) and h for h in hashes) and hashes[0] != hashes[1]:
        raise BadInput(f"{names[0]} and {names[1]} were tested on different items (test_items_hash differs)")
    if len(correct[0]) != len(correct[1]):
        raise BadInput(f"{names[0]} has {len(correct[0])} test items and {names[1]} {len(correct[1])}")
    stored = [
        c if c is not None and len(c) == len(correct[0]) else None for c in (completions_a, completions_b)
    ]
    rows = []
    for i, (a, b) in enumerate(zip(*correct, strict=True)):
        if a == b:
            continue
        known = stored[0] or stored[1]
        rows.append(
            {
                "item": i,
                "right in": f"{names[0]} only" if a == "1" else f"{names[1]} only",
                "gold": known[i]["gold"] if known else "",
                "prompt": known[i]["prompt"] if known else "",
                "completion A": stored[0][i]["completion"] if stored[0] else NOT_STORED,
                "completion B": stored[1][i]["completion"] if stored[1] else NOT_STORED,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def flips_summary(flips: pd.DataFrame, *, n_items: int, names: tuple[str, str] = ("A", "B")) -> str:
    """One line: how many of the items flipped, each way."""
    only_a = int((flips["right in"] == f"{names[0]} only").sum())
    only_b = len(flips) - only_a
    return (
        f"{len(flips)} of {n_items} test items flipped: {only_a} right only in {names[0]}, "
        f"{only_b} right only in {names[1]}"
    )
