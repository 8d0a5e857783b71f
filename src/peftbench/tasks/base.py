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
    """One metric, declared once: where the result file holds it, its column, direction and aggregation.

    `name` is the column in the aggregated table (see peftbench.analysis.aggregate), `direction`
    says which way is better, `label` is shown in plots. `key` is where the result file holds the
    value, in `section`: "final" (the final metrics dict, e.g. "test accuracy"), "step" (each
    validation entry of the training curve), "train_info" or "run_info" (a field of that section);
    no key: the value is not in the result file (inference overhead, joined from its own records).
    `aggregate` says how runs of one experiment combine: "mean" (a Student-t interval across
    seeds) or "proportion" (also a Wilson interval over the test items for a single seed, from the
    run's per-item results).
    """

    name: str
    direction: Literal["higher", "lower"]
    label: str = ""
    key: str = ""
    section: Literal["final", "step", "train_info", "run_info"] = "final"
    aggregate: Literal["mean", "proportion"] = "mean"

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"


def _final(name: str, direction: Literal["higher", "lower"], label: str, key: str, **kw: Any) -> Metric:
    return Metric(name, direction, label, key=key, section="final", **kw)


def _train_info(name: str, direction: Literal["higher", "lower"], label: str, key: str) -> Metric:
    return Metric(name, direction, label, key=key, section="train_info")


def _step(name: str, direction: Literal["higher", "lower"], key: str) -> Metric:
    return Metric(name, direction, key, key=key, section="step")


# What the runner measures for every run, declared here once; the runner writes these keys, the
# aggregation reads them, and every other module refers to the constants, never to the strings.
TEST_ACCURACY = _final("test_accuracy", "higher", "test accuracy", "test accuracy", aggregate="proportion")
FORGETTING = _final("forgetting", "lower", "forgetting (loss increase)", "forgetting")
TRAIN_LOSS = _final("train_loss", "lower", "final train loss", "train loss")
TRAIN_TIME = _train_info("train_time", "lower", "train time (s)", "train_time")
TOTAL_TIME = Metric("total_time", "lower", "total time (s)", key="total_time", section="run_info")
FILE_SIZE = _train_info("file_size", "lower", "checkpoint size (bytes)", "file_size")
TRAINABLE_PARAMS = _train_info(
    "num_trainable_params", "lower", "trainable parameters", "num_trainable_params"
)
MEMORY_MAX = _train_info("memory_max", "lower", "peak memory (bytes)", "accelerator_memory_max")
MEMORY_AVG = _train_info(
    "memory_reserved_avg", "lower", "average memory (bytes)", "accelerator_memory_reserved_avg"
)
MEMORY_99TH = _train_info(
    "memory_reserved_99th", "lower", "99th percentile memory (bytes)", "accelerator_memory_reserved_99th"
)

# Metrics every task has, because the runner measures them for every run.
COMMON_METRICS: tuple[Metric, ...] = (
    TEST_ACCURACY,
    FORGETTING,
    TRAIN_TIME,
    TOTAL_TIME,
    FILE_SIZE,
    TRAINABLE_PARAMS,
    MEMORY_MAX,
    MEMORY_AVG,
    MEMORY_99TH,
    TRAIN_LOSS,
)
# Facts of every run that are columns but not compared (the table's info columns).
TOTAL_PARAMS = _train_info("num_total_params", "lower", "total parameters", "num_total_params")
TRAIN_SAMPLES = _final("train_samples", "higher", "train samples", "train samples")
TRAIN_TOKENS = _final("train_total_tokens", "higher", "train total tokens", "train total tokens")
FORGETTING_BEFORE = _final(
    "forgetting_loss_before", "lower", "base model forgetting loss", "forgetting loss before"
)
RUN_FACTS: tuple[Metric, ...] = (TOTAL_PARAMS, TRAIN_SAMPLES, TRAIN_TOKENS, FORGETTING_BEFORE)

# The validation entries of the training curve, one per evaluation step (the step itself is "step").
STEP = "step"
VALID_ACCURACY = _step("valid_accuracy", "higher", "valid accuracy")
STEP_TRAIN_LOSS = _step("train_loss", "lower", "train loss")
STEP_TRAIN_SAMPLES = _step("train_samples", "higher", "train samples")
STEP_TRAIN_TIME = _step("train_time", "lower", "train time")
STEP_EVAL_TIME = _step("eval_time", "lower", "eval time")
TOKENS_PER_SEC = _step("tokens_per_sec", "higher", "tokens / sec")
MEM_ALLOCATED_AVG = _step("mem_allocated_avg", "lower", "mem allocated avg")
MEM_RESERVED_AVG = _step("mem_reserved_avg", "lower", "mem reserved avg")
ELAPSED_TIME = _step("elapsed_time", "lower", "elapsed time")
LEARNING_RATE = _step("lr", "lower", "lr")
VALID_GENERATED_TOKENS = _step("valid_generated_tokens", "lower", "valid generated tokens")
# the training curve of RL runs (peftbench.rl), shown beside train loss; declared by RL tasks' step_metrics
STEP_TRAIN_REWARD = _step("train_reward", "higher", "train reward")
STEP_TRAIN_KL = _step("train_kl", "lower", "train kl")
STEP_GENERATED_TOKENS_PER_SEC = _step("generated_tokens_per_sec", "higher", "generated tokens / sec")
# RL runs' final figures (peftbench.rl); the first two are columns of RL tasks' `metrics`
TRAIN_REWARD = _final("train_reward", "higher", "final train reward", "train reward")
GENERATED_TOKENS_PER_SEC = _final(
    "generated_tokens_per_sec", "higher", "generated tokens / s", "generated tokens / sec"
)
GENERATED_TOKENS = "generated tokens"  # sampled during training, EOS included
SAMPLING_TIME = "sampling time"  # seconds spent sampling during training
STEP_METRICS: tuple[Metric, ...] = (
    VALID_ACCURACY,
    STEP_TRAIN_LOSS,
    STEP_TRAIN_SAMPLES,
    STEP_TRAIN_TIME,
    STEP_EVAL_TIME,
    TOKENS_PER_SEC,
    MEM_ALLOCATED_AVG,
    MEM_RESERVED_AVG,
    ELAPSED_TIME,
    LEARNING_RATE,
    VALID_GENERATED_TOKENS,
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
    # the training curve's columns (validation entries); a task adds its own validation metrics here
    step_metrics: tuple[Metric, ...] = STEP_METRICS
    # shuffle the training data every epoch with the run's seed; a task whose reference trains in a
    # fixed order (MetaMathQA: hub order, bucketed by length) sets this to False
    shuffle_train: bool = True
    # the name of the rule `is_correct` applies, recorded in each result (train_info.scoring_version):
    # change it with the rule, so that tables, Pareto plots and compare never mix two rules
    scoring_version: str = "peftbench-1"

    def load_data(self, *, task_dir: Path, seed: int = 0) -> TaskData:
        """Return the train/valid/test splits and the forgetting texts. Deterministic."""
        raise NotImplementedError

    def is_correct(self, prediction: str, example: Example, *, prompt: str = "") -> bool:
        """Whether a generated completion (the text after the prompt) answers `example`; `prompt` is
        the decoded prompt, for rules that read it too."""
        raise NotImplementedError

    def extra_metrics(
        self, completions: Sequence[str], examples: Sequence[Example], *, prompts: Sequence[str] = ()
    ) -> dict[str, float]:
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
