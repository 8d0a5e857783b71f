"""Reinforcement learning with a verifiable reward (GRPO-style), written out like train.py: sample,
score, compute advantages, step. No Trainer.

Each step draws `prompts_per_step` training prompts and samples G completions of each in one batched
`generate` call (KV cache, left padding). The reward is the task's answer rule (peftbench.rlconfig).
Advantages are relative to each prompt's group; the loss is the clipped policy-ratio objective, averaged
over every completion token of the step, plus an optional KL penalty to the starting policy (the base
model with the adapter disabled; a frozen copy for full fine-tuning). Validation, test accuracy,
forgetting and the outcome are those of train.py, so the runner files the result as any other.

Laid out as train.py is: `setup` builds an `RLState`, `rl_step` is one flat optimizer step (collect,
update, step, the method's `on_step`), `validation_entry` and `final_entry` extend train.py's, and
`train` runs them and maps what stops it to a status. It knows no PEFT method: a method's per-step
hook and auxiliary loss come from peftbench.methods (an `init` hook, which takes supervised batches,
is refused). Metric keys come from their declarations in peftbench.tasks.base.

Semantics follow trl's GRPOTrainer (group-normalised advantages with the unbiased std and 1e-4, logits
divided by the sampling temperature, the k3 KL estimator, token-level averaging as its "bnpo"/"dapo"
losses); trl is not imported: its trainer is a Trainer, and the loop here must stay readable and
share the runner's evaluation and records.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from peftbench import methods
from peftbench.config import TrainConfig
from peftbench.modeling import MemoryMeter, count_parameters
from peftbench.progress import RunProgress
from peftbench.rlconfig import REWARDS, RLSettings, rl_settings
from peftbench.tasks.base import (
    GENERATED_TOKENS,
    GENERATED_TOKENS_PER_SEC,
    SAMPLING_TIME,
    STEP_GENERATED_TOKENS_PER_SEC,
    STEP_TRAIN_KL,
    STEP_TRAIN_REWARD,
    TRAIN_REWARD,
    Task,
    TaskData,
)
from peftbench.train import (
    Phases,
    RunCanceled,
    TrainOutcome,
    drive,
    make_optimizer,
    require_baseline,
    tokenize_prompts,
)
from peftbench.train import final_entry as train_final_entry
from peftbench.train import validation_entry as train_validation_entry

ADVANTAGE_EPS = 1e-4  # trl's: a group whose rewards are all equal gets advantage 0, not 0/0


@dataclass
class Samples:
    """G completions of each prompt, rows grouped by prompt (the G of prompt 0 first)."""

    sequences: torch.Tensor  # [N, prompt_len + completion_len]: left-padded prompt, then the completion
    attention_mask: torch.Tensor  # [N, same]: the prompt's tokens and the completion up to its first EOS
    prompt_length: int
    completions: list[str]  # decoded, without the EOS
    num_generated_tokens: int  # EOS included

    @property
    def completion_mask(self) -> torch.Tensor:
        return self.attention_mask[:, self.prompt_length :]


def group_advantages(rewards: torch.Tensor, *, group_size: int, scale: bool = True) -> torch.Tensor:
    """Each reward minus its group's mean, divided by the group's (unbiased) std + 1e-4 when `scale`.

    `rewards` holds groups of `group_size` consecutive rows. A group whose rewards are all equal
    (all wrong, or all right) has advantage 0 everywhere: it teaches nothing.
    """
    grouped = rewards.view(-1, group_size).float()
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
    return advantages.reshape(-1)


@torch.no_grad()
def sample(
    model: Any, tokenizer: Any, *, prompts: list[list[int]], settings: RLSettings, device: str
) -> Samples:
    """All G completions of all prompts in one `generate` call, sampled at the settings' temperature
    from the full distribution (no top-k or top-p: the loss assumes the policy's own probabilities)."""
    from transformers import GenerationConfig

    repeated = [p for p in prompts for _ in range(settings.group_size)]
    batch = tokenizer.pad({"input_ids": repeated}, return_tensors="pt", padding_side="left").to(device)
    prompt_length = batch["input_ids"].shape[1]
    config = GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=settings.max_new_tokens,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.eval()
    output = model.generate(**batch, generation_config=config)
    model.train()
    completion = output[:, prompt_length:]
    is_eos = completion == tokenizer.eos_token_id
    width = completion.shape[1]
    # the first EOS ends a completion (and is trained on: the policy learns to stop); rows that never
    # stop keep every sampled token
    ends = torch.where(
        is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(is_eos[:, 0], width, dtype=torch.long)
    )
    keep = torch.arange(width, device=completion.device)[None, :] <= ends[:, None]
    texts = [
        tokenizer.decode(row[: int(end)], skip_special_tokens=True)
        for row, end in zip(completion, ends, strict=True)
    ]
    return Samples(
        sequences=output,
        attention_mask=torch.cat([batch["attention_mask"], keep.long()], dim=1),
        prompt_length=prompt_length,
        completions=texts,
        num_generated_tokens=int(keep.sum()),
    )


def token_logprobs(
    model: Any,
    sequences: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    prompt_length: int,
    temperature: float,
) -> torch.Tensor:
    """Log-probabilities [N, completion_len] of the completion tokens under `model`, at the sampling
    temperature (as trl: the ratio then compares the distributions the samples came from)."""
    # left padding: the positions generate used (models that drop position_ids recompute their own)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, -sequences.shape[1] :]  # prompt-learning adapters prepend virtual tokens
    logits = logits[:, prompt_length - 1 : -1].float() / temperature
    targets = sequences[:, prompt_length:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def reference_policy(model: Any, *, is_peft: bool) -> Callable[[], Any]:
    """The KL reference as a context factory: inside it, `reference(model)` is the starting policy.

    With an adapter it is the base model with the adapter disabled (no second copy in memory; for
    methods whose initialisation rewrites base weights, PiSSA and OLoRA, that is the rewritten base).
    With full fine-tuning it is a frozen copy of the model as training starts.
    """
    if is_peft:
        return lambda: _Reference(model, model.disable_adapter())
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return lambda: _Reference(frozen, nullcontext())


class _Reference:
    def __init__(self, model: Any, context: Any) -> None:
        self.model, self.context = model, context

    def __enter__(self) -> Any:
        self.context.__enter__()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        self.context.__exit__(*exc)


def policy_loss_sum(
    logp: torch.Tensor,
    *,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over completion tokens of the clipped surrogate loss plus kl_coef x KL, sum of the KL).

    The caller divides by the step's number of completion tokens. KL is trl's k3 estimator,
    exp(ref - logp) - (ref - logp) - 1, which is >= 0 and 0 where the policies agree.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * adv)
    kl = torch.zeros_like(per_token)
    if ref_logp is not None:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_coef * kl
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum(), (kl.detach() * mask).sum()


def prompt_stream(count: int, *, per_step: int, seed: int) -> Iterator[list[int]]:
    """Indices of the training prompts, `per_step` at a time, each epoch shuffled with the run's seed."""
    rng = np.random.default_rng(seed)
    buffer: list[int] = []
    while True:
        while len(buffer) < per_step:
            buffer.extend(int(i) for i in rng.permutation(count))
        yield buffer[:per_step]
        buffer = buffer[per_step:]


@dataclass
class Batch:
    """One batch of samples with everything the updates need."""

    samples: Samples
    rewards: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor | None  # None: one update per batch, old = current (detached)
    ref_logp: torch.Tensor | None  # None: no KL penalty
    active: list[int]  # rows with a gradient: advantage != 0 or a KL term


def collect(
    model: Any,
    tokenizer: Any,
    *,
    task: Task,
    data: TaskData,
    prompts: list[list[int]],
    indices: list[int],
    settings: RLSettings,
    config: TrainConfig,
    reference: Callable[[], Any] | None,
    device: str,
) -> Batch:
    """Sample, score, and compute what the updates on this batch need (under no_grad)."""
    samples = sample(
        model, tokenizer, prompts=[prompts[i] for i in indices], settings=settings, device=device
    )
    examples = [data.train[i] for i in indices for _ in range(settings.group_size)]
    reward = REWARDS[settings.reward]
    rewards = torch.tensor([reward(c, e, task) for c, e in zip(samples.completions, examples, strict=True)])
    advantages = group_advantages(rewards, group_size=settings.group_size, scale=settings.scale_advantages)
    # rows with advantage 0 contribute exactly nothing without a KL term: their forward pass is skipped
    active = [i for i in range(len(rewards)) if reference is not None or advantages[i] != 0]
    old_logp = ref_logp = None
    with torch.no_grad():
        if settings.updates_per_batch > 1:
            old_logp = _logprobs_in_batches(
                model, samples, settings=settings, batch_size=config.batch_size, device=device
            )
        if reference is not None:
            with reference() as ref_model:
                ref_logp = _logprobs_in_batches(
                    ref_model, samples, settings=settings, batch_size=config.batch_size, device=device
                )
    return Batch(samples, rewards, advantages.to(device), old_logp, ref_logp, active)


def _logprobs_in_batches(
    model: Any, samples: Samples, *, settings: RLSettings, batch_size: int, device: str
) -> torch.Tensor:
    parts = [
        token_logprobs(
            model,
            samples.sequences[s : s + batch_size],
            samples.attention_mask[s : s + batch_size],
            prompt_length=samples.prompt_length,
            temperature=settings.temperature,
        )
        for s in range(0, len(samples.sequences), batch_size)
    ]
    return torch.cat(parts)


def update(model: Any, batch: Batch, *, settings: RLSettings, config: TrainConfig) -> tuple[float, float]:
    """Backward of the step's loss (averaged over all its completion tokens), in micro-batches of
    `batch_size` sequences: (loss, mean KL per token). The caller zeroes and steps the optimizer."""
    s = batch.samples
    mask = s.completion_mask
    n_tokens = max(int(mask.sum()), 1)
    loss_total, kl_total = 0.0, 0.0
    for start in range(0, len(batch.active), config.batch_size):
        rows = torch.tensor(batch.active[start : start + config.batch_size], device=mask.device)
        logp = token_logprobs(
            model,
            s.sequences[rows],
            s.attention_mask[rows],
            prompt_length=s.prompt_length,
            temperature=settings.temperature,
        )
        loss, kl = policy_loss_sum(
            logp,
            old_logp=batch.old_logp[rows] if batch.old_logp is not None else logp.detach(),
            advantages=batch.advantages[rows],
            mask=mask[rows],
            clip_epsilon=settings.clip_epsilon,
            ref_logp=batch.ref_logp[rows] if batch.ref_logp is not None else None,
            kl_coef=settings.kl_coef,
        )
        (loss / n_tokens).backward()
        loss_total += float(loss.detach()) / n_tokens
        kl_total += float(kl) / n_tokens
    return loss_total, kl_total


@dataclass
class RLState:
    """Everything an RL run's phases share. The tallies carry train.TrainState's names (losses,
    durations, tokens, samples, out, ...), so train.validation_entry and train.final_entry summarise
    an RL run as they do a supervised one; the RL-only tallies are the rewards, KL and sampling."""

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
    settings: RLSettings
    reference: Callable[[], Any] | None  # the KL reference policy; None without a KL penalty
    stream: Iterator[list[int]]
    train_prompts: list[list[int]]
    valid_prompts: list[list[int]]
    test_prompts: list[list[int]]
    out: TrainOutcome
    batch: Batch | None = None  # the current batch, reused for updates_per_batch steps
    losses: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    kls: list[float] = field(default_factory=list)
    gen_tokens: list[int] = field(default_factory=list)
    gen_times: list[float] = field(default_factory=list)
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
) -> RLState:
    """Tokenise the prompts, build the optimizer and the KL reference: the state to train."""
    settings = rl_settings(config.rl)
    is_peft = hasattr(model, "disable_adapter")
    hooks = methods.hooks_for(model.peft_config[model.active_adapter] if is_peft else None)
    if hooks.init is not None:
        # init hooks take supervised micro-batches (prompt + response labels), which RL has not
        raise ValueError("rl.train: a method with an init hook cannot be trained by the RL loop")
    optimizer, scheduler = make_optimizer(model, config)
    out = TrainOutcome()
    out.num_trainable_params, out.num_total_params = count_parameters(model)
    reference = reference_policy(model, is_peft=is_peft) if settings.kl_coef > 0 else None
    with progress.phase(f"tokenising {len(data.train)} training prompts"):
        train_prompts = tokenize_prompts(tokenizer, data.train, template=config.query_template)
        valid_prompts = tokenize_prompts(tokenizer, data.valid, template=config.query_template)
        test_prompts = (
            tokenize_prompts(tokenizer, data.test, template=config.query_template) if final_test else []
        )
    stream = prompt_stream(len(train_prompts), per_step=settings.prompts_per_step, seed=config.seed)
    return RLState(
        model=model,
        tokenizer=tokenizer,
        task=task,
        data=data,
        config=config,
        device=device,
        progress=progress,
        hooks=hooks,
        meter=MemoryMeter(device),
        optimizer=optimizer,
        scheduler=scheduler,
        settings=settings,
        reference=reference,
        stream=stream,
        train_prompts=train_prompts,
        valid_prompts=valid_prompts,
        test_prompts=test_prompts,
        out=out,
    )


