"""The tokenization cache returns exactly what the tokenizer returns, and survives corruption."""

from __future__ import annotations

from toyworld import build_tiny_model

from peftbench.tokencache import cache_dir, cached_tokenize


def test_cache_hit_equals_fresh_tokenization_and_is_keyed_by_texts(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "cache"))
    build_tiny_model(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    texts = ["Q: 1 + 2 ?\nA: 3", "the cat sat on the mat.", ""]
    calls = []

    def tokenize(batch):
        calls.append(len(batch))
        return tok(batch)["input_ids"]

    fresh = cached_tokenize(texts, tokenizer=tok, tokenize=tokenize)
    again = cached_tokenize(texts, tokenizer=tok, tokenize=tokenize)
    assert fresh == again == tok(texts)["input_ids"]
    assert calls == [3]  # the second call came from disk
    other = cached_tokenize(texts[:2], tokenizer=tok, tokenize=tokenize)
    assert other == fresh[:2] and calls == [3, 2]
    [entry, *_] = sorted((cache_dir() / "tokenized").glob("*.npz"))
    for f in (cache_dir() / "tokenized").glob("*.npz"):
        f.write_bytes(b"garbage")
    assert cached_tokenize(texts, tokenizer=tok, tokenize=tokenize) == fresh
    assert calls == [3, 2, 3]
    assert entry.exists()
