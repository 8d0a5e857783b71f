"""Equal-budget hyperparameter search per experiment (`peftbench tune`), on the validation split only.

Optuna does the sampling (TPE), the pruning (successive halving, asynchronous: ASHA) and the storage
(a journal file beside the task, `tuning/<method>--<name>.log`, which several processes can share
and a stopped search resumes from). A trial is a run through the same loop as `peftbench run`
(`train.train`), with `final_test=False`: the test split is removed from the trial's data and never
tokenised nor scored. Each trial's record goes to `tuning/<method>--<name>/trial-NNNN.json`, never
beside the benchmark's results. The best complete trial becomes the experiment `<name>-tuned`,
which differs from its source only in the searched keys and carries `tuning.json` (provenance).

A worker process runs one experiment's study at a time (a file lock makes that so), so a trial
left RUNNING in the journal when its worker was killed is dead: it is marked failed and its
parameters are run again first. Finished trials (complete or pruned) are never rerun.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.errors import BadInput
from peftbench.experiment import (
    ADAPTER_CONFIG,
    TRAINING_PARAMS,
    Experiment,
    discover,
    load_peft_config,
    load_train_config,
    resolve_experiment,
)
from peftbench.files import (
    RESULTS,
    TUNING,  # in the task folder: one journal and one trial-record folder per experiment
)
from peftbench.results import TrainStatus
from peftbench.tasks.base import STEP, STEP_EVAL_TIME, VALID_ACCURACY

SPACE_FILE = "search_space.json"  # optional, in the experiment folder: keys searched besides the lr
PROVENANCE_FILE = "tuning.json"  # in a tuned experiment's folder
TUNED_SUFFIX = "-tuned"
TRIAL_SCHEMA = "peftbench-trial/1"
LR_KEY = "optimizer_kwargs.lr"
LR_DECADES = 1.0  # the default lr range: the experiment's lr times 10**-1 .. 10**1 (two decades)
ADAPTER_PREFIX = "adapter."  # search_space.json keys with it name adapter_config.json fields
REDUCTION_FACTOR = 3  # successive halving: a third of the trials at a checkpoint go on
MAX_FAILURES = 3  # trials that fail with an error (not a diverging loss) before a study gives up
SPEC_KEYS = {"low", "high", "log", "type", "choices"}


@dataclass(frozen=True)
class Param:
    """One searched key: a training parameter (dotted, as `--set` takes it) or `adapter.<field>`."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    type: str = "float"  # float | int | categorical
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"key": self.key, "choices": list(self.choices)}
        return {"key": self.key, "low": self.low, "high": self.high, "log": self.log, "type": self.type}


# A best value within this fraction of its range (on the log scale where the range is log) of a bound
# is at an edge: the optimum may lie outside the range searched.
EDGE_FRACTION = 0.1


def at_edges(space: list[dict[str, Any]], best_params: dict[str, Any] | None) -> list[str]:
    """The searched keys whose best value lies at an edge of its range, as "<key> at the top" or
    "<key> at the bottom" (`space`: `Param.to_dict()`s, as tuning.json stores them)."""
    found = []
    for spec in space:
        value = (best_params or {}).get(spec["key"])
        if "low" not in spec or not isinstance(value, (int, float)) or not spec["high"] > spec["low"]:
            continue
        scale = math.log if spec.get("log") else float
        where = (scale(value) - scale(spec["low"])) / (scale(spec["high"]) - scale(spec["low"]))
        if where >= 1 - EDGE_FRACTION:
            found.append(f"{spec['key']} at the top")
        elif where <= EDGE_FRACTION:
            found.append(f"{spec['key']} at the bottom")
    return found


@dataclass(frozen=True)
class Budget:
    """What every experiment gets alike: trials, and the training steps of each (the task's)."""

    trials: int
    max_steps: int
    eval_steps: int
    seed: int = 0  # the sampler's seed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- the search space ----------------------------------------------------------------------------


