"""tinymath-rl: reinforcement learning with a verifiable reward (GRPO-style) on the tinymath problems.

The data, prompt and answer rule are tinymath's; the model is the warm start in
`benchmarks/tinymath-rl/warm_start/` (a short supervised stage from the tinymath base model, rebuilt by
`peftbench make-warm-start`), and training is `peftbench.rl.train`: the reward is 1 when the final
answer is correct by tinymath's rule. Forgetting is measured against the warm start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftbench.tasks.base import (
    COMMON_METRICS,
    GENERATED_TOKENS_PER_SEC,
    STEP_GENERATED_TOKENS_PER_SEC,
    STEP_METRICS,
    STEP_TRAIN_KL,
    STEP_TRAIN_REWARD,
    TRAIN_REWARD,
)
from peftbench.tasks.tinymath import TinyMath
from peftbench.tasks.tinymath.problems import GENERATOR_VERSION


class TinyMathRL(TinyMath):
    name = "tinymath-rl"
    version = f"1.{GENERATOR_VERSION}"
    base_model_short = "tiny-llama"
    # the warm start's loss on the forgetting texts is 2.049 as the runner measures it (the tinymath base
    # model's 1.408, plus the supervised stage's forgetting, warm_start/warm_start_log.json)
    forgetting_loss_band = (1.8, 2.3)
    metrics = (*COMMON_METRICS, TRAIN_REWARD, GENERATED_TOKENS_PER_SEC)
    step_metrics = (*STEP_METRICS, STEP_TRAIN_REWARD, STEP_TRAIN_KL, STEP_GENERATED_TOKENS_PER_SEC)

    def training_loop(self) -> Callable[..., Any]:
        from peftbench.rl import train

        return train