def rl_step(state: RLState, step: int) -> float:
    """One optimizer step: a fresh batch every updates_per_batch steps, its update, the method's
    per-step hook. Returns the step's loss."""
    tic = time.perf_counter()
    model, config, settings = state.model, state.config, state.settings
    gen_time, gen_tokens = 0.0, 0
    if state.batch is None or (step - 1) % settings.updates_per_batch == 0:
        state.batch = collect(
            model,
            state.tokenizer,
            task=state.task,
            data=state.data,
            prompts=state.train_prompts,
            indices=next(state.stream),
            settings=settings,
            config=config,
            reference=state.reference,
            device=state.device,
        )
        gen_time, gen_tokens = time.perf_counter() - tic, state.batch.samples.num_generated_tokens
        state.samples += len(state.batch.rewards)
    batch = state.batch
    state.optimizer.zero_grad(set_to_none=True)
    loss_value, kl_value = update(model, batch, settings=settings, config=config)
    if not math.isfinite(loss_value):
        raise RunCanceled(f"non-finite training loss ({loss_value}) at step {step}")
    if state.hooks.aux_loss is not None:
        _backward_aux_loss(state.hooks.aux_loss(model))
    if config.grad_norm_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_norm_clip)
    state.optimizer.step()
    state.scheduler.step()
    if state.hooks.on_step is not None:
        state.hooks.on_step(model, step)
    allocated, reserved = state.meter.read()
    state.out.memory_allocated.append(allocated)
    state.out.memory_reserved.append(reserved)
    state.losses.append(loss_value)
    state.rewards.append(float(batch.rewards.mean()))
    state.kls.append(kl_value)
    state.durations.append(time.perf_counter() - tic)
    state.tokens.append(int(batch.samples.attention_mask.sum()))
    state.gen_tokens.append(gen_tokens)
    state.gen_times.append(gen_time)
    return loss_value


