"""The result record: one JSON file per run, its schema version, writing (peftbench.files) and loading.

The file keeps the reference suite's three sections and keys (huggingface/peft
`method_comparison`), so that its files and ours are interchangeable:

- run_info: created_at, total_time, experiment_name ("<method>/<name>"), peft_branch,
  peft_worktree_is_dirty, train_config, peft_config, error_msg
- train_info: accelerator_memory_reserved_avg, accelerator_memory_max,
  accelerator_memory_reserved_99th, train_time, file_size, num_trainable_params,
  num_total_params, status, metrics (one dict per evaluation, then a final dict with
  "test accuracy", "train total tokens", "forgetting")
- meta_info: model_info, dataset_info, package_info, system_info, pytorch_info

Our additions sit beside those keys (readers must not require them; the reference's files lack them):

- top level: "schema_version" (SCHEMA_VERSION)
- run_info: task_name, task_version, seed, project_commit, project_dirty, cli_overrides
- train_info: device ("cuda", "cpu", ...), memory_kind ("accelerator" or "process_rss": on a CPU
  the accelerator_memory_* fields hold the process's resident memory), memory_allocated_avg,
  test_correct (per-item test correctness as a string of "0"/"1" in test order),
  test_items_hash (sha256 of the test queries in order; runs pair only when it matches)
- meta_info: model_info.fingerprint (sha256 of the weight files), dataset_info.fingerprint
  (sha256 of all data splits)
- train_info.scoring_version (schema 2): the name of the rule that scored "test accuracy" (the task's
  `Task.scoring_version`); a file without it was scored by "reference" when it is the reference's own
  (no schema_version) and by "peftbench-1" when it is ours (`scoring_version`)

Beside each of our result files that finished its test (schema 2), `<stem>.completions.jsonl.gz` keeps
the generated test completions, one JSON line per test item in test order: {"index", "prompt" (the
decoded prompt), "completion", "gold" (the gold answer the scorer compares with)}. `peftbench rescore`
and the item-flip view read it; older files and the reference's have none.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from enum import Enum
from pathlib import Path
from typing import Any

from peftbench.errors import BadInput
from peftbench.files import atomic_write, atomic_write_text
from peftbench.tasks.base import TEST_ACCURACY

# 2: train_info.scoring_version and the completions sidecar
SCHEMA_VERSION = 2
COMPLETIONS_SUFFIX = ".completions.jsonl.gz"
COMPLETION_KEYS = ("index", "prompt", "completion", "gold")
# the rule of our files written before scoring versions existed, and of the reference's own files
LEGACY_SCORING = "peftbench-1"
REFERENCE_SCORING = "reference"
SECTIONS = ("run_info", "train_info", "meta_info")


class TrainStatus(str, Enum):
    """A run's train_info.status; compares and serialises as its string."""

    SUCCESS = "success"
    CANCELED = "canceled"
    FAILED = "failed"

    def __str__(self) -> str:  # f-strings and str() give the value on every Python version
        return self.value


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see `atomic_write_text`); NaN and inf are stored as null."""
    text = json.dumps(_json_safe(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def _json_safe(obj: Any) -> Any:
    """NaN and inf are not JSON: store them as null (a metric that could not be computed)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_result(path: Path, record: dict[str, Any], completions: list[dict[str, Any]] | None = None) -> None:
    """Write a result file and, when given, its completions sidecar first: a result never exists
    without the completions it was scored from (a stale sidecar is replaced before its result)."""
    if completions:
        write_completions(completions_path(path), completions)
    atomic_write_json(path, record)


def completions_path(result_path: Path) -> Path:
    """`<dir>/<stem>.completions.jsonl.gz` beside `<dir>/<stem>.json`."""
    return result_path.with_name(result_path.stem + COMPLETIONS_SUFFIX)


def write_completions(path: Path, completions: list[dict[str, Any]]) -> None:
    """The sidecar, gzip-compressed JSON lines (mtime 0: the same completions give the same bytes)."""
    lines = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in completions).encode()

    def write(f: Any) -> None:
        with gzip.GzipFile(filename="", fileobj=f, mode="wb", compresslevel=9, mtime=0) as gz:
            gz.write(lines)

    atomic_write(path, write)


