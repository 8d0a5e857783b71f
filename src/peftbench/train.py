"""The training loop, written out: batches, steps, periodic validation, final test and forgetting.

It reads top to bottom like the reference's `run.py` and nanoGPT's `train.py`: no Trainer, no
callbacks. It knows nothing task-specific: the task comes in as data (TaskData) and a scorer.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from peftbench import reference_parity as reference_parity_rules
from peftbench.config import TrainConfig
from peftbench.evaluation import Generations, generate, mean_per_token_loss, score
from peftbench.modeling import MemoryMeter, count_parameters
from peftbench.progress import RunProgress
from peftbench.tasks.base import Example, Task, TaskData
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
    status: str = "failed"  # success | canceled | failed
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
    kwargs = dict(config.optimizer_kwargs)
    if config.optimizer_type == "lora+":
        from peft.optimizers import create_loraplus_optimizer

        optimizer = create_loraplus_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)
    elif config.optimizer_type == "lora-fa":
        from peft.optimizers import create_lorafa_optimizer

        # the reference repeats r and lora_alpha in optimizer_kwargs; default them from the LoRA config
        lora = model.peft_config[model.active_adapter]
        kwargs.setdefault("r", lora.r)
        kwargs.setdefault("lora_alpha", lora.lora_alpha)
        optimizer = create_lorafa_optimizer(model, **kwargs)
    elif config.optimizer_type == "riemannian":
        from peft.optimizers import create_riemannian_optimizer

        optimizer = create_riemannian_optimizer(model, optimizer_cls=torch.optim.AdamW, **kwargs)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = getattr(torch.optim, config.optimizer_type)(params, **kwargs)
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

    `on_validation` gets each validation entry; it may raise EarlyStop to end the run there.
    `final_test=False` (a tuning trial) never tokenises nor evaluates the test split and skips
    forgetting: selection uses the validation split only.

    Never raises for problems during training: they end as status "canceled" with the message and
    the metrics gathered so far, so that the caller can still write a result. `progress` shows each
    phase and step (default: on stderr).
    """
    progress = progress or RunProgress()
    out = TrainOutcome()
    meter = MemoryMeter(device)
    is_peft = hasattr(model, "disable_adapter")
    peft_config = model.peft_config[model.active_adapter] if is_peft else None
    is_adalora = is_peft and peft_config.peft_type == "ADALORA"
    # KaSA's regularizers (on its singular values and the factors' orthogonality) are part of the
    # method, but peft cannot add them to the loss itself: the training loop must (peft's KaSA docs)
    uses_kasa = getattr(peft_config, "kasa_config", None) is not None
    use_scaler = config.use_amp and device == "cuda" and config.dtype != "bfloat16"
    scaler = torch.amp.GradScaler(device, enabled=use_scaler)
    autocast = (lambda: torch.autocast(device_type=device)) if config.use_amp else nullcontext
    optimizer, scheduler = make_optimizer(model, config)
    # counted after the optimizer exists: some (LoRA-FA) freeze parameters when they are created
    out.num_trainable_params, out.num_total_params = count_parameters(model)

    parity = config.reference_parity
    with progress.phase(f"tokenising {len(data.train)} training examples"):
        train_seqs = (reference_parity_rules.tokenize_train if parity else tokenize_train)(
            tokenizer, data.train, template=config.query_template, max_len=config.max_seq_length
        )
        valid_prompts = tokenize_prompts(tokenizer, data.valid, template=config.query_template)
        test_prompts = (
            tokenize_prompts(tokenizer, data.test, template=config.query_template) if final_test else []
        )
    batches = step_batches(
        train_seqs,
        batch_size=config.batch_size,
        accumulation=config.gradient_accumulation_steps,
        seed=config.seed,
        shuffle=task.shuffle_train,
        reference_parity=parity,
    )

    if forgetting_loss_before is None and final_test:
        # with the adapter switched off: the base model, unless the adapter's initialisation rewrote the
        # base weights (PiSSA, OLoRA move principal components into the adapter); the runner therefore
        # measures the baseline before wrapping and passes it in
        adapter_off = model.disable_adapter() if is_peft else nullcontext()
        with progress.phase(f"forgetting baseline ({len(data.forgetting_texts)} texts)") as note, adapter_off:
            forgetting_loss_before = forgetting_loss(
                model, tokenizer, data.forgetting_texts, config=config, device=device
            )
            note.text = f"loss {forgetting_loss_before:.4f}"
    out.forgetting_loss_before = forgetting_loss_before

    losses: list[float] = []
    durations: list[float] = []
    tokens: list[int] = []
    samples = 0
    eval_time = 0.0
    tic_train = time.perf_counter()
    model.train()
    step = 0
    try:
        for step in progress.steps(config.max_steps, eval_every=config.eval_steps):
            tic = time.perf_counter()
            collate_step = reference_parity_rules.collate if parity else collate
            micro_batches = [collate_step(mb, pad_id=tokenizer.pad_token_id) for mb in next(batches)]
            # normalise by the label tokens of the whole step, so accumulation equals one big batch
            n_items = (
                reference_parity_rules.loss_normaliser(micro_batches)
                if parity
                else sum(int((mb["labels"][:, 1:] != -100).sum()) for mb in micro_batches)
            )
            tokens.append(sum(int(mb["attention_mask"].sum()) for mb in micro_batches))
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for mb in micro_batches:
                mb = {k: v.to(device, non_blocking=True) for k, v in mb.items()}
                with autocast():
                    loss = model(**mb, num_items_in_batch=n_items).loss
                objective = (
                    loss + model.base_model._get_kasa_loss() / len(micro_batches) if uses_kasa else loss
                )
                scaler.scale(objective).backward()
                step_loss += loss.detach()
                samples += len(mb["input_ids"])
            loss_value = step_loss.item()  # the one host synchronisation per step
            if not math.isfinite(loss_value):
                raise RunCanceled(f"non-finite training loss ({loss_value}) at step {step}")
            if config.grad_norm_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_norm_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if is_adalora:
                model.base_model.update_and_allocate(step)
            losses.append(loss_value)
            allocated, reserved = meter.read()
            out.memory_allocated.append(allocated)
            out.memory_reserved.append(reserved)
            durations.append(time.perf_counter() - tic)
            progress.step_done(step, loss=loss_value)

            if step % config.eval_steps == 0:
                progress.evaluating(step, prompts=len(valid_prompts))
                tic_eval = time.perf_counter()
                correct, gen = evaluate_accuracy(
                    model,
                    tokenizer,
                    task=task,
                    examples=data.valid,
                    prompts=valid_prompts,
                    config=config,
                    device=device,
                    progress=progress.interactive,
                )
                dur_eval = time.perf_counter() - tic_eval
                eval_time += dur_eval
                window = slice(-config.eval_steps, None)
                dur_train = sum(durations[window])
                entry = {
                    "step": step,
                    "valid accuracy": sum(correct) / max(len(correct), 1),
                    "train loss": float(np.mean(losses[window])),
                    "train samples": samples,
                    "train time": dur_train,
                    "eval time": dur_eval,
                    "tokens / sec": sum(tokens[window]) / max(dur_train, 1e-9),
                    "mem allocated avg": float(np.mean(out.memory_allocated[window])),
                    "mem reserved avg": float(np.mean(out.memory_reserved[window])),
                    "elapsed time": time.perf_counter() - tic_train,
                    "lr": scheduler.get_last_lr()[0],
                    "valid generated tokens": gen.num_generated_tokens,
                }
                out.metrics.append(entry)
                progress.evaluated(entry, max_steps=config.max_steps, eval_every=config.eval_steps)
                if verbose:
                    print(json.dumps(entry), file=sys.stderr, flush=True)
                if on_validation is not None:
                    on_validation(entry)
            if step % EMPTY_CACHE_EVERY == 0:
                meter.empty_cache()
        if not final_test:
            out.status = "success"
            return _finish(out, tic_train=tic_train, eval_time=eval_time, meter=meter)

        with progress.phase(f"test generation ({len(test_prompts)} prompts)") as note:
            correct, gen = evaluate_accuracy(
                model,
                tokenizer,
                task=task,
                examples=data.test,
                prompts=test_prompts,
                config=config,
                device=device,
                progress=progress.interactive,
            )
            note.text = f"test accuracy {sum(correct) / max(len(correct), 1):.3f}"
        out.test_correct = correct
        out.test_completions = completion_items(gen, data.test)
        with progress.phase(f"forgetting after training ({len(data.forgetting_texts)} texts)") as note:
            after = forgetting_loss(model, tokenizer, data.forgetting_texts, config=config, device=device)
            note.text = f"forgetting {after - out.forgetting_loss_before:+.4f}"
        out.metrics.append(
            {
                "step": step,
                "test accuracy": sum(correct) / max(len(correct), 1),
                "train loss": float(np.mean(losses[-config.eval_steps :])),
                "train samples": samples,
                "train total tokens": sum(tokens),
                "forgetting": after - out.forgetting_loss_before,
                "forgetting loss before": out.forgetting_loss_before,
                **task.extra_metrics(gen.completions, data.test, prompts=gen.prompts),
            }
        )
        out.status = "success"
    except EarlyStop as stop:
        stop.outcome = _finish(out, tic_train=tic_train, eval_time=eval_time, meter=meter)
        raise
    except KeyboardInterrupt:
        out.status, out.error_msg = "canceled", "manually canceled"
    except RunCanceled as exc:
        out.status, out.error_msg = "canceled", str(exc)
    except torch.OutOfMemoryError as exc:
        out.status, out.error_msg = "canceled", f"out of memory: {exc}"
    except Exception as exc:  # any error during training still yields a result with what was measured
        out.status, out.error_msg = "canceled", f"{type(exc).__name__}: {exc}"
    return _finish(out, tic_train=tic_train, eval_time=eval_time, meter=meter)


def _finish(out: TrainOutcome, *, tic_train: float, eval_time: float, meter: MemoryMeter) -> TrainOutcome:
    out.train_time = time.perf_counter() - tic_train - eval_time
    out.memory_peak = meter.peak()
    return out
