"""One run end to end: experiment folder -> config -> task data -> model -> training -> result file.

`execute` builds the record and, by default, writes it; the Ray backend calls it with
`write=False` and lets the driver write, so workers need no shared filesystem.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from peftbench import provenance
from peftbench.config import TrainConfig
from peftbench.errors import BadInput
from peftbench.experiment import (
    Experiment,
    config_hashes,
    load_peft_config,
    load_train_config,
    schedule_warnings,
)
from peftbench.files import CANCELLED_RESULTS, PARITY_RESULTS, RESULTS, TEMPORARY_RESULTS
from peftbench.progress import RunProgress
from peftbench.results import SCHEMA_VERSION, TrainStatus, write_result
from peftbench.signals import Cancellation
from peftbench.tasks import Task, TaskData, get_task


@dataclass
class RunOutcome:
    record: dict[str, Any]
    path: Path  # where the record belongs (written there unless write=False)
    checkpoint_dir: Path | None
    signum: int | None = None  # the signal that cancelled the run, if one did
    completions: list[dict[str, Any]] | None = None  # the test completions, the result's sidecar

    @property
    def status(self) -> str:
        return self.record["train_info"]["status"]


def seed_everything(seed: int) -> None:
    import torch
    from transformers import set_seed

    set_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def execute(
    experiment: Experiment,
    *,
    seed: int | None = None,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    verbose: bool = False,
    save_adapter: Path | None = None,
    write: bool = True,
    cancellation: Cancellation | None = None,
) -> RunOutcome:
    """Run one experiment. Bad input raises BadInput before anything is trained or written.

    The adapter (the whole model for full fine-tuning) is saved in `save_adapter` when given;
    otherwise nothing but the result file is left behind. SIGINT and SIGTERM cancel the run at any
    phase (see peftbench.signals): its record, naming the signal and the phase, goes to
    cancelled_results/. `cancellation` is the caller's when it caught signals since its own start-up.
    """
    with nullcontext(cancellation) if cancellation is not None else Cancellation() as cancel:
        return _execute(
            experiment,
            seed=seed,
            quick=quick,
            overrides=overrides,
            verbose=verbose,
            save_adapter=save_adapter,
            write=write,
            cancel=cancel,
        )


@dataclass
class PreparedModel:
    """The model as a run trains it, and the base model's forgetting loss measured before wrapping."""

    model: Any
    tokenizer: Any
    device: str
    model_path: str
    forgetting_before: float | None  # None when not measured (a tuning trial)


def prepare_model(
    experiment: Experiment,
    config: TrainConfig,
    peft_config: Any,
    *,
    data: TaskData | None,
    progress: RunProgress | None = None,
    final_test: bool = True,
) -> PreparedModel:
    """Seed and load the base model, measure its forgetting baseline, then wrap it with PEFT.

    The baseline is measured on the base model before PEFT wraps it: some initialisations (PiSSA,
    OLoRA) rewrite the base weights, and then switching the adapter off does not give the base model
    back. `final_test=False` (a tuning trial, which never tests) skips the baseline and the slow-CPU
    warning; `data` (whose forgetting texts give the baseline) may then be None.
    """
    if final_test and data is None:
        raise ValueError("prepare_model: the final test needs the data's forgetting texts for its baseline")
    progress = progress or RunProgress()
    with progress.phase(f"loading the base model {config.model_id}") as note:
        model, tokenizer, device, model_path = _load_base_model(experiment, config)
        note.text = f"on {device}"
    forgetting_before = None
    if final_test:
        from peftbench.train import forgetting_loss

        _warn_if_slow_on_cpu(model, tokenizer, data, config=config, device=device)
        with progress.phase(f"forgetting baseline ({len(data.forgetting_texts)} texts)") as note:
            forgetting_before = forgetting_loss(
                model, tokenizer, data.forgetting_texts, config=config, device=device
            )
            note.text = f"loss {forgetting_before:.4f}"
    model = _adapt(model, tokenizer, config, peft_config)
    return PreparedModel(model, tokenizer, device, model_path, forgetting_before)


@dataclass
class _RunPlan:
    """What a run is, settled before anything loads: the configs, the task, and where it will be filed."""

    config: TrainConfig
    peft_config: Any
    task: Task
    git: dict[str, Any]
    cli_overrides: dict[str, Any]
    is_main_run: bool


