"""The contribution rules as automatic checks: experiment folders and result files in, findings out.

Each check returns `Finding`s (path, level, rule id, message); nothing here prints, writes or trains.
`lint(paths)` runs every rule on task folders or experiment folders; `peftbench lint` is a thin layer
over it. The rules and the reasons behind their levels are documented in docs/lint.md.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peftbench.config import TrainConfig, build_config, read_json_object
from peftbench.errors import BadInput, did_you_mean
from peftbench.experiment import (
    Experiment,
    config_hashes,
    discover,
    load_peft_config,
    resolve_experiment,
)
from peftbench.files import ADAPTER_CONFIG, COMMITTED_RESULT_DIRS, DEFAULT_PARAMS, EXPERIMENTS, RESULT_DIRS
from peftbench.results import load_result

Level = Literal["error", "warning"]
# wraps the experiments a task's check goes through, e.g. in a progress bar: (experiments, task name)
Progress = Callable[[list[Experiment], str], Iterable[Experiment]]

# Training parameters that change what a result measures: a run that changes one of them is not
# comparable with the task's other runs (a larger budget or a different model always "wins").
COMPARABILITY_KEYS = ("model_id", "max_steps", "batch_size", "gradient_accumulation_steps", "max_seq_length")
MAX_CHANGED_KEYS = 2
NEAR_DUPLICATE_RELATIVE = 0.10

# peft config keys that describe the run rather than the method, or that peft fills in at run time.
RUNTIME_PEFT_KEYS = frozenset({"peft_version", "base_model_name_or_path", "revision", "inference_mode"})
# A null in the file means "peft's default for this model"; the result records what that resolved to.
FILLED_WHEN_NULL = frozenset({"target_modules", "feedforward_modules"})
# Prompt-learning configs: peft derives these from the base model (and rescales them for models with
# grouped-query attention), so the recorded values need not match the file.
MODEL_SHAPE_KEYS = frozenset(
    {"num_attention_heads", "token_dim", "num_layers", "num_transformer_submodules", "encoder_hidden_size"}
)
# Per peft_type, keys that the method itself fills during training (AdaLoRA's rank allocation).
FILLED_BY_METHOD = {"ADALORA": frozenset({"rank_pattern"})}


@dataclass(frozen=True)
class Finding:
    path: str
    level: Level
    rule: str
    message: str

    def line(self) -> str:
        return f"{self.path}: {self.level}: {self.message} [{self.rule}]"

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def show(path: Path) -> str:
    """A path for messages: relative to the working directory when it lies below it, else absolute."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def canonical(value: Any) -> Any:
    """JSON-like form for comparisons: sets sorted (peft stores target_modules as a set), enums as values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=repr)
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value is False or value in ({}, [], "")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(canonical(value), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strip_source(message: str, source: Path | str) -> str:
    """BadInput messages start with the file name; a finding names the file already."""
    for prefix in (f"{source}: ", f"{show(Path(source))}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


# ---------------------------------------------------------------------------------------------------
# adapter_config.json


def _peft_version_newer(recorded: Any) -> bool:
    """Whether a config's "peft_version" (e.g. "0.19.2.dev0@UNKNOWN") is newer than the installed peft."""
    import peft
    from packaging.version import InvalidVersion, Version

    if not isinstance(recorded, str):
        return False
    try:
        return Version(recorded.split("@")[0]) > Version(peft.__version__)
    except InvalidVersion:
        return False


