"""Shared fixtures. Tests never touch the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or fill the user's tokenization cache."""
    os.environ["PEFTBENCH_CACHE"] = str(tmp_path_factory.mktemp("peftbench-cache"))


REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture
def reference_dir() -> Path:
    """The reference suite's real files; tests using them skip in a user's clone without shared/."""
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference is absent")
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny Llama of toyworld, built once for the session."""
    from toyworld import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_model(folder)
    return folder


@pytest.fixture
def task_dir(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A toy task folder (toyworld) with its experiments, on the tiny model; modules that need another
    task folder define their own `task_dir`."""
    from toyworld import make_task_dir, register_toy_task

    register_toy_task(monkeypatch)
    return make_task_dir(tmp_path, model_dir=tiny_model_dir)