def _plan(
    experiment: Experiment, *, seed: int | None, quick: bool, overrides: dict[str, Any] | None
) -> _RunPlan:
    """Load and check the configs (BadInput before anything is trained), the task and the git state."""
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = seed
    config = load_train_config(experiment, quick=quick, overrides=overrides)
    peft_config = load_peft_config(experiment)
    for warning in schedule_warnings(experiment, config, peft_config):
        print(f"warning: {warning}", file=sys.stderr)
    if config.init_kv_cache_prefix and peft_config is None:
        raise BadInput('"init_kv_cache_prefix" applies to prefix tuning only, not to full fine-tuning')
    if peft_config is not None:  # before the data, the weights and the forgetting baseline load
        from peftbench import modeling
        from peftbench.adapter_fit import check_adapter_fit

        model_path = modeling.resolve_model_id(config.model_id, experiment.task_dir)
        check_adapter_fit(
            peft_config,
            model_path=model_path,
            config_file=experiment.adapter_config_path,
            model_id=config.model_id,
        )
    git = provenance.git_state(experiment.task_dir)
    cli_overrides = {k: v for k, v in overrides.items() if k != "seed"}
    is_main_run = git["branch"] == "main" and git["dirty"] is False and not quick and not cli_overrides
    return _RunPlan(
        config=config,
        peft_config=peft_config,
        task=get_task(experiment.task_name),
        git=git,
        cli_overrides=cli_overrides,
        is_main_run=is_main_run,
    )


def _execute(
    experiment: Experiment,
    *,
    seed: int | None,
    quick: bool,
    overrides: dict[str, Any] | None,
    verbose: bool,
    save_adapter: Path | None,
    write: bool,
    cancel: Cancellation,
) -> RunOutcome:
    plan = _plan(experiment, seed=seed, quick=quick, overrides=overrides)
    config, task = plan.config, plan.task
    record = partial(
        _record,
        experiment=experiment,
        config=config,
        peft_config=plan.peft_config,
        task=task,
        git=plan.git,
        quick=quick,
        cli_overrides=plan.cli_overrides,
        tic=time.perf_counter(),
        created_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
    )
    progress = RunProgress()
    try:
        cancel.watch(progress)
        with progress.phase(f"loading the {task.name} data") as note:
            data = task.load_data(task_dir=experiment.task_dir, seed=0)
            note.text = f"{len(data.train)} train, {len(data.valid)} valid, {len(data.test)} test examples"
        prepared = prepare_model(experiment, config, plan.peft_config, data=data, progress=progress)
        cancel.check()  # a signal swallowed on the way (e.g. inside a destructor) still cancels
        outcome = _train(prepared, task=task, data=data, config=config, verbose=verbose, progress=progress)
    except KeyboardInterrupt:
        # no model trained: the record holds what is known, with no metrics
        from peftbench.train import TrainOutcome

        cancel.defer("writing the result")
        error = cancel.message or f"canceled during {progress.state['phase']}"
        outcome = TrainOutcome(status=TrainStatus.CANCELED, error_msg=error)
        return _file(
            record(outcome=outcome),
            experiment,
            config,
            kind=CANCELLED_RESULTS,
            write=write,
            signum=cancel.signum,
        )
    cancel.defer("writing the result")
    return _file_trained(
        record,
        prepared,
        outcome,
        plan=plan,
        experiment=experiment,
        data=data,
        save_adapter=save_adapter,
        write=write,
        cancel=cancel,
    )


def _file_trained(
    record: Callable[..., dict[str, Any]],
    prepared: PreparedModel,
    outcome: Any,
    *,
    plan: _RunPlan,
    experiment: Experiment,
    data: TaskData,
    save_adapter: Path | None,
    write: bool,
    cancel: Cancellation,
) -> RunOutcome:
    """Measure the checkpoint, fingerprint the weights, build the record and file it by its status."""
    from peftbench import modeling

    if cancel.signum is not None:
        outcome.status, outcome.error_msg = TrainStatus.CANCELED, cancel.message
    # an adapter nobody asked for is not saved (only to measure it) for a run that ends canceled
    measure = save_adapter is not None or outcome.status == TrainStatus.SUCCESS
    file_size, checkpoint_dir = (
        _checkpoint_size(prepared.model, plan.peft_config, save_dir=save_adapter) if measure else (0, None)
    )
    # hashing a large model's weights takes long: a run cancelled by a signal is written without it
    fingerprint = None if cancel.signum is not None else modeling.weights_fingerprint(prepared.model_path)
    done = record(
        outcome=outcome,
        file_size=file_size,
        device=prepared.device,
        data=data,
        model_info=provenance.model_info(prepared.model_path, fingerprint),
    )
    if cancel.signum is not None:  # came while the record was built: it is filed as cancelled
        done["train_info"]["status"], done["run_info"]["error_msg"] = TrainStatus.CANCELED, cancel.message
    kind = (
        CANCELLED_RESULTS
        if done["train_info"]["status"] != TrainStatus.SUCCESS
        else (experiment.results_kind if plan.is_main_run else TEMPORARY_RESULTS)
    )
    return _file(
        done,
        experiment,
        plan.config,
        kind=kind,
        write=write,
        signum=cancel.signum,
        checkpoint_dir=checkpoint_dir,
        completions=outcome.test_completions,
    )


