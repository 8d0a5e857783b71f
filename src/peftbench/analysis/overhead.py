"""Inference records (peftbench inference) as tables: overhead per experiment and the capability matrix.

Pure pandas: reading JSON files and shaping frames, no UI. The record schema is in docs/inference.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from peftbench.tasks.base import Metric

RESULTS_DIR = "inference_results"  # peftbench.inference.RESULTS_DIR (that module imports torch)
KNOWN_SCHEMA_VERSIONS = (1,)
RECORD_KIND = "peftbench-inference"
REQUIRED_KEYS = ("experiment_name", "task_name", "versions", "variants", "ratios", "capabilities", "error")
STATUSES = ("yes", "no", "not tested")
# overhead columns: a variant's median per-token decode time (or prefill time) / the base model's
OVERHEAD_METRICS = (
    Metric("merged_decode_overhead", "lower", "merged decode time / base"),
    Metric("unmerged_decode_overhead", "lower", "unmerged decode time / base"),
    Metric("unmerged_prefill_overhead", "lower", "unmerged prefill time / base"),
    Metric("merged_prefill_overhead", "lower", "merged prefill time / base"),
)
OVERHEAD_COLUMNS = [m.name for m in OVERHEAD_METRICS]
_RATIO_KEYS = {"decode": "decode_s_per_token", "prefill": "prefill_s"}


def record_files(task_dirs: Iterable[str | Path]) -> list[Path]:
    return [f for d in task_dirs for f in sorted((Path(d) / RESULTS_DIR).glob("*.json"))]


def read_records(files: Iterable[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, warnings): unreadable files and unknown schema versions are skipped with a warning."""
    records, warnings = [], []
    for file in files:
        try:
            data = json.loads(Path(file).read_text())
        except (OSError, ValueError) as exc:
            warnings.append(f"skipped {file}: {exc}")
            continue
        problem = record_problem(data)
        if problem:
            warnings.append(f"skipped {file}: {problem}")
            continue
        records.append(data)
    return records, warnings


def record_problem(data: Any) -> str:
    """What makes `data` no inference record of a known schema version ("" when it is one)."""
    if not isinstance(data, dict) or data.get("kind") != RECORD_KIND:
        return "not an inference record"
    if data.get("schema_version") not in KNOWN_SCHEMA_VERSIONS:
        return f"unknown schema_version {data.get('schema_version')!r}"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        return f"missing {', '.join(missing)}"
    for name, cell in (data["capabilities"] or {}).items():
        if not isinstance(cell, dict) or cell.get("status") not in STATUSES:
            return f'capability "{name}": status must be one of {", ".join(STATUSES)}'
    return ""


def overhead_row(record: dict[str, Any]) -> dict[str, Any]:
    """One row: the experiment, its adapter's facts, and the overhead ratios (NaN where there is none)."""
    adapter = record.get("adapter") or {}
    variants = record.get("variants") or {}
    row: dict[str, Any] = {
        "task": record.get("task_name"),
        "experiment_name": record.get("experiment_name"),
        "adapter_source": adapter.get("source"),
        "adapter_file_size": adapter.get("file_size"),
        "adapter_load_time_s": adapter.get("load_time_s"),
        "mergeable": bool((variants.get("merged") or {}).get("available")),
        "device": record.get("device"),
        "peft_version": (record.get("versions") or {}).get("peft"),
        "error": record.get("error"),
    }
    for variant in ("merged", "unmerged"):
        for short, key in _RATIO_KEYS.items():
            row[f"{variant}_{short}_overhead"] = (record.get("ratios") or {}).get(variant, {}).get(key)
    base = (variants.get("base") or {}).get("median") or {}
    row["base_decode_ms_per_token"] = (
        base["decode_s_per_token"] * 1e3 if "decode_s_per_token" in base else None
    )
    return row


def overhead_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    rows = [overhead_row(r) for r in records]
    columns = list(overhead_row({}).keys())
    table = pd.DataFrame(rows, columns=columns)
    for column in [*OVERHEAD_COLUMNS, "adapter_file_size", "adapter_load_time_s", "base_decode_ms_per_token"]:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table.sort_values(["task", "experiment_name"], kind="stable").reset_index(drop=True)


def capability_matrix(records: Iterable[dict[str, Any]], *, with_reasons: bool = False) -> pd.DataFrame:
    """Methods x capabilities: "yes", "no" or "not tested"; with_reasons appends each no's reason."""
    rows = []
    for record in records:
        row = {"task": record.get("task_name"), "experiment_name": record.get("experiment_name")}
        for name, cell in (record.get("capabilities") or {}).items():
            text = cell.get("status", "")
            reason = cell.get("reason")
            row[name] = f"{text}: {reason}" if with_reasons and reason else text
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["task", "experiment_name"])
    return table.sort_values(["task", "experiment_name"], kind="stable").reset_index(drop=True)