def check_adapter_config(exp: Experiment) -> tuple[list[Finding], Any]:
    """Findings for adapter_config.json and the PeftConfig as the runner loads it (None when it cannot)."""
    if exp.is_full_finetuning:
        return [], None
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    path = show(exp.adapter_config_path)
    try:
        raw = read_json_object(exp.adapter_config_path)
    except BadInput as exc:
        return [
            Finding(path, "error", "adapter-config", _strip_source(str(exc), exp.adapter_config_path))
        ], None
    peft_type = raw.get("peft_type")
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        known = sorted(getattr(t, "value", str(t)) for t in PEFT_TYPE_TO_CONFIG_MAPPING)
        message = (
            f'unknown or missing "peft_type" {json.dumps(peft_type)}{did_you_mean(str(peft_type), known)}; '
            f"peft {peft.__version__} knows: {', '.join(known)}"
        )
        return [Finding(path, "error", "adapter-config", message)], None

    findings = []
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
    fields = [f.name for f in dataclasses.fields(config_cls)]
    newer = _peft_version_newer(raw.get("peft_version"))
    for key in sorted(set(raw) - set(fields)):
        hint = did_you_mean(key, fields)
        if newer:
            findings.append(
                Finding(
                    path,
                    "warning",
                    "unknown-peft-key",
                    f'key "{key}" is unknown to the installed peft {peft.__version__}, older than the '
                    f"peft {raw['peft_version']} that wrote this file: upgrade peft",
                )
            )
        elif _is_empty(raw[key]):
            findings.append(
                Finding(
                    path,
                    "warning",
                    "unknown-peft-key",
                    f'key "{key}" is unknown to {config_cls.__name__} in peft {peft.__version__}; peft '
                    f"ignores it, which changes nothing since its value is {_short(raw[key])}: remove it",
                )
            )
        else:
            findings.append(
                Finding(
                    path,
                    "error",
                    "unknown-peft-key",
                    f'key "{key}"{hint} is unknown to {config_cls.__name__} in peft {peft.__version__}, '
                    f"which would silently ignore its value {_short(raw[key])}",
                )
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft warns about the unknown keys reported above
            config = load_peft_config(exp)
    except BadInput as exc:
        message = _strip_source(str(exc), exp.adapter_config_path)
        return [*findings, Finding(path, "error", "adapter-config", message)], None
    return findings, config


# ---------------------------------------------------------------------------------------------------
# training_params.json


def _defaults_layer(task_dir: Path) -> tuple[list[Finding], dict[str, Any] | None]:
    """The task defaults, checked as a complete config on their own."""
    source = task_dir / DEFAULT_PARAMS
    try:
        params = read_json_object(source)
        build_config([(show(source), params)])
    except BadInput as exc:
        return [Finding(show(source), "error", "training-params", _strip_source(str(exc), source))], None
    return [], params


def _default_value(defaults: dict[str, Any], key: str) -> Any:
    if key in defaults:
        return defaults[key]
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(key)
    return None if field is None or field.default is dataclasses.MISSING else field.default


def check_training_params(exp: Experiment, defaults: dict[str, Any]) -> tuple[list[Finding], Any]:
    """Findings for training_params.json and the resolved TrainConfig (None when it does not build)."""
    layers = [(show(exp.task_dir / DEFAULT_PARAMS), defaults)]
    path_obj = exp.training_params_path
    path = show(path_obj)
    params: dict[str, Any] = {}
    if path_obj.exists():
        try:
            params = read_json_object(path_obj)
        except BadInput as exc:
            return [Finding(path, "error", "training-params", _strip_source(str(exc), path_obj))], None
        layers.append((path, params))
    try:
        config = build_config(layers)
    except BadInput as exc:
        return [Finding(path, "error", "training-params", _strip_source(str(exc), path))], None

    findings = []
    changed = [k for k in params if canonical(params[k]) != canonical(_default_value(defaults, k))]
    for key in (k for k in COMPARABILITY_KEYS if k in changed):
        findings.append(
            Finding(
                path,
                "warning",
                "not-comparable",
                f'"{key}" is {_short(params[key])} instead of the task default '
                f"{_short(_default_value(defaults, key))}: results are not comparable with the task's "
                "other runs",
            )
        )
    if len(changed) > MAX_CHANGED_KEYS:
        findings.append(
            Finding(
                path,
                "warning",
                "too-many-changes",
                f"changes {len(changed)} training parameters at once ({', '.join(changed)}); change at most "
                f"{MAX_CHANGED_KEYS}, so that a difference in results can be attributed",
            )
        )
    return findings, config


# ---------------------------------------------------------------------------------------------------
# naming and near-duplicates


def check_naming(exp: Experiment) -> list[Finding]:
    from peftbench.tasks import get_task

    try:
        prefix = get_task(exp.task_name).base_model_short
    except BadInput as exc:
        return [Finding(show(exp.task_dir), "error", "unknown-task", str(exc))]
    if not prefix or exp.name.startswith(prefix):
        return []
    return [
        Finding(
            show(exp.path),
            "warning",
            "naming",
            f'experiment name "{exp.name}" should start with the base model\'s short name "{prefix}" '
            f'(e.g. "{prefix}-{exp.name}")',
        )
    ]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def signature(peft_config: Any, train_config: TrainConfig) -> dict[str, Any]:
    """Everything that defines an experiment's run, flattened to dotted keys, for near-duplicate checks."""
    sig = {f"training.{k}": v for k, v in _flatten(canonical(train_config.to_dict())).items()}
    if peft_config is not None:
        adapter = {k: v for k, v in canonical(peft_config.to_dict()).items() if k not in RUNTIME_PEFT_KEYS}
        sig.update({f"adapter.{k}": v for k, v in _flatten(adapter).items()})
    return sig


def _close(x: float, y: float) -> bool:
    return abs(x - y) < NEAR_DUPLICATE_RELATIVE * max(abs(x), abs(y))


def near_duplicate(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Describe how `b` nearly duplicates `a` (same config, or one number within 10%), else None."""
    differing = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if not differing:
        return "has the same configuration"
    if len(differing) > 1:
        return None
    key = differing[0]
    x, y = a.get(key), b.get(key)
    if not (_is_number(x) and _is_number(y)):
        return None
    if not _close(x, y) or (min(x, y) >= 0 and max(x, y) <= 1 and not _close(1 - x, 1 - y)):
        # a fraction (dropout, sparsity) is near only if its complement is too: 0.974 and 0.9935
        # sparsity are 2% apart, but keep 2.6% and 0.65% of the weights, four times as many
        return None
    return (
        f"differs only in {key.split('.', 1)[1]} ({x} vs {y}, less than {NEAR_DUPLICATE_RELATIVE:.0%} apart)"
    )


# ---------------------------------------------------------------------------------------------------
# results: edited experiments and orphans


def _peft_differences(recorded: dict[str, Any], current: Any, *, file_keys: set[str]) -> tuple[list, list]:
    """(edits, drift): keys whose recorded value differs from the current file's. Differences in keys
    that the file does not set are peft-default drift when the result was made with another peft."""
    import peft
    from peft import PeftConfig

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # read the recorded config through the installed peft too, so that both sides get the
            # same defaults and normalisation (missing new keys, list -> set)
            rec = canonical(PeftConfig.from_peft_type(**recorded).to_dict())
    except (TypeError, ValueError, KeyError):
        rec = canonical(recorded)
    cur = canonical(current.to_dict())
    ignored = set(RUNTIME_PEFT_KEYS) | FILLED_BY_METHOD.get(str(cur.get("peft_type")), frozenset())
    if current.is_prompt_learning:
        ignored |= MODEL_SHAPE_KEYS
    same_peft = str(recorded.get("peft_version", "")).split("@")[0] == peft.__version__
    edits, drift = [], []
    for key in sorted((set(rec) | set(cur)) - ignored):
        if rec.get(key) == cur.get(key) or (key in FILLED_WHEN_NULL and cur.get(key) is None):
            continue
        change = (key, rec.get(key), cur.get(key))
        (drift if key not in file_keys and not same_peft else edits).append(change)
    return edits, drift


def _train_differences(recorded: dict[str, Any], current: TrainConfig) -> list[tuple[str, Any, Any]]:
    """Keys whose recorded value differs from the current config. Keys a result lacks (the reference's
    files predate our additions) take TrainConfig's default, which is always 'off'. The seed is not
    part of an experiment: one experiment has a result per seed."""
    rec = {
        **{
            f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
        },
        **recorded,
    }
    cur = current.to_dict()
    keys = sorted((set(rec) | set(cur)) - {"seed"})
    return [(k, rec.get(k), cur.get(k)) for k in keys if canonical(rec.get(k)) != canonical(cur.get(k))]


def _describe(changes: list[tuple[str, Any, Any]]) -> str:
    parts = [f"{k} (recorded {_short(r, 24)}, now {_short(c, 24)})" for k, r, c in changes[:3]]
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return ", ".join(parts) + more


def check_edited(
    exp: Experiment, *, result_path: Path, record: dict[str, Any], peft_config: Any, train_config: TrainConfig
) -> list[Finding]:
    """A committed result must describe the experiment folder as it is now."""
    run_info = record["run_info"]
    recorded_hashes = run_info.get("config_files_sha256")
    if recorded_hashes and recorded_hashes == config_hashes(exp):
        return []
    path, where = show(exp.path), show(result_path)
    for key in ("train_config", "peft_config"):
        if not isinstance(run_info.get(key), dict | None):
            return [Finding(where, "error", "result-file", f"run_info.{key} is not an object")]
    changes = []
    if "train_config" in run_info:
        changes += [
            (f"training {k}", r, c) for k, r, c in _train_differences(run_info["train_config"], train_config)
        ]
    recorded_peft = run_info.get("peft_config")
    drift: list[tuple[str, Any, Any]] = []
    if (recorded_peft is None) != (peft_config is None):
        was = "full fine-tuning" if recorded_peft is None else "an adapter"
        changes.append((ADAPTER_CONFIG, was, "full fine-tuning" if peft_config is None else "an adapter"))
    elif peft_config is not None:
        file_keys = set(read_json_object(exp.adapter_config_path))
        edits, drift = _peft_differences(recorded_peft, peft_config, file_keys=file_keys)
        changes += [(f"adapter {k}", r, c) for k, r, c in edits]
    findings = []
    if changes:
        findings.append(
            Finding(
                path,
                "error",
                "edited-experiment",
                f"the folder no longer matches its committed result {where}: {_describe(changes)}; "
                "create a new experiment instead of editing one that has results",
            )
        )
    if drift:
        findings.append(
            Finding(
                path,
                "warning",
                "peft-default-drift",
                f"peft's defaults changed since {where} was made (peft "
                f"{str(recorded_peft.get('peft_version', '?')).split('@')[0]}): {_describe(drift)}; "
                "the file is unchanged, but a re-run would not reproduce the result",
            )
        )
    return findings


def _result_files(task_dir: Path) -> Iterable[Path]:
    for kind in RESULT_DIRS:
        yield from sorted((task_dir / kind).glob("*.json"))


def _experiment_name(result_path: Path, record: dict[str, Any] | None) -> str:
    if record is not None:
        return record["run_info"]["experiment_name"]
    method, _, rest = result_path.stem.partition("--")
    return f"{method}/{rest.split('--')[0]}"


# ---------------------------------------------------------------------------------------------------
# driver


@dataclass
class _Loaded:
    exp: Experiment
    findings: list[Finding]
    peft_config: Any
    train_config: TrainConfig | None

    @property
    def ok(self) -> bool:
        return self.train_config is not None and (self.exp.is_full_finetuning or self.peft_config is not None)


def _load(exp: Experiment, defaults: dict[str, Any]) -> _Loaded:
    adapter_findings, peft_config = check_adapter_config(exp)
    train_findings, train_config = check_training_params(exp, defaults)
    space_findings = check_search_space(exp) if train_config is not None else []
    return _Loaded(exp, [*adapter_findings, *train_findings, *space_findings], peft_config, train_config)


def check_search_space(exp: Experiment) -> list[Finding]:
    """search_space.json (what `peftbench tune` searches besides the lr) as tune reads it."""
    from peftbench import tuning

    path = exp.path / tuning.SPACE_FILE
    if not path.exists():
        return []
    try:
        tuning.load_space(exp)
    except BadInput as exc:
        return [Finding(show(path), "error", "search-space", _strip_source(str(exc), path))]
    return []


def _tuned_pair(a: Experiment, b: Experiment) -> bool:
    """A search's outcome and its source differ only in the searched keys, by design (and are the
    same config when the source's own values won)."""
    from peftbench.tuning import search_outcome

    return any(search_outcome(y) == x for x, y in ((a, b), (b, a)))


@dataclass
class LintRun:
    """What `check` looked at and found."""

    findings: list[Finding] = dataclasses.field(default_factory=list)
    experiments: int = 0  # experiment folders checked
    results: int = 0  # result files read

    def count(self, level: Level) -> int:
        return sum(f.level == level for f in self.findings)


def lint_task(
    task_dir: Path, *, only: Sequence[Experiment] | None = None, progress: Progress | None = None
) -> LintRun:
    """Every rule for a task folder, or for the experiments `only` (then without the orphan check)."""
    findings, defaults = _defaults_layer(task_dir)
    if defaults is None:
        return LintRun(findings)
    experiments = discover(task_dir)
    selected = {e.experiment_name for e in (only if only is not None else experiments)}
    walk = progress(experiments, task_dir.name) if progress is not None else experiments
    # every experiment of the task is loaded, not only the selected ones: near-duplicates span them all
    loaded = {e.experiment_name: _load(e, defaults) for e in walk}
    for name in sorted(selected):
        item = loaded[name]
        findings += item.findings + check_naming(item.exp)
        findings += _near_duplicates(item, loaded.values())

    results: dict[str, list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    result_files = list(_result_files(task_dir))
    for result_path in result_files:
        try:
            record: dict[str, Any] | None = load_result(result_path)
        except BadInput as exc:
            record = None
            if only is None:
                message = _strip_source(str(exc), result_path)
                findings.append(Finding(show(result_path), "error", "result-file", message))
        name = _experiment_name(result_path, record)
        if name not in loaded and only is None:
            findings.append(
                Finding(
                    show(result_path),
                    "warning",
                    "orphan",
                    f'no experiment folder "experiments/{name}" for this result: restore the folder or '
                    "remove the result",
                )
            )
        if record is not None and result_path.parent.name in COMMITTED_RESULT_DIRS:
            results[name].append((result_path, record))
    for name in sorted(selected):
        item = loaded[name]
        if not item.ok:
            continue  # the folder's own errors are reported; comparing a broken config says nothing more
        for result_path, record in results.get(name, []):
            findings += check_edited(
                item.exp,
                result_path=result_path,
                record=record,
                peft_config=item.peft_config,
                train_config=item.train_config,
            )
    return LintRun(findings, experiments=len(selected), results=len(result_files))


def _near_duplicates(item: _Loaded, everything: Iterable[_Loaded]) -> list[Finding]:
    if not item.ok:
        return []
    mine = signature(item.peft_config, item.train_config)
    findings = []
    for other in everything:
        if other.exp == item.exp or other.exp.method != item.exp.method or not other.ok:
            continue
        if _tuned_pair(item.exp, other.exp):
            continue
        how = near_duplicate(mine, signature(other.peft_config, other.train_config))
        if how:
            findings.append(
                Finding(
                    show(item.exp.path),
                    "warning",
                    "near-duplicate",
                    f"{how} as {other.exp.experiment_name}: a near-duplicate adds a run, not information",
                )
            )
    return findings


def _targets(paths: Sequence[str | Path]) -> dict[Path, list[Experiment] | None]:
    """Task folder -> the experiments to check (None: the whole task). BadInput for anything else."""
    targets: dict[Path, list[Experiment] | None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / DEFAULT_PARAMS).is_file():
            targets[path.absolute()] = None
            continue
        if path.is_dir() and path.parent.name == EXPERIMENTS and not path.is_symlink():
            folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        else:  # one experiment folder
            folders = [path]
        for folder in folders:
            try:
                exp = resolve_experiment(folder)
            except BadInput as exc:
                raise BadInput(
                    f"{exc} (or a method folder, or a task folder holding {DEFAULT_PARAMS})"
                ) from None
            chosen = targets.setdefault(exp.task_dir, [])
            if chosen is not None:
                chosen.append(exp)
    return targets


def default_paths(root: Path = Path("benchmarks")) -> list[Path]:
    """Every task folder under ./benchmarks, for `peftbench lint` without arguments."""
    tasks = sorted(p for p in root.glob("*") if (p / DEFAULT_PARAMS).is_file())
    if not tasks:
        raise BadInput(f"{root}: no task folders (with {DEFAULT_PARAMS}) found; name the folders to check")
    return tasks


def lint(paths: Sequence[str | Path]) -> list[Finding]:
    """Run every rule on task folders and/or experiment folders; findings sorted by path."""
    return check(paths).findings


def check(paths: Sequence[str | Path], *, progress: Progress | None = None) -> LintRun:
    """`lint`, with how many experiments and result files were checked; `progress` sees each task's
    experiments go by (the slow part: the first one imports peft)."""
    run = LintRun()
    for task_dir, only in _targets(paths).items():
        task = lint_task(task_dir, only=only, progress=progress)
        run.findings += task.findings
        run.experiments += task.experiments
        run.results += task.results
    unique = dict.fromkeys(run.findings)  # an experiment named twice is checked once
    run.findings = sorted(unique, key=lambda f: (f.path, f.level != "error", f.rule, f.message))
    return run
