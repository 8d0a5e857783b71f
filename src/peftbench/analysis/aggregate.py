"""Load the result files of one or more results folders into pandas tables: one row per run.

Reading files is confined to `load_results`; everything else here is a pure function of records
or DataFrames, so the dashboard, the report and the command line share one tested code path.
Each metric column is read and named as its declaration says (`Metric.key`, `section`, `name`; see
peftbench.tasks.base): the task plug-in's metrics and the facts of every run, never a key spelled
here. Which way is better and how seeds combine come from the declaration too. A quick or
shortened run is its own experiment (peftbench.analysis.variant): its `experiment_name` carries the
label, e.g. `lora/tiny-llama-rank8-attention [quick]`, and its `variant` column says which, so every
grouping by experiment keeps it apart from the full runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from peftbench.analysis.overhead import TABLE_OVERHEAD_METRICS, join_overhead
from peftbench.analysis.variant import FULL, labelled, run_variant
from peftbench.errors import BadInput, did_you_mean
from peftbench.files import EXPERIMENTS, RESULT_DIRS, RESULTS, TEMPORARY_RESULTS
from peftbench.results import TrainStatus, check_fields, load_result, scoring_version, test_metrics
from peftbench.tasks.base import COMMON_METRICS, RUN_FACTS, STEP, STEP_METRICS, Metric

NO_RESULTS = "no results yet"

# Columns of the results table in display order; metric columns follow the identifying ones.
ID_COLUMNS = (
    "task",
    "experiment_name",
    "method",
    "name",
    "seed",
    "variant",
    "family",
    "peft_type",
    "model_id",
)
# A run's identity: experiment_name includes the variant's label, so a quick run never supersedes a full one.
IDENTITY = ["task", "experiment_name", "seed"]
INFO_COLUMNS = (
    "status",
    "created_at",
    "device",
    "memory_kind",
    "accelerator",
    "num_total_params",
    "train_samples",
    "train_total_tokens",
    "n_test_items",
    "peft_version",
    "transformers_version",
    "torch_version",
    "project_commit",
    "project_dirty",
    "task_version",
    "scoring_version",
    "file",
)
# Bulky columns: kept for the run diff and the CSV export, hidden in the table views.
DETAIL_COLUMNS = ("train_config", "peft_config", "test_correct", "test_items_hash", "error_msg")

# The reference-format adapter: older reference files spell the memory fields "cuda_memory_*".
_OLDER_TRAIN_INFO_KEYS = {
    "accelerator_memory_max": "cuda_memory_max",
    "accelerator_memory_reserved_avg": "cuda_memory_reserved_avg",
    "accelerator_memory_reserved_99th": "cuda_memory_reserved_99th",
}

# Method families for colouring plots (display only). PEFT's peft_type is the key; a type not
# listed here is shown as "other" rather than guessed.
FAMILIES: dict[str, tuple[str, ...]] = {
    "low-rank (LoRA-like)": (
        "LORA",
        "ADALORA",
        "LOHA",
        "LOKR",
        "VERA",
        "PVERA",
        "VBLORA",
        "RANDLORA",
        "TINYLORA",
        "UNILORA",
        "GRALORA",
        "DELORA",
        "LILY",
        "HIRA",
        "GLORA",
        "MISS",
        "ADAMSS",
        "XLORA",
        "BONE",
    ),
    "orthogonal": ("OFT", "BOFT", "HRA", "ROAD", "PSOFT", "OSF", "GOFT"),
    "prompt-based": (
        "PROMPT_TUNING",
        "PREFIX_TUNING",
        "P_TUNING",
        "ADAPTION_PROMPT",
        "MULTITASK_PROMPT_TUNING",
        "CPT",
    ),
    "frequency / sparse": ("FOURIERFT", "WAVEFT", "C3A", "SHIRA", "FROD"),
    "scaling / selective": ("IA3", "LN_TUNING", "TRAINABLE_TOKENS", "BEFT", "DEFT", "PEANUT", "POLY"),
}
FULL_FINETUNING = "full fine-tuning"
_FAMILY_OF = {peft_type: family for family, types in FAMILIES.items() for peft_type in types}


@dataclass
class Loaded:
    """What `load_results` found: the runs table, the training curves, and what was left out."""

    table: pd.DataFrame
    curves: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    # loaded, but a number is NaN or infinite (file: field): shown as empty, never silently
    not_finite: list[str] = field(default_factory=list)
    n_files: int = 0
    n_not_success: int = 0
    n_superseded: int = 0

    @property
    def n_variant_runs(self) -> int:
        """Runs made with --quick or --set: shown as their own experiments, never mixed with full runs."""
        return 0 if self.table.empty else int((self.table["variant"] != FULL).sum())

    @property
    def summary(self) -> str:
        """One line for humans: how many runs, and what was skipped and why."""
        if self.table.empty:
            text = NO_RESULTS
        else:
            text = f"{len(self.table)} runs of {self.table['experiment_name'].nunique()} experiments"
        notes = []
        if self.n_variant_runs:
            notes.append(
                f"{self.n_variant_runs} quick or shortened (--quick, --set): labelled [quick] or "
                "[key=value], kept apart from full runs"
            )
        if self.n_not_success:
            notes.append(f"{self.n_not_success} skipped: status not success")
        if self.n_superseded:
            notes.append(f"{self.n_superseded} superseded by a later run of the same experiment and seed")
        if self.warnings:
            notes.append(f"{len(self.warnings)} unreadable or with a wrongly typed field")
        if self.not_finite:
            notes.append(f"{len(self.not_finite)} NaN or infinite values shown as empty")
        text += f" ({'; '.join(notes)})" if notes else ""
        return "\n".join([text, *scoring_conflicts(self.table)])


def scoring_conflicts(table: pd.DataFrame) -> list[str]:
    """One warning line per task whose runs' test accuracy comes from more than one scoring rule
    (results.scoring_version): those accuracies do not compare."""
    if table.empty or "scoring_version" not in table.columns:
        return []
    lines = []
    for task, group in table.groupby("task", sort=True):
        counts = group["scoring_version"].value_counts().sort_index()
        if len(counts) > 1:
            parts = ", ".join(f"{version}: {n} runs" for version, n in counts.items())
            lines.append(
                f"warning: task {task}: test accuracy comes from {len(counts)} scoring rules ({parts}); "
                "accuracies of different rules do not compare (peftbench rescore rescores runs with "
                "stored completions)"
            )
    return lines


def method_family(peft_type: str | None) -> str:
    if not peft_type:
        return FULL_FINETUNING
    return _FAMILY_OF.get(str(peft_type).upper(), "other")


def resolve_results_dirs(paths: Iterable[str | Path], *, include_temporary: bool = False) -> list[Path]:
    """Results folders named by `paths`: a results folder itself, a task folder meaning its results/
    (and temporary_results/ with include_temporary), or a folder of task folders (benchmarks/)."""
    dirs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BadInput(f"{path}: no such folder")
        if not path.is_dir():
            raise BadInput(f"{path}: not a folder (give a results folder or a task folder)")
        if path.name in RESULT_DIRS:
            dirs.append(path)
        elif _is_task_folder(path):
            dirs.extend(_task_results(path, include_temporary=include_temporary))
        elif not any(path.glob("*.json")) and any(_is_task_folder(p) for p in path.iterdir() if p.is_dir()):
            # a folder of task folders, like benchmarks/
            for task in sorted(p for p in path.iterdir() if p.is_dir() and _is_task_folder(p)):
                dirs.extend(_task_results(task, include_temporary=include_temporary))
        else:
            dirs.append(path)
    # a folder named twice must not count its runs twice
    return list(dict.fromkeys(d.resolve() for d in dirs))


def _is_task_folder(path: Path) -> bool:
    return (path / RESULTS).is_dir() or (path / EXPERIMENTS).is_dir()


def _task_results(path: Path, *, include_temporary: bool) -> list[Path]:
    # results/ may not exist yet: that is "no results", not an error
    return [path / RESULTS, *([path / TEMPORARY_RESULTS] if include_temporary else [])]


def task_of(data: Mapping[str, Any], file: Path) -> str:
    """run_info.task_name, else the name of the task folder (the one above results/)."""
    name = data.get("run_info", {}).get("task_name")
    if isinstance(name, str) and name:
        return name
    parent = file.parent
    return parent.parent.name if parent.name in RESULT_DIRS else parent.name


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _object(section: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A sub-object of a result section ({} when absent or null); TypeError when it is something else."""
    value = section.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{key} is a {type(value).__name__}, not an object")
    return value


