"""The warm start of tinymath-rl: a short, deterministic supervised stage on tinymath from its base model.

RL needs a policy that is sometimes right (the base model scores 0%, so every reward would be 0), and
room above it. `make_warm_start` fine-tunes the whole tinymath base model for a few steps with the
runner's own training loop (`peftbench.train.train`, the tinymath task and its default parameters with
the overrides in `WarmStartSettings`), and saves it with the tokenizer and `warm_start_log.json`
(recipe and figures). `peftbench make-warm-start` calls it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_NAME = "warm_start_log.json"


@dataclass(frozen=True)
class WarmStartSettings:
    """Overrides of tinymath's default_training_params.json for the supervised stage (full fine-tuning)."""

    steps: int = 150
    lr: float = 2e-3  # tinymath's full fine-tuning lr
    batch_size: int = 16
    seed: int = 0


def warm_start_config(tinymath_dir: Path, settings: WarmStartSettings) -> Any:
    from peftbench.config import build_config, read_json_object
    from peftbench.files import DEFAULT_PARAMS

    overrides = {
        "max_steps": settings.steps,
        "eval_steps": settings.steps,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "optimizer_kwargs.lr": settings.lr,
    }
    defaults = tinymath_dir / DEFAULT_PARAMS
    return build_config([(str(defaults), read_json_object(defaults)), ("--set", overrides)])


def make_warm_start(*, tinymath_dir: Path, output_dir: Path, settings: WarmStartSettings) -> dict[str, Any]:
    """Train, save the model, tokenizer and log in `output_dir`, and return the log."""
    from peftbench import modeling
    from peftbench.progress import RunProgress
    from peftbench.run import seed_everything
    from peftbench.tasks.tinymath import TinyMath
    from peftbench.train import train

    started = time.perf_counter()
    config = warm_start_config(tinymath_dir, settings)
    seed_everything(config.seed)
    base = tinymath_dir / config.model_id
    tokenizer = modeling.load_tokenizer(str(base), max_seq_length=config.max_seq_length)
    model = modeling.load_base_model(
        str(base), dtype=config.dtype, device="cpu", attn_implementation=None, use_gc=False
    )
    task = TinyMath()
    data = task.load_data(task_dir=tinymath_dir, seed=0)
    outcome = train(
        model=model,
        tokenizer=tokenizer,
        task=task,
        data=data,
        config=config,
        device="cpu",
        progress=RunProgress(),
    )
    if outcome.status != "success":
        raise RuntimeError(f"the supervised stage failed: {outcome.error_msg}")
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, output_dir / name)
    valid, final = outcome.metrics[0], outcome.metrics[-1]
    log = {
        "recipe": "peftbench.tasks.tinymath.warm_start: full fine-tuning of benchmarks/tinymath/base_model "
        "with peftbench.train.train on the tinymath task, its default_training_params.json plus the settings",
        "settings": dataclasses.asdict(settings),
        "train_config": config.to_dict(),
        "base_model_sha256": modeling.weights_fingerprint(str(base)),
        "test_accuracy": final["test accuracy"],
        "valid_accuracy": valid["valid accuracy"],
        "forgetting": final["forgetting"],
        "forgetting_loss_before": final["forgetting loss before"],
        "train_loss": final["train loss"],
        "train_time_s": round(outcome.train_time, 1),
        "total_time_s": round(time.perf_counter() - started, 1),
    }
    (output_dir / LOG_NAME).write_text(json.dumps(log, indent=2) + "\n")
    return log