def _train(
    prepared: PreparedModel,
    *,
    task: Task,
    data: TaskData,
    config: TrainConfig,
    verbose: bool,
    progress: RunProgress,
) -> Any:
    """The task's training loop (`train.train` unless the task declares another), then a warning when
    the base model's forgetting loss is off the task's band."""
    outcome = task.training_loop()(
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        task=task,
        data=data,
        config=config,
        device=prepared.device,
        verbose=verbose,
        forgetting_loss_before=prepared.forgetting_before,
        progress=progress,
    )
    lo, hi = task.forgetting_loss_band
    if outcome.forgetting_loss_before is not None and not lo < outcome.forgetting_loss_before < hi:
        print(
            f"warning: base model loss on the forgetting texts {outcome.forgetting_loss_before:.3f} is "
            f"outside the task's sanity band ({lo}, {hi}): wrong model or data?",
            file=sys.stderr,
        )
    return outcome


def _file(
    record: dict[str, Any],
    experiment: Experiment,
    config: TrainConfig,
    *,
    kind: str,
    write: bool,
    signum: int | None,
    checkpoint_dir: Path | None = None,
    completions: list[dict[str, Any]] | None = None,
) -> RunOutcome:
    """Where the record belongs (results: one per seed; the others: one per run), written there if asked."""
    # microseconds: two runs of one experiment in the same second must not overwrite each other
    stamp = (
        ""
        if kind in (RESULTS, PARITY_RESULTS)
        else dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H-%M-%S-%f")
    )
    path = experiment.result_path(kind=kind, seed=config.seed, timestamp=stamp)
    if write:
        write_result(path, record, completions)
    return RunOutcome(
        record=record, path=path, checkpoint_dir=checkpoint_dir, signum=signum, completions=completions
    )