def record_to_row(data: Mapping[str, Any], *, file: Path, task: str) -> dict[str, Any]:
    """One row of the results table from one result record (ours or the reference's)."""
    run_info, train_info, meta_info = data["run_info"], data["train_info"], data["meta_info"]
    train_config = _object(run_info, "train_config")
    peft_config = _object(run_info, "peft_config")
    packages = _object(meta_info, "package_info")
    experiment = run_info["experiment_name"]
    method, _, name = experiment.partition("/")
    variant = run_variant(run_info)
    final = test_metrics(data)
    test_correct = train_info.get("test_correct")
    peft_type = peft_config.get("peft_type")
    seed = run_info.get("seed", train_config.get("seed"))
    row: dict[str, Any] = {
        "task": task,
        "experiment_name": labelled(experiment, variant),
        "method": method,
        "name": name,
        "seed": int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0,
        "variant": variant,
        "family": method_family(peft_type),
        "peft_type": peft_type or "FULL",
        "model_id": train_config.get("model_id"),
        "status": train_info.get("status"),
        "created_at": run_info.get("created_at"),
        "device": train_info.get("device"),
        "memory_kind": train_info.get("memory_kind", "accelerator"),
        "accelerator": _object(meta_info, "system_info").get("accelerator"),
        "n_test_items": len(test_correct) if isinstance(test_correct, str) else math.nan,
        "peft_version": packages.get("peft-version"),
        "transformers_version": packages.get("transformers-version"),
        "torch_version": packages.get("torch-version"),
        "project_commit": run_info.get("project_commit"),
        "project_dirty": run_info.get("project_dirty"),
        "task_version": run_info.get("task_version"),
        "scoring_version": scoring_version(dict(data)),
        "file": str(file),
        "train_config": json.dumps(train_config, sort_keys=True, default=str),
        "peft_config": json.dumps(peft_config, sort_keys=True, default=str),
        "test_correct": test_correct if isinstance(test_correct, str) else None,
        "test_items_hash": train_info.get("test_items_hash"),
        "error_msg": run_info.get("error_msg") or "",
    }
    sections = {"final": final, "train_info": train_info, "run_info": run_info}
    for metric in _row_metrics(task):
        row[metric.name] = _number(_value(metric, sections))
    if task_metrics(task)[1]:  # no plug-in declares this task's metrics (a reference task, image-gen)
        row.update(_undeclared_test_metrics(final, taken=row))
    return row


