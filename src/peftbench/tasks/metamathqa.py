"""The reference's benchmark: train on MetaMathQA, test on GSM8K, forgetting on general web text.

Data, as in huggingface/peft method_comparison/MetaMathQA:

- train: meta-math/MetaMathQA ("train"), keeping the rows whose f"{query} {response}" has at most
  1300 characters (about 94% of them; with 768 tokens the longer ones would be cut),
- validation: 50 questions of openai/gsm8k "main" train, drawn by shuffling the indices with numpy's
  legacy generator seeded with 0 (the same 50 for every run and every seed, so curves compare),
- test: the whole openai/gsm8k "main" test split (1319 questions),
- forgetting: the "text" of the first 100 rows of HuggingFaceFW/finewiki ("train", streamed, so that
  no shard is downloaded whole).

Where the data comes from (for offline clusters and mirrors), one environment variable per source:

- PEFTBENCH_METAMATHQA, PEFTBENCH_GSM8K, PEFTBENCH_FORGETTING_TEXTS, each one of
  - a hub id or a local folder: passed to `datasets.load_dataset(path)`. A folder holding
    `train.jsonl` (and for GSM8K `test.jsonl`), or a clone of the hub repository, works;
  - a data file or glob ending in .jsonl/.json/.parquet/.csv/.txt/.arrow: loaded with the matching
    builder as the "train" split (not for GSM8K, which needs a train and a test split);
  - a JSON object of `load_dataset` keyword arguments, for anything else, e.g.
    '{"path": "/data/gsm8k", "name": "main"}' or
    '{"path": "openai/gsm8k", "name": "main", "revision": "<sha>"}'.
- A hub mirror needs no variable of ours: set HF_ENDPOINT. A warm cache with HF_HUB_OFFLINE=1 works too.
- Sources still on the hub are checked with one short request first (peftbench.hub), so that a
  machine without a network gets one clear line at once, not minutes of retries.

The sources actually used (and, when online, the hub commit of each) go to the result file's
meta_info.dataset_info, under the reference's keys "metamath" and "gsm8k" plus "forgetting".
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from peftbench import hub
from peftbench.errors import BadInput
from peftbench.tasks import answers
from peftbench.tasks.base import COMMON_METRICS, Example, Metric, Task, TaskData

# query + " " + response longer than this is dropped from train; the reference's value, chosen so
# that a sample fits into max_seq_length=768 tokens of the Llama-3 tokenizer
CHAR_LIMIT = 1300
VALID_SIZE = 50
VALID_NUMPY_SEED = 0
NUM_FORGETTING_TEXTS = 100

DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "metamath": {"path": "meta-math/MetaMathQA", "split": "train"},
    "gsm8k": {"path": "openai/gsm8k", "name": "main"},
    "forgetting": {"path": "HuggingFaceFW/finewiki", "split": "train", "streaming": True},
}
ENV_VARS = {
    "metamath": "PEFTBENCH_METAMATHQA",
    "gsm8k": "PEFTBENCH_GSM8K",
    "forgetting": "PEFTBENCH_FORGETTING_TEXTS",
}
# the columns each source must have (the hub's own column names)
COLUMNS = {
    "metamath": ("query", "response"),
    "gsm8k": ("question", "answer"),
    "forgetting": ("text",),
}
_BUILDERS = {
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".txt": "text",
    ".arrow": "arrow",
}
MATH_VERIFY_KEY = "test accuracy math-verify"
# our rule (peftbench.tasks.answers.is_correct), kept beside the reference's as a named extra metric
PEFTBENCH_RULE_KEY = "test accuracy peftbench"
PEFTBENCH_RULE = Metric(
    "test_accuracy_peftbench", "higher", "test accuracy (peftbench rule)", key=PEFTBENCH_RULE_KEY
)
MATH_VERIFY = Metric(
    "test_accuracy_math_verify", "higher", "test accuracy (Math-Verify)", key=MATH_VERIFY_KEY
)


def source_spec(source: str) -> dict[str, Any]:
    """The `datasets.load_dataset` keyword arguments for one data source: the default, or what its
    environment variable says."""
    env = ENV_VARS[source]
    value = os.environ.get(env, "").strip()
    if not value:
        return dict(DEFAULT_SOURCES[source])
    if value.startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BadInput(
                f"environment variable {env}: malformed JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(spec, dict) or not isinstance(spec.get("path"), str):
            raise BadInput(f'environment variable {env}: a JSON value must be an object with a "path" string')
        return spec
    suffix = next((s for s in _BUILDERS if value.lower().endswith(s)), None)
    if suffix is not None:
        if source == "gsm8k":
            raise BadInput(
                f"environment variable {env}: GSM8K needs a train and a test split; give a folder with "
                f'train.jsonl and test.jsonl, or JSON like {{"path": "json", "data_files": '
                f'{{"train": "...", "test": "..."}}}}'
            )
        return {"path": _BUILDERS[suffix], "data_files": value, "split": "train"}
    return {"path": value}


def _load(source: str, spec: dict[str, Any]) -> Any:
    from datasets import load_dataset

    try:
        return load_dataset(**spec)
    except Exception as exc:  # datasets raises many kinds; the user needs to know which source failed
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(
            f"cannot load the {source} data from {json.dumps(spec)} (set {ENV_VARS[source]} to use a local "
            f"copy or mirror, see peftbench.tasks.metamathqa): {first_line}"
        ) from exc


def _check_hub(specs: dict[str, dict[str, Any]]) -> None:
    """Fail within seconds, not after minutes of retries, when hub data cannot be fetched."""
    on_hub = [source for source, spec in specs.items() if hub.is_hub_id(spec["path"])]
    if on_hub:
        hub.check_reachable(
            f"the MetaMathQA task's data ({', '.join(specs[s]['path'] for s in on_hub)})",
            local_copy=f"set {', '.join(ENV_VARS[s] for s in on_hub)} to local copies "
            "(see peftbench.tasks.metamathqa)",
        )


def _split(source: str, loaded: Any, split: str) -> Any:
    """One split of what load_dataset returned (a dict of splits unless a split was asked for)."""
    if not hasattr(loaded, "keys"):
        return loaded
    if split not in loaded:
        raise BadInput(f'the {source} data has no "{split}" split; it has: {", ".join(loaded)}')
    return loaded[split]


def _check_columns(source: str, ds: Any, spec: dict[str, Any]) -> None:
    names = ds.column_names or []
    missing = [c for c in COLUMNS[source] if c not in names]
    if missing:
        raise BadInput(
            f"the {source} data from {json.dumps(spec)} lacks the column(s) {', '.join(missing)}; "
            f"it has: {', '.join(names) or 'none'}"
        )


def _hub_info(spec: dict[str, Any]) -> dict[str, str | None]:
    """The hub commit and creation date of a hub dataset, as the reference records them; None offline."""
    info: dict[str, str | None] = {"sha": None, "created_at": None}
    path = spec["path"]
    if not hub.is_hub_id(path):
        return info
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return info
    try:
        found = HfApi().dataset_info(path, revision=spec.get("revision"), timeout=10)
    except Exception as exc:  # the run does not depend on this record
        warnings.warn(f"could not read the hub info of {path}: {exc}", stacklevel=2)
        return info
    return {"sha": found.sha, "created_at": found.created_at.isoformat() if found.created_at else None}


def gsm8k_answer(solution: str, *, where: str) -> str:
    """The gold answer of a GSM8K solution, the text after its last "####"."""
    answer = answers.extract_answer(solution) if "####" in solution else None
    if answer is None:
        raise BadInput(f'{where}: the GSM8K answer does not end with "#### <number>": {solution[-80:]!r}')
    return answer


def filter_train(queries: Sequence[str], responses: Sequence[str]) -> list[int]:
    """Indices of the MetaMathQA rows kept for training (query + response at most CHAR_LIMIT characters).

    Characters, not tokens, so that every base model trains on the same rows.
    """
    return [
        i for i, (q, r) in enumerate(zip(queries, responses, strict=True)) if len(f"{q} {r}") <= CHAR_LIMIT
    ]


def valid_indices(num_rows: int) -> list[int]:
    """The reference's validation draw: shuffle 0..n-1 with numpy's legacy generator seeded 0, keep 50.

    RandomState(0) gives the same permutation as the reference's np.random.seed(0) + np.random.shuffle
    without touching numpy's global state.
    """
    indices = np.arange(num_rows)
    np.random.RandomState(VALID_NUMPY_SEED).shuffle(indices)
    return [int(i) for i in indices[:VALID_SIZE]]


class MetaMathQA(Task):
    """Train on MetaMathQA, measure GSM8K accuracy, as the reference's method comparison does."""

    name = "MetaMathQA"
    version = "1"
    base_model_short = "llama-3.2-3B"
    forgetting_loss_band = (1.0, 2.0)
    # the reference trains on the filtered rows in hub order (bucketed by length), never shuffled
    shuffle_train = False
    # "test accuracy" is the reference's rule, verdict for verdict (peftbench.tasks.answers)
    scoring_version = "reference"
    metrics = (
        *COMMON_METRICS,
        PEFTBENCH_RULE,
        MATH_VERIFY,
    )

    def load_data(self, *, task_dir: Path, seed: int = 0) -> TaskData:
        """Load the three sources (see the module docstring). `seed` does not change the data: the
        validation draw is fixed so that every run sees the same questions, as in the reference."""
        specs = {source: source_spec(source) for source in DEFAULT_SOURCES}
        _check_hub(specs)
        train, filter_info = self._train(specs["metamath"])
        valid, test = self._gsm8k(specs["gsm8k"])
        forgetting = self._forgetting(specs["forgetting"])
        info = {source: {**_hub_info(spec), "source": spec} for source, spec in specs.items()}
        info["train_filter"] = filter_info
        info["valid"] = {"size": len(valid), "from": "gsm8k train", "numpy_seed": VALID_NUMPY_SEED}
        return TaskData(train=train, valid=valid, test=test, forgetting_texts=forgetting, info=info)

    def _train(self, spec: dict[str, Any]) -> tuple[list[Example], dict[str, Any]]:
        ds = _split("metamath", _load("metamath", spec), "train")
        _check_columns("metamath", ds, spec)
        queries, responses = list(ds["query"]), list(ds["response"])
        kept = filter_train(queries, responses)
        train = [
            Example(
                query=queries[i], response=responses[i], answer=answers.extract_answer(responses[i]) or ""
            )
            for i in kept
        ]
        if not train:
            raise BadInput(
                f"the metamath data from {json.dumps(spec)} has no row of at most {CHAR_LIMIT} characters"
            )
        return train, {"char_limit": CHAR_LIMIT, "kept": len(kept), "total": len(queries)}

    def _gsm8k(self, spec: dict[str, Any]) -> tuple[list[Example], list[Example]]:
        loaded = _load("gsm8k", spec)
        splits = {}
        for split in ("train", "test"):
            ds = _split("gsm8k", loaded, split)
            _check_columns("gsm8k", ds, spec)
            splits[split] = (list(ds["question"]), list(ds["answer"]))
        questions = splits["train"][0]
        if len(questions) < VALID_SIZE:
            raise BadInput(
                f"the gsm8k train split has {len(questions)} rows; the validation set needs {VALID_SIZE}"
            )

        def example(split: str, i: int) -> Example:
            q, s = splits[split][0][i], splits[split][1][i]
            return Example(query=q, response=s, answer=gsm8k_answer(s, where=f"gsm8k {split} row {i}"))

        valid = [example("train", i) for i in valid_indices(len(questions))]
        test = [example("test", i) for i in range(len(splits["test"][0]))]
        return valid, test

    def _forgetting(self, spec: dict[str, Any]) -> list[str]:
        ds = _split("forgetting", _load("forgetting", spec), "train")
        # streamed datasets know their columns only after the first row; check on the rows we take
        rows = list(ds.take(NUM_FORGETTING_TEXTS)) if hasattr(ds, "take") else []
        if rows and "text" not in rows[0]:
            raise BadInput(
                f"the forgetting data from {json.dumps(spec)} lacks the column text; "
                f"it has: {', '.join(rows[0])}"
            )
        if not rows:
            raise BadInput(f"the forgetting data from {json.dumps(spec)} is empty")
        return [row["text"] for row in rows]

    def is_correct(self, prediction: str, example: Example, *, prompt: str = "") -> bool:
        """The reference's rule on the decoded prompt + completion, as its run.py scores them."""
        return answers.reference_is_correct(prompt + prediction, example.answer)

    def extra_metrics(
        self, predictions: Sequence[str], examples: Sequence[Example], *, prompts: Sequence[str] = ()
    ) -> dict[str, float]:
        """Test metrics beyond "test accuracy", keyed as in the result file's final metrics dict.

        Our rule on the completion alone ("test accuracy peftbench"); Math-Verify's accuracy when the
        optional package is installed (nothing otherwise, so that a run never fails for want of a
        second opinion).
        """
        if not examples:
            return {}
        pairs = list(zip(predictions, examples, strict=True))
        metrics = {PEFTBENCH_RULE_KEY: sum(answers.is_correct(p, e.answer) for p, e in pairs) / len(pairs)}
        if answers.math_verify_available():
            correct = [answers.math_verify_correct(p, e.answer) for p, e in pairs]
            metrics[MATH_VERIFY_KEY] = sum(correct) / len(correct)
        return metrics