def _backward_aux_loss(aux: Any) -> None:
    """A method's auxiliary loss (KaSA's regularisers), once per step, outside the logged loss: the
    same total as train.py's 1/micro-batches share in each micro-batch, and applied even on a step
    whose every advantage is 0 (no micro-batch then). A float has no gradient."""
    if isinstance(aux, torch.Tensor) and aux.requires_grad:
        aux.backward()


def validation_entry(state: RLState, step: int) -> dict[str, Any]:
    """train.py's validation entry plus the RL figures of the steps since the previous one."""
    window = slice(-state.config.eval_steps, None)
    entry = train_validation_entry(state, step)  # type: ignore[arg-type]  # RLState has its fields
    return {
        **entry,
        STEP_TRAIN_REWARD.key: float(np.mean(state.rewards[window])),
        STEP_TRAIN_KL.key: float(np.mean(state.kls[window])),
        STEP_GENERATED_TOKENS_PER_SEC.key: sum(state.gen_tokens[window])
        / max(sum(state.gen_times[window]), 1e-9),
    }


def final_entry(state: RLState, step: int, *, forgetting_before: float) -> dict[str, Any]:
    """Test accuracy and forgetting (train.py's final entry), and the RL figures of the whole run.

    The training curve is the "train reward" of the validation entries, the mean over the steps
    since the previous one, as "train loss" is for supervised runs."""
    entry = train_final_entry(state, step, forgetting_before=forgetting_before)  # type: ignore[arg-type]
    return {
        **entry,
        TRAIN_REWARD.key: float(np.mean(state.rewards[-state.config.eval_steps :])),
        GENERATED_TOKENS: int(sum(state.gen_tokens)),
        GENERATED_TOKENS_PER_SEC.key: sum(state.gen_tokens) / max(sum(state.gen_times), 1e-9),
        SAMPLING_TIME: float(sum(state.gen_times)),
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
    """RL for config.max_steps, validate every eval_steps, then test and measure forgetting.

    Same contract as train.train: `forgetting_loss_before` is required with the final test (the
    runner measures it on the base model, run.prepare_model); never raises for problems during
    training (they end as status "canceled" with what was measured); EarlyStop from `on_validation`
    goes through with the outcome so far; `final_test=False` (a tuning trial) skips test and forgetting.
    """
    require_baseline(final_test, forgetting_loss_before, who="rl.train")
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
        Phases(step=rl_step, validation=validation_entry, final=final_entry),
        final_test=final_test,
        forgetting_loss_before=forgetting_loss_before,
        verbose=verbose,
        on_validation=on_validation,
    )