def default_lr_param(lr: float) -> Param:
    return Param(LR_KEY, low=lr * 10**-LR_DECADES, high=lr * 10**LR_DECADES, log=True)


def load_space(exp: Experiment) -> list[Param]:
    """The lr (log-uniform around the experiment's own, two decades) and what search_space.json adds.

    BadInput names the file and the key for an unknown key, a bad spec or an empty range."""
    config = load_train_config(exp)
    params = {LR_KEY: default_lr_param(float(config.optimizer_kwargs["lr"]))}
    path = exp.path / SPACE_FILE
    if path.exists():
        from peftbench.config import read_json_object

        for key, spec in read_json_object(path).items():
            params[key] = _parse_param(key, spec, exp=exp, where=path)
    return list(params.values())


def _parse_param(key: str, spec: Any, *, exp: Experiment, where: Path) -> Param:
    if not isinstance(spec, dict):
        raise BadInput(
            f'{where}: "{key}" must be an object such as {{"low": 1e-4, "high": 1e-2, "log": true}}'
        )
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise BadInput(
            f'{where}: "{key}" has unknown field "{unknown[0]}"; fields: {", ".join(sorted(SPEC_KEYS))}'
        )
    _check_key(key, exp=exp, where=where)
    if "choices" in spec:
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise BadInput(f'{where}: "{key}": "choices" must be a non-empty list')
        return Param(key, type="categorical", choices=tuple(spec["choices"]))
    kind = spec.get("type", "float")
    if kind not in ("float", "int"):
        raise BadInput(f'{where}: "{key}": "type" must be "float" or "int", not {kind!r}')
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)
    ):
        raise BadInput(f'{where}: "{key}" needs numbers "low" and "high" (or "choices")')
    if not low < high:
        raise BadInput(f'{where}: "{key}": empty range, low {low} is not below high {high}')
    if not isinstance(log, bool):
        raise BadInput(f'{where}: "{key}": "log" must be true or false')
    if log and low <= 0:
        raise BadInput(f'{where}: "{key}": a log range needs low > 0, not {low}')
    return Param(key, low=float(low) if kind == "float" else low, high=high, log=log, type=kind)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_key(key: str, *, exp: Experiment, where: Path) -> None:
    """A training parameter the config knows, or a field of the experiment's adapter config."""
    if key.startswith(ADAPTER_PREFIX):
        peft_config = load_peft_config(exp)
        if peft_config is None:
            raise BadInput(f'{where}: "{key}": full fine-tuning has no adapter config to search')
        field_name = key[len(ADAPTER_PREFIX) :]
        names = [f.name for f in dataclasses.fields(peft_config)]
        if field_name not in names:
            from peftbench.errors import did_you_mean

            raise BadInput(
                f'{where}: unknown key "{key}": {type(peft_config).__name__} has no field "{field_name}"'
                f"{did_you_mean(field_name, names)}"
            )
        return
    probe = load_train_config(exp).to_dict()
    head, _, rest = key.partition(".")
    if head not in probe or (rest and not isinstance(probe[head], dict)):
        from peftbench.errors import did_you_mean

        raise BadInput(f'{where}: unknown key "{key}"{did_you_mean(head, probe)}')


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training overrides with dotted keys, adapter config fields) of one trial's parameters."""
    train = {k: v for k, v in params.items() if not k.startswith(ADAPTER_PREFIX)}
    adapter = {k[len(ADAPTER_PREFIX) :]: v for k, v in params.items() if k.startswith(ADAPTER_PREFIX)}
    return train, adapter


# ---- where things go -----------------------------------------------------------------------------


def study_path(exp: Experiment) -> Path:
    return exp.task_dir / TUNING / f"{exp.result_stem()}.log"


def trials_dir(exp: Experiment) -> Path:
    return exp.task_dir / TUNING / exp.result_stem()


def trial_record_path(exp: Experiment, number: int) -> Path:
    return trials_dir(exp) / f"trial-{number:04d}.json"


def is_tuned_name(name: str) -> bool:
    """Experiments made by a search are not searched again."""
    return name.endswith(TUNED_SUFFIX)