def task_dirs_of(results: pd.DataFrame) -> list[Path]:
    """Task folders of the result files in a runs table (`file` is <task>/<results dir>/<name>.json)."""
    if results.empty or "file" not in results.columns:
        return []
    return sorted({Path(f).parent.parent for f in results["file"].dropna()})


def with_accuracy(overhead: pd.DataFrame, experiments: pd.DataFrame) -> pd.DataFrame:
    """The overhead rows joined, on task and experiment name, with an experiments table (seed means:
    test accuracy, family): what the accuracy-vs-overhead plot and the table show."""
    keep = [c for c in ("task", "experiment_name", "family", "test_accuracy", "variant") if c in experiments]
    if "variant" in keep:  # quick and shortened runs are other experiments; overhead belongs to full ones
        experiments = experiments[experiments["variant"].fillna("") == ""]
        keep.remove("variant")
    on = [c for c in ("task", "experiment_name") if c in keep]
    return overhead.merge(experiments[keep], on=on, how="left")


def markdown_table(overhead: pd.DataFrame, matrix: pd.DataFrame) -> str:
    """The README table: overhead ratios and the capability cells, one row per experiment."""
    merged = overhead.merge(matrix, on=["task", "experiment_name"], how="left")
    short = {"not tested": "–", "yes": "yes", "no": "no"}
    capabilities = [c for c in matrix.columns if c not in ("task", "experiment_name")]
    view = merged[["experiment_name", "adapter_source", *OVERHEAD_COLUMNS[:3]]].copy()
    for column in capabilities:
        view[column] = merged[column].map(lambda v: short.get(v, v))
    view.columns = [
        "experiment",
        "weights",
        "merged decode",
        "unmerged decode",
        "unmerged prefill",
        *capabilities,
    ]
    view = view.astype(object).where(view.notna(), None)  # NaN ratios: none measured (no merged variant)
    return view.to_markdown(index=False, floatfmt=".3f", missingval="–")


def task_inference(runs: pd.DataFrame, task: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """For one task of a runs table: (overhead joined with test accuracy per experiment, the capability
    matrix, warnings). The records are read from the task folders of the runs' result files."""
    from peftbench.analysis.aggregate import seed_summary
    from peftbench.tasks.base import COMMON_METRICS

    chosen = runs[runs["task"] == task] if not runs.empty else runs
    records, warnings = read_records(record_files(task_dirs_of(chosen)))
    records = [r for r in records if r.get("task_name") == task]
    experiments = seed_summary(chosen, [COMMON_METRICS[0]]) if not chosen.empty else pd.DataFrame()
    overhead = overhead_table(records)
    joined = with_accuracy(overhead, experiments) if not experiments.empty else overhead
    return joined, capability_matrix(records), warnings


def filter_matrix(matrix: pd.DataFrame, *, name: str = "", required: Iterable[str] = ()) -> pd.DataFrame:
    """Rows whose experiment name contains `name` and whose every `required` capability is "yes"."""
    keep = matrix["experiment_name"].str.contains(name, case=False, regex=False) if name else True
    mask = pd.Series(keep, index=matrix.index)
    for column in required:
        if column in matrix.columns:
            mask &= matrix[column] == "yes"
    return matrix[mask]


# the overhead columns the results table carries (seed rows of full runs), next to accuracy, so that the
# table, the Pareto plot's axes, `peftbench table` and `pareto` offer them like any measured metric
TABLE_OVERHEAD_METRICS = OVERHEAD_METRICS[:2]


def join_overhead(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs table with the merged and unmerged decode overhead of each run's experiment, read from
    the inference records of its task folder (runs of quick or shortened variants get none: the
    records measure the full experiment's adapter). Unchanged when no task folder has a record."""
    if runs.empty or "file" not in runs.columns:
        return runs, []
    records, warnings = read_records(record_files(task_dirs_of(runs)))
    if not records:
        return runs, warnings
    columns = [m.name for m in TABLE_OVERHEAD_METRICS]
    overhead = overhead_table(records)[["task", "experiment_name", *columns]]
    overhead = overhead.drop_duplicates(["task", "experiment_name"], keep="last")
    joined = runs.drop(columns=columns, errors="ignore")
    joined = joined.merge(overhead, on=["task", "experiment_name"], how="left")
    if "variant" in joined.columns:
        joined.loc[joined["variant"].fillna("") != "", columns] = float("nan")
    return joined, warnings


def find_overhead_metric(name: str) -> Metric:
    from peftbench.tasks.base import COMMON_METRICS

    return {m.name: m for m in (COMMON_METRICS[0], *OVERHEAD_METRICS)}[name]
