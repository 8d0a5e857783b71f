"""Experiment folders: path checks, naming, config loading and result-file routing.

An experiment is `benchmarks/<task>/experiments/<method>/<name>/` holding `adapter_config.json`
(none = full fine-tuning) and optionally `training_params.json` (differences from the task's
`default_training_params.json`). Its id is `<method>/<name>`; its result file names follow from it.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config import OVERRIDES, TrainConfig, build_config, read_json_object
from peftbench.errors import BadInput, did_you_mean
from peftbench.files import (
    ADAPTER_CONFIG,
    COMMITTED_RESULT_DIRS,
    DEFAULT_PARAMS,
    PARITY_RESULTS,
    QUICK_PARAMS,
    RESULT_DIRS,
    RESULTS,
    TRAINING_PARAMS,
)

# peft types that need a module peft does not depend on: (module, its pip package, peftbench's extra)
OPTIONAL_MODULES = {"ADAMSS": ("sklearn", "scikit-learn", "methods")}
# adapter settings that count training steps: peft type -> (the schedule's length, its phases)
STEP_SCHEDULES = {"ADALORA": ("total_step", ("tinit", "tfinal"))}
LAYER_LABELS = {
    DEFAULT_PARAMS: "default",
    TRAINING_PARAMS: "experiment",
    QUICK_PARAMS: "quick",
    OVERRIDES: "--set",
}


@dataclass(frozen=True)
class Experiment:
    path: Path  # the experiment folder, absolute
    task_dir: Path  # benchmarks/<task>, absolute

    @property
    def method(self) -> str:
        return self.path.parent.name

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def experiment_name(self) -> str:
        return f"{self.method}/{self.name}"

    @property
    def task_name(self) -> str:
        return self.task_dir.name

    @property
    def adapter_config_path(self) -> Path:
        return self.path / ADAPTER_CONFIG

    @property
    def training_params_path(self) -> Path:
        return self.path / TRAINING_PARAMS

    @property
    def is_full_finetuning(self) -> bool:
        return not self.adapter_config_path.exists()

    def config_files(self) -> list[Path]:
        """The files whose content defines the run (for staleness and provenance)."""
        files = [self.task_dir / DEFAULT_PARAMS, self.adapter_config_path, self.training_params_path]
        return [f for f in files if f.exists()]

    def result_stem(self, seed: int = 0) -> str:
        """`<method>--<name>`; seeds other than 0 add `--seed<N>` (seed 0 keeps the reference's name)."""
        stem = f"{self.method}--{self.name}"
        return stem if seed == 0 else f"{stem}--seed{seed}"

    @property
    def results_kind(self) -> str:
        """Where its successful runs on main go: results/, or parity_results/ when its
        training_params.json turns on `reference_parity` (kept apart from the main results)."""
        try:
            params = json.loads(self.training_params_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return RESULTS  # no file, or a broken one that loading the config reports
        parity = isinstance(params, dict) and params.get("reference_parity") is True
        return PARITY_RESULTS if parity else RESULTS

    def result_path(self, *, kind: str, seed: int = 0, timestamp: str = "") -> Path:
        if kind not in RESULT_DIRS:
            raise ValueError(kind)
        suffix = f"--{timestamp}" if kind not in COMMITTED_RESULT_DIRS else ""
        return self.task_dir / kind / f"{self.result_stem(seed)}{suffix}.json"


def resolve_experiment(path: str | Path) -> Experiment:
    """Check that `path` is `<task>/experiments/<method>/<name>` inside its task: no `..`, no links."""
    raw = Path(path)
    if ".." in raw.parts:
        raise BadInput(f"{path}: experiment paths must not contain '..'")
    if not raw.exists():
        raise BadInput(f"{path}: no such experiment folder{_closest_experiment(raw)}")
    if not raw.is_dir():
        raise BadInput(f"{path}: not a folder; expected <task>/experiments/<method>/<name>")
    absolute = raw.absolute()
    for parent in [absolute, *absolute.parents][:4]:
        if parent.is_symlink():
            raise BadInput(f"{path}: {parent} is a symbolic link; experiment folders must be real folders")
    parts = absolute.parts
    if len(parts) < 5 or parts[-3] != "experiments":
        raise BadInput(f"{path}: not an experiment folder; expected <task>/experiments/<method>/<name>")
    task_dir = absolute.parents[2]
    if not (task_dir / DEFAULT_PARAMS).is_file():
        raise BadInput(f"{path}: the task folder {task_dir} has no {DEFAULT_PARAMS}")
    return Experiment(path=absolute, task_dir=task_dir)


def _closest_experiment(raw: Path) -> str:
    """' (did you mean "<folder>"?)' for the existing experiment folder closest to a path that does not
    exist, or ''. Only the parts below a common base (the task's experiments folder where the path is
    inside a task) are compared, so that a long shared prefix does not make every name look close."""
    existing = next(p for p in raw.parents if p.exists())
    task_dir = next((p for p in [existing, *existing.parents][:3] if (p / DEFAULT_PARAMS).is_file()), None)
    if task_dir is None:
        base = existing
        candidates = [*base.glob("*/experiments/*/*"), *base.glob("benchmarks/*/experiments/*/*")]
    else:
        inside = raw.parts[: len(task_dir.parts) + 1] == (*task_dir.parts, "experiments")
        base = task_dir / "experiments" if inside else task_dir
        candidates = list(task_dir.glob("experiments/*/*"))
    depth = len(base.parts)
    tails = {str(Path(*c.parts[depth:])): c for c in candidates if c.is_dir()}
    close = difflib.get_close_matches(str(Path(*raw.parts[depth:])), list(tails), n=1, cutoff=0.6)
    return f' (did you mean "{tails[close[0]]}"?)' if close else ""


def discover(task_dir: str | Path) -> list[Experiment]:
    """Every experiment folder of a task, sorted by id."""
    task_dir = Path(task_dir).absolute()
    if not (task_dir / DEFAULT_PARAMS).is_file():
        raise BadInput(f"{task_dir}: not a task folder (no {DEFAULT_PARAMS})")
    found = [
        Experiment(path=p, task_dir=task_dir)
        for p in sorted((task_dir / "experiments").glob("*/*"))
        if p.is_dir() and not p.name.startswith(".")
    ]
    return found


def config_layers(
    exp: Experiment, *, quick: bool = False, overrides: dict[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(source, params) in the order they apply: defaults, the experiment's differences, the quick
    variant, command-line overrides."""
    layers = [(str(exp.task_dir / DEFAULT_PARAMS), read_json_object(exp.task_dir / DEFAULT_PARAMS))]
    if exp.training_params_path.exists():
        layers.append((str(exp.training_params_path), read_json_object(exp.training_params_path)))
    if quick:
        quick_path = exp.task_dir / QUICK_PARAMS
        if not quick_path.is_file():
            raise BadInput(f"{exp.task_dir}: --quick needs {QUICK_PARAMS} in the task folder")
        layers.append((str(quick_path), read_json_object(quick_path)))
    if overrides:
        layers.append((OVERRIDES, overrides))
    return layers


def layer_label(source: str) -> str:
    """A layer's short name for people: default | experiment | quick | --set."""
    return LAYER_LABELS.get(Path(source).name, source)


def load_train_config(
    exp: Experiment, *, quick: bool = False, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the experiment's differences, then the quick variant, then command-line overrides."""
    return build_config(config_layers(exp, quick=quick, overrides=overrides))


def load_peft_config(exp: Experiment) -> Any:
    """The experiment's PeftConfig, or None for full fine-tuning. BadInput for configs peft cannot read."""
    if exp.is_full_finetuning:
        return None
    from peft import PeftConfig
    from peft.utils import PeftType

    raw = read_json_object(exp.adapter_config_path)
    peft_type = raw.get("peft_type")
    known = [t.value for t in PeftType]
    if peft_type not in known:
        raise BadInput(
            f'{exp.adapter_config_path}: unknown or missing "peft_type" {peft_type!r}'
            f"{did_you_mean(str(peft_type), known)}; the installed peft knows: {', '.join(sorted(known))}"
        )
    _check_optional_module(peft_type, where=exp.adapter_config_path)
    try:
        return PeftConfig.from_pretrained(str(exp.path))
    except (TypeError, ValueError, KeyError) as exc:
        raise BadInput(f"{exp.adapter_config_path}: peft cannot use this config: {exc}") from None


def schedule_warnings(exp: Experiment, config: TrainConfig, peft_config: Any) -> list[str]:
    """One line per adapter schedule whose length is not the run's `max_steps`.

    Warned, not scaled: scaling would train another config than the file's, and a result's identity
    is its config files; the reference's files (5000 steps) run shortened with `--quick` or `--set`."""
    peft_type = getattr(getattr(peft_config, "peft_type", None), "value", None)
    if peft_type not in STEP_SCHEDULES:
        return []
    key, phases = STEP_SCHEDULES[peft_type]
    length = getattr(peft_config, key)
    if length == config.max_steps:
        return []
    shown = ", ".join(f"{p} {getattr(peft_config, p)}" for p in phases)
    effect = "stops before its schedule ends" if config.max_steps < length else "runs past its schedule's end"
    return [
        f'{exp.adapter_config_path}: {peft_type} "{key}" is {length} ({shown}) but "max_steps" is '
        f'{config.max_steps}: training {effect}; set "{key}" to max_steps and fit {" and ".join(phases)}'
    ]


def _check_optional_module(peft_type: str, *, where: Path) -> None:
    """Before peft imports it (in the config, or at initialisation after the model loads)."""
    if peft_type not in OPTIONAL_MODULES:
        return
    module, package, extra = OPTIONAL_MODULES[peft_type]
    if importlib.util.find_spec(module) is None:
        raise BadInput(
            f"{where}: {peft_type} needs {package}, which is not installed: pip install 'peftbench[{extra}]'"
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hashes(exp: Experiment) -> dict[str, str]:
    """sha256 of each config file, recorded in the result so that staleness survives a fresh clone."""
    return {f.name: sha256_file(f) for f in exp.config_files()}