def in_catalogue_search(exp: Experiment) -> bool:
    """Whether searching a task folder searches this experiment: not a tuned one, and not one whose
    results are kept apart from the benchmark's (`reference_parity` experiments: a measurement of the
    reference's training choices, not an entry of the comparison)."""
    return not is_tuned_name(exp.name) and exp.results_kind == RESULTS


def select_experiments(paths: list[str]) -> list[Experiment]:
    """Experiment folders as given; a task folder stands for its experiments `in_catalogue_search`."""
    found: list[Experiment] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / "experiments").is_dir():
            found += [e for e in discover(path) if in_catalogue_search(e)]
            continue
        exp = resolve_experiment(raw)
        if is_tuned_name(exp.name):
            raise BadInput(f"{raw}: a tuned experiment; tune its source experiment instead")
        found.append(exp)
    return found


# ---- the study -----------------------------------------------------------------------------------


def study_attrs(exp: Experiment, space: list[Param], budget: Budget) -> dict[str, Any]:
    """What makes a study this experiment's search: a journal with other values is refused."""
    return {
        "experiment": exp.experiment_name,
        "space": [p.to_dict() for p in space],
        "max_steps": budget.max_steps,
        "eval_steps": budget.eval_steps,
        "reduction_factor": REDUCTION_FACTOR,
    }


def check_study(exp: Experiment, *, space: list[Param], budget: Budget, storage: str | None = None) -> None:
    """BadInput if the experiment's existing study belongs to another experiment or another search
    (space, steps, pruning); writes nothing, so that a refused search leaves no file behind."""
    import optuna

    if storage is None and not study_path(exp).is_file():
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_obj = storage or _journal(study_path(exp))
    where, name = storage or study_path(exp), exp.experiment_name
    names = optuna.get_all_study_names(storage_obj)
    if names and name not in names:
        raise BadInput(f"{where}: holds the study of {', '.join(names)}, not of {name}")
    if name not in names:
        return
    recorded = optuna.load_study(study_name=name, storage=storage_obj).user_attrs
    expected = study_attrs(exp, space, budget)
    changed = [k for k in expected if recorded.get(k) != expected[k]]
    if changed:
        raise BadInput(
            f"{where}: the study of {name} was made with another {', '.join(changed)}; "
            "move the file away to start a new search"
        )


def open_study(exp: Experiment, *, space: list[Param], budget: Budget, storage: str | None = None) -> Any:
    """Create or resume the experiment's study; BadInput if the storage holds another search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_study(exp, space=space, budget=budget, storage=storage)
    storage_obj = storage or _journal(study_path(exp))
    name = exp.experiment_name
    is_new = name not in optuna.get_all_study_names(storage_obj)
    sampler = optuna.samplers.TPESampler(seed=budget.seed, n_startup_trials=max(1, budget.trials // 2))
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=budget.eval_steps, reduction_factor=REDUCTION_FACTOR
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage_obj,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if is_new:
        for key, value in study_attrs(exp, space, budget).items():
            study.set_user_attr(key, value)
        # the first trial is the experiment as it stands, so that a search never ends below it
        study.enqueue_trial(_default_params(exp, space), user_attrs={"default": True})
    return study


def _default_params(exp: Experiment, space: list[Param]) -> dict[str, Any]:
    """The experiment's own values of the searched keys (those inside the space)."""
    config = load_train_config(exp).to_dict()
    peft_config = load_peft_config(exp)
    values: dict[str, Any] = {}
    for p in space:
        if p.key.startswith(ADAPTER_PREFIX):
            value = getattr(peft_config, p.key[len(ADAPTER_PREFIX) :])
        else:
            head, _, rest = p.key.partition(".")
            value = config[head][rest] if rest else config[head]
        inside = value in p.choices if p.type == "categorical" else p.low <= value <= p.high
        if inside:
            values[p.key] = value
    return values


