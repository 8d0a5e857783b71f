"""The reference's training choices behind `reference_parity` (peftbench.reference_parity)."""

from __future__ import annotations

import torch

from peftbench import reference_parity as parity
from peftbench.train import collate, step_batches

PAD = 0


def test_labels_keep_the_first_pad_so_the_longest_row_gets_no_eos():
    batch = parity.collate([[5, 6, 7], [8, 9]], pad_id=PAD)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    # the shorter row learns its stop token (the pad token) at its first pad position; the longest none
    assert batch["labels"].tolist() == [[5, 6, 7], [8, 9, PAD]]
    wider = parity.collate([[5, 6, 7], [8]], pad_id=PAD)
    assert wider["labels"].tolist() == [[5, 6, 7], [8, PAD, -100]]


def test_ours_labels_only_real_tokens():
    batch = collate([[5, 6, 7], [8]], pad_id=PAD)
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_loss_normaliser_is_the_attention_mask_sum_of_the_step():
    steps = [parity.collate([[5, 6, 7], [8]], pad_id=PAD), parity.collate([[1, 2]], pad_id=PAD)]
    assert parity.loss_normaliser(steps) == 3 + 1 + 2


def test_tokenize_train_appends_no_eos(monkeypatch):
    monkeypatch.setattr(parity, "cached_tokenize", lambda texts, *, tokenizer, tokenize: tokenize(texts))

    class Tokenizer:
        eos_token_id = 99

        def __call__(self, texts):
            return {"input_ids": [[len(t)] * 3 for t in texts]}

    from peftbench.tasks.base import Example

    examples = [Example("q", "r", "1"), Example("qq", "rr", "2")]
    got = parity.tokenize_train(Tokenizer(), examples, template="{query}:", max_len=2)
    assert got == [[3, 3], [5, 5]]


def test_longest_first_sorts_by_length_with_argsort():
    lengths = [1, 4, 2, 4, 3]
    order = parity.longest_first([0, 1, 2, 3, 4], lengths)
    assert [lengths[i] for i in order] == [4, 4, 3, 2, 1]
    assert sorted(order[:2]) == [1, 3]
    assert order == [int(i) for i in torch.argsort(torch.tensor(lengths), descending=True)]


def test_parity_repeats_the_last_partial_bucket_before_the_next_epoch():
    # 25 sequences, steps of 1, buckets of 20 (BUCKET_FACTOR): a full bucket, then a partial one of 5
    seqs = [[1] * n for n in range(1, 26)]
    epoch = [*range(20, 0, -1), *range(25, 20, -1)]
    ours = step_batches(seqs, batch_size=1, accumulation=1, seed=0, shuffle=False)
    assert [len(next(ours)[0][0]) for _ in range(30)] == [*epoch, *range(20, 15, -1)]
    theirs = step_batches(seqs, batch_size=1, accumulation=1, seed=0, shuffle=False, reference_parity=True)
    assert [len(next(theirs)[0][0]) for _ in range(30)] == [*epoch, *range(25, 20, -1)]
