"""Rescoring a result from its stored completions with its task's current rules (`peftbench rescore`).

Pure: a record, its completions sidecar (peftbench.results) and the task plug-in in, the rescored record
out. The final metrics dict gets the task's "test accuracy" and extra metrics anew, train_info the new
per-item `test_correct` and `scoring_version`; what they were before goes to `train_info.rescored`
(one entry per rescoring, oldest first), so that a rescored file still says what its run first reported.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from peftbench.errors import BadInput
from peftbench.results import final_metrics, scoring_version
from peftbench.tasks.base import Example, Task


def rescore(
    record: dict[str, Any], completions: list[dict[str, Any]], task: Task, *, where: str
) -> dict[str, Any]:
    """The record rescored with `task`'s rules; BadInput (naming `where`) when the completions do not
    fit the record (another number of test items) or the run has no final test metrics."""
    final = final_metrics(record)
    if not final:
        raise BadInput(f"{where}: the run has no final test metrics to rescore")
    stored = record["train_info"].get("test_correct")
    if isinstance(stored, str) and stored and len(stored) != len(completions):
        raise BadInput(
            f"{where}: the completions sidecar holds {len(completions)} items but test_correct {len(stored)}"
        )
    prompts = [str(c["prompt"]) for c in completions]
    texts = [str(c["completion"]) for c in completions]
    examples = [Example(query="", response="", answer=str(c["gold"])) for c in completions]
    correct = [task.is_correct(t, e, prompt=p) for t, e, p in zip(texts, examples, prompts, strict=True)]
    new_metrics = {
        "test accuracy": sum(correct) / max(len(correct), 1),
        **task.extra_metrics(texts, examples, prompts=prompts),
    }
    out = copy.deepcopy(record)
    info = out["train_info"]
    previous = {
        "scoring_version": scoring_version(record),
        "test_correct": stored,
        "metrics": {k: final.get(k) for k in new_metrics if k in final},
        "rescored_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "rescored_as": task.scoring_version,
    }
    info["rescored"] = [*info.get("rescored", []), previous]
    final_metrics(out).update(new_metrics)
    info["test_correct"] = "".join("1" if c else "0" for c in correct)
    info["scoring_version"] = task.scoring_version
    return out


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What rescoring changed, in words: the scoring version and each test metric that moved."""
    old, new = final_metrics(before), final_metrics(after)
    lines = []
    if scoring_version(before) != scoring_version(after):
        lines.append(f"scoring {scoring_version(before)} -> {scoring_version(after)}")
    for key, value in new.items():
        if key.startswith("test ") and old.get(key) != value:
            was = "none" if old.get(key) is None else f"{old[key]:.4f}"
            lines.append(f"{key} {was} -> {value:.4f}")
    return lines