def _journal(path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def recover_dead_trials(study: Any, exp: Experiment) -> list[int]:
    """Trials left RUNNING by a killed worker: marked failed, their parameters queued to run first;
    returns their numbers. A record such a trial wrote goes too (a kill between the record's write
    and the study's tell): the study does not count that trial, its rerun does."""
    from optuna.trial import TrialState

    dead = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in dead:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number}, skip_if_exists=False)
        trial_record_path(exp, trial.number).unlink(missing_ok=True)
    return [trial.number for trial in dead]


def finished_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


# ---- one trial -----------------------------------------------------------------------------------


@dataclass
class TrialContext:
    """What all trials of one experiment share in a worker: loaded once, not per trial."""

    exp: Experiment
    space: list[Param]
    budget: Budget
    task: Any
    data: Any  # the task's data with the test split removed
    git: dict[str, Any]


def trial_context(exp: Experiment, *, space: list[Param], budget: Budget) -> TrialContext:
    from peftbench import provenance
    from peftbench.tasks import get_task

    task = get_task(exp.task_name)
    data = task.load_data(task_dir=exp.task_dir, seed=0)
    # the search never sees the test split: it is not in the data the trials get
    data = dataclasses.replace(data, test=[])
    git = provenance.git_state(exp.task_dir)
    return TrialContext(exp=exp, space=space, budget=budget, task=task, data=data, git=git)


def run_trial(trial: Any, ctx: TrialContext) -> float:
    """One trial: train with the sampled parameters, report validation accuracy at each checkpoint.

    Returns the validation accuracy at the last checkpoint; raises optuna.TrialPruned when the pruner
    stops it. A diverging loss ends the trial complete with value 0 (what that lr gives)."""
    import optuna

    from peftbench.train import EarlyStop

    params = {p.key: p.suggest(trial) for p in ctx.space}
    trial_run = TrialRun(params=params)

    def on_validation(entry: dict[str, Any]) -> None:
        trial.report(entry[VALID_ACCURACY.key], entry[STEP])
        if trial.should_prune():
            raise EarlyStop(f"pruned at step {entry[STEP]}")

    try:
        outcome = _train_trial(ctx, trial_run, on_validation=on_validation)
    except EarlyStop as stop:
        _write_trial(ctx, trial_run, number=trial.number, outcome=stop.outcome, state="pruned", value=None)
        raise optuna.TrialPruned(str(stop)) from None
    if outcome.status != TrainStatus.SUCCESS:
        if outcome.error_msg == "manually canceled":
            raise KeyboardInterrupt
        if not _diverged(outcome.error_msg):
            raise RuntimeError(outcome.error_msg)
    curve = outcome.metrics
    value = curve[-1][VALID_ACCURACY.key] if curve and outcome.status == TrainStatus.SUCCESS else 0.0
    _write_trial(ctx, trial_run, number=trial.number, outcome=outcome, state="complete", value=value)
    trial.set_user_attr("steps", curve[-1][STEP] if curve else 0)
    return value


@dataclass
class TrialRun:
    """What a trial's record needs besides train's outcome."""

    params: dict[str, Any]
    tic: float = dataclasses.field(default_factory=time.perf_counter)
    created_at: dt.datetime = dataclasses.field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    )
    config: Any = None
    peft_config: Any = None
    device: str | None = None
    setup_time: float = 0.0


def _diverged(error: str) -> bool:
    return error.startswith(("non-finite training loss", "out of memory"))


def _train_trial(ctx: TrialContext, trial_run: TrialRun, *, on_validation: Any) -> Any:
    """train's outcome (EarlyStop carries it); `trial_run` gets the config, device and set-up time."""
    from peftbench import run
    from peftbench.progress import RunProgress

    train_params, adapter_params = split_params(trial_run.params)
    config = load_train_config(ctx.exp, overrides=train_params)
    peft_config = load_peft_config(ctx.exp)
    if adapter_params:
        peft_config = dataclasses.replace(peft_config, **adapter_params)
    quiet = RunProgress(stream=io.StringIO(), interactive=False, progress_file="")
    prepared = run.prepare_model(
        ctx.exp, config, peft_config, data=ctx.data, progress=quiet, final_test=False
    )
    trial_run.config, trial_run.peft_config, trial_run.device = config, peft_config, prepared.device
    trial_run.setup_time = time.perf_counter() - trial_run.tic
    return ctx.task.training_loop()(
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        task=ctx.task,
        data=ctx.data,
        config=config,
        device=prepared.device,
        progress=quiet,
        on_validation=on_validation,
        final_test=False,
    )


