"""The training loop, written out: batches, steps, periodic validation, final test and forgetting.

Laid out as torchtune's recipes are: `setup` builds a `TrainState`, `train_step` is one flat
optimizer step, `validation_entry` and `final_entry` make the curve's and the final metrics dicts,
and `train` runs them and maps what stops it to a status. No Trainer. It knows nothing
task-specific (the task comes in as data, TaskData, and a scorer) and nothing method-specific: a
method's auxiliary loss, per-step allocation, optimizer or initialisation comes from its hooks in
peftbench.methods. Metric keys come from their declarations in peftbench.tasks.base.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from peftbench import methods
from peftbench import reference_parity as reference_parity_rules
from peftbench.config import TrainConfig
from peftbench.evaluation import Generations, generate, mean_per_token_loss, score
from peftbench.modeling import MemoryMeter, count_parameters
from peftbench.progress import RunProgress
from peftbench.results import TrainStatus
from peftbench.tasks.base import (
    ELAPSED_TIME,
    FORGETTING,
    FORGETTING_BEFORE,
    LEARNING_RATE,
    MEM_ALLOCATED_AVG,
    MEM_RESERVED_AVG,
    STEP,
    STEP_EVAL_TIME,
    STEP_TRAIN_LOSS,
    STEP_TRAIN_SAMPLES,
    STEP_TRAIN_TIME,
    TEST_ACCURACY,
    TOKENS_PER_SEC,
    TRAIN_LOSS,
    TRAIN_SAMPLES,
    TRAIN_TOKENS,
    VALID_ACCURACY,
    VALID_GENERATED_TOKENS,
    Example,
    Task,
    TaskData,
)
from peftbench.tokencache import cached_tokenize

# batches per length bucket (the reference's BUCKET_FACTOR): sorting within buckets of
# effective_batch * 20 examples cuts padding without ordering the whole epoch by length
BUCKET_FACTOR = 20
# empty the accelerator cache every N steps: keeps memory down without paying for it every step
EMPTY_CACHE_EVERY = 10
WARMUP_RATIO = 0.1


class RunCanceled(Exception):
    """Training stopped early: Ctrl-C, SIGTERM, out of memory, or a non-finite loss."""


class EarlyStop(Exception):
    """Raised by an `on_validation` callback to end training there (a pruned tuning trial).

    `train` lets it through to its caller, unlike every other exception during training, with the
    outcome so far as its `outcome` attribute.
    """

    outcome: TrainOutcome | None = None


@dataclass
class TrainOutcome:
    status: TrainStatus = TrainStatus.FAILED
    error_msg: str = ""
    metrics: list[dict[str, Any]] = field(default_factory=list)
    train_time: float = 0.0
    memory_reserved: list[int] = field(default_factory=list)
    memory_allocated: list[int] = field(default_factory=list)
    memory_peak: int = 0
    test_correct: list[bool] = field(default_factory=list)
    test_completions: list[dict[str, Any]] = field(default_factory=list)  # the result's sidecar
    forgetting_loss_before: float | None = None
    num_trainable_params: int = 0
    num_total_params: int = 0


def tokenize_train(
    tokenizer: Any, examples: list[Example], *, template: str, max_len: int
) -> list[list[int]]:
    """Prompt + response + EOS, truncated; EOS is appended so that every sequence learns to stop."""
    texts = [template.format(query=e.query) + e.response for e in examples]
    ids = cached_tokenize(texts, tokenizer=tokenizer, tokenize=lambda t: tokenizer(t)["input_ids"])
    return [[*seq, tokenizer.eos_token_id][:max_len] for seq in ids]


def tokenize_prompts(tokenizer: Any, examples: list[Example], *, template: str) -> list[list[int]]:
    return tokenizer([template.format(query=e.query) for e in examples])["input_ids"]


def step_batches(
    sequences: list[list[int]],
    *,
    batch_size: int,
    accumulation: int,
    seed: int,
    shuffle: bool = True,
    reference_parity: bool = False,
) -> Iterator[list[list[list[int]]]]:
    """Endless stream of optimizer steps, each a list of `accumulation` micro-batches of token lists.

    Each epoch is shuffled with the run's seed (unless the task trains in a fixed order), cut into
    buckets of BUCKET_FACTOR steps, and each bucket sorted longest first (an out-of-memory error shows
    early). A step's micro-batches are consecutive slices of one sorted effective batch, so k
    micro-batches of b equal one batch of k*b. `reference_parity`: ties sorted and the epoch's end
    as the reference does (peftbench.reference_parity).
    """
    rng = np.random.default_rng(seed)
    step_size = batch_size * accumulation
    bucket_size = step_size * BUCKET_FACTOR
    lengths = [len(s) for s in sequences]
    while True:
        order = rng.permutation(len(sequences)) if shuffle else np.arange(len(sequences))
        starts = list(range(0, len(order), bucket_size))
        if reference_parity and len(order) % bucket_size:
            starts.append(starts[-1])  # the reference repeats the last partial bucket
        for b in starts:
            bucket = [int(i) for i in order[b : b + bucket_size]]
            if reference_parity:
                bucket = reference_parity_rules.longest_first(bucket, lengths)
            else:
                bucket = sorted(bucket, key=lambda i: lengths[i], reverse=True)
            for s in range(0, len(bucket), step_size):
                step = [sequences[i] for i in bucket[s : s + step_size]]
                yield [step[m : m + batch_size] for m in range(0, len(step), batch_size)]


def collate(micro_batch: list[list[int]], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 on padding; the EOS is a real token)."""
    width = max(len(s) for s in micro_batch)
    input_ids = torch.full((len(micro_batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(micro_batch), width), dtype=torch.long)
    for row, seq in enumerate(micro_batch):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def make_optimizer(model: Any, config: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer (a factory of peftbench.methods, or torch.optim's class) and the lr schedule."""
    optimizer = methods.create_optimizer(
        model, optimizer_type=config.optimizer_type, kwargs=config.optimizer_kwargs
    )
    if config.lr_scheduler == "cosine":
        from transformers import get_cosine_schedule_with_warmup

        scheduler = get_cosine_schedule_with_warmup(
            optimizer,
            num_warmup_steps=int(WARMUP_RATIO * config.max_steps),
            num_training_steps=config.max_steps,
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def evaluate_accuracy(
    model: Any,
    tokenizer: Any,
    *,
    task: Task,
    examples: list[Example],
    prompts: list[list[int]],
    config: TrainConfig,
    device: str,
    progress: bool = False,
) -> tuple[list[bool], Generations]:
    """Per-item correctness and the generations; the model is left in train mode."""
    model.eval()
    gen = generate(
        model,
        tokenizer,
        prompts=prompts,
        batch_size=config.batch_size_eval,
        generation_kwargs=config.generation_kwargs,
        device=device,
        progress=progress,
    )
    model.train()
    return score(task, gen, examples), gen


def completion_items(gen: Generations, examples: list[Example]) -> list[dict[str, Any]]:
    """One item per test example for the result's completions sidecar (peftbench.results)."""
    return [
        {"index": i, "prompt": p, "completion": c, "gold": e.answer}
        for i, (p, c, e) in enumerate(zip(gen.prompts, gen.completions, examples, strict=True))
    ]


def forgetting_loss(
    model: Any, tokenizer: Any, texts: list[str], *, config: TrainConfig, device: str
) -> float:
    # small batches (the training batch size) so that this does not set the memory peak
    model.eval()
    loss = mean_per_token_loss(
        model,
        tokenizer,
        texts=texts,
        batch_size=config.batch_size,
        max_length=config.max_seq_length,
        device=device,
    )
    model.train()
    return loss


@dataclass
class TrainState:
    """Everything a run's phases share: the model and data, the optimizer, the hooks, the running tallies."""

    model: Any
    tokenizer: Any
    task: Task
    data: TaskData
    config: TrainConfig
    device: str
    progress: RunProgress
    hooks: methods.Hooks
    meter: MemoryMeter
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    batches: Iterator[list[list[list[int]]]]
    valid_prompts: list[list[int]]
    test_prompts: list[list[int]]
    out: TrainOutcome
    losses: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    samples: int = 0
    eval_time: float = 0.0
    tic_train: float = 0.0


def setup(
    *,
    model: Any,
    tokenizer: Any,
    task: Task,
    data: TaskData,
    config: TrainConfig,
    device: str,
    progress: RunProgress,
    final_test: bool,
) -> TrainState:
    """Tokenise, run the method's data-dependent initialisation, build the optimizer: the state to train."""
    out = TrainOutcome()
    meter = MemoryMeter(device)
    peft_config = model.peft_config[model.active_adapter] if hasattr(model, "disable_adapter") else None
    hooks = methods.hooks_for(peft_config)
    parity = config.reference_parity
    with progress.phase(f"tokenising {len(data.train)} training examples"):
        train_seqs = (reference_parity_rules.tokenize_train if parity else tokenize_train)(
            tokenizer, data.train, template=config.query_template, max_len=config.max_seq_length
        )
        valid_prompts = tokenize_prompts(tokenizer, data.valid, template=config.query_template)
        test_prompts = (
            tokenize_prompts(tokenizer, data.test, template=config.query_template) if final_test else []
        )
    stream = partial(
        step_batches,
        train_seqs,
        batch_size=config.batch_size,
        accumulation=config.gradient_accumulation_steps,
        seed=config.seed,
        shuffle=task.shuffle_train,
        reference_parity=parity,
    )
    if hooks.init is not None:
        with progress.phase(f"method initialisation from {hooks.init_steps} training steps"):
            hooks.init(
                model,
                _init_batches(
                    stream(), steps=hooks.init_steps, config=config, tokenizer=tokenizer, device=device
                ),
            )
    optimizer, scheduler = make_optimizer(model, config)
    # counted after the optimizer exists: some (LoRA-FA) freeze parameters when they are created
    out.num_trainable_params, out.num_total_params = count_parameters(model)
    use_scaler = config.use_amp and device == "cuda" and config.dtype != "bfloat16"
    return TrainState(
        model=model,
        tokenizer=tokenizer,
        task=task,
        data=data,
        config=config,
        device=device,
        progress=progress,
        hooks=hooks,
        meter=meter,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device, enabled=use_scaler),
        autocast=(lambda: torch.autocast(device_type=device)) if config.use_amp else nullcontext,
        batches=stream(),
        valid_prompts=valid_prompts,
        test_prompts=test_prompts,
        out=out,
    )


def _collate_for(config: TrainConfig) -> Callable[..., dict[str, torch.Tensor]]:
    return reference_parity_rules.collate if config.reference_parity else collate


def _init_batches(
    stream: Iterator[list[list[list[int]]]], *, steps: int, config: TrainConfig, tokenizer: Any, device: str
) -> list[dict[str, torch.Tensor]]:
    """The collated micro-batches of the first `steps` training steps, on the device (init hooks' input)."""
    collate_mb = _collate_for(config)
    return [
        {k: v.to(device) for k, v in collate_mb(mb, pad_id=tokenizer.pad_token_id).items()}
        for _ in range(steps)
        for mb in next(stream)
    ]


def train_step(state: TrainState, step: int) -> float:
    """One optimizer step over its micro-batches; returns the step's training loss (summed over them)."""
    tic = time.perf_counter()
    model, hooks, device = state.model, state.hooks, state.device
    collate_mb = _collate_for(state.config)
    micro_batches = [collate_mb(mb, pad_id=state.tokenizer.pad_token_id) for mb in next(state.batches)]
    # normalise by the label tokens of the whole step, so accumulation equals one big batch
    n_items = (
        reference_parity_rules.loss_normaliser(micro_batches)
        if state.config.reference_parity
        else sum(int((mb["labels"][:, 1:] != -100).sum()) for mb in micro_batches)
    )
    state.tokens.append(sum(int(mb["attention_mask"].sum()) for mb in micro_batches))
    state.optimizer.zero_grad(set_to_none=True)
    step_loss = torch.zeros((), device=device)
    for mb in micro_batches:
        mb = {k: v.to(device, non_blocking=True) for k, v in mb.items()}
        with state.autocast():
            loss = model(**mb, num_items_in_batch=n_items).loss
        objective = loss + hooks.aux_loss(model) / len(micro_batches) if hooks.aux_loss else loss
        state.scaler.scale(objective).backward()
        step_loss += loss.detach()
        state.samples += len(mb["input_ids"])
    loss_value = step_loss.item()  # the one host synchronisation per step
    if not math.isfinite(loss_value):
        raise RunCanceled(f"non-finite training loss ({loss_value}) at step {step}")
    if state.config.grad_norm_clip:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), state.config.grad_norm_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if hooks.on_step is not None:
        hooks.on_step(model, step)
    state.losses.append(loss_value)
    allocated, reserved = state.meter.read()
    state.out.memory_allocated.append(allocated)
    state.out.memory_reserved.append(reserved)
    state.durations.append(time.perf_counter() - tic)
    return loss_value


def validation_entry(state: TrainState, step: int) -> dict[str, Any]:
    """Validate and summarise the steps since the last validation: one entry of the training curve."""
    state.progress.evaluating(step, prompts=len(state.valid_prompts))
    tic_eval = time.perf_counter()
    correct, gen = evaluate_accuracy(
        state.model,
        state.tokenizer,
        task=state.task,
        examples=state.data.valid,
        prompts=state.valid_prompts,
        config=state.config,
        device=state.device,
        progress=state.progress.interactive,
    )
    dur_eval = time.perf_counter() - tic_eval
    state.eval_time += dur_eval
    window = slice(-state.config.eval_steps, None)
    dur_train = sum(state.durations[window])
    return {
        STEP: step,
        VALID_ACCURACY.key: sum(correct) / max(len(correct), 1),
        STEP_TRAIN_LOSS.key: float(np.mean(state.losses[window])),
        STEP_TRAIN_SAMPLES.key: state.samples,
        STEP_TRAIN_TIME.key: dur_train,
        STEP_EVAL_TIME.key: dur_eval,
        TOKENS_PER_SEC.key: sum(state.tokens[window]) / max(dur_train, 1e-9),
        MEM_ALLOCATED_AVG.key: float(np.mean(state.out.memory_allocated[window])),
        MEM_RESERVED_AVG.key: float(np.mean(state.out.memory_reserved[window])),
        ELAPSED_TIME.key: time.perf_counter() - state.tic_train,
        LEARNING_RATE.key: state.scheduler.get_last_lr()[0],
        VALID_GENERATED_TOKENS.key: gen.num_generated_tokens,
    }


def final_entry(state: TrainState, step: int, *, forgetting_before: float) -> dict[str, Any]:
    """Test generation and forgetting after training: the final metrics dict (test correctness to `out`)."""
    progress, data, config = state.progress, state.data, state.config
    with progress.phase(f"test generation ({len(state.test_prompts)} prompts)") as note:
        correct, gen = evaluate_accuracy(
            state.model,
            state.tokenizer,
            task=state.task,
            examples=data.test,
            prompts=state.test_prompts,
            config=config,
            device=state.device,
            progress=progress.interactive,
        )
        note.text = f"{TEST_ACCURACY.label} {sum(correct) / max(len(correct), 1):.3f}"
    state.out.test_correct = correct
    state.out.test_completions = completion_items(gen, data.test)
    with progress.phase(f"forgetting after training ({len(data.forgetting_texts)} texts)") as note:
        after = forgetting_loss(
            state.model, state.tokenizer, data.forgetting_texts, config=config, device=state.device
        )
        note.text = f"forgetting {after - forgetting_before:+.4f}"
    return {
        STEP: step,
        TEST_ACCURACY.key: sum(correct) / max(len(correct), 1),
        TRAIN_LOSS.key: float(np.mean(state.losses[-config.eval_steps :])),
        TRAIN_SAMPLES.key: state.samples,
        TRAIN_TOKENS.key: sum(state.tokens),
        FORGETTING.key: after - forgetting_before,
        FORGETTING_BEFORE.key: forgetting_before,
        **state.task.extra_metrics(gen.completions, data.test, prompts=gen.prompts),
    }


def train(
    *,
    model: Any,
    tokenizer: Any,
    task: Task,
    data: TaskData,
    config: TrainConfig,
    device: str,
    verbose: bool = False,
    forgetting_loss_before: float | None = None,
    progress: RunProgress | None = None,
    on_validation: Callable[[dict[str, Any]], None] | None = None,
    final_test: bool = True,
) -> TrainOutcome:
    """Train for config.max_steps, validate every eval_steps, then test and measure forgetting.

    `forgetting_loss_before` (required with the final test) is the base model's loss on the
    forgetting texts, measured by the caller before PEFT wrapped it (run.prepare_model): some
    initialisations (PiSSA, OLoRA) rewrite the base weights, so it cannot be measured here.
    `on_validation` gets each validation entry; it may raise EarlyStop to end the run there.
    `final_test=False` (a tuning trial) never tokenises nor evaluates the test split and skips
    forgetting: selection uses the validation split only.

    Never raises for problems during training: they end as status "canceled" with the message and
    the metrics gathered so far, so that the caller can still write a result. `progress` shows each
    phase and step (default: on stderr).
    """
    require_baseline(final_test, forgetting_loss_before, who="train")
    state = setup(
        model=model,
        tokenizer=tokenizer,
        task=task,
        data=data,
        config=config,
        device=device,
        progress=progress or RunProgress(),
        final_test=final_test,
    )
    return drive(
        state,
        SUPERVISED,
        final_test=final_test,
        forgetting_loss_before=forgetting_loss_before,
        verbose=verbose,
        on_validation=on_validation,
    )


@dataclass(frozen=True)
class Phases:
    """A loop's phases over its state (a TrainState or one with the same tallies: peftbench.rl's):
    one optimizer step (returns its loss), a validation entry, the final entry."""

    step: Callable[[Any, int], float]
    validation: Callable[[Any, int], dict[str, Any]]
    final: Callable[..., dict[str, Any]]


SUPERVISED = Phases(step=train_step, validation=validation_entry, final=final_entry)


def require_baseline(final_test: bool, forgetting_loss_before: float | None, *, who: str) -> None:
    if final_test and forgetting_loss_before is None:
        raise ValueError(
            f"{who}: forgetting_loss_before is required for the final test (see run.prepare_model)"
        )


def drive(
    state: Any,
    phases: Phases,
    *,
    final_test: bool,
    forgetting_loss_before: float | None,
    verbose: bool,
    on_validation: Callable[[dict[str, Any]], None] | None,
) -> TrainOutcome:
    """The loop over a set-up state, then the final entry; what stopped it becomes the outcome's status
    (never raises for problems during training; EarlyStop goes through with the outcome so far)."""
    out = state.out
    out.forgetting_loss_before = forgetting_loss_before
    state.tic_train = time.perf_counter()
    state.model.train()
    try:
        step = _loop(state, phases, verbose=verbose, on_validation=on_validation)
        if final_test:
            out.metrics.append(phases.final(state, step, forgetting_before=forgetting_loss_before))
        out.status = TrainStatus.SUCCESS
    except EarlyStop as stop:
        stop.outcome = _finish(state)
        raise
    except KeyboardInterrupt:
        out.status, out.error_msg = TrainStatus.CANCELED, "manually canceled"
    except RunCanceled as exc:
        out.status, out.error_msg = TrainStatus.CANCELED, str(exc)
    except torch.OutOfMemoryError as exc:
        out.status, out.error_msg = TrainStatus.CANCELED, f"out of memory: {exc}"
    except Exception as exc:  # any error during training still yields a result with what was measured
        out.status, out.error_msg = TrainStatus.CANCELED, f"{type(exc).__name__}: {exc}"
    return _finish(state)


def _loop(
    state: Any, phases: Phases, *, verbose: bool, on_validation: Callable[[dict[str, Any]], None] | None
) -> int:
    """The steps, with a validation entry every eval_steps; returns the last step."""
    config, progress, step = state.config, state.progress, 0
    for step in progress.steps(config.max_steps, eval_every=config.eval_steps):
        loss = phases.step(state, step)
        progress.step_done(step, loss=loss)
        if step % config.eval_steps == 0:
            entry = phases.validation(state, step)
            state.out.metrics.append(entry)
            progress.evaluated(entry, max_steps=config.max_steps, eval_every=config.eval_steps)
            if verbose:
                print(json.dumps(entry), file=sys.stderr, flush=True)
            if on_validation is not None:
                on_validation(entry)
        if step % EMPTY_CACHE_EVERY == 0:
            state.meter.empty_cache()
    return step


def _finish(state: Any) -> TrainOutcome:
    out = state.out
    out.train_time = time.perf_counter() - state.tic_train - state.eval_time
    out.memory_peak = state.meter.peak()
    return out
