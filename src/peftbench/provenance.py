"""Provenance of a run: the project's git state, package versions, hardware, model and data identity."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from peftbench.files import RESULT_DIRS, TUNING

# result folders (and tuning's studies and trial records) may change during a sweep or a search
# without making the code "dirty"
_OUTPUT_DIRS = (*RESULT_DIRS, TUNING)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_state(cwd: Path) -> dict[str, Any]:
    """Branch, commit and dirty flag of the checkout holding `cwd` (None where git is unavailable).

    Dirty means a change to anything but result files: a run on a dirty tree is never a main run.
    """
    commit = _git(["rev-parse", "HEAD"], cwd)
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    status = _git(["status", "--porcelain", "--untracked-files=all"], cwd)
    dirty = None
    if status is not None:
        changed = [line[3:].strip('"') for line in status.splitlines() if line.strip()]
        dirty = any(not any(part in _OUTPUT_DIRS for part in Path(p).parts[:-1]) for p in changed)
    return {"branch": branch, "commit": commit, "dirty": dirty}


def package_info() -> dict[str, Any]:
    """Versions in the reference's format (`<pkg>-version`, `<pkg>-commit-hash`)."""
    info: dict[str, Any] = {}
    for pkg in ("transformers", "peft", "datasets", "bitsandbytes", "torch", "peftbench"):
        try:
            info[f"{pkg}-version"] = version(pkg)
        except PackageNotFoundError:
            info[f"{pkg}-version"] = None
        info[f"{pkg}-commit-hash"] = None
    return info


def system_info(device: str) -> dict[str, Any]:
    import torch

    if device == "cuda":
        accelerator = torch.cuda.get_device_name()
    elif device == "xpu":
        accelerator = torch.xpu.get_device_name()
    else:
        accelerator = f"none ({device})"
    uname = platform.uname()
    return {
        "system": uname.system,
        "release": uname.release,
        "version": uname.version,
        "machine": uname.machine,
        "processor": uname.processor,
        "accelerator": accelerator,
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def pytorch_info() -> str:
    import torch

    return torch.__config__.show()


def model_info(model_path: str, fingerprint: str | None) -> dict[str, Any]:
    """The reference records the hub sha and date; a local folder has neither, so its weights' hash
    stands in for the sha. Hub metadata needs the network and is skipped when offline."""
    info: dict[str, Any] = {"sha": fingerprint, "created_at": None, "fingerprint": fingerprint}
    if fingerprint is None and not Path(model_path).exists():
        try:
            from huggingface_hub import model_info as hub_model_info

            meta = hub_model_info(model_path)
            info["sha"] = meta.sha
            info["created_at"] = meta.created_at.isoformat() if meta.created_at else None
        except Exception:  # offline or private: provenance is best effort, the run goes on
            pass
    return info
