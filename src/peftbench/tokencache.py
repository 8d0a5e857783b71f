"""An on-disk cache of tokenized texts, keyed by the tokenizer and the texts themselves.

Every run of a task tokenizes the same tens of thousands of training texts; with the cache, only the
first run of a (tokenizer, data, template) combination pays for it. datasets' own cache would do this
for a `datasets.Dataset`, but our tasks hand over plain lists and the cache key must include the
tokenizer's full definition, so a few lines of numpy here are simpler than a Dataset round trip.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from peftbench.files import atomic_write


def cache_dir() -> Path:
    """$PEFTBENCH_CACHE, else $XDG_CACHE_HOME/peftbench, else ~/.cache/peftbench."""
    if os.environ.get("PEFTBENCH_CACHE"):
        return Path(os.environ["PEFTBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "peftbench"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normalisers, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    extra = f"{tokenizer.bos_token_id}|{tokenizer.eos_token_id}|{type(tokenizer).__name__}"
    return hashlib.sha256((text + extra).encode()).hexdigest()


def cached_tokenize(
    texts: list[str], *, tokenizer: Any, tokenize: Callable[[list[str]], list[list[int]]]
) -> list[list[int]]:
    """`tokenize(texts)`, read from the cache when the same tokenizer saw the same texts before."""
    h = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    path = cache_dir() / "tokenized" / f"{h.hexdigest()}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                flat, offsets = stored["flat"], stored["offsets"]
            return [flat[a:b].tolist() for a, b in itertools.pairwise(offsets)]
        except (OSError, ValueError, KeyError):  # a corrupt cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    ids = tokenize(texts)
    _store(path, ids)
    return ids


def _store(path: Path, ids: list[list[int]]) -> None:
    offsets = np.cumsum([0, *map(len, ids)], dtype=np.int64)
    flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int64, count=int(offsets[-1]))
    with contextlib.suppress(OSError):  # a read-only or full cache folder only costs speed
        atomic_write(path, lambda f: np.savez(f, flat=flat, offsets=offsets))