def _write_trial(
    ctx: TrialContext, trial_run: TrialRun, *, number: int, outcome: Any, state: str, value: float | None
) -> None:
    """The trial's record: a result record (run_info, train_info with the validation curve,
    meta_info; no test metrics) plus a `trial` section, in the study's folder of trial records."""
    from peftbench import run
    from peftbench.results import atomic_write_json

    record = run._record(
        experiment=ctx.exp,
        config=trial_run.config,
        peft_config=trial_run.peft_config,
        task=ctx.task,
        git=ctx.git,
        quick=False,
        cli_overrides=split_params(trial_run.params)[0],
        tic=trial_run.tic,
        created_at=trial_run.created_at,
        outcome=outcome,
        device=trial_run.device,
        data=ctx.data,
    )
    wall = time.perf_counter() - trial_run.tic
    eval_time = sum(e.get(STEP_EVAL_TIME.key, 0.0) for e in outcome.metrics)
    record["trial"] = {
        "schema": TRIAL_SCHEMA,
        "experiment": ctx.exp.experiment_name,
        "trial": number,
        "params": trial_run.params,
        "state": state,
        "value": value,
        "error": outcome.error_msg,
        "steps": outcome.metrics[-1][STEP] if outcome.metrics else 0,
        "wall_time": wall,
        "train_time": outcome.train_time,
        "eval_time": eval_time,
        "setup_time": trial_run.setup_time,
        # everything but training and validation: model loading, wrapping, tokenisation, writing
        "fixed_time": max(0.0, wall - outcome.train_time - eval_time),
        "budget": ctx.budget.to_dict(),
        "created_at": trial_run.created_at.isoformat(),
    }
    atomic_write_json(trial_record_path(ctx.exp, number), record)


# ---- one experiment's search, in a worker --------------------------------------------------------


def tune_experiment(
    exp_path: str, *, trials: int, seed: int = 0, storage: str | None = None
) -> dict[str, Any]:
    """Run (or resume) one experiment's search to `trials` finished trials; write `<name>-tuned`.

    Returns a summary (for the command's table). Holds the study's lock for the whole search."""
    from filelock import FileLock

    exp = resolve_experiment(exp_path)
    space, budget = load_space(exp), budget_for(exp, trials=trials, seed=seed)
    lock_path = study_path(exp).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    with FileLock(str(lock_path)):
        study = open_study(exp, space=space, budget=budget, storage=storage)
        recovered = len(recover_dead_trials(study, exp))
        ctx: TrialContext | None = None
        failures = 0
        while len(finished_trials(study)) < trials:
            ctx = ctx or trial_context(exp, space=space, budget=budget)
            failures = _one_trial(study, ctx, failures)
        tuned = write_tuned_experiment(exp, study=study, space=space, budget=budget, storage=storage)
    summary = summarise_study(study)
    return {
        **summary,
        "experiment": exp.experiment_name,
        "recovered": recovered,
        "tuned": tuned.relative_to(exp.task_dir).as_posix() if tuned else None,
        "repeats_source": bool(tuned) and repeats_source(exp),
        "at_edges": at_edges([p.to_dict() for p in space], summary["best_params"]),
        "wall_time": time.perf_counter() - tic,
    }


def _one_trial(study: Any, ctx: TrialContext, failures: int) -> int:
    from optuna.trial import TrialState

    study.optimize(lambda t: run_trial(t, ctx), n_trials=1, catch=(RuntimeError,))
    if study.trials[-1].state != TrialState.FAIL:
        return 0
    if failures + 1 >= MAX_FAILURES:
        raise RuntimeError(f"{ctx.exp.experiment_name}: {MAX_FAILURES} trials in a row failed with an error")
    return failures + 1


