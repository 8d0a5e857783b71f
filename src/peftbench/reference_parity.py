"""The reference's training choices, behind the `reference_parity` option, to measure our fixes.

huggingface/peft `method_comparison/MetaMathQA/run.py` differs from our loop (peftbench.train) in four
details of the data and the loss; each function here reproduces one of them, and train.py picks these
instead of its own when `TrainConfig.reference_parity` is on. Our choices stay the default: see the
"Differences from the reference" table in benchmarks/MetaMathQA/README.md for why, and for the
measured effect.

1. No EOS is appended to a training sequence. The label of the first pad position is kept instead
   (the pad token is the EOS token for Llama 3 and tinymath), so that a row learns to stop, except
   the longest row of each batch, which has no pad position: it never sees its EOS.
2. The loss is divided by the attention-mask sum of the step, not by the number of label tokens.
3. Sequences of equal length in a bucket are ordered by `torch.argsort(descending=True)`, which is
   not stable, instead of keeping their order.
4. After the last bucket of the data, the last partial bucket is repeated once. (The reference then
   stops training; we go on with the next epoch, so that every run makes `max_steps` steps.)
"""

from __future__ import annotations

from typing import Any

import torch

from peftbench.tasks.base import Example
from peftbench.tokencache import cached_tokenize


def tokenize_train(
    tokenizer: Any, examples: list[Example], *, template: str, max_len: int
) -> list[list[int]]:
    """Prompt + response, truncated, without EOS (1.)."""
    texts = [template.format(query=e.query) + e.response for e in examples]
    ids = cached_tokenize(texts, tokenizer=tokenizer, tokenize=lambda t: tokenizer(t)["input_ids"])
    return [seq[:max_len] for seq in ids]


def collate(micro_batch: list[list[int]], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask; the labels keep the first pad token of each row (1.)."""
    width = max(len(s) for s in micro_batch)
    input_ids = torch.full((len(micro_batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(micro_batch), width), dtype=torch.long)
    labels = torch.full((len(micro_batch), width), -100, dtype=torch.long)
    for row, seq in enumerate(micro_batch):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        # the row's tokens and, where the row is shorter than the batch, one pad token as its last label
        labels[row, : len(seq) + 1] = input_ids[row, : len(seq) + 1]
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def loss_normaliser(micro_batches: list[dict[str, torch.Tensor]]) -> int:
    """The attention-mask sum of the step (2.)."""
    return sum(int(mb["attention_mask"].sum()) for mb in micro_batches)


def longest_first(bucket: list[int], lengths: list[int]) -> list[int]:
    """The bucket's indices longest first, ties in torch.argsort's (unstable) order (3.)."""
    order = torch.argsort(torch.tensor([lengths[i] for i in bucket]), descending=True)
    return [bucket[int(j)] for j in order]