def load_completions(result_path: Path) -> list[dict[str, Any]] | None:
    """The test completions stored beside a result file, or None when it has no sidecar (older files,
    the reference's). Raises BadInput naming the sidecar and the line when it is unreadable."""
    path = completions_path(result_path)
    if not path.is_file():
        return None
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not a readable gzip file of completions ({exc})") from None
    items = []
    for number, line in enumerate(lines, start=1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        missing = [k for k in COMPLETION_KEYS if not isinstance(item, dict) or k not in item]
        if missing or item["index"] != number - 1:
            what = f"lacks {', '.join(missing)}" if missing else f"has index {item['index']!r}"
            raise BadInput(
                f"{path}: line {number} {what}; expected keys {', '.join(COMPLETION_KEYS)} in test order"
            )
        items.append(item)
    return items


def scoring_version(data: dict[str, Any]) -> str:
    """The rule that scored a record's "test accuracy" (see the module docstring)."""
    version = data["train_info"].get("scoring_version")
    if isinstance(version, str) and version:
        return version
    return LEGACY_SCORING if "schema_version" in data else REFERENCE_SCORING


def load_result(path: Path) -> dict[str, Any]:
    """Load and check one result file (ours or the reference's). Raises BadInput naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read result file ({exc})") from None
    problem = validate_result(data)
    if problem:
        raise BadInput(f"{path}: not a peftbench/PEFT result file: {problem}")
    return data


def validate_result(data: Any) -> str:
    """Return '' when `data` has the reference's structure, else what is wrong."""
    if not isinstance(data, dict):
        return "top level is not an object"
    for section in SECTIONS:
        if not isinstance(data.get(section), dict):
            return f'missing section "{section}"'
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return f"schema_version {version!r} is newer than this peftbench understands ({SCHEMA_VERSION})"
    run_info, train_info = data["run_info"], data["train_info"]
    if not isinstance(run_info.get("experiment_name"), str):
        return "run_info.experiment_name is missing"
    if train_info.get("status") not in {s.value for s in TrainStatus}:
        return f"train_info.status {train_info.get('status')!r} is not one of success, canceled, failed"
    if not isinstance(train_info.get("metrics"), list):
        return "train_info.metrics is not a list"
    return ""


# Numeric train_info fields that analysis reads (older reference files spell memory "cuda_memory_*").
NUMERIC_TRAIN_INFO = (
    "accelerator_memory_reserved_avg",
    "accelerator_memory_max",
    "accelerator_memory_reserved_99th",
    "cuda_memory_reserved_avg",
    "cuda_memory_max",
    "cuda_memory_reserved_99th",
    "memory_allocated_avg",
    "train_time",
    "file_size",
    "num_trainable_params",
    "num_total_params",
)
# Tolerance between "test accuracy" and the share of 1s in test_correct (float rounding only).
_ACCURACY_TOLERANCE = 1e-9


def check_fields(data: dict[str, Any]) -> tuple[str, list[str]]:
    """Check the fields that analysis reads, for a record that passed `validate_result`.

    Returns (problem, flagged). problem is '' or the first field whose type makes the record unusable: a
    string, a boolean or a list where a number belongs would otherwise load as a silent NaN, and per-item
    data (test_correct) that disagrees with "test accuracy" would make two commands show two accuracies.
    flagged names the numbers that are NaN or infinite (the reference's image-gen files hold a NaN
    "drift"): usable records whose value shows as empty. null means "not measured" and is accepted.
    """
    run_info, train_info = data["run_info"], data["train_info"]
    checks = [
        ("run_info.seed", run_info.get("seed"), _is_int),
        ("run_info.total_time", run_info.get("total_time"), _is_number),
        ("train_info.test_items_hash", train_info.get("test_items_hash"), _is_text),
        *((f"train_info.{k}", train_info.get(k), _is_number) for k in NUMERIC_TRAIN_INFO),
    ]
    train_config = run_info.get("train_config")
    if isinstance(train_config, dict):
        checks.append(("run_info.train_config.seed", train_config.get("seed"), _is_int))
    final = test_metrics(data)
    checks += ((f'final metric "{k}"', v, _is_number) for k, v in final.items())
    flagged = []
    for where, value, ok in checks:
        if value is None or ok(value):
            continue
        if ok is _is_number and _is_number(value, finite=False):
            flagged.append(f"{where} is {value}")
        else:
            return f"{where} is {value!r} ({type(value).__name__}); {ok.__doc__}", flagged
    return _test_correct_problem(train_info.get("test_correct"), final.get(TEST_ACCURACY.key)), flagged


def _test_correct_problem(correct: Any, accuracy: Any) -> str:
    if correct is None:
        return ""
    if not isinstance(correct, str) or correct.strip("01"):
        shown = correct if not isinstance(correct, str) else next(c for c in correct if c not in "01")
        return f"train_info.test_correct must be a string of 0 and 1, found {shown!r}"
    if not correct:
        return ""
    from_items = correct.count("1") / len(correct)
    if not _is_number(accuracy) or abs(accuracy - from_items) > _ACCURACY_TOLERANCE:
        return (
            f'final metric "{TEST_ACCURACY.key}" is {accuracy!r} but train_info.test_correct gives '
            f"{correct.count('1')}/{len(correct)} = {from_items:.6g}"
        )
    return ""


def _is_number(value: Any, *, finite: bool = True) -> bool:
    """expected a number or null"""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number and (math.isfinite(value) or not finite)


def _is_int(value: Any) -> bool:
    """expected a whole number or null"""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    """expected a non-empty string or null"""
    return isinstance(value, str) and bool(value)


def final_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The final metrics dict (the one holding "test accuracy"), or {} for a run that did not finish."""
    for entry in reversed(data["train_info"].get("metrics") or []):
        if isinstance(entry, dict) and TEST_ACCURACY.key in entry:
            return entry
    return {}


def test_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The final metrics dict, else a last entry holding any "test ..." key (tasks whose test metric is
    not an accuracy, like the reference's image-gen); {} for a run that did not finish."""
    final = final_metrics(data)
    if final:
        return final
    entries = data["train_info"].get("metrics") or []
    last = entries[-1] if entries else None
    if isinstance(last, dict) and any(str(k).startswith("test ") for k in last):
        return last
    return {}