def budget_for(exp: Experiment, *, trials: int, seed: int = 0) -> Budget:
    if trials < 1:
        raise BadInput(f"--trials must be at least 1, not {trials}")
    config = load_train_config(exp)
    return Budget(trials=trials, max_steps=config.max_steps, eval_steps=config.eval_steps, seed=seed)


def summarise_study(study: Any) -> dict[str, Any]:
    from optuna.trial import TrialState

    done = finished_trials(study)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return {
        "trials": len(done),
        "complete": len(complete),
        "pruned": len(done) - len(complete),
        "failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        "steps_spent": sum(_steps(t) for t in done),
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": best.params if best else None,
        "pruned_at": {t.number: _steps(t) for t in done if t.state == TrialState.PRUNED},
    }


def _steps(trial: Any) -> int:
    """Steps a finished trial trained: its last reported checkpoint."""
    return (
        max(trial.intermediate_values, default=0)
        if trial.intermediate_values
        else trial.user_attrs.get("steps", 0)
    )


# ---- the outcome: <name>-tuned -------------------------------------------------------------------


def write_tuned_experiment(
    exp: Experiment, *, study: Any, space: list[Param], budget: Budget, storage: str | None
) -> Path | None:
    """The experiment folder `<name>-tuned`: the source's files with the best trial's values in the
    searched keys, and tuning.json. None when no trial completed."""
    from peftbench.config import read_json_object
    from peftbench.results import atomic_write_json

    summary = summarise_study(study)
    if summary["best_params"] is None:
        return None
    target = tuned_experiment(exp).path
    if target.exists() and not (target / PROVENANCE_FILE).is_file():
        raise BadInput(f"{target}: exists and was not made by peftbench tune; rename it first")
    train_params, adapter_params = split_params(summary["best_params"])
    training = read_json_object(exp.training_params_path) if exp.training_params_path.exists() else {}
    for key, value in train_params.items():
        _set_nested(training, key, value, defaults=load_train_config(exp).to_dict())
    target.mkdir(exist_ok=True)
    if not exp.is_full_finetuning:
        adapter = read_json_object(exp.adapter_config_path)
        atomic_write_json(target / ADAPTER_CONFIG, {**adapter, **adapter_params})
    atomic_write_json(target / TRAINING_PARAMS, training)
    provenance = {
        "source_experiment": exp.experiment_name,
        "study": storage or study_path(exp).relative_to(exp.task_dir).as_posix(),
        "trial_records": trials_dir(exp).relative_to(exp.task_dir).as_posix(),
        "selection": "validation accuracy at the last checkpoint (the test split is never evaluated)",
        "sampler": f"optuna TPESampler(seed={budget.seed}, n_startup_trials={max(1, budget.trials // 2)})",
        "pruner": f"optuna SuccessiveHalvingPruner(min_resource={budget.eval_steps}, "
        f"reduction_factor={REDUCTION_FACTOR})",
        "budget": budget.to_dict(),
        "space": [p.to_dict() for p in space],
        **{k: v for k, v in summary.items() if k != "pruned_at"},
    }
    atomic_write_json(target / PROVENANCE_FILE, provenance)
    return target


def tuned_experiment(exp: Experiment) -> Experiment:
    """`<name>-tuned` beside `exp` (its folder may not exist yet)."""
    return Experiment(path=exp.path.with_name(exp.name + TUNED_SUFFIX), task_dir=exp.task_dir)


def search_outcome(exp: Experiment) -> Experiment | None:
    """`<name>-tuned` when a finished search of `exp` wrote it (it has tuning.json), else None."""
    tuned = tuned_experiment(exp)
    return tuned if (tuned.path / PROVENANCE_FILE).is_file() else None


