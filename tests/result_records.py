"""Hand-made result records with the structure of real ones, for the analysis and dashboard tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def make_record(
    experiment: str = "lora/tiny-rank8",
    *,
    task: str | None = "tinymath",
    seed: int | None = 0,
    accuracy: float = 0.5,
    forgetting: float | None = 0.1,
    memory: int = 1_000_000,
    train_time: float = 10.0,
    params: int = 1000,
    file_size: int = 4000,
    status: str = "success",
    created_at: str = "2026-01-01T00:00:00+00:00",
    peft_type: str | None = "LORA",
    model_id: str = "tiny/llama",
    steps: int = 3,
    test_correct: str | None = None,
    lr: float = 1e-3,
) -> dict[str, Any]:
    """A record as `peftbench run` writes it (task=None and seed=None: as the reference writes it)."""
    curve = [
        {
            "step": 10 * (i + 1),
            "valid accuracy": accuracy * (i + 1) / steps,
            "train loss": 2.0 - i * 0.5,
            "train samples": 40 * (i + 1),
            "train time": 1.0,
            "eval time": 0.5,
            "tokens / sec": 100.0,
        }
        for i in range(steps)
    ]
    final = {
        "step": 10 * steps,
        "test accuracy": accuracy,
        "train loss": 2.0 - (steps - 1) * 0.5,
        "train samples": 40 * steps,
        "train total tokens": 4000,
    }
    if forgetting is not None:
        final["forgetting"] = forgetting
    run_info: dict[str, Any] = {
        "created_at": created_at,
        "total_time": train_time * 1.5,
        "experiment_name": experiment,
        "peft_branch": "main",
        "train_config": {"model_id": model_id, "seed": seed or 0, "optimizer_kwargs": {"lr": lr}},
        "peft_config": {"peft_type": peft_type, "r": 8} if peft_type else None,
        "error_msg": "",
    }
    train_info: dict[str, Any] = {
        "accelerator_memory_reserved_avg": memory // 2,
        "accelerator_memory_max": memory,
        "accelerator_memory_reserved_99th": memory - 1,
        "train_time": train_time,
        "file_size": file_size,
        "num_trainable_params": params,
        "num_total_params": 100_000,
        "status": status,
        "metrics": [*curve, final] if status == "success" else curve,
    }
    record: dict[str, Any] = {
        "run_info": run_info,
        "train_info": train_info,
        "meta_info": {
            "model_info": {"sha": "abc"},
            "dataset_info": {},
            "package_info": {
                "peft-version": "0.21.2",
                "transformers-version": "5.24",
                "torch-version": "2.13",
            },
            "system_info": {"accelerator": "cpu"},
            "pytorch_info": "",
        },
    }
    if task is not None:
        record["schema_version"] = 1
        run_info["task_name"] = task
        run_info["task_version"] = "1"
        train_info["device"] = "cpu"
        train_info["memory_kind"] = "process_rss"
    if seed is not None and task is not None:
        run_info["seed"] = seed
    if test_correct is not None:
        train_info["test_correct"] = test_correct
    return record


def write_record(folder: Path, record: dict[str, Any], name: str | None = None) -> Path:
    """Write `record` under folder with the project's file naming (`<method>--<name>[--s<seed>].json`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if name is None:
        seed = record["run_info"].get("seed", 0)
        name = record["run_info"]["experiment_name"].replace("/", "--") + (f"--s{seed}" if seed else "")
        name += ".json"
    path = folder / name
    path.write_text(json.dumps(record), encoding="utf-8")
    return path
