"""The task plug-in interface: everything task-specific that the runner and the dashboard need.

A task is one object (a subclass of `Task`) registered in `peftbench.tasks`. The runner calls
`load_data` and `is_correct`; the dashboard reads `metrics` and `base_model_short`. Nothing
outside a task's own module branches on the task's name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Metric:
    """A column of the results table that a comparison can use.

    `name` is the column name in the aggregated table (see peftbench.analysis.aggregate),
    `direction` says which way is better, `label` is shown in plots.
    """

    name: str
    direction: Literal["higher", "lower"]
    label: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"


# Metrics every task has, because the runner measures them for every run.
COMMON_METRICS: tuple[Metric, ...] = (
    Metric("test_accuracy", "higher", "test accuracy"),
    Metric("forgetting", "lower", "forgetting (loss increase)"),
    Metric("train_time", "lower", "train time (s)"),
    Metric("total_time", "lower", "total time (s)"),
    Metric("file_size", "lower", "checkpoint size (bytes)"),
    Metric("num_trainable_params", "lower", "trainable parameters"),
    Metric("memory_max", "lower", "peak memory (bytes)"),
    Metric("memory_reserved_avg", "lower", "average memory (bytes)"),
    Metric("memory_reserved_99th", "lower", "99th percentile memory (bytes)"),
    Metric("train_loss", "lower", "final train loss"),
)


@dataclass(frozen=True)
class Example:
    """One question. `response` is the full target text for training (working + final answer);
    `answer` is the gold final answer that `Task.is_correct` compares against."""

    query: str
    response: str
    answer: str


@dataclass
class TaskData:
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    forgetting_texts: list[str]
    # goes to the result's meta_info.dataset_info (e.g. hub shas, generator seed)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """sha256 over every split, so that results record exactly which data they saw.

        Hashed item by item: a hub-sized train split never has to sit in memory as one string.
        """
        h = hashlib.sha256()
        for split, items in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            h.update(f"[{split}:{len(items)}]".encode())
            for e in items:
                h.update(json.dumps([e.query, e.response, e.answer], ensure_ascii=False).encode())
        h.update(f"[forgetting:{len(self.forgetting_texts)}]".encode())
        for text in self.forgetting_texts:
            h.update(json.dumps(text, ensure_ascii=False).encode())
        return h.hexdigest()

    @property
    def test_items_hash(self) -> str:
        """Identifies the test items and their order, so that two runs can be paired item by item."""
        return fingerprint_of([e.query for e in self.test])


def fingerprint_of(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class Task:
    """Base class of task plug-ins. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    version: str = "1"
    # short name of the default base model, the prefix of experiment names (e.g. "llama-3.2-3B")
    base_model_short: str = ""
    # the base model's mean per-token loss on the forgetting texts must lie in this band
    # (a sanity check that the right model and data were loaded)
    forgetting_loss_band: tuple[float, float] = (0.0, float("inf"))
    metrics: tuple[Metric, ...] = COMMON_METRICS
    # shuffle the training data every epoch with the run's seed; a task whose reference trains in a
    # fixed order (MetaMathQA: hub order, bucketed by length) sets this to False
    shuffle_train: bool = True

    def load_data(self, *, task_dir: Path, seed: int = 0) -> TaskData:
        """Return the train/valid/test splits and the forgetting texts. Deterministic."""
        raise NotImplementedError

    def is_correct(self, prediction: str, example: Example) -> bool:
        """Whether a generated completion (the text after the prompt) answers `example`."""
        raise NotImplementedError

    def extra_metrics(self, completions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        """Further test metrics from the test completions, merged into the final metrics dict."""
        return {}

    def training_loop(self) -> Callable[..., Any]:
        """The loop that trains on this task, called by the runner with train.train's keyword arguments
        and returning a train.TrainOutcome: supervised fine-tuning (`peftbench.train.train`) unless the
        task needs another (tinymath-rl: `peftbench.rl.train`). Imported when a run starts."""
        from peftbench.train import train

        return train

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)
