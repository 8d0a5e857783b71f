"""The one atomic writer (peftbench.files): fsync before the rename, and never a partial file."""

from __future__ import annotations

import os

import numpy as np
import pytest

from peftbench import files, tokencache
from peftbench.files import atomic_write, atomic_write_text


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "a" / "report.html", "<p>ok</p>")
    assert events == ["fsync", "replace"]
    assert (tmp_path / "a" / "report.html").read_text() == "<p>ok</p>"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")

    def half_then_fail(f):
        f.write(b"new, but only ha")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_an_interrupted_first_write_leaves_no_file(tmp_path):
    def interrupted(f):
        f.write(b"{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.json", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_the_token_cache_writes_through_the_atomic_writer(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    written = []
    monkeypatch.setattr(tokencache, "atomic_write", lambda p, w: (written.append(p), atomic_write(p, w))[1])
    tokenizer = _Tokenizer()
    ids = tokencache.cached_tokenize(["ab", "c"], tokenizer=tokenizer, tokenize=lambda texts: [[1, 2], [3]])
    assert ids == [[1, 2], [3]] and len(written) == 1
    with np.load(written[0]) as stored:
        assert stored["flat"].tolist() == [1, 2, 3] and stored["offsets"].tolist() == [0, 2, 3]
    again = tokencache.cached_tokenize(["ab", "c"], tokenizer=tokenizer, tokenize=lambda texts: [])
    assert again == [[1, 2], [3]] and len(written) == 1  # read back from the file, not rewritten


class _Tokenizer:
    bos_token_id, eos_token_id = 1, 2

    def get_vocab(self):
        return {"a": 0, "b": 1}
