"""Evaluation: batched greedy generation for accuracy, and per-token loss for forgetting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from peftbench.tasks.base import Example, Task


def generation_config(*, prompt_length: int, generation_kwargs: dict[str, Any], tokenizer: Any) -> Any:
    """GenerationConfig for one batch. When both max_length and max_new_tokens are set, the smaller
    total length wins (transformers accepts only one of them)."""
    from transformers import GenerationConfig

    kwargs = {k: v for k, v in generation_kwargs.items() if v is not None}
    if "max_length" in kwargs and "max_new_tokens" in kwargs:
        kwargs["max_length"] = min(kwargs.pop("max_new_tokens") + prompt_length, kwargs["max_length"])
    kwargs.setdefault("do_sample", False)
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    return GenerationConfig(**kwargs)


@dataclass
class Generations:
    completions: list[str]  # in the order of the prompts given
    num_generated_tokens: int
    prompts: list[str]  # the prompts decoded as the completions are (scorers may read both)


def ignores_position_ids(model: Any) -> bool:
    """Whether left padding shifts the positions the model sees: peft drops `position_ids` for the
    prompt-learning methods that prepend virtual tokens to the input (prompt tuning, p-tuning; see
    `PeftModel._adjust_prompt_learning_kwargs`), so behind left padding a prompt's tokens sit further
    from the virtual tokens than in training. Prefix-style methods (prefix tuning, cartridges) keep
    them."""
    config = getattr(model, "active_peft_config", None)
    # PeftType is a str enum: it compares equal to its name
    return bool(
        config is not None
        and config.is_prompt_learning
        and config.peft_type not in ("PREFIX_TUNING", "CARTRIDGE")
    )


def prompt_batches(prompts: list[list[int]], *, batch_size: int, equal_length: bool) -> list[list[int]]:
    """Indices of the prompts, longest first, cut into batches of at most batch_size; with
    equal_length, a batch holds prompts of one length only, so that nothing is padded."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    if not equal_length:
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and len(prompts[batches[-1][0]]) == len(prompts[i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    *,
    prompts: list[list[int]],
    batch_size: int,
    generation_kwargs: dict[str, Any],
    device: str,
    progress: bool = False,
) -> Generations:
    """Greedy completions of tokenized prompts, batched with left padding.

    Prompts are sorted by length so that each batch pads little (models that ignore position ids get
    no padding at all: `ignores_position_ids`); transformers stops a batch as soon as every sequence
    has produced EOS. Results come back in the original order.
    """
    completions: list[str] = [""] * len(prompts)
    texts = tokenizer.batch_decode(prompts, skip_special_tokens=True)
    num_tokens = 0
    batches = prompt_batches(prompts, batch_size=batch_size, equal_length=ignores_position_ids(model))
    for idx in tqdm(batches, desc="generate", leave=False, disable=not progress):
        batch = tokenizer.pad(
            {"input_ids": [prompts[i] for i in idx]}, return_tensors="pt", padding_side="left"
        ).to(device)
        prompt_length = batch["input_ids"].shape[1]
        config = generation_config(
            prompt_length=prompt_length, generation_kwargs=generation_kwargs, tokenizer=tokenizer
        )
        output = model.generate(**batch, generation_config=config)
        new_tokens = output[:, prompt_length:]
        for row, i in enumerate(idx):
            tokens = new_tokens[row]
            ended = (tokens == tokenizer.eos_token_id).nonzero()
            length = int(ended[0]) if len(ended) else len(tokens)
            num_tokens += length
            completions[i] = tokenizer.decode(tokens[:length], skip_special_tokens=True)
    return Generations(completions=completions, num_generated_tokens=num_tokens, prompts=texts)


def score(task: Task, gen: Generations, examples: list[Example]) -> list[bool]:
    return [
        task.is_correct(c, e, prompt=p)
        for c, e, p in zip(gen.completions, examples, gen.prompts, strict=True)
    ]


@torch.inference_mode()
def mean_per_token_loss(
    model: Any, tokenizer: Any, *, texts: list[str], batch_size: int, max_length: int, device: str
) -> float:
    """Mean cross-entropy per token over all texts (each token counts once, whatever its text's length).

    Texts are batched in order of length: the sum over tokens does not depend on the order, and
    batches of similar lengths pad (and compute) little.
    """
    ids = sorted(tokenizer(texts, truncation=True, max_length=max_length)["input_ids"], key=len)
    total, count = torch.zeros((), dtype=torch.float64), 0
    for start in range(0, len(ids), batch_size):
        batch = tokenizer.pad(
            {"input_ids": ids[start : start + batch_size]}, return_tensors="pt", padding_side="right"
        ).to(device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # prompt-learning adapters prepend virtual tokens: keep the positions of the real ones
        logits = logits[:, -batch["input_ids"].shape[1] :]
        targets = batch["input_ids"][:, 1:]
        mask = batch["attention_mask"][:, 1:].bool()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view_as(targets)
        total += losses[mask].double().sum().cpu()
        count += int(mask.sum())
    return float(total / max(count, 1))