def _record(
    *,
    experiment: Experiment,
    config: TrainConfig,
    peft_config: Any,
    task: Any,
    git: dict[str, Any],
    quick: bool,
    cli_overrides: dict[str, Any],
    tic: float,
    created_at: dt.datetime,
    outcome: Any,
    file_size: int = 0,
    device: str | None = None,
    data: Any = None,
    model_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result record; a run cancelled before training has no device, data or model: those stay empty."""
    reserved = outcome.memory_reserved or [0]
    return {
        "schema_version": SCHEMA_VERSION,
        "run_info": {
            "created_at": created_at.isoformat(),
            "total_time": time.perf_counter() - tic,
            "experiment_name": experiment.experiment_name,
            "peft_branch": git["branch"],
            "peft_worktree_is_dirty": git["dirty"],
            "train_config": config.to_dict(),
            "peft_config": peft_config.to_dict() if peft_config is not None else None,
            "error_msg": outcome.error_msg,
            "task_name": task.name,
            "task_version": task.version,
            "seed": config.seed,
            "project_commit": git["commit"],
            "project_dirty": git["dirty"],
            "cli_overrides": cli_overrides,
            "quick": quick,
            "config_files_sha256": config_hashes(experiment),
        },
        "train_info": {
            "accelerator_memory_reserved_avg": float(np.mean(reserved)),
            "accelerator_memory_max": outcome.memory_peak,
            "accelerator_memory_reserved_99th": float(np.quantile(reserved, 0.99)),
            "train_time": outcome.train_time,
            "file_size": file_size,
            "num_trainable_params": outcome.num_trainable_params,
            "num_total_params": outcome.num_total_params,
            "status": outcome.status,
            "metrics": outcome.metrics,
            "device": device,
            "memory_kind": "accelerator" if device in ("cuda", "xpu") else "process_rss",
            "memory_allocated_avg": float(np.mean(outcome.memory_allocated or [0])),
            "test_correct": "".join("1" if c else "0" for c in outcome.test_correct),
            "test_items_hash": data.test_items_hash if data is not None else None,
            "scoring_version": task.scoring_version,
        },
        "meta_info": {
            "model_info": model_info or {},
            "dataset_info": {**data.info, "fingerprint": data.fingerprint} if data is not None else {},
            "package_info": provenance.package_info(),
            "system_info": provenance.system_info(device or "cpu"),
            "pytorch_info": provenance.pytorch_info(),
        },
    }


def _load_base_model(experiment: Experiment, config: TrainConfig) -> tuple[Any, Any, str, str]:
    """Seed, choose the device, load the tokenizer and the base model: (model, tokenizer, device, path)."""
    from peftbench import modeling

    seed_everything(config.seed)
    device = modeling.choose_device()
    modeling.check_accelerator_free(device)
    model_path = modeling.resolve_model_id(config.model_id, experiment.task_dir)
    try:
        tokenizer = modeling.load_tokenizer(model_path, max_seq_length=config.max_seq_length)
        model = modeling.load_base_model(
            model_path,
            dtype=config.dtype,
            device=device,
            attn_implementation=config.attn_implementation,
            use_gc=config.use_gc,
        )
    except OSError as exc:
        raise BadInput(f'model_id "{config.model_id}": cannot load ({str(exc).splitlines()[0]})') from None
    return model, tokenizer, device, model_path


def _warn_if_slow_on_cpu(model: Any, tokenizer: Any, data: Any, *, config: TrainConfig, device: str) -> None:
    """Before training, a CPU run that would take hours says so (see modeling.slow_cpu_warning).

    Token counts come from spread samples of the examples, tokenized as training and evaluation do;
    evaluation counts every prompt (validation at each eval step, then test) with max_new_tokens.
    """
    from peftbench import modeling

    if device != "cpu" or not data.train:
        return
    import torch

    def mean_tokens(examples: list[Any], *, with_response: bool) -> float:
        sample = examples[:: max(1, len(examples) // 256)]
        texts = [
            config.query_template.format(query=e.query) + (e.response if with_response else "")
            for e in sample
        ]
        return float(np.mean([len(ids) for ids in tokenizer(texts)["input_ids"]])) if texts else 0.0

    per_example = min(mean_tokens(data.train, with_response=True) + 1, config.max_seq_length)  # + EOS
    train_tokens = config.max_steps * config.batch_size * config.gradient_accumulation_steps * per_example
    generated = config.generation_kwargs.get("max_new_tokens", config.generation_kwargs.get("max_length", 0))
    evaluations = config.max_steps // config.eval_steps
    eval_tokens = len(data.valid) * evaluations * (mean_tokens(data.valid, with_response=False) + generated)
    eval_tokens += len(data.test) * (mean_tokens(data.test, with_response=False) + generated)
    warning = modeling.slow_cpu_warning(
        num_params=modeling.count_parameters(model)[1],
        train_tokens=train_tokens,
        eval_tokens=eval_tokens,
        steps=config.max_steps,
        threads=torch.get_num_threads(),
    )
    if warning is not None:
        print(warning, file=sys.stderr)


def _adapt(model: Any, tokenizer: Any, config: TrainConfig, peft_config: Any) -> Any:
    """Wrap the base model with PEFT (none for full fine-tuning), then compile if asked."""
    from peftbench import modeling

    if peft_config is not None:
        model = modeling.wrap_with_peft(
            model, peft_config, autocast_adapter_dtype=config.autocast_adapter_dtype
        )
        if config.init_kv_cache_prefix:
            from peft import initialize_kv_prefix_from_text

            initialize_kv_prefix_from_text(
                model, tokenizer, text=config.init_kv_cache_prefix, use_chat_template=False
            )
    if config.compile:
        import torch

        model = torch.compile(model, dynamic=True)
    return model


def _checkpoint_size(model: Any, peft_config: Any, *, save_dir: Path | None) -> tuple[int, Path | None]:
    """(size of the saved adapter's safetensors, the folder it stays in or None).

    Without `save_dir` the adapter is saved in a temporary folder, measured and removed. For full
    fine-tuning the size is an estimate, as in the reference (saving a whole model only to measure it
    is not worth the disk and time), and the model is saved only when asked.
    """
    if peft_config is None:
        if save_dir is not None:
            model.save_pretrained(str(save_dir))
        return sum(p.numel() * p.element_size() for p in model.parameters()), save_dir
    if save_dir is not None:
        model.save_pretrained(str(save_dir))
        return _safetensors_size(save_dir), save_dir
    with tempfile.TemporaryDirectory(prefix="peftbench-adapter-") as folder:
        model.save_pretrained(folder)
        return _safetensors_size(Path(folder)), None


def _safetensors_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