def repeats_source(exp: Experiment) -> bool:
    """Whether `<name>-tuned` has exactly its source's settings (the search kept the source's own
    values). Runs are deterministic per seed, so its runs would repeat the source's, number for
    number: the source's seeds stand for it, and sweeping it again only spends compute."""
    tuned = search_outcome(exp)
    if tuned is None:
        return False
    if load_train_config(exp).to_dict() != load_train_config(tuned).to_dict():
        return False
    return exp.is_full_finetuning or load_peft_config(exp).to_dict() == load_peft_config(tuned).to_dict()


def searched_stand_ins(task_dir: Path) -> tuple[list[Experiment], list[str]]:
    """The task's catalogue at its searched settings: for each catalogue experiment
    (`in_catalogue_search`) with a finished search, the experiment whose runs stand for it (its
    `-tuned`, or itself where the search kept its settings: `repeats_source`), and the names of
    those not searched yet. Every stand-in had the same search budget, and none counts twice."""
    from peftbench.experiment import discover

    stand_ins: list[Experiment] = []
    not_searched: list[str] = []
    for exp in discover(task_dir):
        if not in_catalogue_search(exp):
            continue
        tuned = search_outcome(exp)
        if tuned is None:
            not_searched.append(exp.experiment_name)
        else:
            stand_ins.append(exp if repeats_source(exp) else tuned)
    return stand_ins, not_searched


@dataclass(frozen=True)
class SearchedSet:
    """The searched stand-ins (`searched_stand_ins`) split by whether they have runs."""

    chosen: list[str]  # stand-ins with runs
    not_searched: list[str]  # catalogue experiments without a finished search
    no_runs: list[str]  # stand-ins that have not run yet

    def notes(self) -> list[str]:
        """The lines that say what the ranking of the searched set leaves out."""
        n = len(self.chosen)
        lines = [
            f"the catalogue at its searched settings: {n} experiment{'s' * (n != 1)} (each one's "
            "`-tuned`, or its own name where the search kept its settings)"
        ]
        if self.not_searched:
            n = len(self.not_searched)
            lines.append(f"left out, not searched yet: {n} catalogue experiment{'s' * (n != 1)}")
        if self.no_runs:
            lines.append(f"left out, searched but not run yet: {', '.join(self.no_runs)}")
        return lines


def searched_set(task_dir: Path, with_runs: set[str]) -> SearchedSet:
    """`searched_stand_ins`, split by whether each has runs (its name in `with_runs`)."""
    stand_ins, not_searched = searched_stand_ins(task_dir)
    names = [e.experiment_name for e in stand_ins]
    return SearchedSet(
        chosen=[n for n in names if n in with_runs],
        not_searched=not_searched,
        no_runs=[n for n in names if n not in with_runs],
    )


def searched_runs(runs: Any, task_dirs: list[Path]) -> tuple[Any, list[str]]:
    """The rows of a runs table (pandas, `experiment_name` column) that belong to the searched set of
    the task folders (`searched_set`), and the lines that say what that set leaves out."""
    with_runs = set(runs["experiment_name"])
    chosen: list[str] = []
    notes: list[str] = []
    for task_dir in task_dirs:
        found = searched_set(task_dir, with_runs)
        chosen += found.chosen
        notes += found.notes()
    return runs[runs["experiment_name"].isin(chosen)], notes


def _set_nested(params: dict[str, Any], key: str, value: Any, *, defaults: dict[str, Any]) -> None:
    """Set a dotted key in a training_params.json object; an object key is written whole, as files
    keep the reference's format (the object's other entries come from the file or the defaults)."""
    head, _, rest = key.partition(".")
    if not rest:
        params[head] = value
        return
    obj = dict(params.get(head, defaults.get(head) or {}))
    obj[rest] = value
    params[head] = obj


def read_trials(exp: Experiment) -> list[dict[str, Any]]:
    """Each trial record's `trial` section, with its validation curve as `curve`."""
    return [trial_summary(json.loads(p.read_text())) for p in sorted(trials_dir(exp).glob("trial-*.json"))]


def trial_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {**record["trial"], "curve": record["train_info"]["metrics"]}