def _undeclared_test_metrics(final: Mapping[str, Any], *, taken: Mapping[str, Any]) -> dict[str, float]:
    """The reference-format adapter for a task without a plug-in: each number of its final metrics
    dict becomes a column named after its key ("test dino_similarity" -> test_dino_similarity)."""
    out = {}
    for key, value in final.items():
        column = str(key).strip().replace(" ", "_").replace("-", "_")
        if (
            column not in taken
            and key != STEP
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            out[column] = float(value)
    return out


def task_metrics(task: str) -> tuple[tuple[Metric, ...], str]:
    """The task plug-in's metrics, or COMMON_METRICS with a note when no plug-in can be loaded; then
    the inference overhead columns (`join_overhead`: present where the task has inference records)."""
    from peftbench.tasks import get_task

    try:
        return (*get_task(task).metrics, *TABLE_OVERHEAD_METRICS), ""
    except (BadInput, ImportError, AttributeError) as exc:
        return (
            (*COMMON_METRICS, *TABLE_OVERHEAD_METRICS),
            f'task "{task}": no plug-in could be loaded ({exc}); showing the common metrics',
        )


def _row_metrics(task: str) -> tuple[Metric, ...]:
    """The columns a run's row has: the task's declared metrics (common ones where no plug-in loads)
    and the facts of every run."""
    metrics, _ = task_metrics(task)
    # a metric without a key is not in the result file (the overhead columns join from inference records)
    return tuple({m.name: m for m in (*metrics, *RUN_FACTS) if m.key and m.section != "step"}.values())


def _step_metrics(task: str) -> tuple[Metric, ...]:
    """The training curve's columns: the task plug-in's step metrics, the common ones where none loads."""
    from peftbench.tasks import get_task

    try:
        return tuple(get_task(task).step_metrics)
    except (BadInput, ImportError, AttributeError):
        return STEP_METRICS


def _value(metric: Metric, sections: Mapping[str, Mapping[str, Any]]) -> Any:
    section = sections[metric.section]
    if metric.key in section:
        return section[metric.key]
    return (
        section.get(_OLDER_TRAIN_INFO_KEYS.get(metric.key, ""), None)
        if metric.section == "train_info"
        else None
    )


def curve_rows(data: Mapping[str, Any], *, file: Path, task: str) -> list[dict[str, Any]]:
    """The evaluation log of one run (one dict per evaluation step), as the task's step metrics' columns."""
    step_metrics = _step_metrics(task)
    rows = []
    for entry in data["train_info"].get("metrics") or []:
        # the final dict (keys "test ...", in ours and the reference's files) is not a curve point
        if not isinstance(entry, dict) or STEP not in entry or any(str(k).startswith("test ") for k in entry):
            continue
        row: dict[str, Any] = {"file": str(file), STEP: _number(entry[STEP])}
        for metric in step_metrics:
            value = entry.get(metric.key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                row[metric.name] = float(value)
        rows.append(row)
    return rows


def rows_to_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The results table from rows of `record_to_row`, columns in display order."""
    if not rows:
        columns = [*ID_COLUMNS, *(m.name for m in COMMON_METRICS), *INFO_COLUMNS, *DETAIL_COLUMNS]
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, errors="coerce", format="ISO8601")
    df["seed"] = df["seed"].astype(int)
    metric_columns = [m.name for m in COMMON_METRICS]
    extra = sorted(
        c for c in df.columns if c not in {*ID_COLUMNS, *metric_columns, *INFO_COLUMNS, *DETAIL_COLUMNS}
    )
    ordered = [*ID_COLUMNS, *metric_columns, *extra, *INFO_COLUMNS, *DETAIL_COLUMNS]
    return df[[c for c in ordered if c in df.columns]].reset_index(drop=True)


def keep_latest(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the latest run (created_at) per IDENTITY (task, experiment with its variant, seed); return it
    and how many were dropped."""
    if df.empty:
        return df, 0
    latest = df.sort_values(["created_at", "file"], na_position="first").drop_duplicates(
        IDENTITY, keep="last"
    )
    latest = latest.sort_values(IDENTITY).reset_index(drop=True)
    return latest, len(df) - len(latest)


def load_results(paths: Iterable[str | Path], *, include_temporary: bool = False) -> Loaded:
    """Read every result file under the given results or task folders.

    Unreadable or foreign JSON files are skipped with a warning naming the file; runs whose status
    is not success are counted and left out; of several runs of one experiment and seed the
    latest is kept. No folder content at all gives an empty table (see `Loaded.summary`).
    """
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    warnings: list[str] = []
    notes: list[str] = []
    n_files = n_not_success = 0
    for folder in resolve_results_dirs(paths, include_temporary=include_temporary):
        for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            n_files += 1
            try:
                data = load_result(file)
            except BadInput as exc:
                warnings.append(f"skipped {exc}")
                continue
            if data["train_info"].get("status") != TrainStatus.SUCCESS:
                n_not_success += 1
                continue
            problem, flagged = check_fields(data)
            if problem:
                warnings.append(f"skipped {file}: {problem}")
                continue
            notes.extend(f"{file}: {flag} (shown as empty)" for flag in flagged)
            try:
                rows.append(record_to_row(data, file=file, task=task_of(data, file)))
            except (AttributeError, TypeError, ValueError) as exc:
                # passes the schema check but a field has the wrong type (e.g. a list where an object belongs)
                warnings.append(f"skipped {file}: unexpected field type ({exc})")
                continue
            curves.extend(curve_rows(data, file=file, task=task_of(data, file)))
    table, n_superseded = keep_latest(rows_to_table(rows))
    table, overhead_warnings = join_overhead(table)
    warnings.extend(overhead_warnings)
    curve_table = pd.DataFrame(curves, columns=None if curves else ["file", "step"])
    if not table.empty and not curve_table.empty:
        # curves of superseded runs go too; experiment and seed come from the runs table
        ids = table[["file", "task", "experiment_name", "seed", "family"]]
        curve_table = curve_table.merge(ids, on="file", how="inner")
    return Loaded(
        table=table,
        curves=curve_table,
        warnings=warnings,
        not_finite=notes,
        n_files=n_files,
        n_not_success=n_not_success,
        n_superseded=n_superseded,
    )


def available_metrics(df: pd.DataFrame, metrics: Iterable[Metric]) -> list[Metric]:
    """The metrics that have at least one value in `df`."""
    return [
        m
        for m in metrics
        if m.name in df.columns and pd.to_numeric(df[m.name], errors="coerce").notna().any()
    ]


def display_columns(df: pd.DataFrame) -> list[str]:
    """Columns for table views: everything except the bulky details and the file path."""
    return [c for c in df.columns if c not in DETAIL_COLUMNS and c != "file"]


def seed_summary(df: pd.DataFrame, metrics: Iterable[Metric], *, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (task, experiment): number of seeds, and per metric the mean and interval limits.

    Several seeds: a Student-t interval across seeds. One seed: for a "proportion" metric (test
    accuracy), the Wilson interval over the test items when the run stored its per-item results;
    otherwise no interval.
    Columns: `<metric>` (mean), `<metric>_low`, `<metric>_high` (NaN when there is no interval).
    """
    from peftbench.analysis.stats import t_interval, wilson_interval

    metrics = [m for m in metrics if m.name in df.columns]
    out = []
    for (task, experiment), group in df.groupby(["task", "experiment_name"], sort=True):
        first = group.iloc[0]
        row: dict[str, Any] = {
            "task": task,
            "experiment_name": experiment,
            "method": first["method"],
            "variant": first["variant"],
            "family": first["family"],
            "peft_type": first["peft_type"],
            "model_id": first["model_id"],
            "n_seeds": len(group),
        }
        for metric in metrics:
            values = pd.to_numeric(group[metric.name], errors="coerce").tolist()
            interval = t_interval(values, confidence=confidence)
            if interval.low is None and len(group) == 1 and metric.aggregate == "proportion":
                interval = _wilson_for_run(first, wilson_interval, confidence) or interval
            row[metric.name] = math.nan if interval.mean is None else interval.mean
            row[f"{metric.name}_low"] = math.nan if interval.low is None else interval.low
            row[f"{metric.name}_high"] = math.nan if interval.high is None else interval.high
        out.append(row)
    return pd.DataFrame(out)


def _wilson_for_run(row: pd.Series, wilson_interval, confidence: float):
    correct = row.get("test_correct")
    if not isinstance(correct, str) or not correct:
        return None
    return wilson_interval(correct.count("1"), len(correct), confidence=confidence)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(obj, list):
        return {prefix: json.dumps(obj, default=str)}
    return {prefix: obj}


def diff_runs(a: pd.Series, b: pd.Series, *, only_differences: bool = True) -> pd.DataFrame:
    """Side-by-side configs and metrics of two runs (rows of the results table): key, a, b."""

    def details(row: pd.Series) -> dict[str, Any]:
        out = {}
        for key, value in row.items():
            if key in ("train_config", "peft_config"):
                parsed = json.loads(value) if isinstance(value, str) and value else {}
                out.update(flatten(parsed, key))
            elif key not in ("test_correct",):
                out[str(key)] = value
        return out

    left, right = details(a), details(b)
    keys = list(dict.fromkeys([*left, *right]))
    rows = []
    for key in keys:
        va, vb = left.get(key), right.get(key)
        same = _same(va, vb)
        if same and only_differences:
            continue
        rows.append({"key": key, "a": _cell(va), "b": _cell(vb)})
    return pd.DataFrame(rows, columns=["key", "a", "b"])


def _same(a: Any, b: Any) -> bool:
    try:
        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    return bool(a == b) if not isinstance(a, list | dict) else a == b


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def tasks_in(table: pd.DataFrame) -> list[str]:
    return sorted(table["task"].dropna().unique()) if not table.empty else []


def choose_task(table: pd.DataFrame, task: str | None) -> str:
    """The task to show: `task` when given and present, else the only one; BadInput when ambiguous."""
    tasks = tasks_in(table)
    if task is not None:
        if task not in tasks:
            raise BadInput(
                f'no results of task "{task}"{did_you_mean(task, tasks)}; tasks: {", ".join(tasks)}'
            )
        return task
    if len(tasks) > 1:
        raise BadInput(f"results of several tasks ({', '.join(tasks)}): choose one with --task")
    if not tasks:
        raise BadInput(NO_RESULTS)
    return tasks[0]


def select(table: pd.DataFrame, *, task: str | None = None, model_id: str | None = None) -> pd.DataFrame:
    """The runs of one task and (optionally) one base model."""
    rows = table
    if task is not None:
        rows = rows[rows["task"] == task]
    if model_id is not None:
        rows = rows[rows["model_id"].fillna("") == model_id]
    return rows


def compact_columns(df: pd.DataFrame, metrics: Iterable[Metric]) -> list[str]:
    """The columns worth a glance: identity, the metrics that have values, when."""
    metric_names = [m.name for m in available_metrics(df, metrics)]
    return ["experiment_name", "seed", "family", *metric_names, "created_at"]


def mark_tied_with_best(table: pd.DataFrame, metric: Metric, *, alpha: float = 0.05) -> pd.Series:
    """Per run: whether its experiment is not significantly different from the best of its variant on
    `metric` (peftbench.analysis.stats.best_comparisons); <NA> where it cannot be told (one seed, no
    items). The one function behind every `tied_with_best` column: the app and the report call it."""
    from peftbench.analysis.stats import best_comparisons

    if table.empty or metric.name not in table.columns:
        return pd.Series(pd.NA, index=table.index, dtype="boolean")
    per_experiment = best_comparisons(
        table, metric.name, higher_is_better=metric.higher_is_better, alpha=alpha
    )
    tied = per_experiment["tied_with_best"]
    return table["experiment_name"].map(tied).astype("boolean")


def whole_number_columns(df: pd.DataFrame) -> list[str]:
    """Numeric columns whose values are all whole numbers (bytes, counts): shown without decimals."""
    out = []
    for column in df.columns:
        if df[column].dtype.kind not in "fiu" or df[column].dtype.kind == "b":
            continue
        values = pd.to_numeric(df[column], errors="coerce").dropna()
        if not values.empty and bool((values == values.round()).all()):
            out.append(column)
    return out
